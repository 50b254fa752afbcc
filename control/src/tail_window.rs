//! `TailWindow`: which source rows a copy pass must read so that a row whose lower
//! `global_position` commits after a higher one is never skipped.
//!
//! A pass copies the rows of transactions older than the source's horizon (`txid < xmin`, all
//! final) above the checkpoint, and moves the checkpoint to the highest position copied. A
//! transaction still open then may hold a *lower* position (it took its position first and
//! commits later); a checkpoint alone would skip its rows forever. So each pass also reads the
//! rows that became final since the previous pass (`txid >= previous horizon`) in a window
//! below the checkpoint. The window starts at a position below which every row is known to be
//! final and copied: positions are handed out by a sequence, so a position at or below the
//! sequence value `S` read at pass `j` belongs to a transaction whose xid was assigned by the
//! next pass (its `xmax`, one tail interval later); once the horizon passes that `xmax`, every
//! such transaction has ended and the rows it committed were read by that pass.

use std::collections::VecDeque;

/// What a pass learns about the source before reading it, in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// `pg_snapshot_xmin`: every transaction with a lower xid has ended.
    pub horizon: u64,
    /// `pg_snapshot_xmax`: every xid assigned so far is lower.
    pub xmax: u64,
    /// The last value handed out by the `global_position` sequence.
    pub sequence: i64,
}

/// The rows one pass reads: `global_position > low`, and below `checkpoint` only those of
/// transactions at or after `late_since` (rows that were not final at the previous pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub low: i64,
    pub checkpoint: i64,
    pub late_since: Option<u64>,
}

/// The window state of one migration's copy, kept across passes by its driver.
#[derive(Debug, Clone, Default)]
pub struct TailWindow {
    /// The horizon of the last completed pass: rows of older transactions have been read.
    previous_horizon: Option<u64>,
    /// Sequence values (pass j) waiting for the `xmax` of pass j+1 and for the horizon to
    /// pass it.
    unsettled: VecDeque<(i64, Option<u64>)>,
    /// Every row at or below this position is final and was read by a completed pass.
    settled: i64,
}

impl TailWindow {
    pub fn new() -> TailWindow {
        TailWindow::default()
    }

    /// The rows to read above `checkpoint`. Without a completed pass in this process only the
    /// rows above the checkpoint are read.
    pub fn plan(&self, checkpoint: i64) -> ReadPlan {
        match self.previous_horizon {
            None => ReadPlan {
                low: checkpoint,
                checkpoint,
                late_since: None,
            },
            Some(horizon) => ReadPlan {
                low: self.settled.min(checkpoint),
                checkpoint,
                late_since: Some(horizon),
            },
        }
    }

    /// Records a pass that read everything its plan asked for, with the probe taken before it.
    pub fn completed(&mut self, probe: Probe) {
        if let Some(last) = self.unsettled.back_mut() {
            if last.1.is_none() {
                last.1 = Some(probe.xmax);
            }
        }
        while let Some(&(sequence, Some(xmax))) = self.unsettled.front() {
            if probe.horizon < xmax {
                break;
            }
            self.settled = self.settled.max(sequence);
            self.unsettled.pop_front();
        }
        self.unsettled.push_back((probe.sequence, None));
        // Bounded: a horizon held back for long (a forgotten transaction) keeps entries.
        while self.unsettled.len() > 10_000 {
            self.unsettled.pop_front();
        }
        self.previous_horizon = Some(probe.horizon);
    }

    /// The position below which every row is final and read.
    pub fn settled(&self) -> i64 {
        self.settled
    }
}

impl ReadPlan {
    /// The SQL condition on `events` (besides the tenant and the horizon).
    pub fn condition(&self) -> String {
        match self.late_since {
            Some(late) if self.low < self.checkpoint => format!(
                "global_position > {low} AND (global_position > {checkpoint} OR txid >= '{late}'::xid8)",
                low = self.low,
                checkpoint = self.checkpoint
            ),
            _ => format!("global_position > {}", self.checkpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(horizon: u64, xmax: u64, sequence: i64) -> Probe {
        Probe {
            horizon,
            xmax,
            sequence,
        }
    }

    #[test]
    fn first_pass_reads_above_the_checkpoint_only() {
        let window = TailWindow::new();
        let plan = window.plan(500);
        assert_eq!(plan.condition(), "global_position > 500");
    }

    #[test]
    fn after_a_pass_rows_that_became_final_are_read_below_the_checkpoint() {
        let mut window = TailWindow::new();
        window.completed(probe(100, 110, 40));
        let plan = window.plan(50);
        assert_eq!(plan.low, 0);
        assert_eq!(
            plan.condition(),
            "global_position > 0 AND (global_position > 50 OR txid >= '100'::xid8)"
        );
    }

    #[test]
    fn a_sequence_value_settles_once_the_horizon_passes_the_next_xmax() {
        let mut window = TailWindow::new();
        window.completed(probe(100, 110, 40)); // S0 = 40
        window.completed(probe(105, 120, 60)); // X1 = 120 > 105: not yet
        assert_eq!(window.settled(), 0);
        window.completed(probe(120, 130, 80)); // 120 >= 120: S0 settles; S1 waits for 130
        assert_eq!(window.settled(), 40);
        window.completed(probe(125, 140, 90));
        assert_eq!(window.settled(), 40);
        window.completed(probe(141, 150, 95)); // S1, S2 settle; S3 waits for 150
        assert_eq!(window.settled(), 80);
        assert_eq!(window.plan(200).low, 80);
    }

    #[test]
    fn the_window_never_starts_above_the_checkpoint() {
        let mut window = TailWindow::new();
        window.completed(probe(100, 100, 40));
        window.completed(probe(200, 200, 60));
        window.completed(probe(300, 300, 80));
        assert_eq!(window.settled(), 60);
        let plan = window.plan(30);
        assert_eq!(plan.low, 30);
        assert_eq!(plan.condition(), "global_position > 30");
    }
}
