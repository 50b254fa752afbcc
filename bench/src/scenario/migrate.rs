//! `migrate`: what a live migration costs the tenants. One tenant appends at a fixed rate
//! while other tenants append and read at theirs; the tenant is migrated back and forth
//! between the shared and the dedicated store, each migration with `--manual-cutover`, cut
//! over with `evshift ctl cutover` once it is in DUAL_WRITE with a small lag. Measured, all
//! under the same load: the tenant's append latency in DUAL_WRITE against the window before
//! each migration, every cutover's pause (gate closed to gate open, from evshift's pause
//! histogram; where it goes from its JSON log and audit row), the other tenants' latency
//! around each cutover, and at the end the check of every acknowledged append.

mod cycle;
mod pause_log;
mod report;
mod windows;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use evshift_tests::{apply_event_store_schema, PgCluster};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::proxy::Proxy;
use super::{Environment, ScenarioOutput};
use crate::check::{check_acknowledged, StoreMap};
use crate::ids::tenant_ids;
use crate::load::{self, LoadHandle, LoadSpec, Pace};
use crate::machine::Machine;
use crate::mix::{Mix, TxKind};
use crate::seed::{self, SeedSpec};
use crate::workload::Protocol;

use cycle::{CycleRunner, Pools};
use pause_log::Log;

const NAME: &str = "migrate";
const DB: &str = "app";
/// Events per seeded stream.
const SEED_STREAM_EVENTS: usize = 10;
/// The stores, by their ids in evshift's configuration; the first is the default.
const STORES: [&str; 2] = ["shared", "dedicated"];

/// Settings of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Appends per second of the migrating tenant (a fixed rate over its clients).
    pub rate: f64,
    /// Clients of the migrating tenant.
    pub clients: usize,
    /// Tenants that stay where they are.
    pub other_tenants: usize,
    /// Transactions per second of the other tenants together (half appends, half stream
    /// reads).
    pub other_rate: f64,
    /// Clients of the other tenants.
    pub other_clients: usize,
    /// Migrations, each ending with one cutover, alternately to the dedicated and the shared
    /// store.
    pub cutovers: usize,
    /// Measured time before each migration, and in DUAL_WRITE before each cutover.
    pub window: Duration,
    /// Around each cutover: from this long before `evshift ctl cutover` to this long after
    /// it returned.
    pub cutover_margin: Duration,
    /// The cutover is requested once the lag is at or under this many events.
    pub max_lag: i64,
    /// Unmeasured load before the first window.
    pub warmup: Duration,
    /// Events seeded for the migrating tenant before the load starts.
    pub seed_events: usize,
    /// Streams seeded per other tenant (10 events each), which their reads pick from.
    pub seed_aggregates: usize,
    /// evshift's `[migration] batch_size`.
    pub batch_size: usize,
    pub protocol: Protocol,
}

/// The three clusters and evshift in front of them.
pub(crate) struct Setup {
    pub shared: PgCluster,
    pub dedicated: PgCluster,
    pub control: PgCluster,
    pub proxy: Proxy,
}

impl Setup {
    async fn start(env: &Environment, settings: &Settings) -> Result<Setup> {
        let (shared, dedicated, control) = tokio::try_join!(
            PgCluster::start("bench-migrate-shared"),
            PgCluster::start("bench-migrate-dedicated"),
            PgCluster::start("bench-migrate-control")
        )?;
        for cluster in [&shared, &dedicated] {
            cluster.create_database(DB).await?;
            apply_event_store_schema(&cluster.connect(DB).await?).await?;
        }
        control.create_database(DB).await?;
        let stores = [(STORES[0], shared.url(DB)), (STORES[1], dedicated.url(DB))];
        let proxy = Proxy::start(
            &env.evshift_bin,
            &stores,
            Some(&control.url(DB)),
            &evshift_sections(settings),
        )
        .await?;
        Ok(Setup {
            shared,
            dedicated,
            control,
            proxy,
        })
    }

    /// The cluster of store `id`.
    pub fn cluster(&self, id: &str) -> &PgCluster {
        if id == STORES[0] {
            &self.shared
        } else {
            &self.dedicated
        }
    }

    fn store_map(&self) -> StoreMap {
        StoreMap {
            default_url: self.shared.url(DB),
            stores: BTreeMap::from([
                (STORES[0].to_owned(), self.shared.url(DB)),
                (STORES[1].to_owned(), self.dedicated.url(DB)),
            ]),
            control_url: Some(self.control.url(DB)),
            tenants: BTreeMap::new(),
        }
    }
}

/// evshift's `[migration]` and `[log]`: JSON lines at `warn`, except the lines that time a
/// cutover: the gate closing and opening, the final tail's checkpoints, "cutover completed".
fn evshift_sections(settings: &Settings) -> String {
    format!(
        "[migration]\nbatch_size = {}\n\n[log]\nformat = \"json\"\nlevel = \"{}\"\n",
        settings.batch_size,
        [
            "warn",
            "evshift_proxy::gate=info",
            "evshift_control::cutover=info",
            "evshift_control::driver=info",
            "evshift_control::coordinator=info",
            "evshift_control::migration_store=debug",
        ]
        .join(",")
    )
}

