//! The scenario subcommands: their options, mapped onto each scenario's settings, and what is
//! done with the output (printed, written to `--out`, written into the docs with `--docs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::machine::workspace_root;
use crate::mix::{Mix, TxKind};
use crate::scenario::{
    self, all, copy, migrate, passthrough, release_evshift, routed, scale, Environment,
    PgBouncerUse, RunShape, ScenarioOutput,
};
use crate::workload::Protocol;

/// Options every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The evshift binary (default: $EVSHIFT_BIN, else target/release/evshift).
    #[arg(long, value_name = "PATH")]
    pub evshift_bin: Option<PathBuf>,
    /// Also write NAME.json, NAME.md and img/*.svg into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write the section into docs/benchmarks.md and the figures into docs/img/.
    #[arg(long)]
    pub docs: bool,
}

/// Shape of the measured loads.
#[derive(clap::Args, Debug, Clone)]
pub struct Shape {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up per run.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

impl Shape {
    fn to_shape(&self) -> Result<RunShape> {
        run_shape(self.clients, self.duration, self.warmup, self.repeats)
    }
}

fn run_shape(clients: usize, duration: f64, warmup: f64, repeats: usize) -> Result<RunShape> {
    if !(duration.is_finite() && duration > 0.0 && warmup.is_finite() && warmup >= 0.0) {
        bail!("--duration must be positive and --warmup zero or positive (seconds)");
    }
    if clients == 0 || repeats == 0 {
        bail!("--clients and --repeats must be at least 1");
    }
    Ok(RunShape {
        clients,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        repeats,
    })
}

/// `evshift-bench passthrough`.
#[derive(clap::Args, Debug)]
pub struct PassthroughArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub shape: Shape,
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    /// Protocols compared.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "prepared,simple"
    )]
    pub protocols: Vec<Protocol>,
    /// Transactions compared (append, read_stream, read_all, snapshot).
    #[arg(long, value_delimiter = ',', default_value = "append,read_stream")]
    pub workloads: Vec<TxKind>,
    /// Compare with PgBouncer.
    #[arg(long, value_enum, default_value_t = PgBouncerUse::Required)]
    pub pgbouncer: PgBouncerUse,
    /// Streams seeded per tenant for the reads.
    #[arg(long, default_value_t = 200)]
    pub seed_aggregates: usize,
}

impl PassthroughArgs {
    fn settings(&self) -> Result<passthrough::Settings> {
        Ok(passthrough::Settings {
            shape: self.shape.to_shape()?,
            tenants: self.tenants.max(1),
            protocols: self.protocols.clone(),
            kinds: self.workloads.clone(),
            pgbouncer: self.pgbouncer,
            seed_aggregates: self.seed_aggregates.max(1),
        })
    }
}

/// `evshift-bench routed`.
#[derive(clap::Args, Debug)]
pub struct RoutedArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub shape: Shape,
    /// Tenants; every second one is placed on the dedicated store.
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    #[arg(long, value_delimiter = ',', default_value = "append,read_stream")]
    pub workloads: Vec<TxKind>,
    #[arg(long, value_enum, default_value_t = Protocol::Prepared)]
    pub protocol: Protocol,
    #[arg(long, default_value_t = 200)]
    pub seed_aggregates: usize,
}

impl RoutedArgs {
    fn settings(&self) -> Result<routed::Settings> {
        Ok(routed::Settings {
            shape: self.shape.to_shape()?,
            tenants: self.tenants.max(2),
            kinds: self.workloads.clone(),
            protocol: self.protocol,
            seed_aggregates: self.seed_aggregates.max(1),
        })
    }
}

/// `evshift-bench copy`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Events of the timed tenant.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events of the tenant copied once for its peak RSS.
    #[arg(long, default_value_t = 100_000)]
    pub small_events: u64,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// evshift's [migration] batch_size.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

impl CopyArgs {
    fn settings(&self) -> copy::Settings {
        copy::Settings {
            events: self.events.max(1),
            small_events: self.small_events.max(1),
            repeats: self.repeats.max(1),
            batch_size: self.batch_size.max(1),
        }
    }
}

/// `evshift-bench scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Client connection counts.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub clients: Vec<usize>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Rounds per connection count.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    #[arg(long, default_value = "append=1,read_stream=1")]
    pub mix: Mix,
    #[arg(long, value_enum, default_value_t = Protocol::Prepared)]
    pub protocol: Protocol,
    #[arg(long, default_value_t = 200)]
    pub seed_aggregates: usize,
    /// Tenant sizes copied (events).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    pub copy_sizes: Vec<u64>,
    /// Copies per size.
    #[arg(long, default_value_t = 1)]
    pub copy_repeats: usize,
    /// Do not time the raw COPY pipe at each size.
    #[arg(long)]
    pub no_copy_pipe: bool,
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

