//! The eventsource statements the load runs, with deterministic tenant and aggregate ids.

use std::time::SystemTime;

use tokio_postgres::{Client, Statement};
use uuid::Uuid;

pub const AGGREGATE_TYPE: &str = "Order";

const VERSION_READ: &str =
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = $1 AND aggregate_type = $2";
const INSERT_EVENT: &str = "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position";
const READ_STREAM: &str = "SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at FROM events WHERE aggregate_id = $1 AND aggregate_type = $2 ORDER BY version ASC";

/// Tenant `n` (0-based) of a run.
pub fn tenant_id(n: usize) -> Uuid {
    Uuid::from_u128(0x0e75_0000_0000_0000_0000_0000_0000_0000 | (n as u128 + 1))
}

/// Seeded aggregate `a` of tenant `t`.
pub fn seeded_aggregate(t: usize, a: usize) -> Uuid {
    Uuid::from_u128(((t as u128 + 1) << 64) | (a as u128 + 1))
}

/// Aggregate `a` that client `c` appends to (never seeded, never shared between clients).
pub fn client_aggregate(t: usize, c: usize, a: usize) -> Uuid {
    Uuid::from_u128(((t as u128 + 1) << 64) | (1 << 62) | ((c as u128) << 32) | a as u128)
}

/// How statements are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Prepared once per connection, then Bind/Execute only (asyncpg, tokio-postgres).
    Prepared,
    /// Parse/Bind/Execute every time (unnamed statements).
    Extended,
}

/// One transaction type of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// eventsource append: BEGIN, version read, INSERT ... RETURNING, COMMIT.
    Append,
    /// eventsource stream read of a seeded aggregate.
    ReadStream,
}

/// Statements prepared on one connection.
pub struct Prepared {
    version_read: Statement,
    insert: Statement,
    read_stream: Statement,
}

impl Prepared {
    pub async fn new(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            version_read: client.prepare(VERSION_READ).await?,
            insert: client.prepare(INSERT_EVENT).await?,
            read_stream: client.prepare(READ_STREAM).await?,
        })
    }
}

/// Runs one append transaction; returns the new event's id.
pub async fn append(
    client: &mut Client,
    prepared: Option<&Prepared>,
    tenant: Uuid,
    aggregate: Uuid,
) -> Result<Uuid, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let current: i32 = match prepared {
        Some(p) => {
            tx.query_one(&p.version_read, &[&aggregate, &AGGREGATE_TYPE])
                .await?
        }
        None => {
            tx.query_one(VERSION_READ, &[&aggregate, &AGGREGATE_TYPE])
                .await?
        }
    }
    .get(0);
    let event_id = Uuid::new_v4();
    let payload = serde_json::json!({"sku": "SKU-1", "qty": current + 1});
    let now = SystemTime::now();
    let version = current + 1;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &event_id,
        &"OrderItemAdded",
        &AGGREGATE_TYPE,
        &aggregate,
        &tenant,
        &"bench",
        &version,
        &now,
        &payload,
    ];
    match prepared {
        Some(p) => tx.query_one(&p.insert, &params).await?,
        None => tx.query_one(INSERT_EVENT, &params).await?,
    };
    tx.commit().await?;
    Ok(event_id)
}

/// Reads one stream; returns the number of events.
pub async fn read_stream(
    client: &Client,
    prepared: Option<&Prepared>,
    aggregate: Uuid,
) -> Result<usize, tokio_postgres::Error> {
    let rows = match prepared {
        Some(p) => {
            client
                .query(&p.read_stream, &[&aggregate, &AGGREGATE_TYPE])
                .await?
        }
        None => {
            client
                .query(READ_STREAM, &[&aggregate, &AGGREGATE_TYPE])
                .await?
        }
    };
    Ok(rows.len())
}
