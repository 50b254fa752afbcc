//! `passthrough`: what evshift costs in front of a single store, against connecting directly
//! and against PgBouncer in transaction mode. One store, the same load against each target,
//! targets interleaved in every round, medians of the rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use evshift_tests::{apply_event_store_schema, PgCluster};
use serde::Serialize;
use serde_json::json;

use super::pgbouncer::{PgBouncer, PgBouncerUse};
use super::proxy::Proxy;
use super::{p99_points, Environment, Figure, RunShape, ScenarioOutput};
use crate::ids::tenant_ids;
use crate::load;
use crate::machine::Machine;
use crate::mix::TxKind;
use crate::plot::{self, Line};
use crate::report::{KindSummary, SeriesPoint};
use crate::seed::{self, SeedSpec};
use crate::stats::{median, median_index, ratio};
use crate::table::{ms, thousands, Table};
use crate::workload::Protocol;

const NAME: &str = "passthrough";
const DB: &str = "app";

/// Settings of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub shape: RunShape,
    pub tenants: usize,
    pub protocols: Vec<Protocol>,
    pub kinds: Vec<TxKind>,
    #[serde(skip)]
    pub pgbouncer: PgBouncerUse,
    /// Streams per tenant seeded for the reads.
    pub seed_aggregates: usize,
}

/// Where the load goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Direct,
    Evshift,
    PgBouncer,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Evshift => "evshift",
            Target::PgBouncer => "PgBouncer",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
struct Run {
    kind: TxKind,
    protocol: Protocol,
    target: Target,
    round: usize,
    summary: KindSummary,
    #[serde(skip)]
    series: Vec<SeriesPoint>,
}

/// Runs the scenario.
pub async fn run(env: &Environment, settings: &Settings) -> Result<ScenarioOutput> {
    let machine = Machine::describe(&env.evshift_bin);
    let tenants = tenant_ids(settings.tenants);
    let pgbouncer_bin = PgBouncer::for_use(settings.pgbouncer)?;
    env.progress(NAME, "starting a store, seeding it, starting evshift");
    let store = PgCluster::start("bench-store").await?;
    store.create_database(DB).await?;
    apply_event_store_schema(&store.connect(DB).await?).await?;
    let seed_spec = SeedSpec {
        aggregates: settings.seed_aggregates,
        events: 10,
        snapshots: false,
    };
    seed::seed(&store.url(DB), &tenants, seed_spec).await?;
    let proxy = Proxy::start(&env.evshift_bin, &[("store", store.url(DB))], None, "").await?;
    let bouncer = match &pgbouncer_bin {
        Some(binary) => {
            Some(PgBouncer::start(binary, store.port(), DB, settings.shape.clients).await?)
        }
        None => None,
    };
    let mut targets = vec![Target::Direct, Target::Evshift];
    if bouncer.is_some() {
        targets.push(Target::PgBouncer);
    }
    let url = |target: Target, protocol: Protocol| match (target, &bouncer) {
        (Target::Direct, _) => store.url(DB),
        (Target::Evshift, _) => proxy.url(DB),
        (Target::PgBouncer, Some(b)) if protocol == Protocol::Prepared => {
            b.url(&format!("{DB}_session"))
        }
        (Target::PgBouncer, Some(b)) => b.url(DB),
        (Target::PgBouncer, None) => unreachable!("PgBouncer is a target only when it runs"),
    };
    let mut runs = Vec::new();
    let shape = settings.shape;
    for round in 0..shape.repeats {
        for &kind in &settings.kinds {
            for &protocol in &settings.protocols {
                // Rotate the order every round so no target always runs first.
                let mut order = targets.clone();
                order.rotate_left(round % targets.len());
                for target in order {
                    let spec = shape.spec(
                        &url(target, protocol),
                        &tenants,
                        kind,
                        protocol,
                        settings.seed_aggregates,
                        target.name(),
                    );
                    let result = load::run(spec).await.with_context(|| {
                        format!("{kind} {} via {}", protocol.name(), target.name())
                    })?;
                    let summary = result
                        .report
                        .kind(kind)
                        .cloned()
                        .context("no transactions ran")?;
                    env.progress(
                        NAME,
                        &format!(
                            "round {}/{}: {kind} {} {}: {:.0} tps, p99 {} us, {} errors {:?}",
                            round + 1,
                            shape.repeats,
                            protocol.name(),
                            target.name(),
                            summary.tps,
                            summary.latency_us.p99,
                            summary.errors,
                            result.report.error_samples
                        ),
                    );
                    runs.push(Run {
                        kind,
                        protocol,
                        target,
                        round,
                        summary,
                        series: result.report.series,
                    });
                }
            }
        }
    }
    let evshift_memory = proxy.memory()?;
    let figure = latency_figure(settings, &targets, &runs)?;
    let markdown = markdown(
        env,
        settings,
        &machine,
        &targets,
        &runs,
        bouncer.as_ref(),
        &figure,
    );
    Ok(ScenarioOutput {
        name: NAME.to_owned(),
        json: json!({
            "scenario": NAME,
            "settings": settings,
            "machine": machine,
            "pgbouncer": bouncer.as_ref().map(PgBouncer::version),
            "evshift_memory_kb": evshift_memory,
            "runs": runs,
        }),
        markdown,
        figures: figure.into_iter().collect(),
    })
}

