//! What a migration shows on a real evshift's `/metrics` while it runs (state, copied,
//! progress, lag, failures, labelled with the migration and its tenant), the data plane's
//! metrics after some queries, and the JSON log lines with the migration's fields.

mod control_support;
mod metrics_support;
mod migration_support;

use std::time::{Duration, Instant};

use evshift_tests::{seed_events, tenant_ids};
use metrics_support::{metrics_addr, scrape, start_with_json_logs, test_migration, Scrape};
use migration_support::MigrationSetup;
use serde_json::Value;
use uuid::Uuid;

/// Events of the migrated tenant: enough for many batches at the rate limit below.
const EVENTS: usize = 6_000;

/// Pause between two scrapes while watching a migration.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(50);

/// How long a migration may take to reach what a test waits for.
const DEADLINE: Duration = Duration::from_secs(120);

/// What the scrapes of one migration's figures showed, in scrape order.
#[derive(Debug, Default)]
struct Observed {
    states: Vec<f64>,
    copied: Vec<f64>,
    progress: Vec<f64>,
    lag: Vec<f64>,
}

impl Observed {
    fn record(&mut self, scrape: &Scrape, labels: &[(&str, &str)]) {
        let push = |into: &mut Vec<f64>, name: &str| {
            if let Some(value) = scrape.value(name, labels) {
                into.push(value);
            }
        };
        push(&mut self.states, "migration_state");
        push(&mut self.copied, "migration_events_copied_total");
        push(&mut self.progress, "migration_progress_percent");
        push(&mut self.lag, "migration_sync_lag_events");
    }

    /// True once the migration is in DUAL_WRITE with everything copied.
    fn caught_up(&self) -> bool {
        self.states.last() == Some(&2.0)
            && self.copied.last() == Some(&(EVENTS as f64))
            && self.lag.last() == Some(&0.0)
            && self.progress.last() == Some(&100.0)
    }
}

fn non_decreasing(values: &[f64]) -> bool {
    values.windows(2).all(|w| w[0] <= w[1])
}

/// The `migration_id`/`tenant_id` labels of a migration.
fn labels_of(id: &str, tenant: &str) -> [(&'static str, String); 2] {
    [
        ("migration_id", id.to_string()),
        ("tenant_id", tenant.to_string()),
    ]
}

fn as_pairs<'a>(labels: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    labels.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_moves_its_metrics_and_logs_its_fields_as_json() {
    let setup = start_with_json_logs(test_migration(), "info,evshift_control=debug").await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], EVENTS, 10).await.unwrap();
    let addr = metrics_addr(&setup);
    // Rate-limited, so that the copy lasts for many scrapes; the cutover is left for later, so
    // the migration stays in DUAL_WRITE.
    let id = setup
        .migrate(
            tenant,
            "dedicated",
            &[
                "--batch-size",
                "250",
                "--rate-limit",
                "3000",
                "--manual-cutover",
            ],
        )
        .await;
    let labels = labels_of(&id.to_string(), &tenant.to_string());
    let labels = as_pairs(&labels);

    let mut observed = Observed::default();
    let deadline = Instant::now() + DEADLINE;
    let last = loop {
        let scrape = scrape(addr).await;
        observed.record(&scrape, &labels);
        if observed.caught_up() {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "migration {id} not caught up in DUAL_WRITE on /metrics within {DEADLINE:?}: \
             {observed:?}; status {}",
            setup.status(id).await
        );
        tokio::time::sleep(SCRAPE_INTERVAL).await;
    };

    // The phases in order, up to DUAL_WRITE (PENDING may pass between two scrapes).
    assert!(non_decreasing(&observed.states), "{:?}", observed.states);
    assert!(
        observed.states.contains(&1.0),
        "BULK_COPY seen: {:?}",
        observed.states
    );
    assert!(observed.states.iter().all(|s| [0.0, 1.0, 2.0].contains(s)));
    // Copied grows, and was seen part-way.
    assert!(non_decreasing(&observed.copied), "{:?}", observed.copied);
    let midway = |values: &[f64], end: f64| values.iter().any(|v| *v > 0.0 && *v < end);
    assert!(
        midway(&observed.copied, EVENTS as f64),
        "{:?}",
        observed.copied
    );
    assert!(
        non_decreasing(&observed.progress),
        "{:?}",
        observed.progress
    );
    assert!(midway(&observed.progress, 100.0), "{:?}", observed.progress);
    // The lag was reported while copying, and reached 0.
    assert!(
        observed.lag.iter().any(|l| *l > 0.0),
        "lag while copying: {:?}",
        observed.lag
    );
    // The exported figures are the control store's.
    let status = setup.status(id).await;
    assert_eq!(status["state"], "DUAL_WRITE");
    assert_eq!(status["events_copied"], EVENTS as i64);
    assert_eq!(status["lag_events"], 0);
    for name in [
        "migration_state",
        "migration_events_copied_total",
        "migration_progress_percent",
        "migration_sync_lag_events",
    ] {
        assert!(last.described.contains(name), "# HELP {name}");
        let series: Vec<_> = last.find(name, &[]).collect();
        assert_eq!(series.len(), 1, "one series of {name}: {series:?}");
        assert_eq!(
            series[0].labels.keys().collect::<Vec<_>>(),
            ["migration_id", "tenant_id"],
            "{name}"
        );
    }
    assert_eq!(last.value("migration_failures_total", &labels), None);

    proxy_metrics_follow_queries(&setup, tenant).await;
    json_lines_carry_the_migration_fields(&setup, id, tenant);
}

