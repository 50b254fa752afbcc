//! The load generator: N clients over M tenants running the eventsource mix, closed loop or at
//! a fixed rate, measured by a shared [`Recorder`]. Usable in-process: [`start`] returns a
//! [`LoadHandle`] that can mark instants and stop the load; [`LoadHandle::finish`] returns the
//! [`LoadRun`] (report, histograms, acknowledged event ids).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ids::{client_aggregate, seeded_aggregate};
use crate::mix::{Mix, MixSampler, TenantSampler, TenantSkew, TxKind};
use crate::recorder::{Acknowledged, KindStats, Recorder};
use crate::report::{LoadReport, LoadSettings};
use crate::workload::{redact_url, Protocol, Session};

/// Connections opened at once while a load starts.
const CONNECT_PARALLELISM: usize = 32;
/// Pause between two attempts to replace a broken connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Closed loop or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each client starts its next transaction when the previous one ended.
    Closed,
    /// Transactions start on a fixed schedule, this many per second over all clients; latency
    /// counts from the scheduled start, so a client that falls behind reports the wait too.
    Rate(f64),
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Closed => f.write_str("closed"),
            Pace::Rate(rate) => write!(f, "{rate}/s"),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// A store directly, PgBouncer, or evshift.
    pub url: String,
    /// Concurrent clients, one connection each.
    pub clients: usize,
    /// The tenants transactions are for.
    pub tenants: Vec<Uuid>,
    pub skew: TenantSkew,
    pub mix: Mix,
    pub protocol: Protocol,
    pub pace: Pace,
    /// Run but not measured, before measuring starts.
    pub warmup: Duration,
    /// Measured time; `None`: until [`LoadHandle::stop`] or [`LoadHandle::finish`].
    pub duration: Option<Duration>,
    /// Aggregates each client appends to, per tenant.
    pub client_aggregates: usize,
    /// Seeded aggregates per tenant that stream and snapshot reads pick from.
    pub read_aggregates: usize,
    /// Rows per `read_all` page.
    pub page_size: i64,
    /// Keep per-tenant figures in each 100 ms bin.
    pub tenant_series: bool,
    /// Carried into the report.
    pub label: String,
}

impl LoadSpec {
    /// `clients` clients on `url` for `tenants`, appends only, prepared statements, closed
    /// loop, uniform tenants, 1 s warm-up, 10 s measured.
    pub fn new(url: &str, clients: usize, tenants: Vec<Uuid>) -> LoadSpec {
        LoadSpec {
            url: url.to_owned(),
            clients,
            tenants,
            skew: TenantSkew::Uniform,
            mix: Mix::only(TxKind::Append),
            protocol: Protocol::Prepared,
            pace: Pace::Closed,
            warmup: Duration::from_secs(1),
            duration: Some(Duration::from_secs(10)),
            client_aggregates: 100,
            read_aggregates: 200,
            page_size: 100,
            tenant_series: false,
            label: String::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.clients == 0 {
            bail!("a load needs at least one client");
        }
        if self.tenants.is_empty() {
            bail!("a load needs at least one tenant");
        }
        if self.client_aggregates == 0 || self.read_aggregates == 0 || self.page_size <= 0 {
            bail!("client aggregates, read aggregates and the page size must be positive");
        }
        if let Pace::Rate(rate) = self.pace {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("the rate must be a positive number of transactions per second");
            }
        }
        Ok(())
    }

    fn settings(&self) -> LoadSettings {
        LoadSettings {
            label: self.label.clone(),
            url: redact_url(&self.url),
            clients: self.clients,
            tenants: self.tenants.len(),
            skew: self.skew.to_string(),
            mix: self.mix.to_string(),
            protocol: self.protocol.name().to_owned(),
            pace: self.pace.to_string(),
            warmup_s: self.warmup.as_secs_f64(),
        }
    }
}

/// One tenant's histograms.
#[derive(Debug, Clone)]
pub struct TenantHistograms {
    pub tenant: Uuid,
    pub kinds: BTreeMap<TxKind, KindStats>,
}

/// What a finished load hands back.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub report: LoadReport,
    /// Per tenant, per kind (measured part only).
    pub histograms: Vec<TenantHistograms>,
    /// Every append acknowledged to a client, warm-up included.
    pub acknowledged: Vec<Acknowledged>,
}

/// State shared by the clients of one load.
struct Shared {
    spec: LoadSpec,
    recorder: Recorder,
    stop: CancellationToken,
    stopped_at: OnceLock<Instant>,
    start: Instant,
    deadline: Option<Instant>,
    mix: MixSampler,
    tenant_sampler: TenantSampler,
}

