//! `evshift demo`: a live migration to watch from start to finish.
//!
//! Three throwaway PostgreSQL servers (a shared store, a dedicated store, a control store), a
//! multi-tenant event store seeded into the shared one, evshift in front of both, a steady
//! eventsource-style load through evshift, and the biggest tenant moved to the dedicated store
//! while the load runs, with live progress bars; then the target is verified, every
//! acknowledged event is looked up, and a summary table says what it cost. With `--source`,
//! `--target` and `--control` it runs against existing servers instead.
//!
//! Parts: `clusters` (throwaway servers), `seed` (schema and history), `proxy` (evshift's
//! configuration and process), `control` (control-socket requests), `load` (the clients),
//! `progress` (bars), `check` (lost and duplicated events), `summary` (the closing table),
//! `clock` (control-store timestamps), `run` (the steps in order).

mod check;
mod clock;
mod clusters;
mod control;
mod load;
mod progress;
mod proxy;
mod run;
mod seed;
mod summary;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Args;

use evshift_proxy::config::StoreEndpoint;

use clusters::{PgBinaries, RunAs};

/// Most tenants the demo seeds.
const MAX_TENANTS: u32 = 10_000;

/// Most events the demo seeds.
const MAX_EVENTS: u64 = 50_000_000;

/// Fewest events per tenant, so that every tenant has some history to show.
const MIN_EVENTS_PER_TENANT: u64 = 10;

/// `evshift demo [--keep] [--events N] [--tenants N] [--source URL --target URL --control URL]`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the servers and evshift running at the end, and print how to explore and stop them.
    #[arg(long)]
    pub keep: bool,
    /// Events to seed, over all tenants.
    #[arg(long, value_name = "N", default_value_t = 500_000)]
    pub events: u64,
    /// Tenants to seed (sizes skewed; the biggest one moves).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub tenants: u32,
    /// An existing event store to seed and move the tenant from (with --target and --control).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// An existing event store to move the tenant to.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// An existing database for evshift's control store.
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
}

/// Where the demo's servers come from.
#[derive(Debug, Clone)]
pub enum Servers {
    /// Three throwaway clusters started by the demo.
    Throwaway { bin: PgBinaries, run_as: RunAs },
    /// Servers that already run.
    Existing {
        source: String,
        target: String,
        control: String,
    },
}

/// The validated arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub keep: bool,
    pub events: u64,
    pub tenants: u32,
    pub servers: Servers,
}

/// How the demo ended, short of success.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad arguments (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// Something the demo needs is missing from this machine (exit status 2).
    #[error("{0}")]
    Unprepared(String),
    /// Ctrl-C or SIGTERM (exit status 130).
    #[error("interrupted; what the demo had started is stopped and removed")]
    Interrupted,
    /// A step failed (exit status 1).
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
    /// The demo ran but its checks did not hold (exit status 1).
    #[error("{0}")]
    Verdict(String),
}

impl DemoError {
    fn exit_code(&self) -> ExitCode {
        match self {
            DemoError::Usage(_) | DemoError::Unprepared(_) => ExitCode::from(2),
            DemoError::Interrupted => ExitCode::from(130),
            DemoError::Failed(_) | DemoError::Verdict(_) => ExitCode::FAILURE,
        }
    }
}

impl DemoArgs {
    /// Checks the arguments and what the machine offers; every error is one line.
    pub fn plan(&self) -> Result<Plan, DemoError> {
        let usage = |text: String| Err(DemoError::Usage(text));
        if !(2..=MAX_TENANTS).contains(&self.tenants) {
            return usage(format!(
                "--tenants must be between 2 and {MAX_TENANTS} (one moves, the others show \
                 that they are not held), not {}",
                self.tenants
            ));
        }
        let least = u64::from(self.tenants) * MIN_EVENTS_PER_TENANT;
        if !(least..=MAX_EVENTS).contains(&self.events) {
            return usage(format!(
                "--events must be between {least} ({MIN_EVENTS_PER_TENANT} per tenant) and \
                 {MAX_EVENTS}, not {}",
                self.events
            ));
        }
        let servers = match (&self.source, &self.target, &self.control) {
            (None, None, None) => Servers::Throwaway {
                bin: PgBinaries::locate().map_err(DemoError::Unprepared)?,
                run_as: RunAs::detect().map_err(DemoError::Unprepared)?,
            },
            (Some(source), Some(target), Some(control)) => {
                for (flag, url) in [
                    ("--source", source),
                    ("--target", target),
                    ("--control", control),
                ] {
                    if let Err(e) = StoreEndpoint::parse(url) {
                        return usage(format!("{flag}: not a PostgreSQL URL ({e})"));
                    }
                }
                if source == target {
                    return usage("--source and --target must be different stores".into());
                }
                Servers::Existing {
                    source: source.clone(),
                    target: target.clone(),
                    control: control.clone(),
                }
            }
            _ => {
                return usage(
                    "--source, --target and --control go together: give all three URLs, or \
                     none to let the demo start throwaway servers"
                        .into(),
                )
            }
        };
        Ok(Plan {
            keep: self.keep,
            events: self.events,
            tenants: self.tenants,
            servers,
        })
    }
}

/// Runs `evshift demo`: 0 when the tenant moved with nothing lost or duplicated, 1 when a
/// step or a check failed, 2 for bad arguments or missing PostgreSQL binaries.
pub fn run(args: DemoArgs) -> ExitCode {
    let outcome = args.plan().and_then(|plan| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| DemoError::Failed(anyhow::anyhow!("cannot start the runtime: {e}")))?;
        runtime.block_on(async {
            tokio::select! {
                outcome = run::run(plan) => outcome,
                () = interrupted() => Err(DemoError::Interrupted),
            }
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("evshift demo: {}", one_line(&error.to_string()));
            error.exit_code()
        }
    }
}

/// A command-line error: for `evshift demo`, one line and exit status 2; for the other
/// commands clap's own message.
pub fn cli_error(error: clap::Error) -> ExitCode {
    let demo = std::env::args().nth(1).as_deref() == Some("demo");
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !demo || informational {
        error.exit()
    }
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad arguments");
    eprintln!(
        "evshift demo: {} (see evshift demo --help)",
        first.trim_start_matches("error: ")
    );
    ExitCode::from(2)
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(events: u64, tenants: u32) -> DemoArgs {
        DemoArgs {
            keep: false,
            events,
            tenants,
            source: Some("postgres://postgres@127.0.0.1:5432/app".into()),
            target: Some("postgres://postgres@127.0.0.1:5433/app".into()),
            control: Some("postgres://postgres@127.0.0.1:5434/evshift".into()),
        }
    }

    fn usage_error(args: &DemoArgs) -> String {
        match args.plan() {
            Err(DemoError::Usage(text)) => text,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(usage_error(&args(1000, 1)).contains("--tenants"));
        assert!(usage_error(&args(19, 2)).contains("--events"));
        assert!(matches!(
            args(1000, 5).plan(),
            Ok(Plan {
                servers: Servers::Existing { .. },
                ..
            })
        ));
    }

    #[test]
    fn existing_servers_take_all_three_urls() {
        let mut partial = args(1000, 5);
        partial.control = None;
        assert!(usage_error(&partial).contains("go together"));
        let mut same = args(1000, 5);
        same.target = same.source.clone();
        assert!(usage_error(&same).contains("different"));
        let mut bad = args(1000, 5);
        bad.source = Some("postgres://[".into());
        assert!(usage_error(&bad).starts_with("--source"));
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
