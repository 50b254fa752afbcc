//! The real eventsource-py library (its PostgreSQL event store: SQLAlchemy async + asyncpg)
//! through evshift, for a tenant on each of two stores; each store is then read directly.
//!
//! eventsource-py 0.15 needs Python >= 3.13: `scripts/test` prepares `.venv-eventsource` and
//! exports `EVSHIFT_EVENTSOURCE_PYTHON`. Without it the test fails under CI (`CI` set) and
//! reports itself skipped otherwise.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::python::{asyncpg_url, eventsource_python};
use common::routed::Routed;
use tokio::process::Command;

/// Longer than the script's own limit (120 s), so that the script reports what it was doing.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_py_through_the_proxy_keeps_each_tenant_on_its_store() {
    let Some(python) = eventsource_python() else {
        return;
    };
    let setup = Routed::start().await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/eventsource_through_proxy.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(asyncpg_url(&setup.proxy.url("app", "postgres")))
        .arg(setup.shared.url("postgres"))
        .arg(setup.dedicated.url("postgres"))
        .arg(setup.shared_tenant.to_string())
        .arg(setup.dedicated_tenant.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{command:?}");
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{shown} did not finish within {SCRIPT_TIMEOUT:?}\nevshift log:\n{}",
                setup.proxy.log_contents()
            )
        })
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "eventsource-py through evshift failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\
         \n--- evshift log\n{}",
        output.status,
        setup.proxy.log_contents()
    );
    assert_eq!(stdout.trim(), "ok", "stderr:\n{stderr}");
}
