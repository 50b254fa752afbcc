//! The scenario's results: the migrations' windows and cutovers summarised and held against
//! the targets, as JSON, as the markdown section and as the latency figure of one migration.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::cycle::{Cycle, MeasuredSummary, Pools};
use super::pause_log::{Log, LoggedCutover};
use super::windows::{nearest_rank, Latency};
use super::{Settings, NAME};
use crate::check::CheckReport;
use crate::load::LoadRun;
use crate::machine::Machine;
use crate::plot::{self, Line, Marker};
use crate::recorder::Mark;
use crate::report::SeriesPoint;
use crate::scenario::{p99_points, Environment, Figure};
use crate::stats::median;
use crate::table::{ms, thousands, Table};

/// Targets the figures are held against.
const ADDED_P99_TARGET_MS: f64 = 1.0;
const PAUSE_P99_TARGET_MS: f64 = 50.0;
const PAUSE_MAX_TARGET_MS: f64 = 100.0;
/// Other tenants' p99 around the cutovers over their p99 before the migrations.
const OTHERS_RATIO_TARGET: f64 = 1.10;
/// Seconds of steady load shown after the first migration's cutover.
const FIGURE_TAIL_S: f64 = 3.0;

/// The windows pooled over every migration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pooled {
    pub before: MeasuredSummary,
    pub dual_write: MeasuredSummary,
    pub around_cutover: MeasuredSummary,
}

/// What DUAL_WRITE added to the migrating tenant's append latency (µs; negative: less).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Added {
    /// Pooled DUAL_WRITE windows minus pooled windows before.
    pub p50_us: f64,
    pub p99_us: f64,
    /// The median over the migrations of each one's difference.
    pub median_p50_us: f64,
    pub median_p99_us: f64,
}

/// One cutover's pause taken apart (ms).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Breakdown {
    /// Gate closed to gate open (evshift's histogram).
    pub pause_ms: f64,
    /// Gate closed to the final tail's last checkpoint under the hold: the tenant's
    /// transactions in flight ending, then the final tail copying. `None`: nothing to copy.
    pub in_flight_and_tail_ms: Option<f64>,
    /// From there (or from the gate closing) to the commit: the counts of both stores and the
    /// hash of the rows since the checkpoint.
    pub verification_ms: f64,
    /// The control-store commit of MIGRATED, the routing table reload, the gate opening.
    pub commit_and_reload_ms: f64,
    pub final_tail_events: i64,
}

impl Breakdown {
    fn of(cycle: &Cycle, logged: Option<&LoggedCutover>) -> Breakdown {
        let c = &cycle.cutover;
        let tail = logged.and_then(|l| l.final_tail_done_ms);
        Breakdown {
            pause_ms: c.pause_ms,
            in_flight_and_tail_ms: tail,
            verification_ms: c.pause_ms_before_commit - tail.unwrap_or(0.0),
            commit_and_reload_ms: c.pause_ms - c.pause_ms_before_commit,
            final_tail_events: c.final_tail_events,
        }
    }
}

/// The cutover pauses (ms).
#[derive(Debug, Clone, Serialize)]
pub struct Pauses {
    /// Every successful cutover's pause, in order.
    pub all_ms: Vec<f64>,
    /// Nearest-rank quantiles over the cutovers.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Medians over the cutovers of each part.
    pub median_before_commit_ms: f64,
    pub median_commit_and_reload_ms: f64,
    pub median_verification_ms: f64,
    /// Over the cutovers whose final tail copied something.
    pub median_in_flight_and_tail_ms: Option<f64>,
    pub final_tail_copied: usize,
    pub median_final_tail_events: f64,
    /// The longest cutover, taken apart.
    pub longest: Option<Breakdown>,
    /// Cutover attempts that rolled back (and were tried again).
    pub rolled_back: usize,
}

