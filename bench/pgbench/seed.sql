-- Seed data for the pgbench scripts of this directory (run with psql, once per fresh store):
--   psql -v ON_ERROR_STOP=1 -f bench/pgbench/seed.sql
--
-- 1,000 'Order' aggregates, numbered 1..1000, with 10 events each (10,000 events), spread over
-- 8 tenants, and a snapshot of each. read_stream.sql and snapshot.sql read these aggregates; append.sql writes to other numbers
-- ((client_id + 1) * 1000000 + n), so appends never lengthen the streams read_stream.sql reads.
--
-- Identities are derived from integers exactly as the pgbench scripts derive them:
--   aggregate_id = md5(aggregate_no::text)::uuid
--   tenant_id    = 00000000-0000-0000-0000-00000000000<tenant_no>, tenant_no = aggregate_no % 8 + 1
--   event_id     = md5('seed-' || aggregate_no || '-' || version)::uuid
-- so the seed is idempotent: running it again inserts nothing.
INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id,
                    version, timestamp, payload, created_at)
SELECT md5('seed-' || a || '-' || v)::uuid,
       CASE WHEN v = 1 THEN 'OrderCreated' ELSE 'OrderItemAdded' END,
       'Order',
       md5(a::text)::uuid,
       ('00000000-0000-0000-0000-' || lpad((a % 8 + 1)::text, 12, '0'))::uuid,
       'seed',
       v,
       NOW(),
       jsonb_build_object('sku', 'SKU-' || (a * 10 + v), 'qty', v),
       NOW()
  FROM generate_series(1, 1000) AS a, generate_series(1, 10) AS v
ON CONFLICT DO NOTHING;

-- One snapshot per aggregate (at version 10), for snapshot.sql.
INSERT INTO snapshots (aggregate_id, aggregate_type, version, state)
SELECT md5(a::text)::uuid, 'Order', 10, jsonb_build_object('items', 10, 'order_no', a)
  FROM generate_series(1, 1000) AS a
ON CONFLICT DO NOTHING;

ANALYZE events;
ANALYZE snapshots;
