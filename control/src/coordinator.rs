//! `Coordinator`: the migration plane's entry point. It starts, pauses, resumes and aborts
//! migrations, reports their status and audit log, and runs one driver task per migration that
//! is copying.
//!
//! Every phase change goes through [`Coordinator::transition`] (or the driver's equivalent):
//! the state, the tenant's route and an audit row commit in one control-store transaction,
//! then the in-memory routing table is swapped. The cutover builds on `transition`,
//! `stop_copier` and a [`TrafficGate`](crate::gate::TrafficGate) handed in by the proxy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::driver::{self, Context, CutoverRequest, DriverHandle};
use crate::dual_write::DualWriter;
use crate::error::{describe_pg_error, ControlError};
use crate::event_schema;
use crate::gate::TrafficGate;
use crate::migration::{AuditEntry, MigrationRef, MigrationStatus, StartMigration};
use crate::migration_store::{MigrationStore, Transition};
use crate::publisher::RoutingPublisher;
use crate::reconnecting::ReconnectingControlStore;
use crate::retry::{Failure, RetryPolicy};
use crate::rollback;
use crate::routing::MigrationState;
use crate::settings::MigrationSettings;
use crate::store_directory::StoreDirectory;
use crate::transitions;

/// How long pause and abort wait for a driver to reach a batch boundary and stop.
const DRIVER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a cutover request waits for the driver to take it, besides the hold itself.
const CUTOVER_REQUEST_WAIT: Duration = Duration::from_secs(60);

/// How long abort waits for the tenant lock that another coordinator may hold.
const ABORT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of the target clean-up within one abort command.
const ABORT_ATTEMPTS: u32 = 3;

/// Bound on asking a store whether a tenant has events.
const STORE_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a coordinator needs from the process.
pub struct CoordinatorConfig {
    /// `[control] url`.
    pub control_url: String,
    /// The configured event stores.
    pub stores: StoreDirectory,
    /// `[migration]`.
    pub settings: MigrationSettings,
    /// The publisher of the routing table the data plane reads.
    pub publisher: RoutingPublisher,
    /// The audit log's operator name for steps the coordinator takes by itself.
    pub operator: String,
    /// The data plane's per-tenant hold, for the cutover (none: no cutover in this process).
    pub gate: Option<Arc<dyn TrafficGate>>,
}

