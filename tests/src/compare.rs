//! Reading events back for assertions, and comparing one tenant's events across two stores.
//!
//! `global_position` and `txid` are left out everywhere: each store assigns its own.

use std::cmp::Ordering;
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

/// At most this many differences are spelled out in a diff report.
const MAX_REPORTED_DIFFERENCES: usize = 20;

/// One row of `events` without the store-assigned columns, in plain comparable values.
/// Timestamps are UTC text with microseconds and the payload is the canonical `jsonb` text, so
/// equality is exact and a diff prints readably.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventRow {
    /// `event_id`.
    pub event_id: Uuid,
    /// `aggregate_id`.
    pub aggregate_id: Uuid,
    /// `aggregate_type`.
    pub aggregate_type: String,
    /// `event_type`.
    pub event_type: String,
    /// `tenant_id`.
    pub tenant_id: Option<Uuid>,
    /// `actor_id`.
    pub actor_id: Option<String>,
    /// `version`.
    pub version: i32,
    /// `timestamp`, as `YYYY-MM-DDTHH:MI:SS.ffffffZ`.
    pub timestamp: String,
    /// `payload::text`.
    pub payload: String,
    /// `created_at`, as `YYYY-MM-DDTHH:MI:SS.ffffffZ`.
    pub created_at: String,
}

impl EventRow {
    fn from_row(row: &Row) -> EventRow {
        EventRow {
            event_id: row.get(0),
            aggregate_id: row.get(1),
            aggregate_type: row.get(2),
            event_type: row.get(3),
            tenant_id: row.get(4),
            actor_id: row.get(5),
            version: row.get(6),
            timestamp: row.get(7),
            payload: row.get(8),
            created_at: row.get(9),
        }
    }

    /// `(column, left value, right value)` for every column where `self` and `other` differ.
    pub fn differing_columns(&self, other: &EventRow) -> Vec<(&'static str, String, String)> {
        let mut columns = Vec::new();
        let mut check = |name: &'static str, a: String, b: String| {
            if a != b {
                columns.push((name, a, b));
            }
        };
        check(
            "aggregate_id",
            self.aggregate_id.to_string(),
            other.aggregate_id.to_string(),
        );
        check(
            "aggregate_type",
            self.aggregate_type.clone(),
            other.aggregate_type.clone(),
        );
        check(
            "event_type",
            self.event_type.clone(),
            other.event_type.clone(),
        );
        check(
            "tenant_id",
            format!("{:?}", self.tenant_id),
            format!("{:?}", other.tenant_id),
        );
        check(
            "actor_id",
            format!("{:?}", self.actor_id),
            format!("{:?}", other.actor_id),
        );
        check(
            "version",
            self.version.to_string(),
            other.version.to_string(),
        );
        check("timestamp", self.timestamp.clone(), other.timestamp.clone());
        check("payload", self.payload.clone(), other.payload.clone());
        check(
            "created_at",
            self.created_at.clone(),
            other.created_at.clone(),
        );
        columns
    }
}

/// Rows in `events`: all of them for `None`, those of one tenant for `Some`.
pub async fn count_events(client: &Client, tenant: Option<Uuid>) -> Result<i64> {
    let row = match tenant {
        None => client.query_one("SELECT count(*) FROM events", &[]).await,
        Some(tenant) => {
            client
                .query_one(
                    "SELECT count(*) FROM events WHERE tenant_id = $1",
                    &[&tenant],
                )
                .await
        }
    };
    Ok(row.context("count events")?.get(0))
}

/// Every event of `tenant`, ordered by `event_id`.
pub async fn tenant_event_rows(client: &Client, tenant: Uuid) -> Result<Vec<EventRow>> {
    let rows = client
        .query(
            "SELECT event_id, aggregate_id, aggregate_type, event_type, tenant_id, actor_id,
                    version,
                    to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    payload::text,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
               FROM events
              WHERE tenant_id = $1
              ORDER BY event_id",
            &[&tenant],
        )
        .await
        .with_context(|| format!("read the events of tenant {tenant}"))?;
    Ok(rows.iter().map(EventRow::from_row).collect())
}

