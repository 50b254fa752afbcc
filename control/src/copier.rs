//! `Copier`: copies one tenant's events (and snapshots) from its source store to the target.
//!
//! One pass reads the tenant's rows above the checkpoint, inside the source's horizon, in
//! `global_position` order, as one `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` stream. Three
//! stages run at once, joined in one task and linked by small bounded channels, so memory stays
//! at a few batches whatever the tenant's size:
//!
//! 1. read: the stream is cut into rows (not decoded) and grouped into batches;
//! 2. write: in the bulk pass, each batch gets target positions from the target's own
//!    sequence, handed out in batch order, and is `COPY`'d straight into `events` with its first
//!    field rewritten to those positions and `txid` NULL; two batches are written at once on
//!    two connections, yet target positions follow source order. A batch that meets rows
//!    already there is written idempotently instead. The tail writes one batch at a time
//!    through a temporary staging table and `INSERT INTO events ... SELECT ... ORDER BY
//!    source_position ON CONFLICT (event_id) DO NOTHING RETURNING ...`;
//! 3. checkpoint: the batch's position mappings (binary COPY) and the new checkpoint commit in
//!    one control-store transaction, in batch order.
//!
//! A crash between 2 and 3 leaves rows on the target above the last checkpoint: the next bulk
//! pass deletes them first and copies them again in order (see `discard_unrecorded`); the tail
//! skips them by the conflict clause and reads their positions back. The target therefore never
//! holds a row twice, and never misses one below the checkpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::copy_format::{frame_rows, frame_rows_repositioned, RowSplitter};
use crate::migration_store::{BatchRecord, MigrationStore};
use crate::rate_limit::RateLimiter;
use crate::retry::Failure;
use crate::store_directory::StoreDirectory;
use crate::tail_window::{Probe, ReadPlan, TailWindow};

/// Batches buffered between two stages.
const STAGE_BUFFER: usize = 2;

/// The source columns, in staging order: the source position first.
const SOURCE_COLUMNS: &str = "global_position, event_id, aggregate_id, aggregate_type, \
     event_type, tenant_id, actor_id, version, \"timestamp\", payload, created_at";

/// The `events` columns the copier writes (besides `txid`, written NULL).
const EVENT_COLUMNS: &str = "event_id, aggregate_id, aggregate_type, event_type, tenant_id, \
     actor_id, version, \"timestamp\", payload, created_at";

/// Staging tables of a target session; rows vanish at commit.
const STAGING_DDL: &str = "
    CREATE TEMP TABLE IF NOT EXISTS evshift_copy_staging (
        source_position bigint NOT NULL,
        event_id        uuid NOT NULL,
        aggregate_id    uuid NOT NULL,
        aggregate_type  varchar(255) NOT NULL,
        event_type      varchar(255) NOT NULL,
        tenant_id       uuid,
        actor_id        varchar(255),
        version         integer NOT NULL,
        \"timestamp\"   timestamptz NOT NULL,
        payload         jsonb NOT NULL,
        created_at      timestamptz NOT NULL
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS evshift_snapshot_staging (
        aggregate_id   uuid NOT NULL,
        aggregate_type varchar(255) NOT NULL,
        version        integer NOT NULL,
        schema_version integer NOT NULL,
        state          jsonb NOT NULL,
        created_at     timestamptz NOT NULL
    ) ON COMMIT DELETE ROWS;";

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassOutcome {
    /// Source rows copied and checkpointed.
    pub copied: u64,
    /// The checkpoint after the pass.
    pub checkpoint: i64,
    /// The pass ended early: stop was requested, or the migration was paused.
    pub stopped: bool,
}

/// A tenant's events on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub source: i64,
    pub target: i64,
}

/// What one pass reads and how it writes.
pub struct PassScope<'a> {
    /// Rows at most (a tail round), or all.
    pub limit: Option<u64>,
    pub mode: WriteMode,
    /// The driver's window of rows that may commit below the checkpoint.
    pub window: &'a mut TailWindow,
    /// The tenant is held with nothing in flight (the cutover's final tail): every committed
    /// row is final, so the horizon is not applied.
    pub quiescent: bool,
}