/// The other tenants' latency around the cutovers against before the migrations.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Others {
    /// p99 of the pooled windows (µs).
    pub append_before_p99_us: u64,
    pub append_cutover_p99_us: u64,
    pub read_before_p99_us: u64,
    pub read_cutover_p99_us: u64,
    /// The median over the cutovers of each window's p99 (µs).
    pub append_cutover_median_p99_us: f64,
    pub read_cutover_median_p99_us: f64,
    /// From the 100 ms series: the largest p99 of a bin around a cutover, the median of the
    /// largest per cutover, and the median bin p99 in the windows before (µs, all kinds).
    pub worst_bin_p99_us: u64,
    pub median_worst_bin_p99_us: f64,
    pub before_median_bin_p99_us: f64,
}

/// A target and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// Everything the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub tenant: Uuid,
    pub cycles: Vec<Cycle>,
    /// Per cycle, what evshift's log shows of its cutover.
    pub logged: Vec<Option<LoggedCutover>>,
    pub pooled: Pooled,
    pub added: Added,
    pub pauses: Pauses,
    pub others: Others,
    pub check: CheckReport,
    pub missing: usize,
    pub duplicated: usize,
    /// Transactions that failed, per load, and a few messages.
    pub moving_errors: u64,
    pub others_errors: u64,
    pub error_samples: Vec<String>,
    /// evshift's WARN and ERROR log lines: how many, and the first ones.
    pub evshift_problems: usize,
    pub evshift_problem_samples: Vec<String>,
    /// Achieved rates over the whole run (transactions per second).
    pub moving_tps: f64,
    pub others_tps: f64,
    pub elapsed_s: f64,
    pub targets: Vec<Target>,
}

impl Results {
    /// Summarises the cycles, the pooled windows, the log and the end check.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        settings: &Settings,
        cycles: Vec<Cycle>,
        pools: &Pools,
        log: &Log,
        tenant: Uuid,
        moving: &LoadRun,
        others: &LoadRun,
        check: CheckReport,
        elapsed: Duration,
    ) -> Results {
        let logged: Vec<Option<LoggedCutover>> = cycles
            .iter()
            .map(|c| log.cutover_in(tenant, c.cutover.requested_at, c.cutover.returned_at))
            .collect();
        let pooled = Pooled {
            before: pools.before.summary(),
            dual_write: pools.dual_write.summary(),
            around_cutover: pools.cutover.summary(),
        };
        let added = added(&pooled, &cycles);
        let pauses = pauses(&cycles, &logged);
        let others_figures = others_figures(settings, &pooled, &cycles, others);
        let missing = check.tenants.iter().map(|t| t.missing).sum();
        let duplicated = check.tenants.iter().map(|t| t.duplicated).sum();
        let mut error_samples = moving.report.error_samples.clone();
        error_samples.extend(others.report.error_samples.iter().cloned());
        let (evshift_problem_samples, evshift_problems) = log.problems();
        let mut results = Results {
            tenant,
            cycles,
            logged,
            pooled,
            added,
            pauses,
            others: others_figures,
            check,
            missing,
            duplicated,
            moving_errors: moving.report.total.errors,
            others_errors: others.report.total.errors,
            error_samples,
            evshift_problems,
            evshift_problem_samples,
            moving_tps: moving.report.total.tps,
            others_tps: others.report.total.tps,
            elapsed_s: elapsed.as_secs_f64(),
            targets: Vec::new(),
        };
        results.targets = targets(&results);
        results
    }
}

fn added(pooled: &Pooled, cycles: &[Cycle]) -> Added {
    let diff = |b: &Latency, d: &Latency, q: fn(&Latency) -> u64| q(d) as f64 - q(b) as f64;
    let p50 = |l: &Latency| l.latency_us.p50;
    let p99 = |l: &Latency| l.latency_us.p99;
    let per_cycle = |q: fn(&Latency) -> u64| {
        median(
            &cycles
                .iter()
                .map(|c| diff(&c.before.moving, &c.dual_write.moving, q))
                .collect::<Vec<_>>(),
        )
    };
    Added {
        p50_us: diff(&pooled.before.moving, &pooled.dual_write.moving, p50),
        p99_us: diff(&pooled.before.moving, &pooled.dual_write.moving, p99),
        median_p50_us: per_cycle(p50),
        median_p99_us: per_cycle(p99),
    }
}

