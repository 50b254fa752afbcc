//! The real eventsource-py library appends and reads for a tenant through evshift during the
//! whole live migration of that tenant (bulk copy, dual-write, cutover, after): no error, and
//! every event it appended is on the target exactly once.

mod common;
mod control_support;
mod migration_support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::python::{asyncpg_url, eventsource_python};
use evshift_tests::{seed_events, tenant_ids};
use migration_support::{count_tenant, MigrationSetup, TEST_MIGRATION};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits until `tenant` has `more` events more on the store `client` reaches than now.
async fn wait_for_growth(
    script: &mut Child,
    client: &tokio_postgres::Client,
    tenant: Uuid,
    more: i64,
) {
    let goal = count_tenant(client, tenant).await + more;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while count_tenant(client, tenant).await < goal {
        if let Some(status) = script.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = script.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            panic!("the eventsource-py script ended early ({status}):\n{stderr}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the library stopped appending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_py_keeps_working_while_its_tenant_moves() {
    let Some(python) = eventsource_python() else {
        return;
    };
    let migration = format!("{TEST_MIGRATION}\nmax_lag_events = 200\n");
    let setup = MigrationSetup::start_with(&migration, |c| c).await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 20_000, 20).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let stop = work.path().join("stop");
    let out = work.path().join("out.json");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/eventsource_during_migration.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(asyncpg_url(&setup.proxy.url("app", "postgres")))
        .arg(tenant.to_string())
        .arg(&stop)
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("run the eventsource-py script");
    wait_for_growth(&mut child, &source, tenant, 30).await;

    let id = setup.migrate(tenant, "dedicated", &[]).await;
    setup.wait_for_state(id, "MIGRATED").await;
    let target = setup.dedicated_db().await;
    wait_for_growth(&mut child, &target, tenant, 30).await;
    std::fs::write(&stop, b"").unwrap();

    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the script finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "eventsource-py failed during the migration:\n{stderr}\n--- evshift log\n{}",
        setup.proxy.log_contents()
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let appended: Vec<Uuid> = report["appended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(appended.len() >= 60, "{report}");
    let on_target: HashMap<Uuid, i64> = target
        .query(
            "SELECT event_id, count(*) FROM events WHERE event_id = ANY($1) GROUP BY event_id",
            &[&appended],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for event_id in &appended {
        assert_eq!(
            on_target.get(event_id),
            Some(&1),
            "{event_id} not once on the target"
        );
    }
}