/// The aggregates of `tenant` with their current version, ordered by aggregate id.
pub async fn tenant_aggregates(client: &Client, tenant: Uuid) -> Result<Vec<(Uuid, i32)>> {
    let rows = client
        .query(
            "SELECT aggregate_id, max(version) FROM events
              WHERE tenant_id = $1 GROUP BY aggregate_id ORDER BY aggregate_id",
            &[&tenant],
        )
        .await
        .with_context(|| format!("read the aggregates of tenant {tenant}"))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Fails, with a readable report of the differences, unless stores `a` and `b` hold the same
/// events for `tenant` (all columns but `global_position` and `txid`).
pub async fn assert_same_events(a: &Client, b: &Client, tenant: Uuid) -> Result<()> {
    let left = tenant_event_rows(a, tenant).await.context("store a")?;
    let right = tenant_event_rows(b, tenant).await.context("store b")?;
    match diff_event_rows(&left, &right) {
        None => Ok(()),
        Some(report) => {
            bail!("events of tenant {tenant} differ between store a and store b:\n{report}")
        }
    }
}

/// A report of how `a` and `b` (both ordered by `event_id`, as [`tenant_event_rows`] returns
/// them) differ, or `None` when they are equal.
pub fn diff_event_rows(a: &[EventRow], b: &[EventRow]) -> Option<String> {
    let mut lines = Vec::new();
    let (mut changed, mut only_a, mut only_b) = (0, 0, 0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.event_id.cmp(&y.event_id),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                only_a += 1;
                lines.push(format!("only in a: {}", describe(&a[i])));
                i += 1;
            }
            Ordering::Greater => {
                only_b += 1;
                lines.push(format!("only in b: {}", describe(&b[j])));
                j += 1;
            }
            Ordering::Equal => {
                let columns = a[i].differing_columns(&b[j]);
                if !columns.is_empty() {
                    changed += 1;
                    let mut line = format!("changed:   {}", describe(&a[i]));
                    for (column, left, right) in columns {
                        write!(line, "\n           {column}: a={left} b={right}")
                            .expect("writing to a String cannot fail");
                    }
                    lines.push(line);
                }
                i += 1;
                j += 1;
            }
        }
    }
    if lines.is_empty() {
        return None;
    }
    let mut report = format!(
        "a has {} rows, b has {}: {changed} changed, {only_a} only in a, {only_b} only in b",
        a.len(),
        b.len()
    );
    for line in lines.iter().take(MAX_REPORTED_DIFFERENCES) {
        write!(report, "\n  {line}").expect("writing to a String cannot fail");
    }
    if lines.len() > MAX_REPORTED_DIFFERENCES {
        write!(
            report,
            "\n  ... and {} more",
            lines.len() - MAX_REPORTED_DIFFERENCES
        )
        .expect("writing to a String cannot fail");
    }
    Some(report)
}

fn describe(row: &EventRow) -> String {
    format!(
        "event {} ({} {} v{}, {})",
        row.event_id, row.aggregate_type, row.aggregate_id, row.version, row.event_type
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u128, version: i32) -> EventRow {
        EventRow {
            event_id: Uuid::from_u128(id),
            aggregate_id: Uuid::from_u128(1000),
            aggregate_type: "Order".into(),
            event_type: "ItemAdded".into(),
            tenant_id: Some(Uuid::from_u128(7)),
            actor_id: Some("user-1".into()),
            version,
            timestamp: "2024-01-01T00:00:00.000000Z".into(),
            payload: "{}".into(),
            created_at: "2024-01-01T00:00:00.005000Z".into(),
        }
    }

    #[test]
    fn equal_rows_have_no_diff() {
        let rows = vec![row(1, 1), row(2, 2)];
        assert_eq!(diff_event_rows(&rows, &rows.clone()), None);
    }

    #[test]
    fn diff_names_changed_missing_and_extra_rows() {
        let a = vec![row(1, 1), row(2, 2), row(3, 3)];
        let mut changed = row(2, 2);
        changed.payload = r#"{"x": 1}"#.into();
        let b = vec![changed, row(3, 3), row(4, 4)];
        let report = diff_event_rows(&a, &b).expect("rows differ");
        assert!(
            report.contains("1 changed, 1 only in a, 1 only in b"),
            "{report}"
        );
        assert!(report.contains(r#"payload: a={} b={"x": 1}"#), "{report}");
        assert!(
            report.contains(&format!("only in a: event {}", Uuid::from_u128(1))),
            "{report}"
        );
        assert!(
            report.contains(&format!("only in b: event {}", Uuid::from_u128(4))),
            "{report}"
        );
    }
}
