//! `evshift ctl`: the control socket's command-line client.
//!
//! It sends one request line, reads one reply line, and prints the result as an aligned table
//! (or, with `--json`, the reply as it came). An error reply is one line on stderr naming its
//! kind, exit status 1; so is a socket that cannot be reached, and so is a verification that
//! found differences (after its report is printed).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use evshift_control::verification::{Mismatch, SideSummary};
use evshift_control::{
    AuditEntry, MigrationRef, MigrationState, MigrationStatus, OptionOverrides, SubscriptionPlan,
    VerificationReport, VerifyMode,
};

use crate::control_socket::protocol::{
    ControlAction, ErrorBody, Reply, Request, RouteView, StoreStatus,
};

mod watch;

/// How long to wait for a reply. `assign` asks every store, each bounded by its connect
/// timeout, and `abort` cleans the target, so this is generous.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `verify` may take: a full verification reads every event of the tenant twice.
const VERIFY_REPLY_TIMEOUT: Duration = Duration::from_secs(3600);

/// `evshift ctl [--socket PATH] [--json] COMMAND`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control socket of the evshift to talk to.
    #[arg(
        long,
        env = "EVSHIFT_SOCKET",
        default_value = "/tmp/evshift.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Print the JSON reply instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands of `evshift ctl`.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// The configured stores and whether each is reachable now.
    Stores,
    /// The routing table of the running evshift, or the route of one tenant.
    Routes {
        /// A tenant id; without it, every route.
        tenant: Option<Uuid>,
    },
    /// Place a tenant that has no events yet on a store.
    Assign {
        /// The tenant id.
        tenant: Uuid,
        /// The store id.
        store: String,
    },
    /// Start migrating a tenant to another store.
    Migrate {
        /// The tenant id.
        tenant: Uuid,
        /// The target store id.
        #[arg(long)]
        to: String,
        /// Events per copy batch (default: [migration] batch_size).
        #[arg(long)]
        batch_size: Option<u32>,
        /// Wait for `evshift ctl cutover` instead of cutting over at low lag.
        #[arg(long)]
        manual_cutover: bool,
        /// How the cutover verifies the target: count, hash or full.
        #[arg(long)]
        verify: Option<VerifyMode>,
        /// Copy at most this many events per second (0: unlimited).
        #[arg(long)]
        rate_limit: Option<u64>,
        /// Subscriptions whose checkpoints the cutover translates (comma-separated).
        #[arg(long, value_delimiter = ',')]
        subscriptions: Vec<String>,
    },
    /// Every migration, or one (by migration id or tenant id).
    Status {
        #[arg(value_parser = parse_ref)]
        migration: Option<MigrationRef>,
    },
    /// A live progress bar until the migration ends (or reaches --until).
    Watch {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
        /// Also stop, with status 0, once the migration reaches this state (e.g. DUAL_WRITE).
        #[arg(long, value_parser = parse_state)]
        until: Option<MigrationState>,
        /// Milliseconds between two polls.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// Stop a migration's copy at the next batch boundary until `resume`.
    Pause {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
    },
    /// Resume a paused migration, or retry a failed one from its checkpoint.
    Resume {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
    },
    /// Abort a migration: remove what it copied from the target, route to the source.
    Abort {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
    },
    /// A migration's audit log.
    Audit {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
    },
    /// Cut a migration in DUAL_WRITE over to its target now.
    Cutover {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
    },
    /// Compare the target with the source (exit status 1 when they differ).
    Verify {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
        /// count, hash or full (default: the migration's verify option).
        level: Option<VerifyMode>,
    },
    /// Rewrite subscription checkpoints from source to target positions.
    Subscriptions {
        #[arg(value_parser = parse_ref)]
        migration: MigrationRef,
        /// Subscription (projection) names, comma-separated; default: every checkpoint on the
        /// source.
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
        /// Print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_ref(text: &str) -> Result<MigrationRef, String> {
    text.parse::<MigrationRef>().map_err(|e| match e {
        evshift_control::ControlError::InvalidRequest(message) => message,
        other => other.to_string(),
    })
}

fn parse_state(text: &str) -> Result<MigrationState, String> {
    text.to_ascii_uppercase().parse()
}

/// The audit log's operator for commands from this terminal: the user name.
fn operator() -> Option<String> {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .map(|user| format!("{user} (evshift ctl)"))
}

impl CtlCommand {
    fn request(&self) -> Request {
        match self {
            CtlCommand::Stores => Request::Stores,
            CtlCommand::Routes { tenant } => Request::Routes { tenant: *tenant },
            CtlCommand::Assign { tenant, store } => Request::Assign {
                tenant: *tenant,
                store: store.clone(),
            },
            CtlCommand::Migrate {
                tenant,
                to,
                batch_size,
                manual_cutover,
                verify,
                rate_limit,
                subscriptions,
            } => Request::Migrate {
                tenant: *tenant,
                to: to.clone(),
                overrides: OptionOverrides {
                    batch_size: *batch_size,
                    rate_limit_events_per_sec: *rate_limit,
                    manual_cutover: *manual_cutover,
                    verify: *verify,
                    subscriptions: subscriptions.clone(),
                },
                operator: operator(),
            },
            CtlCommand::Status { migration } => Request::Status {
                migration: *migration,
            },
            CtlCommand::Watch { migration, .. } => Request::Status {
                migration: Some(*migration),
            },
            CtlCommand::Pause { migration } => control(ControlAction::Pause, *migration),
            CtlCommand::Resume { migration } => control(ControlAction::Resume, *migration),
            CtlCommand::Abort { migration } => control(ControlAction::Abort, *migration),
            CtlCommand::Audit { migration } => Request::Audit {
                migration: *migration,
            },
            CtlCommand::Cutover { migration } => control(ControlAction::Cutover, *migration),
            CtlCommand::Verify { migration, level } => Request::Verify {
                migration: *migration,
                level: *level,
                operator: operator(),
            },
            CtlCommand::Subscriptions {
                migration,
                names,
                dry_run,
            } => Request::Subscriptions {
                migration: *migration,
                names: names.clone(),
                dry_run: *dry_run,
                operator: operator(),
            },
        }
    }

    /// How long to wait for the reply.
    fn reply_timeout(&self) -> Duration {
        match self {
            CtlCommand::Verify { .. } => VERIFY_REPLY_TIMEOUT,
            _ => REPLY_TIMEOUT,
        }
    }
}

fn control(action: ControlAction, migration: MigrationRef) -> Request {
    Request::Control {
        action,
        migration,
        operator: operator(),
    }
}

/// Runs `evshift ctl`: exit status 0 on success, 1 on an error reply or a socket problem.
pub fn run(args: CtlArgs) -> ExitCode {
    match execute(&args) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Refused(error)) | Ok(Outcome::Failed(error)) => {
            eprintln!("evshift ctl: {}: {}", error.kind, error.message);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("evshift ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a command ended, short of a local failure.
enum Outcome {
    Done,
    Refused(ErrorBody),
    /// The command ran and its result is a negative verdict (a failed verification).
    Failed(ErrorBody),
}

fn execute(args: &CtlArgs) -> anyhow::Result<Outcome> {
    if let CtlCommand::Watch {
        until, interval_ms, ..
    } = &args.command
    {
        let interval = Duration::from_millis((*interval_ms).max(50));
        return watch::watch(args, *until, interval);
    }
    let line = exchange_within(
        &args.socket,
        &args.command.request().to_line(),
        args.command.reply_timeout(),
    )?;
    let reply: Reply = serde_json::from_str(&line)
        .with_context(|| format!("unexpected reply from {}", args.socket.display()))?;
    if args.json {
        println!("{line}");
    }
    let result = match reply {
        Reply::Ok(result) => result,
        Reply::Error(error) => return Ok(Outcome::Refused(error)),
    };
    let verdict = failed_verdict(&args.command, &result);
    if !args.json {
        print!("{}", render(&args.command, result)?);
    }
    Ok(verdict.map_or(Outcome::Done, Outcome::Failed))
}

/// The error line of a result that is a negative verdict: a verification that did not pass.
fn failed_verdict(command: &CtlCommand, result: &serde_json::Value) -> Option<ErrorBody> {
    if !matches!(command, CtlCommand::Verify { .. }) || result["passed"] != false {
        return None;
    }
    let report: VerificationReport = serde_json::from_value(result.clone()).ok()?;
    Some(ErrorBody {
        kind: "ConsistencyError".into(),
        message: format!("migration {}: {}", report.migration_id, report.summary()),
    })
}

/// Sends `request` and returns the reply line (without its newline).
fn exchange(socket: &Path, request: &str) -> anyhow::Result<String> {
    exchange_within(socket, request, REPLY_TIMEOUT)
}

/// Like `exchange`, waiting at most `timeout` for the reply.
fn exchange_within(socket: &Path, request: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the control socket {} (is evshift running? --socket or \
             EVSHIFT_SOCKET name another)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .context("set the reply timeout")?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .with_context(|| format!("cannot send to {}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("no reply from {}", socket.display()))?;
    if line.is_empty() {
        anyhow::bail!("{} closed the connection without a reply", socket.display());
    }
    Ok(line.trim_end().to_string())
}

/// The human form of a successful result.
fn render(command: &CtlCommand, result: serde_json::Value) -> anyhow::Result<String> {
    Ok(match command {
        CtlCommand::Stores => stores_table(&decode::<Vec<StoreStatus>>(result)?),
        CtlCommand::Routes { tenant: None } => routes_table(&decode::<Vec<RouteView>>(result)?),
        CtlCommand::Routes { tenant: Some(_) } => routes_table(&[decode::<RouteView>(result)?]),
        CtlCommand::Assign { .. } => {
            let route = decode::<RouteView>(result)?;
            format!(
                "tenant {} assigned to store {}\n",
                route.tenant_id, route.store
            )
        }
        CtlCommand::Status { migration: None } => {
            migrations_table(&decode::<Vec<MigrationStatus>>(result)?)
        }
        CtlCommand::Status { migration: Some(_) } | CtlCommand::Watch { .. } => {
            migrations_table(&[decode::<MigrationStatus>(result)?])
        }
        CtlCommand::Migrate { .. }
        | CtlCommand::Pause { .. }
        | CtlCommand::Resume { .. }
        | CtlCommand::Abort { .. }
        | CtlCommand::Cutover { .. } => summary(&decode::<MigrationStatus>(result)?),
        CtlCommand::Audit { .. } => audit_table(&decode::<Vec<AuditEntry>>(result)?),
        CtlCommand::Verify { .. } => verification(&decode::<VerificationReport>(result)?),
        CtlCommand::Subscriptions { .. } => subscriptions(&decode::<SubscriptionPlan>(result)?),
    })
}

/// A verification report: the verdict, both stores, then the mismatches named.
fn verification(report: &VerificationReport) -> String {
    let side = |role: &str, store: &str, s: &SideSummary| {
        vec![
            role.to_string(),
            store.to_string(),
            s.events.to_string(),
            s.streams.to_string(),
            s.digest.map_or_else(|| "-".into(), |d| d.to_string()),
        ]
    };
    let mut text = format!(
        "migration {} of tenant {}: {} ({} ms)\n\n",
        report.migration_id,
        report.tenant_id,
        report.summary(),
        report.duration_ms
    );
    text.push_str(&table(
        &["ROLE", "STORE", "EVENTS", "STREAMS", "DIGEST"],
        &[
            side("source", &report.source_store, &report.source),
            side("target", &report.target_store, &report.target),
        ],
    ));
    if !report.mismatches.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<String>> = report.mismatches.iter().map(mismatch_row).collect();
        text.push_str(&table(&["MISMATCH", "EVENT / STREAM", "DETAIL"], &rows));
    }
    if report.truncated {
        text.push_str(&format!(
            "... {} mismatches in all; the first {} are listed\n",
            report.totals.total(),
            report.mismatches.len()
        ));
    }
    text
}

fn mismatch_row(mismatch: &Mismatch) -> Vec<String> {
    let stream = |s: &evshift_control::verification::StreamKey| {
        format!("{} {}", s.aggregate_type, s.aggregate_id)
    };
    let (kind, subject, detail) = match mismatch {
        Mismatch::StreamMissing {
            stream: s,
            source_events,
            source_last_version,
        } => (
            "stream missing",
            stream(s),
            format!("source: {source_events} events, last version {source_last_version}"),
        ),
        Mismatch::StreamExtra {
            stream: s,
            target_events,
            target_last_version,
        } => (
            "stream extra",
            stream(s),
            format!("target: {target_events} events, last version {target_last_version}"),
        ),
        Mismatch::StreamCount {
            stream: s,
            source_events,
            target_events,
        } => (
            "stream count",
            stream(s),
            format!("source {source_events} events, target {target_events}"),
        ),
        Mismatch::StreamLastVersion {
            stream: s,
            source_last_version,
            target_last_version,
        } => (
            "stream last version",
            stream(s),
            format!("source {source_last_version}, target {target_last_version}"),
        ),
        Mismatch::Digest { source, target } => (
            "digest",
            "-".into(),
            format!("source {source}, target {target}"),
        ),
        Mismatch::EventMissing {
            event_id,
            stream: s,
            version,
        } => (
            "event missing",
            event_id.to_string(),
            format!("{} version {version}", stream(s)),
        ),
        Mismatch::EventExtra {
            event_id,
            stream: s,
            version,
        } => (
            "event extra",
            event_id.to_string(),
            format!("{} version {version}", stream(s)),
        ),
        Mismatch::EventDiffers {
            event_id,
            stream: s,
            version,
            columns,
        } => (
            "event differs",
            event_id.to_string(),
            format!("{} version {version}: {}", stream(s), columns.join(", ")),
        ),
    };
    vec![kind.to_string(), subject, detail]
}

/// A subscriptions plan: one row per checkpoint, then the ones left alone.
fn subscriptions(plan: &SubscriptionPlan) -> String {
    let mut text = format!(
        "migration {} ({} -> {}){}: searched {}\n",
        plan.migration_id,
        plan.source_store,
        plan.target_store,
        if plan.dry_run { ", dry run" } else { "" },
        plan.searched_stores.join(", ")
    );
    let rows: Vec<Vec<String>> = plan
        .rewrites
        .iter()
        .map(|r| {
            let kind = serde_json::to_value(r.translation.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let status = match (&r.conflict, r.status) {
                (Some(_), _) => "conflict".to_string(),
                (None, status) => format!("{status:?}").to_lowercase(),
            };
            vec![
                r.name.clone(),
                r.store.clone(),
                r.write_to.join(", "),
                r.old_token.clone(),
                r.new_token.clone(),
                kind,
                r.translation.possible_repeats.to_string(),
                status,
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "NAME",
            "STORE",
            "WRITE TO",
            "OLD TOKEN",
            "NEW TOKEN",
            "TRANSLATION",
            "REPEATS",
            "STATUS",
        ],
        &rows,
    ));
    for conflict in plan.rewrites.iter().filter_map(|r| r.conflict.as_ref()) {
        text.push_str(&format!("conflict: {conflict}\n"));
    }
    for skipped in &plan.skipped {
        text.push_str(&format!(
            "skipped {} on {}: {}\n",
            skipped.name, skipped.store, skipped.reason
        ));
    }
    text
}

/// One line about a migration, as migrate, pause, resume and abort print it.
fn summary(m: &MigrationStatus) -> String {
    format!(
        "migration {} of tenant {}: {} -> {}, {}{}\n",
        m.id,
        m.tenant_id,
        m.source_store,
        m.target_store,
        m.state,
        if m.paused { " (paused)" } else { "" }
    )
}

fn migrations_table(migrations: &[MigrationStatus]) -> String {
    let rows = migrations
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.tenant_id.to_string(),
                format!("{} -> {}", m.source_store, m.target_store),
                format!("{}{}", m.state, if m.paused { " (paused)" } else { "" }),
                format!("{:.1}%", m.progress_percentage),
                format!("{}/{}", m.events_copied, m.events_total),
                m.lag_events.to_string(),
                format!("{:.0}", m.events_per_second),
                m.error_message.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &[
            "ID", "TENANT", "STORES", "STATE", "PROGRESS", "COPIED", "LAG", "EVENTS/S", "ERROR",
        ],
        &rows,
    )
}

fn audit_table(entries: &[AuditEntry]) -> String {
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.timestamp.clone(),
                e.event_type.clone(),
                e.operator.clone(),
                e.details.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["TIMESTAMP", "EVENT", "OPERATOR", "DETAILS"], &rows)
}

fn decode<T: DeserializeOwned>(result: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(result).context("unexpected result in the reply")
}

fn stores_table(stores: &[StoreStatus]) -> String {
    let rows = stores
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.address.clone(),
                s.database.clone(),
                yes_no(s.default).into(),
                match &s.error {
                    None if s.reachable => "yes".into(),
                    None => "no".into(),
                    Some(error) => format!("no ({error})"),
                },
            ]
        })
        .collect::<Vec<_>>();
    table(
        &["ID", "ADDRESS", "DATABASE", "DEFAULT", "REACHABLE"],
        &rows,
    )
}

