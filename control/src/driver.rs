//! The driver: the task that moves one migration forward while it is not paused.
//!
//! PENDING -> BULK_COPY (schema and staging ready) -> the bulk pass -> the tenant's snapshots
//! -> DUAL_WRITE, then the tail: every `tail_interval` (or when woken) it copies whatever the
//! tenant appended to the source since the checkpoint. It holds the tenant's advisory lock in
//! the control store while it runs, so one coordinator at a time drives a tenant.
//!
//! Transient errors are retried from the checkpoint with exponential backoff and jitter; after
//! `retry_limit` consecutive failures without progress, or at once for an error retrying cannot
//! fix, the migration moves to FAILED with its error message and an audit row. Routes stay on
//! the source throughout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::copier::{Copier, CopyJob, PassScope, WriteMode};
use crate::cutover::CutoverRun;
use crate::error::ControlError;
use crate::event_schema;
use crate::gate::TrafficGate;
use crate::migration::MigrationStatus;
use crate::migration_store::{MigrationStore, Transition};
use crate::publisher::RoutingPublisher;
use crate::rate_limit::RateLimiter;
use crate::reconnecting::ReconnectingControlStore;
use crate::retry::{Failure, RetryPolicy};
use crate::routing::MigrationState;
use crate::settings::MigrationSettings;
use crate::store_directory::StoreDirectory;
use crate::tail_window::TailWindow;
use crate::transitions;

/// How often a driver asks again for a tenant lock that another coordinator holds.
const LOCK_RETRY: Duration = Duration::from_secs(1);