type Key = (TxKind, Protocol, Target);

fn by_key(runs: &[Run]) -> BTreeMap<Key, Vec<&Run>> {
    let mut map: BTreeMap<Key, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        map.entry((run.kind, run.protocol, run.target))
            .or_default()
            .push(run);
    }
    map
}

fn medians(runs: &[&Run], value: impl Fn(&KindSummary) -> f64) -> f64 {
    median(&runs.iter().map(|r| value(&r.summary)).collect::<Vec<_>>())
}

/// p99 per 100 ms of the first kind and protocol, each target's median run.
fn latency_figure(settings: &Settings, targets: &[Target], runs: &[Run]) -> Result<Option<Figure>> {
    let (Some(&kind), Some(&protocol)) = (settings.kinds.first(), settings.protocols.first())
    else {
        return Ok(None);
    };
    let grouped = by_key(runs);
    let mut lines = Vec::new();
    for &target in targets {
        let Some(group) = grouped.get(&(kind, protocol, target)) else {
            continue;
        };
        let tps: Vec<f64> = group.iter().map(|r| r.summary.tps).collect();
        if let Some(i) = median_index(&tps) {
            lines.push(Line {
                label: target.name().to_owned(),
                points: p99_points(&group[i].series),
            });
        }
    }
    let svg = plot::latency_over_time(
        &format!(
            "{kind}, {} protocol: p99 latency per 100 ms",
            protocol.name()
        ),
        "p99 latency (ms)",
        &lines,
        &[],
    )?;
    Ok(Some(Figure {
        file: format!("{NAME}-latency.svg"),
        svg,
    }))
}

