//! evshift's load harness and benchmark scenarios.
//!
//! - [`load`]: the load generator (N clients, M tenants, the eventsource mix, closed loop or a
//!   fixed rate, three protocols) with per-tenant HDR histograms, a 100 ms time series and the
//!   ids of acknowledged appends; [`check`] verifies those ids against the stores afterwards.
//! - [`scenario`]: the benchmark scenarios (`passthrough`, `routed`, `copy`, `scale`, `all`),
//!   each starting its own throwaway clusters, printing markdown tables, writing JSON and SVG
//!   figures ([`plot`]) and, on request, its section of `docs/benchmarks.md`.
//!
//! A new scenario is a module under [`scenario`] returning a [`scenario::ScenarioOutput`], plus
//! a subcommand in `main.rs`.

pub mod check;
pub mod ids;
pub mod load;
pub mod load_cli;
pub mod machine;
pub mod mix;
pub mod plot;
pub mod procfs;
pub mod recorder;
pub mod report;
pub mod scenario;
pub mod scenario_cli;
pub mod seed;
pub mod stats;
pub mod table;
pub mod workload;
