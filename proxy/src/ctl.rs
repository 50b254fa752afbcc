//! `evshift ctl`: the control socket's command-line client.
//!
//! It sends one request line, reads one reply line, and prints the result as an aligned table
//! (or, with `--json`, the reply as it came). An error reply is one line on stderr naming its
//! kind, exit status 1; so is a socket that cannot be reached.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::control_socket::protocol::{ErrorBody, Reply, Request, RouteView, StoreStatus};

/// How long to wait for a reply. `assign` asks every store, each bounded by its connect
/// timeout, so this is generous.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

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
        }
    }
}

/// Runs `evshift ctl`: exit status 0 on success, 1 on an error reply or a socket problem.
pub fn run(args: CtlArgs) -> ExitCode {
    match execute(&args) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Refused(error)) => {
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
}

fn execute(args: &CtlArgs) -> anyhow::Result<Outcome> {
    let line = exchange(&args.socket, &args.command.request().to_line())?;
    let reply: Reply = serde_json::from_str(&line)
        .with_context(|| format!("unexpected reply from {}", args.socket.display()))?;
    if args.json {
        println!("{line}");
    }
    let result = match reply {
        Reply::Ok(result) => result,
        Reply::Error(error) => return Ok(Outcome::Refused(error)),
    };
    if !args.json {
        print!("{}", render(&args.command, result)?);
    }
    Ok(Outcome::Done)
}

/// Sends `request` and returns the reply line (without its newline).
fn exchange(socket: &Path, request: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the control socket {} (is evshift running? --socket or \
             EVSHIFT_SOCKET name another)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
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
    })
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

/// Left-aligned columns two spaces apart; no trailing blanks.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

    #[test]
    fn routes_show_dashes_without_a_migration() {
        let view = RouteView::unassigned(Uuid::nil(), "shared");
        let text = routes_table(&[view]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("00000000-0000-0000-0000-000000000000  shared  no"));
        assert!(row.ends_with('-'));
    }
}
