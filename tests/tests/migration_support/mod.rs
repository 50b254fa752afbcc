//! Set-ups shared by the migration suites: a `shared` store (the default), a `dedicated`
//! store, a control store and evshift with a `[migration]` section; `evshift ctl` helpers that
//! poll a migration's status with a deadline; appenders that keep writing through evshift.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evshift_tests::{
    append_event, free_port, AppendOutcome, EvshiftConfig, EvshiftProcess, PgCluster,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::control_support::{ctl, start_clusters, CtlOutput};

/// How long a migration may take to reach a state in these suites.
pub const MIGRATION_DEADLINE: Duration = Duration::from_secs(180);

/// Pause between two status polls.
const POLL: Duration = Duration::from_millis(100);

/// `[migration]` for tests: quick retries, so that faults of a few seconds are ridden out
/// quickly, and a short tail interval.
pub const TEST_MIGRATION: &str = "
retry_limit = 200
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 500
tail_interval_ms = 100
";

/// The clusters and evshift.
pub struct MigrationSetup {
    pub shared: PgCluster,
    pub dedicated: PgCluster,
    pub control: PgCluster,
    pub proxy: EvshiftProcess,
    pub config: EvshiftConfig,
}

impl MigrationSetup {
    /// Three clusters (both stores with the event-store schema) and evshift.
    pub async fn start() -> MigrationSetup {
        MigrationSetup::start_with(TEST_MIGRATION, |c| c).await
    }

    /// Like `start` with `[migration]` keys `migration` and a config adjustment.
    pub async fn start_with(
        migration: &str,
        adjust: impl FnOnce(EvshiftConfig) -> EvshiftConfig,
    ) -> MigrationSetup {
        MigrationSetup::start_configured(migration, adjust, &[]).await
    }

    /// Like `start` with `[migration]` keys `migration` and further top-level sections
    /// (`[log]`, `[tracing]`, ...) given as `(name, TOML body)`.
    pub async fn start_with_sections(migration: &str, sections: &[(&str, &str)]) -> MigrationSetup {
        MigrationSetup::start_configured(migration, |c| c, sections).await
    }

    async fn start_configured(
        migration: &str,
        adjust: impl FnOnce(EvshiftConfig) -> EvshiftConfig,
        sections: &[(&str, &str)],
    ) -> MigrationSetup {
        let (shared, dedicated, control) = start_clusters().await;
        let config = adjust(
            EvshiftConfig::new(free_port())
                .with_store("shared", &shared.url("postgres"), true)
                .with_store("dedicated", &dedicated.url("postgres"), false)
                .with_control(&control.url("postgres")),
        );
        let mut table: toml::Table = config_text(&config, migration)
            .parse()
            .expect("the harness writes TOML");
        for (name, body) in sections {
            let section: toml::Table = body.parse().expect("a TOML section body");
            table.insert((*name).into(), toml::Value::Table(section));
        }
        let proxy = EvshiftProcess::start(&table.to_string())
            .await
            .expect("start evshift");
        MigrationSetup {
            shared,
            dedicated,
            control,
            proxy,
            config,
        }
    }

    /// `evshift ctl --socket SOCKET ARGS...`.
    pub async fn ctl(&self, args: &[&str]) -> CtlOutput {
        ctl(&self.config.control_socket, args).await
    }

    /// `ctl --json migrate TENANT --to STORE EXTRA...`; returns the migration id.
    pub async fn migrate(&self, tenant: Uuid, to: &str, extra: &[&str]) -> i64 {
        let tenant = tenant.to_string();
        let mut args = vec!["--json", "migrate", &tenant, "--to", to];
        args.extend_from_slice(extra);
        let status = self.ctl(&args).await.ok_json();
        assert_eq!(status["state"], "PENDING", "{status}");
        status["id"].as_i64().expect("an id")
    }

    /// `ctl --json status ID`.
    pub async fn status(&self, id: i64) -> Value {
        self.ctl(&["--json", "status", &id.to_string()])
            .await
            .ok_json()
    }