fn pauses(cycles: &[Cycle], logged: &[Option<LoggedCutover>]) -> Pauses {
    let breakdowns: Vec<Breakdown> = cycles
        .iter()
        .zip(logged)
        .map(|(c, l)| Breakdown::of(c, l.as_ref()))
        .collect();
    let all_ms: Vec<f64> = breakdowns.iter().map(|b| b.pause_ms).collect();
    let med = |f: &dyn Fn(&Breakdown) -> f64| median(&breakdowns.iter().map(f).collect::<Vec<_>>());
    let tails: Vec<f64> = breakdowns
        .iter()
        .filter_map(|b| b.in_flight_and_tail_ms)
        .collect();
    Pauses {
        p50_ms: nearest_rank(&all_ms, 0.50),
        p99_ms: nearest_rank(&all_ms, 0.99),
        max_ms: all_ms.iter().copied().fold(0.0, f64::max),
        median_before_commit_ms: median(
            &cycles
                .iter()
                .map(|c| c.cutover.pause_ms_before_commit)
                .collect::<Vec<_>>(),
        ),
        median_commit_and_reload_ms: med(&|b| b.commit_and_reload_ms),
        median_verification_ms: med(&|b| b.verification_ms),
        median_in_flight_and_tail_ms: (!tails.is_empty()).then(|| median(&tails)),
        final_tail_copied: tails.len(),
        median_final_tail_events: med(&|b| b.final_tail_events as f64),
        longest: breakdowns
            .iter()
            .copied()
            .max_by(|a, b| a.pause_ms.total_cmp(&b.pause_ms)),
        rolled_back: cycles.iter().map(|c| c.cutover.rolled_back.len()).sum(),
        all_ms,
    }
}

fn others_figures(
    settings: &Settings,
    pooled: &Pooled,
    cycles: &[Cycle],
    others: &LoadRun,
) -> Others {
    let per_cutover = |f: fn(&MeasuredSummary) -> &Latency| {
        median(
            &cycles
                .iter()
                .map(|c| f(&c.around_cutover).latency_us.p99 as f64)
                .collect::<Vec<_>>(),
        )
    };
    let series = &others.report.series;
    let marks = &others.report.marks;
    let margin_ms = settings.cutover_margin.as_secs_f64() * 1e3;
    let worst: Vec<u64> = (1..=cycles.len())
        .filter_map(|n| {
            let from = last_mark(marks, &format!("cutover {n}"))? - margin_ms;
            let to = last_mark(marks, &format!("migrated {n}"))? + margin_ms;
            bins_in(series, from, to).map(|p| p.p99_us).max()
        })
        .collect();
    let window_ms = settings.window.as_secs_f64() * 1e3;
    let before_bins: Vec<f64> = (1..=cycles.len())
        .filter_map(|n| last_mark(marks, &format!("before {n}")))
        .flat_map(|from| bins_in(series, from, from + window_ms).map(|p| p.p99_us as f64))
        .collect();
    Others {
        append_before_p99_us: pooled.before.others_append.latency_us.p99,
        append_cutover_p99_us: pooled.around_cutover.others_append.latency_us.p99,
        read_before_p99_us: pooled.before.others_read.latency_us.p99,
        read_cutover_p99_us: pooled.around_cutover.others_read.latency_us.p99,
        append_cutover_median_p99_us: per_cutover(|m| &m.others_append),
        read_cutover_median_p99_us: per_cutover(|m| &m.others_read),
        worst_bin_p99_us: worst.iter().copied().max().unwrap_or(0),
        median_worst_bin_p99_us: median(&worst.iter().map(|w| *w as f64).collect::<Vec<_>>()),
        before_median_bin_p99_us: median(&before_bins),
    }
}