/// The two loads: the migrating tenant's and the other tenants'.
pub(crate) struct Loads {
    pub moving: LoadHandle,
    pub others: LoadHandle,
}

impl Loads {
    async fn start(url: &str, settings: &Settings, moving: Uuid, others: &[Uuid]) -> Result<Loads> {
        let mut spec = LoadSpec::new(url, settings.clients, vec![moving]);
        spec.mix = Mix::only(TxKind::Append);
        spec.pace = Pace::Rate(settings.rate);
        spec.protocol = settings.protocol;
        spec.warmup = settings.warmup;
        spec.duration = None;
        spec.label = "migrating tenant".to_owned();
        let moving = load::start(spec)
            .await
            .context("the migrating tenant's load")?;
        let mut spec = LoadSpec::new(url, settings.other_clients, others.to_vec());
        spec.mix = "append=1,read_stream=1"
            .parse()
            .map_err(anyhow::Error::msg)?;
        spec.pace = Pace::Rate(settings.other_rate);
        spec.protocol = settings.protocol;
        spec.warmup = settings.warmup;
        spec.duration = None;
        spec.read_aggregates = settings.seed_aggregates;
        spec.label = "other tenants".to_owned();
        let others = load::start(spec).await.context("the other tenants' load")?;
        Ok(Loads { moving, others })
    }

    /// Marks the same instant on both loads.
    pub fn mark(&self, label: &str) {
        self.moving.mark(label);
        self.others.mark(label);
    }
}

/// Runs the scenario.
pub async fn run(env: &Environment, settings: &Settings) -> Result<ScenarioOutput> {
    let machine = Machine::describe(&env.evshift_bin);
    env.progress(
        NAME,
        "starting the shared, dedicated and control clusters and evshift",
    );
    let setup = Setup::start(env, settings).await?;
    let url = setup.proxy.url(DB);
    let tenants = tenant_ids(1 + settings.other_tenants.max(1));
    let (moving, others) = (tenants[0], &tenants[1..]);
    env.progress(
        NAME,
        &format!(
            "seeding {} events of the migrating tenant, {} streams per other tenant",
            settings.seed_events, settings.seed_aggregates
        ),
    );
    let moving_seed = SeedSpec {
        aggregates: settings.seed_events.div_ceil(SEED_STREAM_EVENTS).max(1),
        events: SEED_STREAM_EVENTS,
        snapshots: true,
    };
    seed::seed(&url, &[moving], moving_seed).await?;
    let others_seed = SeedSpec {
        aggregates: settings.seed_aggregates.max(1),
        events: SEED_STREAM_EVENTS,
        snapshots: true,
    };
    seed::seed(&url, others, others_seed).await?;

    let loads = Loads::start(&url, settings, moving, others).await?;
    loads.mark("aligned");
    tokio::time::sleep(settings.warmup).await;
    let started = Instant::now();
    let mut runner = CycleRunner {
        env,
        settings,
        setup: &setup,
        loads: &loads,
        tenant: moving,
        pools: Pools::new(),
    };
    let mut cycles = Vec::new();
    for index in 0..settings.cutovers.max(1) {
        match runner.run(index).await {
            Ok(cycle) => cycles.push(cycle),
            Err(error) => {
                // The clusters and evshift go with the error: keep what evshift said.
                print_log_tail(&setup.proxy.log());
                return Err(error)
                    .with_context(|| format!("migration {} of {}", index + 1, settings.cutovers));
            }
        }
    }
    let pools = runner.pools;
    let elapsed = started.elapsed();
    let Loads {
        moving: m,
        others: o,
    } = loads;
    let (moving_run, others_run) = (m.finish().await?, o.finish().await?);
    env.progress(NAME, "checking every acknowledged append");
    let mut acknowledged = moving_run.acknowledged.clone();
    acknowledged.extend(others_run.acknowledged.iter().copied());
    let check = check_acknowledged(&acknowledged, &setup.store_map()).await?;
    env.progress(NAME, &check.summary());
    let log = Log::parse(&setup.proxy.log());
    let results = report::Results::build(
        settings,
        cycles,
        &pools,
        &log,
        moving,
        &moving_run,
        &others_run,
        check,
        elapsed,
    );
    let figure = report::figure(&results, &moving_run, &others_run)?;
    let markdown = report::markdown(env, settings, &machine, &results, &figure);
    Ok(ScenarioOutput {
        name: NAME.to_owned(),
        json: json!({
            "scenario": NAME,
            "settings": settings,
            "machine": machine,
            "results": results,
        }),
        markdown,
        figures: vec![figure],
    })
}

/// Lines of evshift's log printed when a migration fails.
const LOG_TAIL_LINES: usize = 60;

fn print_log_tail(log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    eprintln!(
        "--- the last {} lines of evshift's log ---",
        lines.len() - start
    );
    for line in &lines[start..] {
        eprintln!("{line}");
    }
}
