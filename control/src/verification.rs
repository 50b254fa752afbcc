//! Verification (DESIGN §9): does the target hold exactly the tenant's events of the source?
//!
//! Three levels, each over every event of the tenant in both stores, both stores queried at
//! once:
//!
//! - `count`: per stream (`aggregate_id`, `aggregate_type`): streams missing on the target,
//!   extra on the target, event-count and last-version mismatches. One row per stream travels.
//! - `hash`: `count`, plus an order-independent digest of the rows computed inside each store
//!   (see [`canonical`]): no event row travels.
//! - `full`: a streaming merge of both stores' rows ordered by (`aggregate_id`,
//!   `aggregate_type`, `version`) that names every missing, extra and differing event and the
//!   columns that differ. Memory stays at one row per side.
//!
//! [`verify_since`] is the cutover's check while the tenant is held: the whole tenant's
//! per-stream counts, and the digest of only the source rows above a position (and of the
//! target rows with the same event ids), which is cheap when that subset is small.
//!
//! A verification compares the stores as they are when it runs: while the tenant still
//! writes (DUAL_WRITE), rows not yet copied show as missing; after MIGRATED the target holds
//! newer events than the source.

pub mod canonical;
pub mod merge;
pub mod report;

use std::time::Instant;

use futures::{Stream, StreamExt, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{describe_pg_error, ControlError};
use crate::migration::{MigrationStatus, VerifyMode};
use crate::store_directory::StoreDirectory;
use canonical::EVENT_ID_COLUMN;
pub use canonical::{CanonicalColumn, Digest, CANONICAL_COLUMNS};
use merge::{merge_join, Paired};
use report::ReportBuilder;
pub use report::{Mismatch, MismatchTotals, SideSummary, StreamKey, VerificationReport};

/// The tenant's streams with their event count and last version, in merge order. Text is
/// ordered by `COLLATE "C"` (bytes), which is how Rust orders `String`, whatever the stores'
/// collations.
const STREAMS_SQL: &str = "
    SELECT aggregate_id, aggregate_type::text, count(*), max(version)
      FROM events WHERE tenant_id = $1
     GROUP BY aggregate_id, aggregate_type
     ORDER BY aggregate_id, aggregate_type COLLATE \"C\"";

/// Verifies `migration`'s target against its source at `level`. A difference is a report
/// with `passed: false`, not an error; errors are stores that could not be asked.
pub async fn verify(
    stores: &StoreDirectory,
    migration: &MigrationStatus,
    level: VerifyMode,
) -> Result<VerificationReport, ControlError> {
    let span = tracing::info_span!("eventsource.migration.verification",
        migration_id = migration.id, tenant_id = %migration.tenant_id,
        phase = %migration.state, operation = "verify", level = ?level);
    async {
        let started = Instant::now();
        let (source, target) = connect_both(stores, migration).await?;
        let pair = Pair::new(migration, &source, &target);
        let mut report = ReportBuilder::default();
        match level {
            VerifyMode::Count => pair.compare_streams(&mut report).await?,
            VerifyMode::Hash => {
                pair.compare_streams(&mut report).await?;
                pair.compare_digests(&mut report).await?;
            }
            VerifyMode::Full => pair.compare_events(&mut report).await?,
        }
        Ok(finish(report, migration, level, None, started))
    }
    .instrument(span)
    .await
}

/// The cutover's verification: the whole tenant at level `count`, and the digest of the
/// source's rows of the tenant above `after_source_position` against the target's rows with
/// the same event ids. Only those event ids travel, so this is meant for a subset of a few
/// thousand rows (what was copied since the last full verification).
pub async fn verify_since(
    stores: &StoreDirectory,
    migration: &MigrationStatus,
    after_source_position: i64,
) -> Result<VerificationReport, ControlError> {
    let span = tracing::info_span!("eventsource.migration.verification",
        migration_id = migration.id, tenant_id = %migration.tenant_id,
        phase = %migration.state, operation = "verify_since", after_source_position);
    async {
        let started = Instant::now();
        let (source, target) = connect_both(stores, migration).await?;
        let pair = Pair::new(migration, &source, &target);
        let mut report = ReportBuilder::default();
        pair.compare_streams(&mut report).await?;
        pair.compare_subset_digests(after_source_position, None, &mut report)
            .await?;
        Ok(finish(
            report,
            migration,
            VerifyMode::Hash,
            Some(after_source_position),
            started,
        ))
    }
    .instrument(span)
    .await
}

/// The digest of the tenant's source rows with `after < global_position <= through` (no upper
/// bound for `None`) against the digest of their copies on the target, on open connections.
/// The cutover checks the rows up to a settled position this way before it holds the tenant,
/// and the rest under the hold, so the hold only hashes what was copied last.
pub async fn verify_range(
    source: &Client,
    target: &Client,
    migration: &MigrationStatus,
    after: i64,
    through: Option<i64>,
) -> Result<VerificationReport, ControlError> {
    let span = tracing::info_span!("eventsource.migration.verification",
        migration_id = migration.id, tenant_id = %migration.tenant_id,
        phase = %migration.state, operation = "verify_range", after_source_position = after,
        through_source_position = through);
    async {
        let started = Instant::now();
        let pair = Pair::new(migration, source, target);
        let mut report = ReportBuilder::default();
        pair.compare_subset_digests(after, through, &mut report)
            .await?;
        // No stream comparison here: the sides' event counts are those of the range.
        for side in [&mut report.source, &mut report.target] {
            side.events = side.digest.map_or(0, |d| d.events);
        }
        Ok(finish(
            report,
            migration,
            VerifyMode::Hash,
            Some(after),
            started,
        ))
    }
    .instrument(span)
    .await
}

fn finish(
    report: ReportBuilder,
    migration: &MigrationStatus,
    level: VerifyMode,
    since: Option<i64>,
    started: Instant,
) -> VerificationReport {
    let report = report.finish(
        migration,
        level,
        since,
        started.elapsed().as_millis() as u64,
    );
    tracing::info!(migration_id = migration.id, tenant_id = %migration.tenant_id,
        phase = %migration.state, operation = "verification", passed = report.passed,
        duration_ms = report.duration_ms, "{}", report.summary());
    report
}

async fn connect_both(
    stores: &StoreDirectory,
    migration: &MigrationStatus,
) -> Result<(Client, Client), ControlError> {
    tokio::try_join!(
        stores.connect(&migration.source_store),
        stores.connect(&migration.target_store)
    )
}

/// The source and target connections of one verification.
struct Pair<'a> {
    tenant: Uuid,
    source_store: &'a str,
    target_store: &'a str,
    source: &'a Client,
    target: &'a Client,
}

