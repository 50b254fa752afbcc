//! The demo's closing table: what the migration copied and how fast, what it cost the
//! clients (append latency of the moving tenant before and during DUAL_WRITE, the cutover
//! pause, the other tenants' p99 before and during the migration), and whether every
//! acknowledged event is where it belongs. Pure: the figures are gathered by `run`.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::Duration;

use evshift_control::MigrationState;
use uuid::Uuid;

use super::load::Sample;

/// Append latencies of one group in one time window, sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// The latencies of the samples that started inside `window` and pass `keep`.
    pub fn of(
        samples: &[Sample],
        window: &Range<Duration>,
        keep: impl Fn(&Sample) -> bool,
    ) -> Self {
        let mut sorted: Vec<Duration> = samples
            .iter()
            .filter(|s| window.contains(&s.at) && keep(s))
            .map(|s| s.latency)
            .collect();
        sorted.sort_unstable();
        Latencies { sorted }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile `p` (0 < p <= 100); `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, self.sorted.len()) - 1])
    }

    /// `p50 1.23 ms  p99 4.56 ms  (789 appends)`.
    fn describe(&self) -> String {
        match (self.percentile(50.0), self.percentile(99.0)) {
            (Some(p50), Some(p99)) => format!(
                "p50 {}  p99 {}  ({} appends)",
                ms(p50),
                ms(p99),
                thousands(self.len() as u64)
            ),
            _ => "no appends in this window".into(),
        }
    }

    /// `p99 4.56 ms  (789 appends)`.
    fn describe_p99(&self) -> String {
        match self.percentile(99.0) {
            Some(p99) => format!(
                "p99 {}  ({} appends)",
                ms(p99),
                thousands(self.len() as u64)
            ),
            None => "no appends in this window".into(),
        }
    }
}

/// The comparison of the target with the source after the load stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCheck {
    /// The level of the control socket's `verify`.
    pub level: String,
    pub missing: u64,
    pub differing: u64,
    /// Events on the target that the source lacks.
    pub extra: u64,
    /// Acknowledged events of the moving tenant that are not on the source: those appended
    /// after the cutover, which only the target holds.
    pub appended_after_cutover: u64,
}

impl TargetCheck {
    /// The target is the source plus exactly the events appended after the cutover.
    pub fn consistent(&self) -> bool {
        self.missing == 0 && self.differing == 0 && self.extra == self.appended_after_cutover
    }
}

/// Every figure of the closing table.
#[derive(Debug, Clone)]
pub struct Figures {
    pub migration_id: i64,
    pub tenant: Uuid,
    pub source: String,
    pub target: String,
    pub state: MigrationState,
    pub error: Option<String>,
    pub events_copied: i64,
    /// Events of the bulk pass and how long it took (from its audit row).
    pub bulk_copy: Option<(u64, Duration)>,
    /// Gate closed to gate open, from `/metrics`.
    pub cutover_pause: Option<Duration>,
    /// Gate closed to the MIGRATED commit, from the `cutover_completed` audit row.
    pub pause_before_commit: Option<Duration>,
    /// The cutover's own verification, e.g. `hash passed`.
    pub cutover_verification: Option<String>,
    pub moving_before: Latencies,
    pub moving_dual_write: Latencies,
    pub dual_write_window: Option<Duration>,
    pub moving_after: Latencies,
    pub others_before: Latencies,
    pub others_during: Latencies,
    pub target_check: Option<TargetCheck>,
    pub source_writes_after_cutover: i64,
    pub acknowledged: usize,
    pub client_errors: Vec<String>,
    pub lost: u64,
    pub duplicated: u64,
}

impl Figures {
    /// What went wrong, one phrase each; empty when the demo proved its point.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.state != MigrationState::Migrated {
            problems.push(format!(
                "the migration ended {}{}",
                self.state,
                self.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        if self.lost > 0 {
            problems.push(format!("{} acknowledged events lost", self.lost));
        }
        if self.duplicated > 0 {
            problems.push(format!("{} events duplicated", self.duplicated));
        }
        if let Some(first) = self.client_errors.first() {
            problems.push(format!(
                "clients saw {} errors, the first: {first}",
                self.client_errors.len()
            ));
        }
        match &self.target_check {
            Some(check) if !check.consistent() => problems.push(format!(
                "the target differs from the source: {}",
                describe_check(check)
            )),
            _ => {}
        }
        if self.source_writes_after_cutover != 0 {
            problems.push(format!(
                "{} events reached the source after the cutover",
                self.source_writes_after_cutover
            ));
        }
        problems
    }

    /// The table, one figure per line.
    pub fn render(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("state", format!("{}", self.state)),
            ("events copied", self.copied()),
            ("copy rate", self.copy_rate()),
            ("cutover pause", self.pause()),
            ("moving tenant, before", self.moving_before.describe()),
            ("moving tenant, DUAL_WRITE", self.dual_write()),
            ("dual-write added latency", self.added_latency()),
            ("moving tenant, after cutover", self.moving_after.describe()),
            ("other tenants, before", self.others_before.describe_p99()),
            ("other tenants, during", self.others_during.describe_p99()),
            ("verified at cutover", self.cutover_verification()),
            ("verified after load", self.target_verification()),
            (
                "source writes after cutover",
                self.source_writes_after_cutover.to_string(),
            ),
            (
                "acknowledged appends",
                format!(
                    "{} ({} client errors)",
                    thousands(self.acknowledged as u64),
                    self.client_errors.len()
                ),
            ),
            ("lost", self.lost.to_string()),
            ("duplicated", self.duplicated.to_string()),
        ];
        if let Some(error) = &self.error {
            rows.insert(1, ("error", error.clone()));
        }
        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let mut text = format!(
            "migration {} of tenant {}: {} -> {}\n",
            self.migration_id, self.tenant, self.source, self.target
        );
        for (label, value) in rows {
            writeln!(text, "  {label:<width$}  {value}").expect("writing to a String cannot fail");
        }
        text
    }

    fn copied(&self) -> String {
        match self.bulk_copy {
            Some((events, took)) => format!(
                "{} ({} by the bulk copy in {:.1} s, the rest by the tail)",
                thousands(self.events_copied as u64),
                thousands(events),
                took.as_secs_f64()
            ),
            None => thousands(self.events_copied.max(0) as u64),
        }
    }

    fn copy_rate(&self) -> String {
        match self.bulk_copy {
            Some((events, took)) if !took.is_zero() => format!(
                "{} events/s (bulk copy, under the load)",
                thousands((events as f64 / took.as_secs_f64()).round() as u64)
            ),
            _ => "-".into(),
        }
    }

    fn pause(&self) -> String {
        match (self.cutover_pause, self.pause_before_commit) {
            (Some(pause), Some(commit)) => format!(
                "{} (tenant held; {} of it until the MIGRATED commit)",
                ms(pause),
                ms(commit)
            ),
            (Some(pause), None) => format!("{} (tenant held)", ms(pause)),
            (None, Some(commit)) => format!("{} until the MIGRATED commit", ms(commit)),
            (None, None) => "-".into(),
        }
    }

    fn dual_write(&self) -> String {
        match self.dual_write_window {
            Some(window) => format!(
                "{}, {:.1} s",
                self.moving_dual_write.describe(),
                window.as_secs_f64()
            ),
            None => "-".into(),
        }
    }

    fn added_latency(&self) -> String {
        let delta = |p: f64| {
            let during = self.moving_dual_write.percentile(p)?;
            let before = self.moving_before.percentile(p)?;
            Some(signed_ms(during.as_secs_f64() - before.as_secs_f64()))
        };
        match (delta(50.0), delta(99.0)) {
            (Some(p50), Some(p99)) => format!("p50 {p50}  p99 {p99}  (DUAL_WRITE vs before)"),
            _ => "-".into(),
        }
    }

    fn cutover_verification(&self) -> String {
        self.cutover_verification
            .clone()
            .unwrap_or_else(|| "-".into())
    }

    fn target_verification(&self) -> String {
        match &self.target_check {
            Some(check) => format!("{}: {}", check.level, describe_check(check)),
            None => "-".into(),
        }
    }
}

fn describe_check(check: &TargetCheck) -> String {
    format!(
        "{} missing, {} differing, {} extra on the target (appended after the cutover: {})",
        check.missing, check.differing, check.extra, check.appended_after_cutover
    )
}

/// `1.23 ms`.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// `+0.12 ms` / `-0.05 ms`, from seconds.
fn signed_ms(seconds: f64) -> String {
    format!("{:+.2} ms", seconds * 1000.0)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, latency_ms: u64, moving: bool) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            moving,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_inside_the_window() {
        let samples: Vec<Sample> = (1..=100).map(|i| sample(i, i, true)).collect();
        let window = Duration::from_millis(1)..Duration::from_millis(101);
        let all = Latencies::of(&samples, &window, |s| s.moving);
        assert_eq!(all.len(), 100);
        assert_eq!(all.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(all.percentile(99.0), Some(Duration::from_millis(99)));
        let early = Latencies::of(
            &samples,
            &(Duration::ZERO..Duration::from_millis(11)),
            |_| true,
        );
        assert_eq!(early.percentile(100.0), Some(Duration::from_millis(10)));
        assert_eq!(Latencies::default().percentile(50.0), None);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ms(Duration::from_micros(1234)), "1.23 ms");
        assert_eq!(signed_ms(-0.0005), "-0.50 ms");
    }

    fn figures() -> Figures {
        Figures {
            migration_id: 1,
            tenant: Uuid::nil(),
            source: "shared".into(),
            target: "dedicated-1".into(),
            state: MigrationState::Migrated,
            error: None,
            events_copied: 1500,
            bulk_copy: Some((1000, Duration::from_millis(500))),
            cutover_pause: Some(Duration::from_millis(30)),
            pause_before_commit: Some(Duration::from_millis(25)),
            cutover_verification: Some("hash passed".into()),
            moving_before: Latencies::of(
                &[sample(1, 2, true)],
                &(Duration::ZERO..Duration::MAX),
                |_| true,
            ),
            moving_dual_write: Latencies::of(
                &[sample(1, 3, true)],
                &(Duration::ZERO..Duration::MAX),
                |_| true,
            ),
            dual_write_window: Some(Duration::from_secs(2)),
            moving_after: Latencies::default(),
            others_before: Latencies::default(),
            others_during: Latencies::default(),
            target_check: Some(TargetCheck {
                level: "full".into(),
                missing: 0,
                differing: 0,
                extra: 7,
                appended_after_cutover: 7,
            }),
            source_writes_after_cutover: 0,
            acknowledged: 12,
            client_errors: Vec::new(),
            lost: 0,
            duplicated: 0,
        }
    }

    #[test]
    fn a_clean_run_has_no_problems_and_says_so() {
        let figures = figures();
        assert!(figures.problems().is_empty(), "{:?}", figures.problems());
        let text = figures.render();
        let line = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label} line in\n{text}"))
                .split_whitespace()
                .last()
                .unwrap()
                .to_string()
        };
        assert_eq!(line("lost"), "0");
        assert_eq!(line("duplicated"), "0");
        assert_eq!(line("state"), "MIGRATED");
        assert!(text.contains("2,000 events/s"), "{text}");
        assert!(text.contains("p50 +1.00 ms  p99 +1.00 ms"), "{text}");
    }

    #[test]
    fn every_problem_is_named() {
        let mut figures = figures();
        figures.state = MigrationState::Failed;
        figures.lost = 2;
        figures.client_errors = vec!["append: boom".into()];
        figures.target_check.as_mut().unwrap().extra = 8;
        let problems = figures.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("FAILED"));
        assert!(problems[2].contains("append: boom"));
    }
}
