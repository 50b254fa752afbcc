//! `ControlStore`: one connection to the control store and the queries evshift runs there.
//!
//! The control store is a PostgreSQL database (`[control] url`) shared by every evshift
//! instance: it holds the persistent routing table (`tenant_routing`) and, later, migrations and
//! their audit log. This type is the only place that writes SQL against it.

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Notification, Row, Socket};
use uuid::Uuid;

use crate::error::{describe_pg_error, ControlError};
use crate::routing::{MigrationState, Route, RouteMigration, RoutingTable};
use crate::schema::{CONTROL_SCHEMA, ROUTING_CHANNEL, SCHEMA_LOCK_KEY};

/// Bound on TCP connect plus authentication when the URL sets no `connect_timeout`: a control
/// store that does not answer must not stall start-up or a `ctl` command for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Notifications buffered between the connection task and their reader. Readers reload the
/// whole table on any of them, so when the buffer is full the excess is dropped, not queued.
const NOTIFICATION_BUFFER: usize = 64;

/// How often `assign_tenant` retries when a migration ends between its write and its check.
const ASSIGN_ATTEMPTS: usize = 3;

/// The columns of `tenant_routing` that make a `Route`, in the order `route_from_row` reads.
const ROUTE_COLUMNS: &str = "tenant_id, store_id, migration_state, target_store_id, migration_id";

/// Route changes announced by the control store (`NOTIFY evshift_routing`), once
/// [`ControlStore::listen_for_routing_changes`] ran. The channel closes when the connection
/// ends, which is how a listener learns that it must reconnect.
pub type RoutingNotifications = mpsc::Receiver<Notification>;

/// A connection to the control store. Its connection task runs on the current tokio runtime
/// and ends when the `ControlStore` is dropped or the server goes away.
pub struct ControlStore {
    client: Client,
    /// `host:port/database`, for messages (the URL may hold a password).
    target: String,
}

impl ControlStore {
    /// Connects to the control store at `url` (a libpq URL or `key=value` string).
    pub async fn connect(url: &str) -> Result<ControlStore, ControlError> {
        let (store, _notifications) = ControlStore::connect_with_notifications(url).await?;
        Ok(store)
    }

    /// Connects and also returns the stream of notifications the connection receives.
    pub async fn connect_with_notifications(
        url: &str,
    ) -> Result<(ControlStore, RoutingNotifications), ControlError> {
        let config = connection_config(url)?;
        let target = describe_target(&config);
        // connect_timeout bounds each TCP connect; this bounds authentication too.
        let bound = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let (client, connection) = tokio::time::timeout(bound, config.connect(NoTls))
            .await
            .map_err(|_| ControlError::ControlStoreUnavailable {
                context: format!("connect to {target}"),
                cause: format!("no answer within {bound:?}"),
            })?
            .map_err(|e| ControlError::from_control_store(format!("connect to {target}"), &e))?;
        let (sender, receiver) = mpsc::channel(NOTIFICATION_BUFFER);
        tokio::spawn(drive_connection(connection, target.clone(), sender));
        Ok((ControlStore { client, target }, receiver))
    }

    /// `host:port/database` of the control store.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// True once the connection has ended (server gone, network broken).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Creates or updates the control-store schema (`CONTROL_SCHEMA`) in one transaction that
    /// holds the schema advisory lock, so concurrent instances apply it one at a time.
    pub async fn apply_schema(&mut self) -> Result<(), ControlError> {
        let target = self.target.clone();
        let context = |what: &str| format!("{what} on {target}");
        let transaction = self
            .client
            .transaction()
            .await
            .map_err(|e| ControlError::from_control_store(context("begin"), &e))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
            .await
            .map_err(|e| ControlError::from_control_store(context("take the schema lock"), &e))?;
        for file in CONTROL_SCHEMA {
            transaction.batch_execute(file.sql).await.map_err(|e| {
                ControlError::from_control_store(context(&format!("apply {}", file.name)), &e)
            })?;
        }
        transaction
            .commit()
            .await
            .map_err(|e| ControlError::from_control_store(context("commit the schema"), &e))
    }

    /// `LISTEN evshift_routing`: from now on route changes arrive on this connection's
    /// notification stream.
    pub async fn listen_for_routing_changes(&self) -> Result<(), ControlError> {
        self.client
            .batch_execute(&format!("LISTEN {ROUTING_CHANNEL}"))
            .await
            .map_err(|e| ControlError::from_control_store(format!("LISTEN on {}", self.target), &e))
    }

    /// Reads every row of `tenant_routing` into a routing table.
    pub async fn load_routing_table(&self) -> Result<RoutingTable, ControlError> {
        let rows = self
            .client
            .query(&format!("SELECT {ROUTE_COLUMNS} FROM tenant_routing"), &[])
            .await
            .map_err(|e| {
                ControlError::from_control_store(
                    format!("load tenant_routing from {}", self.target),
                    &e,
                )
            })?;
        let routes = rows
            .iter()
            .map(route_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutingTable::new(routes))
    }

    /// Places `tenant` on `store_id`: inserts its route, or replaces an existing one that has
    /// no active migration (an active one refuses with `TenantMigrating`). A replaced route
    /// loses its finished migration's fields: the tenant starts afresh on `store_id`.
    ///
    /// The caller checks that `store_id` is configured and that the tenant has no events.
    pub async fn assign_tenant(&self, tenant: Uuid, store_id: &str) -> Result<Route, ControlError> {
        for _ in 0..ASSIGN_ATTEMPTS {
            if let Some(route) = self.upsert_unless_migrating(tenant, store_id).await? {
                return Ok(route);
            }
            // The row exists and the upsert left it alone: report its migration, unless that
            // migration ended (or the row vanished) in the meantime, in which case try again.
            if let Some(error) = self.active_migration_error(tenant).await? {
                return Err(error);
            }
        }
        Err(ControlError::ControlStore {
            context: format!("assign tenant {tenant} on {}", self.target),
            cause: "the route kept changing; try again".into(),
        })
    }

