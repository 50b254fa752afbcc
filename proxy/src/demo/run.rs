//! The demo's steps, in order: servers, seed, evshift, load, migration, verification and
//! checks, summary; then everything is stopped and removed, or left running with `--keep`.
//!
//! Everything the demo starts belongs to an `Environment`, which stops it when dropped: at the
//! end, on a failed step, and on Ctrl-C (the future is dropped).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use indicatif::ProgressBar;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use evshift_control::{AuditEntry, MigrationState, MigrationStatus, VerifyMode};

use super::check::check;
use super::clock::parse_utc;
use super::clusters::{free_port, Cluster, PgBinaries};
use super::control::ControlClient;
use super::load::{Load, LoadRecord, LoadSpec};
use super::progress::{Progress, RateMeter};
use super::proxy::{Evshift, ProxySettings, MAX_LAG_EVENTS, SOURCE_STORE, TARGET_STORE};
use super::seed::{self, TenantSeed};
use super::summary::{thousands, Figures, Latencies, TargetCheck};
use super::{DemoError, Plan, Servers};

/// Steps announced on screen.
const STEPS: usize = 7;

/// Load before the migration starts: the baseline latencies.
const BASELINE: Duration = Duration::from_secs(8);

/// The first part of the baseline, left out of it (connections and caches warming up).
const WARMUP: Duration = Duration::from_secs(1);

/// Load after the cutover: the moving tenant now writes to its new store.
const AFTER_CUTOVER: Duration = Duration::from_secs(4);

/// How long the migration may take to end.
const MIGRATION_DEADLINE: Duration = Duration::from_secs(150);

/// Between two status polls (and display refreshes).
const POLL: Duration = Duration::from_millis(200);

/// Clients appending to the moving tenant.
const MOVING_CLIENTS: usize = 2;

/// Clients taking turns over the other tenants.
const OTHER_CLIENTS: usize = 6;

/// Transactions per second of each client: a steady load that leaves CPU to the copy on a
/// small machine, so that latencies show what the migration does, not a saturated CPU.
const RATE_PER_CLIENT: f64 = 50.0;

/// The database of the event stores and of the control store on throwaway servers.
const STORE_DB: &str = "app";
const CONTROL_DB: &str = "evshift";

/// Runs the demo; `Ok` when every check held.
pub async fn run(plan: Plan) -> Result<(), DemoError> {
    let started = Instant::now();
    let progress = Progress::new();
    progress.line(header(&plan));
    let mut env = Environment::create()?;
    let servers = start_servers(&plan, &mut env, &progress).await?;
    let tenants = seed_store(&plan, &servers, &progress).await?;
    let evshift = start_evshift(&servers, &env, &progress).await?;
    let control = ControlClient::new(&evshift.settings().control_socket);
    let url = evshift.url(STORE_DB);
    env.evshift = Some(evshift);

    let moving = tenants[0];
    let others: Vec<Uuid> = tenants[1..].iter().map(|t| t.id).collect();
    progress.step(
        4,
        STEPS,
        "load",
        format!(
            "{} clients through evshift, {RATE_PER_CLIENT:.0} transactions/s each; {} s before \
             the migration",
            MOVING_CLIENTS + OTHER_CLIENTS,
            BASELINE.as_secs()
        ),
    );
    progress.detail(format!(
        "{MOVING_CLIENTS} on the biggest tenant, {OTHER_CLIENTS} taking turns over the other {}; \
         appends and reads as eventsource-py sends them",
        others.len()
    ));
    let load = Load::start(&LoadSpec {
        url,
        moving: moving.id,
        others,
        moving_clients: MOVING_CLIENTS,
        other_clients: OTHER_CLIENTS,
        rate_per_client: RATE_PER_CLIENT,
    })
    .await?;
    let mut view = LoadView::new(&progress, &load);
    view.run_for(&load, BASELINE).await;

    let migration = migrate(&control, &load, &mut view, &progress, moving).await?;
    let source = connect(&servers.source, "the source store").await?;
    let source_at_cutover = count_tenant(&source, moving.id).await?;
    if migration.status.state == MigrationState::Migrated {
        view.run_for(&load, AFTER_CUTOVER).await;
    }
    let load_end = load.elapsed();
    let windows = Windows::new(&load, &migration, load_end);
    view.finish();
    let record = load.stop().await?;

    progress.step(
        6,
        STEPS,
        "verify",
        "the target against the source (verify full, control socket)",
    );
    progress.detail("and every acknowledged event in the store that holds its tenant now");
    let target = connect(&servers.target, "the target store").await?;
    let figures = gather(Gather {
        control: &control,
        evshift: env.evshift.as_ref(),
        migration: &migration,
        moving: moving.id,
        record: &record,
        windows: &windows,
        source,
        target,
        source_at_cutover,
    })
    .await?;

    progress.step(7, STEPS, "summary", "");
    progress.line(figures.render());
    let problems = figures.problems();
    if plan.keep {
        env.keep();
        progress.line(env.instructions(&servers, migration.status.id)?);
    } else {
        drop(env);
    }
    progress.line(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DemoError::Verdict(problems.join("; ")))
    }
}

