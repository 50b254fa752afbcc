-- pgbench custom script: the eventsource-py stream read (all events of one aggregate, in order).
--   pgbench -n -f bench/pgbench/read_stream.sql -c 16 -j 2 -T 10 -M prepared
-- Needs the event-store schema and seed.sql (aggregates 1..1000, 10 events each). Works with
-- -M simple, extended and prepared.
\set aggregate_no random(1, 1000)
SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id,
       version, timestamp, payload, created_at
  FROM events
 WHERE aggregate_id = md5(:aggregate_no::text)::uuid AND aggregate_type = 'Order'
 ORDER BY version ASC;
