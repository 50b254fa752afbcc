//! `Recorder`: what the clients of one load measured, shared between them: HDR latency
//! histograms per tenant and transaction kind, a time series per 100 ms, error counts, the ids
//! of acknowledged appends and the marks set by whoever drives the load.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use uuid::Uuid;

use crate::mix::TxKind;

/// Width of one time-series bin.
pub const BIN: Duration = Duration::from_millis(100);

/// Significant figures of the per-tenant histograms.
const TENANT_SIGFIGS: u8 = 3;
/// Significant figures of the per-bin histograms (600 bins a minute: kept small).
const BIN_SIGFIGS: u8 = 2;
/// Error messages kept as examples.
const ERROR_SAMPLES: usize = 5;

/// An append whose commit was acknowledged to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Acknowledged {
    /// The tenant the event belongs to.
    pub tenant: Uuid,
    /// The event's id.
    pub event_id: Uuid,
}

/// A named instant of the run (a cutover, a phase change), relative to the start of measuring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    /// Milliseconds since measuring started; negative during the warm-up.
    pub t_ms: f64,
    /// What happened.
    pub label: String,
}

/// Latencies (µs) and errors of one tenant and transaction kind.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Latencies of the transactions that succeeded, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Transactions that failed.
    pub errors: u64,
}

/// One 100 ms bin of the time series: transactions that completed in it.
#[derive(Debug, Clone)]
pub struct Bin {
    /// Latencies (µs) of the transactions that succeeded.
    pub latency_us: Histogram<u32>,
    /// Transactions that failed.
    pub errors: u64,
    /// Per tenant index: (count, errors, sum of µs, max µs), when tenant series are kept.
    pub tenants: BTreeMap<usize, TenantBin>,
}

/// One tenant's share of a bin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantBin {
    /// Transactions that succeeded.
    pub count: u64,
    /// Transactions that failed.
    pub errors: u64,
    /// Sum of their latencies, µs.
    pub sum_us: u64,
    /// The largest latency, µs.
    pub max_us: u64,
}

/// Everything recorded, taken out of the recorder at the end.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Per tenant index, per kind.
    pub tenants: Vec<BTreeMap<TxKind, KindStats>>,
    /// The time series from the start of measuring.
    pub bins: Vec<Bin>,
    /// Appends acknowledged (warm-up included: they are in the store all the same).
    pub acknowledged: Vec<Acknowledged>,
    /// Marks, in the order they were set.
    pub marks: Vec<Mark>,
    /// A few error messages, as examples.
    pub error_samples: Vec<String>,
}

/// Shared by the clients of one load; cheap to lock (one short critical section per
/// transaction).
#[derive(Debug)]
pub struct Recorder {
    measure_from: Instant,
    tenant_series: bool,
    state: Mutex<Recording>,
}

impl Recorder {
    /// A recorder for `tenants` tenants whose measurement (histograms and series) starts at
    /// `measure_from`. With `tenant_series`, each bin also keeps per-tenant figures.
    pub fn new(tenants: usize, measure_from: Instant, tenant_series: bool) -> Recorder {
        Recorder {
            measure_from,
            tenant_series,
            state: Mutex::new(Recording {
                tenants: vec![BTreeMap::new(); tenants],
                bins: Vec::new(),
                acknowledged: Vec::new(),
                marks: Vec::new(),
                error_samples: Vec::new(),
            }),
        }
    }