impl Shared {
    fn stop_now(&self) {
        let _ = self.stopped_at.set(Instant::now());
        self.stop.cancel();
    }
}

/// A running load.
pub struct LoadHandle {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
}

/// Connects every client, then starts the load; returns at once.
pub async fn start(spec: LoadSpec) -> Result<LoadHandle> {
    spec.validate()?;
    let sessions: Vec<Session> = futures::stream::iter(0..spec.clients)
        .map(|_| Session::connect(&spec.url, spec.protocol))
        .buffered(CONNECT_PARALLELISM)
        .try_collect()
        .await
        .with_context(|| format!("open {} client connections", spec.clients))?;
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let deadline = spec.duration.map(|d| measure_from + d);
    let shared = Arc::new(Shared {
        recorder: Recorder::new(spec.tenants.len(), measure_from, spec.tenant_series),
        stop: CancellationToken::new(),
        stopped_at: OnceLock::new(),
        start,
        deadline,
        mix: spec.mix.sampler(),
        tenant_sampler: spec.skew.sampler(spec.tenants.len()),
        spec,
    });
    let clients = sessions
        .into_iter()
        .enumerate()
        .map(|(c, session)| tokio::spawn(client_loop(Arc::clone(&shared), c, session)))
        .collect();
    let timer = deadline.map(|deadline| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let _ = shared.stopped_at.set(deadline);
                    shared.stop.cancel();
                }
                _ = shared.stop.cancelled() => {}
            }
        })
    });
    Ok(LoadHandle {
        shared,
        clients,
        timer,
    })
}

/// Runs `spec` to its end (it needs a duration).
pub async fn run(spec: LoadSpec) -> Result<LoadRun> {
    if spec.duration.is_none() {
        bail!("run needs a duration; use start and LoadHandle::finish for an open-ended load");
    }
    start(spec).await?.finish().await
}

impl LoadHandle {
    /// Records a named instant (shown on latency plots).
    pub fn mark(&self, label: &str) {
        self.shared.recorder.mark(label);
    }

    /// Stops the load now: no client starts another transaction.
    pub fn stop(&self) {
        self.shared.stop_now();
    }

    /// Acknowledged appends so far (warm-up included).
    pub fn acknowledged_so_far(&self) -> usize {
        // Cheap enough for progress output; the recorder's lock is held only briefly.
        self.shared.recorder.acknowledged_count()
    }

    /// Per tenant and kind, the histograms measured so far (a copy). Subtracting an earlier
    /// copy gives exactly what completed in between: a window of a running load.
    pub fn histograms_so_far(&self) -> Vec<TenantHistograms> {
        self.shared
            .recorder
            .tenants_so_far()
            .into_iter()
            .zip(&self.shared.spec.tenants)
            .map(|(kinds, tenant)| TenantHistograms {
                tenant: *tenant,
                kinds,
            })
            .collect()
    }

    /// Waits for the deadline (or stops now when the load has none), lets in-flight
    /// transactions end, and returns what was measured.
    pub async fn finish(self) -> Result<LoadRun> {
        if self.shared.deadline.is_none() {
            self.shared.stop_now();
        }
        for client in self.clients {
            client.await.context("a load client panicked")?;
        }
        if let Some(timer) = self.timer {
            self.shared.stop.cancel();
            let _ = timer.await;
        }
        let shared = &self.shared;
        let stopped_at = *shared.stopped_at.get_or_init(Instant::now);
        let seconds = stopped_at
            .saturating_duration_since(shared.recorder.measure_from())
            .as_secs_f64();
        let recording = shared.recorder.take();
        let report = LoadReport::build(
            shared.spec.settings(),
            &shared.spec.tenants,
            seconds,
            &recording,
        );
        let histograms = recording
            .tenants
            .into_iter()
            .zip(&shared.spec.tenants)
            .map(|(kinds, tenant)| TenantHistograms {
                tenant: *tenant,
                kinds,
            })
            .collect();
        Ok(LoadRun {
            report,
            histograms,
            acknowledged: recording.acknowledged,
        })
    }
}