fn header(plan: &Plan) -> String {
    let servers = match &plan.servers {
        Servers::Throwaway { bin, .. } => match server_version(&bin.version()) {
            Some(version) => format!("three throwaway PostgreSQL {version} servers"),
            None => "three throwaway PostgreSQL servers".into(),
        },
        Servers::Existing { .. } => "the servers given".into(),
    };
    format!(
        "evshift demo: {} tenants and {} events on {servers}; the biggest tenant moves to a \
         store of its own\nwhile clients keep writing through evshift.\n",
        plan.tenants,
        thousands(plan.events)
    )
}

/// `15.8` from `postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)`.
fn server_version(text: &str) -> Option<&str> {
    text.split_whitespace().nth(2)
}

/// Everything the demo started; stopped and removed on drop unless kept.
struct Environment {
    dir: PathBuf,
    clusters: Vec<Cluster>,
    evshift: Option<Evshift>,
    bin: Option<PgBinaries>,
    kept: bool,
}

impl Environment {
    /// A fresh working directory for configuration, logs, sockets and clusters.
    fn create() -> Result<Environment> {
        let dir = std::env::temp_dir().join(format!(
            "evshift-demo-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        // The server user must reach the cluster directories inside it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("open up {}", dir.display()))?;
        Ok(Environment {
            dir,
            clusters: Vec::new(),
            evshift: None,
            bin: None,
            kept: false,
        })
    }

    fn keep(&mut self) {
        self.kept = true;
        self.clusters.iter_mut().for_each(Cluster::keep);
        if let Some(evshift) = self.evshift.as_mut() {
            evshift.keep();
        }
    }

    /// How to explore what was kept, and a script that stops it all.
    fn instructions(&self, servers: &ServerUrls, migration_id: i64) -> Result<String> {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "evshift".into());
        let psql = self
            .bin
            .as_ref()
            .map(|b| b.dir().join("psql"))
            .filter(|p| p.is_file())
            .map_or_else(|| "psql".to_string(), |p| p.display().to_string());
        let stop_script = self.write_stop_script()?;
        let mut text = String::from("Everything is still running (--keep). To explore it:\n");
        if let Some(evshift) = &self.evshift {
            let socket = evshift.settings().control_socket.display().to_string();
            let ctl = format!("{exe} ctl --socket {socket}");
            let lines = [
                format!("{psql} {}    # through evshift", evshift.url(STORE_DB)),
                format!("{psql} {}    # the shared store", servers.source),
                format!("{psql} {}    # the dedicated store", servers.target),
                format!("{ctl} stores"),
                format!("{ctl} routes"),
                format!("{ctl} status {migration_id}"),
                // --json: the table form of `ctl audit` cannot draw a cell wider than 65,535
                // characters, and the row of the full verification is one.
                format!("{ctl} --json audit {migration_id}"),
                format!("{ctl} verify {migration_id} full"),
                format!(
                    "curl -s http://{}/metrics | grep ^migration_",
                    evshift.settings().metrics
                ),
            ];
            for line in lines {
                writeln!(text, "  {line}").expect("writing to a String cannot fail");
            }
            writeln!(
                text,
                "  evshift (pid {}) logs to {}; its configuration is {}",
                evshift.pid(),
                evshift.log_path().display(),
                evshift.config_path().display()
            )
            .expect("writing to a String cannot fail");
        }
        write!(
            text,
            "To stop evshift and the servers and remove {}:\n  sh {}\n",
            self.dir.display(),
            stop_script.display()
        )
        .expect("writing to a String cannot fail");
        Ok(text)
    }

    fn write_stop_script(&self) -> Result<PathBuf> {
        let mut script =
            String::from("#!/bin/sh\n# Stops what `evshift demo --keep` left running.\n");
        if let Some(evshift) = &self.evshift {
            writeln!(script, "kill {} 2>/dev/null", evshift.pid())
                .expect("writing to a String cannot fail");
        }
        for cluster in &self.clusters {
            writeln!(script, "{}", cluster.stop_command())
                .expect("writing to a String cannot fail");
        }
        writeln!(script, "rm -rf '{}'", self.dir.display())
            .expect("writing to a String cannot fail");
        let path = self.dir.join("stop.sh");
        std::fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // evshift first (its sessions end), then the servers, then their directory.
        self.evshift.take();
        self.clusters.clear();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("evshift demo: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The three servers' URLs.
struct ServerUrls {
    source: String,
    target: String,
    control: String,
}

/// Step 1: three throwaway clusters (in parallel), or the servers given.
async fn start_servers(
    plan: &Plan,
    env: &mut Environment,
    progress: &Progress,
) -> Result<ServerUrls> {
    let started = Instant::now();
    let (bin, run_as) = match &plan.servers {
        Servers::Existing {
            source,
            target,
            control,
        } => {
            for (url, what) in [
                (source, "the source store"),
                (target, "the target store"),
                (control, "the control store"),
            ] {
                connect(url, what).await?;
            }
            progress.step(
                1,
                STEPS,
                "servers",
                "the given source, target and control servers answer",
            );
            progress.detail(format!("evshift's files are in {}", env.dir.display()));
            return Ok(ServerUrls {
                source: source.clone(),
                target: target.clone(),
                control: control.clone(),
            });
        }
        Servers::Throwaway { bin, run_as } => (bin.clone(), *run_as),
    };
    env.bin = Some(bin.clone());
    let line = progress.status_line();
    line.set_message("initdb and pg_ctl start for shared, dedicated-1 and control");
    let start = |name: &'static str| {
        let (bin, dir) = (bin.clone(), env.dir.clone());
        tokio::task::spawn_blocking(move || Cluster::start(&bin, run_as, &dir, name))
    };
    let handles = [start(SOURCE_STORE), start(TARGET_STORE), start("control")];
    let mut failure = None;
    for handle in handles {
        // Keep every cluster that started, so that a failure of another still stops it.
        match handle
            .await
            .map_err(|e| anyhow!("a cluster start failed: {e}"))
        {
            Ok(Ok(cluster)) => env.clusters.push(cluster),
            Ok(Err(e)) | Err(e) => failure = failure.or(Some(e)),
        }
    }
    line.finish_and_clear();
    if let Some(error) = failure {
        return Err(error);
    }
    let [shared, dedicated, control] = [0, 1, 2].map(|i| &env.clusters[i]);
    create_database(shared, STORE_DB).await?;
    create_database(dedicated, STORE_DB).await?;
    create_database(control, CONTROL_DB).await?;
    progress.step(
        1,
        STEPS,
        "servers",
        format!(
            "{} on 127.0.0.1:{}, {} on 127.0.0.1:{}, control store on 127.0.0.1:{} ({:.1} s)",
            shared.name(),
            shared.port(),
            dedicated.name(),
            dedicated.port(),
            control.port(),
            started.elapsed().as_secs_f64(),
        ),
    );
    progress.detail(format!("their files are in {}", env.dir.display()));
    Ok(ServerUrls {
        source: shared.url(STORE_DB),
        target: dedicated.url(STORE_DB),
        control: control.url(CONTROL_DB),
    })
}

async fn create_database(cluster: &Cluster, name: &str) -> Result<()> {
    let client = connect(&cluster.url("postgres"), cluster.name()).await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("create database {name} on {}", cluster.name()))
}

/// Step 2: the schema in both stores, the tenants' history in the source.
async fn seed_store(
    plan: &Plan,
    servers: &ServerUrls,
    progress: &Progress,
) -> Result<Vec<TenantSeed>> {
    let started = Instant::now();
    let source = connect(&servers.source, "the source store").await?;
    let second = connect(&servers.source, "the source store").await?;
    let target = connect(&servers.target, "the target store").await?;
    seed::apply_schema(&source).await?;
    seed::apply_schema(&target).await?;
    let tenants = seed::plan(plan.tenants, plan.events);
    let bar = progress.counter(plan.events, "events");
    let count = |rows: u64| bar.inc(rows);
    tokio::try_join!(
        seed::seed_slices(&source, &tenants, 0, 2, count),
        seed::seed_slices(&second, &tenants, 1, 2, count),
    )?;
    let snapshots = seed::seed_snapshots(&source, &tenants).await?;
    seed::analyze(&source).await?;
    bar.finish_and_clear();
    let biggest = tenants[0];
    progress.step(
        2,
        STEPS,
        "seed",
        format!(
            "{} events and {} snapshots of {} tenants into {SOURCE_STORE} ({:.1} s)",
            thousands(plan.events),
            thousands(snapshots),
            tenants.len(),
            started.elapsed().as_secs_f64(),
        ),
    );
    progress.detail(format!(
        "the biggest tenant, {}, holds {} of them ({:.0}%)",
        biggest.id,
        thousands(biggest.events as u64),
        biggest.events as f64 * 100.0 / plan.events as f64
    ));
    Ok(tenants)
}

/// Step 3: evshift in front of both stores.
async fn start_evshift(
    servers: &ServerUrls,
    env: &Environment,
    progress: &Progress,
) -> Result<Evshift> {
    let settings = ProxySettings {
        listen: format!("127.0.0.1:{}", free_port()?).parse()?,
        metrics: format!("127.0.0.1:{}", free_port()?).parse()?,
        control_socket: env.dir.join("evshift.sock"),
        control_url: servers.control.clone(),
        source_url: servers.source.clone(),
        target_url: servers.target.clone(),
    };
    let evshift = Evshift::start(settings, &env.dir).await?;
    progress.step(
        3,
        STEPS,
        "evshift",
        format!(
            "pid {} listening on {}, metrics on http://{}/metrics",
            evshift.pid(),
            evshift.settings().listen,
            evshift.settings().metrics
        ),
    );
    progress.detail(format!(
        "control socket {}",
        evshift.settings().control_socket.display()
    ));
    Ok(evshift)
}

/// The migration as it ended, and when (since the load started) it was requested.
struct Migration {
    status: MigrationStatus,
    requested_at: Duration,
}

/// Step 5: `migrate` through the control socket, then the status polled until it ends.
async fn migrate(
    control: &ControlClient,
    load: &Load,
    view: &mut LoadView,
    progress: &Progress,
    moving: TenantSeed,
) -> Result<Migration> {
    let requested_at = load.elapsed();
    let started = control
        .migrate(moving.id, TARGET_STORE, VerifyMode::Hash)
        .await
        .context("migrate")?;
    let id = started.id;
    progress.step(
        5,
        STEPS,
        "migrate",
        format!(
            "tenant {}: {SOURCE_STORE} -> {TARGET_STORE}, migration {id}",
            moving.id,
        ),
    );
    progress.detail(format!(
        "automatic cutover once the lag is at most {MAX_LAG_EVENTS} events; hash verification \
         under the hold"
    ));
    let mut bar = progress.migration();
    let deadline = Instant::now() + MIGRATION_DEADLINE;
    let status = loop {
        let status = control.status(id).await.context("status")?;
        bar.update(&status, progress);
        view.refresh(load);
        if matches!(
            status.state,
            MigrationState::Migrated | MigrationState::Failed | MigrationState::RolledBack
        ) {
            break status;
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "migration {id} did not end within {} s (state {})",
                MIGRATION_DEADLINE.as_secs(),
                status.state
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish();
    Ok(Migration {
        status,
        requested_at,
    })
}

/// The time windows of the summary, as offsets since the load started.
struct Windows {
    before: std::ops::Range<Duration>,
    dual_write: Option<std::ops::Range<Duration>>,
    during: std::ops::Range<Duration>,
    after: std::ops::Range<Duration>,
}

impl Windows {
    fn new(load: &Load, migration: &Migration, load_end: Duration) -> Windows {
        let status = &migration.status;
        let at = |stamp: &Option<String>| {
            stamp
                .as_deref()
                .and_then(parse_utc)
                .map(|t| load.offset_of(t))
        };
        let completed = at(&status.completed_at).unwrap_or(load_end);
        let dual_write = at(&status.dual_write_started_at)
            .map(|from| from..at(&status.cutover_started_at).unwrap_or(completed));
        let after_start = if status.state == MigrationState::Migrated {
            completed
        } else {
            load_end
        };
        Windows {
            before: WARMUP..migration.requested_at,
            dual_write,
            during: migration.requested_at..completed,
            after: after_start..load_end,
        }
    }
}

/// What `gather` needs.
struct Gather<'a> {
    control: &'a ControlClient,
    evshift: Option<&'a Evshift>,
    migration: &'a Migration,
    moving: Uuid,
    record: &'a LoadRecord,
    windows: &'a Windows,
    source: Client,
    target: Client,
    source_at_cutover: i64,
}

/// Step 6: the verification, the audit log, the metrics and the acknowledged-event check,
/// gathered into the summary's figures.
async fn gather(input: Gather<'_>) -> Result<Figures> {
    let status = &input.migration.status;
    let migrated = status.state == MigrationState::Migrated;
    let audit = input.control.audit(status.id).await.context("audit")?;
    let completed = last_details(&audit, "cutover_completed");
    let bulk = last_details(&audit, "bulk_copy_completed").and_then(|d| {
        let events = d["events_copied_in_pass"].as_u64()?;
        let seconds = d["seconds"].as_f64()?;
        Some((events, Duration::from_secs_f64(seconds.max(0.0))))
    });
    let cutover_pause = match input.evshift {
        Some(evshift) => evshift
            .metrics()
            .await
            .ok()
            .and_then(|text| single_pause(&text, status.id)),
        None => None,
    };
    let target_check = if migrated {
        Some(compare_target(&input).await?)
    } else {
        None
    };
    let routes = input.control.routes().await.context("routes")?;
    // A MIGRATED route still names its source; the tenant is served by the target.
    let holders: HashMap<Uuid, String> = routes
        .into_iter()
        .map(|r| match (r.migration_state, r.target_store) {
            (Some(MigrationState::Migrated), Some(target)) => (r.tenant_id, target),
            _ => (r.tenant_id, r.store),
        })
        .collect();
    let source_now = count_tenant(&input.source, input.moving).await?;
    let stores = HashMap::from([
        (SOURCE_STORE.to_string(), input.source),
        (TARGET_STORE.to_string(), input.target),
    ]);
    let outcome = check(
        input.record,
        |tenant| {
            holders
                .get(&tenant)
                .cloned()
                .unwrap_or_else(|| SOURCE_STORE.to_string())
        },
        &stores,
    )
    .await?;
    let samples = &input.record.samples;
    let windows = input.windows;
    let moving = |window: &std::ops::Range<Duration>| Latencies::of(samples, window, |s| s.moving);
    let others = |window: &std::ops::Range<Duration>| Latencies::of(samples, window, |s| !s.moving);
    Ok(Figures {
        migration_id: status.id,
        tenant: status.tenant_id,
        source: status.source_store.clone(),
        target: status.target_store.clone(),
        state: status.state,
        error: status.error_message.clone(),
        events_copied: status.events_copied,
        bulk_copy: bulk,
        cutover_pause,
        pause_before_commit: completed
            .and_then(|d| d["pause_ms_before_commit"].as_f64())
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
        cutover_verification: completed.map(|d| describe_verification(&d["verification"])),
        moving_before: moving(&windows.before),
        moving_dual_write: windows.dual_write.as_ref().map(&moving).unwrap_or_default(),
        dual_write_window: windows
            .dual_write
            .as_ref()
            .map(|w| w.end.saturating_sub(w.start)),
        moving_after: moving(&windows.after),
        others_before: others(&windows.before),
        others_during: others(&windows.during),
        target_check,
        source_writes_after_cutover: if migrated {
            source_now - input.source_at_cutover
        } else {
            0
        },
        acknowledged: input.record.acknowledged_total(),
        client_errors: input.record.errors.clone(),
        lost: outcome.lost,
        duplicated: outcome.duplicated,
    })
}

/// `verify full` through the control socket, set against the events appended after the
/// cutover (acknowledged, and not on the source).
async fn compare_target(input: &Gather<'_>) -> Result<TargetCheck> {
    let report = input
        .control
        .verify(input.migration.status.id, VerifyMode::Full)
        .await
        .context("verify")?;
    let acknowledged = input
        .record
        .acknowledged
        .get(&input.moving)
        .cloned()
        .unwrap_or_default();
    let on_source: i64 = input
        .source
        .query_one(
            "SELECT count(*) FROM events WHERE event_id = ANY($1)",
            &[&acknowledged],
        )
        .await
        .context("count the acknowledged events on the source")?
        .get(0);
    Ok(TargetCheck {
        level: "full".into(),
        missing: report.totals.events_missing,
        differing: report.totals.events_differing,
        extra: report.totals.events_extra,
        appended_after_cutover: (acknowledged.len() as i64 - on_source).max(0) as u64,
    })
}

/// The details of the last audit row of `event_type`.
fn last_details<'a>(audit: &'a [AuditEntry], event_type: &str) -> Option<&'a Value> {
    audit
        .iter()
        .rev()
        .find(|e| e.event_type == event_type)
        .map(|e| &e.details)
}

/// `hash passed (139,881 events)` from a cutover's verification details: the counts, and the
/// report of the migration's level when it is more than `count`.
fn describe_verification(verification: &Value) -> String {
    let counts = verification.get("counts").unwrap_or(verification);
    let report = verification.get("report");
    let level = report
        .and_then(|r| r["level"].as_str())
        .or_else(|| counts["level"].as_str())
        .unwrap_or("count");
    let passed = report.map_or(Some(true), |r| r["passed"].as_bool());
    let events = counts["source_events"].as_i64();
    format!(
        "{level} {}{}",
        match passed {
            Some(true) => "passed",
            Some(false) => "FAILED",
            None => "unknown",
        },
        events
            .map(|n| format!(" ({} events)", thousands(n.max(0) as u64)))
            .unwrap_or_default()
    )
}

/// The cutover pause of migration `id` from the Prometheus text, when it cut over once.
fn single_pause(metrics: &str, id: i64) -> Option<Duration> {
    let label = format!("migration_id=\"{id}\"");
    let value = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name) && line.contains(&label))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let count = value("migration_cutover_pause_duration_ms_count{")?;
    let sum = value("migration_cutover_pause_duration_ms_sum{")?;
    (count == 1.0).then(|| Duration::from_secs_f64(sum.max(0.0) / 1000.0))
}