    /// When measuring starts.
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// Records one transaction of `tenant` that took `latency` and ended at `ended`
    /// (`Err(message)` if it failed). Transactions that ended in the warm-up are not measured.
    pub fn record(
        &self,
        tenant: usize,
        kind: TxKind,
        ended: Instant,
        latency: Duration,
        outcome: Result<(), String>,
    ) {
        let Some(since) = ended.checked_duration_since(self.measure_from) else {
            return;
        };
        let micros = (latency.as_micros() as u64).max(1);
        let bin_index = (since.as_nanos() / BIN.as_nanos()) as usize;
        let mut state = self.lock();
        let state = &mut *state;
        let stats = state.tenants[tenant]
            .entry(kind)
            .or_insert_with(|| KindStats {
                latency_us: Histogram::new(TENANT_SIGFIGS).expect("valid sigfigs"),
                errors: 0,
            });
        while state.bins.len() <= bin_index {
            state.bins.push(Bin {
                latency_us: Histogram::new(BIN_SIGFIGS).expect("valid sigfigs"),
                errors: 0,
                tenants: BTreeMap::new(),
            });
        }
        let bin = &mut state.bins[bin_index];
        let tenant_bin = self
            .tenant_series
            .then(|| bin.tenants.entry(tenant).or_default());
        match outcome {
            Ok(()) => {
                // Auto-resizing histograms accept any value.
                let _ = stats.latency_us.record(micros);
                let _ = bin.latency_us.record(micros);
                if let Some(t) = tenant_bin {
                    t.count += 1;
                    t.sum_us += micros;
                    t.max_us = t.max_us.max(micros);
                }
            }
            Err(message) => {
                stats.errors += 1;
                bin.errors += 1;
                if let Some(t) = tenant_bin {
                    t.errors += 1;
                }
                if state.error_samples.len() < ERROR_SAMPLES
                    && !state.error_samples.contains(&message)
                {
                    state.error_samples.push(message);
                }
            }
        }
    }

    /// Remembers an acknowledged append.
    pub fn acknowledge(&self, tenant: Uuid, event_id: Uuid) {
        self.lock()
            .acknowledged
            .push(Acknowledged { tenant, event_id });
    }

    /// A copy of the per-tenant histograms recorded so far: the difference of two copies is
    /// what completed between them.
    pub fn tenants_so_far(&self) -> Vec<BTreeMap<TxKind, KindStats>> {
        self.lock().tenants.clone()
    }

    /// How many appends were acknowledged so far.
    pub fn acknowledged_count(&self) -> usize {
        self.lock().acknowledged.len()
    }

    /// Sets a mark now.
    pub fn mark(&self, label: &str) {
        let now = Instant::now();
        let t_ms = match now.checked_duration_since(self.measure_from) {
            Some(after) => after.as_secs_f64() * 1e3,
            None => -(self.measure_from - now).as_secs_f64() * 1e3,
        };
        self.lock().marks.push(Mark {
            t_ms,
            label: label.to_owned(),
        });
    }

    /// Everything recorded so far (the recorder is left empty).
    pub fn take(&self) -> Recording {
        let mut state = self.lock();
        let tenants = state.tenants.len();
        std::mem::replace(
            &mut *state,
            Recording {
                tenants: vec![BTreeMap::new(); tenants],
                bins: Vec::new(),
                acknowledged: Vec::new(),
                marks: Vec::new(),
                error_samples: Vec::new(),
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        // A client that panicked while holding the lock left consistent data: every update
        // above is a single field write.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_is_not_measured_and_bins_follow_completion_time() {
        let start = Instant::now();
        let recorder = Recorder::new(2, start + Duration::from_secs(1), true);
        recorder.record(0, TxKind::Append, start, Duration::from_millis(1), Ok(()));
        let t = start + Duration::from_millis(1250);
        recorder.record(1, TxKind::Append, t, Duration::from_millis(3), Ok(()));
        recorder.record(
            1,
            TxKind::Append,
            t,
            Duration::from_millis(5),
            Err("boom".into()),
        );
        recorder.acknowledge(Uuid::nil(), Uuid::nil());
        let recording = recorder.take();
        assert!(recording.tenants[0].is_empty());
        let stats = &recording.tenants[1][&TxKind::Append];
        assert_eq!((stats.latency_us.len(), stats.errors), (1, 1));
        assert_eq!(recording.bins.len(), 3);
        assert_eq!(recording.bins[2].latency_us.len(), 1);
        assert_eq!(recording.bins[2].tenants[&1].errors, 1);
        assert_eq!(recording.error_samples, vec!["boom".to_owned()]);
        assert_eq!(recording.acknowledged.len(), 1);
    }
}