/// One stream's summary in a store.
struct StreamRow {
    key: (Uuid, String),
    events: i64,
    last_version: i32,
}

/// One event in canonical form.
struct EventRow {
    key: (Uuid, String, i32),
    /// The [`CANONICAL_COLUMNS`] texts, in order.
    columns: Vec<Option<String>>,
}

impl EventRow {
    fn event_id(&self) -> Uuid {
        self.columns[EVENT_ID_COLUMN]
            .as_deref()
            .and_then(|text| Uuid::parse_str(text).ok())
            .unwrap_or_default()
    }

    fn stream(&self) -> StreamKey {
        StreamKey {
            aggregate_id: self.key.0,
            aggregate_type: self.key.1.clone(),
        }
    }
}

impl<'a> Pair<'a> {
    fn new(migration: &'a MigrationStatus, source: &'a Client, target: &'a Client) -> Pair<'a> {
        Pair {
            tenant: migration.tenant_id,
            source_store: &migration.source_store,
            target_store: &migration.target_store,
            source,
            target,
        }
    }

    /// Level `count`: per-stream counts and last versions.
    async fn compare_streams(&self, report: &mut ReportBuilder) -> Result<(), ControlError> {
        let tenant: [&(dyn ToSql + Sync); 1] = [&self.tenant];
        let (source, target) = tokio::try_join!(
            rows(self.source, self.source_store, STREAMS_SQL, &tenant),
            rows(self.target, self.target_store, STREAMS_SQL, &tenant)
        )?;
        let (source, target) = (
            source.map(|row| stream_row(row?)),
            target.map(|row| stream_row(row?)),
        );
        merge_join(
            (self.source_store, Box::pin(source)),
            (self.target_store, Box::pin(target)),
            |row: &StreamRow| row.key.clone(),
            |paired| compare_stream(paired, report),
        )
        .await
    }

    /// Level `hash`: the digest of every row of the tenant in each store.
    async fn compare_digests(&self, report: &mut ReportBuilder) -> Result<(), ControlError> {
        let sql = format!(
            "SELECT count(*), coalesce(sum({}), 0)::text FROM events WHERE tenant_id = $1",
            canonical::row_hash()
        );
        let tenant: [&(dyn ToSql + Sync); 1] = [&self.tenant];
        let (source, target) = tokio::try_join!(
            query_one(self.source, self.source_store, &sql, &tenant),
            query_one(self.target, self.target_store, &sql, &tenant)
        )?;
        record_digests(digest_of(&source)?, digest_of(&target)?, report);
        Ok(())
    }

    /// The digest of the source's rows of the tenant above `after` (and at or below
    /// `through`, when given), and of the target's rows with the same event ids.
    async fn compare_subset_digests(
        &self,
        after: i64,
        through: Option<i64>,
        report: &mut ReportBuilder,
    ) -> Result<(), ControlError> {
        let hash = canonical::row_hash();
        let source_sql = format!(
            "SELECT count(*), coalesce(sum({hash}), 0)::text,
                    coalesce(array_agg(event_id), '{{}}')
               FROM events WHERE tenant_id = $1 AND global_position > $2
                AND global_position <= $3"
        );
        let through = through.unwrap_or(i64::MAX);
        let source = query_one(
            self.source,
            self.source_store,
            &source_sql,
            &[&self.tenant, &after, &through],
        )
        .await?;
        let event_ids: Vec<Uuid> = get(&source, 2)?;
        // No tenant filter on the target: a copy whose tenant_id differs must count as a
        // differing row, not vanish from the comparison.
        let target_sql = format!(
            "SELECT count(*), coalesce(sum({hash}), 0)::text
               FROM events WHERE event_id = ANY($1)"
        );
        let target = query_one(self.target, self.target_store, &target_sql, &[&event_ids]).await?;
        record_digests(digest_of(&source)?, digest_of(&target)?, report);
        Ok(())
    }

    /// Level `full`: every event, merged by (aggregate_id, aggregate_type, version).
    async fn compare_events(&self, report: &mut ReportBuilder) -> Result<(), ControlError> {
        let sql = format!(
            "SELECT aggregate_id, aggregate_type::text, version, {}
               FROM events WHERE tenant_id = $1
              ORDER BY events.aggregate_id, events.aggregate_type COLLATE \"C\", events.version",
            canonical::column_list()
        );
        let tenant: [&(dyn ToSql + Sync); 1] = [&self.tenant];
        let (source, target) = tokio::try_join!(
            rows(self.source, self.source_store, &sql, &tenant),
            rows(self.target, self.target_store, &sql, &tenant)
        )?;
        let (source, target) = (
            source.map(|row| event_row(row?)),
            target.map(|row| event_row(row?)),
        );
        let mut streams = StreamCounter::default();
        merge_join(
            (self.source_store, Box::pin(source)),
            (self.target_store, Box::pin(target)),
            |row: &EventRow| row.key.clone(),
            |paired| {
                streams.see(&paired, report);
                compare_event(paired, report);
            },
        )
        .await
    }
}

/// Counts events and streams per side while events stream by (level `full`).
#[derive(Default)]
struct StreamCounter {
    source: Option<(Uuid, String)>,
    target: Option<(Uuid, String)>,
}

impl StreamCounter {
    fn see(&mut self, paired: &Paired<EventRow>, report: &mut ReportBuilder) {
        let (source, target) = match paired {
            Paired::Both(a, b) => (Some(a), Some(b)),
            Paired::Left(a) => (Some(a), None),
            Paired::Right(b) => (None, Some(b)),
        };
        if let Some(row) = source {
            count_row(&mut self.source, row, &mut report.source);
        }
        if let Some(row) = target {
            count_row(&mut self.target, row, &mut report.target);
        }
    }
}

fn count_row(last: &mut Option<(Uuid, String)>, row: &EventRow, side: &mut SideSummary) {
    side.events += 1;
    let stream = (row.key.0, row.key.1.clone());
    if last.as_ref() != Some(&stream) {
        side.streams += 1;
        *last = Some(stream);
    }
}

/// Records one stream of the merge.
fn compare_stream(paired: Paired<StreamRow>, report: &mut ReportBuilder) {
    let stream = |row: &StreamRow| StreamKey {
        aggregate_id: row.key.0,
        aggregate_type: row.key.1.clone(),
    };
    match paired {
        Paired::Left(a) => {
            add_stream(&mut report.source, &a);
            report.push(Mismatch::StreamMissing {
                stream: stream(&a),
                source_events: a.events,
                source_last_version: a.last_version,
            });
        }
        Paired::Right(b) => {
            add_stream(&mut report.target, &b);
            report.push(Mismatch::StreamExtra {
                stream: stream(&b),
                target_events: b.events,
                target_last_version: b.last_version,
            });
        }
        Paired::Both(a, b) => {
            add_stream(&mut report.source, &a);
            add_stream(&mut report.target, &b);
            if a.events != b.events {
                report.push(Mismatch::StreamCount {
                    stream: stream(&a),
                    source_events: a.events,
                    target_events: b.events,
                });
            }
            if a.last_version != b.last_version {
                report.push(Mismatch::StreamLastVersion {
                    stream: stream(&a),
                    source_last_version: a.last_version,
                    target_last_version: b.last_version,
                });
            }
        }
    }
}

fn add_stream(side: &mut SideSummary, row: &StreamRow) {
    side.streams += 1;
    side.events += row.events;
}

/// Records one event of the merge. Two different events at the same stream and version are
/// the source's event missing and another extra, not one event that differs.
fn compare_event(paired: Paired<EventRow>, report: &mut ReportBuilder) {
    match paired {
        Paired::Left(a) => report.push(missing(&a)),
        Paired::Right(b) => report.push(extra(&b)),
        Paired::Both(a, b) => {
            if a.columns[EVENT_ID_COLUMN] != b.columns[EVENT_ID_COLUMN] {
                report.push(missing(&a));
                report.push(extra(&b));
                return;
            }
            let columns = differing_columns(&a.columns, &b.columns);
            if !columns.is_empty() {
                report.push(Mismatch::EventDiffers {
                    event_id: a.event_id(),
                    stream: a.stream(),
                    version: a.key.2,
                    columns,
                });
            }
        }
    }
}

fn missing(row: &EventRow) -> Mismatch {
    Mismatch::EventMissing {
        event_id: row.event_id(),
        stream: row.stream(),
        version: row.key.2,
    }
}

fn extra(row: &EventRow) -> Mismatch {
    Mismatch::EventExtra {
        event_id: row.event_id(),
        stream: row.stream(),
        version: row.key.2,
    }
}

/// The names of the canonical columns whose texts differ.
fn differing_columns(a: &[Option<String>], b: &[Option<String>]) -> Vec<String> {
    CANONICAL_COLUMNS
        .iter()
        .zip(a.iter().zip(b))
        .filter(|(_, (x, y))| x != y)
        .map(|(column, _)| column.name.to_string())
        .collect()
}

fn record_digests(source: Digest, target: Digest, report: &mut ReportBuilder) {
    report.source.digest = Some(source);
    report.target.digest = Some(target);
    if source != target {
        report.push(Mismatch::Digest { source, target });
    }
}

fn digest_of(row: &Row) -> Result<Digest, ControlError> {
    Digest::from_sum_text(get(row, 0)?, &get::<String>(row, 1)?)
}

fn stream_row(row: Row) -> Result<StreamRow, ControlError> {
    Ok(StreamRow {
        key: (get(&row, 0)?, get(&row, 1)?),
        events: get(&row, 2)?,
        last_version: get(&row, 3)?,
    })
}

fn event_row(row: Row) -> Result<EventRow, ControlError> {
    let columns = (0..CANONICAL_COLUMNS.len())
        .map(|i| get::<Option<String>>(&row, 3 + i))
        .collect::<Result<_, _>>()?;
    Ok(EventRow {
        key: (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?),
        columns,
    })
}

fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    index: usize,
) -> Result<T, ControlError> {
    row.try_get(index)
        .map_err(|e| ControlError::Internal(format!("unexpected verification row: {e}")))
}

