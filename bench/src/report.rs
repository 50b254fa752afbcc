//! `LoadReport`: the serializable summary of one load (what `--json` writes and what scenarios
//! tabulate), built from a [`Recording`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::{Counter, Histogram};
use serde::Serialize;
use uuid::Uuid;

use crate::mix::TxKind;
use crate::recorder::{KindStats, Mark, Recording, BIN};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub fn of<T: Counter>(histogram: &Histogram<T>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            min: histogram.min(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

/// Throughput and latency of one transaction kind (or of all of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindSummary {
    /// `append`, `read_stream`, `read_all`, `snapshot`, or `all`.
    pub kind: String,
    /// Transactions that succeeded while measuring.
    pub count: u64,
    /// Transactions that failed while measuring.
    pub errors: u64,
    /// Successful transactions per second.
    pub tps: f64,
    /// Their latencies.
    pub latency_us: Percentiles,
}

/// One tenant's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSummary {
    pub tenant: Uuid,
    pub kinds: Vec<KindSummary>,
}

/// One 100 ms bin of the whole load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bin, ms since measuring started.
    pub t_ms: u64,
    /// Transactions that completed in the bin.
    pub count: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// One tenant's share of a 100 ms bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSeriesPoint {
    pub t_ms: u64,
    pub tenant: Uuid,
    pub count: u64,
    pub errors: u64,
    pub mean_us: f64,
    pub max_us: u64,
}

/// How the load was run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSettings {
    pub label: String,
    /// The URL, without password.
    pub url: String,
    pub clients: usize,
    pub tenants: usize,
    pub skew: String,
    pub mix: String,
    pub protocol: String,
    /// `closed` or the target rate in transactions per second.
    pub pace: String,
    pub warmup_s: f64,
}

/// Everything one load measured, ready to serialize.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    pub settings: LoadSettings,
    /// Seconds measured (after the warm-up).
    pub seconds: f64,
    /// All kinds together.
    pub total: KindSummary,
    /// Per kind, over all tenants.
    pub kinds: Vec<KindSummary>,
    pub tenants: Vec<TenantSummary>,
    pub series: Vec<SeriesPoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenant_series: Vec<TenantSeriesPoint>,
    pub marks: Vec<Mark>,
    /// Appends acknowledged, warm-up included.
    pub acknowledged: usize,
    pub error_samples: Vec<String>,
}

impl LoadReport {
    /// Summarises `recording` of the tenants `tenants` over `seconds` measured.
    pub fn build(
        settings: LoadSettings,
        tenants: &[Uuid],
        seconds: f64,
        recording: &Recording,
    ) -> LoadReport {
        let mut per_kind: BTreeMap<TxKind, (Histogram<u64>, u64)> = BTreeMap::new();
        let mut all = (new_histogram(), 0u64);
        let mut tenant_summaries = Vec::new();
        for (index, kinds) in recording.tenants.iter().enumerate() {
            let mut summaries = Vec::new();
            for (kind, stats) in kinds {
                let entry = per_kind
                    .entry(*kind)
                    .or_insert_with(|| (new_histogram(), 0));
                add(&mut entry.0, &stats.latency_us);
                entry.1 += stats.errors;
                add(&mut all.0, &stats.latency_us);
                all.1 += stats.errors;
                summaries.push(summary(kind.name(), stats, seconds));
            }
            tenant_summaries.push(TenantSummary {
                tenant: tenants[index],
                kinds: summaries,
            });
        }
        let kinds = per_kind
            .iter()
            .map(|(kind, (histogram, errors))| summarise(kind.name(), histogram, *errors, seconds))
            .collect();
        LoadReport {
            settings,
            seconds,
            total: summarise("all", &all.0, all.1, seconds),
            kinds,
            tenants: tenant_summaries,
            series: series(recording),
            tenant_series: tenant_series(recording, tenants),
            marks: recording.marks.clone(),
            acknowledged: recording.acknowledged.len(),
            error_samples: recording.error_samples.clone(),
        }
    }

    /// The summary of `kind`, if it ran.
    pub fn kind(&self, kind: TxKind) -> Option<&KindSummary> {
        self.kinds.iter().find(|k| k.kind == kind.name())
    }

    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "{}{} clients, {} tenants ({}), mix {}, {} protocol, pace {}: {:.1} s measured\n",
            if s.label.is_empty() {
                String::new()
            } else {
                format!("{}: ", s.label)
            },
            s.clients,
            s.tenants,
            s.skew,
            s.mix,
            s.protocol,
            s.pace,
            self.seconds
        );
        for k in self.kinds.iter().chain(std::iter::once(&self.total)) {
            let _ = writeln!(
                out,
                "  {:<12} {:>9.0} tps  p50 {:>7} us  p99 {:>7} us  p99.9 {:>7} us  max {:>8} us  {} errors",
                k.kind, k.tps, k.latency_us.p50, k.latency_us.p99, k.latency_us.p999, k.latency_us.max, k.errors
            );
        }
        for sample in &self.error_samples {
            let _ = writeln!(out, "  error: {sample}");
        }
        out
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("valid sigfigs")
}

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both auto-resize, so adding cannot fail on range.
    let _ = into.add(from);
}

fn summary(kind: &str, stats: &KindStats, seconds: f64) -> KindSummary {
    summarise(kind, &stats.latency_us, stats.errors, seconds)
}

fn summarise(kind: &str, histogram: &Histogram<u64>, errors: u64, seconds: f64) -> KindSummary {
    KindSummary {
        kind: kind.to_owned(),
        count: histogram.len(),
        errors,
        tps: if seconds > 0.0 {
            histogram.len() as f64 / seconds
        } else {
            0.0
        },
        latency_us: Percentiles::of(histogram),
    }
}

fn bin_start_ms(index: usize) -> u64 {
    index as u64 * BIN.as_millis() as u64
}

fn series(recording: &Recording) -> Vec<SeriesPoint> {
    recording
        .bins
        .iter()
        .enumerate()
        .map(|(i, bin)| {
            let p = Percentiles::of(&bin.latency_us);
            SeriesPoint {
                t_ms: bin_start_ms(i),
                count: bin.latency_us.len(),
                errors: bin.errors,
                p50_us: p.p50,
                p99_us: p.p99,
                max_us: p.max,
            }
        })
        .collect()
}

fn tenant_series(recording: &Recording, tenants: &[Uuid]) -> Vec<TenantSeriesPoint> {
    let mut points = Vec::new();
    for (i, bin) in recording.bins.iter().enumerate() {
        for (tenant, t) in &bin.tenants {
            points.push(TenantSeriesPoint {
                t_ms: bin_start_ms(i),
                tenant: tenants[*tenant],
                count: t.count,
                errors: t.errors,
                mean_us: if t.count > 0 {
                    t.sum_us as f64 / t.count as f64
                } else {
                    0.0
                },
                max_us: t.max_us,
            });
        }
    }
    points
}
