//! The migration metrics (DESIGN §12): their names, their descriptions, their histogram
//! buckets, and one recording function per figure.
//!
//! Every figure of a migration is labelled `migration_id` and `tenant_id`. The functions write
//! to whatever `metrics` recorder the process installed (the Prometheus exporter in `evshift
//! serve`, none in unit tests, where they do nothing). `MigrationStore` calls the ones for the
//! figures it persists (state, copied, progress, lag, failures), so the exported values follow
//! the control store's; the dual-writer, the cutover and the data plane's tenant gate call the
//! others.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use uuid::Uuid;

use crate::migration::MigrationStatus;
use crate::routing::MigrationState;

/// Gauge: the migration's phase as a number, see [`state_value`].
pub const MIGRATION_STATE: &str = "migration_state";
/// Gauge: events copied / events to copy, 0 to 100.
pub const MIGRATION_PROGRESS_PERCENT: &str = "migration_progress_percent";
/// Counter: events written to the target by the bulk copy and the tail.
pub const MIGRATION_EVENTS_COPIED_TOTAL: &str = "migration_events_copied_total";
/// Gauge: tenant events in the source not yet in the target.
pub const MIGRATION_SYNC_LAG_EVENTS: &str = "migration_sync_lag_events";
/// Histogram: source commit to target commit of one dual-written transaction, milliseconds.
pub const MIGRATION_DUAL_WRITE_LATENCY_MS: &str = "migration_dual_write_latency_ms";
/// Histogram: gate closed to gate open at a cutover (committed or rolled back), milliseconds.
pub const MIGRATION_CUTOVER_PAUSE_DURATION_MS: &str = "migration_cutover_pause_duration_ms";
/// Counter: failures of a migration, labelled `kind` as well.
pub const MIGRATION_FAILURES_TOTAL: &str = "migration_failures_total";
/// Counter: committed source transactions the dual-write did not copy (the tail will),
/// labelled `reason` as well.
pub const MIGRATION_DUAL_WRITE_FAILURES_TOTAL: &str = "migration_dual_write_failures_total";
/// Gauge: statements waiting at a closed tenant gate now (all tenants; no labels).
pub const HELD_STATEMENTS: &str = "evshift_held_statements";

/// Every metric name this module records.
pub const ALL: &[&str] = &[
    MIGRATION_STATE,
    MIGRATION_PROGRESS_PERCENT,
    MIGRATION_EVENTS_COPIED_TOTAL,
    MIGRATION_SYNC_LAG_EVENTS,
    MIGRATION_DUAL_WRITE_LATENCY_MS,
    MIGRATION_CUTOVER_PAUSE_DURATION_MS,
    MIGRATION_FAILURES_TOTAL,
    MIGRATION_DUAL_WRITE_FAILURES_TOTAL,
    HELD_STATEMENTS,
];

/// Upper bounds (ms) of the dual-write latency buckets: a target commit takes a few ms on a
/// healthy store; hundreds mean the target is slow and the tail is doing the work.
const DUAL_WRITE_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Upper bounds (ms) of the cutover pause buckets, up to past the default 5 s timeout.
const CUTOVER_PAUSE_BUCKETS_MS: &[f64] = &[
    10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 7500.0, 10000.0,
];

/// Each histogram with its bucket bounds: the exporter must be told, or it renders summaries.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (MIGRATION_DUAL_WRITE_LATENCY_MS, DUAL_WRITE_BUCKETS_MS),
    (
        MIGRATION_CUTOVER_PAUSE_DURATION_MS,
        CUTOVER_PAUSE_BUCKETS_MS,
    ),
];

/// The value `migration_state` takes in each phase. Dashboards and alerts compare against
/// these numbers, so they never change meaning.
pub fn state_value(state: MigrationState) -> f64 {
    match state {
        MigrationState::Pending => 0.0,
        MigrationState::BulkCopy => 1.0,
        MigrationState::DualWrite => 2.0,
        MigrationState::CutoverPaused => 3.0,
        MigrationState::Migrated => 4.0,
        MigrationState::Failed => 5.0,
        MigrationState::RolledBack => 6.0,
    }
}

/// Registers the help text of every migration metric; call once after installing the
/// recorder.
pub fn describe() {
    describe_gauge!(
        MIGRATION_STATE,
        "Phase of the migration: PENDING=0, BULK_COPY=1, DUAL_WRITE=2, CUTOVER_PAUSED=3, \
         MIGRATED=4, FAILED=5, ROLLED_BACK=6"
    );
    describe_gauge!(
        MIGRATION_PROGRESS_PERCENT,
        "Events copied as a percentage of the tenant's events (0-100)"
    );
    describe_counter!(
        MIGRATION_EVENTS_COPIED_TOTAL,
        Unit::Count,
        "Events written to the target by the bulk copy and the tail"
    );
    describe_gauge!(
        MIGRATION_SYNC_LAG_EVENTS,
        Unit::Count,
        "Tenant events in the source not yet in the target"
    );
    describe_histogram!(
        MIGRATION_DUAL_WRITE_LATENCY_MS,
        Unit::Milliseconds,
        "Source commit to target commit of one dual-written transaction"
    );
    describe_histogram!(
        MIGRATION_CUTOVER_PAUSE_DURATION_MS,
        Unit::Milliseconds,
        "Time the tenant's statements were held at a cutover (gate closed to gate open)"
    );
    describe_counter!(
        MIGRATION_FAILURES_TOTAL,
        Unit::Count,
        "Migration failures by kind: failed (the migration moved to FAILED), \
         cutover_rolled_back (a cutover gave up and the tenant stayed on its source)"
    );
    describe_counter!(
        MIGRATION_DUAL_WRITE_FAILURES_TOTAL,
        Unit::Count,
        "Committed source transactions the dual-write did not copy to the target, by reason; \
         the tail copies them"
    );
    describe_gauge!(
        HELD_STATEMENTS,
        Unit::Count,
        "Statements waiting at a closed tenant gate (cutover hold), all tenants"
    );
}