impl ScaleArgs {
    fn settings(&self) -> Result<scale::Settings> {
        if self.clients.contains(&0) || self.copy_sizes.contains(&0) {
            bail!("--clients and --copy-sizes must be positive");
        }
        Ok(scale::Settings {
            shape: run_shape(1, self.duration, self.warmup, self.repeats)?,
            client_counts: self.clients.clone(),
            tenants: self.tenants.max(1),
            mix: self.mix.clone(),
            protocol: self.protocol,
            seed_aggregates: self.seed_aggregates.max(1),
            copy_sizes: self.copy_sizes.clone(),
            copy_repeats: self.copy_repeats.max(1),
            copy_pipe: !self.no_copy_pipe,
            batch_size: self.batch_size.max(1),
        })
    }
}

/// `evshift-bench migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Appends per second of the migrating tenant (fixed rate).
    #[arg(long, default_value_t = 1200.0)]
    pub rate: f64,
    /// Clients of the migrating tenant.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Tenants that stay where they are.
    #[arg(long, default_value_t = 3)]
    pub other_tenants: usize,
    /// Transactions per second of the other tenants together (half appends, half stream reads).
    #[arg(long, default_value_t = 900.0)]
    pub other_rate: f64,
    #[arg(long, default_value_t = 8)]
    pub other_clients: usize,
    /// Migrations, each with one cutover, back and forth between the two stores.
    #[arg(long, default_value_t = 20)]
    pub cutovers: usize,
    /// Seconds measured before each migration and in DUAL_WRITE before each cutover.
    #[arg(long, default_value_t = 4.0)]
    pub window: f64,
    /// Seconds measured before `evshift ctl cutover` and after it returned.
    #[arg(long, default_value_t = 0.5)]
    pub cutover_margin: f64,
    /// Request the cutover once the lag is at most this many events.
    #[arg(long, default_value_t = 200)]
    pub max_lag: i64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Events seeded for the migrating tenant.
    #[arg(long, default_value_t = 50_000)]
    pub seed_events: usize,
    /// Streams seeded per other tenant for the reads.
    #[arg(long, default_value_t = 200)]
    pub seed_aggregates: usize,
    /// evshift's [migration] batch_size.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = Protocol::Prepared)]
    pub protocol: Protocol,
}

impl MigrateArgs {
    fn settings(&self) -> Result<migrate::Settings> {
        let seconds = |value: f64, name: &str, positive: bool| {
            if value.is_finite() && (value > 0.0 || (!positive && value == 0.0)) {
                Ok(Duration::from_secs_f64(value))
            } else {
                bail!(
                    "--{name} must be a {} number of seconds",
                    if positive { "positive" } else { "non-negative" }
                )
            }
        };
        if !(self.rate.is_finite()
            && self.rate > 0.0
            && self.other_rate.is_finite()
            && self.other_rate > 0.0)
        {
            bail!("--rate and --other-rate must be positive transactions per second");
        }
        if self.clients == 0
            || self.other_clients == 0
            || self.other_tenants == 0
            || self.cutovers == 0
        {
            bail!("--clients, --other-clients, --other-tenants and --cutovers must be at least 1");
        }
        if self.max_lag < 0 {
            bail!("--max-lag must be zero or positive");
        }
        Ok(migrate::Settings {
            rate: self.rate,
            clients: self.clients,
            other_tenants: self.other_tenants,
            other_rate: self.other_rate,
            other_clients: self.other_clients,
            cutovers: self.cutovers,
            window: seconds(self.window, "window", true)?,
            cutover_margin: seconds(self.cutover_margin, "cutover-margin", false)?,
            max_lag: self.max_lag,
            warmup: seconds(self.warmup, "warmup", false)?,
            seed_events: self.seed_events.max(1),
            seed_aggregates: self.seed_aggregates.max(1),
            batch_size: self.batch_size.max(1),
            protocol: self.protocol,
        })
    }
}

/// `evshift-bench all`: every scenario with the defaults of its own subcommand except what is
/// given here.
#[derive(clap::Args, Debug)]
pub struct AllArgs {
    /// The evshift binary (default: $EVSHIFT_BIN, else target/release/evshift).
    #[arg(long, value_name = "PATH")]
    pub evshift_bin: Option<PathBuf>,
    /// Results folder: NAME.json, NAME.md, img/*.svg, README.md.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write every section into docs/benchmarks.md and the figures into docs/img/.
    #[arg(long)]
    pub docs: bool,
    #[command(flatten)]
    pub shape: Shape,
    #[arg(long, value_enum, default_value_t = PgBouncerUse::Required)]
    pub pgbouncer: PgBouncerUse,
    /// Streams seeded per tenant for the reads.
    #[arg(long, default_value_t = 200)]
    pub seed_aggregates: usize,
    /// copy: events of the timed tenant.
    #[arg(long, default_value_t = 1_000_000)]
    pub copy_events: u64,
    /// copy: events of the small tenant.
    #[arg(long, default_value_t = 100_000)]
    pub copy_small_events: u64,
    /// copy and scale: copies per size.
    #[arg(long, default_value_t = 3)]
    pub copy_repeats: usize,
    /// scale: client connection counts.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub scale_clients: Vec<usize>,
    /// scale: tenant sizes copied.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    pub scale_copy_sizes: Vec<u64>,
    /// migrate: migrations, each with one cutover.
    #[arg(long, default_value_t = 20)]
    pub migrate_cutovers: usize,
}

