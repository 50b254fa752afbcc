//! A crash of evshift in the middle of the bulk copy: after SIGKILL and a restart, the
//! migration goes on from its checkpoint by itself, and the target equals the source.

mod control_support;
mod migration_support;

use evshift_tests::{assert_same_events, seed_events, tenant_ids};
use migration_support::{count_tenant, MigrationSetup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_copy_resumes_from_the_checkpoint() {
    let mut setup = MigrationSetup::start().await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 60_000, 10).await.unwrap();
    // Slow enough that the kill lands in the middle of the bulk pass.
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
            s["events_copied"].as_i64().unwrap_or(0) >= 10_000
        })
        .await;
    setup.proxy.kill().unwrap();

    let control = setup.control_db().await;
    let row = control
        .query_one(
            "SELECT state, events_copied, last_source_position FROM tenant_migrations
              WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (state, copied_at_kill): (String, i64) = (row.get(0), row.get(1));
    assert_eq!(state, "BULK_COPY");
    assert!(
        copied_at_kill < 60_000,
        "the kill came too late: {copied_at_kill}"
    );
    let target = setup.dedicated_db().await;
    assert!(count_tenant(&target, tenant).await >= copied_at_kill);

    setup.proxy.restart().await.unwrap();
    let status = setup.wait_caught_up(id, tenant).await;
    assert_same_events(&source, &target, tenant).await.unwrap();
    // Counted once: the copy went on from the checkpoint, nothing was copied twice.
    assert_eq!(status["events_copied"], 60_000);
    assert_eq!(count_tenant(&target, tenant).await, 60_000);
    let row = control
        .query_one(
            "SELECT count(DISTINCT event_id), count(*) FILTER (WHERE target_position <= previous)
               FROM (SELECT event_id, target_position,
                            lag(target_position) OVER (ORDER BY source_position) AS previous
                       FROM migration_position_mappings WHERE migration_id = $1) m",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 60_000);
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "target positions follow source order"
    );
    let audit = setup.audit_events(id).await;
    assert_eq!(
        audit,
        ["created", "bulk_copy_started", "bulk_copy_completed"]
    );
    assert!(setup
        .proxy
        .log_contents()
        .contains("resuming migration after start-up"));
}