/// The two labels of every migration figure.
fn labels(id: i64, tenant: Uuid) -> [(&'static str, String); 2] {
    [
        ("migration_id", id.to_string()),
        ("tenant_id", tenant.to_string()),
    ]
}

/// The migration entered `state`.
pub fn state_changed(id: i64, tenant: Uuid, state: MigrationState) {
    metrics::gauge!(MIGRATION_STATE, &labels(id, tenant)).set(state_value(state));
}

/// `n` more events reached the target.
pub fn events_copied(id: i64, tenant: Uuid, n: u64) {
    metrics::counter!(MIGRATION_EVENTS_COPIED_TOTAL, &labels(id, tenant)).increment(n);
}

/// The share of the tenant's events copied so far, 0 to 100.
pub fn progress(id: i64, tenant: Uuid, percent: f64) {
    metrics::gauge!(MIGRATION_PROGRESS_PERCENT, &labels(id, tenant)).set(percent);
}

/// Tenant events in the source not yet in the target.
pub fn lag(id: i64, tenant: Uuid, events: i64) {
    metrics::gauge!(MIGRATION_SYNC_LAG_EVENTS, &labels(id, tenant)).set(events as f64);
}

/// One dual-written transaction reached the target `latency` after the source committed it.
pub fn dual_write_latency(id: i64, tenant: Uuid, latency: Duration) {
    metrics::histogram!(MIGRATION_DUAL_WRITE_LATENCY_MS, &labels(id, tenant))
        .record(latency.as_secs_f64() * 1000.0);
}

/// The tenant's gate was closed for `pause` at a cutover, whatever its outcome.
pub fn cutover_pause(id: i64, tenant: Uuid, pause: Duration) {
    metrics::histogram!(MIGRATION_CUTOVER_PAUSE_DURATION_MS, &labels(id, tenant))
        .record(pause.as_secs_f64() * 1000.0);
}

/// Something went wrong in the migration; `kind` says what (`failed`,
/// `cutover_rolled_back`), a short fixed word, never a message.
pub fn failure(id: i64, tenant: Uuid, kind: &str) {
    let [migration, tenant] = labels(id, tenant);
    metrics::counter!(
        MIGRATION_FAILURES_TOTAL,
        &[migration, tenant, ("kind", kind.to_string())]
    )
    .increment(1);
}

/// A committed source transaction the dual-write did not copy; `reason` is a short fixed
/// word (e.g. `target_error`, `queue_full`), never a message.
pub fn dual_write_failure(id: i64, tenant: Uuid, reason: &str) {
    let [migration, tenant] = labels(id, tenant);
    metrics::counter!(
        MIGRATION_DUAL_WRITE_FAILURES_TOTAL,
        &[migration, tenant, ("reason", reason.to_string())]
    )
    .increment(1);
}

/// Every persisted figure of a migration as read from the control store, e.g. at start-up,
/// so a restarted process exports what the control store holds before the next batch.
pub fn loaded(status: &MigrationStatus) {
    let (id, tenant) = (status.id, status.tenant_id);
    state_changed(id, tenant, status.state);
    progress(id, tenant, status.progress_percentage);
    lag(id, tenant, status.lag_events);
    // `absolute` only moves a counter up: an older row never lowers what this process counted.
    metrics::counter!(MIGRATION_EVENTS_COPIED_TOTAL, &labels(id, tenant))
        .absolute(status.events_copied.max(0) as u64);
}

/// One statement waiting at a closed tenant gate, counted in `evshift_held_statements` from
/// creation to drop, so a waiter that is dropped (its client went away) is uncounted too.
#[derive(Debug)]
#[must_use = "the statement counts as held only while the guard lives"]
pub struct HeldStatement(());

impl HeldStatement {
    /// Counts one more held statement.
    pub fn new() -> HeldStatement {
        metrics::gauge!(HELD_STATEMENTS).increment(1.0);
        HeldStatement(())
    }
}

impl Default for HeldStatement {
    fn default() -> Self {
        HeldStatement::new()
    }
}

impl Drop for HeldStatement {
    fn drop(&mut self) {
        metrics::gauge!(HELD_STATEMENTS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_value_in_phase_order() {
        let values: Vec<f64> = MigrationState::ALL.into_iter().map(state_value).collect();
        assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn every_histogram_has_increasing_buckets_and_is_listed() {
        for (name, buckets) in HISTOGRAM_BUCKETS {
            assert!(ALL.contains(name), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
    }

    #[test]
    fn names_are_prometheus_names() {
        for name in ALL {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
    }
}