/// How a pass writes to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The bulk pass: target positions are taken from the target's sequence in source order
    /// before each batch is written, and batches are `COPY`'d straight into `events` on all
    /// writer connections at once. A batch that meets rows already there (a batch copied
    /// again after a crash) falls back to `Idempotent` at the same positions.
    Bulk,
    /// The tail: one batch at a time through the staging table and `INSERT ... ON CONFLICT
    /// (event_id) DO NOTHING`, the target assigning positions; rows already there (a
    /// dual-write, a re-copy) are skipped.
    Idempotent,
}

/// The rows of one batch, as the source sent them.
struct Batch {
    rows: Vec<Bytes>,
    event_ids: Vec<Uuid>,
    positions: Vec<i64>,
}

/// A batch the target committed, for the control store.
struct Written {
    record: BatchRecord,
}

/// Copies one tenant from the `source` store to the `target` store, over open connections.
pub struct Copier {
    pub migration_id: i64,
    pub tenant: Uuid,
    pub source_store: String,
    pub target_store: String,
    pub source: Client,
    /// Position allocation and snapshots.
    pub target: Client,
    /// Batch writers; the bulk pass uses all of them at once.
    pub writers: Vec<Client>,
    pub batch_size: usize,
}

/// Where and what a copier copies.
pub struct CopyJob<'a> {
    pub migration_id: i64,
    pub tenant: Uuid,
    pub source_store: &'a str,
    pub target_store: &'a str,
    pub batch_size: usize,
    /// Target connections writing batches at once in the bulk pass.
    pub writers: usize,
}

impl Copier {
    /// Opens the connections and prepares the target sessions (their staging tables).
    pub async fn connect(stores: &StoreDirectory, job: CopyJob<'_>) -> Result<Copier, Failure> {
        let source = stores.connect(job.source_store).await?;
        let target = stores.connect(job.target_store).await?;
        let mut writers = Vec::with_capacity(job.writers);
        for _ in 0..job.writers.max(1) {
            writers.push(stores.connect(job.target_store).await?);
        }
        for client in writers.iter().chain([&target]) {
            client.batch_execute(STAGING_DDL).await.map_err(|e| {
                Failure::from_pg(
                    &format!(
                        "create the staging tables on target store {:?}",
                        job.target_store
                    ),
                    &e,
                )
            })?;
        }
        Ok(Copier {
            migration_id: job.migration_id,
            tenant: job.tenant,
            source_store: job.source_store.to_string(),
            target_store: job.target_store.to_string(),
            source,
            target,
            writers,
            batch_size: job.batch_size,
        })
    }

    /// The source's horizon, next xid and position sequence now, in one snapshot (see
    /// [`TailWindow`]).
    async fn probe(&self) -> Result<Probe, Failure> {
        let row = self
            .source
            .query_one(
                "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,
                        COALESCE(pg_sequence_last_value(
                            pg_get_serial_sequence('events', 'global_position')::regclass), 0)
                   FROM pg_current_snapshot() AS s",
                &[],
            )
            .await
            .map_err(|e| self.source_failure("read the horizon", &e))?;
        let number = |i: usize| -> Result<u64, Failure> {
            row.get::<_, String>(i).parse().map_err(|e| {
                Failure::Permanent(format!(
                    "source store {:?}: bad xid: {e}",
                    self.source_store
                ))
            })
        };
        Ok(Probe {
            horizon: number(0)?,
            xmax: number(1)?,
            sequence: row.get(2),
        })
    }

    /// Deletes the tenant's rows from the target above `target_position` (all of them for
    /// `None`): rows a bulk pass wrote but never checkpointed (a crash, a lost connection).
    /// They are copied again in order, so target positions keep following source order even
    /// when parallel writers left a later batch committed and an earlier one not. Only for the
    /// bulk pass: nothing else writes the tenant to the target before DUAL_WRITE.
    pub async fn discard_unrecorded(&self, target_position: Option<i64>) -> Result<u64, Failure> {
        self.target
            .execute(
                "DELETE FROM events WHERE tenant_id = $1 AND global_position > $2",
                &[&self.tenant, &target_position.unwrap_or(0)],
            )
            .await
            .map_err(|e| {
                Failure::from_pg(
                    &format!(
                        "discard unrecorded rows on target store {:?}",
                        self.target_store
                    ),
                    &e,
                )
            })
    }

