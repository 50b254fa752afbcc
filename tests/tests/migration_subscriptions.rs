//! Positions and subscriptions (DESIGN §10) on real stores: `PositionMapper` translations
//! (exact, nearest, before the first event, out-of-order mappings, untranslatable positions),
//! and `evshift ctl subscriptions`: the dry-run plan, a real rewrite read back from
//! `projection_checkpoints` on both stores, its audit rows, no second translation, and the
//! refusals (unknown names, positions beyond the copy, before MIGRATED, a conflicting
//! checkpoint on the target).

mod control_support;
mod migration_support;

use evshift_control::{MigrationStatus, PositionMapper, TranslationKind};
use evshift_tests::{seed_events, tenant_ids};
use migration_support::MigrationSetup;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

/// The application's store id in its tokens (eventsource-py's default `pg:<database>`).
const APP_STORE_ID: &str = "pg:app";

/// Two tenants interleaved on `shared` (the default store); the first migrated to
/// `dedicated` with a manual cutover, caught up in DUAL_WRITE. Nothing writes, so its
/// mappings stay as they are.
async fn migrated_tenant() -> (MigrationSetup, i64, Uuid, Uuid) {
    let setup = MigrationSetup::start().await;
    let ids = tenant_ids(2);
    let (tenant, other) = (ids[0], ids[1]);
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant, other], 300, 5)
        .await
        .unwrap();
    let id = setup
        .migrate(tenant, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_caught_up(id, tenant).await;
    (setup, id, tenant, other)
}

async fn status_of(setup: &MigrationSetup, id: i64) -> MigrationStatus {
    serde_json::from_value(setup.status(id).await).expect("a migration status")
}

