//! The eventsource-py statements the load sends (see the event-store interface), over one
//! connection, in one of three protocols.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage, Statement};
use uuid::Uuid;

use crate::ids::AGGREGATE_TYPE;

const VERSION_READ: &str =
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = $1 AND aggregate_type = $2";
const INSERT_EVENT: &str = "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position";
const EVENT_COLUMNS: &str = "global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at";
const READ_STREAM_WHERE: &str =
    "FROM events WHERE aggregate_id = $1 AND aggregate_type = $2 ORDER BY version ASC";
const HORIZON: &str = "SELECT eventsource_feed_horizon()";
const READ_ALL_WHERE: &str = "FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND global_position > $2 AND tenant_id = $3 ORDER BY global_position ASC LIMIT $4";
const READ_SNAPSHOT: &str = "SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at FROM snapshots WHERE aggregate_id = $1 AND aggregate_type = $2";

/// The event type of every appended event.
const EVENT_TYPE: &str = "OrderItemAdded";
/// The actor of every appended event.
const ACTOR: &str = "bench";

/// How statements are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Simple query protocol, values inlined as literals (pgbench `-M simple`).
    Simple,
    /// Unnamed statements: Parse, Bind, Execute every time (pgbench `-M extended`).
    Extended,
    /// Named statements prepared once per connection, then Bind and Execute only (asyncpg,
    /// pgbench `-M prepared`).
    Prepared,
}

impl Protocol {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Prepared => "prepared",
        }
    }
}

/// One page of a tenant's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows read.
    pub rows: usize,
    /// The position of the last row, if any.
    pub last_position: Option<i64>,
}

/// Statements prepared on one connection.
struct Prepared {
    version_read: Statement,
    insert: Statement,
    read_stream: Statement,
    horizon: Statement,
    read_all: Statement,
    snapshot: Statement,
}

impl Prepared {
    async fn new(client: &Client) -> Result<Prepared> {
        Ok(Prepared {
            version_read: client.prepare(VERSION_READ).await?,
            insert: client.prepare(INSERT_EVENT).await?,
            read_stream: client.prepare(&read_stream_sql()).await?,
            horizon: client.prepare(HORIZON).await?,
            read_all: client.prepare(&read_all_sql()).await?,
            snapshot: client.prepare(READ_SNAPSHOT).await?,
        })
    }
}

/// One client connection running eventsource transactions in one protocol.
pub struct Session {
    client: Client,
    protocol: Protocol,
    prepared: Option<Prepared>,
}