fn markdown(
    env: &Environment,
    settings: &Settings,
    machine: &Machine,
    targets: &[Target],
    runs: &[Run],
    bouncer: Option<&PgBouncer>,
    figure: &Option<Figure>,
) -> String {
    let grouped = by_key(runs);
    let has_bouncer = targets.contains(&Target::PgBouncer);
    let shape = settings.shape;
    let mut out = String::from("## Passthrough (single store)\n\n");
    let _ = write!(
        out,
        "What evshift costs in front of one store: every statement goes to that store, but evshift \
         still reads the protocol, classifies each statement and resolves its tenant. The same \
         closed-loop load (`evshift-bench`'s generator: tokio-postgres, {} clients, {} tenants) runs \
         against the store directly, through evshift{}. `append` is the eventsource-py append \
         transaction (BEGIN, version read, `INSERT ... RETURNING global_position`, COMMIT) on \
         per-client streams; `read_stream` reads one of {} seeded 10-event streams. Each cell is the \
         median of {} rounds of {:.1} s (after {:.1} s of warm-up), the targets interleaved in every \
         round.\n\n",
        shape.clients,
        settings.tenants,
        if has_bouncer { " and through PgBouncer" } else { "" },
        settings.seed_aggregates,
        shape.repeats,
        shape.duration.as_secs_f64(),
        shape.warmup.as_secs_f64()
    );
    out.push_str(&machine.markdown(&env.command));
    if let Some(b) = bouncer {
        let _ = writeln!(
            out,
            "- PgBouncer {}: trust, `default_pool_size` = {} (no client waits for a server \
             connection), `pool_mode = transaction`; for the `prepared` protocol `pool_mode = \
             session`, because PgBouncer before 1.21 loses protocol-level prepared statements \
             between transactions.",
            b.version(),
            shape.clients
        );
    } else {
        out.push_str("- PgBouncer: not installed, left out.\n");
    }
    out.push_str("- evshift: trust, one backend connection per client session, no control store, log level warn.\n\n");

    let mut header = vec!["workload", "protocol", "direct", "evshift"];
    if has_bouncer {
        header.push("PgBouncer");
    }
    header.push("evshift / direct");
    if has_bouncer {
        header.push("evshift / PgBouncer");
    }
    let table = |value: &dyn Fn(&KindSummary) -> f64, fmt: &dyn Fn(f64) -> String| {
        let mut t = Table::new(&header, 2);
        for &kind in &settings.kinds {
            for &protocol in &settings.protocols {
                let m = |target: Target| {
                    grouped
                        .get(&(kind, protocol, target))
                        .map_or(0.0, |runs| medians(runs, value))
                };
                let (d, e, b) = (m(Target::Direct), m(Target::Evshift), m(Target::PgBouncer));
                let mut row = vec![kind.to_string(), protocol.name().to_owned(), fmt(d), fmt(e)];
                if has_bouncer {
                    row.push(fmt(b));
                }
                row.push(ratio(e, d));
                if has_bouncer {
                    row.push(ratio(e, b));
                }
                t.row(row);
            }
        }
        t.to_markdown()
    };
    out.push_str("Throughput (transactions per second, median; higher is better):\n\n");
    out.push_str(&table(&|s| s.tps, &thousands));
    out.push_str("\nLatency p50 (median over rounds; lower is better):\n\n");
    out.push_str(&table(&|s| s.latency_us.p50 as f64, &ms));
    out.push_str("\nLatency p99 (median over rounds; lower is better):\n\n");
    out.push_str(&table(&|s| s.latency_us.p99 as f64, &ms));
    out.push_str("\nEvery round (tps):\n\n");
    let mut every = Table::new(&["workload", "protocol", "target", "tps per round"], 3);
    for (key, group) in &grouped {
        let list: Vec<String> = group.iter().map(|r| thousands(r.summary.tps)).collect();
        every.row(vec![
            key.0.to_string(),
            key.1.name().to_owned(),
            key.2.name().to_owned(),
            list.join(", "),
        ]);
    }
    out.push_str(&every.to_markdown());
    if let (Some(figure), Some(kind), Some(protocol)) =
        (figure, settings.kinds.first(), settings.protocols.first())
    {
        let p99 = |t: Target| {
            grouped
                .get(&(*kind, *protocol, t))
                .map_or(0.0, |runs| medians(runs, |s| s.latency_us.p99 as f64))
        };
        let _ = write!(
            out,
            "\n![p99 latency per 100 ms]({})\n\n*p99 latency of each 100 ms of the median-throughput \
             round of `{kind}` ({} protocol) per target. Median p99 over the {} rounds: direct {}, \
             evshift {}{}. {} cores shared by everything, see above.*\n",
            format_args!("img/{}", figure.file),
            protocol.name(),
            shape.repeats,
            ms(p99(Target::Direct)),
            ms(p99(Target::Evshift)),
            if has_bouncer {
                format!(", PgBouncer {}", ms(p99(Target::PgBouncer)))
            } else {
                String::new()
            },
            machine.nproc
        );
    }
    out
}
