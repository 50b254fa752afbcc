//! `copy`: how fast evshift's bulk copy moves one tenant into an indexed target, against the
//! raw single-stream COPY pipe on the same data, interleaved; evshift's peak RSS for a small and
//! a large tenant.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::bulk_copy::{CopyBench, CopyRun};
use super::{Environment, ScenarioOutput};
use crate::machine::Machine;
use crate::stats::{median, ratio};
use crate::table::{thousands, Table};

const NAME: &str = "copy";
const BIG_TENANT: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0001);
const SMALL_TENANT: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0002);

/// Settings of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Events of the tenant that is timed.
    pub events: u64,
    /// Events of the tenant copied once for its peak RSS.
    pub small_events: u64,
    pub repeats: usize,
    /// evshift's `[migration] batch_size`.
    pub batch_size: usize,
}

/// Runs the scenario.
pub async fn run(env: &Environment, settings: &Settings) -> Result<ScenarioOutput> {
    let machine = Machine::describe(&env.evshift_bin);
    env.progress(NAME, "starting source, target and control clusters");
    let mut bench = CopyBench::start().await?;
    env.progress(
        NAME,
        &format!(
            "seeding {} + {} events",
            settings.events, settings.small_events
        ),
    );
    bench
        .seed(&[
            (BIG_TENANT, settings.events),
            (SMALL_TENANT, settings.small_events),
        ])
        .await?;
    let mut pipes = Vec::new();
    let mut evshifts = Vec::new();
    for round in 0..settings.repeats.max(1) {
        let pipe = bench.pipe(BIG_TENANT, settings.events).await?;
        env.progress(
            NAME,
            &format!("round {}: pipe {:.2} s", round + 1, pipe.seconds),
        );
        pipes.push(pipe);
        let copy = bench
            .evshift(
                &env.evshift_bin,
                BIG_TENANT,
                settings.events,
                settings.batch_size,
            )
            .await?;
        env.progress(
            NAME,
            &format!("round {}: evshift {:.2} s", round + 1, copy.seconds),
        );
        evshifts.push(copy);
    }
    let small = bench
        .evshift(
            &env.evshift_bin,
            SMALL_TENANT,
            settings.small_events,
            settings.batch_size,
        )
        .await?;
    let markdown = markdown(env, settings, &machine, &pipes, &evshifts, &small);
    Ok(ScenarioOutput {
        name: NAME.to_owned(),
        json: json!({
            "scenario": NAME,
            "settings": settings,
            "machine": machine,
            "pipe": pipes,
            "evshift": evshifts,
            "evshift_small": small,
        }),
        markdown,
        figures: Vec::new(),
    })
}

fn markdown(
    env: &Environment,
    settings: &Settings,
    machine: &Machine,
    pipes: &[CopyRun],
    evshifts: &[CopyRun],
    small: &CopyRun,
) -> String {
    let seconds = |runs: &[CopyRun]| median(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>());
    let cpu = |runs: &[CopyRun]| median(&runs.iter().map(|r| r.cpu_seconds).collect::<Vec<_>>());
    let (pipe_s, evshift_s) = (seconds(pipes), seconds(evshifts));
    let rate = |s: f64| {
        if s > 0.0 {
            settings.events as f64 / s
        } else {
            0.0
        }
    };
    let mut out = String::from("## Bulk copy (one tenant, source to target)\n\n");
    let _ = write!(
        out,
        "How fast the migration's bulk pass copies one tenant's events into an indexed target \
         (every index of the eventsource schema; emptied before every run), against the raw \
         single-stream pipe `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` into `COPY events (...) \
         FROM STDIN (FORMAT BINARY)` on the same data, in the same run, interleaved. evshift's time \
         is the bulk pass as the control store records it (`started_at` to `bulk_copy_completed_at`: \
         counting, batches of {} with a checkpoint and the position mappings per batch, snapshots). \
         Peak RSS is evshift's `VmHWM` after the pass (a fresh process per run).\n\n",
        settings.batch_size
    );
    out.push_str(&machine.markdown(&env.command));
    out.push('\n');
    let mut table = Table::new(
        &[
            &format!("copy of {} events", thousands(settings.events as f64)),
            &format!("seconds (median of {})", pipes.len()),
            "events/s",
            "vs pipe",
            "CPU seconds (median)",
            "CPU vs pipe",
        ],
        1,
    );
    table.row(vec![
        "raw COPY pipe".into(),
        format!("{pipe_s:.1}"),
        thousands(rate(pipe_s)),
        "1.00".into(),
        format!("{:.1}", cpu(pipes)),
        "1.00".into(),
    ]);
    table.row(vec![
        "evshift bulk copy".into(),
        format!("{evshift_s:.1}"),
        thousands(rate(evshift_s)),
        ratio(rate(evshift_s), rate(pipe_s)),
        format!("{:.1}", cpu(evshifts)),
        ratio(cpu(evshifts), cpu(pipes)),
    ]);
    out.push_str(&table.to_markdown());
    let list = |runs: &[CopyRun], f: &dyn Fn(&CopyRun) -> f64| {
        runs.iter()
            .map(|r| format!("{:.1}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "\nCPU seconds: everything each side burns: for the pipe the source and target servers and \
         the process moving the bytes; for evshift the source, target and control servers and \
         evshift. Every run (seconds): pipe {}; evshift {}. CPU seconds: pipe {}; evshift {}.\n\n",
        list(pipes, &|r| r.seconds),
        list(evshifts, &|r| r.seconds),
        list(pipes, &|r| r.cpu_seconds),
        list(evshifts, &|r| r.cpu_seconds)
    );
    let peak = evshifts
        .iter()
        .filter_map(|r| r.peak_rss_kb)
        .max()
        .unwrap_or(0);
    let mut rss = Table::new(
        &[
            "evshift peak RSS",
            &format!("{} events", thousands(settings.small_events as f64)),
            &format!("{} events", thousands(settings.events as f64)),
        ],
        1,
    );
    rss.row(vec![
        "VmHWM".into(),
        format!("{:.1} MB", small.peak_rss_kb.unwrap_or(0) as f64 / 1024.0),
        format!("{:.1} MB", peak as f64 / 1024.0),
    ]);
    out.push_str(&rss.to_markdown());
    let _ = writeln!(
        out,
        "\n({} events copied at {} events/s.)",
        thousands(settings.small_events as f64),
        thousands(small.rate())
    );
    out
}
