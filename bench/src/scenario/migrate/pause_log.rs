//! Where a cutover's pause goes, read from evshift's JSON log: when the tenant's gate closed
//! and opened, when the final tail's last batch was checkpointed under the hold, and the pause
//! evshift logged with "cutover completed".

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// What the log says about one cutover attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LoggedCutover {
    /// Gate closed to gate opened, from the two lines' timestamps (ms, µs resolution).
    pub gate_closed_ms: f64,
    /// Gate closed to the checkpoint of the final tail's last batch; `None` when the final
    /// tail had nothing to copy.
    pub final_tail_done_ms: Option<f64>,
    /// Events the final tail copied under the hold (its checkpointed batches).
    pub final_tail_events: i64,
    /// `pause_ms` of the "cutover completed" line (whole milliseconds).
    pub logged_pause_ms: Option<u64>,
}

/// One log line, the fields used here.
struct Line {
    /// Seconds since 1970.
    t: f64,
    message: String,
    fields: Value,
}

/// evshift's JSON log, parsed (lines that are not JSON are skipped).
pub struct Log(Vec<Line>);

impl Log {
    /// Parses the text of the log.
    pub fn parse(text: &str) -> Log {
        Log(text.lines().filter_map(parse_line).collect())
    }

    /// The cutover of `tenant` whose gate closed between `from` and `to` (seconds since 1970,
    /// as measured around `evshift ctl cutover`), or `None` when the log shows none.
    pub fn cutover_in(&self, tenant: Uuid, from: f64, to: f64) -> Option<LoggedCutover> {
        cutover_in(&self.0, tenant, from, to)
    }
}

/// Warnings and errors in the log shown per run, at most.
const PROBLEMS_KEPT: usize = 20;

impl Log {
    /// The first WARN and ERROR lines (as logged), and how many there were.
    pub fn problems(&self) -> (Vec<String>, usize) {
        let problems: Vec<&Line> = self
            .0
            .iter()
            .filter(|l| matches!(l.fields["level"].as_str(), Some("WARN" | "ERROR")))
            .collect();
        let kept = problems
            .iter()
            .take(PROBLEMS_KEPT)
            .map(|l| l.fields.to_string())
            .collect();
        (kept, problems.len())
    }
}

fn cutover_in(lines: &[Line], tenant: Uuid, from: f64, to: f64) -> Option<LoggedCutover> {
    let tenant = tenant.to_string();
    let of_tenant = |l: &&Line| l.fields["tenant_id"].as_str() == Some(tenant.as_str());
    // Timestamps are microseconds; the window is widened by a little for clock rounding.
    let closed = lines
        .iter()
        .filter(of_tenant)
        .find(|l| l.message == "tenant gate closed" && l.t >= from - 0.001 && l.t <= to)?;
    let opened = lines
        .iter()
        .filter(of_tenant)
        .find(|l| l.message == "tenant gate opened" && l.t >= closed.t)?;
    let under_hold = |l: &&Line| l.t >= closed.t && l.t <= opened.t;
    let tail: Vec<&Line> = lines
        .iter()
        .filter(of_tenant)
        .filter(under_hold)
        .filter(|l| l.message == "batch checkpointed" && l.fields["phase"] == "CUTOVER_PAUSED")
        .collect();
    let completed = lines
        .iter()
        .filter(|l| l.message == "cutover completed" && l.t >= opened.t && l.t <= to + 1.0)
        .find(|l| {
            l.fields["tenant_id"].as_str().is_none() || l.fields["tenant_id"] == tenant.as_str()
        });
    Some(LoggedCutover {
        gate_closed_ms: (opened.t - closed.t) * 1e3,
        final_tail_done_ms: tail.last().map(|l| (l.t - closed.t) * 1e3),
        final_tail_events: tail
            .iter()
            .filter_map(|l| l.fields["events"].as_i64())
            .sum(),
        logged_pause_ms: completed.and_then(|l| l.fields["pause_ms"].as_u64()),
    })
}

fn parse_line(text: &str) -> Option<Line> {
    let fields: Value = serde_json::from_str(text.trim()).ok()?;
    let t = parse_timestamp(fields["timestamp"].as_str()?)?;
    let message = fields["message"].as_str()?.to_owned();
    Some(Line { t, message, fields })
}

/// `2025-06-01T12:00:00.123456Z` as seconds since 1970 (UTC only, as evshift writes it).
fn parse_timestamp(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.splitn(3, ':');
    let hours: f64 = time.next()?.parse().ok()?;
    let minutes: f64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    let days = days_from_civil(year, month, day) as f64;
    Some(days * 86_400.0 + hours * 3_600.0 + minutes * 60.0 + seconds)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds_since_1970() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(parse_timestamp("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(parse_timestamp("2000-03-01 00:00:00"), None);
    }

    #[test]
    fn a_cutover_is_read_from_its_lines() {
        let tenant = Uuid::from_u128(7);
        let line = |ts: &str, message: &str, extra: &str| {
            format!(
                "{{\"timestamp\":\"2026-01-01T00:00:{ts}Z\",\"level\":\"INFO\",\"message\":\"{message}\",\"tenant_id\":\"{tenant}\"{extra}}}"
            )
        };
        let log = [
            line("00.000000", "tenant gate closed", ""),
            line("00.010000", "tenant gate opened", ""),
            "not json".to_owned(),
            line("10.000000", "tenant gate closed", ""),
            line(
                "10.004000",
                "batch checkpointed",
                ",\"phase\":\"CUTOVER_PAUSED\",\"events\":12",
            ),
            line("10.020000", "tenant gate opened", ""),
            line("10.020100", "cutover completed", ",\"pause_ms\":20"),
        ]
        .join("\n");
        let base = parse_timestamp("2026-01-01T00:00:00Z").unwrap();
        let log = Log::parse(&log);
        let found = log.cutover_in(tenant, base + 9.0, base + 11.0).unwrap();
        assert!((found.gate_closed_ms - 20.0).abs() < 1e-3, "{found:?}");
        assert!((found.final_tail_done_ms.unwrap() - 4.0).abs() < 1e-3);
        assert_eq!(found.final_tail_events, 12);
        assert_eq!(found.logged_pause_ms, Some(20));
        let first = log.cutover_in(tenant, base - 1.0, base + 1.0).unwrap();
        assert_eq!(first.final_tail_done_ms, None);
        assert!(log.cutover_in(tenant, base + 20.0, base + 30.0).is_none());
    }
}
