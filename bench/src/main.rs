//! `evshift-bench`: the load generator and the benchmark scenarios of evshift.

use clap::Parser;
use evshift_bench::load_cli;

/// Command-line interface.
#[derive(Parser)]
#[command(
    name = "evshift-bench",
    about = "Load generator and benchmark scenarios of evshift"
)]
enum Cli {
    /// Run one load against a URL (a store, PgBouncer or evshift).
    Load(load_cli::LoadArgs),
}

#[tokio::main]
async fn main() {
    let result = match Cli::parse() {
        Cli::Load(args) => load_cli::run(args).await,
    };
    if let Err(error) = result {
        eprintln!("evshift-bench: {error:#}");
        std::process::exit(1);
    }
}