/// The load's live line: appends/s, reads/s, errors.
struct LoadView {
    line: ProgressBar,
    appends: RateMeter,
    reads: RateMeter,
}

impl LoadView {
    fn new(progress: &Progress, load: &Load) -> LoadView {
        let counters = load.counters();
        LoadView {
            line: progress.status_line(),
            appends: RateMeter::new(counters.appends.load(std::sync::atomic::Ordering::Relaxed)),
            reads: RateMeter::new(counters.reads.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    fn refresh(&mut self, load: &Load) {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = load.counters();
        let appends = counters.appends.load(Relaxed);
        self.line.set_message(format!(
            "load: {:.0} appends/s, {:.0} reads/s, {} acknowledged, {} errors",
            self.appends.rate(appends),
            self.reads.rate(counters.reads.load(Relaxed)),
            thousands(appends),
            counters.errors.load(Relaxed)
        ));
    }

    /// Lets the load run for `duration`, refreshing the line.
    async fn run_for(&mut self, load: &Load, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            self.refresh(load);
            tokio::time::sleep(POLL.min(until.saturating_duration_since(Instant::now()))).await;
        }
    }

    fn finish(&self) {
        self.line.finish_and_clear();
    }
}

async fn connect(url: &str, what: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {what}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn count_tenant(client: &Client, tenant: Uuid) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .context("count the tenant's events")?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_read_from_the_histogram_of_one_cutover() {
        let text = "\
migration_cutover_pause_duration_ms_bucket{migration_id=\"3\",tenant_id=\"t\",le=\"50\"} 1
migration_cutover_pause_duration_ms_sum{migration_id=\"3\",tenant_id=\"t\"} 42.5
migration_cutover_pause_duration_ms_count{migration_id=\"3\",tenant_id=\"t\"} 1
migration_cutover_pause_duration_ms_sum{migration_id=\"4\",tenant_id=\"u\"} 90
migration_cutover_pause_duration_ms_count{migration_id=\"4\",tenant_id=\"u\"} 2
";
        assert_eq!(single_pause(text, 3), Some(Duration::from_micros(42_500)));
        assert_eq!(single_pause(text, 4), None, "two cutovers: no single pause");
        assert_eq!(single_pause(text, 5), None);
    }

    #[test]
    fn the_server_version_is_the_third_word() {
        let text = "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)";
        assert_eq!(server_version(text), Some("15.8"));
        assert_eq!(server_version(""), None);
    }

    #[test]
    fn verification_details_read_well() {
        let count =
            serde_json::json!({"level": "count", "source_events": 1200, "target_events": 1200});
        assert_eq!(describe_verification(&count), "count passed (1,200 events)");
        let hash = serde_json::json!({
            "counts": {"level": "count", "source_events": 5, "target_events": 5},
            "report": {"level": "hash", "passed": false}});
        assert_eq!(describe_verification(&hash), "hash FAILED (5 events)");
    }
}