/// The migration coordinator of one evshift process. Share it with an `Arc`.
pub struct Coordinator {
    context: Arc<Context>,
    /// The connection commands use, re-opened when it broke.
    commands: Mutex<Option<MigrationStore>>,
    drivers: SyncMutex<HashMap<i64, DriverHandle>>,
    dual_writer: Arc<DualWriter>,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        let dual_writer = DualWriter::new(config.stores.clone());
        let context = Context {
            gate: config.gate,
            routing_store: ReconnectingControlStore::new(config.control_url.clone()),
            control_url: config.control_url,
            stores: config.stores,
            settings: config.settings,
            publisher: config.publisher,
            operator: config.operator,
        };
        Coordinator {
            context: Arc::new(context),
            commands: Mutex::new(None),
            drivers: SyncMutex::new(HashMap::new()),
            dual_writer,
        }
    }

    /// The dual-writer the data plane hands committed events of migrating tenants to.
    pub fn dual_writer(&self) -> Arc<DualWriter> {
        Arc::clone(&self.dual_writer)
    }

    /// The `[migration]` settings.
    pub fn settings(&self) -> &MigrationSettings {
        &self.context.settings
    }

    /// The configured stores.
    pub fn stores(&self) -> &StoreDirectory {
        &self.context.stores
    }

    /// At start-up: drives every migration that was copying when evshift stopped. A
    /// migration caught in CUTOVER_PAUSED (its hold died with the process) goes back to
    /// DUAL_WRITE first. Returns how many drivers started.
    pub async fn resume_active(&self) -> Result<usize, ControlError> {
        let migrations = self.connection().await?.resumable().await?;
        let mut started = 0;
        for migration in migrations {
            if migration.state == MigrationState::CutoverPaused {
                let mut change = self.change(
                    migration.id,
                    MigrationState::DualWrite,
                    "cutover_rolled_back",
                    &self.context.operator,
                );
                change.details = json!({"reason": "evshift restarted during the cutover"});
                self.transition(change).await?;
            }
            tracing::info!(migration_id = migration.id, tenant_id = %migration.tenant_id,
                phase = %migration.state, operation = "resume", "resuming migration after start-up");
            self.ensure_driver(migration.id, migration.tenant_id);
            started += 1;
        }
        Ok(started)
    }

    /// Starts migrating `request.tenant` to `request.target_store`. Checks, in order: the
    /// target is configured, the options are valid, the tenant is not on the target already,
    /// has no active migration, has events on its store (or a route), the source's schema is
    /// one evshift copies, and the target holds no event of the tenant (its schema is created
    /// if missing). Returns the PENDING migration; its driver starts at once.
    pub async fn start(&self, request: StartMigration) -> Result<MigrationStatus, ControlError> {
        let tenant = request.tenant;
        let target = request.target_store.as_str();
        self.context.stores.require(target)?;
        let options = self.context.settings.options(&request.overrides)?;
        let route = self
            .context
            .publisher
            .handle()
            .load()
            .route(&tenant)
            .cloned();
        let source = route
            .as_ref()
            .map(|r| r.read_store().to_string())
            .unwrap_or_else(|| self.context.stores.default_store().to_string());
        if source == target {
            return Err(ControlError::SameStore {
                tenant,
                store: source,
            });
        }
        if let Some(active) = self.connection().await?.active_for_tenant(tenant).await? {
            return Err(ControlError::TenantMigrating {
                tenant,
                migration_id: active.id,
                state: active.state,
            });
        }
        let source_client = self.context.stores.connect(&source).await?;
        event_schema::check_schema(&source_client, &source).await?;
        if !has_events(&source_client, &source, tenant).await? && route.is_none() {
            return Err(ControlError::TenantNotFound { tenant });
        }
        let mut target_client = self.context.stores.connect(target).await?;
        event_schema::ensure_target_schema(&mut target_client, target).await?;
        if has_events(&target_client, target, tenant).await? {
            return Err(ControlError::TenantHasEvents {
                tenant,
                store: target.to_string(),
            });
        }
        let status = self
            .connection()
            .await?
            .create(tenant, &source, target, &options, &request.operator)
            .await?;
        self.context.publish().await;
        tracing::info!(migration_id = status.id, tenant_id = %tenant, phase = "PENDING",
            operation = "start", source = %source, target, "migration started");
        self.ensure_driver(status.id, tenant);
        Ok(status)
    }

    /// Pauses a copying migration: the copier stops at the next batch boundary (this call
    /// waits for it) and stays stopped, across restarts, until `resume`.
    pub async fn pause(
        &self,
        reference: MigrationRef,
        operator: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let migration = self.find(reference).await?;
        self.connection()
            .await?
            .set_paused(migration.id, true, operator)
            .await?;
        self.stop_copier(migration.id).await;
        self.get(migration.id).await
    }

    /// Resumes a paused migration, or retries a FAILED one from its checkpoint.
    pub async fn resume(
        &self,
        reference: MigrationRef,
        operator: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let migration = self.find(reference).await?;
        if migration.state != MigrationState::Failed && !migration.paused {
            return Err(ControlError::InvalidStateTransition {
                migration_id: migration.id,
                state: migration.state,
                action: "resume".into(),
                detail: ": it is neither paused nor failed".into(),
            });
        }
        if migration.paused {
            self.connection()
                .await?
                .set_paused(migration.id, false, operator)
                .await?;
        }
        if migration.state == MigrationState::Failed {
            let to = match migration.bulk_copy_completed_at {
                Some(_) => MigrationState::DualWrite,
                None => MigrationState::BulkCopy,
            };
            let mut change = self.change(migration.id, to, "resumed", operator);
            change.details = json!({"after_error": migration.error_message,
                                    "last_source_position": migration.last_source_position});
            change.only_from = Some(vec![MigrationState::Failed]);
            self.transition(change).await?;
        }
        self.ensure_driver(migration.id, migration.tenant_id);
        self.get(migration.id).await
    }

    /// Aborts a migration that has not finished: stops its copier, removes the tenant's
    /// copied events and snapshots from the target and its position mappings, and moves it to
    /// ROLLED_BACK (route on the source) with an audit row. The source is never touched.
    ///
    /// If the target cannot be cleaned, the migration is left paused with its copy forgotten
    /// (checkpoint 0), and the error is returned: abort again once the target is back.
    pub async fn abort(
        &self,
        reference: MigrationRef,
        operator: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let migration = self.find(reference).await?;
        if !transitions::can_abort(migration.state) {
            return Err(ControlError::InvalidStateTransition {
                migration_id: migration.id,
                state: migration.state,
                action: "abort".into(),
                detail: String::new(),
            });
        }
        self.stop_copier(migration.id).await;
        // No dual-write may land on the target after it is cleaned.
        self.dual_writer.close(migration.id).await;
        let mut control = MigrationStore::connect(&self.context.control_url).await?;
        self.lock_for_abort(&control, &migration).await?;
        control.prepare_abort(migration.id, operator).await?;
        let removed = self.clean_target(&migration).await?;
        let mut change = self.change(
            migration.id,
            MigrationState::RolledBack,
            "rolled_back",
            operator,
        );
        change.details = json!({"events_removed": removed.events,
                                "snapshots_removed": removed.snapshots});
        let status = self.context.transition(&mut control, &change).await?;
        let _ = control.unlock_tenant(migration.tenant_id).await;
        Ok(status)
    }

    /// Starts the cutover of a migration in DUAL_WRITE now (DESIGN §8) and waits for its
    /// outcome: MIGRATED, or back in DUAL_WRITE with the reason in the error. The migration's
    /// driver runs it between two tail rounds.
    pub async fn cutover(
        &self,
        reference: MigrationRef,
        operator: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let migration = self.find(reference).await?;
        let refuse = |detail: &str| ControlError::InvalidStateTransition {
            migration_id: migration.id,
            state: migration.state,
            action: "cutover".into(),
            detail: detail.to_string(),
        };
        if migration.state != MigrationState::DualWrite {
            return Err(refuse(": only a migration in DUAL_WRITE can cut over"));
        }
        if migration.paused {
            return Err(refuse(": it is paused; resume it first"));
        }
        if self.context.gate.is_none() {
            return Err(refuse(": this evshift has no traffic gate"));
        }
        self.ensure_driver(migration.id, migration.tenant_id);
        let sender = self
            .lock_drivers()
            .get(&migration.id)
            .map(|h| h.cutover.clone())
            .ok_or_else(|| refuse(": its copier is not running here"))?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let request = CutoverRequest {
            operator: operator.to_string(),
            reply,
        };
        sender
            .send(request)
            .await
            .map_err(|_| refuse(": its copier stopped"))?;
        // The driver takes the request after its current tail round; the hold itself is
        // bounded by cutover_timeout.
        let bound = self.context.settings.cutover_timeout + CUTOVER_REQUEST_WAIT;
        match tokio::time::timeout(bound, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(refuse(": its copier stopped before the cutover")),
            Err(_) => Err(refuse(
                ": its copier did not take the cutover in time (another evshift may drive it)",
            )),
        }
    }

    /// Appends an audit row to migration `id` outside a phase change (verification reports,
    /// subscription rewrites).
    pub async fn record_audit(
        &self,
        id: i64,
        event: &str,
        details: &serde_json::Value,
        operator: &str,
    ) -> Result<(), ControlError> {
        self.connection()
            .await?
            .audit_event(id, event, details, operator)
            .await
    }

    /// Every migration, newest first, or the one named.
    pub async fn status(
        &self,
        reference: Option<MigrationRef>,
    ) -> Result<Vec<MigrationStatus>, ControlError> {
        match reference {
            None => self.connection().await?.list().await,
            Some(reference) => Ok(vec![self.find(reference).await?]),
        }
    }

    /// The migration named.
    pub async fn find(&self, reference: MigrationRef) -> Result<MigrationStatus, ControlError> {
        self.connection().await?.find(reference).await
    }

    /// The migration `id`.
    pub async fn get(&self, id: i64) -> Result<MigrationStatus, ControlError> {
        self.connection().await?.get(id).await
    }

    /// The audit log of the migration named, oldest first.
    pub async fn audit(&self, reference: MigrationRef) -> Result<Vec<AuditEntry>, ControlError> {
        let migration = self.find(reference).await?;
        self.connection().await?.audit(migration.id).await
    }

    /// Writes a phase change (state, route, audit row in one control-store transaction; only
    /// transitions of the table in `transitions` are accepted), then swaps the in-memory
    /// routing table. The cutover moves DUAL_WRITE -> CUTOVER_PAUSED -> MIGRATED (or back to
    /// DUAL_WRITE) through here.
    pub async fn transition(&self, change: Transition) -> Result<MigrationStatus, ControlError> {
        let mut guard = self.connection().await?;
        self.context.transition(&mut guard, &change).await
    }

    /// A phase change with empty details.
    pub fn change(&self, id: i64, to: MigrationState, event: &str, operator: &str) -> Transition {
        Transition {
            migration_id: id,
            to,
            event: event.to_string(),
            details: json!({}),
            operator: operator.to_string(),
            error_message: None,
            only_from: None,
        }
    }

    /// Stops migration `id`'s copier in this process (at a batch boundary) and waits for it.
    /// Returns false if it did not stop within 30 s (it still stops at its next boundary).
    pub async fn stop_copier(&self, id: i64) -> bool {
        let handle = self.lock_drivers().remove(&id);
        match handle {
            Some(handle) => handle.stop(DRIVER_STOP_TIMEOUT).await,
            None => true,
        }
    }

    /// Starts migration `id`'s copier in this process unless it runs already.
    pub fn ensure_driver(&self, id: i64, tenant: Uuid) {
        let mut drivers = self.lock_drivers();
        if let Some(handle) = drivers.get(&id) {
            if !handle.task.is_finished() {
                handle.wake.notify_one();
                return;
            }
        }
        drivers.insert(id, driver::spawn(Arc::clone(&self.context), id, tenant));
    }

    /// Wakes migration `id`'s tail now (dual-write calls this after a failed target write, so
    /// the tail recovers it without waiting for the next interval).
    pub fn wake(&self, id: i64) {
        if let Some(handle) = self.lock_drivers().get(&id) {
            handle.wake.notify_one();
        }
    }

    /// Whether a copier of migration `id` runs in this process.
    pub fn is_copying(&self, id: i64) -> bool {
        self.lock_drivers()
            .get(&id)
            .is_some_and(|h| !h.task.is_finished())
    }

    fn lock_drivers(&self) -> std::sync::MutexGuard<'_, HashMap<i64, DriverHandle>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.drivers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The commands' connection, re-opened if it broke.
    async fn connection(&self) -> Result<MappedMutexGuard<'_, MigrationStore>, ControlError> {
        let mut guard = self.commands.lock().await;
        if guard.as_ref().is_none_or(MigrationStore::is_closed) {
            *guard = Some(MigrationStore::connect(&self.context.control_url).await?);
        }
        Ok(MutexGuard::map(guard, |slot| {
            slot.as_mut().expect("the connection was just opened")
        }))
    }

    /// Takes the tenant's lock for an abort; another coordinator driving it refuses.
    async fn lock_for_abort(
        &self,
        control: &MigrationStore,
        migration: &MigrationStatus,
    ) -> Result<(), ControlError> {
        let deadline = Instant::now() + ABORT_LOCK_TIMEOUT;
        while !control.try_lock_tenant(migration.tenant_id).await? {
            if Instant::now() >= deadline {
                return Err(ControlError::InvalidStateTransition {
                    migration_id: migration.id,
                    state: migration.state,
                    action: "abort".into(),
                    detail: ": another evshift instance is driving it; pause it there first".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Removes the tenant's copied rows from the target, retrying transient errors a few
    /// times.
    async fn clean_target(
        &self,
        migration: &MigrationStatus,
    ) -> Result<rollback::Removed, ControlError> {
        let mut retry = RetryPolicy::new(&self.context.settings);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.clean_target_once(migration).await {
                Ok(removed) => return Ok(removed),
                Err(failure) => failure,
            };
            let delay = retry.after_failure();
            match delay {
                Some(delay) if failure.is_transient() && attempt < ABORT_ATTEMPTS => {
                    tracing::warn!(
                        migration_id = migration.id,
                        operation = "abort",
                        error = failure.message(),
                        "target clean-up failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    return Err(ControlError::store_unavailable(
                        &migration.target_store,
                        failure.message(),
                    ))
                }
            }
        }
    }

    async fn clean_target_once(
        &self,
        migration: &MigrationStatus,
    ) -> Result<rollback::Removed, Failure> {
        let mut target = self.context.stores.connect(&migration.target_store).await?;
        rollback::remove_tenant(&mut target, &migration.target_store, migration.tenant_id).await
    }
}

/// Whether `store` holds any event of `tenant`.
async fn has_events(client: &Client, store: &str, tenant: Uuid) -> Result<bool, ControlError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tenant];
    let query = client.query_opt("SELECT 1 FROM events WHERE tenant_id = $1 LIMIT 1", &params);
    let row = tokio::time::timeout(STORE_QUERY_TIMEOUT, query)
        .await
        .map_err(|_| {
            ControlError::store_unavailable(
                store,
                format!("no answer within {STORE_QUERY_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| ControlError::store_unavailable(store, describe_pg_error(&e)))?;
    Ok(row.is_some())
}