/// Snapshots saved since the last sync (minus this margin, for transactions that were still
/// open) are copied again every `SNAPSHOT_SYNC_INTERVAL` during the tail.
const SNAPSHOT_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Target connections writing batches at once during the bulk pass (target positions are
/// still handed out in source order).
const BULK_WRITERS: usize = 2;

/// Batches one tail round copies at most before it looks at the lag again.
const TAIL_ROUND_BATCHES: u64 = 10;

/// What the coordinator and its drivers share.
pub(crate) struct Context {
    pub control_url: String,
    pub stores: StoreDirectory,
    pub settings: MigrationSettings,
    pub publisher: RoutingPublisher,
    /// For reloading the routing table after a phase change.
    pub routing_store: ReconnectingControlStore,
    /// The operator name of automatic steps in the audit log.
    pub operator: String,
    /// The data plane's per-tenant hold; without one there is no cutover.
    pub gate: Option<Arc<dyn TrafficGate>>,
}

impl Context {
    /// Writes a phase change (state, route, audit row in one transaction), then swaps the
    /// in-memory routing table.
    pub async fn transition(
        &self,
        control: &mut MigrationStore,
        change: &Transition,
    ) -> Result<MigrationStatus, ControlError> {
        let status = control.transition(change).await?;
        self.publish().await;
        tracing::info!(
            migration_id = status.id,
            tenant_id = %status.tenant_id,
            phase = %status.state,
            operation = %change.event,
            "migration phase changed"
        );
        Ok(status)
    }

    /// Reloads the routing table this process routes by. A failure is logged: the refresher
    /// reloads it once the control store answers again.
    pub async fn publish(&self) {
        let result = match self.routing_store.get().await {
            Ok(store) => self.publisher.reload(&store).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(error) = result {
            tracing::warn!(error = %error, "cannot reload the routing table after a migration step");
        }
    }

    /// A change by this coordinator itself.
    fn change(&self, id: i64, to: MigrationState, event: &str) -> Transition {
        Transition {
            migration_id: id,
            to,
            event: event.to_string(),
            details: json!({}),
            operator: self.operator.clone(),
            error_message: None,
            only_from: None,
        }
    }
}

/// A running driver, as the coordinator keeps it.
pub(crate) struct DriverHandle {
    pub cancel: CancellationToken,
    pub wake: Arc<Notify>,
    pub task: JoinHandle<()>,
    /// Cutovers asked for by an operator; the driver runs them between tail rounds.
    pub cutover: mpsc::Sender<CutoverRequest>,
}

/// An operator's `cutover`, answered with its outcome.
pub(crate) struct CutoverRequest {
    pub operator: String,
    pub reply: oneshot::Sender<Result<MigrationStatus, ControlError>>,
}

/// First wait before an automatic cutover is tried again after one rolled back.
const AUTO_CUTOVER_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between automatic cutover attempts.
const AUTO_CUTOVER_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl DriverHandle {
    /// Asks the driver to stop at the next batch boundary and waits for it, at most `bound`.
    pub async fn stop(self, bound: Duration) -> bool {
        self.cancel.cancel();
        tokio::time::timeout(bound, self.task).await.is_ok()
    }
}

/// Starts a driver for migration `id` of `tenant`.
pub(crate) fn spawn(context: Arc<Context>, id: i64, tenant: Uuid) -> DriverHandle {
    let cancel = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let (cutover, requests) = mpsc::channel(8);
    let driver = Driver {
        retry: RetryPolicy::new(&context.settings),
        context,
        id,
        tenant,
        cancel: cancel.clone(),
        wake: Arc::clone(&wake),
        progress: 0,
        window: TailWindow::new(),
        requests,
        next_auto_cutover: Instant::now(),
        auto_cutover_failures: 0,
    };
    let span = tracing::info_span!("migration", migration_id = id, tenant_id = %tenant,
        phase = tracing::field::Empty);
    let task = tokio::spawn(driver.run().instrument(span));
    DriverHandle {
        cancel,
        wake,
        task,
        cutover,
    }
}

/// One migration's driver state.
struct Driver {
    context: Arc<Context>,
    id: i64,
    tenant: Uuid,
    cancel: CancellationToken,
    wake: Arc<Notify>,
    retry: RetryPolicy,
    /// Rows copied by this driver, to tell an attempt that progressed from one that did not.
    progress: u64,
    /// Which rows may still commit below the checkpoint (kept across attempts).
    window: TailWindow,
    requests: mpsc::Receiver<CutoverRequest>,
    /// Automatic cutovers wait until then after one rolled back.
    next_auto_cutover: Instant,
    auto_cutover_failures: u32,
}

impl Driver {
    /// Attempts until done, stopped, or failed for good.
    async fn run(mut self) {
        tracing::info!(operation = "drive", "migration driver started");
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let before = self.progress;
            let failure = match self.attempt().await {
                Ok(()) => break,
                Err(failure) => failure,
            };
            if self.progress > before {
                self.retry.reset();
            }
            if self.cancel.is_cancelled() {
                break;
            }
            let delay = match failure.is_transient() {
                true => self.retry.after_failure(),
                false => None,
            };
            let Some(delay) = delay else {
                self.fail(&failure).await;
                break;
            };
            tracing::warn!(
                operation = "retry",
                error = failure.message(),
                attempt = self.retry.failures(),
                retry_in_ms = delay.as_millis() as u64,
                "migration step failed; retrying from the checkpoint"
            );
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!(operation = "drive", "migration driver stopped");
    }

    /// One connection's worth of work: lock the tenant, then move the migration on.
    async fn attempt(&mut self) -> Result<(), Failure> {
        let mut control = MigrationStore::connect(&self.context.control_url).await?;
        if !self.lock(&control).await? {
            return Ok(());
        }
        let result = self.advance(&mut control).await;
        // Best effort: closing the connection releases the lock as well.
        let _ = control.unlock_tenant(self.tenant).await;
        result
    }

    /// Waits for the tenant's advisory lock; false if stopped meanwhile.
    async fn lock(&self, control: &MigrationStore) -> Result<bool, Failure> {
        let mut told = false;
        loop {
            if control.try_lock_tenant(self.tenant).await? {
                return Ok(true);
            }
            if !told {
                tracing::info!(
                    operation = "lock",
                    "another coordinator drives this tenant; waiting"
                );
                told = true;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Ok(false),
                () = tokio::time::sleep(LOCK_RETRY) => {}
            }
        }
    }

    /// Phase after phase until the tail runs (or the migration stops needing a copier).
    async fn advance(&mut self, control: &mut MigrationStore) -> Result<(), Failure> {
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let migration = control.get(self.id).await?;
            // Every line the driver logs from here carries the phase.
            tracing::Span::current().record("phase", migration.state.as_str());
            if migration.paused || !transitions::is_copying(migration.state) {
                return Ok(());
            }
            match migration.state {
                MigrationState::Pending => {
                    let change =
                        self.context
                            .change(self.id, MigrationState::BulkCopy, "bulk_copy_started");
                    self.context.transition(control, &change).await?;
                }
                MigrationState::BulkCopy => {
                    if !self.bulk(control, &migration).await? {
                        return Ok(());
                    }
                }
                _ => return self.tail(control, &migration).await,
            }
        }
    }

    /// Connections to the source and the target (`writers` of them for batches), the
    /// target's schema and staging ready.
    async fn copier(&self, migration: &MigrationStatus, writers: usize) -> Result<Copier, Failure> {
        let stores = &self.context.stores;
        let options = migration.options()?;
        let mut target = stores.connect(&migration.target_store).await?;
        event_schema::ensure_target_schema(&mut target, &migration.target_store).await?;
        let job = CopyJob {
            migration_id: self.id,
            tenant: self.tenant,
            source_store: &migration.source_store,
            target_store: &migration.target_store,
            batch_size: options.batch_size as usize,
            writers,
        };
        Copier::connect(stores, job).await
    }

    /// The bulk pass from the checkpoint, the snapshots, then DUAL_WRITE. False if it stopped
    /// early (paused or asked to stop).
    async fn bulk(
        &mut self,
        control: &mut MigrationStore,
        migration: &MigrationStatus,
    ) -> Result<bool, Failure> {
        let mut copier = self.copier(migration, BULK_WRITERS).await?;
        let recorded = control.last_target_position(self.id).await?;
        let discarded = copier.discard_unrecorded(recorded).await?;
        if discarded > 0 {
            tracing::info!(
                phase = "BULK_COPY",
                operation = "bulk_copy",
                discarded,
                "removed target rows written after the last checkpoint; copying them again"
            );
        }
        let remaining = copier.remaining(migration.last_source_position).await?;
        control.set_lag(self.id, remaining).await?;
        tracing::info!(
            phase = "BULK_COPY",
            operation = "bulk_copy",
            checkpoint = migration.last_source_position,
            remaining,
            "bulk copy pass"
        );
        let options = migration.options()?;
        let mut rate = RateLimiter::new(options.rate_limit_events_per_sec);
        let started = Instant::now();
        // The migration's keys on the span itself too, for trace backends that show one span
        // without its parent.
        let span = tracing::info_span!("eventsource.migration.bulk_copy",
            migration_id = migration.id, tenant_id = %migration.tenant_id, phase = "BULK_COPY",
            operation = "bulk_copy", checkpoint = migration.last_source_position);
        let outcome = copier
            .pass(
                migration.last_source_position,
                PassScope {
                    limit: None,
                    mode: WriteMode::Bulk,
                    window: &mut self.window,
                    quiescent: false,
                },
                control,
                &mut rate,
                &self.cancel,
            )
            .instrument(span)
            .await?;
        self.progress += outcome.copied;
        if outcome.stopped {
            return Ok(false);
        }
        let snapshots = copier.copy_snapshots(None).await?;
        let mut change =
            self.context
                .change(self.id, MigrationState::DualWrite, "bulk_copy_completed");
        change.details = json!({
            "events_copied_in_pass": outcome.copied,
            "last_source_position": outcome.checkpoint,
            "snapshots_copied": snapshots,
            "seconds": started.elapsed().as_secs_f64(),
        });
        change.only_from = Some(vec![MigrationState::BulkCopy]);
        self.context.transition(control, &change).await?;
        Ok(true)
    }

    /// DUAL_WRITE: keep the target caught up with the source until stopped.
    async fn tail(
        &mut self,
        control: &mut MigrationStore,
        migration: &MigrationStatus,
    ) -> Result<(), Failure> {
        let mut copier = self.copier(migration, 1).await?;
        let options = migration.options()?;
        let limit = TAIL_ROUND_BATCHES * u64::from(options.batch_size);
        let mut rate = RateLimiter::new(options.rate_limit_events_per_sec);
        let mut checkpoint = migration.last_source_position;
        // Snapshots saved while no driver ran are caught by one full sync first.
        let mut watermark = copier.snapshot_watermark().await?;
        copier.copy_snapshots(None).await?;
        let mut last_snapshot_sync = Instant::now();
        loop {
            let outcome = copier
                .pass(
                    checkpoint,
                    PassScope {
                        limit: Some(limit),
                        mode: WriteMode::Idempotent,
                        window: &mut self.window,
                        quiescent: false,
                    },
                    control,
                    &mut rate,
                    &self.cancel,
                )
                .await?;
            self.progress += outcome.copied;
            checkpoint = outcome.checkpoint;
            if outcome.stopped {
                return Ok(());
            }
            if outcome.copied >= limit {
                continue;
            }
            let lag = copier.remaining(checkpoint).await?;
            control.set_lag(self.id, lag).await?;
            if outcome.copied == 0 {
                control.set_rate(self.id, 0.0).await?;
            }
            if last_snapshot_sync.elapsed() >= SNAPSHOT_SYNC_INTERVAL {
                let next = copier.snapshot_watermark().await?;
                copier.copy_snapshots(Some(&watermark)).await?;
                watermark = next;
                last_snapshot_sync = Instant::now();
            }
            let now = control.get(self.id).await?;
            if now.paused || now.state != MigrationState::DualWrite {
                return Ok(());
            }
            if self.auto_cutover_due(&options, lag) {
                let operator = self.context.operator.clone();
                let result = self
                    .cut_over(control, &mut copier, &now, &operator, "automatic")
                    .await;
                if self.after_cutover(result.as_ref().map(|_| ()), true) {
                    return Ok(());
                }
                checkpoint = control.get(self.id).await?.last_source_position;
                continue;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Ok(()),
                () = self.wake.notified() => {}
                Some(request) = self.requests.recv() => {
                    let now = control.get(self.id).await?;
                    let result = self
                        .cut_over(control, &mut copier, &now, &request.operator, "requested")
                        .await;
                    let done = self.after_cutover(result.as_ref().map(|_| ()), false);
                    let _ = request.reply.send(result);
                    if done {
                        return Ok(());
                    }
                    checkpoint = control.get(self.id).await?.last_source_position;
                }
                () = tokio::time::sleep(self.context.settings.tail_interval) => {}
            }
        }
    }

    /// Whether the lag is at the threshold and the migration cuts over by itself now.
    fn auto_cutover_due(&self, options: &crate::migration::MigrationOptions, lag: i64) -> bool {
        self.context.gate.is_some()
            && !options.manual_cutover
            && lag <= self.context.settings.max_lag_events as i64
            && Instant::now() >= self.next_auto_cutover
    }

    /// One cutover attempt (see `cutover`).
    async fn cut_over(
        &mut self,
        control: &mut MigrationStore,
        copier: &mut Copier,
        migration: &MigrationStatus,
        operator: &str,
        trigger: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let Some(gate) = self.context.gate.clone() else {
            return Err(ControlError::InvalidStateTransition {
                migration_id: self.id,
                state: migration.state,
                action: "cutover".into(),
                detail: ": this evshift has no traffic gate".into(),
            });
        };
        if migration.state != MigrationState::DualWrite || migration.paused {
            return Err(ControlError::InvalidStateTransition {
                migration_id: self.id,
                state: migration.state,
                action: "cutover".into(),
                detail: if migration.paused {
                    ": it is paused".into()
                } else {
                    String::new()
                },
            });
        }
        let span = tracing::info_span!(
            "eventsource.migration.cutover",
            migration_id = migration.id,
            tenant_id = %migration.tenant_id,
            phase = "CUTOVER_PAUSED",
            operation = "cutover",
            trigger
        );
        CutoverRun {
            context: &self.context,
            gate: gate.as_ref(),
            control,
            copier,
            window: &mut self.window,
            migration,
            operator,
            trigger,
        }
        .run()
        .instrument(span)
        .await
    }

    /// Books a cutover's outcome; true when the migration is MIGRATED (the driver ends).
    fn after_cutover(&mut self, result: Result<(), &ControlError>, automatic: bool) -> bool {
        match result {
            Ok(_) => true,
            Err(error) => {
                if automatic {
                    self.auto_cutover_failures += 1;
                    let backoff = AUTO_CUTOVER_BACKOFF
                        .saturating_mul(1 << self.auto_cutover_failures.min(6))
                        .min(AUTO_CUTOVER_BACKOFF_MAX);
                    self.next_auto_cutover = Instant::now() + backoff;
                    tracing::warn!(operation = "cutover", error = %error,
                        retry_in_ms = backoff.as_millis() as u64, "automatic cutover did not complete");
                }
                false
            }
        }
    }

    /// Moves the migration to FAILED (routes stay on the source), retrying the control-store
    /// write until it succeeds or the driver is stopped.
    async fn fail(&mut self, failure: &Failure) {
        let message = match self.retry.failures() {
            0 => failure.message().to_string(),
            n => format!("{} (after {n} attempts)", failure.message()),
        };
        tracing::error!(phase = "FAILED", operation = "fail", error = %message, "migration failed");
        let mut change = self
            .context
            .change(self.id, MigrationState::Failed, "failed");
        change.details = json!({"error": message, "transient": failure.is_transient()});
        change.error_message = Some(message);
        let mut retry = RetryPolicy::new(&self.context.settings);
        loop {
            let result = match MigrationStore::connect(&self.context.control_url).await {
                Ok(mut control) => self.context.transition(&mut control, &change).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => return,
                Err(error) if !error.is_unavailable() => {
                    tracing::warn!(error = %error, "cannot record the failure");
                    return;
                }
                Err(error) => {
                    // The control store is down: keep trying, as long as nobody stops us.
                    let delay = retry
                        .after_failure()
                        .unwrap_or(self.context.settings.retry_max_backoff);
                    tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64,
                        "cannot record the failure yet");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
