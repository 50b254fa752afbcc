//! The bulk copy and the tail: one tenant's 200k events (and its snapshots) copied out of a
//! store that holds other tenants too, while that tenant and others keep appending through
//! evshift; two tenants migrating at once.

mod control_support;
mod migration_support;

use evshift_tests::{assert_same_events, count_events, seed_events, tenant_ids};
use migration_support::{count_tenant, Appenders, MigrationSetup};
use tokio_postgres::Client;
use uuid::Uuid;

/// Saves a snapshot of every `stride`-th aggregate of `tenant` in `client`'s store.
async fn snapshot_some_aggregates(client: &Client, tenant: Uuid, stride: i64) -> i64 {
    client
        .execute(
            "INSERT INTO snapshots (aggregate_id, aggregate_type, version, state)
             SELECT aggregate_id, 'Order', max(version), jsonb_build_object('v', max(version))
               FROM events WHERE tenant_id = $1
              GROUP BY aggregate_id
             HAVING abs(hashtext(aggregate_id::text)::bigint) % $2 = 0",
            &[&tenant, &stride],
        )
        .await
        .expect("save snapshots") as i64
}

/// The snapshots in `client`'s store, as comparable text, ordered.
async fn snapshots(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT aggregate_id::text || ' ' || aggregate_type || ' ' || version || ' '
                    || schema_version || ' ' || state::text || ' ' || created_at::text
               FROM snapshots ORDER BY aggregate_id",
            &[],
        )
        .await
        .expect("read snapshots")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_one_tenant_while_it_and_others_keep_appending() {
    let setup = MigrationSetup::start().await;
    let ids = tenant_ids(4);
    let (moving, neighbour, other) = (ids[0], ids[1], ids[2]);
    let source = setup.shared_db().await;
    seed_events(&source, &[moving], 200_000, 10).await.unwrap();
    seed_events(&source, &[neighbour, other], 10_000, 10)
        .await
        .unwrap();
    let moving_snapshots = snapshot_some_aggregates(&source, moving, 7).await;
    snapshot_some_aggregates(&source, neighbour, 7).await;
    assert!(moving_snapshots > 0);

    let appenders = Appenders::start(&setup, &[moving, moving, neighbour, ids[3]]).await;
    let id = setup
        .migrate(moving, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_for_state(id, "DUAL_WRITE").await;
    // The tail keeps following the source for a while after the bulk pass.
    let during_tail = appenders.appended();
    setup
        .wait_until(id, "appends copied by the tail", |s| {
            s["events_copied"].as_i64().unwrap_or(0) > 200_000 + during_tail as i64 / 4
        })
        .await;
    let appended = appenders.stop().await;
    assert!(appended > 0);
    let status = setup.wait_caught_up(id, moving).await;

    let target = setup.dedicated_db().await;
    assert_same_events(&source, &target, moving).await.unwrap();
    let copied = count_tenant(&target, moving).await;
    assert_eq!(status["events_copied"], copied);
    assert_eq!(
        count_events(&target, None).await.unwrap(),
        copied,
        "only the tenant"
    );
    assert!(copied > 200_000);
    let with_txid: i64 = target
        .query_one("SELECT count(*) FROM events WHERE txid IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(with_txid, 0, "txid is never copied");
    let source_snapshots: Vec<String> = source
        .query(
            "SELECT s.aggregate_id::text || ' ' || s.aggregate_type || ' ' || s.version || ' '
                    || s.schema_version || ' ' || s.state::text || ' ' || s.created_at::text
               FROM snapshots s
              WHERE EXISTS (SELECT 1 FROM events e WHERE e.aggregate_id = s.aggregate_id
                               AND e.tenant_id = $1)
              ORDER BY s.aggregate_id",
            &[&moving],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(source_snapshots.len() as i64, moving_snapshots);
    assert_eq!(snapshots(&target).await, source_snapshots);

    // One mapping per copied event; target positions in source order for the bulk pass (after
    // it, dual-writes land in commit order, which may differ).
    let control = setup.control_db().await;
    let bulk_end: i64 = control
        .query_one(
            "SELECT (details->>'last_source_position')::bigint FROM migration_audit_log
              WHERE migration_id = $1 AND event_type = 'bulk_copy_completed'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let row = control
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE target_position <= previous
                                                 AND source_position <= $2)
               FROM (SELECT source_position, target_position,
                            lag(target_position) OVER (ORDER BY source_position) AS previous
                       FROM migration_position_mappings WHERE migration_id = $1) m",
            &[&id, &bulk_end],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), copied);
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "target positions of the bulk pass follow source order"
    );
    let audit = setup.audit_events(id).await;
    assert_eq!(
        audit,
        ["created", "bulk_copy_started", "bulk_copy_completed"]
    );
    // Routes stay on the source until the cutover.
    let route = setup
        .ctl(&["--json", "routes", &moving.to_string()])
        .await
        .ok_json();
    assert_eq!(route["store"], "shared");
    assert_eq!(route["migration_state"], "DUAL_WRITE");
    assert_eq!(route["target_store"], "dedicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_migrate_at_the_same_time() {
    let setup = MigrationSetup::start().await;
    let ids = tenant_ids(3);
    let source = setup.shared_db().await;
    seed_events(&source, &ids, 30_000, 10).await.unwrap();
    let first = setup
        .migrate(
            ids[0],
            "dedicated",
            &["--manual-cutover", "--batch-size", "500"],
        )
        .await;
    let second = setup
        .migrate(ids[1], "dedicated", &["--manual-cutover"])
        .await;
    // `watch` without a terminal prints a line per state and ends at --until.
    let watched = setup
        .ctl(&[
            "watch",
            &first.to_string(),
            "--until",
            "DUAL_WRITE",
            "--interval-ms",
            "100",
        ])
        .await;
    assert!(watched.ok().contains("DUAL_WRITE"), "{watched:?}");
    setup.wait_caught_up(first, ids[0]).await;
    setup.wait_caught_up(second, ids[1]).await;
    let target = setup.dedicated_db().await;
    for tenant in &ids[..2] {
        assert_same_events(&source, &target, *tenant).await.unwrap();
    }
    assert_eq!(count_events(&target, None).await.unwrap(), 60_000);
    assert_eq!(count_tenant(&target, ids[2]).await, 0);
}
