//! Filling an event store with data: deterministic bulk seeding, and single appends made exactly
//! the way eventsource-py makes them.

use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;

/// The aggregate type of every seeded and appended event.
pub const AGGREGATE_TYPE: &str = "Order";

/// What [`seed_events`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSummary {
    /// The tenants seeded, in the order given.
    pub tenants: Vec<Uuid>,
    /// Events written for each tenant.
    pub events_per_tenant: usize,
    /// Stream length; the last stream of a tenant is shorter when this does not divide
    /// `events_per_tenant`.
    pub events_per_aggregate: usize,
    /// Streams (aggregates) per tenant.
    pub aggregates_per_tenant: usize,
    /// Rows inserted in all.
    pub total_events: u64,
}

/// Outcome of [`append_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The event was committed.
    Appended {
        /// The new event's id.
        event_id: Uuid,
        /// Its version (expected version + 1).
        version: i32,
        /// Its position in the store that took it.
        global_position: i64,
    },
    /// The stream was not at the expected version; nothing was written (the library's
    /// client-side optimistic-concurrency check).
    VersionMismatch {
        /// The version the caller expected.
        expected: i32,
        /// The version read from the store.
        actual: i32,
    },
    /// Another writer appended the same version first: the insert hit
    /// `uq_events_aggregate_version` and the transaction was rolled back.
    ConcurrentWrite,
}

/// `count` tenant ids that are the same in every run: `00000000-0000-4000-8000-00000000000N`
/// for N = 1..=count.
pub fn tenant_ids(count: usize) -> Vec<Uuid> {
    (1..=count as u128)
        .map(|n| Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | n))
        .collect()
}

/// Seeds `events_per_tenant` events for every tenant in one server-side `INSERT ... SELECT`.
///
/// Deterministic: a tenant's rows (ids, payloads, timestamps) depend only on its id and the two
/// sizes, not on the database or the other tenants, so two stores seeded alike compare equal with
/// [`assert_same_events`](crate::assert_same_events); only `global_position` and `txid` are
/// assigned by each store. Streams are `Order` aggregates of `events_per_aggregate` events with
/// versions 1..n. Tenants are interleaved in `global_position` order, as concurrent traffic
/// would leave them. Seeding the same tenant twice fails on `events_event_id_key`.
pub async fn seed_events(
    client: &Client,
    tenants: &[Uuid],
    events_per_tenant: usize,
    events_per_aggregate: usize,
) -> Result<SeedSummary> {
    if events_per_aggregate == 0 {
        bail!("events_per_aggregate must be at least 1");
    }
    let per_tenant = i32::try_from(events_per_tenant).context("events_per_tenant too large")?;
    let per_aggregate =
        i32::try_from(events_per_aggregate).context("events_per_aggregate too large")?;
    let tenants = tenants.to_vec();
    // md5(...)::uuid makes stable ids without an extension; n is the event's index within its
    // tenant, n / per_aggregate its stream, n % per_aggregate + 1 its version.
    let inserted = client
        .execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, tenant_id,
                                 actor_id, version, timestamp, payload, created_at)
             SELECT md5(t.tenant::text || '/event/' || g.n)::uuid,
                    md5(t.tenant::text || '/order/' || g.n / $3)::uuid,
                    'Order',
                    CASE WHEN g.n % $3 = 0 THEN 'OrderCreated'
                         ELSE (ARRAY['ItemAdded', 'ItemAdded', 'ItemRemoved',
                                     'PaymentReceived', 'OrderShipped'])[1 + g.n % 5]
                    END,
                    t.tenant,
                    'user-' || (g.n % 13),
                    g.n % $3 + 1,
                    timestamptz '2024-01-01 00:00:00+00'
                        + make_interval(secs => g.n),
                    jsonb_build_object(
                        'order_no', g.n / $3,
                        'sku', 'SKU-' || lpad((g.n * 7919 % 1000)::text, 4, '0'),
                        'quantity', 1 + g.n % 5,
                        'amount_cents', g.n * 37 % 10000,
                        'note', repeat('x', g.n % 16)),
                    timestamptz '2024-01-01 00:00:00.005+00'
                        + make_interval(secs => g.n)
               FROM unnest($1::uuid[]) WITH ORDINALITY AS t(tenant, ord),
                    generate_series(0, $2 - 1) AS g(n)
              ORDER BY g.n, t.ord",
            &[&tenants, &per_tenant, &per_aggregate],
        )
        .await
        .context("seed events")?;
    Ok(SeedSummary {
        aggregates_per_tenant: events_per_tenant.div_ceil(events_per_aggregate),
        tenants,
        events_per_tenant,
        events_per_aggregate,
        total_events: inserted,
    })
}

/// Appends one event to the `Order` stream `aggregate` of `tenant` with the eventsource-py append
/// transaction: read the stream version (a statement without tenant_id), compare it with
/// `expected_version` in the client, insert version `expected_version + 1` with
/// `RETURNING global_position`, commit. Use `expected_version` 0 to start a new stream.
pub async fn append_event(
    client: &mut Client,
    tenant: Uuid,
    aggregate: Uuid,
    expected_version: i32,
) -> Result<AppendOutcome> {
    let transaction = client.transaction().await.context("BEGIN")?;
    let actual: i32 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM events \
             WHERE aggregate_id = $1 AND aggregate_type = $2",
            &[&aggregate, &AGGREGATE_TYPE],
        )
        .await
        .context("read the stream version")?
        .get(0);
    if actual != expected_version {
        // Dropping the transaction rolls it back.
        return Ok(AppendOutcome::VersionMismatch {
            expected: expected_version,
            actual,
        });
    }
    let event_id = Uuid::new_v4();
    let version = expected_version + 1;
    let event_type = if version == 1 {
        "OrderCreated"
    } else {
        "ItemAdded"
    };
    let payload = json!({ "sku": "SKU-0001", "quantity": 1, "appended": true });
    let inserted = transaction
        .query_one(
            "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, \
             actor_id, version, timestamp, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) \
             RETURNING global_position",
            &[
                &event_id,
                &event_type,
                &AGGREGATE_TYPE,
                &aggregate,
                &Some(tenant),
                &"user-1",
                &version,
                &SystemTime::now(),
                &payload,
            ],
        )
        .await;
    let global_position: i64 = match inserted {
        Ok(row) => row.get(0),
        Err(error) if is_version_conflict(&error) => return Ok(AppendOutcome::ConcurrentWrite),
        Err(error) => return Err(error).context("insert the event"),
    };
    transaction.commit().await.context("COMMIT")?;
    Ok(AppendOutcome::Appended {
        event_id,
        version,
        global_position,
    })
}

fn is_version_conflict(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && error
            .as_db_error()
            .and_then(|db| db.constraint())
            .is_some_and(|name| name == "uq_events_aggregate_version")
}