/// The non-empty 100 ms bins that overlap `from..to` (ms since measuring started).
fn bins_in(series: &[SeriesPoint], from: f64, to: f64) -> impl Iterator<Item = &SeriesPoint> {
    series.iter().filter(move |p| {
        let start = p.t_ms as f64;
        p.count > 0 && start + 100.0 > from && start < to
    })
}

/// The time of the last mark named `label`.
fn last_mark(marks: &[Mark], label: &str) -> Option<f64> {
    marks
        .iter()
        .rev()
        .find(|m| m.label == label)
        .map(|m| m.t_ms)
}

fn targets(r: &Results) -> Vec<Target> {
    let o = &r.others;
    let ratio = |cut: u64, before: u64| {
        if before == 0 {
            f64::INFINITY
        } else {
            cut as f64 / before as f64
        }
    };
    let (append_ratio, read_ratio) = (
        ratio(o.append_cutover_p99_us, o.append_before_p99_us),
        ratio(o.read_cutover_p99_us, o.read_before_p99_us),
    );
    let added_ms = r.added.p99_us / 1e3;
    vec![
        Target {
            what: "p99 added by DUAL_WRITE to the migrating tenant's appends".into(),
            goal: format!("≤ {ADDED_P99_TARGET_MS} ms"),
            measured: format!(
                "{added_ms:+.2} ms (median over the migrations {:+.2} ms)",
                r.added.median_p99_us / 1e3
            ),
            met: added_ms <= ADDED_P99_TARGET_MS,
        },
        Target {
            what: format!("cutover pause p99 over {} cutovers", r.pauses.all_ms.len()),
            goal: format!("≤ {PAUSE_P99_TARGET_MS} ms"),
            measured: format!("{:.1} ms", r.pauses.p99_ms),
            met: r.pauses.p99_ms <= PAUSE_P99_TARGET_MS,
        },
        Target {
            what: "cutover pause max".into(),
            goal: format!("≤ {PAUSE_MAX_TARGET_MS} ms"),
            measured: format!("{:.1} ms", r.pauses.max_ms),
            met: r.pauses.max_ms <= PAUSE_MAX_TARGET_MS,
        },
        Target {
            what: "other tenants' append p99 around the cutovers vs before".into(),
            goal: format!("≤ {OTHERS_RATIO_TARGET:.2}×"),
            measured: format!(
                "{append_ratio:.2}× ({} vs {})",
                ms(o.append_cutover_p99_us as f64),
                ms(o.append_before_p99_us as f64)
            ),
            met: append_ratio <= OTHERS_RATIO_TARGET,
        },
        Target {
            what: "other tenants' read_stream p99 around the cutovers vs before".into(),
            goal: format!("≤ {OTHERS_RATIO_TARGET:.2}×"),
            measured: format!(
                "{read_ratio:.2}× ({} vs {})",
                ms(o.read_cutover_p99_us as f64),
                ms(o.read_before_p99_us as f64)
            ),
            met: read_ratio <= OTHERS_RATIO_TARGET,
        },
        Target {
            what: "acknowledged appends lost / duplicated".into(),
            goal: "0 / 0".into(),
            measured: format!("{} / {}", r.missing, r.duplicated),
            met: r.missing == 0 && r.duplicated == 0,
        },
    ]
}