impl Session {
    /// Connects to `url` (no TLS) and, for [`Protocol::Prepared`], prepares every statement.
    pub async fn connect(url: &str, protocol: Protocol) -> Result<Session> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connect to {}", redact_url(url)))?;
        // A broken connection shows in the client's next call; nothing to report here.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let prepared = match protocol {
            Protocol::Prepared => Some(Prepared::new(&client).await.context("prepare")?),
            Protocol::Simple | Protocol::Extended => None,
        };
        Ok(Session {
            client,
            protocol,
            prepared,
        })
    }

    /// Whether the connection is gone (the session must be replaced).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The eventsource append of one event to `aggregate` of `tenant`: BEGIN, version read,
    /// `INSERT ... RETURNING global_position` with the next version, COMMIT. Returns the new
    /// event's id once the commit was acknowledged.
    pub async fn append(&mut self, tenant: Uuid, aggregate: Uuid) -> Result<Uuid> {
        let event_id = Uuid::new_v4();
        if self.protocol == Protocol::Simple {
            self.append_simple(tenant, aggregate, event_id).await?;
            return Ok(event_id);
        }
        let tx = self.client.transaction().await?;
        let current: i32 = match &self.prepared {
            Some(p) => {
                tx.query_one(&p.version_read, &[&aggregate, &AGGREGATE_TYPE])
                    .await?
            }
            None => one_row(
                tx.query_typed(
                    VERSION_READ,
                    &[(&aggregate, Type::UUID), (&AGGREGATE_TYPE, Type::TEXT)],
                )
                .await?,
            )?,
        }
        .get(0);
        let version = current + 1;
        let now = SystemTime::now();
        let payload = payload(version);
        match &self.prepared {
            Some(p) => {
                let params: [&(dyn ToSql + Sync); 9] = [
                    &event_id,
                    &EVENT_TYPE,
                    &AGGREGATE_TYPE,
                    &aggregate,
                    &tenant,
                    &ACTOR,
                    &version,
                    &now,
                    &payload,
                ];
                tx.query_one(&p.insert, &params).await?;
            }
            None => {
                let params: [(&(dyn ToSql + Sync), Type); 9] = [
                    (&event_id, Type::UUID),
                    (&EVENT_TYPE, Type::TEXT),
                    (&AGGREGATE_TYPE, Type::TEXT),
                    (&aggregate, Type::UUID),
                    (&tenant, Type::UUID),
                    (&ACTOR, Type::TEXT),
                    (&version, Type::INT4),
                    (&now, Type::TIMESTAMPTZ),
                    (&payload, Type::JSONB),
                ];
                one_row(tx.query_typed(INSERT_EVENT, &params).await?)?;
            }
        }
        tx.commit().await?;
        Ok(event_id)
    }

    /// Reads all events of `aggregate`; returns how many there are.
    pub async fn read_stream(&self, aggregate: Uuid) -> Result<usize> {
        match (&self.prepared, self.protocol) {
            (Some(p), _) => Ok(self
                .client
                .query(&p.read_stream, &[&aggregate, &AGGREGATE_TYPE])
                .await?
                .len()),
            (None, Protocol::Simple) => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = '{aggregate}' AND aggregate_type = '{AGGREGATE_TYPE}' ORDER BY version ASC"
                );
                Ok(simple_rows(&self.client.simple_query(&sql).await?).len())
            }
            (None, _) => Ok(self
                .client
                .query_typed(
                    &read_stream_sql(),
                    &[(&aggregate, Type::UUID), (&AGGREGATE_TYPE, Type::TEXT)],
                )
                .await?
                .len()),
        }
    }

    /// A subscription step: fetch the horizon, then up to `limit` events of `tenant` after
    /// position `after` below it.
    pub async fn read_all_page(&self, tenant: Uuid, after: i64, limit: i64) -> Result<Page> {
        match (&self.prepared, self.protocol) {
            (Some(p), _) => {
                let horizon: String = self.client.query_one(&p.horizon, &[]).await?.get(0);
                let rows = self
                    .client
                    .query(&p.read_all, &[&horizon, &after, &tenant, &limit])
                    .await?;
                Ok(page_of(&rows))
            }
            (None, Protocol::Simple) => {
                let horizon = simple_first_value(&self.client.simple_query(HORIZON).await?)?;
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE (txid IS NULL OR txid < CAST('{}' AS text)::xid8) AND global_position > {after} AND tenant_id = '{tenant}' ORDER BY global_position ASC LIMIT {limit}",
                    horizon.replace('\'', "''")
                );
                let messages = self.client.simple_query(&sql).await?;
                let rows = simple_rows(&messages);
                let last_position = match rows.last() {
                    Some(row) => Some(
                        row.get(0)
                            .and_then(|v| v.parse::<i64>().ok())
                            .context("global_position is not a number")?,
                    ),
                    None => None,
                };
                Ok(Page {
                    rows: rows.len(),
                    last_position,
                })
            }
            (None, _) => {
                let horizon: String = one_row(self.client.query_typed(HORIZON, &[]).await?)?.get(0);
                let rows = self
                    .client
                    .query_typed(
                        &read_all_sql(),
                        &[
                            (&horizon, Type::TEXT),
                            (&after, Type::INT8),
                            (&tenant, Type::UUID),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await?;
                Ok(page_of(&rows))
            }
        }
    }

    /// Reads the snapshot of `aggregate`; returns whether there is one.
    pub async fn read_snapshot(&self, aggregate: Uuid) -> Result<bool> {
        match (&self.prepared, self.protocol) {
            (Some(p), _) => Ok(self
                .client
                .query_opt(&p.snapshot, &[&aggregate, &AGGREGATE_TYPE])
                .await?
                .is_some()),
            (None, Protocol::Simple) => {
                let sql = format!(
                    "SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at FROM snapshots WHERE aggregate_id = '{aggregate}' AND aggregate_type = '{AGGREGATE_TYPE}'"
                );
                Ok(!simple_rows(&self.client.simple_query(&sql).await?).is_empty())
            }
            (None, _) => Ok(!self
                .client
                .query_typed(
                    READ_SNAPSHOT,
                    &[(&aggregate, Type::UUID), (&AGGREGATE_TYPE, Type::TEXT)],
                )
                .await?
                .is_empty()),
        }
    }

    async fn append_simple(&self, tenant: Uuid, aggregate: Uuid, event_id: Uuid) -> Result<()> {
        self.client.simple_query("BEGIN").await?;
        let result = self.append_simple_body(tenant, aggregate, event_id).await;
        if result.is_err() && !self.client.is_closed() {
            // The error is what the caller needs; a failed ROLLBACK on a live connection would
            // show up in the next transaction anyway.
            let _ = self.client.simple_query("ROLLBACK").await;
        }
        result
    }

    async fn append_simple_body(
        &self,
        tenant: Uuid,
        aggregate: Uuid,
        event_id: Uuid,
    ) -> Result<()> {
        let version_sql = format!(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = '{aggregate}' AND aggregate_type = '{AGGREGATE_TYPE}'"
        );
        let current: i32 = simple_first_value(&self.client.simple_query(&version_sql).await?)?
            .parse()
            .context("the version read returned no number")?;
        let version = current + 1;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let insert_sql = format!(
            "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ('{event_id}', '{EVENT_TYPE}', '{AGGREGATE_TYPE}', '{aggregate}', '{tenant}', '{ACTOR}', {version}, to_timestamp({}.{:06}), '{}', NOW()) RETURNING global_position",
            micros / 1_000_000,
            micros % 1_000_000,
            payload(version).to_string().replace('\'', "''")
        );
        simple_first_value(&self.client.simple_query(&insert_sql).await?)?;
        self.client.simple_query("COMMIT").await?;
        Ok(())
    }
}

/// The payload of an appended event.
fn payload(version: i32) -> serde_json::Value {
    serde_json::json!({"sku": "SKU-1", "qty": version})
}

fn read_stream_sql() -> String {
    format!("SELECT {EVENT_COLUMNS} {READ_STREAM_WHERE}")
}

fn read_all_sql() -> String {
    format!("SELECT {EVENT_COLUMNS} {READ_ALL_WHERE}")
}

fn one_row(rows: Vec<Row>) -> Result<Row> {
    match rows.into_iter().next() {
        Some(row) => Ok(row),
        None => bail!("the statement returned no row"),
    }
}

fn page_of(rows: &[Row]) -> Page {
    Page {
        rows: rows.len(),
        last_position: rows.last().map(|row| row.get(0)),
    }
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<&tokio_postgres::SimpleQueryRow> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect()
}

fn simple_first_value(messages: &[SimpleQueryMessage]) -> Result<String> {
    simple_rows(messages)
        .first()
        .and_then(|row| row.get(0))
        .map(str::to_owned)
        .context("the statement returned no value")
}

/// `url` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://app:secret@127.0.0.1:5432/db"),
            "postgres://app@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/db"),
            "postgres://127.0.0.1/db"
        );
    }
}
