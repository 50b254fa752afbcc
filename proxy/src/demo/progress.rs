//! What the demo shows while it runs: step lines, and indicatif bars for the seed, the load
//! and the migration (copy %, events/s, lag, state).
//!
//! Everything goes to stdout. On a terminal the bars redraw in place below the step lines;
//! otherwise (a pipe, a CI log) the bars are hidden and the migration prints one line per
//! state change instead.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use evshift_control::{MigrationState, MigrationStatus};

use super::summary::thousands;

/// Indentation of everything under a step line (as wide as `[1/7] `).
const INDENT: &str = "      ";

/// The demo's display.
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
        }
    }

    /// Whether bars are drawn (stdout is a terminal).
    fn hidden(&self) -> bool {
        self.multi.is_hidden()
    }

    /// A line above the bars.
    pub fn line(&self, text: impl AsRef<str>) {
        if self.hidden() || self.multi.println(text.as_ref()).is_err() {
            println!("{}", text.as_ref());
        }
    }

    /// `[n/total] label  text`.
    pub fn step(&self, n: usize, total: usize, label: &str, text: impl AsRef<str>) {
        let line = format!("[{n}/{total}] {label:<9} {}", text.as_ref());
        self.line(line.trim_end());
    }

    /// A line of detail under a step.
    pub fn detail(&self, text: impl AsRef<str>) {
        self.line(format!("{INDENT}{}", text.as_ref()));
    }

    /// A bar counting up to `len` (rows seeded).
    pub fn counter(&self, len: u64, what: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{INDENT}[{{bar:30}}] {{human_pos:>9}}/{{human_len}} {what} {{per_sec}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    }

    /// A one-line live status under the bars.
    pub fn status_line(&self) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(&format!("{INDENT}{{spinner}} {{wide_msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// The migration's bar.
    pub fn migration(&self) -> MigrationBar {
        let bar = self.multi.insert(0, ProgressBar::new(100));
        bar.set_style(
            ProgressStyle::with_template(&format!("{INDENT}[{{bar:30}}] {{pos:>3}}% {{wide_msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        MigrationBar {
            bar,
            last_state: None,
        }
    }
}

/// The migration's bar: copy %, state, copied/total, events/s, lag.
pub struct MigrationBar {
    bar: ProgressBar,
    last_state: Option<MigrationState>,
}

impl MigrationBar {
    /// Shows `status`; a state change is also a line above the bars (the only output when the
    /// bars are hidden).
    pub fn update(&mut self, status: &MigrationStatus, progress: &Progress) {
        if self.last_state != Some(status.state) {
            self.last_state = Some(status.state);
            progress.line(format!(
                "{INDENT}migration {}: {}",
                status.id,
                describe(status)
            ));
        }
        self.bar
            .set_position(status.progress_percentage.clamp(0.0, 100.0) as u64);
        self.bar.set_message(describe(status));
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// `BULK_COPY  88,000/139,000 events  55,000 events/s  lag 51,000`.
fn describe(status: &MigrationStatus) -> String {
    format!(
        "{}  {}/{} events  {} events/s  lag {}",
        status.state,
        thousands(status.events_copied.max(0) as u64),
        thousands(status.events_total.max(0) as u64),
        thousands(status.events_per_second.max(0.0).round() as u64),
        thousands(status.lag_events.max(0) as u64)
    )
}

/// A rate over the last second or so, from a growing counter.
#[derive(Debug)]
pub struct RateMeter {
    last: (Instant, u64),
    rate: f64,
}

impl RateMeter {
    pub fn new(count: u64) -> RateMeter {
        RateMeter {
            last: (Instant::now(), count),
            rate: 0.0,
        }
    }

    /// The rate, refreshed when at least a second passed since the last refresh.
    pub fn rate(&mut self, count: u64) -> f64 {
        let elapsed = self.last.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.rate = count.saturating_sub(self.last.1) as f64 / elapsed.as_secs_f64();
            self.last = (Instant::now(), count);
        }
        self.rate
    }
}