    /// Polls the status until `done` holds; panics with the last status after the deadline,
    /// or at once if the migration FAILED while `done` did not expect it.
    pub async fn wait_until(&self, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + MIGRATION_DEADLINE;
        loop {
            let status = self.status(id).await;
            if done(&status) {
                return status;
            }
            assert!(
                status["state"] != "FAILED",
                "migration {id} failed while waiting for {what}: {status}"
            );
            assert!(
                Instant::now() < deadline,
                "migration {id}: no {what} within {MIGRATION_DEADLINE:?}; last status {status}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for `state`.
    pub async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        self.wait_until(id, state, |s| s["state"] == state).await
    }

    /// Waits until the tail copied everything of `tenant` that the source holds.
    pub async fn wait_caught_up(&self, id: i64, tenant: Uuid) -> Value {
        let source = self.shared_db().await;
        let wanted = count_tenant(&source, tenant).await;
        self.wait_until(id, "the tail to catch up", |s| {
            s["state"] == "DUAL_WRITE" && s["lag_events"] == 0 && s["events_copied"] == wanted
        })
        .await
    }

    /// The audit log's event types, oldest first.
    pub async fn audit_events(&self, id: i64) -> Vec<String> {
        let entries = self
            .ctl(&["--json", "audit", &id.to_string()])
            .await
            .ok_json();
        entries
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| e["event_type"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn shared_db(&self) -> Client {
        self.shared
            .connect("postgres")
            .await
            .expect("connect to shared")
    }

    pub async fn dedicated_db(&self) -> Client {
        self.dedicated
            .connect("postgres")
            .await
            .expect("connect to dedicated")
    }

    pub async fn control_db(&self) -> Client {
        self.control
            .connect("postgres")
            .await
            .expect("connect to the control store")
    }

    /// A client connection through evshift.
    pub async fn through_proxy(&self) -> Client {
        let (client, connection) =
            tokio_postgres::connect(&self.proxy.url("app", "postgres"), NoTls)
                .await
                .expect("connect through evshift");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

/// The config as TOML with a `[migration]` section (the harness's `EvshiftConfig` has none).
pub fn config_text(config: &EvshiftConfig, migration: &str) -> String {
    let mut table: toml::Table = config.to_toml().parse().expect("the harness writes TOML");
    let section: toml::Table = migration.parse().expect("a [migration] body");
    table.insert("migration".into(), toml::Value::Table(section));
    table.to_string()
}

/// Events of `tenant` in a store.
pub async fn count_tenant(client: &Client, tenant: Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("count events")
        .get(0)
}

/// A digest of everything in `events` and `snapshots`, every column (positions and txid
/// included): equal digests mean a byte-identical table content.
pub async fn store_digest(client: &Client) -> String {
    client
        .query_one(
            "SELECT md5(coalesce((SELECT string_agg(e::text, '|' ORDER BY global_position)
                                    FROM events e), '')
                     || coalesce((SELECT string_agg(s::text, '|' ORDER BY id)
                                    FROM snapshots s), ''))",
            &[],
        )
        .await
        .expect("digest the store")
        .get(0)
}

/// Appenders running through evshift: each one appends to its own stream of its tenant,
/// eventsource-py style, until stopped.
pub struct Appenders {
    stop: Arc<AtomicBool>,
    appended: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Appenders {
    /// One appender per entry of `tenants`, connected through `setup`'s evshift.
    pub async fn start(setup: &MigrationSetup, tenants: &[Uuid]) -> Appenders {
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for tenant in tenants {
            let mut client = setup.through_proxy().await;
            let (tenant, stop, appended) = (*tenant, Arc::clone(&stop), Arc::clone(&appended));
            tasks.push(tokio::spawn(async move {
                let aggregate = Uuid::new_v4();
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    match append_event(&mut client, tenant, aggregate, version).await {
                        Ok(AppendOutcome::Appended { version: v, .. }) => {
                            version = v;
                            appended.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("append through evshift failed: {other:?}"),
                    }
                }
            }));
        }
        Appenders {
            stop,
            appended,
            tasks,
        }
    }

    /// Events appended so far.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Stops every appender and waits for them; returns how many events they appended.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("an appender panicked");
        }
        self.appended.load(Ordering::Relaxed)
    }
}