/// Queries through evshift show up in the data plane's metrics; its sessions are counted
/// while open.
async fn proxy_metrics_follow_queries(setup: &MigrationSetup, tenant: Uuid) {
    let addr = metrics_addr(setup);
    let aggregate: Uuid = setup
        .shared_db()
        .await
        .query_one(
            "SELECT aggregate_id FROM events WHERE tenant_id = $1 LIMIT 1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    let client = setup.through_proxy().await;
    for _ in 0..3 {
        client
            .query_one(
                "SELECT count(*) FROM events WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap();
    }
    // Keyed by aggregate only: the owner is looked up once, then known.
    for _ in 0..2 {
        client
            .query_one(
                "SELECT count(*) FROM events WHERE aggregate_id = $1",
                &[&aggregate],
            )
            .await
            .unwrap();
    }
    let shared = [("store", "shared")];
    // The parse-cache counters are published once a second.
    let scrape = poll(addr, "the parse-cache counters of the queries", |s| {
        s.value("evshift_parse_cache_hits_total", &[]) >= Some(1.0)
            && s.value("evshift_parse_cache_misses_total", &[]) >= Some(1.0)
    })
    .await;
    assert!(scrape.value("evshift_client_connections", &[]) >= Some(1.0));
    assert!(scrape.value("evshift_backend_connections_open", &shared) >= Some(1.0));
    assert!(scrape.value("evshift_backend_connections_total", &shared) >= Some(1.0));
    assert!(scrape.value("evshift_statements_routed_total", &shared) >= Some(5.0));
    let lookups = |result| scrape.value("evshift_aggregate_lookups_total", &[("result", result)]);
    assert!(lookups("miss") >= Some(1.0), "{:?}", lookups("miss"));
    assert!(lookups("hit") >= Some(1.0), "{:?}", lookups("hit"));
    for name in evshift_proxy::telemetry::ALL {
        if scrape.find(name, &[]).next().is_some() {
            assert!(scrape.described.contains(*name), "# HELP {name}");
        }
    }

    drop(client);
    poll(addr, "the closed session to be uncounted", |s| {
        s.value("evshift_client_connections", &[]) == Some(0.0)
            && s.value("evshift_backend_connections_open", &shared) == Some(0.0)
    })
    .await;
}

/// Scrapes until `done` holds; panics after the deadline.
async fn poll(addr: std::net::SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let scrape = scrape(addr).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} on /metrics within {DEADLINE:?}: {:?}",
            scrape.samples
        );
        tokio::time::sleep(SCRAPE_INTERVAL).await;
    }
}

/// Every log line is a JSON object; the migration's lines carry its id and tenant, the lines
/// of its phases and checkpoints also `phase` and `operation`.
fn json_lines_carry_the_migration_fields(setup: &MigrationSetup, id: i64, tenant: Uuid) {
    let log = setup.proxy.log_contents();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    let ours: Vec<&Value> = lines.iter().filter(|l| l["migration_id"] == id).collect();
    assert!(!ours.is_empty(), "no line of migration {id} in\n{log}");
    for line in &ours {
        assert_eq!(line["tenant_id"], tenant.to_string(), "{line}");
    }
    // Lines written inside the driver's span carry its fields without naming them.
    assert!(
        ours.iter().any(|l| l["span"].is_string()),
        "no migration line from inside a span"
    );
    let with = |message: &str| -> Vec<&&Value> {
        ours.iter().filter(|l| l["message"] == message).collect()
    };
    let phases: Vec<&str> = with("migration phase changed")
        .iter()
        .filter_map(|l| l["phase"].as_str())
        .collect();
    assert_eq!(phases, ["BULK_COPY", "DUAL_WRITE"], "{log}");
    let checkpoints = with("batch checkpointed");
    assert!(!checkpoints.is_empty(), "no checkpoint lines (debug)");
    for line in with("migration phase changed").iter().chain(&checkpoints) {
        for key in ["migration_id", "tenant_id", "phase", "operation"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    // Lines of the migration that lack `phase` or `operation`: the driver's own lines, until
    // its spans carry both. Anything else is a new line without them.
    let incomplete: Vec<&str> = ours
        .iter()
        .filter(|l| l.get("phase").is_none() || l.get("operation").is_none())
        .filter_map(|l| l["message"].as_str())
        .collect();
    let known = ["migration driver started", "migration driver stopped"];
    assert!(
        incomplete.iter().all(|m| known.contains(m)),
        "migration lines without phase or operation: {incomplete:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_shows_its_state_and_counts_the_failure() {
    let quick_to_fail = "
retry_limit = 2
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 100
tail_interval_ms = 100
";
    let setup = start_with_json_logs(quick_to_fail, "info").await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 20_000, 10).await.unwrap();
    let addr = metrics_addr(&setup);
    let id = setup
        .migrate(
            tenant,
            "dedicated",
            &["--batch-size", "250", "--rate-limit", "4000"],
        )
        .await;
    let labels = labels_of(&id.to_string(), &tenant.to_string());
    let labels = as_pairs(&labels);
    poll(addr, "copied events", |s| {
        s.value("migration_events_copied_total", &labels) >= Some(500.0)
    })
    .await;
    setup.dedicated.stop_immediate().await.unwrap();
    setup
        .wait_until(id, "FAILED", |s| s["state"] == "FAILED")
        .await;
    let failed = [labels.as_slice(), &[("kind", "failed")]].concat();
    let scrape = poll(addr, "the failure", |s| {
        s.value("migration_state", &labels) == Some(5.0)
    })
    .await;
    assert_eq!(scrape.value("migration_failures_total", &failed), Some(1.0));
    assert!(scrape.described.contains("migration_failures_total"));
    let stuck = scrape.value("migration_sync_lag_events", &labels).unwrap();
    assert!(stuck > 0.0, "lag left when it failed: {stuck}");
}
