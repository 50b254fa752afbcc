//! `evshift-bench load`: seed (optionally), run one load against a URL, print the report, write
//! it as JSON, and check the acknowledged events.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::check::{check_acknowledged, CheckReport, StoreMap};
use crate::ids::tenant_ids;
use crate::load::{self, LoadSpec, Pace};
use crate::mix::{Mix, TenantSkew};
use crate::report::LoadReport;
use crate::seed::{self, SeedSpec};
use crate::workload::Protocol;

/// Options of `evshift-bench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Connection URL: a store directly, PgBouncer, or evshift.
    #[arg(long)]
    pub url: String,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Tenants (0e750000-0000-0000-0000-00000000000N, N = 1..).
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    /// How transactions spread over tenants: uniform, zipf or zipf:EXPONENT.
    #[arg(long, default_value = "uniform")]
    pub skew: TenantSkew,
    /// Transaction mix, e.g. append=70,read_stream=20,read_all=5,snapshot=5, or one kind.
    #[arg(long, visible_alias = "workload", default_value = "append")]
    pub mix: Mix,
    #[arg(long, value_enum, default_value_t = Protocol::Prepared)]
    pub protocol: Protocol,
    /// Open loop: start this many transactions per second over all clients (appends/s with
    /// the default mix). Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seed this many streams per tenant first, through --url (0: no seeding).
    #[arg(long, default_value_t = 0)]
    pub seed_aggregates: usize,
    /// Events per seeded stream.
    #[arg(long, default_value_t = 10)]
    pub seed_events: usize,
    /// Aggregates per client and tenant that appends go to.
    #[arg(long, default_value_t = 100)]
    pub client_aggregates: usize,
    /// Seeded streams per tenant that stream and snapshot reads pick from.
    #[arg(long, default_value_t = 200)]
    pub read_aggregates: usize,
    /// Rows per read_all page.
    #[arg(long, default_value_t = 100)]
    pub page_size: i64,
    /// Keep per-tenant figures in each 100 ms bin of the time series.
    #[arg(long)]
    pub tenant_series: bool,
    /// Write the report (and the check) as JSON to FILE ("-": standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// A label carried into the output.
    #[arg(long, default_value = "")]
    pub label: String,
    /// After the load, check that every acknowledged event is exactly once in its tenant's store.
    #[arg(long)]
    pub check: bool,
    /// For the check: the store holding unrouted tenants (default: --url).
    #[arg(long, value_name = "URL")]
    pub default_store: Option<String>,
    /// For the check: a store's URL by its id, as tenant_routing names it (repeatable).
    #[arg(long = "store", value_name = "ID=URL")]
    pub stores: Vec<String>,
    /// For the check: the control store whose tenant_routing says where tenants live.
    #[arg(long, value_name = "URL")]
    pub control_url: Option<String>,
    /// For the check: the store of one tenant, overriding tenant_routing (repeatable).
    #[arg(long = "check-store", value_name = "TENANT=URL")]
    pub check_stores: Vec<String>,
}

/// What `--json` writes.
#[derive(Serialize)]
struct Output<'a> {
    report: &'a LoadReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<&'a CheckReport>,
}

/// Runs the command; an error is reported as one line by `main`. A failed check is an error.
pub async fn run(args: LoadArgs) -> Result<()> {
    let spec = spec_of(&args)?;
    let stores = store_map(&args)?;
    if args.seed_aggregates > 0 {
        let seed = SeedSpec {
            aggregates: args.seed_aggregates,
            events: args.seed_events,
            snapshots: true,
        };
        seed::seed(&args.url, &spec.tenants, seed).await?;
    }
    let run = load::run(spec).await?;
    eprint!("{}", run.report.to_text());
    let check = match args.check {
        true => Some(check_acknowledged(&run.acknowledged, &stores).await?),
        false => None,
    };
    if let Some(check) = &check {
        eprintln!("{}", check.summary());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&Output {
            report: &run.report,
            check: check.as_ref(),
        })?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    if check.is_some_and(|c| !c.ok) {
        bail!("the check failed: acknowledged events are missing or duplicated");
    }
    Ok(())
}

fn spec_of(args: &LoadArgs) -> Result<LoadSpec> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        bail!("--warmup must be zero or a positive number of seconds");
    }
    let mut spec = LoadSpec::new(&args.url, args.clients, tenant_ids(args.tenants));
    spec.skew = args.skew;
    spec.mix = args.mix.clone();
    spec.protocol = args.protocol;
    spec.pace = args.rate.map_or(Pace::Closed, Pace::Rate);
    spec.duration = Some(Duration::from_secs_f64(args.duration));
    spec.warmup = Duration::from_secs_f64(args.warmup);
    spec.client_aggregates = args.client_aggregates;
    spec.read_aggregates = match args.seed_aggregates {
        0 => args.read_aggregates,
        seeded => args.read_aggregates.min(seeded),
    };
    spec.page_size = args.page_size;
    spec.tenant_series = args.tenant_series;
    spec.label = args.label.clone();
    Ok(spec)
}

fn store_map(args: &LoadArgs) -> Result<StoreMap> {
    let mut map = StoreMap {
        default_url: args
            .default_store
            .clone()
            .unwrap_or_else(|| args.url.clone()),
        control_url: args.control_url.clone(),
        ..StoreMap::default()
    };
    for spec in &args.stores {
        let (id, url) = StoreMap::parse_store(spec).context("--store")?;
        map.stores.insert(id, url);
    }
    for spec in &args.check_stores {
        let (tenant, url) = StoreMap::parse_tenant_store(spec).context("--check-store")?;
        map.tenants.insert(tenant, url);
    }
    Ok(map)
}
