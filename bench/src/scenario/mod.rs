//! Benchmark scenarios. Each one starts its own throwaway clusters (the `evshift-tests`
//! harness), runs the real `evshift` binary, and returns a [`ScenarioOutput`]: JSON, a markdown
//! section (tables, commands, machine) and SVG figures. A new scenario (such as a migration
//! under load) is one more module here with a `run(&Environment, &Settings)` function.

pub mod all;
pub mod copy;
pub mod migrate;
pub mod passthrough;
pub mod routed;
pub mod scale;

mod bulk_copy;
mod docs;
mod pgbouncer;
mod proxy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use uuid::Uuid;

use crate::load::LoadSpec;
use crate::mix::{Mix, TxKind};
use crate::plot::Marker;
use crate::recorder::Mark;
use crate::report::SeriesPoint;
use crate::workload::Protocol;

pub use docs::update_docs;
pub use pgbouncer::PgBouncerUse;

/// What every scenario needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The `evshift` binary to benchmark (a release build for meaningful figures).
    pub evshift_bin: PathBuf,
    /// The command line shown in the docs next to the figures.
    pub command: String,
}

impl Environment {
    /// Progress on standard error.
    pub fn progress(&self, scenario: &str, message: &str) {
        eprintln!("[{scenario}] {message}");
    }
}

/// The `evshift` binary for benchmarks: `$EVSHIFT_BIN`, else the workspace's release build.
pub fn release_evshift() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("EVSHIFT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::machine::workspace_root().join("target"));
    let binary = target.join("release").join("evshift");
    if !binary.is_file() {
        anyhow::bail!(
            "{} not found: build it with `cargo build --release -p evshift-proxy`, or pass \
             --evshift-bin",
            binary.display()
        );
    }
    Ok(binary)
}

/// How long and how often each measured load runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunShape {
    /// Concurrent clients.
    pub clients: usize,
    /// Measured time per run.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Runs per configuration (medians are reported).
    pub repeats: usize,
}

impl RunShape {
    /// A load of `kind` in `protocol` for `tenants` on `url`, shaped like this.
    pub fn spec(
        &self,
        url: &str,
        tenants: &[Uuid],
        kind: TxKind,
        protocol: Protocol,
        read_aggregates: usize,
        label: &str,
    ) -> LoadSpec {
        self.spec_mix(
            url,
            tenants,
            Mix::only(kind),
            protocol,
            read_aggregates,
            label,
        )
    }

    /// Like [`RunShape::spec`] with a mix.
    pub fn spec_mix(
        &self,
        url: &str,
        tenants: &[Uuid],
        mix: Mix,
        protocol: Protocol,
        read_aggregates: usize,
        label: &str,
    ) -> LoadSpec {
        let mut spec = LoadSpec::new(url, self.clients, tenants.to_vec());
        spec.mix = mix;
        spec.protocol = protocol;
        spec.warmup = self.warmup;
        spec.duration = Some(self.duration);
        spec.read_aggregates = read_aggregates.max(1);
        spec.label = label.to_owned();
        spec
    }
}

/// An SVG figure of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File name under `img/`.
    pub file: String,
    pub svg: String,
}

/// What a scenario produced.
#[derive(Debug, Clone)]
pub struct ScenarioOutput {
    /// `passthrough`, `routed`, ...: the JSON file name and the docs section marker.
    pub name: String,
    /// Everything measured.
    pub json: serde_json::Value,
    /// The docs section (from its `## ` title on; figures linked as `img/FILE`).
    pub markdown: String,
    pub figures: Vec<Figure>,
}

impl ScenarioOutput {
    /// Writes `NAME.json`, `NAME.md` and `img/FILE` for each figure into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        let img = dir.join("img");
        std::fs::create_dir_all(&img).with_context(|| format!("create {}", img.display()))?;
        let json = serde_json::to_string_pretty(&self.json)? + "\n";
        write(&dir.join(format!("{}.json", self.name)), &json)?;
        write(&dir.join(format!("{}.md", self.name)), &self.markdown)?;
        for figure in &self.figures {
            write(&img.join(&figure.file), &figure.svg)?;
        }
        Ok(())
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

/// A load's marks (a cutover, a phase change) as plot markers, in seconds.
pub fn markers_of(marks: &[Mark]) -> Vec<Marker> {
    marks
        .iter()
        .map(|m| Marker {
            x: m.t_ms / 1e3,
            label: m.label.clone(),
        })
        .collect()
}

/// A run's p99 per 100 ms as plot points: (seconds, milliseconds).
pub fn p99_points(series: &[SeriesPoint]) -> Vec<(f64, f64)> {
    series
        .iter()
        .filter(|p| p.count > 0)
        .map(|p| (p.t_ms as f64 / 1e3, p.p99_us as f64 / 1e3))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_markers_in_seconds_and_empty_bins_are_skipped() {
        let marks = [Mark {
            t_ms: 1500.0,
            label: "cutover".into(),
        }];
        assert_eq!(
            markers_of(&marks),
            vec![Marker {
                x: 1.5,
                label: "cutover".into()
            }]
        );
        let point = |t_ms, count, p99_us| SeriesPoint {
            t_ms,
            count,
            errors: 0,
            p50_us: 0,
            p99_us,
            max_us: 0,
        };
        let points = p99_points(&[point(0, 3, 2000), point(100, 0, 0), point(200, 1, 500)]);
        assert_eq!(points, vec![(0.0, 2.0), (0.2, 0.5)]);
    }
}
