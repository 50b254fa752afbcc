//! `evshift-bench`: the load generator and the benchmark scenarios of evshift.
//!
//! `load` runs one load against a URL; `passthrough`, `routed`, `copy`, `scale`, `migrate` start
//! their own throwaway clusters and evshift and print markdown tables; `all` runs every scenario
//! into a results folder. Errors are one line on standard error and exit status 1; bad arguments
//! exit with status 2.

use clap::Parser;
use evshift_bench::{load_cli, scenario_cli};

/// Command-line interface.
#[derive(Parser)]
#[command(
    name = "evshift-bench",
    about = "Load generator and benchmark scenarios of evshift"
)]
enum Cli {
    /// Run one load against a URL (a store, PgBouncer or evshift).
    Load(load_cli::LoadArgs),
    /// direct vs evshift vs PgBouncer (transaction mode) in front of one store.
    Passthrough(scenario_cli::PassthroughArgs),
    /// 8 tenants over 2 stores through evshift vs evshift with one store vs direct.
    Routed(scenario_cli::RoutedArgs),
    /// evshift's bulk copy of one tenant vs the raw COPY pipe; peak RSS.
    Copy(scenario_cli::CopyArgs),
    /// tps and RSS at 10/100/1,000 connections; copy rate at 100k/1M/10M events.
    Scale(scenario_cli::ScaleArgs),
    /// A tenant migrated back and forth under load: dual-write latency, cutover pauses.
    Migrate(scenario_cli::MigrateArgs),
    /// Every scenario, results into a folder.
    All(scenario_cli::AllArgs),
}

#[tokio::main]
async fn main() {
    let result = match Cli::parse() {
        Cli::Load(args) => load_cli::run(args).await,
        Cli::Passthrough(args) => scenario_cli::passthrough(args).await,
        Cli::Routed(args) => scenario_cli::routed(args).await,
        Cli::Copy(args) => scenario_cli::copy(args).await,
        Cli::Scale(args) => scenario_cli::scale(args).await,
        Cli::Migrate(args) => scenario_cli::migrate(args).await,
        Cli::All(args) => scenario_cli::all(args).await,
    };
    if let Err(error) = result {
        eprintln!("evshift-bench: {error:#}");
        std::process::exit(1);
    }
}
