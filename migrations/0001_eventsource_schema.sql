-- evshift: the eventsource-py PostgreSQL event-store schema.
--
-- This is the interface evshift serves transparently (see shared eventsource-sql.md): the tables,
-- constraint names and indexes an eventsource-py application expects to find in every store.
-- Constraint names are part of that interface: the library tells a duplicate event
-- (events_event_id_key) from an optimistic-concurrency conflict (uq_events_aggregate_version)
-- by the name in the unique-violation error.
--
-- Idempotent: every statement may run again on a database that already has the schema, or on one
-- created by an older eventsource-py release (the ALTER ... ADD COLUMN IF NOT EXISTS statements
-- bring such a database up to date). Requires PostgreSQL 13+ (xid8, pg_current_xact_id,
-- gen_random_uuid built in).

-- ---------------------------------------------------------------------------------------------
-- events: the append-only log.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS events (
    -- Assigned by each store: the same event has a different position in another store.
    global_position BIGSERIAL PRIMARY KEY,
    -- The identity of an event everywhere. Inline UNIQUE gets the name events_event_id_key.
    event_id        UUID NOT NULL UNIQUE,
    aggregate_id    UUID NOT NULL,
    aggregate_type  VARCHAR(255) NOT NULL,
    event_type      VARCHAR(255) NOT NULL,
    -- NULL = no tenant (shared/global events).
    tenant_id       UUID,
    actor_id        VARCHAR(255),
    -- Per stream, starting at 1.
    version         INTEGER NOT NULL,
    -- Domain time.
    timestamp       TIMESTAMPTZ NOT NULL,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    -- Writing transaction, for the feed horizon; meaningful only inside this store.
    txid            xid8 DEFAULT pg_current_xact_id(),
    CONSTRAINT uq_events_aggregate_version UNIQUE (aggregate_id, aggregate_type, version)
);

-- A table created before txid existed gets it the way eventsource-py adds it: nullable without a
-- default first (metadata only, no table rewrite), then the default for future rows.
ALTER TABLE events ADD COLUMN IF NOT EXISTS txid xid8;
ALTER TABLE events ALTER COLUMN txid SET DEFAULT pg_current_xact_id();

CREATE INDEX IF NOT EXISTS idx_events_aggregate_id ON events (aggregate_id);
CREATE INDEX IF NOT EXISTS idx_events_aggregate_type ON events (aggregate_type);
CREATE INDEX IF NOT EXISTS idx_events_event_type ON events (event_type);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON events (timestamp);
CREATE INDEX IF NOT EXISTS idx_events_tenant_id ON events (tenant_id) WHERE tenant_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_type_tenant_timestamp
    ON events (aggregate_type, tenant_id, timestamp);
CREATE INDEX IF NOT EXISTS idx_events_type_position ON events (aggregate_type, global_position);
CREATE INDEX IF NOT EXISTS idx_events_aggregate_version
    ON events (aggregate_id, aggregate_type, version);

-- The oldest transaction still in flight in THIS store. Feed readers only take rows whose txid is
-- below it, so a row with a lower global_position that commits late is never skipped.
CREATE OR REPLACE FUNCTION eventsource_feed_horizon() RETURNS text
LANGUAGE sql STABLE AS
$$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text;
$$;

-- ---------------------------------------------------------------------------------------------
-- snapshots: cached aggregate state. No tenant column: a snapshot belongs to the tenant of its
-- aggregate.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS snapshots (
    id             BIGSERIAL PRIMARY KEY,
    aggregate_id   UUID NOT NULL,
    aggregate_type VARCHAR(255) NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 1,
    state          JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT uq_snapshots_aggregate UNIQUE (aggregate_id, aggregate_type)
);

-- ---------------------------------------------------------------------------------------------
-- projection_checkpoints: where each projection is in the feed. No tenant column.
-- position_token is JSON {"s":"<store_id>","k":[<global_position>]}; global_position is legacy.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection_name   VARCHAR(255) PRIMARY KEY,
    last_event_id     UUID,
    last_event_type   VARCHAR(255),
    last_processed_at TIMESTAMPTZ,
    global_position   BIGINT,
    events_processed  BIGINT NOT NULL DEFAULT 0,
    position_token    TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- Older eventsource-py releases created the table without position_token.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS position_token TEXT;

-- ---------------------------------------------------------------------------------------------
-- event_outbox: events waiting to be published, written in the append transaction.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS event_outbox (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id       UUID NOT NULL,
    event_type     VARCHAR(255) NOT NULL,
    aggregate_id   UUID NOT NULL,
    aggregate_type VARCHAR(255) NOT NULL,
    tenant_id      UUID,
    event_data     JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    published_at   TIMESTAMPTZ,
    retry_count    INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    status         VARCHAR(20) NOT NULL DEFAULT 'pending'
);
