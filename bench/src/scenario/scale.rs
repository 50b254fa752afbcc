//! `scale`: how evshift grows with client connections (tps and RSS at 10, 100, 1,000 clients)
//! and how its bulk copy rate holds with the tenant's size (100k, 1M, 10M events), against the
//! raw COPY pipe at the same sizes.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use evshift_tests::{apply_event_store_schema, PgCluster};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::bulk_copy::{CopyBench, CopyRun};
use super::proxy::Proxy;
use super::{Environment, Figure, RunShape, ScenarioOutput};
use crate::ids::tenant_ids;
use crate::load;
use crate::machine::Machine;
use crate::mix::Mix;
use crate::plot::{self, Line};
use crate::procfs::Memory;
use crate::report::KindSummary;
use crate::seed::{self, SeedSpec};
use crate::stats::median;
use crate::table::{ms, thousands, Table};
use crate::workload::Protocol;

const NAME: &str = "scale";
const DB: &str = "app";
/// Connections the store keeps beyond the clients (evshift's lookups, the harness).
const SPARE_CONNECTIONS: usize = 50;
/// What the harness configures; raised when more clients are asked for.
const HARNESS_MAX_CONNECTIONS: usize = 300;

/// Settings of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Duration, warm-up and repeats of each connection-count run (`clients` is unused).
    pub shape: RunShape,
    pub client_counts: Vec<usize>,
    pub tenants: usize,
    pub mix: Mix,
    pub protocol: Protocol,
    pub seed_aggregates: usize,
    /// Tenant sizes copied.
    pub copy_sizes: Vec<u64>,
    /// Copies per size (medians are reported).
    pub copy_repeats: usize,
    /// Also time the raw COPY pipe at each size.
    pub copy_pipe: bool,
    pub batch_size: usize,
}

/// One connection count's figures.
#[derive(Debug, Clone, Serialize)]
struct ClientsResult {
    clients: usize,
    runs: Vec<KindSummary>,
    /// evshift before any client connected.
    idle: Memory,
    /// evshift right after the clients connected, per run.
    connected: Vec<Memory>,
    /// VmHWM after the runs.
    peak_kb: u64,
    /// Examples of failed transactions.
    error_samples: Vec<String>,
}

/// One copy size's figures.
#[derive(Debug, Clone, Serialize)]
struct SizeResult {
    events: u64,
    evshift: Vec<CopyRun>,
    pipe: Vec<CopyRun>,
}

/// Runs the scenario.
pub async fn run(env: &Environment, settings: &Settings) -> Result<ScenarioOutput> {
    let machine = Machine::describe(&env.evshift_bin);
    let clients = scale_clients(env, settings).await?;
    let sizes = scale_copy(env, settings).await?;
    let figure = copy_figure(&sizes)?;
    let markdown = markdown(env, settings, &machine, &clients, &sizes, &figure);
    Ok(ScenarioOutput {
        name: NAME.to_owned(),
        json: json!({
            "scenario": NAME,
            "settings": settings,
            "machine": machine,
            "clients": clients,
            "copy": sizes,
        }),
        markdown,
        figures: figure.into_iter().collect(),
    })
}

async fn scale_clients(env: &Environment, settings: &Settings) -> Result<Vec<ClientsResult>> {
    if settings.client_counts.is_empty() {
        return Ok(Vec::new());
    }
    let tenants = tenant_ids(settings.tenants);
    env.progress(NAME, "starting a store");
    let store = PgCluster::start("bench-scale").await?;
    let most = settings.client_counts.iter().copied().max().unwrap_or(0);
    if most + SPARE_CONNECTIONS > HARNESS_MAX_CONNECTIONS {
        // evshift opens one backend connection per client session.
        let admin = store.connect("postgres").await?;
        admin
            .batch_execute(&format!(
                "ALTER SYSTEM SET max_connections = {}",
                most + SPARE_CONNECTIONS
            ))
            .await?;
        drop(admin);
        store.stop_immediate().await?;
        store
            .start_again()
            .await
            .context("restart with more connections")?;
    }
    store.create_database(DB).await?;
    apply_event_store_schema(&store.connect(DB).await?).await?;
    let seed_spec = SeedSpec {
        aggregates: settings.seed_aggregates,
        events: 10,
        snapshots: true,
    };
    seed::seed(&store.url(DB), &tenants, seed_spec).await?;
    let mut results = Vec::new();
    for &count in &settings.client_counts {
        results.push(one_client_count(env, settings, &store, &tenants, count).await?);
    }
    Ok(results)
}

