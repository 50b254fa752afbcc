//! The closed-loop load: N clients, each bound to one tenant, running one workload until the
//! deadline; latencies in an HDR histogram.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use tokio_postgres::NoTls;

use crate::seed;
use crate::workload::{self, Prepared, Protocol, Workload};

/// Options of `evshift-bench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Connection URL: a store directly, or evshift.
    #[arg(long)]
    pub url: String,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Tenants; client c works for tenant c mod tenants.
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    /// Seconds of load after a one-second warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    #[arg(long, value_enum, default_value_t = Workload::Append)]
    pub workload: Workload,
    #[arg(long, value_enum, default_value_t = Protocol::Prepared)]
    pub protocol: Protocol,
    /// Seed this many aggregates per tenant first (0: no seeding).
    #[arg(long, default_value_t = 0)]
    pub seed_aggregates: usize,
    /// Events per seeded aggregate.
    #[arg(long, default_value_t = 10)]
    pub seed_events: usize,
    /// Aggregates per client for appends.
    #[arg(long, default_value_t = 100)]
    pub client_aggregates: usize,
    /// Aggregates per tenant that reads pick from (the seeded ones).
    #[arg(long, default_value_t = 200)]
    pub read_aggregates: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// A label carried into the output.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub label: String,
    pub workload: Workload,
    pub protocol: Protocol,
    pub clients: usize,
    pub tenants: usize,
    pub seconds: f64,
    pub transactions: u64,
    pub errors: u64,
    pub tps: f64,
    pub latency_us: Percentiles,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    if args.seed_aggregates > 0 {
        seed::seed(
            &args.url,
            args.tenants,
            args.seed_aggregates,
            args.seed_events,
        )
        .await?;
    }
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {:?} {:?}: {} clients, {:.0} tps, p50 {} us, p95 {} us, p99 {} us, max {} us, {} errors",
            report.label,
            report.workload,
            report.protocol,
            report.clients,
            report.tps,
            report.latency_us.p50,
            report.latency_us.p95,
            report.latency_us.p99,
            report.latency_us.max,
            report.errors
        );
    }
    Ok(())
}

async fn measure(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, connection) = tokio_postgres::connect(&args.url, NoTls).await?;
        tokio::spawn(connection);
        let tenant = c % args.tenants.max(1);
        let workload = args.workload;
        let protocol = args.protocol;
        let client_aggregates = args.client_aggregates.max(1);
        let read_aggregates = args.read_aggregates.max(1);
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let prepared = match protocol {
                Protocol::Prepared => Some(Prepared::new(&client).await?),
                Protocol::Extended => None,
            };
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut errors = 0u64;
            let tenant_id = workload::tenant_id(tenant);
            loop {
                let began = Instant::now();
                if began >= deadline {
                    break;
                }
                let result = match workload {
                    Workload::Append => {
                        let a = rand::thread_rng().gen_range(0..client_aggregates);
                        let aggregate = workload::client_aggregate(tenant, c, a);
                        workload::append(&mut client, prepared.as_ref(), tenant_id, aggregate)
                            .await
                            .map(|_| ())
                    }
                    Workload::ReadStream => {
                        let a = rand::thread_rng().gen_range(0..read_aggregates);
                        let aggregate = workload::seeded_aggregate(tenant, a);
                        workload::read_stream(&client, prepared.as_ref(), aggregate)
                            .await
                            .map(|_| ())
                    }
                };
                if began < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => {
                        let micros = began.elapsed().as_micros() as u64;
                        histogram.record(micros.max(1))?;
                    }
                    Err(_) => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((histogram, errors))
        }));
    }
    let mut total = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for task in tasks {
        let (histogram, e) = task.await??;
        total.add(&histogram)?;
        errors += e;
    }
    let seconds = args.duration as f64;
    Ok(LoadReport {
        label: args.label.clone(),
        workload: args.workload,
        protocol: args.protocol,
        clients: args.clients,
        tenants: args.tenants,
        seconds,
        transactions: total.len(),
        errors,
        tps: total.len() as f64 / seconds,
        latency_us: Percentiles {
            p50: total.value_at_quantile(0.50),
            p95: total.value_at_quantile(0.95),
            p99: total.value_at_quantile(0.99),
            max: total.max(),
        },
    })
}
