//! `evshift ctl watch`: polls `status` and draws a progress bar (state, percent, events/s, ETA,
//! lag) until the migration reaches a terminal state, or the state given with `--until`.
//!
//! On a terminal the bar is redrawn in place on stderr; otherwise (a pipe, a CI log) one line
//! per state change goes to stdout. With `--json` every polled status is printed as its reply
//! line. Exit status 0 at MIGRATED or at the `--until` state; 1 at FAILED or ROLLED_BACK.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use evshift_control::{MigrationState, MigrationStatus};

use super::{decode, exchange, CtlArgs, Outcome};
use crate::control_socket::protocol::{ErrorBody, Reply};

/// Polls until the migration ends.
pub(super) fn watch(
    args: &CtlArgs,
    until: Option<MigrationState>,
    interval: Duration,
) -> anyhow::Result<Outcome> {
    let request = args.command.request().to_line();
    let bar = progress_bar();
    let mut last_state = None;
    loop {
        let line = exchange(&args.socket, &request)?;
        let reply: Reply = serde_json::from_str(&line)
            .with_context(|| format!("unexpected reply from {}", args.socket.display()))?;
        let status = match reply {
            Reply::Ok(result) => decode::<MigrationStatus>(result)?,
            Reply::Error(error) => {
                bar.abandon();
                return Ok(Outcome::Refused(error));
            }
        };
        if args.json {
            println!("{line}");
        } else if bar.is_hidden() && last_state != Some(status.state) {
            println!("{}", describe(&status));
        }
        last_state = Some(status.state);
        bar.set_prefix(status.id.to_string());
        bar.set_position(status.progress_percentage.clamp(0.0, 100.0) as u64);
        bar.set_message(describe(&status));
        if let Some(outcome) = ending(&status, until) {
            bar.finish();
            return Ok(outcome);
        }
        std::thread::sleep(interval);
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(100);
    let style = ProgressStyle::with_template(
        "{spinner} migration {prefix} [{bar:30}] {pos:>3}% {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `Some` once watching is over: the migration ended, or reached `until`.
fn ending(status: &MigrationStatus, until: Option<MigrationState>) -> Option<Outcome> {
    let refused = |kind: &str, what: String| {
        Some(Outcome::Refused(ErrorBody {
            kind: kind.to_string(),
            message: what,
        }))
    };
    match status.state {
        MigrationState::Failed => refused(
            "MigrationFailedError",
            format!(
                "migration {} failed: {}",
                status.id,
                status
                    .error_message
                    .as_deref()
                    .unwrap_or("no error message")
            ),
        ),
        MigrationState::RolledBack => refused(
            "MigrationRolledBackError",
            format!("migration {} was rolled back", status.id),
        ),
        MigrationState::Migrated => Some(Outcome::Done),
        state if until.is_some_and(|u| rank(state) >= rank(u)) => Some(Outcome::Done),
        _ => None,
    }
}

/// Order of the forward path, so that `--until BULK_COPY` also ends at DUAL_WRITE.
fn rank(state: MigrationState) -> u8 {
    match state {
        MigrationState::Pending => 0,
        MigrationState::BulkCopy => 1,
        MigrationState::DualWrite => 2,
        MigrationState::CutoverPaused => 3,
        MigrationState::Migrated => 4,
        MigrationState::Failed | MigrationState::RolledBack => 5,
    }
}

/// `BULK_COPY 120000/200000 events, 45000 events/s, ETA 2s, lag 80000`.
fn describe(status: &MigrationStatus) -> String {
    let remaining = (status.events_total - status.events_copied)
        .max(status.lag_events)
        .max(0);
    let eta = if status.events_per_second > 0.0 {
        format_duration(remaining as f64 / status.events_per_second)
    } else {
        "-".into()
    };
    format!(
        "{}{} {}/{} events, {:.0} events/s, ETA {}, lag {}",
        status.state,
        if status.paused { " (paused)" } else { "" },
        status.events_copied,
        status.events_total,
        status.events_per_second,
        eta,
        status.lag_events
    )
}

fn format_duration(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: MigrationState) -> MigrationStatus {
        serde_json::from_value(serde_json::json!({
            "id": 7, "tenant_id": uuid::Uuid::nil(), "source_store": "a", "target_store": "b",
            "state": state, "paused": false, "progress_percentage": 50.0,
            "events_total": 200, "events_copied": 100, "lag_events": 100,
            "events_per_second": 50.0, "last_source_position": 9, "error_message": null,
            "config": {}, "created_at": "t", "started_at": null,
            "bulk_copy_completed_at": null, "dual_write_started_at": null,
            "cutover_started_at": null, "completed_at": null
        }))
        .unwrap()
    }

    #[test]
    fn describes_progress_with_an_eta() {
        let text = describe(&status(MigrationState::BulkCopy));
        assert_eq!(
            text,
            "BULK_COPY 100/200 events, 50 events/s, ETA 2s, lag 100"
        );
        assert_eq!(format_duration(3725.0), "1h02m");
    }

    #[test]
    fn ends_at_terminal_states_and_at_until() {
        assert!(ending(&status(MigrationState::BulkCopy), None).is_none());
        assert!(matches!(
            ending(
                &status(MigrationState::DualWrite),
                Some(MigrationState::DualWrite)
            ),
            Some(Outcome::Done)
        ));
        assert!(matches!(
            ending(&status(MigrationState::Failed), Some(MigrationState::DualWrite)),
            Some(Outcome::Refused(e)) if e.kind == "MigrationFailedError"
        ));
        assert!(matches!(
            ending(&status(MigrationState::Migrated), None),
            Some(Outcome::Done)
        ));
    }
}