    /// The OID of the target's sequence behind `events.global_position`.
    async fn position_sequence(&self) -> Result<u32, Failure> {
        let row = self
            .target
            .query_one(
                "SELECT pg_get_serial_sequence('events', 'global_position')::regclass::oid",
                &[],
            )
            .await
            .map_err(|e| {
                Failure::from_pg(
                    &format!(
                        "find the position sequence on target store {:?}",
                        self.target_store
                    ),
                    &e,
                )
            })?;
        row.get::<_, Option<u32>>(0).ok_or_else(|| {
            Failure::Permanent(format!(
                "events.global_position on target store {:?} has no sequence",
                self.target_store
            ))
        })
    }

    /// Tenant rows in the source above `checkpoint` (copyable now or not).
    pub async fn remaining(&self, checkpoint: i64) -> Result<i64, Failure> {
        let row = self
            .source
            .query_one(
                "SELECT count(*) FROM events WHERE tenant_id = $1 AND global_position > $2",
                &[&self.tenant, &checkpoint],
            )
            .await
            .map_err(|e| self.source_failure("count the tenant's events", &e))?;
        Ok(row.get(0))
    }

    /// The tenant's events in the source and in the target, counted at once.
    pub async fn count_both(&self) -> Result<Counts, Failure> {
        let sql = "SELECT count(*) FROM events WHERE tenant_id = $1";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.tenant];
        let (source, target) = tokio::join!(
            self.source.query_one(sql, &params),
            self.target.query_one(sql, &params)
        );
        let source = source.map_err(|e| self.source_failure("count the tenant's events", &e))?;
        let target = target.map_err(|e| {
            Failure::from_pg(
                &format!(
                    "count the tenant's events on target store {:?}",
                    self.target_store
                ),
                &e,
            )
        })?;
        Ok(Counts {
            source: source.get(0),
            target: target.get(0),
        })
    }

    /// Copies the tenant's rows above `checkpoint` that are inside the horizon, at most
    /// `limit` of them, checkpointing each batch through `control`. Stops at a batch boundary
    /// when `stop` is cancelled or the control store says the migration is paused.
    pub async fn pass(
        &mut self,
        checkpoint: i64,
        scope: PassScope<'_>,
        control: &mut MigrationStore,
        rate: &mut RateLimiter,
        stop: &CancellationToken,
    ) -> Result<PassOutcome, Failure> {
        let PassScope {
            limit,
            mode,
            window,
            quiescent,
        } = scope;
        let probe = self.probe().await?;
        let plan = window.plan(checkpoint);
        let horizon = (!quiescent).then_some(probe.horizon);
        let query = self.copy_query(&plan, horizon, limit);
        let (batches_tx, batches_rx) = mpsc::channel(STAGE_BUFFER);
        let (written_tx, written_rx) = mpsc::channel(STAGE_BUFFER);
        let pass_stop = stop.child_token();
        let parallel = match mode {
            WriteMode::Bulk => self.writers.len(),
            WriteMode::Idempotent => 1,
        };
        let sequence = match mode {
            WriteMode::Bulk => self.position_sequence().await?,
            WriteMode::Idempotent => 0,
        };
        let pool = WriterPool::new(std::mem::take(&mut self.writers));
        let writer = BatchWriter {
            allocator: &self.target,
            sequence,
            pool: &pool,
            store: &self.target_store,
            mode,
        };
        let read = read_batches(
            &self.source,
            &self.source_store,
            &query,
            self.batch_size,
            batches_tx,
        );
        let write = writer.run(batches_rx, written_tx, parallel, &pass_stop);
        let record = record_batches(
            control,
            self.migration_id,
            written_rx,
            checkpoint,
            rate,
            &pass_stop,
        );
        let result = futures::try_join!(read, write, record);
        self.writers = pool.into_clients();
        let ((), (), mut outcome) = result?;
        outcome.stopped = pass_stop.is_cancelled();
        let read_everything = !outcome.stopped && limit.is_none_or(|n| outcome.copied < n);
        // Rows are read in position order: a pass cut by its limit after it passed the
        // checkpoint read the whole window below it, and the next pass reads everything above
        // its new checkpoint whatever the horizon. So it counts as completed, and the next
        // window starts from its probe; otherwise every later pass would read again the rows
        // this one copied (they are late for the old window) and never get past them.
        let swept_past_checkpoint = !outcome.stopped && outcome.checkpoint > checkpoint;
        if read_everything || swept_past_checkpoint {
            window.completed(probe);
        }
        Ok(outcome)
    }

    /// `COPY (SELECT ...) TO STDOUT`: COPY takes no parameters, so the values are inlined;
    /// all are typed values formatted here (a UUID, integers, xid8 numbers). Without a horizon
    /// (the tenant is held, nothing of it in flight) every committed row is read.
    fn copy_query(&self, plan: &ReadPlan, horizon: Option<u64>, limit: Option<u64>) -> String {
        let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
        let horizon = horizon
            .map(|h| format!(" AND (txid IS NULL OR txid < '{h}'::xid8)"))
            .unwrap_or_default();
        format!(
            "COPY (SELECT {SOURCE_COLUMNS} FROM events
                    WHERE tenant_id = '{tenant}' AND {window}{horizon}
                    ORDER BY global_position{limit}) TO STDOUT (FORMAT BINARY)",
            tenant = self.tenant,
            window = plan.condition(),
        )
    }

    /// Copies the snapshots of the tenant's aggregates (those with an event of the tenant in
    /// the source) saved at or after `since` (all when `None`; the source's clock), keeping
    /// the newer version where the target has one. Returns how many were written.
    pub async fn copy_snapshots(&mut self, since: Option<&str>) -> Result<u64, Failure> {
        let since = since
            .map(|t| {
                format!(
                    " AND s.created_at >= '{}'::timestamptz",
                    t.replace('\'', "")
                )
            })
            .unwrap_or_default();
        let query = format!(
            "COPY (SELECT s.aggregate_id, s.aggregate_type, s.version, s.schema_version,
                          s.state, s.created_at
                     FROM snapshots s
                    WHERE EXISTS (SELECT 1 FROM events e
                                   WHERE e.aggregate_id = s.aggregate_id
                                     AND e.tenant_id = '{tenant}'){since})
             TO STDOUT (FORMAT BINARY)",
            tenant = self.tenant
        );
        let stream = self
            .source
            .copy_out(query.as_str())
            .await
            .map_err(|e| self.source_failure("read the tenant's snapshots", &e))?;
        let target_store = self.target_store.clone();
        let failed = |what: &str, e: &tokio_postgres::Error| {
            Failure::from_pg(&format!("{what} on target store {target_store:?}"), e)
        };
        let transaction = self
            .target
            .transaction()
            .await
            .map_err(|e| failed("begin", &e))?;
        let sink = transaction
            .copy_in("COPY evshift_snapshot_staging FROM STDIN (FORMAT BINARY)")
            .await
            .map_err(|e| failed("stage snapshots", &e))?;
        pin_mut!(sink);
        let chunks = stream.map_ok(|chunk: Bytes| chunk);
        pin_mut!(chunks);
        sink.send_all(&mut chunks)
            .await
            .map_err(|e| failed("stage snapshots", &e))?;
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| failed("stage snapshots", &e))?;
        let written = transaction
            .execute(
                "INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version,
                                        state, created_at)
                 SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at
                   FROM evshift_snapshot_staging
                 ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE
                    SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
                        state = EXCLUDED.state, created_at = EXCLUDED.created_at
                  WHERE snapshots.version <= EXCLUDED.version",
                &[],
            )
            .await
            .map_err(|e| failed("write snapshots", &e))?;
        transaction
            .commit()
            .await
            .map_err(|e| failed("commit snapshots", &e))?;
        Ok(written)
    }

    /// The source's clock a minute ago, for the next `copy_snapshots(since)`: a snapshot's
    /// `created_at` is its transaction's start, which may be a while before its commit.
    pub async fn snapshot_watermark(&self) -> Result<String, Failure> {
        let row = self
            .source
            .query_one("SELECT (now() - interval '60 seconds')::text", &[])
            .await
            .map_err(|e| self.source_failure("read the clock", &e))?;
        Ok(row.get(0))
    }

    fn source_failure(&self, what: &str, error: &tokio_postgres::Error) -> Failure {
        Failure::from_pg(
            &format!("{what} on source store {:?}", self.source_store),
            error,
        )
    }
}

