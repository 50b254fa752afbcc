//! The load generator against a real PostgreSQL server: every transaction kind in every
//! protocol runs without errors, and the end check finds every acknowledged event, or names the
//! one that was removed behind its back.

use std::time::Duration;

use evshift_bench::check::{check_acknowledged, StoreMap};
use evshift_bench::ids::tenant_ids;
use evshift_bench::load::{self, LoadSpec, Pace};
use evshift_bench::mix::{Mix, TenantSkew, TxKind};
use evshift_bench::seed::{self, SeedSpec};
use evshift_bench::workload::Protocol;
use evshift_tests::{apply_event_store_schema, PgCluster};

const SEED: SeedSpec = SeedSpec {
    aggregates: 5,
    events: 4,
    snapshots: true,
};

async fn store() -> (PgCluster, String) {
    let cluster = PgCluster::start("bench-load")
        .await
        .expect("start a cluster");
    let admin = cluster.connect("postgres").await.expect("connect");
    apply_event_store_schema(&admin).await.expect("schema");
    let url = cluster.url("postgres");
    (cluster, url)
}

fn spec(url: &str, protocol: Protocol) -> LoadSpec {
    let mut spec = LoadSpec::new(url, 3, tenant_ids(3));
    spec.mix = "append=4,read_stream=2,read_all=2,snapshot=2"
        .parse::<Mix>()
        .unwrap();
    spec.protocol = protocol;
    spec.skew = TenantSkew::Zipf { exponent: 1.0 };
    spec.warmup = Duration::from_millis(100);
    spec.duration = Some(Duration::from_millis(600));
    spec.read_aggregates = SEED.aggregates;
    spec.tenant_series = true;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_and_protocol_runs_and_the_check_finds_every_event() {
    let (_cluster, url) = store().await;
    seed::seed(&url, &tenant_ids(3), SEED).await.expect("seed");
    let stores = StoreMap {
        default_url: url.clone(),
        ..StoreMap::default()
    };
    for protocol in [Protocol::Simple, Protocol::Extended, Protocol::Prepared] {
        let run = load::run(spec(&url, protocol)).await.expect("load");
        let report = &run.report;
        assert!(
            report.error_samples.is_empty(),
            "{protocol:?}: {:?}",
            report.error_samples
        );
        for kind in TxKind::ALL {
            let summary = report
                .kind(kind)
                .unwrap_or_else(|| panic!("{kind} did not run"));
            assert!(
                summary.count > 0 && summary.errors == 0,
                "{protocol:?} {kind}: {summary:?}"
            );
        }
        assert!(!report.series.is_empty() && !report.tenant_series.is_empty());
        assert!(!run.acknowledged.is_empty());
        let check = check_acknowledged(&run.acknowledged, &stores)
            .await
            .expect("check");
        assert!(check.ok, "{protocol:?}: {}", check.summary());
        assert_eq!(check.acknowledged, run.acknowledged.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_event_fails_the_check_and_a_fixed_rate_is_kept() {
    let (cluster, url) = store().await;
    let mut spec = spec(&url, Protocol::Prepared);
    spec.mix = Mix::only(TxKind::Append);
    spec.pace = Pace::Rate(100.0);
    let handle = load::start(spec).await.expect("start");
    handle.mark("halfway");
    let run = handle.finish().await.expect("finish");
    let appends = run.report.kind(TxKind::Append).expect("appends").count;
    // 100/s for 0.6 s measured: the schedule, not the server, sets the pace.
    assert!(
        (40..=80).contains(&appends),
        "{appends} appends at 100/s for 0.6 s"
    );
    assert_eq!(run.report.marks.len(), 1);

    let victim = run.acknowledged[0];
    let admin = cluster.connect("postgres").await.expect("connect");
    admin
        .execute(
            "DELETE FROM events WHERE event_id = $1",
            &[&victim.event_id],
        )
        .await
        .expect("delete");
    let stores = StoreMap {
        default_url: url.clone(),
        ..StoreMap::default()
    };
    let check = check_acknowledged(&run.acknowledged, &stores)
        .await
        .expect("check");
    assert!(!check.ok);
    let tenant = check
        .tenants
        .iter()
        .find(|t| t.tenant == victim.tenant)
        .expect("tenant");
    assert_eq!(
        (tenant.missing, tenant.missing_sample.clone()),
        (1, vec![victim.event_id])
    );
}