/// p99 per 100 ms of both loads across the first migration, its steps marked.
pub fn figure(results: &Results, moving: &LoadRun, others: &LoadRun) -> anyhow::Result<Figure> {
    let marks = &moving.report.marks;
    // Both loads marked "aligned" at the same instant: the others' clock shifted onto the
    // migrating tenant's.
    let offset_ms = match (
        last_mark(marks, "aligned"),
        last_mark(&others.report.marks, "aligned"),
    ) {
        (Some(a), Some(b)) => a - b,
        _ => 0.0,
    };
    let end_s = last_mark(marks, "migrated 1").map_or(f64::INFINITY, |t| t / 1e3 + FIGURE_TAIL_S);
    let within = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        points.into_iter().filter(|p| p.0 <= end_s).collect()
    };
    let shifted: Vec<(f64, f64)> = p99_points(&others.report.series)
        .into_iter()
        .map(|(t, v)| (t + offset_ms / 1e3, v))
        .filter(|p| p.0 >= 0.0)
        .collect();
    let lines = vec![
        Line {
            label: "migrating tenant (appends)".into(),
            points: within(p99_points(&moving.report.series)),
        },
        Line {
            label: "other tenants (appends, stream reads)".into(),
            points: within(shifted),
        },
    ];
    let markers: Vec<Marker> = [
        ("migrate 1", "migrate"),
        ("dual-write 1", "DUAL_WRITE"),
        ("cutover 1", "cutover"),
    ]
    .iter()
    .filter_map(|(mark, label)| {
        last_mark(marks, mark).map(|t| Marker {
            x: t / 1e3,
            label: (*label).to_owned(),
        })
    })
    .collect();
    let pause = results.cycles.first().map_or(0.0, |c| c.cutover.pause_ms);
    let svg = plot::latency_over_time(
        &format!("p99 latency per 100 ms across one migration (its cutover paused {pause:.0} ms)"),
        "p99 latency (ms)",
        &lines,
        &markers,
    )?;
    Ok(Figure {
        file: format!("{NAME}-latency.svg"),
        svg,
    })
}

/// The docs section.
pub fn markdown(
    env: &Environment,
    settings: &Settings,
    machine: &Machine,
    r: &Results,
    figure: &Figure,
) -> String {
    let mut out = format!(
        "## Live migration under load ({} cutovers)\n\n",
        r.cycles.len()
    );
    intro(&mut out, settings);
    out.push_str(&machine.markdown(&env.command));
    let _ = writeln!(
        out,
        "- The load generator's clients, the three PostgreSQL servers and evshift (which also runs \
         the copy, the dual-write and the cutover) all share the {} cores. The measured part took \
         {:.0} s; achieved rates {} appends/s (migrating tenant) and {} transactions/s (others).\n",
        machine.nproc,
        r.elapsed_s,
        thousands(r.moving_tps),
        thousands(r.others_tps)
    );
    targets_table(&mut out, r);
    latency_table(&mut out, r);
    pause_table(&mut out, r);
    others_table(&mut out, r);
    let _ = write!(
        out,
        "\nEnd check: {} acknowledged appends ({} of the migrating tenant), each looked up in the \
         store that `tenant_routing` names for its tenant at the end: {} lost, {} duplicated. \
         Failed transactions: {} of the migrating tenant, {} of the others{}. evshift logged {} \
         warnings or errors.\n",
        thousands(r.check.acknowledged as f64),
        thousands(
            r.check
                .tenants
                .iter()
                .filter(|t| t.tenant == r.tenant)
                .map(|t| t.acknowledged)
                .sum::<usize>() as f64
        ),
        r.missing,
        r.duplicated,
        r.moving_errors,
        r.others_errors,
        if r.error_samples.is_empty() {
            String::new()
        } else {
            format!(" (`{}`)", r.error_samples.join("`; `"))
        },
        r.evshift_problems
    );
    let first = r.cycles.first();
    let _ = write!(
        out,
        "\n![p99 latency per 100 ms across one migration](img/{})\n\n*p99 latency of each 100 ms \
         of both loads from the start of measuring through the first migration (shared -> \
         dedicated, {} events when the copy counted them) to {FIGURE_TAIL_S:.0} s after its \
         cutover; dashed lines: `evshift ctl migrate`, DUAL_WRITE with a lag of at most {} \
         events, `evshift ctl cutover` ({:.1} ms pause).*\n",
        figure.file,
        thousands(first.map_or(0.0, |c| c.events_total as f64)),
        settings.max_lag,
        first.map_or(0.0, |c| c.cutover.pause_ms)
    );
    out
}