/// Prepares a target session for [`copy_events`] (its staging tables).
pub(crate) async fn prepare_target(target: &Client, store: &str) -> Result<(), Failure> {
    target.batch_execute(STAGING_DDL).await.map_err(|e| {
        Failure::from_pg(
            &format!("create the staging tables on target store {store:?}"),
            &e,
        )
    })
}

/// Copies the committed rows of `tenant` among `event_ids` from the source to the target
/// (dual-write): the committed rows themselves, never a re-run of the statement; rows already
/// there are skipped. Returns how many rows the source had. The tail records their position
/// mappings when it reaches them.
pub(crate) async fn copy_events(
    source: &Client,
    source_store: &str,
    target: &mut Client,
    target_store: &str,
    tenant: Uuid,
    event_ids: &[Uuid],
) -> Result<u64, Failure> {
    if event_ids.is_empty() {
        return Ok(0);
    }
    // COPY takes no parameters: the ids are UUIDs formatted here.
    let list: Vec<String> = event_ids.iter().map(|id| format!("'{id}'")).collect();
    let query = format!(
        "COPY (SELECT {SOURCE_COLUMNS} FROM events
                WHERE tenant_id = '{tenant}' AND event_id IN ({})
                ORDER BY global_position) TO STDOUT (FORMAT BINARY)",
        list.join(",")
    );
    let (batches_tx, mut batches_rx) = mpsc::channel(STAGE_BUFFER);
    let read = read_batches(source, source_store, &query, event_ids.len(), batches_tx);
    let write = async {
        let mut copied = 0u64;
        while let Some(batch) = batches_rx.recv().await {
            insert_batch(target, target_store, &batch, None).await?;
            copied += batch.rows.len() as u64;
        }
        Ok::<u64, Failure>(copied)
    };
    let ((), copied) = futures::try_join!(read, write)?;
    Ok(copied)
}