impl AllArgs {
    /// The settings of every scenario.
    pub fn settings(&self) -> Result<all::Settings> {
        let shape = self.shape.to_shape()?;
        let kinds = vec![TxKind::Append, TxKind::ReadStream];
        let seed_aggregates = self.seed_aggregates.max(1);
        let scale_args = ScaleArgs {
            common: self.common(),
            clients: self.scale_clients.clone(),
            duration: self.shape.duration,
            warmup: self.shape.warmup,
            repeats: 1,
            tenants: 8,
            mix: "append=1,read_stream=1"
                .parse()
                .map_err(anyhow::Error::msg)?,
            protocol: Protocol::Prepared,
            seed_aggregates,
            copy_sizes: self.scale_copy_sizes.clone(),
            copy_repeats: 1,
            no_copy_pipe: false,
            batch_size: 1000,
        };
        Ok(all::Settings {
            passthrough: passthrough::Settings {
                shape,
                tenants: 8,
                protocols: vec![Protocol::Prepared, Protocol::Simple],
                kinds: kinds.clone(),
                pgbouncer: self.pgbouncer,
                seed_aggregates,
            },
            routed: routed::Settings {
                shape,
                tenants: 8,
                kinds,
                protocol: Protocol::Prepared,
                seed_aggregates,
            },
            copy: copy::Settings {
                events: self.copy_events.max(1),
                small_events: self.copy_small_events.max(1),
                repeats: self.copy_repeats.max(1),
                batch_size: 1000,
            },
            scale: scale_args.settings()?,
            migrate: self.migrate_args().settings()?,
        })
    }

    /// `migrate` with its own defaults but the number of cutovers.
    fn migrate_args(&self) -> MigrateArgs {
        /// The subcommand's options alone, to read their defaults.
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: MigrateArgs,
        }
        let mut args = <Defaults as clap::Parser>::parse_from(["migrate"]).args;
        args.common = self.common();
        args.cutovers = self.migrate_cutovers;
        args
    }

    fn common(&self) -> Common {
        Common {
            evshift_bin: self.evshift_bin.clone(),
            out: Some(self.out.clone()),
            docs: self.docs,
        }
    }
}

/// The environment of a scenario run from the command line.
fn environment(common: &Common) -> Result<Environment> {
    let evshift_bin = match &common.evshift_bin {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--evshift-bin {}: not a file", path.display()),
        None => release_evshift()?,
    };
    Ok(Environment {
        evshift_bin,
        command: command_line(),
    })
}

/// The command as the docs show it: `$EVSHIFT_BENCH_COMMAND` (set by the wrapper scripts), else
/// `evshift-bench ARGS`.
fn command_line() -> String {
    if let Ok(command) = std::env::var("EVSHIFT_BENCH_COMMAND") {
        return command;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("evshift-bench {}", args.join(" "))
}

/// Prints the section, writes `--out` and `--docs`.
fn publish(common: &Common, output: ScenarioOutput) -> Result<()> {
    println!("{}", output.markdown);
    if let Some(dir) = &common.out {
        output.write_to(dir)?;
    }
    if common.docs {
        scenario::update_docs(
            &workspace_root().join("docs"),
            std::slice::from_ref(&output),
        )?;
        eprintln!("wrote the {} section of docs/benchmarks.md", output.name);
    }
    Ok(())
}

/// `evshift-bench passthrough`.
pub async fn passthrough(args: PassthroughArgs) -> Result<()> {
    let env = environment(&args.common)?;
    let output = passthrough::run(&env, &args.settings()?).await?;
    publish(&args.common, output)
}

/// `evshift-bench routed`.
pub async fn routed(args: RoutedArgs) -> Result<()> {
    let env = environment(&args.common)?;
    let output = routed::run(&env, &args.settings()?).await?;
    publish(&args.common, output)
}

/// `evshift-bench copy`.
pub async fn copy(args: CopyArgs) -> Result<()> {
    let env = environment(&args.common)?;
    let output = copy::run(&env, &args.settings()).await?;
    publish(&args.common, output)
}

/// `evshift-bench scale`.
pub async fn scale(args: ScaleArgs) -> Result<()> {
    let env = environment(&args.common)?;
    let output = scale::run(&env, &args.settings()?).await?;
    publish(&args.common, output)
}

/// `evshift-bench migrate`.
pub async fn migrate(args: MigrateArgs) -> Result<()> {
    let env = environment(&args.common)?;
    let output = migrate::run(&env, &args.settings()?).await?;
    publish(&args.common, output)
}

/// `evshift-bench all`.
pub async fn all(args: AllArgs) -> Result<()> {
    let common = args.common();
    let env = environment(&common)?;
    let outputs = all::run(&env, &args.settings()?, &args.out).await?;
    if args.docs {
        scenario::update_docs(&workspace_root().join("docs"), &outputs)?;
        eprintln!("wrote every section of docs/benchmarks.md");
    }
    eprintln!("results in {}", args.out.display());
    Ok(())
}