fn intro(out: &mut String, s: &Settings) {
    let _ = write!(
        out,
        "What a live migration costs while it runs. One tenant appends at a fixed {} appends/s \
         ({} clients, {} protocol; latency counts from each transaction's scheduled start, so a \
         held append reports its wait) while {} other tenants run {} transactions/s ({} clients, \
         half appends, half reads of seeded streams), all through evshift. The tenant starts \
         with {} seeded events and is migrated back and forth between the shared and the \
         dedicated store {} times (`evshift ctl migrate TENANT --to STORE --manual-cutover \
         --batch-size {}`, default `hash` verification), under the same load throughout. Each \
         migration: {:.0} s measured before it; the tenant's old copy deleted from the store it \
         goes back to; the migration until DUAL_WRITE with a lag of at most {} events; {:.0} s \
         measured in DUAL_WRITE; `evshift ctl cutover`, measured from {:.1} s before the command \
         to {:.1} s after it returned. A window is exact: the transactions that completed in it, \
         from the load's cumulative HDR histograms. The pause of a cutover is the gate-closed to \
         gate-open time evshift records in `migration_cutover_pause_duration_ms` (this cutover's \
         increment of the histogram's sum); the audit row's `pause_ms_before_commit` and the \
         JSON log (gate lines, the final tail's checkpoints) take it apart.\n\n",
        thousands(s.rate),
        s.clients,
        s.protocol.name(),
        s.other_tenants,
        thousands(s.other_rate),
        s.other_clients,
        thousands(s.seed_events as f64),
        s.cutovers,
        s.batch_size,
        s.window.as_secs_f64(),
        s.max_lag,
        s.window.as_secs_f64(),
        s.cutover_margin.as_secs_f64(),
        s.cutover_margin.as_secs_f64()
    );
}

fn targets_table(out: &mut String, r: &Results) {
    let mut table = Table::new(&["target", "goal", "measured", "met"], 4);
    for t in &r.targets {
        table.row(vec![
            t.what.clone(),
            t.goal.clone(),
            t.measured.clone(),
            if t.met { "yes" } else { "**no**" }.into(),
        ]);
    }
    out.push_str(&table.to_markdown());
}

fn latency_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\nThe migrating tenant's appends, pooled over the {} migrations (the difference of the \
         medians over the migrations in brackets):\n",
        r.cycles.len()
    );
    let mut table = Table::new(&["window", "appends", "p50", "p99", "p99.9", "max"], 1);
    let row = |name: &str, l: &Latency| {
        vec![
            name.to_owned(),
            thousands(l.count as f64),
            ms(l.latency_us.p50 as f64),
            ms(l.latency_us.p99 as f64),
            ms(l.latency_us.p999 as f64),
            ms(l.latency_us.max as f64),
        ]
    };
    table.row(row("before each migration", &r.pooled.before.moving));
    table.row(row(
        "DUAL_WRITE, before each cutover",
        &r.pooled.dual_write.moving,
    ));
    table.row(vec![
        "added by DUAL_WRITE".into(),
        String::new(),
        format!(
            "{:+.2} ms ({:+.2} ms)",
            r.added.p50_us / 1e3,
            r.added.median_p50_us / 1e3
        ),
        format!(
            "{:+.2} ms ({:+.2} ms)",
            r.added.p99_us / 1e3,
            r.added.median_p99_us / 1e3
        ),
        String::new(),
        String::new(),
    ]);
    table.row(row("around each cutover", &r.pooled.around_cutover.moving));
    out.push_str(&table.to_markdown());
}