fn routes_table(routes: &[RouteView]) -> String {
    let dash = || "-".to_string();
    let rows = routes
        .iter()
        .map(|r| {
            vec![
                r.tenant_id.to_string(),
                r.store.clone(),
                yes_no(r.assigned).into(),
                r.migration_id.map_or_else(dash, |id| id.to_string()),
                r.migration_state.map_or_else(dash, |s| s.to_string()),
                r.target_store.clone().unwrap_or_else(dash),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &[
            "TENANT",
            "STORE",
            "ASSIGNED",
            "MIGRATION",
            "STATE",
            "TARGET",
        ],
        &rows,
    )
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

/// `cell`, cut to [`MAX_CELL_CHARS`].
fn shorten(cell: &str) -> String {
    if cell.chars().count() <= MAX_CELL_CHARS {
        return cell.to_string();
    }
    let kept: String = cell.chars().take(MAX_CELL_CHARS - 3).collect();
    format!("{kept}...")
}

/// A cell longer than this is cut (with `...`): audit details can be very long, and a table
/// cell is for reading. `--json` prints everything.
const MAX_CELL_CHARS: usize = 200;

/// Left-aligned columns two spaces apart; no trailing blanks.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shorten(cell)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_very_long_cell_is_cut_and_the_table_still_renders() {
        let long = "x".repeat(100_000);
        let rendered = table(&["A", "B"], &[vec![long, "b".into()]]);
        assert!(
            rendered.lines().nth(1).unwrap().len() < 300,
            "{}",
            rendered.len()
        );
        assert!(rendered.contains("..."));
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["ID", "REACHABLE"],
            &[
                vec!["shared".into(), "yes".into()],
                vec!["dedicated-1".into(), "no".into()],
            ],
        );
        assert_eq!(
            text,
            "ID           REACHABLE\nshared       yes\ndedicated-1  no\n"
        );
    }

    fn report(passed: bool) -> serde_json::Value {
        serde_json::json!({
            "migration_id": 4, "tenant_id": Uuid::nil(), "source_store": "shared",
            "target_store": "dedicated", "level": "full", "passed": passed,
            "source": {"events": 2, "streams": 1}, "target": {"events": 1, "streams": 1},
            "totals": {"streams_missing": 0, "streams_extra": 0, "stream_counts": 0,
                       "stream_last_versions": 0, "digests": 0,
                       "events_missing": u8::from(!passed), "events_extra": 0,
                       "events_differing": 0},
            "mismatches": if passed { serde_json::json!([]) } else { serde_json::json!([
                {"kind": "event_missing", "event_id": Uuid::nil(), "aggregate_id": Uuid::nil(),
                 "aggregate_type": "Order", "version": 2}]) },
            "truncated": false, "duration_ms": 3
        })
    }

    #[test]
    fn a_failed_verification_is_a_consistency_error_line() {
        let command = CtlCommand::Verify {
            migration: MigrationRef::Id(4),
            level: None,
        };
        assert!(failed_verdict(&command, &report(true)).is_none());
        let error = failed_verdict(&command, &report(false)).expect("a failed verdict");
        assert_eq!(error.kind, "ConsistencyError");
        assert!(
            error.message.contains("1 event(s) missing"),
            "{}",
            error.message
        );
        let text = render(&command, report(false)).unwrap();
        assert!(text.contains("event missing  00000000-0000-0000-0000-000000000000"));
        let status = CtlCommand::Status { migration: None };
        assert!(failed_verdict(&status, &report(false)).is_none());
    }

    #[test]
    fn routes_show_dashes_without_a_migration() {
        let view = RouteView::unassigned(Uuid::nil(), "shared");
        let text = routes_table(&[view]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("00000000-0000-0000-0000-000000000000  shared  no"));
        assert!(row.ends_with('-'));
    }
}
