//! `DualWriter`: copies the events a client transaction committed on the source to the
//! target while the tenant's migration is in DUAL_WRITE (DESIGN §7).
//!
//! The data plane calls [`DualWriter::submit`] after the source answered the commit, so the
//! client never waits for the target. One worker task per migration takes the committed event
//! ids in order, reads those rows from the source (the committed rows, never a re-run of the
//! statement; ids of a transaction that rolled back find nothing) and inserts them into the
//! target with `ON CONFLICT (event_id) DO NOTHING`. A failure is counted and logged with the
//! migration and tenant and left to the tail, which copies every committed row anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, RwLock};
use tokio_postgres::Client;
use tracing::Instrument;
use uuid::Uuid;

use crate::copier;
use crate::retry::Failure;
use crate::store_directory::StoreDirectory;
use crate::telemetry;

/// Commits queued per migration before new ones are dropped (the tail recovers them).
const QUEUE: usize = 10_000;

/// Event ids one source read takes at most.
const MAX_IDS_PER_COPY: usize = 1_000;

/// A worker with nothing to do for this long ends (and closes its connections).
const WORKER_IDLE: Duration = Duration::from_secs(30);

/// Which migration a commit belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualWriteRoute {
    pub migration_id: i64,
    pub tenant: Uuid,
    pub source_store: String,
    pub target_store: String,
}

/// The events one source transaction committed.
#[derive(Debug)]
struct Committed {
    event_ids: Vec<Uuid>,
    committed_at: Instant,
}

/// The dual-write workers of this process. Share it with an `Arc`.
pub struct DualWriter {
    stores: StoreDirectory,
    workers: Mutex<HashMap<i64, mpsc::Sender<Committed>>>,
    /// Per migration: whether it may still write to its target. A write holds the read
    /// side; closing takes the write side, so it waits for a write in progress.
    open: Mutex<HashMap<i64, Arc<RwLock<bool>>>>,
}

impl DualWriter {
    pub fn new(stores: StoreDirectory) -> Arc<DualWriter> {
        Arc::new(DualWriter {
            stores,
            workers: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// No more dual-writes for migration `id` (it is being aborted: its target is about to be
    /// cleaned). Returns once a write in progress has finished.
    pub async fn close(&self, id: i64) {
        let flag = self.open_flag(id);
        *flag.write().await = false;
    }

    fn open_flag(&self, id: i64) -> Arc<RwLock<bool>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            open.entry(id)
                .or_insert_with(|| Arc::new(RwLock::new(true))),
        )
    }

    /// Queues the events a transaction of `route.tenant` committed on the source. Never
    /// blocks: a full queue drops the commit (counted; the tail copies it).
    pub fn submit(self: &Arc<Self>, route: &DualWriteRoute, event_ids: Vec<Uuid>) {
        if event_ids.is_empty() {
            return;
        }
        let mut committed = Committed {
            event_ids,
            committed_at: Instant::now(),
        };
        for _ in 0..2 {
            let sender = self.sender(route);
            match sender.try_send(committed) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    record_failure(route, "queue_full");
                    return;
                }
                // The worker ended after idling: start another.
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.lock().remove(&route.migration_id);
                    committed = back;
                }
            }
        }
        record_failure(route, "worker_unavailable");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, mpsc::Sender<Committed>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sender(self: &Arc<Self>, route: &DualWriteRoute) -> mpsc::Sender<Committed> {
        let mut workers = self.lock();
        if let Some(sender) = workers.get(&route.migration_id) {
            if !sender.is_closed() {
                return sender.clone();
            }
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        let worker = Worker {
            writer: Arc::clone(self),
            route: route.clone(),
            connections: None,
        };
        let span = tracing::info_span!("eventsource.migration.dual_write",
            migration_id = route.migration_id, tenant_id = %route.tenant, phase = "DUAL_WRITE");
        tokio::spawn(worker.run(receiver).instrument(span));
        workers.insert(route.migration_id, sender.clone());
        sender
    }
}

/// One migration's worker.
struct Worker {
    writer: Arc<DualWriter>,
    route: DualWriteRoute,
    /// Source and target sessions, opened on first use and after a failure.
    connections: Option<(Client, Client)>,
}

impl Worker {
    async fn run(mut self, mut receiver: mpsc::Receiver<Committed>) {
        loop {
            let first = match tokio::time::timeout(WORKER_IDLE, receiver.recv()).await {
                Ok(Some(committed)) => committed,
                Ok(None) | Err(_) => break,
            };
            let mut commits = vec![first];
            let mut ids = commits[0].event_ids.len();
            while ids < MAX_IDS_PER_COPY {
                match receiver.try_recv() {
                    Ok(committed) => {
                        ids += committed.event_ids.len();
                        commits.push(committed);
                    }
                    Err(_) => break,
                }
            }
            self.write(&commits).await;
        }
        receiver.close();
        let mut workers = self.writer.lock();
        if workers
            .get(&self.route.migration_id)
            .is_some_and(mpsc::Sender::is_closed)
        {
            workers.remove(&self.route.migration_id);
        }
    }

    async fn write(&mut self, commits: &[Committed]) {
        let flag = self.writer.open_flag(self.route.migration_id);
        let open = flag.read().await;
        if !*open {
            return;
        }
        let ids: Vec<Uuid> = commits
            .iter()
            .flat_map(|c| c.event_ids.iter().copied())
            .collect();
        match self.copy(&ids).await {
            Ok(copied) => {
                for commit in commits {
                    let latency = commit.committed_at.elapsed();
                    telemetry::dual_write_latency(
                        self.route.migration_id,
                        self.route.tenant,
                        latency,
                    );
                }
                tracing::trace!(
                    operation = "dual_write",
                    events = ids.len(),
                    copied,
                    "dual-write done"
                );
            }
            Err(failure) => {
                self.connections = None;
                tracing::warn!(
                    operation = "dual_write",
                    events = ids.len(),
                    error = failure.message(),
                    "dual-write to the target failed; the tail will copy these events"
                );
                for _ in commits {
                    record_failure(&self.route, "target_write_failed");
                }
            }
        }
    }

    async fn copy(&mut self, ids: &[Uuid]) -> Result<u64, Failure> {
        if self.connections.is_none() {
            let stores = &self.writer.stores;
            let source = stores.connect(&self.route.source_store).await?;
            let target = stores.connect(&self.route.target_store).await?;
            copier::prepare_target(&target, &self.route.target_store).await?;
            self.connections = Some((source, target));
        }
        let Some((source, target)) = self.connections.as_mut() else {
            return Ok(0);
        };
        copier::copy_events(
            source,
            &self.route.source_store,
            target,
            &self.route.target_store,
            self.route.tenant,
            ids,
        )
        .await
    }
}

/// Counts a commit the dual-write did not copy.
fn record_failure(route: &DualWriteRoute, reason: &'static str) {
    telemetry::dual_write_failure(route.migration_id, route.tenant, reason);
}
