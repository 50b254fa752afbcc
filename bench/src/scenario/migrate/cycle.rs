//! One migration of the scenario under the running loads: the window before it, the removal
//! of the tenant's old copy from the store it goes back to, `evshift ctl migrate
//! --manual-cutover`, the wait for DUAL_WRITE with a small lag, the window in DUAL_WRITE, and
//! the cutover with a window around it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::windows::{self, Latency, Snapshot};
use super::{Loads, Settings, Setup, DB, NAME, STORES};
use crate::mix::TxKind;
use crate::scenario::Environment;

/// Between two status polls.
const POLL: Duration = Duration::from_millis(100);
/// How long a migration may take to reach DUAL_WRITE with a small lag.
const READY_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Cutover attempts per migration (one that rolls back is tried again).
const MAX_ATTEMPTS: usize = 3;
/// The errors after which a cutover may be tried again: it rolled back to DUAL_WRITE.
const ROLLED_BACK_KINDS: [&str; 2] = ["CutoverTimeoutError", "ConsistencyError"];

/// What completed in one window: the migrating tenant's appends, the other tenants' appends
/// and stream reads.
#[derive(Debug, Clone)]
pub struct Measured {
    pub moving: Histogram<u64>,
    pub others_append: Histogram<u64>,
    pub others_read: Histogram<u64>,
}

impl Measured {
    fn empty() -> Measured {
        Measured {
            moving: windows::empty(),
            others_append: windows::empty(),
            others_read: windows::empty(),
        }
    }

    fn add(&mut self, other: &Measured) {
        windows::pool(&mut self.moving, &other.moving);
        windows::pool(&mut self.others_append, &other.others_append);
        windows::pool(&mut self.others_read, &other.others_read);
    }

    /// The summary of each group.
    pub fn summary(&self) -> MeasuredSummary {
        MeasuredSummary {
            moving: Latency::of(&self.moving),
            others_append: Latency::of(&self.others_append),
            others_read: Latency::of(&self.others_read),
        }
    }
}

/// [`Measured`] as percentiles.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeasuredSummary {
    /// The migrating tenant's appends.
    pub moving: Latency,
    pub others_append: Latency,
    pub others_read: Latency,
}

/// The windows of every migration, pooled by kind.
pub struct Pools {
    /// Before each migration.
    pub before: Measured,
    /// In DUAL_WRITE before each cutover.
    pub dual_write: Measured,
    /// Around each cutover.
    pub cutover: Measured,
}

impl Pools {
    pub fn new() -> Pools {
        Pools {
            before: Measured::empty(),
            dual_write: Measured::empty(),
            cutover: Measured::empty(),
        }
    }
}

/// One cutover.
#[derive(Debug, Clone, Serialize)]
pub struct Cutover {
    /// `evshift ctl cutover` calls (more than 1 when one rolled back).
    pub attempts: usize,
    /// The errors of the attempts that rolled back.
    pub rolled_back: Vec<String>,
    /// The lag when the successful attempt was requested.
    pub lag_events: i64,
    /// Gate closed to gate open, ms: this attempt's increment of evshift's
    /// `migration_cutover_pause_duration_ms` histogram sum.
    pub pause_ms: f64,
    /// `pause_ms_before_commit` of the `cutover_completed` audit row: gate closed to the start
    /// of the control-store commit.
    pub pause_ms_before_commit: f64,
    /// `final_tail_events` of that row.
    pub final_tail_events: i64,
    /// The `evshift ctl cutover` round trip, ms.
    pub ctl_ms: f64,
    /// Seconds since 1970 when the successful attempt was requested and when it returned.
    pub requested_at: f64,
    pub returned_at: f64,
}

/// One migration.
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    pub migration_id: i64,
    pub from: &'static str,
    pub to: &'static str,
    /// The tenant's events in the source when the copy counted them.
    pub events_total: i64,
    /// The tenant's old copy removed from the target before the migration (events, seconds).
    pub removed_events: u64,
    pub removal_s: f64,
    /// `migrate` to DUAL_WRITE with the lag at or under the threshold, seconds.
    pub to_dual_write_s: f64,
    pub before: MeasuredSummary,
    pub dual_write: MeasuredSummary,
    pub around_cutover: MeasuredSummary,
    pub cutover: Cutover,
}