async fn one_client_count(
    env: &Environment,
    settings: &Settings,
    store: &PgCluster,
    tenants: &[Uuid],
    count: usize,
) -> Result<ClientsResult> {
    let proxy = Proxy::start(&env.evshift_bin, &[("store", store.url(DB))], None, "").await?;
    let idle = proxy.memory()?;
    let shape = RunShape {
        clients: count,
        ..settings.shape
    };
    let mut runs = Vec::new();
    let mut connected = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for round in 0..shape.repeats {
        let spec = shape.spec_mix(
            &proxy.url(DB),
            tenants,
            settings.mix.clone(),
            settings.protocol,
            settings.seed_aggregates,
            &format!("{count} clients"),
        );
        let handle = load::start(spec).await?;
        connected.push(proxy.memory()?);
        let run = handle.finish().await?;
        let total = run.report.total.clone();
        env.progress(
            NAME,
            &format!(
                "{count} clients, round {}/{}: {:.0} tps, p99 {} us, {} errors {:?}",
                round + 1,
                shape.repeats,
                total.tps,
                total.latency_us.p99,
                total.errors,
                run.report.error_samples
            ),
        );
        errors.extend(run.report.error_samples.iter().cloned());
        runs.push(total);
    }
    Ok(ClientsResult {
        clients: count,
        runs,
        idle,
        connected,
        peak_kb: proxy.memory()?.peak_kb,
        error_samples: errors,
    })
}

async fn scale_copy(env: &Environment, settings: &Settings) -> Result<Vec<SizeResult>> {
    if settings.copy_sizes.is_empty() {
        return Ok(Vec::new());
    }
    env.progress(
        NAME,
        "starting source, target and control clusters for the copies",
    );
    let mut bench = CopyBench::start().await?;
    let tenants: Vec<(Uuid, u64)> = settings
        .copy_sizes
        .iter()
        .enumerate()
        .map(|(i, &events)| {
            let tenant =
                Uuid::from_u128(0x5ca1_e000_0000_4000_8000_0000_0000_0000 | (i as u128 + 1));
            (tenant, events)
        })
        .collect();
    let total: u64 = settings.copy_sizes.iter().sum();
    env.progress(NAME, &format!("seeding {total} events"));
    bench.seed(&tenants).await?;
    let mut results = Vec::new();
    for &(tenant, events) in &tenants {
        let mut result = SizeResult {
            events,
            evshift: Vec::new(),
            pipe: Vec::new(),
        };
        for _ in 0..settings.copy_repeats.max(1) {
            if settings.copy_pipe {
                let pipe = bench.pipe(tenant, events).await?;
                env.progress(
                    NAME,
                    &format!("{events} events: pipe {:.0} events/s", pipe.rate()),
                );
                result.pipe.push(pipe);
            }
            let copy = bench
                .evshift(&env.evshift_bin, tenant, events, settings.batch_size)
                .await?;
            env.progress(
                NAME,
                &format!("{events} events: evshift {:.0} events/s", copy.rate()),
            );
            result.evshift.push(copy);
        }
        results.push(result);
    }
    Ok(results)
}

fn median_rate(runs: &[CopyRun]) -> f64 {
    median(&runs.iter().map(CopyRun::rate).collect::<Vec<_>>())
}

