//! `ControlApi`: what each control-socket command does, apart from the socket itself.
//!
//! The socket layer parses a line into a [`Request`] and writes back whatever `handle` returns,
//! so a new command is a `Request` variant and a method here. Migration commands go to the
//! [`Coordinator`]; `verify` and `subscriptions` run the control crate's verification and
//! subscription migrator over the coordinator's stores.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_postgres::NoTls;
use uuid::Uuid;

use evshift_control::error::describe_pg_error;
use evshift_control::{
    verify, ControlError, Coordinator, MigrationRef, OptionOverrides, PositionMapper,
    ReconnectingControlStore, RoutingPublisher, StartMigration, SubscriptionMigrator,
    SubscriptionPlan, VerificationReport, VerifyMode,
};

use super::protocol::{ControlAction, Outcome, Request, RouteView, StoreStatus};
use crate::server::Shared;
use crate::store::Store;

/// Bound on the reachability probe of `stores`: it answers "reachable now?", so a store that
/// takes longer than this to accept and authenticate counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on asking one store whether a tenant has events, on top of the connect timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The audit log's operator when a request names none.
const DEFAULT_OPERATOR: &str = "control-socket";

/// The control store as the commands use it: a connection for writes, the publisher that
/// swaps the routing table this process routes by, and the migration coordinator.
pub struct ControlPlane {
    pub store: ReconnectingControlStore,
    pub publisher: RoutingPublisher,
    pub coordinator: Arc<Coordinator>,
}

/// The control socket's commands, over the process's shared state.
pub struct ControlApi {
    shared: Arc<Shared>,
    /// `None` without a `[control]` section: commands that write routes refuse.
    control: Option<ControlPlane>,
}

impl ControlApi {
    /// `control`'s publisher must publish into `shared.routing`.
    pub fn new(shared: Arc<Shared>, control: Option<ControlPlane>) -> ControlApi {
        ControlApi { shared, control }
    }

    /// Runs one command.
    pub async fn handle(&self, request: Request) -> Result<Outcome, ControlError> {
        match request {
            Request::Stores => Ok(Outcome::Stores(self.stores().await)),
            Request::Routes { tenant: None } => Ok(Outcome::Routes(self.routes())),
            Request::Routes {
                tenant: Some(tenant),
            } => Ok(Outcome::Route(self.route(tenant))),
            Request::Assign { tenant, store } => {
                self.assign(tenant, &store).await.map(Outcome::Route)
            }
            Request::Migrate {
                tenant,
                to,
                overrides,
                operator,
            } => self
                .migrate(tenant, to, overrides, operator)
                .await
                .map(|m| Outcome::Migration(Box::new(m))),
            Request::Status { migration: None } => self
                .coordinator()?
                .status(None)
                .await
                .map(Outcome::Migrations),
            Request::Status {
                migration: Some(migration),
            } => self
                .coordinator()?
                .find(migration)
                .await
                .map(|m| Outcome::Migration(Box::new(m))),
            Request::Control {
                action,
                migration,
                operator,
            } => self
                .control(action, migration, operator)
                .await
                .map(|m| Outcome::Migration(Box::new(m))),
            Request::Audit { migration } => self
                .coordinator()?
                .audit(migration)
                .await
                .map(Outcome::Audit),
            Request::Verify {
                migration,
                level,
                operator,
            } => self
                .verify(migration, level, operator)
                .await
                .map(|r| Outcome::Verification(Box::new(r))),
            Request::Subscriptions {
                migration,
                names,
                dry_run,
                operator,
            } => self
                .subscriptions(migration, &names, dry_run, operator)
                .await
                .map(|p| Outcome::Subscriptions(Box::new(p))),
        }
    }

    /// The coordinator; `NoControlStore` without a `[control]` section.
    fn coordinator(&self) -> Result<&Coordinator, ControlError> {
        self.control
            .as_ref()
            .map(|c| &*c.coordinator)
            .ok_or(ControlError::NoControlStore)
    }

    /// Starts migrating `tenant` to store `to`.
    async fn migrate(
        &self,
        tenant: Uuid,
        to: String,
        overrides: OptionOverrides,
        operator: Option<String>,
    ) -> Result<evshift_control::MigrationStatus, ControlError> {
        self.store(&to)?;
        let coordinator = self.coordinator()?;
        coordinator
            .start(StartMigration {
                tenant,
                target_store: to,
                overrides,
                operator: operator.unwrap_or_else(|| DEFAULT_OPERATOR.into()),
            })
            .await
    }

    /// Verifies the migration's target at `level` (default: the migration's `verify`
    /// option) and keeps the report in its audit log (`verification`). A failed verification
    /// is a report with `passed: false`, not an error reply.
    async fn verify(
        &self,
        reference: MigrationRef,
        level: Option<VerifyMode>,
        operator: Option<String>,
    ) -> Result<VerificationReport, ControlError> {
        let coordinator = self.coordinator()?;
        let migration = coordinator.find(reference).await?;
        let level = match level {
            Some(level) => level,
            None => migration.options()?.verify,
        };
        let report = verify(coordinator.stores(), &migration, level).await?;
        let details = serde_json::to_value(&report)
            .map_err(|e| ControlError::Internal(format!("cannot encode the report: {e}")))?;
        let operator = operator.unwrap_or_else(|| DEFAULT_OPERATOR.into());
        coordinator
            .record_audit(migration.id, "verification", &details, &operator)
            .await?;
        Ok(report)
    }

