//! Windows of a running load: the latencies of the transactions that completed between two
//! copies of its cumulative histograms, pooled over the windows of the same kind.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{LoadHandle, TenantHistograms};
use crate::mix::TxKind;
use crate::report::Percentiles;

/// The cumulative histograms of one load at one instant.
pub struct Snapshot(Vec<TenantHistograms>);

impl Snapshot {
    /// What `load` measured up to now.
    pub fn of(load: &LoadHandle) -> Snapshot {
        Snapshot(load.histograms_so_far())
    }

    /// Latencies (µs) of the `kind` transactions of every tenant that completed after
    /// `earlier` and up to this snapshot.
    pub fn since(&self, earlier: &Snapshot, kind: TxKind) -> Histogram<u64> {
        let mut window = empty();
        for (later, before) in self.0.iter().zip(&earlier.0) {
            let Some(later) = later.kinds.get(&kind) else {
                continue;
            };
            let mut tenant = later.latency_us.clone();
            if let Some(before) = before.kinds.get(&kind) {
                // Cumulative histograms only grow, so every count of `before` is in `later`.
                let _ = tenant.subtract(&before.latency_us);
            }
            let _ = window.add(&tenant);
        }
        window
    }
}

/// An empty histogram like the load's (3 significant figures, auto-resizing).
pub fn empty() -> Histogram<u64> {
    Histogram::new(3).expect("valid significant figures")
}

/// Adds `window` to `pool`.
pub fn pool(pool: &mut Histogram<u64>, window: &Histogram<u64>) {
    // Both auto-resize: adding cannot fail on range.
    let _ = pool.add(window);
}

/// How many transactions a window holds and their latency percentiles (µs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub latency_us: Percentiles,
}

impl Latency {
    /// The summary of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            count: histogram.len(),
            latency_us: Percentiles::of(histogram),
        }
    }
}

/// The `q` quantile (0 to 1) of `values` by nearest rank: the smallest value that at least
/// `q` of them do not exceed (of 20 values, p50 is the 10th and p99 the 20th, the largest).
pub fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::recorder::KindStats;

    fn snapshot(latencies: &[u64]) -> Snapshot {
        let mut histogram = empty();
        for l in latencies {
            histogram.record(*l).unwrap();
        }
        let kinds = BTreeMap::from([(
            TxKind::Append,
            KindStats {
                latency_us: histogram,
                errors: 0,
            },
        )]);
        Snapshot(vec![TenantHistograms {
            tenant: Uuid::nil(),
            kinds,
        }])
    }

    #[test]
    fn a_window_holds_only_what_completed_in_it() {
        let before = snapshot(&[100, 200]);
        let after = snapshot(&[100, 200, 5_000, 7_000]);
        let window = after.since(&before, TxKind::Append);
        assert_eq!(window.len(), 2);
        assert_eq!(window.min(), 5_000);
        assert_eq!(after.since(&before, TxKind::ReadStream).len(), 0);
        let mut pooled = empty();
        pool(&mut pooled, &window);
        pool(&mut pooled, &window);
        assert_eq!(Latency::of(&pooled).count, 4);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.5), 10.0);
        assert_eq!(nearest_rank(&values, 0.99), 20.0);
        assert_eq!(nearest_rank(&[3.0], 0.99), 3.0);
        assert_eq!(nearest_rank(&[], 0.5), 0.0);
    }
}