    /// The upsert of `assign_tenant`; `None` if an active migration kept the row unchanged.
    async fn upsert_unless_migrating(
        &self,
        tenant: Uuid,
        store_id: &str,
    ) -> Result<Option<Route>, ControlError> {
        // ON CONFLICT ... WHERE locks the existing row and updates it only if the condition
        // holds, so the check and the write are one atomic step.
        let sql = format!(
            "INSERT INTO tenant_routing (tenant_id, store_id) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE
                SET store_id = EXCLUDED.store_id, migration_state = NULL,
                    target_store_id = NULL, migration_id = NULL, updated_at = now()
              WHERE tenant_routing.migration_state IS NULL
                 OR tenant_routing.migration_state IN ({terminal})
             RETURNING {ROUTE_COLUMNS}",
            terminal = terminal_states_sql()
        );
        let row = self
            .client
            .query_opt(&sql, &[&tenant, &store_id])
            .await
            .map_err(|e| {
                ControlError::from_control_store(
                    format!("assign tenant {tenant} on {}", self.target),
                    &e,
                )
            })?;
        row.as_ref().map(route_from_row).transpose()
    }

    /// `TenantMigrating` if the tenant's route has an active migration now.
    async fn active_migration_error(
        &self,
        tenant: Uuid,
    ) -> Result<Option<ControlError>, ControlError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT {ROUTE_COLUMNS} FROM tenant_routing WHERE tenant_id = $1"),
                &[&tenant],
            )
            .await
            .map_err(|e| {
                ControlError::from_control_store(
                    format!("read the route of tenant {tenant} on {}", self.target),
                    &e,
                )
            })?;
        let route = row.as_ref().map(route_from_row).transpose()?;
        Ok(route
            .and_then(|r| r.migration)
            .filter(|m| !m.state.is_terminal())
            .map(|m| ControlError::TenantMigrating {
                tenant,
                migration_id: m.migration_id,
                state: m.state,
            }))
    }
}

/// The URL parsed, with evshift's defaults for what it leaves out.
pub(crate) fn connection_config(url: &str) -> Result<tokio_postgres::Config, ControlError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| ControlError::ControlStore {
            context: "invalid [control] url".into(),
            cause: describe_pg_error(&e),
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        // Shows evshift's connections in pg_stat_activity.
        config.application_name("evshift-control");
    }
    Ok(config)
}

/// `host:port/database` without credentials.
pub(crate) fn describe_target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}

/// Drives the connection, forwarding notifications, until it ends. tokio-postgres hands
/// notifications out only through `Connection::poll_message`, so the connection is polled as a
/// stream of messages rather than awaited as a future.
async fn drive_connection(
    mut connection: Connection<Socket, NoTlsStream>,
    target: String,
    notifications: mpsc::Sender<Notification>,
) {
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            // Full: a reload is already due and will see this change too. Closed: nobody
            // listens on this connection.
            Ok(AsyncMessage::Notification(note)) => {
                let _ = notifications.try_send(note);
            }
            Ok(AsyncMessage::Notice(notice)) => {
                tracing::debug!(store = %target, notice = %notice.message(), "control store notice");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(store = %target, error = %describe_pg_error(&e), "control store connection failed");
                return;
            }
        }
    }
    tracing::debug!(store = %target, "control store connection closed");
}

/// One `tenant_routing` row (columns `ROUTE_COLUMNS`) as a route.
fn route_from_row(row: &Row) -> Result<Route, ControlError> {
    let bad_row = |tenant: Option<Uuid>, e: String| ControlError::ControlStore {
        context: match tenant {
            Some(t) => format!("tenant_routing row of {t}"),
            None => "tenant_routing row".into(),
        },
        cause: e,
    };
    let tenant_id: Uuid = row.try_get(0).map_err(|e| bad_row(None, e.to_string()))?;
    let get_err = |e: tokio_postgres::Error| bad_row(Some(tenant_id), describe_pg_error(&e));
    let store: String = row.try_get(1).map_err(get_err)?;
    let state: Option<String> = row.try_get(2).map_err(get_err)?;
    let target: Option<String> = row.try_get(3).map_err(get_err)?;
    let migration_id: Option<i64> = row.try_get(4).map_err(get_err)?;
    let migration = match (state, target, migration_id) {
        (None, _, _) => None,
        (Some(state), Some(target_store), Some(migration_id)) => Some(RouteMigration {
            migration_id,
            state: state
                .parse::<MigrationState>()
                .map_err(|e| bad_row(Some(tenant_id), e))?,
            target_store,
        }),
        // The table's CHECK constraint rules this out; a hand-edited row still must not panic.
        (Some(state), _, _) => {
            return Err(bad_row(
                Some(tenant_id),
                format!("migration_state {state} without target_store_id or migration_id"),
            ))
        }
    };
    Ok(Route {
        tenant_id,
        store,
        migration,
    })
}

/// `'MIGRATED', 'FAILED', 'ROLLED_BACK'`: the terminal states as an SQL list, from the model so
/// that the two never disagree.
fn terminal_states_sql() -> String {
    MigrationState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_listed_by_name() {
        assert_eq!(terminal_states_sql(), "'MIGRATED', 'FAILED', 'ROLLED_BACK'");
    }

    #[test]
    fn target_hides_credentials() {
        let config = connection_config("postgres://evshift:secret@db.example:5433/control")
            .expect("valid url");
        let target = describe_target(&config);
        assert_eq!(target, "db.example:5433/control");
        assert_eq!(config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }
}
