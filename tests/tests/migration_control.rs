//! Operator control of a migration: pause and resume, abort (with rollback) in PENDING,
//! BULK_COPY and after the bulk pass, one active migration per tenant, and the audit log that
//! the control store keeps immutable.

mod control_support;
mod migration_support;

use std::time::Duration;

use evshift_tests::{count_events, seed_events, tenant_ids};
use migration_support::{count_tenant, store_digest, MigrationSetup};
use tokio_postgres::Client;
use uuid::Uuid;

/// The tenant's snapshots in a store.
async fn tenant_snapshots(client: &Client, tenant: Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM snapshots s WHERE EXISTS (SELECT 1 FROM events e
                WHERE e.aggregate_id = s.aggregate_id AND e.tenant_id = $1)",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

/// Asserts what an abort must leave behind.
async fn assert_rolled_back(setup: &MigrationSetup, id: i64, tenant: Uuid, source_digest: &str) {
    let status = setup.status(id).await;
    assert_eq!(status["state"], "ROLLED_BACK", "{status}");
    let target = setup.dedicated_db().await;
    assert_eq!(count_tenant(&target, tenant).await, 0);
    let source = setup.shared_db().await;
    assert_eq!(
        store_digest(&source).await,
        source_digest,
        "source untouched"
    );
    let mappings: i64 = setup
        .control_db()
        .await
        .query_one(
            "SELECT count(*) FROM migration_position_mappings WHERE migration_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mappings, 0);
    let route = setup
        .ctl(&["--json", "routes", &tenant.to_string()])
        .await
        .ok_json();
    assert_eq!(route["store"], "shared");
    assert_eq!(route["migration_state"], "ROLLED_BACK");
    let audit = setup.audit_events(id).await;
    assert_eq!(&audit[audit.len() - 2..], ["abort_started", "rolled_back"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_the_copy_and_resume_continues_it() {
    let setup = MigrationSetup::start().await;
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
                "8000",
            ],
        )
        .await;
    setup
        .wait_until(id, "the copy to start", |s| {
            s["events_copied"].as_i64().unwrap_or(0) >= 2_000
        })
        .await;
    let paused = setup
        .ctl(&["--json", "pause", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["state"], "BULK_COPY");
    // pause returns once the copier stopped: nothing moves from here on.
    let target = setup.dedicated_db().await;
    let (copied, rows) = (
        paused["events_copied"].clone(),
        count_tenant(&target, tenant).await,
    );
    assert_eq!(copied, rows, "the checkpoint covers every committed batch");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(setup.status(id).await["events_copied"], copied);
    assert_eq!(count_tenant(&target, tenant).await, rows);
    setup
        .ctl(&["pause", &id.to_string()])
        .await
        .refused("InvalidStateTransitionError");

    let resumed = setup
        .ctl(&["--json", "resume", &tenant.to_string()])
        .await
        .ok_json();
    assert_eq!(resumed["paused"], false);
    setup.wait_caught_up(id, tenant).await;
    evshift_tests::assert_same_events(&source, &target, tenant)
        .await
        .unwrap();
    setup
        .ctl(&["resume", &id.to_string()])
        .await
        .refused("InvalidStateTransitionError");
    assert_eq!(
        setup.audit_events(id).await,
        [
            "created",
            "bulk_copy_started",
            "paused",
            "resumed",
            "bulk_copy_completed"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_in_every_phase_rolls_back_and_leaves_the_source_untouched() {
    let setup = MigrationSetup::start().await;
    let ids = tenant_ids(3);
    let (pending, copying, tailing) = (ids[0], ids[1], ids[2]);
    let source = setup.shared_db().await;
    seed_events(&source, &ids, 20_000, 10).await.unwrap();
    source
        .batch_execute(
            "INSERT INTO snapshots (aggregate_id, aggregate_type, version, state)
             SELECT DISTINCT aggregate_id, 'Order', 10, '{}'::jsonb FROM events",
        )
        .await
        .unwrap();
    let digest = store_digest(&source).await;

    // PENDING: another coordinator (this test) holds the tenant's lock, so the migration
    // cannot start copying; pause it there, let go of the lock, abort.
    let control = setup.control_db().await;
    control
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('evshift tenant ' || $1::uuid::text, 0))",
            &[&pending],
        )
        .await
        .unwrap();
    let first = setup
        .migrate(pending, "dedicated", &["--manual-cutover"])
        .await;
    let status = setup
        .ctl(&["--json", "pause", &first.to_string()])
        .await
        .ok_json();
    assert_eq!(status["state"], "PENDING");
    control
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('evshift tenant ' || $1::uuid::text, 0))",
            &[&pending],
        )
        .await
        .unwrap();
    let aborted = setup
        .ctl(&["--json", "abort", &first.to_string()])
        .await
        .ok_json();
    assert_eq!(aborted["state"], "ROLLED_BACK");
    assert_rolled_back(&setup, first, pending, &digest).await;
    assert_eq!(
        setup.audit_events(first).await,
        ["created", "paused", "abort_started", "rolled_back"]
    );

    // BULK_COPY, with rows and snapshots already on the target.
    let second = setup
        .migrate(
            copying,
            "dedicated",
            &[
                "--manual-cutover",
                "--batch-size",
                "500",
                "--rate-limit",
                "4000",
            ],
        )
        .await;
    setup
        .wait_until(second, "the copy to start", |s| {
            s["state"] == "BULK_COPY" && s["events_copied"].as_i64().unwrap_or(0) >= 1_000
        })
        .await;
    setup.ctl(&["abort", &copying.to_string()]).await.ok();
    assert_rolled_back(&setup, second, copying, &digest).await;
    assert_eq!(
        setup.audit_events(second).await,
        [
            "created",
            "bulk_copy_started",
            "abort_started",
            "rolled_back"
        ]
    );

    // After the bulk pass (DUAL_WRITE, tail running, snapshots copied).
    let third = setup
        .migrate(tailing, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_caught_up(third, tailing).await;
    let target = setup.dedicated_db().await;
    assert_eq!(tenant_snapshots(&target, tailing).await, 2_000);
    // One active migration per tenant.
    setup
        .ctl(&["migrate", &tailing.to_string(), "--to", "dedicated"])
        .await
        .refused("TenantMigratingError");
    setup.ctl(&["abort", &third.to_string()]).await.ok();
    assert_rolled_back(&setup, third, tailing, &digest).await;
    assert_eq!(tenant_snapshots(&target, tailing).await, 0);
    assert_eq!(count_events(&target, None).await.unwrap(), 0);
    let snapshots_left: i64 = target
        .query_one("SELECT count(*) FROM snapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshots_left, 0);
    setup
        .ctl(&["abort", &third.to_string()])
        .await
        .refused("InvalidStateTransitionError");
    setup
        .ctl(&["watch", &third.to_string()])
        .await
        .refused("MigrationRolledBackError");
    assert_eq!(
        setup.audit_events(third).await,
        [
            "created",
            "bulk_copy_started",
            "bulk_copy_completed",
            "abort_started",
            "rolled_back"
        ]
    );

    // The audit log cannot be changed, not even by the control store's superuser.
    for statement in [
        "UPDATE migration_audit_log SET operator = 'someone else'",
        "DELETE FROM migration_audit_log",
        "TRUNCATE migration_audit_log",
    ] {
        let error = control.batch_execute(statement).await.unwrap_err();
        assert!(
            error.to_string().contains("append-only")
                || format!("{error:?}").contains("append-only"),
            "{statement}: {error:?}"
        );
    }
    let entries: i64 = control
        .query_one("SELECT count(*) FROM migration_audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(entries, 4 + 4 + 5);

    // A rolled-back tenant may be migrated again.
    let again = setup
        .migrate(tailing, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_caught_up(again, tailing).await;
}
