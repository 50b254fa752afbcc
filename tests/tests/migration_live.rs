//! Live migration under real concurrent load through evshift (DESIGN §5 I1-I7, §7, §8):
//! dual-write, the per-tenant hold at cutover, the cutover timeout, a target outage during
//! DUAL_WRITE, abort during a held cutover, and only the moving tenant held (I7).

mod control_support;
mod metrics_support;
mod migration_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evshift_tests::{
    append_event, seed_events, tenant_event_rows, tenant_ids, AppendOutcome, EventRow,
};
use migration_support::{count_tenant, MigrationSetup, TEST_MIGRATION};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use uuid::Uuid;

/// `[migration]` for these suites: cut over automatically at a small lag (under constant
/// load the lag is rarely exactly 0), a short hold bound.
fn live_migration(timeout_ms: u64) -> String {
    format!("{TEST_MIGRATION}\nmax_lag_events = 200\ncutover_timeout_ms = {timeout_ms}\n")
}

/// Clients appending (eventsource-style transactions) and reading through evshift, recording
/// every acknowledged event and every error, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<HashMap<Uuid, Vec<Uuid>>>>,
    errors: Arc<Mutex<Vec<String>>>,
    appended: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn new() -> Load {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            acknowledged: Arc::default(),
            errors: Arc::default(),
            appended: Arc::default(),
            reads: Arc::default(),
            tasks: Vec::new(),
        }
    }

    /// One appender per entry of `tenants`, each on its own stream.
    async fn append(&mut self, setup: &MigrationSetup, tenants: &[Uuid]) {
        for tenant in tenants {
            let mut client = setup.through_proxy().await;
            let tenant = *tenant;
            let (stop, acknowledged, errors, appended) = (
                Arc::clone(&self.stop),
                Arc::clone(&self.acknowledged),
                Arc::clone(&self.errors),
                Arc::clone(&self.appended),
            );
            self.tasks.push(tokio::spawn(async move {
                let aggregate = Uuid::new_v4();
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    match append_event(&mut client, tenant, aggregate, version).await {
                        Ok(AppendOutcome::Appended {
                            event_id,
                            version: v,
                            ..
                        }) => {
                            version = v;
                            acknowledged
                                .lock()
                                .unwrap()
                                .entry(tenant)
                                .or_default()
                                .push(event_id);
                            appended.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            errors.lock().unwrap().push(format!("append: {other:?}"));
                            return;
                        }
                    }
                }
            }));
        }
    }

    /// A reader of `tenant`: stream reads of its newest appended streams and read_all pages
    /// with the horizon, as eventsource-py sends them.
    async fn read(&mut self, setup: &MigrationSetup, tenant: Uuid) {
        let client = setup.through_proxy().await;
        let (stop, acknowledged, errors, reads) = (
            Arc::clone(&self.stop),
            Arc::clone(&self.acknowledged),
            Arc::clone(&self.errors),
            Arc::clone(&self.reads),
        );
        self.tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = read_once(&client, tenant, &acknowledged).await {
                    errors.lock().unwrap().push(format!("read: {e}"));
                    return;
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Stops every client; returns the acknowledged events per tenant.
    async fn stop(self) -> (HashMap<Uuid, Vec<Uuid>>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load task panicked");
        }
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (acknowledged, errors)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// One stream read (the stream of the last acknowledged event: it must be there) and one
/// read_all page.
async fn read_once(
    client: &Client,
    tenant: Uuid,
    acknowledged: &Mutex<HashMap<Uuid, Vec<Uuid>>>,
) -> Result<(), tokio_postgres::Error> {
    let last = acknowledged
        .lock()
        .unwrap()
        .get(&tenant)
        .and_then(|ids| ids.last().copied());
    if let Some(event_id) = last {
        let found = client
            .query(
                "SELECT 1 FROM events WHERE event_id = $1 LIMIT 1",
                &[&event_id],
            )
            .await?;
        assert_eq!(
            found.len(),
            1,
            "an acknowledged event {event_id} is not readable"
        );
    }
    let horizon: String = client
        .query_one("SELECT eventsource_feed_horizon()", &[])
        .await?
        .get(0);
    client
        .query(
            "SELECT global_position, event_id FROM events
              WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND tenant_id = $2
              ORDER BY global_position DESC LIMIT 50",
            &[&horizon, &tenant],
        )
        .await?;
    Ok(())
}

/// The tenant's event ids in a store, with how often each occurs.
async fn event_id_counts(client: &Client, tenant: Uuid) -> HashMap<Uuid, i64> {
    client
        .query(
            "SELECT event_id, count(*) FROM events WHERE tenant_id = $1 GROUP BY event_id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// I1/I2: every event of the source is in the target once with identical columns.
async fn assert_source_in_target(source: &Client, target: &Client, tenant: Uuid) {
    let source_rows = tenant_event_rows(source, tenant).await.unwrap();
    let target_rows: HashMap<Uuid, EventRow> = tenant_event_rows(target, tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event_id, r))
        .collect();
    for row in &source_rows {
        let copy = target_rows.get(&row.event_id).unwrap_or_else(|| {
            panic!(
                "event {} of the source is missing on the target",
                row.event_id
            )
        });
        assert_eq!(copy, row, "event {} differs on the target", row.event_id);
    }
    let counts = event_id_counts(target, tenant).await;
    assert!(
        counts.values().all(|n| *n == 1),
        "an event is duplicated on the target"
    );
}

async fn wait_for_appends(load: &Load, more: u64) {
    let goal = load.appended() + more;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while load.appended() < goal {
        assert!(load.errors().is_empty(), "{:?}", load.errors());
        assert!(tokio::time::Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moves_under_load_without_loss_duplicates_or_errors() {
    let setup = MigrationSetup::start_with(&live_migration(5000), |c| c).await;
    let tenants = tenant_ids(3);
    let (moving, others) = (tenants[0], &tenants[1..]);
    let source = setup.shared_db().await;
    seed_events(&source, &[moving], 100_000, 20).await.unwrap();
    seed_events(&source, others, 2_000, 20).await.unwrap();

    let mut load = Load::new();
    load.append(&setup, &[moving, moving, moving]).await;
    load.append(&setup, others).await;
    load.read(&setup, moving).await;
    load.read(&setup, others[0]).await;
    wait_for_appends(&load, 100).await;

    let id = setup
        .migrate(moving, "dedicated", &["--batch-size", "2000"])
        .await;
    let migrated = setup.wait_for_state(id, "MIGRATED").await;
    let source_at_cutover = count_tenant(&source, moving).await;
    // Appends after the cutover go to the target only.
    wait_for_appends(&load, 300).await;
    let (acknowledged, errors) = load.stop().await;
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");

    let target = setup.dedicated_db().await;
    assert_eq!(
        count_tenant(&source, moving).await,
        source_at_cutover,
        "I4: a write reached the source after the cutover"
    );
    assert_source_in_target(&source, &target, moving).await;
    let on_source: HashSet<Uuid> = event_id_counts(&source, moving).await.into_keys().collect();
    let on_target = event_id_counts(&target, moving).await;
    let acked = &acknowledged[&moving];
    for event_id in acked {
        assert_eq!(
            on_target.get(event_id),
            Some(&1),
            "acknowledged {event_id} not once on the target"
        );
    }
    let after_cutover = acked.iter().filter(|id| !on_source.contains(id)).count();
    assert!(after_cutover > 0, "no event was appended after the cutover");
    assert_eq!(
        on_target.len(),
        on_source.len() + after_cutover,
        "the target holds events that were neither copied nor appended"
    );
    // The other tenants stayed where they were, every acknowledged event there once.
    for tenant in others {
        assert_eq!(count_tenant(&target, *tenant).await, 0);
        let counts = event_id_counts(&source, *tenant).await;
        for event_id in &acknowledged[tenant] {
            assert_eq!(counts.get(event_id), Some(&1));
        }
    }
    let audit = setup.audit_events(id).await;
    assert!(audit.contains(&"cutover_started".to_string()), "{audit:?}");
    assert_eq!(
        audit.last().map(String::as_str),
        Some("cutover_completed"),
        "{audit:?}"
    );
    assert_eq!(
        migrated["progress_percentage"].as_f64(),
        Some(100.0),
        "{migrated}"
    );
    let route = setup
        .ctl(&["--json", "routes", &moving.to_string()])
        .await
        .ok_json();
    assert_eq!(route["migration_state"], "MIGRATED", "{route}");
    assert_eq!(route["store"], "dedicated", "{route}");
}

/// One tenant with `events` seeded on the source and evshift with a `timeout_ms` hold bound.
struct OneTenant {
    setup: MigrationSetup,
    tenant: Uuid,
    source: Client,
}

impl OneTenant {
    async fn start(timeout_ms: u64, events: usize) -> OneTenant {
        let setup = MigrationSetup::start_with(&live_migration(timeout_ms), |c| c).await;
        let tenant = tenant_ids(1)[0];
        let source = setup.shared_db().await;
        seed_events(&source, &[tenant], events, 10).await.unwrap();
        OneTenant {
            setup,
            tenant,
            source,
        }
    }

    /// Starts a manual-cutover migration with `extra` options and waits for DUAL_WRITE.
    async fn migrate_to_dual_write(&self, extra: &[&str]) -> i64 {
        let mut args = vec!["--manual-cutover"];
        args.extend_from_slice(extra);
        let id = self.setup.migrate(self.tenant, "dedicated", &args).await;
        self.setup.wait_for_state(id, "DUAL_WRITE").await;
        id
    }
}

/// Opens a transaction of `tenant` through evshift that inserts one event and stays open.
async fn open_transaction(setup: &MigrationSetup, tenant: Uuid) -> (Client, Uuid) {
    let client = setup.through_proxy().await;
    client.batch_execute("BEGIN").await.unwrap();
    let event_id = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id,
                                 actor_id, version, timestamp, payload, created_at)
             VALUES ($1, 'Opened', 'Order', $2, $3, NULL, 1, now(), '{}'::jsonb, NOW())",
            &[&event_id, &Uuid::new_v4(), &tenant],
        )
        .await
        .unwrap();
    (client, event_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cutover_that_times_out_rolls_back_and_a_later_one_succeeds() {
    let one = OneTenant::start(1000, 5_000).await;
    let id = one.migrate_to_dual_write(&[]).await;
    let OneTenant {
        setup,
        tenant,
        source,
    } = one;

    let (open, open_event) = open_transaction(&setup, tenant).await;
    let mut load = Load::new();
    load.append(&setup, &[tenant]).await;
    wait_for_appends(&load, 20).await;

    let refused = setup.ctl(&["--json", "cutover", &id.to_string()]).await;
    refused.refused("CutoverTimeoutError");
    let status = setup.status(id).await;
    assert_eq!(status["state"], "DUAL_WRITE", "{status}");
    assert!(
        status["error_message"]
            .as_str()
            .unwrap_or("")
            .contains("CutoverTimeoutError"),
        "{status}"
    );
    assert!(setup
        .audit_events(id)
        .await
        .contains(&"cutover_rolled_back".to_string()));
    // The held appender goes on, on the source.
    wait_for_appends(&load, 20).await;

    open.batch_execute("COMMIT").await.unwrap();
    let migrated = setup
        .ctl(&["--json", "cutover", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(migrated["state"], "MIGRATED", "{migrated}");
    wait_for_appends(&load, 20).await;
    let (acknowledged, errors) = load.stop().await;
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let target = setup.dedicated_db().await;
    assert_source_in_target(&source, &target, tenant).await;
    let on_target = event_id_counts(&target, tenant).await;
    assert_eq!(on_target.get(&open_event), Some(&1));
    for event_id in &acknowledged[&tenant] {
        assert_eq!(on_target.get(event_id), Some(&1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_succeed_while_the_target_is_down_and_the_tail_recovers() {
    let one = OneTenant::start(5000, 5_000).await;
    let id = one.migrate_to_dual_write(&[]).await;
    let OneTenant {
        setup,
        tenant,
        source,
    } = one;

    setup.dedicated.stop_immediate().await.unwrap();
    let mut load = Load::new();
    load.append(&setup, &[tenant, tenant]).await;
    wait_for_appends(&load, 200).await;
    setup.dedicated.start_again().await.unwrap();
    wait_for_appends(&load, 50).await;
    let (acknowledged, errors) = load.stop().await;
    assert!(
        errors.is_empty(),
        "writes failed while the target was down: {errors:?}"
    );

    setup.wait_caught_up(id, tenant).await;
    let migrated = setup
        .ctl(&["--json", "cutover", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(migrated["state"], "MIGRATED", "{migrated}");
    let target = setup.dedicated_db().await;
    assert_source_in_target(&source, &target, tenant).await;
    let on_target = event_id_counts(&target, tenant).await;
    for event_id in &acknowledged[&tenant] {
        assert_eq!(on_target.get(event_id), Some(&1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_during_a_held_cutover_returns_the_tenant_to_its_source() {
    let one = OneTenant::start(3000, 5_000).await;
    let id = one.migrate_to_dual_write(&[]).await;
    let OneTenant {
        setup,
        tenant,
        source,
    } = one;
    let (open, open_event) = open_transaction(&setup, tenant).await;

    let id_text = id.to_string();
    let cutover_args = ["--json", "cutover", &id_text];
    let cutover = setup.ctl(&cutover_args);
    let abort = async {
        setup
            .wait_until(id, "the cutover hold", |s| s["state"] == "CUTOVER_PAUSED")
            .await;
        setup.ctl(&["--json", "abort", &id.to_string()]).await
    };
    let (cutover, abort) = tokio::join!(cutover, abort);
    cutover.refused("CutoverTimeoutError");
    let aborted = abort.ok_json();
    assert_eq!(aborted["state"], "ROLLED_BACK", "{aborted}");

    // The open transaction ends on the source; the tenant is served there.
    open.batch_execute("COMMIT").await.unwrap();
    let mut client = setup.through_proxy().await;
    let outcome = append_event(&mut client, tenant, Uuid::new_v4(), 0)
        .await
        .unwrap();
    assert!(matches!(outcome, AppendOutcome::Appended { .. }));
    let target = setup.dedicated_db().await;
    assert_eq!(
        count_tenant(&target, tenant).await,
        0,
        "the target was not cleaned"
    );
    let on_source = event_id_counts(&source, tenant).await;
    assert_eq!(on_source.get(&open_event), Some(&1));
    assert_eq!(on_source.len(), 5_002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cutover_refuses_a_target_that_differs_and_names_why() {
    let one = OneTenant::start(5000, 3_000).await;
    let id = one.migrate_to_dual_write(&["--verify", "full"]).await;
    let OneTenant { setup, tenant, .. } = one;
    let target = setup.dedicated_db().await;
    let changed: Uuid = target
        .query_one(
            "UPDATE events SET payload = '{\"tampered\": true}'
              WHERE event_id = (SELECT event_id FROM events WHERE tenant_id = $1
                                 ORDER BY global_position LIMIT 1)
              RETURNING event_id",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);

    let refused = setup.ctl(&["--json", "cutover", &id.to_string()]).await;
    let message = refused.refused("ConsistencyError");
    assert!(message.contains(&changed.to_string()), "{message}");
    let status = setup.status(id).await;
    assert_eq!(status["state"], "DUAL_WRITE", "{status}");
    let route = setup
        .ctl(&["--json", "routes", &tenant.to_string()])
        .await
        .ok_json();
    assert_eq!(route["store"], "shared", "{route}");
    let audit = setup
        .ctl(&["--json", "audit", &id.to_string()])
        .await
        .ok_json();
    let rolled_back = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["event_type"] == "cutover_rolled_back")
        .expect("a cutover_rolled_back audit row");
    assert_eq!(rolled_back["details"]["error"]["kind"], "ConsistencyError");
    // Writes of the tenant still go to the source.
    let mut client = setup.through_proxy().await;
    let appended = append_event(&mut client, tenant, Uuid::new_v4(), 0)
        .await
        .unwrap();
    assert!(matches!(appended, AppendOutcome::Appended { .. }));
}

/// A catch-up subscriber of one tenant through evshift, eventsource-py style: it reads pages
/// above its checkpoint inside the horizon and keeps its checkpoint in `projection_checkpoints`
/// (session tenant set, so both follow the tenant's store).
struct Subscriber {
    client: Client,
    tenant: Uuid,
    processed: Vec<Uuid>,
}

const SUBSCRIPTION: &str = "orders-projection";

impl Subscriber {
    async fn connect(setup: &MigrationSetup, tenant: Uuid) -> Subscriber {
        let client = setup.through_proxy().await;
        client
            .batch_execute(&format!("SET evshift.tenant_id = '{tenant}'"))
            .await
            .unwrap();
        Subscriber {
            client,
            tenant,
            processed: Vec::new(),
        }
    }

    async fn checkpoint(&self) -> i64 {
        let row = self
            .client
            .query_opt(
                "SELECT position_token FROM projection_checkpoints WHERE projection_name = $1",
                &[&SUBSCRIPTION],
            )
            .await
            .unwrap();
        let Some(row) = row else { return 0 };
        let token: String = row.get(0);
        let token: serde_json::Value = serde_json::from_str(&token).unwrap();
        token["k"][0].as_i64().unwrap()
    }

    /// Reads and processes everything visible above the checkpoint, saving it after each page.
    async fn catch_up(&mut self) {
        loop {
            let position = self.checkpoint().await;
            let horizon: String = self
                .client
                .query_one("SELECT eventsource_feed_horizon()", &[])
                .await
                .unwrap()
                .get(0);
            let page = self
                .client
                .query(
                    "SELECT global_position, event_id FROM events
                      WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8)
                        AND global_position > $2 AND tenant_id = $3
                      ORDER BY global_position ASC LIMIT 500",
                    &[&horizon, &position, &self.tenant],
                )
                .await
                .unwrap();
            let Some(last) = page.last() else { return };
            let last: i64 = last.get(0);
            self.processed
                .extend(page.iter().map(|r| r.get::<_, Uuid>(1)));
            let token = format!("{{\"s\":\"pg:postgres\",\"k\":[{last}]}}");
            self.client
                .execute(
                    "INSERT INTO projection_checkpoints (projection_name, position_token, updated_at)
                     VALUES ($1, $2, now())
                     ON CONFLICT (projection_name) DO UPDATE
                        SET position_token = EXCLUDED.position_token, updated_at = now()",
                    &[&SUBSCRIPTION, &token],
                )
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_continues_on_the_target_without_missing_or_repeating_an_event() {
    let one = OneTenant::start(5000, 4_000).await;
    let mut subscriber = Subscriber::connect(&one.setup, one.tenant).await;
    subscriber.catch_up().await;
    // Another tenant's rows in between, so that source and target positions differ.
    let neighbour = tenant_ids(2)[1];
    seed_events(&one.source, &[neighbour], 1_000, 10)
        .await
        .unwrap();
    // The cutover translates the subscription's checkpoint itself.
    let id = one
        .migrate_to_dual_write(&["--subscriptions", SUBSCRIPTION])
        .await;
    let OneTenant { setup, tenant, .. } = one;
    let mut load = Load::new();
    load.append(&setup, &[tenant, tenant]).await;
    wait_for_appends(&load, 100).await;
    let (before, errors) = load.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    // The subscriber processed everything so far and stops; its checkpoint is a source position.
    subscriber.catch_up().await;
    let source_checkpoint = subscriber.checkpoint().await;
    drop(subscriber.client);

    setup.wait_caught_up(id, tenant).await;
    let migrated = setup
        .ctl(&["--json", "cutover", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(migrated["state"], "MIGRATED", "{migrated}");
    assert!(
        setup
            .audit_events(id)
            .await
            .contains(&"subscription_rewritten".to_string()),
        "the cutover did not translate the checkpoint"
    );

    // New events on the target, then the subscriber resumes there.
    let mut load = Load::new();
    load.append(&setup, &[tenant]).await;
    wait_for_appends(&load, 50).await;
    let (after, errors) = load.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    let processed_before = std::mem::take(&mut subscriber.processed);
    let mut resumed = Subscriber::connect(&setup, tenant).await;
    assert_ne!(
        resumed.checkpoint().await,
        source_checkpoint,
        "the checkpoint was not translated"
    );
    resumed.catch_up().await;

    let mut all: Vec<Uuid> = processed_before;
    all.extend(resumed.processed);
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "the subscriber saw an event twice");
    let target = setup.dedicated_db().await;
    let expected: HashSet<Uuid> = event_id_counts(&target, tenant).await.into_keys().collect();
    assert_eq!(unique, expected, "the subscriber missed events");
    for event_id in before[&tenant].iter().chain(&after[&tenant]) {
        assert!(unique.contains(event_id));
    }
}

/// `evshift_held_statements` on evshift's `/metrics` (0 when absent).
async fn held_statements(setup: &MigrationSetup) -> f64 {
    metrics_support::scrape(metrics_support::metrics_addr(setup))
        .await
        .sum("evshift_held_statements", &[])
}

/// I7: while one tenant is held at its cutover, another tenant's appends go through, and the
/// held tenant's statement waits until the gate opens, then runs on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_moving_tenant_is_held_at_its_cutover() {
    let setup = MigrationSetup::start_with(&live_migration(20_000), |c| c).await;
    let [moving, other] = tenant_ids(2)[..] else {
        unreachable!()
    };
    let source = setup.shared_db().await;
    seed_events(&source, &[moving, other], 2_000, 10)
        .await
        .unwrap();
    let id = setup
        .migrate(moving, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_for_state(id, "DUAL_WRITE").await;

    // A transaction of the moving tenant in flight keeps the hold closed until it ends.
    let (open, open_event) = open_transaction(&setup, moving).await;
    let cutover = {
        let socket = setup.config.control_socket.clone();
        let id = id.to_string();
        tokio::spawn(
            async move { control_support::ctl(&socket, &["--json", "cutover", &id]).await },
        )
    };
    setup.wait_for_state(id, "CUTOVER_PAUSED").await;
    let mut held_client = setup.through_proxy().await;
    let held =
        tokio::spawn(
            async move { append_event(&mut held_client, moving, Uuid::new_v4(), 0).await },
        );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while held_statements(&setup).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the moving tenant's statement was never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The other tenant is served meanwhile, on its store.
    let mut other_client = setup.through_proxy().await;
    let other_aggregate = Uuid::new_v4();
    let mut version = 0;
    for _ in 0..20 {
        match append_event(&mut other_client, other, other_aggregate, version).await {
            Ok(AppendOutcome::Appended { version: v, .. }) => version = v,
            outcome => panic!("the other tenant's append during the hold: {outcome:?}"),
        }
    }
    assert!(!held.is_finished(), "the moving tenant was not held");
    assert!(held_statements(&setup).await >= 1.0);
    assert_eq!(setup.status(id).await["state"], "CUTOVER_PAUSED");

    // The transaction in flight ends; the cutover completes and releases the held statement,
    // which runs on the target.
    open.batch_execute("COMMIT").await.unwrap();
    let migrated = cutover.await.unwrap().ok_json();
    assert_eq!(migrated["state"], "MIGRATED", "{migrated}");
    let appended = match held.await.unwrap() {
        Ok(AppendOutcome::Appended { event_id, .. }) => event_id,
        outcome => panic!("the held append: {outcome:?}"),
    };
    let target = setup.dedicated_db().await;
    let on_target = event_id_counts(&target, moving).await;
    assert_eq!(
        on_target.get(&appended),
        Some(&1),
        "the held append ran on the target"
    );
    assert_eq!(on_target.get(&open_event), Some(&1));
    assert!(!event_id_counts(&source, moving)
        .await
        .contains_key(&appended));
    assert_eq!(count_tenant(&target, other).await, 0);
    assert_eq!(count_tenant(&source, other).await, 2_000 + 20);
    assert_eq!(held_statements(&setup).await, 0.0);
}

/// The DUAL_WRITE tail copies at most ten batches a round: a backlog of many rounds (here
/// written on the source directly, past evshift, so dual-write does not copy it) is copied
/// round after round, never read again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tail_gets_through_a_backlog_of_many_rounds() {
    let one = OneTenant::start(5000, 500).await;
    // Rounds of 10 batches of 10 events: 100 events.
    let id = one.migrate_to_dual_write(&["--batch-size", "10"]).await;
    let OneTenant {
        setup,
        tenant,
        source,
    } = one;
    // One transaction of 1,000 events in 100 new streams.
    source
        .execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, tenant_id,
                                 version, timestamp, payload)
             SELECT gen_random_uuid(), md5($1::uuid::text || '/backlog/' || g.n / 10)::uuid, 'Order',
                    'ItemAdded', $1::uuid, g.n % 10 + 1, now(), jsonb_build_object('n', g.n)
               FROM generate_series(0, 999) AS g(n)",
            &[&tenant],
        )
        .await
        .unwrap();
    let wanted = count_tenant(&source, tenant).await;
    assert_eq!(wanted, 1_500);
    let target = setup.dedicated_db().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count_tenant(&target, tenant).await < wanted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tail did not copy the backlog: {} of {wanted} events on the target; {}",
            count_tenant(&target, tenant).await,
            setup.status(id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup
        .wait_until(id, "lag 0", |s| s["lag_events"] == 0)
        .await;
    let migrated = setup
        .ctl(&["--json", "cutover", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(migrated["state"], "MIGRATED", "{migrated}");
    assert_source_in_target(&source, &target, tenant).await;
}
