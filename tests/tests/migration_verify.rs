//! Verification of a migration's target (DESIGN §9) on real stores: all three levels pass on
//! an exact copy; after a row is changed, one deleted and one added on the target, every level
//! fails and `full` names the three events; `evshift ctl verify` prints them and exits 1; the
//! reports are in the audit log. The cutover's subset check (`verify_since`) through the
//! library.

mod control_support;
mod migration_support;

use evshift_control::{verify_since, MigrationStatus, StoreDirectory};
use evshift_tests::{seed_events, tenant_ids};
use migration_support::MigrationSetup;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

const EVENTS: i64 = 2_000;
const PER_STREAM: i64 = 10;

/// `ctl --json verify ID [LEVEL]`: the report and the exit status.
async fn verify(setup: &MigrationSetup, id: i64, level: Option<&str>) -> (Value, Option<i32>) {
    let id = id.to_string();
    let mut args = vec!["--json", "verify", &id];
    args.extend(level);
    let output = setup.ctl(&args).await;
    let reply: Value = serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|e| panic!("a JSON reply ({e}): {output:?}"));
    assert!(reply.get("ok").is_some(), "a report, not an error: {reply}");
    (reply["ok"].clone(), output.code)
}

/// A tenant with events on `shared`, another tenant beside it, migrated to `dedicated` and
/// caught up in DUAL_WRITE, then paused so nothing copies behind the test's back.
async fn migrated_copy() -> (MigrationSetup, i64, Uuid) {
    let setup = MigrationSetup::start().await;
    let ids = tenant_ids(2);
    let (tenant, other) = (ids[0], ids[1]);
    let source = setup.shared_db().await;
    seed_events(
        &source,
        &[tenant, other],
        EVENTS as usize,
        PER_STREAM as usize,
    )
    .await
    .unwrap();
    let id = setup
        .migrate(tenant, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_caught_up(id, tenant).await;
    let paused = setup
        .ctl(&["--json", "pause", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(paused["state"], "DUAL_WRITE", "{paused}");
    (setup, id, tenant)
}

/// The tenant's event at `offset` in position order, and its source position.
async fn event_at(client: &Client, tenant: Uuid, offset: i64) -> (Uuid, i64) {
    let row = client
        .query_one(
            "SELECT event_id, global_position FROM events WHERE tenant_id = $1
              ORDER BY global_position OFFSET $2 LIMIT 1",
            &[&tenant, &offset],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Changes one event's payload, deletes another and adds an extra one, all on `target`.
/// Returns (changed, deleted, extra).
async fn tamper(target: &Client, tenant: Uuid) -> (Uuid, Uuid, Uuid) {
    let (changed, _) = event_at(target, tenant, 10).await;
    let (deleted, _) = event_at(target, tenant, 20).await;
    target
        .execute(
            "UPDATE events SET payload = payload || '{\"tampered\": true}' WHERE event_id = $1",
            &[&changed],
        )
        .await
        .unwrap();
    target
        .execute("DELETE FROM events WHERE event_id = $1", &[&deleted])
        .await
        .unwrap();
    let extra: Uuid = target
        .query_one(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, tenant_id,
                                 version, timestamp, payload)
             VALUES (gen_random_uuid(), gen_random_uuid(), 'Order', 'OrderCreated', $1, 1,
                     now(), '{}')
             RETURNING event_id",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    (changed, deleted, extra)
}

/// The event ids a report names with `kind`.
fn named(report: &Value, kind: &str) -> Vec<String> {
    report["mismatches"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|m| m["kind"] == kind)
        .map(|m| m["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_passes_on_an_exact_copy_and_fails_on_a_tampered_one() {
    let (setup, id, tenant) = migrated_copy().await;

    for level in ["count", "hash", "full"] {
        let (report, code) = verify(&setup, id, Some(level)).await;
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(report["level"], level);
        assert_eq!(report["migration_id"], id);
        for side in ["source", "target"] {
            assert_eq!(report[side]["events"], EVENTS, "{report}");
            assert_eq!(report[side]["streams"], EVENTS / PER_STREAM, "{report}");
        }
        assert_eq!(report["mismatches"], serde_json::json!([]));
    }
    // Without a level: the migration's own option, hash by default.
    let (report, _) = verify(&setup, id, None).await;
    assert_eq!(report["level"], "hash");
    assert_eq!(report["source"]["digest"], report["target"]["digest"]);
    assert_eq!(report["source"]["digest"]["events"], EVENTS);

    let target = setup.dedicated_db().await;
    let (changed, deleted, extra) = tamper(&target, tenant).await;

    let (count, code) = verify(&setup, id, Some("count")).await;
    assert_eq!(code, Some(1));
    assert_eq!(count["passed"], false);
    assert_eq!(count["totals"]["streams_extra"], 1, "{count}");
    assert_eq!(count["totals"]["stream_counts"], 1, "{count}");
    assert_eq!(count["target"]["events"], EVENTS, "one deleted, one added");

    let (hash, code) = verify(&setup, id, Some("hash")).await;
    assert_eq!(code, Some(1));
    assert_eq!(hash["totals"]["digests"], 1, "{hash}");
    assert_ne!(hash["source"]["digest"], hash["target"]["digest"]);

    let (full, code) = verify(&setup, id, Some("full")).await;
    assert_eq!(code, Some(1));
    assert_eq!(full["passed"], false);
    assert_eq!(named(&full, "event_missing"), [deleted.to_string()]);
    assert_eq!(named(&full, "event_extra"), [extra.to_string()]);
    assert_eq!(named(&full, "event_differs"), [changed.to_string()]);
    let differs = full["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "event_differs")
        .unwrap();
    assert_eq!(differs["columns"], serde_json::json!(["payload"]));
    assert_eq!(full["truncated"], false);

    // The table form names all three and exits 1 with one line on stderr.
    let output = setup.ctl(&["verify", &id.to_string(), "full"]).await;
    output.refused("ConsistencyError");
    for event in [changed, deleted, extra] {
        assert!(output.stdout.contains(&event.to_string()), "{output:?}");
    }

    let audit = setup
        .ctl(&["--json", "audit", &id.to_string()])
        .await
        .ok_json();
    let reports: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "verification")
        .collect();
    assert_eq!(reports.len(), 8, "one audit row per verification");
    let last = &reports.last().unwrap()["details"];
    assert_eq!(last["level"], "full");
    assert_eq!(last["passed"], false);
    assert_eq!(named(last, "event_missing"), [deleted.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subset_digest_covers_the_rows_after_a_position() {
    let (setup, id, tenant) = migrated_copy().await;
    let status: MigrationStatus = serde_json::from_value(setup.status(id).await).unwrap();
    let stores = StoreDirectory::new(
        [
            ("shared".to_string(), setup.shared.url("postgres")),
            ("dedicated".to_string(), setup.dedicated.url("postgres")),
        ],
        "shared",
    )
    .unwrap();
    let source = setup.shared_db().await;
    let (_, after) = event_at(&source, tenant, 4).await;

    let report = verify_since(&stores, &status, after).await.unwrap();
    assert!(report.passed, "{}", report.summary());
    assert_eq!(report.since_source_position, Some(after));
    let digest = report.source.digest.expect("a source digest");
    assert_eq!(
        digest.events,
        EVENTS - 5,
        "the tenant's rows above the position"
    );
    assert_eq!(report.target.digest, Some(digest));
    assert_eq!(
        report.source.events, EVENTS,
        "counts cover the whole tenant"
    );
    assert!(report.clone().ensure_passed().is_ok());

    let target = setup.dedicated_db().await;
    tamper(&target, tenant).await;
    let report = verify_since(&stores, &status, after).await.unwrap();
    assert!(!report.passed);
    assert_eq!(report.totals.digests, 1);
    assert_eq!(
        report.target.digest.unwrap().events,
        EVENTS - 6,
        "the deleted row is not on the target"
    );
    let error = report.ensure_passed().unwrap_err();
    assert_eq!(error.kind(), "ConsistencyError");

    // Above every row of the tenant the subset is empty; the counts still see the damage.
    let report = verify_since(&stores, &status, i64::MAX).await.unwrap();
    assert_eq!(report.source.digest.unwrap().events, 0);
    assert_eq!(report.totals.digests, 0);
    assert!(!report.passed, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_over_tenant_verifies_and_a_second_cutover_is_refused() {
    let setup = MigrationSetup::start().await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 500, 5).await.unwrap();
    let id = setup
        .migrate(tenant, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_caught_up(id, tenant).await;
    let output = setup.ctl(&["cutover", &tenant.to_string()]).await;
    assert!(output.ok().contains("MIGRATED"), "{output:?}");
    let (report, code) = verify(&setup, id, Some("full")).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["target"]["events"], 500);
    setup
        .ctl(&["cutover", &id.to_string()])
        .await
        .refused("InvalidStateTransitionError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_verify_commands_are_refused() {
    let setup = MigrationSetup::start().await;
    setup
        .ctl(&["verify", "4242"])
        .await
        .refused("MigrationNotFoundError");
    setup
        .ctl(&["verify", &Uuid::new_v4().to_string(), "count"])
        .await
        .refused("MigrationNotFoundError");
    let output = setup.ctl(&["verify", "1", "md5"]).await;
    assert_eq!(output.code, Some(2), "a usage error: {output:?}");
    setup
        .ctl(&["cutover", "4242"])
        .await
        .refused("MigrationNotFoundError");
}
