//! `routed`: what tenant routing costs. The same load against the shared store directly,
//! against evshift with that store only (passthrough: every statement still classified and
//! resolved), and against evshift with two stores and half the tenants on the second (routed).
//! Every target gets fresh databases; the rounds interleave the targets; medians are reported.
//! The routed runs end with the acknowledged-event check against the control store's routes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use evshift_tests::{apply_event_store_schema, PgCluster};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::proxy::Proxy;
use super::{p99_points, Environment, Figure, RunShape, ScenarioOutput};
use crate::check::{check_acknowledged, CheckReport, StoreMap};
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

const NAME: &str = "routed";

/// Settings of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub shape: RunShape,
    /// Tenants; every second one (0, 2, ...) is placed on the dedicated store.
    pub tenants: usize,
    pub kinds: Vec<TxKind>,
    pub protocol: Protocol,
    /// Streams per tenant seeded for the reads.
    pub seed_aggregates: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Direct,
    Passthrough,
    Routed,
}

impl Target {
    const ALL: [Target; 3] = [Target::Direct, Target::Passthrough, Target::Routed];

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Passthrough => "passthrough",
            Target::Routed => "routed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Run {
    kind: TxKind,
    target: Target,
    round: usize,
    summary: KindSummary,
    #[serde(skip)]
    series: Vec<SeriesPoint>,
}

/// The three clusters.
struct Clusters {
    shared: PgCluster,
    dedicated: PgCluster,
    control: PgCluster,
}

/// Runs the scenario.
pub async fn run(env: &Environment, settings: &Settings) -> Result<ScenarioOutput> {
    let machine = Machine::describe(&env.evshift_bin);
    let tenants = tenant_ids(settings.tenants);
    env.progress(NAME, "starting the shared, dedicated and control clusters");
    let (shared, dedicated, control) = tokio::try_join!(
        PgCluster::start("bench-shared"),
        PgCluster::start("bench-dedicated"),
        PgCluster::start("bench-control")
    )?;
    let clusters = Clusters {
        shared,
        dedicated,
        control,
    };
    let mut runs = Vec::new();
    let mut checks = Vec::new();
    let (mut cache_hits, mut cache_misses) = (0.0, 0.0);
    for round in 0..settings.shape.repeats {
        let mut order = Target::ALL.to_vec();
        order.rotate_left(round % Target::ALL.len());
        for target in order {
            let outcome = run_target(env, settings, &clusters, &tenants, target, round).await?;
            runs.extend(outcome.runs);
            if let Some(check) = outcome.check {
                checks.push(check);
            }
            cache_hits += outcome.cache.0;
            cache_misses += outcome.cache.1;
        }
    }
    let figure = latency_figure(settings, &runs)?;
    let markdown = markdown(
        env,
        settings,
        &machine,
        &runs,
        &checks,
        (cache_hits, cache_misses),
        &figure,
    );
    Ok(ScenarioOutput {
        name: NAME.to_owned(),
        json: json!({
            "scenario": NAME,
            "settings": settings,
            "machine": machine,
            "runs": runs,
            "checks": checks,
            "parse_cache": {"hits": cache_hits, "misses": cache_misses},
        }),
        markdown,
        figures: figure.into_iter().collect(),
    })
}

/// What one target's turn of a round produced.
struct TargetOutcome {
    runs: Vec<Run>,
    check: Option<CheckReport>,
    /// Parse-cache hits and misses (routed only).
    cache: (f64, f64),
}

async fn run_target(
    env: &Environment,
    settings: &Settings,
    clusters: &Clusters,
    tenants: &[Uuid],
    target: Target,
    round: usize,
) -> Result<TargetOutcome> {
    let db = format!("bench_{}_{round}", target.name());
    for cluster in [&clusters.shared, &clusters.dedicated] {
        cluster.create_database(&db).await?;
        apply_event_store_schema(&cluster.connect(&db).await?).await?;
    }
    clusters.control.create_database(&db).await?;
    let shared_url = clusters.shared.url(&db);
    let dedicated_url = clusters.dedicated.url(&db);
    let control_url = clusters.control.url(&db);
    let proxy = match target {
        Target::Direct => None,
        Target::Passthrough => Some(
            Proxy::start(
                &env.evshift_bin,
                &[("shared", shared_url.clone())],
                None,
                "",
            )
            .await?,
        ),
        Target::Routed => {
            let stores = [
                ("shared", shared_url.clone()),
                ("dedicated", dedicated_url.clone()),
            ];
            let proxy = Proxy::start(&env.evshift_bin, &stores, Some(&control_url), "").await?;
            for tenant in tenants.iter().step_by(2) {
                proxy
                    .ctl(&["assign", &tenant.to_string(), "dedicated"])
                    .await?;
            }
            Some(proxy)
        }
    };
    let url = proxy.as_ref().map_or(shared_url.clone(), |p| p.url(&db));
    let seed_spec = SeedSpec {
        aggregates: settings.seed_aggregates,
        events: 10,
        snapshots: true,
    };
    // Through the URL, so that evshift places each tenant's streams on its store.
    seed::seed(&url, tenants, seed_spec).await?;
    let mut runs = Vec::new();
    let mut acknowledged = Vec::new();
    for &kind in &settings.kinds {
        let spec = settings.shape.spec(
            &url,
            tenants,
            kind,
            settings.protocol,
            settings.seed_aggregates,
            target.name(),
        );
        let result = load::run(spec)
            .await
            .with_context(|| format!("{kind} via {}", target.name()))?;
        let summary = result
            .report
            .kind(kind)
            .cloned()
            .context("no transactions ran")?;
        env.progress(
            NAME,
            &format!(
                "round {}/{}: {kind} {}: {:.0} tps, p99 {} us, {} errors {:?}",
                round + 1,
                settings.shape.repeats,
                target.name(),
                summary.tps,
                summary.latency_us.p99,
                summary.errors,
                result.report.error_samples
            ),
        );
        acknowledged.extend(result.acknowledged);
        runs.push(Run {
            kind,
            target,
            round,
            summary,
            series: result.report.series,
        });
    }
    let mut outcome = TargetOutcome {
        runs,
        check: None,
        cache: (0.0, 0.0),
    };
    if let (Target::Routed, Some(proxy)) = (target, &proxy) {
        outcome.cache = (
            proxy.metric("evshift_parse_cache_hits_total").await?,
            proxy.metric("evshift_parse_cache_misses_total").await?,
        );
        let stores = StoreMap {
            default_url: shared_url,
            stores: BTreeMap::from([
                ("shared".to_owned(), clusters.shared.url(&db)),
                ("dedicated".to_owned(), dedicated_url),
            ]),
            control_url: Some(control_url),
            tenants: BTreeMap::new(),
        };
        let check = check_acknowledged(&acknowledged, &stores).await?;
        env.progress(NAME, &check.summary());
        if !check.ok {
            anyhow::bail!("routed run {round}: {}", check.summary());
        }
        outcome.check = Some(check);
    }
    Ok(outcome)
}