/// One client: draw a tenant and a kind, run it, record it; until stopped.
async fn client_loop(shared: Arc<Shared>, client: usize, session: Session) {
    let spec = &shared.spec;
    let mut session = Some(session);
    let mut rng = StdRng::from_entropy();
    let mut cursors = vec![0i64; spec.tenants.len()];
    let mut schedule = Schedule::new(spec.pace, spec.clients, client, shared.start);
    loop {
        let intended = match schedule.next() {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = shared.stop.cancelled() => break,
                }
                Some(at)
            }
            None => None,
        };
        if shared.stop.is_cancelled() {
            break;
        }
        let Some(live) = session.as_mut() else {
            session = reconnect(&shared).await;
            continue;
        };
        let tenant_index = shared.tenant_sampler.next(&mut rng);
        let kind = shared.mix.next(&mut rng);
        let began = intended.unwrap_or_else(Instant::now);
        let outcome = execute(
            &shared,
            live,
            client,
            kind,
            tenant_index,
            &mut cursors[tenant_index],
            &mut rng,
        )
        .await;
        let ended = Instant::now();
        shared.recorder.record(
            tenant_index,
            kind,
            ended,
            ended.saturating_duration_since(began),
            outcome.map_err(|e| format!("{kind}: {e:#}")),
        );
        if live.is_closed() {
            session = None;
        }
    }
}

/// A replacement for a broken connection, or `None` when the load stopped meanwhile.
async fn reconnect(shared: &Shared) -> Option<Session> {
    while !shared.stop.is_cancelled() {
        if let Ok(session) = Session::connect(&shared.spec.url, shared.spec.protocol).await {
            return Some(session);
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
            _ = shared.stop.cancelled() => {}
        }
    }
    None
}

async fn execute(
    shared: &Shared,
    session: &mut Session,
    client: usize,
    kind: TxKind,
    tenant_index: usize,
    cursor: &mut i64,
    rng: &mut StdRng,
) -> Result<()> {
    let spec = &shared.spec;
    let tenant = spec.tenants[tenant_index];
    match kind {
        TxKind::Append => {
            let aggregate =
                client_aggregate(tenant, client, rng.gen_range(0..spec.client_aggregates));
            let event_id = session.append(tenant, aggregate).await?;
            shared.recorder.acknowledge(tenant, event_id);
        }
        TxKind::ReadStream => {
            let aggregate = seeded_aggregate(tenant, rng.gen_range(0..spec.read_aggregates));
            session.read_stream(aggregate).await?;
        }
        TxKind::ReadAll => {
            let page = session
                .read_all_page(tenant, *cursor, spec.page_size)
                .await?;
            // At the end of the feed a subscriber would wait; the bench starts over instead.
            *cursor = page.last_position.unwrap_or(0);
        }
        TxKind::Snapshot => {
            let aggregate = seeded_aggregate(tenant, rng.gen_range(0..spec.read_aggregates));
            session.read_snapshot(aggregate).await?;
        }
    }
    Ok(())
}

/// When a client's next transaction is due under [`Pace::Rate`].
struct Schedule {
    next: Option<Instant>,
    interval: Duration,
}

impl Schedule {
    fn new(pace: Pace, clients: usize, client: usize, start: Instant) -> Schedule {
        match pace {
            Pace::Closed => Schedule {
                next: None,
                interval: Duration::ZERO,
            },
            Pace::Rate(rate) => {
                // Each client runs rate / clients per second; their starts are staggered evenly.
                let interval = Duration::from_secs_f64(clients as f64 / rate);
                let offset = interval.mul_f64(client as f64 / clients as f64);
                Schedule {
                    next: Some(start + offset),
                    interval,
                }
            }
        }
    }

    /// The next due instant (advancing the schedule), or `None` in a closed loop.
    fn next(&mut self) -> Option<Instant> {
        let due = self.next?;
        self.next = Some(due + self.interval);
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_schedules_are_staggered_and_even() {
        let start = Instant::now();
        let mut a = Schedule::new(Pace::Rate(100.0), 4, 0, start);
        let mut b = Schedule::new(Pace::Rate(100.0), 4, 1, start);
        assert_eq!(a.next(), Some(start));
        assert_eq!(a.next(), Some(start + Duration::from_millis(40)));
        assert_eq!(b.next(), Some(start + Duration::from_millis(10)));
        assert_eq!(Schedule::new(Pace::Closed, 4, 0, start).next(), None);
    }

    #[test]
    fn specs_are_validated() {
        let mut spec = LoadSpec::new("postgres://x@127.0.0.1/db", 0, vec![Uuid::nil()]);
        assert!(spec.validate().is_err());
        spec.clients = 1;
        assert!(spec.validate().is_ok());
        spec.pace = Pace::Rate(0.0);
        assert!(spec.validate().is_err());
    }
}
