//! Set-ups shared by the control-plane suites: event stores with the schema, a control store,
//! the real evshift binary, and `evshift ctl` run as a command.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evshift_tests::{
    apply_event_store_schema, evshift_binary, free_port, EvshiftConfig, EvshiftProcess, PgCluster,
};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

/// How long a poll waits for something that should happen "soon" (a notification, a
/// reconnect after at most 5 s of backoff).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A routing refresh interval no test outlives: whatever changes the table during a test
/// does so through LISTEN/NOTIFY or a reconnect, not the periodic reload.
pub const NO_PERIODIC_REFRESH_MS: i64 = 3_600_000;

/// Two event stores (`shared`, the default, and `dedicated`), a control store, and evshift.
pub struct ControlSetup {
    pub shared: PgCluster,
    pub dedicated: PgCluster,
    pub control: PgCluster,
    pub proxy: EvshiftProcess,
    pub socket: PathBuf,
}

impl ControlSetup {
    /// The three clusters and evshift with `[control]`, periodic refresh effectively off.
    pub async fn start() -> ControlSetup {
        ControlSetup::start_with(|config| config).await
    }

    /// Like `start`, letting `adjust` change the config before it is written.
    pub async fn start_with(adjust: impl FnOnce(EvshiftConfig) -> EvshiftConfig) -> ControlSetup {
        let (shared, dedicated, control) = start_clusters().await;
        let config = adjust(
            EvshiftConfig::new(free_port())
                .with_store("shared", &shared.url("postgres"), true)
                .with_store("dedicated", &dedicated.url("postgres"), false)
                .with_control(&control.url("postgres")),
        );
        let socket = config.control_socket.clone();
        let proxy = EvshiftProcess::start(&with_refresh_ms(&config, NO_PERIODIC_REFRESH_MS))
            .await
            .expect("start evshift");
        ControlSetup {
            shared,
            dedicated,
            control,
            proxy,
            socket,
        }
    }

    /// `evshift ctl --socket SOCKET ARGS...`.
    pub async fn ctl(&self, args: &[&str]) -> CtlOutput {
        ctl(&self.socket, args).await
    }

    /// `ctl --json routes TENANT`'s result.
    pub async fn route_of(&self, tenant: Uuid) -> Value {
        let output = self.ctl(&["--json", "routes", &tenant.to_string()]).await;
        output.ok_json()
    }

    /// Polls `ctl routes TENANT` until the tenant's store is `store` (assigned or not).
    pub async fn wait_for_store(&self, tenant: Uuid, store: &str, assigned: bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let route = self.route_of(tenant).await;
            if route["store"] == store && route["assigned"] == assigned {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tenant {tenant} did not reach store {store} (assigned {assigned}) within \
                 {DEADLINE:?}; last route {route}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// A connection to the control store's database.
    pub async fn control_db(&self) -> Client {
        self.control
            .connect("postgres")
            .await
            .expect("connect to the control store")
    }
}

/// Starts the `shared`, `dedicated` (both with the event-store schema) and `control` clusters.
pub async fn start_clusters() -> (PgCluster, PgCluster, PgCluster) {
    let (shared, dedicated, control) = tokio::try_join!(
        PgCluster::start("shared"),
        PgCluster::start("dedicated"),
        PgCluster::start("control"),
    )
    .expect("start the clusters");
    for store in [&shared, &dedicated] {
        let client = store.connect("postgres").await.expect("connect to a store");
        apply_event_store_schema(&client)
            .await
            .expect("apply the schema");
    }
    (shared, dedicated, control)
}

/// The config's TOML with `[control] routing_refresh_ms` set (the harness's `EvshiftConfig`
/// has no field for it).
pub fn with_refresh_ms(config: &EvshiftConfig, refresh_ms: i64) -> String {
    let mut table: toml::Table = config.to_toml().parse().expect("the harness writes TOML");
    if let Some(toml::Value::Table(control)) = table.get_mut("control") {
        control.insert(
            "routing_refresh_ms".into(),
            toml::Value::Integer(refresh_ms),
        );
    }
    table.to_string()
}

/// What one `evshift ctl` run printed, and its exit status.
#[derive(Debug)]
pub struct CtlOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// Asserts exit status 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "ctl failed: {self:?}");
        &self.stdout
    }

    /// Asserts success and returns the `"ok"` value of the JSON reply (run with `--json`).
    pub fn ok_json(&self) -> Value {
        let reply: Value = serde_json::from_str(self.ok().trim()).expect("a JSON reply");
        reply["ok"].clone()
    }

    /// Asserts exit status 1 with one line on stderr naming `kind`; returns that line.
    pub fn refused(&self, kind: &str) -> &str {
        assert_eq!(self.code, Some(1), "expected {kind}: {self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:?}");
        let line = self.stderr.trim_end();
        assert!(
            line.starts_with(&format!("evshift ctl: {kind}: ")),
            "expected {kind}: {line}"
        );
        line
    }
}

/// `evshift ctl --socket SOCKET ARGS...`.
pub async fn ctl(socket: &Path, args: &[&str]) -> CtlOutput {
    let mut command = std::process::Command::new(evshift_binary().expect("the evshift binary"));
    command.arg("ctl").arg("--socket").arg(socket).args(args);
    run(command).await
}

/// Runs a prepared command to completion.
pub async fn run(command: std::process::Command) -> CtlOutput {
    let output = tokio::process::Command::from(command)
        // A caller that gives up on the command (a timeout) must not leave it running.
        .kill_on_drop(true)
        .output()
        .await
        .expect("run evshift ctl");
    CtlOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Inserts a route straight into the control store, as another evshift instance would.
pub async fn insert_route(control: &Client, tenant: Uuid, store: &str) {
    control
        .execute(
            "INSERT INTO tenant_routing (tenant_id, store_id) VALUES ($1, $2)",
            &[&tenant, &store],
        )
        .await
        .expect("insert a route");
}

/// The `store_id` of `tenant` in the control store, if it has a row.
pub async fn stored_route(control: &Client, tenant: Uuid) -> Option<String> {
    control
        .query_opt(
            "SELECT store_id FROM tenant_routing WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("read tenant_routing")
        .map(|row| row.get(0))
}