fn copy_figure(sizes: &[SizeResult]) -> Result<Option<Figure>> {
    if sizes.is_empty() {
        return Ok(None);
    }
    let line = |label: &str, runs: &dyn Fn(&SizeResult) -> &[CopyRun]| Line {
        label: label.to_owned(),
        points: sizes
            .iter()
            .filter(|s| !runs(s).is_empty())
            .map(|s| (s.events as f64, median_rate(runs(s))))
            .collect(),
    };
    let mut lines = vec![line("evshift bulk copy", &|s| &s.evshift)];
    if sizes.iter().any(|s| !s.pipe.is_empty()) {
        lines.push(line("raw COPY pipe", &|s| &s.pipe));
    }
    let svg = plot::rate_vs_size("Copy rate against the tenant's size (median)", &lines)?;
    Ok(Some(Figure {
        file: format!("{NAME}-copy-rate.svg"),
        svg,
    }))
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn markdown(
    env: &Environment,
    settings: &Settings,
    machine: &Machine,
    clients: &[ClientsResult],
    sizes: &[SizeResult],
    figure: &Option<Figure>,
) -> String {
    let shape = settings.shape;
    let mut out = String::from("## Scale (connections and tenant size)\n\n");
    let _ = write!(
        out,
        "How evshift grows with the number of client connections, and how its bulk copy rate holds \
         with the size of the tenant. Connections: one store, evshift in front of it (a fresh \
         process per connection count), the mix `{}` ({} protocol, {} tenants), closed loop; every \
         client is one evshift session with its own backend connection. Medians of {} rounds of \
         {:.1} s. RSS is evshift's VmRSS right after the clients connected and its VmHWM after the \
         rounds.\n\n",
        settings.mix,
        settings.protocol.name(),
        settings.tenants,
        shape.repeats,
        shape.duration.as_secs_f64()
    );
    out.push_str(&machine.markdown(&env.command));
    out.push('\n');
    if !clients.is_empty() {
        let mut table = Table::new(
            &[
                "clients",
                "tps (median)",
                "p50",
                "p99",
                "errors",
                "RSS idle",
                "RSS connected",
                "peak RSS",
                "RSS per connection",
            ],
            1,
        );
        for c in clients {
            let m =
                |f: &dyn Fn(&KindSummary) -> f64| median(&c.runs.iter().map(f).collect::<Vec<_>>());
            let connected = c.connected.iter().map(|m| m.rss_kb).max().unwrap_or(0);
            let per = connected.saturating_sub(c.idle.rss_kb) as f64 / c.clients.max(1) as f64;
            table.row(vec![
                thousands(c.clients as f64),
                thousands(m(&|s| s.tps)),
                ms(m(&|s| s.latency_us.p50 as f64)),
                ms(m(&|s| s.latency_us.p99 as f64)),
                thousands(c.runs.iter().map(|s| s.errors as f64).sum()),
                mb(c.idle.rss_kb),
                mb(connected),
                mb(c.peak_kb),
                format!("{per:.0} kB"),
            ]);
        }
        out.push_str(&table.to_markdown());
        for c in clients.iter().filter(|c| !c.error_samples.is_empty()) {
            let _ = writeln!(
                out,
                "\nFailed transactions at {} clients, for example: `{}`",
                c.clients,
                c.error_samples.join("`; `")
            );
        }
    }
    if !sizes.is_empty() {
        let _ = write!(
            out,
            "\nCopy rate: one tenant of each size in the source (streams of 10 events), copied into \
             the emptied, fully indexed target by evshift's bulk pass (batches of {}, a fresh evshift \
             and control database per copy){}; medians of {} copies per size.\n\n",
            settings.batch_size,
            if settings.copy_pipe {
                " and by the raw COPY pipe"
            } else {
                ""
            },
            settings.copy_repeats.max(1)
        );
        let mut table = Table::new(
            &[
                "events",
                "evshift events/s",
                "raw pipe events/s",
                "evshift / pipe",
                "evshift peak RSS",
            ],
            1,
        );
        for s in sizes {
            let (e, p) = (median_rate(&s.evshift), median_rate(&s.pipe));
            table.row(vec![
                thousands(s.events as f64),
                thousands(e),
                if s.pipe.is_empty() {
                    "-".into()
                } else {
                    thousands(p)
                },
                if s.pipe.is_empty() {
                    "-".into()
                } else {
                    crate::stats::ratio(e, p)
                },
                mb(s.evshift
                    .iter()
                    .filter_map(|r| r.peak_rss_kb)
                    .max()
                    .unwrap_or(0)),
            ]);
        }
        out.push_str(&table.to_markdown());
        if let Some(figure) = figure {
            let rates: Vec<String> = sizes
                .iter()
                .map(|s| {
                    format!(
                        "{} events: {} events/s",
                        thousands(s.events as f64),
                        thousands(median_rate(&s.evshift))
                    )
                })
                .collect();
            let _ = write!(
                out,
                "\n![copy rate against size](img/{})\n\n*Events per second of the bulk copy against \
                 the tenant's size (log scale), median of {} copies per size: {}. {} cores shared by \
                 the three PostgreSQL servers, evshift and other builds, see above.*\n",
                figure.file,
                settings.copy_repeats.max(1),
                rates.join("; "),
                machine.nproc
            );
        }
    }
    out
}
