//! `evshift-bench`: a pgbench-style load generator for eventsource workloads.
//!
//! `evshift-bench load --url URL ...` seeds tenants (through the URL, so that evshift places
//! them), then runs N clients for a duration against the URL and prints throughput and latency
//! percentiles, as text or JSON.

mod load;
mod seed;
mod workload;

use clap::Parser;

/// Command-line interface.
#[derive(Parser)]
#[command(
    name = "evshift-bench",
    about = "Load generator for evshift benchmarks"
)]
enum Cli {
    /// Seed tenants and run a closed-loop load against one URL.
    Load(load::LoadArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Load(args) => load::run(args).await,
    }
}