fn pause_table(out: &mut String, r: &Results) {
    let p = &r.pauses;
    let _ = writeln!(
        out,
        "\nCutover pauses (nearest rank over {} cutovers, so p99 is the largest; {} attempts \
         rolled back and were tried again):\n",
        p.all_ms.len(),
        p.rolled_back
    );
    let mut table = Table::new(&["pause", "p50", "p99", "max"], 1);
    table.row(vec![
        "gate closed to gate open".into(),
        format!("{:.1} ms", p.p50_ms),
        format!("{:.1} ms", p.p99_ms),
        format!("{:.1} ms", p.max_ms),
    ]);
    out.push_str(&table.to_markdown());
    let list: Vec<String> = p.all_ms.iter().map(|v| format!("{v:.1}")).collect();
    let _ = write!(
        out,
        "\nEvery pause (ms, in order): {}.\n\nWhere it goes (medians over the cutovers): {:.1} ms \
         from the gate closing to the start of the control-store commit (`pause_ms_before_commit`), \
         of which {} and {:.1} ms verifying (both stores' counts, the hash of the rows since the \
         checkpoint); {:.1} ms committing MIGRATED and reloading the routing table. The final \
         tail copied {:.0} events (median).",
        list.join(", "),
        p.median_before_commit_ms,
        match p.median_in_flight_and_tail_ms {
            Some(t) => format!(
                "{t:.1} ms until the final tail's last checkpoint (in-flight transactions \
                 ending, then the copy; {} of {} cutovers copied something)",
                p.final_tail_copied,
                p.all_ms.len()
            ),
            None => "(the final tail never had anything to copy)".to_owned(),
        },
        p.median_verification_ms,
        p.median_commit_and_reload_ms,
        p.median_final_tail_events
    );
    if let Some(l) = &p.longest {
        let _ = write!(
            out,
            " The longest ({:.1} ms): {}{:.1} ms verifying, {:.1} ms commit and reload, {} \
             final-tail events.",
            l.pause_ms,
            l.in_flight_and_tail_ms.map_or(String::new(), |t| format!(
                "{t:.1} ms in-flight and final tail, "
            )),
            l.verification_ms,
            l.commit_and_reload_ms,
            l.final_tail_events
        );
    }
    out.push('\n');
}

fn others_table(out: &mut String, r: &Results) {
    let o = &r.others;
    out.push_str(
        "\nThe other tenants, pooled windows before the migrations and around the cutovers (the \
         median over the cutovers of each window's p99 in brackets):\n\n",
    );
    let mut table = Table::new(
        &[
            "transaction",
            "count before",
            "p99 before",
            "count around cutovers",
            "p99 around cutovers",
            "ratio",
        ],
        1,
    );
    let pooled = &r.pooled;
    table.row(vec![
        "append".into(),
        thousands(pooled.before.others_append.count as f64),
        ms(o.append_before_p99_us as f64),
        thousands(pooled.around_cutover.others_append.count as f64),
        format!(
            "{} ({})",
            ms(o.append_cutover_p99_us as f64),
            ms(o.append_cutover_median_p99_us)
        ),
        crate::stats::ratio(
            o.append_cutover_p99_us as f64,
            o.append_before_p99_us as f64,
        ),
    ]);
    table.row(vec![
        "read_stream".into(),
        thousands(pooled.before.others_read.count as f64),
        ms(o.read_before_p99_us as f64),
        thousands(pooled.around_cutover.others_read.count as f64),
        format!(
            "{} ({})",
            ms(o.read_cutover_p99_us as f64),
            ms(o.read_cutover_median_p99_us)
        ),
        crate::stats::ratio(o.read_cutover_p99_us as f64, o.read_before_p99_us as f64),
    ]);
    out.push_str(&table.to_markdown());
    let _ = writeln!(
        out,
        "\nFrom the 100 ms series (all of the others' transactions): the worst bin p99 around a \
         cutover was {} (median over the cutovers of each one's worst bin {}), against a median \
         bin p99 of {} in the windows before the migrations.",
        ms(o.worst_bin_p99_us as f64),
        ms(o.median_worst_bin_p99_us),
        ms(o.before_median_bin_p99_us)
    );
}