/// Runs the migrations one after the other, pooling their windows.
pub struct CycleRunner<'a> {
    pub env: &'a Environment,
    pub settings: &'a Settings,
    pub setup: &'a Setup,
    pub loads: &'a Loads,
    /// The migrating tenant.
    pub tenant: Uuid,
    pub pools: Pools,
}

/// Both loads' cumulative histograms at one instant.
struct Snapshots {
    moving: Snapshot,
    others: Snapshot,
}

impl CycleRunner<'_> {
    /// Migration `index` (0-based): to the dedicated store when even, back when odd.
    pub async fn run(&mut self, index: usize) -> Result<Cycle> {
        let n = index + 1;
        let (from, to) = if index.is_multiple_of(2) {
            (STORES[0], STORES[1])
        } else {
            (STORES[1], STORES[0])
        };
        self.loads.mark(&format!("before {n}"));
        let before = self.window(self.settings.window).await;
        let (removed_events, removal_s) = if index > 0 {
            self.remove_old_copy(to).await?
        } else {
            (0, 0.0)
        };
        self.loads.mark(&format!("migrate {n}"));
        let started = Instant::now();
        let id = self.migrate(to).await?;
        let ready = self.wait_ready(id).await?;
        let to_dual_write_s = started.elapsed().as_secs_f64();
        self.loads.mark(&format!("dual-write {n}"));
        self.progress(
            n,
            &format!(
                "{from} -> {to}: DUAL_WRITE after {to_dual_write_s:.1} s ({} events)",
                ready["events_total"]
            ),
        );
        let dual_write = self.window(self.settings.window).await;

        let earlier = self.snapshots();
        tokio::time::sleep(self.settings.cutover_margin).await;
        let cutover = self.cut_over(id, n).await?;
        tokio::time::sleep(self.settings.cutover_margin).await;
        let around_cutover = measured(&self.snapshots(), &earlier);
        self.progress(
            n,
            &format!(
                "cutover paused the tenant {:.1} ms ({:.1} ms before the commit, {} final-tail \
                 events); appends p99 before {:.2} ms, in DUAL_WRITE {:.2} ms",
                cutover.pause_ms,
                cutover.pause_ms_before_commit,
                cutover.final_tail_events,
                Latency::of(&before.moving).latency_us.p99 as f64 / 1e3,
                Latency::of(&dual_write.moving).latency_us.p99 as f64 / 1e3,
            ),
        );
        self.pools.before.add(&before);
        self.pools.dual_write.add(&dual_write);
        self.pools.cutover.add(&around_cutover);
        Ok(Cycle {
            migration_id: id,
            from,
            to,
            events_total: ready["events_total"].as_i64().unwrap_or(0),
            removed_events,
            removal_s,
            to_dual_write_s,
            before: before.summary(),
            dual_write: dual_write.summary(),
            around_cutover: around_cutover.summary(),
            cutover,
        })
    }

    fn progress(&self, n: usize, message: &str) {
        self.env.progress(
            NAME,
            &format!("migration {n}/{}: {message}", self.settings.cutovers),
        );
    }

    fn snapshots(&self) -> Snapshots {
        Snapshots {
            moving: Snapshot::of(&self.loads.moving),
            others: Snapshot::of(&self.loads.others),
        }
    }

    /// What completes in the next `length`.
    async fn window(&self, length: Duration) -> Measured {
        let earlier = self.snapshots();
        tokio::time::sleep(length).await;
        measured(&self.snapshots(), &earlier)
    }

    /// Deletes the tenant's events and their snapshots from `store`, which holds the copy the
    /// previous migration left behind (evshift never deletes from a source), so that the
    /// tenant can move back there. Returns the events deleted and the seconds it took.
    async fn remove_old_copy(&self, store: &str) -> Result<(u64, f64)> {
        let started = Instant::now();
        let client = self.setup.cluster(store).connect(DB).await?;
        client
            .execute(
                "DELETE FROM snapshots WHERE aggregate_id IN \
                 (SELECT DISTINCT aggregate_id FROM events WHERE tenant_id = $1)",
                &[&self.tenant],
            )
            .await
            .with_context(|| format!("remove the tenant's old snapshots from {store}"))?;
        let events = client
            .execute("DELETE FROM events WHERE tenant_id = $1", &[&self.tenant])
            .await
            .with_context(|| format!("remove the tenant's old events from {store}"))?;
        Ok((events, started.elapsed().as_secs_f64()))
    }

    /// `evshift ctl migrate TENANT --to STORE --manual-cutover`; the migration's id.
    async fn migrate(&self, to: &str) -> Result<i64> {
        let batch = self.settings.batch_size.to_string();
        let tenant = self.tenant.to_string();
        let status = self
            .setup
            .proxy
            .ctl(&[
                "migrate",
                &tenant,
                "--to",
                to,
                "--manual-cutover",
                "--batch-size",
                &batch,
            ])
            .await?;
        status["id"]
            .as_i64()
            .with_context(|| format!("evshift ctl migrate answered without an id: {status}"))
    }

    /// Polls the status until DUAL_WRITE with the lag at or under the threshold.
    async fn wait_ready(&self, id: i64) -> Result<Value> {
        let deadline = Instant::now() + READY_DEADLINE;
        let id_text = id.to_string();
        loop {
            let status = self.setup.proxy.ctl(&["status", &id_text]).await?;
            let lag = status["lag_events"].as_i64();
            match status["state"].as_str() {
                Some("DUAL_WRITE") if lag.is_some_and(|l| l <= self.settings.max_lag) => {
                    return Ok(status)
                }
                Some(state @ ("FAILED" | "ROLLED_BACK")) => {
                    bail!("migration {id} is {state}: {}", status["error_message"])
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                bail!(
                    "migration {id} did not reach DUAL_WRITE with a lag of at most {} events \
                     within {READY_DEADLINE:?}; last status {status}",
                    self.settings.max_lag
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `evshift ctl cutover ID`, again after a rollback (at most [`MAX_ATTEMPTS`]).
    async fn cut_over(&self, id: i64, n: usize) -> Result<Cutover> {
        let proxy = &self.setup.proxy;
        let id_text = id.to_string();
        let pause_sum = format!(
            "migration_cutover_pause_duration_ms_sum{{migration_id=\"{id}\",tenant_id=\"{}\"}}",
            self.tenant
        );
        let mut rolled_back = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let ready = self.wait_ready(id).await?;
            let paused_before = proxy.metric(&pause_sum).await?;
            self.loads.mark(&format!("cutover {n}"));
            let requested_at = epoch_seconds();
            let began = Instant::now();
            let result = proxy.ctl(&["cutover", &id_text]).await;
            let ctl_ms = began.elapsed().as_secs_f64() * 1e3;
            let returned_at = epoch_seconds();
            let status = match result {
                Ok(status) => status,
                Err(error) => {
                    let message = format!("{error:#}");
                    let again = ROLLED_BACK_KINDS.iter().any(|k| message.contains(k));
                    if !again || attempt == MAX_ATTEMPTS {
                        return Err(error);
                    }
                    self.progress(n, &format!("the cutover rolled back: {message}"));
                    rolled_back.push(message);
                    continue;
                }
            };
            if status["state"] != "MIGRATED" {
                bail!("evshift ctl cutover {id} answered {status}");
            }
            self.loads.mark(&format!("migrated {n}"));
            let pause_ms = proxy.metric(&pause_sum).await? - paused_before;
            if pause_ms <= 0.0 {
                bail!("evshift exported no cutover pause for migration {id} ({pause_sum})");
            }
            let details = self.completed_row(id).await?;
            return Ok(Cutover {
                attempts: attempt,
                rolled_back,
                lag_events: ready["lag_events"].as_i64().unwrap_or(0),
                pause_ms,
                pause_ms_before_commit: details["pause_ms_before_commit"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                final_tail_events: details["final_tail_events"].as_i64().unwrap_or(0),
                ctl_ms,
                requested_at,
                returned_at,
            });
        }
        unreachable!("the last attempt returns")
    }

    /// The details of the migration's `cutover_completed` audit row.
    async fn completed_row(&self, id: i64) -> Result<Value> {
        let audit = self.setup.proxy.ctl(&["audit", &id.to_string()]).await?;
        audit
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .rev()
                    .find(|row| row["event_type"] == "cutover_completed")
            })
            .map(|row| row["details"].clone())
            .with_context(|| format!("migration {id} has no cutover_completed audit row"))
    }
}

/// What completed between two snapshots of both loads.
fn measured(later: &Snapshots, earlier: &Snapshots) -> Measured {
    Measured {
        moving: later.moving.since(&earlier.moving, TxKind::Append),
        others_append: later.others.since(&earlier.others, TxKind::Append),
        others_read: later.others.since(&earlier.others, TxKind::ReadStream),
    }
}

/// Now, as seconds since 1970 (to find a cutover's lines in evshift's log).
fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