/// Stage 1: the source stream cut into batches. Ends quietly if the writer stopped.
async fn read_batches(
    source: &Client,
    store: &str,
    query: &str,
    batch_size: usize,
    batches: mpsc::Sender<Batch>,
) -> Result<(), Failure> {
    let failed =
        |e: &tokio_postgres::Error| Failure::from_pg(&format!("read source store {store:?}"), e);
    let stream = source.copy_out(query).await.map_err(|e| failed(&e))?;
    pin_mut!(stream);
    let mut splitter = RowSplitter::new();
    let mut batch = Batch::with_capacity(batch_size);
    while let Some(chunk) = stream.next().await {
        splitter.push(&chunk.map_err(|e| failed(&e))?);
        while let Some(row) = splitter
            .next_row()
            .map_err(|e| Failure::Permanent(format!("read source store {store:?}: {e}")))?
        {
            let event_id = row
                .event_id()
                .map_err(|e| Failure::Permanent(format!("read source store {store:?}: {e}")))?;
            batch.rows.push(row.bytes);
            batch.event_ids.push(event_id);
            batch.positions.push(row.position);
            if batch.rows.len() == batch_size {
                let full = std::mem::replace(&mut batch, Batch::with_capacity(batch_size));
                if batches.send(full).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    if !splitter.is_finished() {
        return Err(Failure::Transient(format!(
            "read source store {store:?}: the COPY stream ended before its trailer"
        )));
    }
    if !batch.rows.is_empty() {
        let _ = batches.send(batch).await;
    }
    Ok(())
}

impl Batch {
    fn with_capacity(size: usize) -> Batch {
        Batch {
            rows: Vec::with_capacity(size),
            event_ids: Vec::with_capacity(size),
            positions: Vec::with_capacity(size),
        }
    }
}

/// The target connections that write batches, lent to one batch at a time.
struct WriterPool {
    clients: std::sync::Mutex<Vec<Client>>,
}

impl WriterPool {
    fn new(clients: Vec<Client>) -> WriterPool {
        WriterPool {
            clients: std::sync::Mutex::new(clients),
        }
    }

    fn take(&self) -> Option<Client> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give(&self, client: Client) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(client);
    }

    fn into_clients(self) -> Vec<Client> {
        self.clients.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stage 2: batches written to the target, up to `parallel` at once, results in batch order.
struct BatchWriter<'a> {
    /// Takes target positions from the target's sequence, in batch order.
    allocator: &'a Client,
    /// The OID of that sequence.
    sequence: u32,
    pool: &'a WriterPool,
    store: &'a str,
    mode: WriteMode,
}

impl BatchWriter<'_> {
    async fn run(
        &self,
        mut batches: mpsc::Receiver<Batch>,
        written: mpsc::Sender<Written>,
        parallel: usize,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        // Positions are handed out here, one batch after the other, so in batch order;
        // `FuturesOrdered` writes up to `parallel` batches at once and yields them in that
        // same order.
        let mut in_flight = FuturesOrdered::new();
        let mut open = true;
        loop {
            let take = open && in_flight.len() < parallel.max(1) && !stop.is_cancelled();
            if !take && in_flight.is_empty() {
                return Ok(());
            }
            tokio::select! {
                batch = batches.recv(), if take => match batch {
                    Some(batch) => {
                        let positions = match self.mode {
                            WriteMode::Bulk => Some(self.allocate(batch.rows.len()).await?),
                            WriteMode::Idempotent => None,
                        };
                        in_flight.push_back(self.write(batch, positions));
                    }
                    None => open = false,
                },
                Some(record) = in_flight.next(), if !in_flight.is_empty() => {
                    if written.send(Written { record: record? }).await.is_err() {
                        return Ok(());
                    }
                }
                () = stop.cancelled(), if take => {}
            }
        }
    }

    /// `count` new positions from the target's `events` sequence, ascending.
    async fn allocate(&self, count: usize) -> Result<Vec<i64>, Failure> {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        // The sequence by OID, a literal: folded once when the statement is planned (a name
        // would be looked up again for every row).
        let rows = self
            .allocator
            .query(
                &format!(
                    "SELECT nextval({}::oid::regclass) FROM generate_series(1, $1::int)",
                    self.sequence
                ),
                &[&count],
            )
            .await
            .map_err(|e| self.failure("allocate positions", &e))?;
        let mut positions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        positions.sort_unstable();
        Ok(positions)
    }

    /// Writes one batch on a pooled connection.
    async fn write(
        &self,
        batch: Batch,
        positions: Option<Vec<i64>>,
    ) -> Result<BatchRecord, Failure> {
        let batch = &batch;
        let Some(mut client) = self.pool.take() else {
            return Err(Failure::Permanent(
                "no target connection free for a batch".into(),
            ));
        };
        let result = match &positions {
            Some(positions) => match copy_batch(&client, batch, positions).await {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tracing::info!(
                        store = self.store,
                        "a batch meets rows already copied; writing it idempotently"
                    );
                    insert_batch(&mut client, self.store, batch, Some(positions)).await
                }
                Err(e) => Err(self.failure("copy a batch", &e)),
                Ok(()) => Ok(mapping_record(batch, positions)),
            },
            None => insert_batch(&mut client, self.store, batch, None).await,
        };
        if result.is_ok() {
            self.pool.give(client);
        }
        result
    }

    fn failure(&self, what: &str, error: &tokio_postgres::Error) -> Failure {
        Failure::from_pg(&format!("{what} on target store {:?}", self.store), error)
    }
}

/// `COPY events FROM STDIN` of a batch at the given positions, `txid` NULL. One statement,
/// so all or nothing.
async fn copy_batch(
    client: &Client,
    batch: &Batch,
    positions: &[i64],
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(&format!(
            "COPY events (global_position, {EVENT_COLUMNS}, txid) FROM STDIN (FORMAT BINARY)"
        ))
        .await?;
    pin_mut!(sink);
    sink.send(frame_rows_repositioned(&batch.rows, positions))
        .await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// One target transaction: stage, insert what is not there yet (at `positions` when given,
/// else at positions the target assigns), read back the positions.
async fn insert_batch(
    target: &mut Client,
    store: &str,
    batch: &Batch,
    positions: Option<&Vec<i64>>,
) -> Result<BatchRecord, Failure> {
    let failed = |what: &str, e: &tokio_postgres::Error| {
        Failure::from_pg(&format!("{what} on target store {store:?}"), e)
    };
    let transaction = target
        .transaction()
        .await
        .map_err(|e| failed("begin a batch", &e))?;
    let sink = transaction
        .copy_in("COPY evshift_copy_staging FROM STDIN (FORMAT BINARY)")
        .await
        .map_err(|e| failed("stage a batch", &e))?;
    pin_mut!(sink);
    sink.send(frame_rows(&batch.rows))
        .await
        .map_err(|e| failed("stage a batch", &e))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| failed("stage a batch", &e))?;
    let inserted = match positions {
        None => {
            transaction
                .query(
                    &format!(
                        "INSERT INTO events ({EVENT_COLUMNS}, txid)
                         SELECT {EVENT_COLUMNS}, NULL FROM evshift_copy_staging
                          ORDER BY source_position
                         ON CONFLICT (event_id) DO NOTHING
                         RETURNING event_id, global_position"
                    ),
                    &[],
                )
                .await
        }
        Some(positions) => {
            transaction
                .query(
                    &format!(
                        "INSERT INTO events (global_position, {EVENT_COLUMNS}, txid)
                         SELECT p.target_position, {EVENT_COLUMNS}, NULL
                           FROM evshift_copy_staging
                           JOIN unnest($1::bigint[], $2::bigint[])
                                AS p(source_position, target_position) USING (source_position)
                          ORDER BY source_position
                         ON CONFLICT (event_id) DO NOTHING
                         RETURNING event_id, global_position"
                    ),
                    &[&batch.positions, positions],
                )
                .await
        }
    }
    .map_err(|e| failed("insert a batch", &e))?;
    let mut target_positions: HashMap<Uuid, i64> = inserted
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if target_positions.len() < batch.rows.len() {
        // Rows that were already there (a batch copied again after a crash, or a dual-write).
        let missing: Vec<Uuid> = batch
            .event_ids
            .iter()
            .filter(|id| !target_positions.contains_key(id))
            .copied()
            .collect();
        let rows = transaction
            .query(
                "SELECT event_id, global_position FROM events WHERE event_id = ANY($1)",
                &[&missing],
            )
            .await
            .map_err(|e| failed("read back existing rows", &e))?;
        target_positions.extend(
            rows.iter()
                .map(|row| (row.get::<_, Uuid>(0), row.get::<_, i64>(1))),
        );
    }
    transaction
        .commit()
        .await
        .map_err(|e| failed("commit a batch", &e))?;
    let targets = batch
        .event_ids
        .iter()
        .map(|id| {
            target_positions.get(id).copied().ok_or_else(|| {
                Failure::Permanent(format!(
                    "event {id} is neither inserted nor present in target store {store:?}"
                ))
            })
        })
        .collect::<Result<Vec<i64>, Failure>>()?;
    Ok(mapping_record(batch, &targets))
}

/// The batch's mappings, in source order: `targets[i]` is where row `i` landed.
fn mapping_record(batch: &Batch, targets: &[i64]) -> BatchRecord {
    BatchRecord {
        events: batch.rows.len() as i64,
        last_source_position: batch.positions.last().copied().unwrap_or(0),
        source_positions: batch.positions.clone(),
        target_positions: targets.to_vec(),
        event_ids: batch.event_ids.clone(),
        events_per_second: 0.0,
    }
}

/// Stage 3: mappings and checkpoints, in batch order, paced by `rate` (the bounded channels
/// hold the other stages back). Cancels `stop` if the migration was paused meanwhile.
async fn record_batches(
    control: &mut MigrationStore,
    migration_id: i64,
    mut written: mpsc::Receiver<Written>,
    checkpoint: i64,
    rate: &mut RateLimiter,
    stop: &CancellationToken,
) -> Result<PassOutcome, Failure> {
    let started = Instant::now();
    let mut outcome = PassOutcome {
        checkpoint,
        ..Default::default()
    };
    while let Some(Written { mut record }) = written.recv().await {
        let elapsed = started.elapsed().max(Duration::from_millis(1));
        record.events_per_second =
            (outcome.copied + record.events as u64) as f64 / elapsed.as_secs_f64();
        let paused = control.record_batch(migration_id, &record).await?;
        outcome.copied += record.events as u64;
        // Rows that committed late below the checkpoint never move it back.
        outcome.checkpoint = outcome.checkpoint.max(record.last_source_position);
        if paused {
            stop.cancel();
        }
        let wait = rate.record(record.events as u64);
        if !wait.is_zero() {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
    Ok(outcome)
}
