//! The demo's event store: the eventsource schema and a multi-tenant history, seeded straight
//! into the source store with server-side `INSERT ... SELECT generate_series` statements.
//!
//! Tenant sizes follow Zipf's law (the i-th tenant holds about 1/i of the first one's events),
//! as in a real shared store where one customer outgrew the others: that biggest tenant is the
//! one the demo moves. Tenants are interleaved in `global_position` order, as concurrent
//! traffic leaves them, so the copy has to pick its tenant's rows out of the others'.

use anyhow::{Context, Result};
use evshift_control::schema::EVENT_STORE_SCHEMA;
use tokio_postgres::Client;
use uuid::Uuid;

/// Events per seeded stream (an `Order` aggregate with versions 1..=20).
pub const EVENTS_PER_STREAM: i64 = 20;

/// Rows of every tenant written by one statement: the seed advances in slices of the event
/// index, so progress can be shown and two connections can share the work.
const SLICE: i64 = 2_500;

/// One seeded tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSeed {
    pub id: Uuid,
    pub events: i64,
}

/// `tenants` random tenant ids with `events` events in all, the first one the biggest.
/// Every tenant gets at least one event; rounding leftovers go to the biggest.
pub fn plan(tenants: u32, events: u64) -> Vec<TenantSeed> {
    let harmonic: f64 = (1..=tenants).map(|i| 1.0 / f64::from(i)).sum();
    let mut seeds: Vec<TenantSeed> = (1..=tenants)
        .map(|i| TenantSeed {
            id: Uuid::new_v4(),
            events: ((events as f64 / f64::from(i) / harmonic).floor() as i64).max(1),
        })
        .collect();
    let planned: i64 = seeds.iter().map(|s| s.events).sum();
    if let Some(first) = seeds.first_mut() {
        first.events += events as i64 - planned;
    }
    seeds
}

/// Creates the eventsource schema (idempotent) in a store.
pub async fn apply_schema(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; {}",
            EVENT_STORE_SCHEMA.sql
        ))
        .await
        .with_context(|| format!("apply {}", EVENT_STORE_SCHEMA.name))
}

/// Seeds the slices `first, first + step, ...` of every tenant over one connection, calling
/// `progress` with the rows of each slice.
pub async fn seed_slices(
    client: &Client,
    tenants: &[TenantSeed],
    first: usize,
    step: usize,
    progress: impl Fn(u64),
) -> Result<()> {
    let ids: Vec<Uuid> = tenants.iter().map(|t| t.id).collect();
    let sizes: Vec<i64> = tenants.iter().map(|t| t.events).collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let statement = client
        .prepare(INSERT_EVENTS)
        .await
        .context("prepare the seed")?;
    let slices = ((largest + SLICE - 1) / SLICE) as usize;
    for slice in (first..slices).step_by(step.max(1)) {
        let from = slice as i64 * SLICE;
        let rows = client
            .execute(
                &statement,
                &[&ids, &sizes, &from, &(from + SLICE), &EVENTS_PER_STREAM],
            )
            .await
            .context("seed events")?;
        progress(rows);
    }
    Ok(())
}

/// A snapshot of every tenth seeded stream, at its last version (the copy takes them along).
pub async fn seed_snapshots(client: &Client, tenants: &[TenantSeed]) -> Result<u64> {
    let ids: Vec<Uuid> = tenants.iter().map(|t| t.id).collect();
    let sizes: Vec<i64> = tenants.iter().map(|t| t.events).collect();
    client
        .execute(INSERT_SNAPSHOTS, &[&ids, &sizes, &EVENTS_PER_STREAM])
        .await
        .context("seed snapshots")
}

/// Fresh planner statistics after the bulk load.
pub async fn analyze(client: &Client) -> Result<()> {
    client
        .batch_execute("ANALYZE events; ANALYZE snapshots")
        .await
        .context("analyze the seeded tables")
}

/// Events `[$3, $4)` of every tenant (`$1` ids, `$2` sizes), streams of `$5` events. Ids are
/// md5-derived from the tenant and the index, so nothing travels but the parameters.
const INSERT_EVENTS: &str = "
    INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, tenant_id,
                        actor_id, version, timestamp, payload, created_at)
    SELECT md5(t.tenant::text || '/event/' || g.n)::uuid,
           md5(t.tenant::text || '/order/' || g.n / $5)::uuid,
           'Order',
           CASE WHEN g.n % $5 = 0 THEN 'OrderCreated'
                ELSE (ARRAY['ItemAdded', 'ItemAdded', 'ItemRemoved', 'PaymentReceived',
                            'OrderShipped'])[1 + g.n % 5]
           END,
           t.tenant,
           'user-' || g.n % 97,
           g.n % $5 + 1,
           timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => g.n * 7),
           jsonb_build_object('order_no', g.n / $5,
                              'sku', 'SKU-' || lpad((g.n * 7919 % 10000)::text, 5, '0'),
                              'quantity', 1 + g.n % 5,
                              'amount_cents', g.n * 37 % 100000),
           timestamptz '2024-01-01 00:00:00.005+00' + make_interval(secs => g.n * 7)
      FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS t(tenant, size, ord),
           generate_series($3::bigint, LEAST($4::bigint, t.size) - 1) AS g(n)
     ORDER BY g.n, t.ord";

/// Every tenth stream of each tenant: its last version is `min($3, size - s * $3)`.
const INSERT_SNAPSHOTS: &str = "
    INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, state)
    SELECT md5(t.tenant::text || '/order/' || s)::uuid,
           'Order',
           LEAST($3, t.size - s * $3),
           1,
           jsonb_build_object('order_no', s, 'items', LEAST($3, t.size - s * $3) - 1)
      FROM unnest($1::uuid[], $2::bigint[]) AS t(tenant, size),
           generate_series(0, (t.size - 1) / $3, 10) AS s";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_adds_up_and_the_first_tenant_is_the_biggest() {
        let seeds = plan(20, 500_000);
        assert_eq!(seeds.len(), 20);
        assert_eq!(seeds.iter().map(|s| s.events).sum::<i64>(), 500_000);
        assert!(seeds.windows(2).all(|w| w[0].events >= w[1].events));
        // Zipf with 20 tenants: the first holds about 28% of everything.
        assert!((135_000..145_000).contains(&seeds[0].events), "{seeds:?}");
        assert_ne!(seeds[0].id, seeds[1].id);
    }

    #[test]
    fn every_tenant_gets_an_event() {
        let seeds = plan(5, 5);
        assert!(seeds.iter().all(|s| s.events >= 1), "{seeds:?}");
        assert_eq!(seeds.iter().map(|s| s.events).sum::<i64>(), 5);
    }
}
