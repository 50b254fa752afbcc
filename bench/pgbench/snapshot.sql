-- pgbench custom script: the snapshot read of one seeded aggregate.
--   pgbench -n -f bench/pgbench/snapshot.sql -c 16 -j 2 -T 10 -M prepared
-- Needs the event-store schema and seed.sql (aggregates 1..1000 with a snapshot each). Works with
-- -M simple, extended and prepared.
\set aggregate_no random(1, 1000)
SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at
  FROM snapshots
 WHERE aggregate_id = md5(:aggregate_no::text)::uuid AND aggregate_type = 'Order';
