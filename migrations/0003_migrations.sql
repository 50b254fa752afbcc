-- evshift: the control store, part 2: tenant migrations, position mappings, the audit log.
--
-- Applied at start-up after 0002, in the same transaction under the same advisory lock.
-- Idempotent: it may run again on a database that already has it.

-- ---------------------------------------------------------------------------------------------
-- tenant_migrations: one row per migration of a tenant from its store (source) to another
-- (target). The coordinator is the only writer; every change of `state` commits together with
-- the tenant's tenant_routing row and an audit row.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS tenant_migrations (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id                uuid NOT NULL,
    source_store_id          text NOT NULL,
    target_store_id          text NOT NULL,
    state                    text NOT NULL DEFAULT 'PENDING'
        CONSTRAINT tenant_migrations_state_check CHECK (state IN (
            'PENDING', 'BULK_COPY', 'DUAL_WRITE', 'CUTOVER_PAUSED',
            'MIGRATED', 'FAILED', 'ROLLED_BACK')),
    -- events_copied / events_total, 0..100.
    progress_percentage      double precision NOT NULL DEFAULT 0,
    -- The tenant's events in the source when last counted (grows while the tenant appends).
    events_total             bigint NOT NULL DEFAULT 0,
    -- Source rows copied so far: every source row up to last_source_position.
    events_copied            bigint NOT NULL DEFAULT 0,
    -- The checkpoint: every event of the tenant at or below this source global_position that
    -- was inside the source's horizon when read is in the target. The copy resumes after it.
    last_source_position     bigint NOT NULL DEFAULT 0,
    -- Where the event at last_source_position landed in the target (0 before the first batch).
    last_target_position     bigint NOT NULL DEFAULT 0,
    -- Source events of the tenant not yet in the target, as of the last checkpoint.
    lag_events               bigint NOT NULL DEFAULT 0,
    -- Copy speed over the last batches.
    events_per_second        double precision NOT NULL DEFAULT 0,
    -- Per-migration options (batch_size, rate_limit_events_per_sec, manual_cutover, verify).
    config                   jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_message            text NULL,
    -- Paused by an operator: the copier stops at the next batch boundary until resumed.
    paused                   boolean NOT NULL DEFAULT false,
    created_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz NULL,
    bulk_copy_completed_at   timestamptz NULL,
    dual_write_started_at    timestamptz NULL,
    cutover_started_at       timestamptz NULL,
    completed_at             timestamptz NULL,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_migrations_distinct_stores CHECK (source_store_id <> target_store_id),
    CONSTRAINT tenant_migrations_counts_nonnegative CHECK (events_copied >= 0 AND events_total >= 0)
);

-- At most one migration per tenant that still holds anything: until it is MIGRATED or
-- ROLLED_BACK (a FAILED migration keeps its copied rows and can be resumed or aborted).
-- Added after the first version of this file.
ALTER TABLE tenant_migrations ADD COLUMN IF NOT EXISTS last_target_position bigint NOT NULL DEFAULT 0;

CREATE UNIQUE INDEX IF NOT EXISTS tenant_migrations_one_active
    ON tenant_migrations (tenant_id)
 WHERE state NOT IN ('MIGRATED', 'ROLLED_BACK');

CREATE INDEX IF NOT EXISTS tenant_migrations_tenant ON tenant_migrations (tenant_id, id);

-- ---------------------------------------------------------------------------------------------
-- migration_position_mappings: where each copied event landed. A source position translates to
-- the target position of the same event (subscription checkpoints at cutover).
--
-- The copier writes one row per copied event, so this table is kept cheap to write: no foreign
-- key to tenant_migrations (a per-row referential check), and a BRIN index rather than a
-- b-tree: rows arrive in source-position order, batch after batch, so block ranges summarise
-- them well and a lookup of a position reads a few blocks. Only the coordinator writes here,
-- for migrations it created, each source position once; abort deletes a migration's rows.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS migration_position_mappings (
    migration_id    bigint NOT NULL,
    source_position bigint NOT NULL,
    target_position bigint NOT NULL,
    event_id        uuid NOT NULL
);
ALTER TABLE migration_position_mappings
    DROP CONSTRAINT IF EXISTS migration_position_mappings_migration_id_fkey;
ALTER TABLE migration_position_mappings
    DROP CONSTRAINT IF EXISTS migration_position_mappings_pkey;
CREATE INDEX IF NOT EXISTS migration_position_mappings_positions
    ON migration_position_mappings USING brin (migration_id, source_position)
  WITH (pages_per_range = 16);

-- ---------------------------------------------------------------------------------------------
-- migration_audit_log: what happened to each migration, who did it, when. Append-only: the
-- triggers below reject UPDATE, DELETE and TRUNCATE, whoever runs them.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS migration_audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id bigint NOT NULL REFERENCES tenant_migrations (id),
    event_type   text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    operator     text NOT NULL,
    "timestamp"  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS migration_audit_log_migration ON migration_audit_log (migration_id, id);

CREATE OR REPLACE FUNCTION evshift_audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'migration_audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
         WHERE tgname = 'migration_audit_log_no_change'
           AND tgrelid = 'migration_audit_log'::regclass
    ) THEN
        CREATE TRIGGER migration_audit_log_no_change
            BEFORE UPDATE OR DELETE ON migration_audit_log
            FOR EACH ROW EXECUTE FUNCTION evshift_audit_log_immutable();
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
         WHERE tgname = 'migration_audit_log_no_truncate'
           AND tgrelid = 'migration_audit_log'::regclass
    ) THEN
        CREATE TRIGGER migration_audit_log_no_truncate
            BEFORE TRUNCATE ON migration_audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION evshift_audit_log_immutable();
    END IF;
END;
$$;