    /// Rewrites (or, with `dry_run`, plans the rewrite of) subscription checkpoints from the
    /// migration's source positions to its target positions.
    async fn subscriptions(
        &self,
        reference: MigrationRef,
        names: &[String],
        dry_run: bool,
        operator: Option<String>,
    ) -> Result<SubscriptionPlan, ControlError> {
        let coordinator = self.coordinator()?;
        let control_url = self
            .shared
            .config
            .control
            .as_ref()
            .map(|c| c.url.as_str())
            .ok_or(ControlError::NoControlStore)?;
        let migration = coordinator.find(reference).await?;
        let mapper = PositionMapper::connect(control_url, &migration).await?;
        let operator = operator.unwrap_or_else(|| DEFAULT_OPERATOR.into());
        SubscriptionMigrator::new(coordinator.stores(), control_url, &migration, &mapper)
            .run(names, dry_run, &operator)
            .await
    }

    /// Pause, resume, abort or cut over.
    async fn control(
        &self,
        action: ControlAction,
        migration: MigrationRef,
        operator: Option<String>,
    ) -> Result<evshift_control::MigrationStatus, ControlError> {
        let coordinator = self.coordinator()?;
        let operator = operator.unwrap_or_else(|| DEFAULT_OPERATOR.into());
        match action {
            ControlAction::Pause => coordinator.pause(migration, &operator).await,
            ControlAction::Resume => coordinator.resume(migration, &operator).await,
            ControlAction::Abort => coordinator.abort(migration, &operator).await,
            ControlAction::Cutover => coordinator.cutover(migration, &operator).await,
        }
    }

    /// Every configured store, probed in parallel.
    pub async fn stores(&self) -> Vec<StoreStatus> {
        join_all(self.shared.stores.iter().map(probe)).await
    }

    /// Every route of this process's routing table, by tenant id.
    pub fn routes(&self) -> Vec<RouteView> {
        let table = self.shared.routing.load();
        table
            .routes()
            .into_iter()
            .map(RouteView::assigned)
            .collect()
    }

    /// The route of `tenant`; without one, the default store (`assigned: false`).
    pub fn route(&self, tenant: Uuid) -> RouteView {
        let table = self.shared.routing.load();
        match table.route(&tenant) {
            Some(route) => RouteView::assigned(route),
            None => RouteView::unassigned(tenant, &self.shared.default_store.id),
        }
    }

    /// Places `tenant`, which must have no events in any store, on `store_id`, and returns
    /// once this process routes by the new table.
    pub async fn assign(&self, tenant: Uuid, store_id: &str) -> Result<RouteView, ControlError> {
        let store = self.store(store_id)?;
        let control = self.control.as_ref().ok_or(ControlError::NoControlStore)?;
        // Connect first: with the control store down there is no point asking every store.
        let connection = control.store.get().await?;
        self.refuse_if_tenant_has_events(tenant).await?;
        let route = connection.assign_tenant(tenant, &store.id).await?;
        // Synchronously, so that a client connecting after the reply is routed by the new
        // table; the refresher would get there too, a moment later.
        control.publisher.reload(&connection).await?;
        tracing::info!(tenant_id = %tenant, store = %store.id, "tenant assigned");
        Ok(RouteView::assigned(&route))
    }

    /// The configured store `id`.
    fn store(&self, id: &str) -> Result<&Arc<Store>, ControlError> {
        self.shared
            .stores
            .iter()
            .find(|s| &*s.id == id)
            .ok_or_else(|| ControlError::StoreNotFound {
                store: id.to_string(),
                known: self
                    .shared
                    .stores
                    .iter()
                    .map(|s| s.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `TenantHasEvents` if any store holds an event of `tenant`. Every store must answer: a
    /// store that cannot is `StoreUnavailable`, never taken for "no events".
    async fn refuse_if_tenant_has_events(&self, tenant: Uuid) -> Result<(), ControlError> {
        let timeout = self.shared.config.limits.connect_timeout() + QUERY_TIMEOUT;
        let answers = join_all(
            self.shared
                .stores
                .iter()
                .map(|store| has_events(store, tenant, timeout)),
        )
        .await;
        for (store, answer) in self.shared.stores.iter().zip(answers) {
            if answer? {
                return Err(ControlError::TenantHasEvents {
                    tenant,
                    store: store.id.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A direct connection to `store` with its configured credentials (the same ones backend
/// sessions use).
async fn connect(store: &Store, timeout: Duration) -> Result<tokio_postgres::Client, ControlError> {
    let mut config = store.endpoint.client_config("evshift-control-socket");
    config.connect_timeout(timeout);
    let connected = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| {
            ControlError::store_unavailable(&*store.id, format!("no answer within {timeout:?}"))
        })?;
    let (client, connection) = connected
        .map_err(|e| ControlError::store_unavailable(&*store.id, describe_pg_error(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether `store` accepts a connection right now.
async fn probe(store: &Arc<Store>) -> StoreStatus {
    let error = connect(store, PROBE_TIMEOUT).await.err();
    StoreStatus {
        id: store.id.to_string(),
        address: store.endpoint.address(),
        database: store.endpoint.database.clone(),
        default: store.is_default,
        reachable: error.is_none(),
        error: error.map(|e| match e {
            ControlError::StoreUnavailable { cause, .. } => cause,
            other => other.to_string(),
        }),
    }
}

/// Whether `store` holds any event of `tenant`.
async fn has_events(store: &Store, tenant: Uuid, timeout: Duration) -> Result<bool, ControlError> {
    let client = connect(store, timeout).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tenant];
    let query = client.query_opt("SELECT 1 FROM events WHERE tenant_id = $1 LIMIT 1", &params);
    let row = tokio::time::timeout(QUERY_TIMEOUT, query)
        .await
        .map_err(|_| {
            ControlError::store_unavailable(
                &*store.id,
                format!("no answer to the events query within {QUERY_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| ControlError::store_unavailable(&*store.id, describe_pg_error(&e)))?;
    Ok(row.is_some())
}
