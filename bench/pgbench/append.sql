-- pgbench custom script: the eventsource-py append transaction (one event per transaction).
--   pgbench -n -f bench/pgbench/append.sql -c 16 -j 2 -T 10 -M prepared
-- Needs the event-store schema (migrations/0001_eventsource_schema.sql). Works with -M simple,
-- extended and prepared.
--
-- Each client appends to its own aggregates, (client_id + 1) * 1000000 + 1..1000, so concurrent
-- clients never race for the same (aggregate_id, aggregate_type, version); these numbers never
-- collide with the seeded aggregates 1..1000 that read_stream.sql reads. The next version is
-- computed in SQL from the stream itself. An aggregate always belongs to the same tenant
-- (aggregate_no % 8 + 1), as in eventsource-py.
\set aggregate_no (:client_id + 1) * 1000000 + random(1, 1000)
\set tenant_no :aggregate_no % 8 + 1
\set qty random(1, 10)
BEGIN;
SELECT COALESCE(MAX(version), 0) FROM events
 WHERE aggregate_id = md5(:aggregate_no::text)::uuid AND aggregate_type = 'Order';
INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id,
                    version, timestamp, payload, created_at)
VALUES (gen_random_uuid(), 'OrderItemAdded', 'Order', md5(:aggregate_no::text)::uuid,
        ('00000000-0000-0000-0000-' || lpad(:tenant_no::text, 12, '0'))::uuid, 'pgbench',
        (SELECT COALESCE(MAX(version), 0) + 1 FROM events
          WHERE aggregate_id = md5(:aggregate_no::text)::uuid AND aggregate_type = 'Order'),
        NOW(), jsonb_build_object('sku', 'SKU-' || :aggregate_no::text, 'qty', :qty::int), NOW())
RETURNING global_position;
COMMIT;