/// (source position, target position) of the migration's mappings, in source order.
async fn mappings(control: &Client, id: i64) -> Vec<(i64, i64)> {
    control
        .query(
            "SELECT source_position, target_position FROM migration_position_mappings
              WHERE migration_id = $1 ORDER BY source_position",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A source position of `tenant`'s events at `offset` in position order.
async fn position_of(source: &Client, tenant: Uuid, offset: i64) -> i64 {
    source
        .query_one(
            "SELECT global_position FROM events WHERE tenant_id = $1
              ORDER BY global_position OFFSET $2 LIMIT 1",
            &[&tenant, &offset],
        )
        .await
        .unwrap()
        .get(0)
}

/// Writes a checkpoint as eventsource-py does (its insert statement), on `store`.
async fn save_checkpoint(store: &Client, name: &str, token: Option<String>) {
    store
        .execute(
            "INSERT INTO projection_checkpoints (projection_name, last_event_id, last_event_type,
                    last_processed_at, events_processed, position_token, created_at, updated_at)
             VALUES ($1, gen_random_uuid(), 'OrderCreated', now(), 7, $2, now(), now())",
            &[&name, &token],
        )
        .await
        .unwrap();
}

fn token(position: i64) -> String {
    format!("{{\"s\":\"{APP_STORE_ID}\",\"k\":[{position}]}}")
}

/// `(position_token, events_processed)` of checkpoint `name` on a store, if it has one.
async fn checkpoint(store: &Client, name: &str) -> Option<(Option<String>, i64)> {
    store
        .query_opt(
            "SELECT position_token, events_processed FROM projection_checkpoints
              WHERE projection_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

/// The plan's rewrite of subscription `name`.
fn rewrite<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["rewrites"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rewrite of {name}: {plan}"))
}

/// `evshift ctl cutover ID`: the migration is MIGRATED, its tenant routed to the target.
async fn cut_over(setup: &MigrationSetup, id: i64) {
    let status = setup
        .ctl(&["--json", "cutover", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(status["state"], "MIGRATED", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapper_translates_exact_nearest_and_refuses_beyond_the_copy() {
    let (setup, id, tenant, other) = migrated_tenant().await;
    let status = status_of(&setup, id).await;
    let control_url = setup.control.url("postgres");
    let mapper = PositionMapper::connect(&control_url, &status)
        .await
        .unwrap();
    let mapped = mappings(&setup.control_db().await, id).await;
    assert_eq!(mapped.len(), 300);
    let source = setup.shared_db().await;

    // Exact: a mapped position.
    let (s, t) = mapped[100];
    let exact = mapper.translate(s).await.unwrap();
    assert_eq!(exact.target_position, t);
    assert_eq!(exact.kind, TranslationKind::Exact);
    assert_eq!(exact.possible_repeats, 0);

    // Nearest: the other tenant's event between two of this tenant's.
    let between: i64 = source
        .query_one(
            "SELECT min(global_position) FROM events WHERE tenant_id = $1
              AND global_position > $2",
            &[&other, &s],
        )
        .await
        .unwrap()
        .get(0);
    assert!(between < mapped[101].0, "the seed interleaves the tenants");
    let nearest = mapper.translate(between).await.unwrap();
    assert_eq!(nearest.kind, TranslationKind::Nearest);
    assert_eq!(nearest.target_position, t);
    assert_eq!(nearest.mapped_source_position, Some(s));

    // Before the tenant's first event: just below its first target position.
    let first = mapper.translate(0).await.unwrap();
    assert_eq!(first.kind, TranslationKind::BeforeFirst);
    assert_eq!(first.target_position, mapped[0].1 - 1);

    // Beyond the checkpoint while the migration is not MIGRATED.
    let last = position_of(&source, tenant, 299).await;
    assert_eq!(status.last_source_position, last);
    let error = mapper.translate(last + 1_000).await.unwrap_err();
    assert_eq!(error.kind(), "PositionMappingError");
    assert!(
        error.to_string().contains("beyond the copied range"),
        "{error}"
    );
    let error = mapper.translate(-1).await.unwrap_err();
    assert_eq!(error.kind(), "PositionMappingError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_mappings_never_skip_an_event() {
    let (setup, id, _, _) = migrated_tenant().await;
    let control = setup.control_db().await;
    // Mappings as a late tail leaves them: source 20 was copied after 30 and landed above it.
    let fake = id + 1_000;
    control
        .execute(
            "INSERT INTO migration_position_mappings
                    (migration_id, source_position, target_position, event_id)
             SELECT $1, s, t, gen_random_uuid()
               FROM unnest('{10,20,30,40}'::bigint[], '{100,105,103,106}'::bigint[]) AS m(s, t)",
            &[&fake],
        )
        .await
        .unwrap();
    let mut status = status_of(&setup, id).await;
    status.id = fake;
    status.last_source_position = 40;
    let mapper = PositionMapper::connect(&setup.control.url("postgres"), &status)
        .await
        .unwrap();
    // At 20, source 30 (target 103) is not processed yet: resume below it; 20 (105) repeats.
    let at_20 = mapper.translate(20).await.unwrap();
    assert_eq!(at_20.target_position, 102);
    assert_eq!(at_20.kind, TranslationKind::Adjusted);
    assert_eq!(at_20.possible_repeats, 1);
    let at_30 = mapper.translate(30).await.unwrap();
    assert_eq!(at_30.target_position, 105);
    assert_eq!(at_30.possible_repeats, 0);
    let at_10 = mapper.translate(10).await.unwrap();
    assert_eq!(
        (at_10.target_position, at_10.kind),
        (100, TranslationKind::Exact)
    );

    status.id = fake + 1;
    let empty = PositionMapper::connect(&setup.control.url("postgres"), &status)
        .await
        .unwrap();
    let error = empty.translate(10).await.unwrap_err();
    assert_eq!(error.kind(), "PositionMappingError");
    assert!(
        error.to_string().contains("no position mappings"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_dry_run_then_rewrite_on_both_stores() {
    let (setup, id, tenant, other) = migrated_tenant().await;
    let mapped = mappings(&setup.control_db().await, id).await;
    let (shared, dedicated) = (setup.shared_db().await, setup.dedicated_db().await);
    let id_text = id.to_string();

    // "orders" at one of the tenant's positions, "invoices" at the other tenant's position
    // just after it, "legacy" without a token.
    let (exact_source, exact_target) = mapped[50];
    let between: i64 = shared
        .query_one(
            "SELECT min(global_position) FROM events WHERE tenant_id = $1
              AND global_position > $2",
            &[&other, &exact_source],
        )
        .await
        .unwrap()
        .get(0);
    save_checkpoint(&shared, "orders", Some(token(exact_source))).await;
    save_checkpoint(&shared, "invoices", Some(token(between))).await;
    save_checkpoint(&shared, "legacy", None).await;

    // The source is the default store: its checkpoints are every keyless session's.
    setup
        .ctl(&["subscriptions", &id_text, "--dry-run"])
        .await
        .refused("InvalidRequestError");
    setup
        .ctl(&[
            "subscriptions",
            &id_text,
            "--names",
            "orders,nope",
            "--dry-run",
        ])
        .await
        .refused("SubscriptionNotFoundError");

    let plan = setup
        .ctl(&[
            "--json",
            "subscriptions",
            &id_text,
            "--names",
            "orders,invoices,legacy",
            "--dry-run",
        ])
        .await
        .ok_json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["searched_stores"], serde_json::json!(["shared"]));
    let orders = rewrite(&plan, "orders");
    assert_eq!(orders["store"], "shared");
    assert_eq!(
        orders["write_to"],
        serde_json::json!(["shared", "dedicated"])
    );
    assert_eq!(orders["old_token"], token(exact_source));
    assert_eq!(orders["new_token"], token(exact_target));
    assert_eq!(orders["translation"]["kind"], "exact");
    assert_eq!(orders["translation"]["possible_repeats"], 0);
    assert_eq!(orders["status"], "planned");
    let invoices = rewrite(&plan, "invoices");
    assert_eq!(invoices["translation"]["kind"], "nearest");
    assert_eq!(invoices["new_token"], token(exact_target));
    assert_eq!(plan["skipped"][0]["name"], "legacy");
    // The table form shows the plan too.
    let table = setup
        .ctl(&["subscriptions", &id_text, "--names", "orders", "--dry-run"])
        .await;
    assert!(table.ok().contains(&token(exact_target)), "{table:?}");
    // A dry run writes nothing.
    assert_eq!(
        checkpoint(&shared, "orders").await,
        Some((Some(token(exact_source)), 7))
    );
    assert_eq!(checkpoint(&dedicated, "orders").await, None);

    // Before the cutover the subscribers still read the source.
    setup
        .ctl(&["subscriptions", &id_text, "--names", "orders"])
        .await
        .refused("InvalidStateTransitionError");

    // A position past the copy cannot be translated before MIGRATED.
    let ahead: i64 = shared
        .query_one("SELECT max(global_position) + 10 FROM events", &[])
        .await
        .unwrap()
        .get(0);
    save_checkpoint(&shared, "ahead", Some(token(ahead))).await;
    setup
        .ctl(&["subscriptions", &id_text, "--names", "ahead", "--dry-run"])
        .await
        .refused("PositionMappingError");

    cut_over(&setup, id).await;
    let done = setup
        .ctl(&[
            "--json",
            "subscriptions",
            &tenant.to_string(),
            "--names",
            "orders,invoices",
        ])
        .await
        .ok_json();
    assert_eq!(done["dry_run"], false);
    assert_eq!(rewrite(&done, "orders")["status"], "rewritten");
    assert_eq!(rewrite(&done, "invoices")["status"], "rewritten");
    for store in [&shared, &dedicated] {
        for name in ["orders", "invoices"] {
            assert_eq!(
                checkpoint(store, name).await,
                Some((Some(token(exact_target)), 7)),
                "{name}: the rewritten row, the rest of it kept"
            );
        }
    }
    let audit = setup.audit_events(id).await;
    let rewrites = audit
        .iter()
        .filter(|e| *e == "subscription_rewritten")
        .count();
    assert_eq!(rewrites, 2, "{audit:?}");

    // A second run does not translate target positions again.
    let again = setup
        .ctl(&["--json", "subscriptions", &id_text, "--names", "orders"])
        .await
        .ok_json();
    assert_eq!(again["rewrites"], serde_json::json!([]));
    assert_eq!(again["skipped"][0]["name"], "orders");
    assert_eq!(
        checkpoint(&shared, "orders").await,
        Some((Some(token(exact_target)), 7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_the_same_name_on_the_target_is_a_conflict() {
    let (setup, id, _, _) = migrated_tenant().await;
    let mapped = mappings(&setup.control_db().await, id).await;
    let (shared, dedicated) = (setup.shared_db().await, setup.dedicated_db().await);
    save_checkpoint(&shared, "orders", Some(token(mapped[3].0))).await;
    save_checkpoint(&dedicated, "orders", Some(token(1))).await;
    let id_text = id.to_string();
    let plan = setup
        .ctl(&[
            "--json",
            "subscriptions",
            &id_text,
            "--names",
            "orders",
            "--dry-run",
        ])
        .await
        .ok_json();
    let conflict = rewrite(&plan, "orders")["conflict"]
        .as_str()
        .expect("a conflict")
        .to_string();
    assert!(conflict.contains("dedicated"), "{conflict}");
    cut_over(&setup, id).await;
    setup
        .ctl(&["subscriptions", &id_text, "--names", "orders"])
        .await
        .refused("InvalidRequestError");
    assert_eq!(
        checkpoint(&dedicated, "orders").await,
        Some((Some(token(1)), 7)),
        "the target's checkpoint is untouched"
    );
    assert_eq!(
        checkpoint(&shared, "orders").await,
        Some((Some(token(mapped[3].0)), 7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_leaving_a_dedicated_store_takes_its_checkpoints_to_the_target() {
    let setup = MigrationSetup::start().await;
    let tenant = tenant_ids(1)[0];
    setup
        .ctl(&["assign", &tenant.to_string(), "dedicated"])
        .await
        .ok();
    let (shared, dedicated) = (setup.shared_db().await, setup.dedicated_db().await);
    seed_events(&dedicated, &[tenant], 200, 5).await.unwrap();
    let id = setup.migrate(tenant, "shared", &["--manual-cutover"]).await;
    setup
        .wait_until(id, "the tail to catch up", |s| {
            s["state"] == "DUAL_WRITE" && s["lag_events"] == 0 && s["events_copied"] == 200
        })
        .await;
    let (source, target) = mappings(&setup.control_db().await, id).await[42];
    // The tenant's sessions wrote "orders" on its store; "global" is a keyless session's.
    save_checkpoint(&dedicated, "orders", Some(token(source))).await;
    save_checkpoint(&shared, "global", Some(token(5))).await;
    let id_text = id.to_string();

    // Without names: every checkpoint on the source, which is not the default store here.
    let plan = setup
        .ctl(&["--json", "subscriptions", &id_text, "--dry-run"])
        .await
        .ok_json();
    assert_eq!(plan["searched_stores"], serde_json::json!(["dedicated"]));
    assert_eq!(plan["rewrites"].as_array().unwrap().len(), 1, "{plan}");
    let orders = rewrite(&plan, "orders");
    assert_eq!(
        orders["write_to"],
        serde_json::json!(["dedicated", "shared"])
    );
    assert_eq!(orders["new_token"], token(target));

    cut_over(&setup, id).await;
    setup.ctl(&["subscriptions", &id_text]).await.ok();
    for store in [&dedicated, &shared] {
        assert_eq!(
            checkpoint(store, "orders").await,
            Some((Some(token(target)), 7))
        );
    }
    assert_eq!(
        checkpoint(&shared, "global").await,
        Some((Some(token(5)), 7)),
        "a checkpoint of the default store that was not asked for is left alone"
    );
}