/// Starts `sql` on `client` and returns its rows as a stream.
async fn rows<'c>(
    client: &'c Client,
    store: &'c str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<impl Stream<Item = Result<Row, ControlError>> + 'c, ControlError> {
    let failed = move |e: tokio_postgres::Error| {
        ControlError::store_unavailable(store, describe_pg_error(&e))
    };
    let stream = client
        .query_raw(sql, params.iter().copied())
        .await
        .map_err(failed)?;
    Ok(stream.map_err(failed))
}

async fn query_one(
    client: &Client,
    store: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, ControlError> {
    client
        .query_one(sql, params)
        .await
        .map_err(|e| ControlError::store_unavailable(store, describe_pg_error(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, payload: &str) -> EventRow {
        let mut columns: Vec<Option<String>> = CANONICAL_COLUMNS
            .iter()
            .map(|c| Some(c.name.to_string()))
            .collect();
        columns[EVENT_ID_COLUMN] = Some(id.to_string());
        columns[8] = Some(payload.to_string());
        EventRow {
            key: (Uuid::nil(), "Order".into(), 1),
            columns,
        }
    }

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";

    #[test]
    fn equal_events_pass_and_differing_ones_name_their_columns() {
        let mut report = ReportBuilder::default();
        compare_event(Paired::Both(event(A, "{}"), event(A, "{}")), &mut report);
        assert_eq!(report.totals().total(), 0);
        compare_event(
            Paired::Both(event(A, "{}"), event(A, "{\"x\": 1}")),
            &mut report,
        );
        assert_eq!(report.totals().events_differing, 1);
        assert!(matches!(&report.listed()[0],
            Mismatch::EventDiffers { columns, event_id, .. }
                if columns == &["payload"] && event_id.to_string() == A));
    }

    #[test]
    fn another_event_at_the_same_version_is_missing_plus_extra() {
        let mut report = ReportBuilder::default();
        compare_event(Paired::Both(event(A, "{}"), event(B, "{}")), &mut report);
        let (totals, list) = (report.totals(), report.listed());
        assert_eq!((totals.events_missing, totals.events_extra), (1, 1));
        assert!(
            matches!(list[0], Mismatch::EventMissing { event_id, .. } if event_id.to_string() == A)
        );
        assert!(
            matches!(list[1], Mismatch::EventExtra { event_id, .. } if event_id.to_string() == B)
        );
    }

    #[test]
    fn streams_compare_counts_and_last_versions() {
        let row = |events, last_version| StreamRow {
            key: (Uuid::nil(), "Order".into()),
            events,
            last_version,
        };
        let mut report = ReportBuilder::default();
        compare_stream(Paired::Both(row(3, 3), row(3, 3)), &mut report);
        compare_stream(Paired::Both(row(3, 3), row(2, 3)), &mut report);
        compare_stream(Paired::Both(row(3, 3), row(3, 4)), &mut report);
        compare_stream(Paired::Left(row(1, 1)), &mut report);
        compare_stream(Paired::Right(row(2, 2)), &mut report);
        assert_eq!(report.source.streams, 4);
        assert_eq!(report.source.events, 10);
        assert_eq!(report.target.events, 10);
        let totals = report.totals();
        assert_eq!(totals.stream_counts, 1);
        assert_eq!(totals.stream_last_versions, 1);
        assert_eq!(totals.streams_missing, 1);
        assert_eq!(totals.streams_extra, 1);
    }

    #[test]
    fn the_stream_counter_counts_each_stream_once() {
        let mut report = ReportBuilder::default();
        let mut counter = StreamCounter::default();
        let mut row = event(A, "{}");
        counter.see(&Paired::Left(event(A, "{}")), &mut report);
        row.key.2 = 2;
        counter.see(&Paired::Both(row, event(A, "{}")), &mut report);
        let mut other = event(B, "{}");
        other.key.0 = Uuid::max();
        counter.see(&Paired::Right(other), &mut report);
        assert_eq!((report.source.events, report.source.streams), (2, 1));
        assert_eq!((report.target.events, report.target.streams), (2, 2));
    }
}
