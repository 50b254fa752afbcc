//! Faults during the bulk copy: the target store, then the control store, stopped for a few
//! seconds. The copy waits, retries with backoff and completes with an identical target.

mod control_support;
mod migration_support;

use std::time::Duration;

use evshift_tests::{assert_same_events, seed_events, tenant_ids};
use migration_support::{count_tenant, MigrationSetup};

/// How long a store stays down.
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_stopped_during_the_bulk_copy() {
    let setup = MigrationSetup::start().await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 50_000, 10).await.unwrap();
    let id = setup
        .migrate(
            tenant,
            "dedicated",
            &[
                "--manual-cutover",
                "--batch-size",
                "500",
                "--rate-limit",
                "15000",
            ],
        )
        .await;
    setup
        .wait_until(id, "a few batches", |s| {
            s["events_copied"].as_i64().unwrap_or(0) >= 5_000
        })
        .await;
    setup.dedicated.stop_immediate().await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    let during = setup.status(id).await;
    assert_eq!(during["state"], "BULK_COPY", "{during}");
    setup.dedicated.start_again().await.unwrap();
    setup.wait_caught_up(id, tenant).await;
    let target = setup.dedicated_db().await;
    assert_same_events(&source, &target, tenant).await.unwrap();
    assert_eq!(count_tenant(&target, tenant).await, 50_000);
    assert!(setup
        .proxy
        .log_contents()
        .contains("retrying from the checkpoint"));
    assert!(!setup.audit_events(id).await.contains(&"failed".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_store_restarted_during_the_bulk_copy() {
    let setup = MigrationSetup::start().await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 50_000, 10).await.unwrap();
    let id = setup
        .migrate(
            tenant,
            "dedicated",
            &[
                "--manual-cutover",
                "--batch-size",
                "500",
                "--rate-limit",
                "15000",
            ],
        )
        .await;
    setup
        .wait_until(id, "a few batches", |s| {
            s["events_copied"].as_i64().unwrap_or(0) >= 5_000
        })
        .await;
    setup.control.stop_immediate().await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    setup
        .ctl(&["status", &id.to_string()])
        .await
        .refused("ControlStoreUnavailableError");
    setup.control.start_again().await.unwrap();
    let status = setup.wait_caught_up(id, tenant).await;
    assert_eq!(status["events_copied"], 50_000);
    let target = setup.dedicated_db().await;
    assert_same_events(&source, &target, tenant).await.unwrap();
    assert_eq!(count_tenant(&target, tenant).await, 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_retry_limit_it_fails_and_resume_retries_from_the_checkpoint() {
    let quick_to_fail = "
retry_limit = 2
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 100
tail_interval_ms = 100
";
    let setup = MigrationSetup::start_with(quick_to_fail, |c| c).await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 40_000, 10).await.unwrap();
    let id = setup
        .migrate(
            tenant,
            "dedicated",
            &[
                "--manual-cutover",
                "--batch-size",
                "500",
                "--rate-limit",
                "10000",
            ],
        )
        .await;
    setup
        .wait_until(id, "a few batches", |s| {
            s["events_copied"].as_i64().unwrap_or(0) >= 3_000
        })
        .await;
    setup.dedicated.stop_immediate().await.unwrap();
    let failed = setup
        .wait_until(id, "FAILED", |s| s["state"] == "FAILED")
        .await;
    let message = failed["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("dedicated"), "{message}");
    assert!(message.contains("attempts"), "{message}");
    let checkpoint = failed["last_source_position"].as_i64().unwrap();
    assert!(checkpoint > 0);
    let route = setup
        .ctl(&["--json", "routes", &tenant.to_string()])
        .await
        .ok_json();
    assert_eq!(route["store"], "shared");
    assert_eq!(route["migration_state"], "FAILED");
    assert!(setup.audit_events(id).await.contains(&"failed".to_string()));
    // A FAILED migration still holds its tenant.
    setup
        .ctl(&["migrate", &tenant.to_string(), "--to", "dedicated"])
        .await
        .refused("TenantMigratingError");
    setup
        .ctl(&["watch", &id.to_string()])
        .await
        .refused("MigrationFailedError");

    setup.dedicated.start_again().await.unwrap();
    let resumed = setup
        .ctl(&["--json", "resume", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(resumed["state"], "BULK_COPY");
    assert!(resumed["error_message"].is_null());
    assert!(resumed["last_source_position"].as_i64().unwrap() >= checkpoint);
    let status = setup.wait_caught_up(id, tenant).await;
    assert_eq!(status["events_copied"], 40_000);
    let target = setup.dedicated_db().await;
    assert_same_events(&source, &target, tenant).await.unwrap();
    let audit = setup.audit_events(id).await;
    assert_eq!(
        audit,
        [
            "created",
            "bulk_copy_started",
            "failed",
            "resumed",
            "bulk_copy_completed"
        ]
    );
}
