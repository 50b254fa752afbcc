//! The `evshift` command: `serve` runs the proxy, `ctl` talks to a running one, `demo` shows a
//! live migration on throwaway servers.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use evshift_control::{
    ControlStore, Coordinator, CoordinatorConfig, ReconnectingControlStore, RoutingPublisher,
    StoreDirectory,
};
use evshift_proxy::config::{Config, ControlConfig};
use evshift_proxy::control_socket::api::{ControlApi, ControlPlane};
use evshift_proxy::control_socket::ControlSocket;
use evshift_proxy::ctl::{self, CtlArgs};
use evshift_proxy::gate::TenantGate;
use evshift_proxy::server::{self, Shared};

/// evshift: route and live-migrate the tenants of a PostgreSQL event store.
#[derive(Parser)]
#[command(name = "evshift", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Path of the TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration and exit: status 0 if valid, 2 if not.
        #[arg(long)]
        check_config: bool,
    },
    /// Send a command to a running evshift through its control socket.
    Ctl(CtlArgs),
    /// Move the biggest tenant of a seeded event store under load, on throwaway servers.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return demo::cli_error(error),
    };
    match cli.command {
        Command::Serve {
            config,
            check_config,
        } => serve(config, check_config),
        Command::Ctl(args) => ctl::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

fn serve(path: PathBuf, check_only: bool) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("evshift: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("evshift: {} is valid", path.display());
        return ExitCode::SUCCESS;
    }
    // Declared before the runtime, so dropped after it: the last spans are sent outside it.
    let _logging = match evshift_proxy::logging::init(&config) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("evshift: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.limits.worker_threads > 0 {
        builder.worker_threads(config.limits.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("evshift: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evshift: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        evshift_proxy::telemetry::install(addr)?;
    }
    // Without a control store every tenant lives on the default store.
    let routing = evshift_control::routing::handle(Default::default());
    let publisher = RoutingPublisher::new(Arc::clone(&routing));
    let gate = Arc::new(TenantGate::new());
    let control = match &config.control {
        Some(control) => {
            Some(start_control_plane(&config, control, &publisher, Arc::clone(&gate)).await?)
        }
        None => None,
    };
    let coordinator = control.as_ref().map(|c| Arc::clone(&c.coordinator));
    let dual_writer = coordinator.as_ref().map(|c| c.dual_writer());
    // The control socket exists before the listener accepts: whoever sees evshift accept
    // connections can also use `evshift ctl`.
    let control_socket = ControlSocket::bind(&config.control_socket).await?;
    let listener = server::bind(&config).await?;
    tracing::info!(
        listen = %config.listen,
        control_socket = %control_socket.path().display(),
        stores = config.stores.len(),
        "evshift listening"
    );
    let shared = Arc::new(Shared::new(config, routing, gate, dual_writer)?);
    let api = Arc::new(ControlApi::new(Arc::clone(&shared), control));
    if let Some(coordinator) = coordinator {
        // Migrations that were copying when evshift stopped go on from their checkpoints.
        match coordinator.resume_active().await {
            Ok(0) => {}
            Ok(resumed) => tracing::info!(resumed, "active migrations resumed"),
            Err(e) => tracing::error!(error = %e, "cannot resume the active migrations"),
        }
    }
    tokio::select! {
        result = server::serve(listener, shared) => result,
        () = control_socket.serve(api) => Ok(()),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// Connects to the control store, brings its schema up to date, loads the routing table and
/// starts the refresher that keeps it current, and creates the migration coordinator. An
/// unreachable control store fails start-up: routing without the persisted routes would send
/// tenants to the wrong store.
async fn start_control_plane(
    config: &Config,
    control: &ControlConfig,
    publisher: &RoutingPublisher,
    gate: Arc<TenantGate>,
) -> anyhow::Result<ControlPlane> {
    let mut store = ControlStore::connect(&control.url).await?;
    store.apply_schema().await?;
    let routes = publisher
        .reload(&store)
        .await
        .context("cannot load the routing table")?;
    tracing::info!(control_store = %store.target(), routes, "routing table loaded");
    evshift_control::spawn_routing_refresher_with(
        control.url.clone(),
        publisher.clone(),
        control.routing_refresh_interval(),
    );
    let stores = StoreDirectory::new(
        config.stores.iter().map(|s| (s.id.clone(), s.url.clone())),
        &config.default_store().id,
    )?;
    let coordinator = Coordinator::new(CoordinatorConfig {
        control_url: control.url.clone(),
        stores,
        settings: config.migration.settings(),
        publisher: publisher.clone(),
        operator: format!("evshift (pid {})", std::process::id()),
        gate: Some(gate),
    });
    Ok(ControlPlane {
        store: ReconnectingControlStore::with_connection(control.url.clone(), store),
        publisher: publisher.clone(),
        coordinator: Arc::new(coordinator),
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