fn grouped(runs: &[Run]) -> BTreeMap<(TxKind, Target), Vec<&Run>> {
    let mut map: BTreeMap<(TxKind, Target), Vec<&Run>> = BTreeMap::new();
    for run in runs {
        map.entry((run.kind, run.target)).or_default().push(run);
    }
    map
}

fn latency_figure(settings: &Settings, runs: &[Run]) -> Result<Option<Figure>> {
    let Some(&kind) = settings
        .kinds
        .iter()
        .find(|k| **k == TxKind::Append)
        .or(settings.kinds.first())
    else {
        return Ok(None);
    };
    let groups = grouped(runs);
    let mut lines = Vec::new();
    for target in Target::ALL {
        let Some(group) = groups.get(&(kind, target)) else {
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
        &format!("{kind}, 8 tenants over 2 stores: p99 latency per 100 ms"),
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
    runs: &[Run],
    checks: &[CheckReport],
    cache: (f64, f64),
    figure: &Option<Figure>,
) -> String {
    let groups = grouped(runs);
    let shape = settings.shape;
    let m = |kind: TxKind, target: Target, value: &dyn Fn(&KindSummary) -> f64| {
        groups.get(&(kind, target)).map_or(0.0, |g| {
            median(&g.iter().map(|r| value(&r.summary)).collect::<Vec<_>>())
        })
    };
    let mut out = format!("## Routed ({} tenants over 2 stores)\n\n", settings.tenants);
    let _ = write!(
        out,
        "What tenant routing costs. The same closed-loop load ({} clients, {} tenants, uniform, \
         {} protocol) against: the shared store directly; evshift with the shared store only \
         (passthrough: every tenant on the default store, every statement still classified and \
         resolved); evshift with two stores and every second tenant assigned to the dedicated store \
         (routed; the seed goes through evshift, so each tenant's streams are on its store). \
         `append` is the eventsource append transaction on per-client streams; `read_stream` reads \
         one of {} seeded 10-event streams of the drawn tenant. Medians of {} interleaved rounds of \
         {:.1} s, each target on fresh databases.\n\n",
        shape.clients,
        settings.tenants,
        settings.protocol.name(),
        settings.seed_aggregates,
        shape.repeats,
        shape.duration.as_secs_f64()
    );
    out.push_str(&machine.markdown(&env.command));
    out.push('\n');
    let mut table = Table::new(
        &[
            "workload",
            "direct tps",
            "passthrough tps",
            "routed tps",
            "routed / passthrough",
            "routed / direct",
            "p99 direct",
            "p99 passthrough",
            "p99 routed",
        ],
        1,
    );
    for &kind in &settings.kinds {
        let tps = |t| m(kind, t, &|s| s.tps);
        let p99 = |t| m(kind, t, &|s| s.latency_us.p99 as f64);
        table.row(vec![
            kind.to_string(),
            thousands(tps(Target::Direct)),
            thousands(tps(Target::Passthrough)),
            thousands(tps(Target::Routed)),
            ratio(tps(Target::Routed), tps(Target::Passthrough)),
            ratio(tps(Target::Routed), tps(Target::Direct)),
            ms(p99(Target::Direct)),
            ms(p99(Target::Passthrough)),
            ms(p99(Target::Routed)),
        ]);
    }
    out.push_str(&table.to_markdown());
    let acknowledged: usize = checks.iter().map(|c| c.acknowledged).sum();
    let _ = write!(
        out,
        "\nEnd check of the routed runs: all {} acknowledged appends are exactly once in the store \
         that `tenant_routing` names for their tenant ({} checks passed). Parse cache over the routed \
         runs: {} hits, {} misses.\n",
        thousands(acknowledged as f64),
        checks.iter().filter(|c| c.ok).count(),
        thousands(cache.0),
        thousands(cache.1)
    );
    if let Some(figure) = figure {
        let kind = TxKind::Append;
        let p99 = |t| ms(m(kind, t, &|s| s.latency_us.p99 as f64));
        let _ = write!(
            out,
            "\n![p99 latency per 100 ms](img/{})\n\n*p99 latency of each 100 ms of the \
             median-throughput round of `append` per target. Median p99 over the {} rounds: direct {}, \
             passthrough {}, routed {}. {} cores shared by everything, see above.*\n",
            figure.file,
            shape.repeats,
            p99(Target::Direct),
            p99(Target::Passthrough),
            p99(Target::Routed),
            machine.nproc
        );
    }
    out
}
