-- evshift: the control store, part 1: tenant routing.
--
-- The control store is one PostgreSQL database shared by every evshift instance in front of the
-- same event stores. evshift applies this file at start-up, inside one transaction that holds
-- pg_advisory_xact_lock(<evshift schema key>), so instances starting together do not race on the
-- catalog. Idempotent: it may run again on a database that already has it.
--
-- Later files (0003 and up) add tenant_migrations, migration_position_mappings and
-- migration_audit_log.

-- ---------------------------------------------------------------------------------------------
-- tenant_routing: where each tenant lives. A tenant without a row lives on the default store.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS tenant_routing (
    tenant_id       uuid PRIMARY KEY,
    -- The store holding the tenant (the source while a migration runs); a configured store id.
    store_id        text NOT NULL,
    -- The tenant's migration phase as far as routing cares; NULL: no migration.
    migration_state text NULL
        CONSTRAINT tenant_routing_migration_state_check CHECK (migration_state IN (
            'PENDING', 'BULK_COPY', 'DUAL_WRITE', 'CUTOVER_PAUSED',
            'MIGRATED', 'FAILED', 'ROLLED_BACK')),
    -- Where the migration is taking the tenant.
    target_store_id text NULL,
    -- The tenant_migrations row of that migration.
    migration_id    bigint NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A migration phase is meaningless without its target and its id: routing needs all three.
    CONSTRAINT tenant_routing_migration_complete CHECK (
        migration_state IS NULL
        OR (target_store_id IS NOT NULL AND migration_id IS NOT NULL))
);

-- Every change to a route wakes the routing refresher of every evshift instance (LISTEN
-- evshift_routing); the payload is the tenant id. A notification is sent when the changing
-- transaction commits, so a listener that reloads on it sees the change.
CREATE OR REPLACE FUNCTION evshift_notify_routing() RETURNS trigger
LANGUAGE plpgsql AS
$$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('evshift_routing', OLD.tenant_id::text);
    ELSE
        PERFORM pg_notify('evshift_routing', NEW.tenant_id::text);
    END IF;
    RETURN NULL;
END;
$$;

-- CREATE OR REPLACE TRIGGER needs PostgreSQL 14; test the catalog instead so 13 works too.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
         WHERE tgname = 'tenant_routing_notify'
           AND tgrelid = 'tenant_routing'::regclass
    ) THEN
        CREATE TRIGGER tenant_routing_notify
            AFTER INSERT OR UPDATE OR DELETE ON tenant_routing
            FOR EACH ROW EXECUTE FUNCTION evshift_notify_routing();
    END IF;
END;
$$;
