//! The throwaway world the documented commands run in: the stores and ids the examples name,
//! a control store, the real evshift, and the variables the commands use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use evshift_tests::{
    evshift_binary, free_port, seed_events, tenant_ids, EvshiftConfig, EvshiftProcess, PgBinaries,
    PgCluster, LOOPBACK,
};
use tempfile::TempDir;
use uuid::Uuid;

use super::runner::{path_with, RunContext};
use crate::control_support::start_clusters;
use crate::migration_support::{config_text, TEST_MIGRATION};

/// The tenant the examples migrate (`$TENANT`); it has events on the default store.
pub const TENANT: Uuid = Uuid::from_u128(0x7f8e2c4a_1111_4222_8333_444455556666);

/// The examples' store ids.
pub const DEFAULT_STORE: &str = "shared";
pub const OTHER_STORE: &str = "dedicated-1";

/// The examples' migration id: the first migration of the environment gets it.
pub const FIRST_MIGRATION_ID: i64 = 7;

/// Events seeded for `TENANT`, and for each of two other tenants sharing its store.
const TENANT_EVENTS: usize = 2_000;
const NEIGHBOUR_EVENTS: usize = 300;
const EVENTS_PER_STREAM: usize = 20;

/// The client user and database name psql uses through evshift (evshift trusts any user here,
/// and the stores' URLs decide the database on their side).
const CLIENT_USER: &str = "app";
const CLIENT_DATABASE: &str = "app";

/// How long one marked block may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// Two stores, a control store and evshift, as the examples assume them.
pub struct DocEnvironment {
    pub proxy: EvshiftProcess,
    config: EvshiftConfig,
    workdir: TempDir,
    // Dropped after evshift, which may otherwise log the stores going away.
    _stores: (PgCluster, PgCluster, PgCluster),
}

impl DocEnvironment {
    /// Starts everything: `shared` (the default store, holding `TENANT`'s events and two other
    /// tenants'), `dedicated-1` (empty, with the schema), the control store, and evshift with
    /// quick migration retries. The working directory holds the running `evshift.toml`.
    pub async fn start() -> DocEnvironment {
        let (shared, dedicated, control) = start_clusters().await;
        let source = shared.connect("postgres").await.expect("connect to shared");
        seed_events(&source, &[TENANT], TENANT_EVENTS, EVENTS_PER_STREAM)
            .await
            .expect("seed the examples' tenant");
        seed_events(&source, &tenant_ids(2), NEIGHBOUR_EVENTS, EVENTS_PER_STREAM)
            .await
            .expect("seed its neighbours");

        let config = EvshiftConfig::new(free_port())
            .with_store(DEFAULT_STORE, &shared.url("postgres"), true)
            .with_store(OTHER_STORE, &dedicated.url("postgres"), false)
            .with_control(&control.url("postgres"));
        let text = config_text(&config, TEST_MIGRATION);
        let proxy = EvshiftProcess::start(&text).await.expect("start evshift");
        // evshift created the control-store schema at start-up.
        let control_db = control
            .connect("postgres")
            .await
            .expect("connect to control");
        control_db
            .batch_execute(&format!(
                "ALTER TABLE tenant_migrations ALTER COLUMN id RESTART WITH {FIRST_MIGRATION_ID}"
            ))
            .await
            .expect("number migrations as the examples do");

        let workdir = tempfile::Builder::new()
            .prefix("evshift-doc-")
            .tempdir()
            .expect("a working directory");
        std::fs::write(workdir.path().join("evshift.toml"), &text).expect("write evshift.toml");
        DocEnvironment {
            proxy,
            config,
            workdir,
            _stores: (shared, dedicated, control),
        }
    }

    /// The working directory and the variables of every step.
    pub fn context(&self) -> RunContext {
        let evshift = evshift_binary().expect("the evshift binary");
        let postgres = PgBinaries::locate().expect("the PostgreSQL binaries");
        let path = path_with(&[dir_of(&evshift), postgres.bindir().to_path_buf()]);
        let vars = [
            ("PATH", path),
            ("TENANT", TENANT.to_string()),
            (
                "EVSHIFT_CONFIG",
                self.workdir
                    .path()
                    .join("evshift.toml")
                    .display()
                    .to_string(),
            ),
            (
                "EVSHIFT_SOCKET",
                self.config.control_socket.display().to_string(),
            ),
            ("PGHOST", LOOPBACK.to_string()),
            ("PGPORT", self.proxy.addr().port().to_string()),
            ("PGUSER", CLIENT_USER.to_string()),
            ("PGDATABASE", CLIENT_DATABASE.to_string()),
            ("PGCONNECT_TIMEOUT", "10".to_string()),
            ("PSQLRC", "/dev/null".to_string()),
        ];
        RunContext {
            workdir: self.workdir.path().to_path_buf(),
            env: vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            timeout: STEP_TIMEOUT,
        }
    }
}

fn dir_of(binary: &Path) -> PathBuf {
    binary
        .parent()
        .expect("the binary is in a directory")
        .to_path_buf()
}
