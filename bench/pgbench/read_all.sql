-- pgbench custom script: one eventsource-py read_all page (a subscription step): the store's
-- feed horizon first, then up to 100 events of one tenant below it, in position order.
--   pgbench -n -f bench/pgbench/read_all.sql -c 16 -j 2 -T 10 -M prepared
-- Needs the event-store schema and seed.sql (tenants 1..8). Works with -M simple, extended and
-- prepared (\gset needs pgbench 12 or later).
\set tenant_no random(1, 8)
\set after random(0, 5000)
SELECT eventsource_feed_horizon() AS horizon \gset
SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id,
       version, timestamp, payload, created_at
  FROM events
 WHERE (txid IS NULL OR txid < CAST(:horizon AS text)::xid8)
   AND global_position > :after
   AND tenant_id = ('00000000-0000-0000-0000-' || lpad(:tenant_no::text, 12, '0'))::uuid
 ORDER BY global_position ASC
 LIMIT 100;
