//! `Copier`: copies one tenant's events (and snapshots) from its source store to the target.
//!
//! One pass reads the tenant's rows above the checkpoint, inside the source's horizon, in
//! `global_position` order, as one `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` stream. Three
//! stages run at once, joined in one task and linked by small bounded channels, so memory stays
//! at a few batches whatever the tenant's size:
//!
//! 1. read: the stream is cut into rows (not decoded) and grouped into batches;
//! 2. write: each batch goes into a temporary staging table on the target (`COPY ... FROM
//!    STDIN (FORMAT BINARY)`, the bytes as the source sent them), then `INSERT INTO events ...
//!    SELECT ... ORDER BY source_position ON CONFLICT (event_id) DO NOTHING RETURNING ...`, one
//!    target transaction per batch. `txid` is written NULL; the target assigns its own
//!    `global_position`, in source order;
//! 3. checkpoint: the batch's position mappings and the new checkpoint commit in one
//!    control-store transaction.
//!
//! A crash between 2 and 3 re-copies that batch on resume: the conflict clause skips the rows
//! and the mappings are read back from the target. The target therefore never holds a row
//! twice, and never misses one below the checkpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::copy_format::{frame_rows, RowSplitter};
use crate::migration_store::{BatchRecord, MigrationStore};
use crate::rate_limit::RateLimiter;
use crate::retry::Failure;

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
    pub target: Client,
    pub batch_size: usize,
}

impl Copier {
    /// Prepares the target session (its staging tables).
    pub async fn prepare(&self) -> Result<(), Failure> {
        self.target
            .batch_execute(STAGING_DDL)
            .await
            .map_err(|e| self.target_failure("create the staging tables", &e))
    }

    /// The source's horizon now: `pg_snapshot_xmin(pg_current_snapshot())`, the oldest
    /// transaction still in flight. Rows written by older transactions are all committed.
    async fn horizon(&self) -> Result<String, Failure> {
        let row = self
            .source
            .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
            .await
            .map_err(|e| self.source_failure("read the horizon", &e))?;
        Ok(row.get(0))
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

    /// Copies the tenant's rows above `checkpoint` that are inside the horizon, at most
    /// `limit` of them, checkpointing each batch through `control`. Stops at a batch boundary
    /// when `stop` is cancelled or the control store says the migration is paused.
    pub async fn pass(
        &mut self,
        checkpoint: i64,
        limit: Option<u64>,
        control: &mut MigrationStore,
        rate: &mut RateLimiter,
        stop: &CancellationToken,
    ) -> Result<PassOutcome, Failure> {
        let horizon = self.horizon().await?;
        let query = self.copy_query(checkpoint, &horizon, limit);
        let (batches_tx, batches_rx) = mpsc::channel(STAGE_BUFFER);
        let (written_tx, written_rx) = mpsc::channel(STAGE_BUFFER);
        let pass_stop = stop.child_token();
        let started = Instant::now();
        let batch_size = self.batch_size;
        let migration_id = self.migration_id;
        let (source, target) = (&self.source, &mut self.target);
        let source_store = self.source_store.as_str();
        let target_store = self.target_store.as_str();
        let read = read_batches(source, source_store, &query, batch_size, batches_tx);
        let write = write_batches(
            target,
            target_store,
            batches_rx,
            written_tx,
            rate,
            &pass_stop,
        );
        let record = record_batches(
            control,
            migration_id,
            written_rx,
            checkpoint,
            started,
            &pass_stop,
        );
        let ((), (), mut outcome) = futures::try_join!(read, write, record)?;
        outcome.stopped = pass_stop.is_cancelled();
        Ok(outcome)
    }

    /// `COPY (SELECT ...) TO STDOUT`: COPY takes no parameters, so the values are inlined;
    /// all three are typed values formatted here (a UUID, an integer, an xid8 number).
    fn copy_query(&self, checkpoint: i64, horizon: &str, limit: Option<u64>) -> String {
        let horizon: u64 = horizon.parse().unwrap_or(0);
        let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
        format!(
            "COPY (SELECT {SOURCE_COLUMNS} FROM events
                    WHERE tenant_id = '{tenant}' AND global_position > {checkpoint}
                      AND (txid IS NULL OR txid < '{horizon}'::xid8)
                    ORDER BY global_position{limit}) TO STDOUT (FORMAT BINARY)",
            tenant = self.tenant
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

    fn target_failure(&self, what: &str, error: &tokio_postgres::Error) -> Failure {
        Failure::from_pg(
            &format!("{what} on target store {:?}", self.target_store),
            error,
        )
    }
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

/// Stage 2: each batch inserted on the target in its own transaction, paced by `rate`.
async fn write_batches(
    target: &mut Client,
    store: &str,
    mut batches: mpsc::Receiver<Batch>,
    written: mpsc::Sender<Written>,
    rate: &mut RateLimiter,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    loop {
        let batch = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            batch = batches.recv() => match batch {
                Some(batch) => batch,
                None => return Ok(()),
            },
        };
        let record = insert_batch(target, store, &batch).await?;
        if written.send(Written { record }).await.is_err() {
            return Ok(());
        }
        let wait = rate.record(batch.rows.len() as u64);
        if !wait.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One target transaction: stage, insert, read back the positions.
async fn insert_batch(
    target: &mut Client,
    store: &str,
    batch: &Batch,
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
    let inserted = transaction
        .query(
            &format!(
                "INSERT INTO events ({EVENT_COLUMNS}, txid)
                 SELECT {EVENT_COLUMNS}, NULL FROM evshift_copy_staging ORDER BY source_position
                 ON CONFLICT (event_id) DO NOTHING
                 RETURNING event_id, global_position"
            ),
            &[],
        )
        .await
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
    mapping_record(batch, &target_positions, store)
}

/// The batch's mappings, in source order.
fn mapping_record(
    batch: &Batch,
    target_positions: &HashMap<Uuid, i64>,
    store: &str,
) -> Result<BatchRecord, Failure> {
    let mut record = BatchRecord {
        events: batch.rows.len() as i64,
        last_source_position: batch.positions.last().copied().unwrap_or(0),
        ..Default::default()
    };
    for (event_id, source_position) in batch.event_ids.iter().zip(&batch.positions) {
        let Some(target_position) = target_positions.get(event_id) else {
            return Err(Failure::Permanent(format!(
                "event {event_id} is neither inserted nor present in target store {store:?}"
            )));
        };
        record.source_positions.push(*source_position);
        record.target_positions.push(*target_position);
        record.event_ids.push(*event_id);
    }
    Ok(record)
}

/// Stage 3: mappings and checkpoints, in batch order. Cancels `stop` if the migration was
/// paused meanwhile.
async fn record_batches(
    control: &mut MigrationStore,
    migration_id: i64,
    mut written: mpsc::Receiver<Written>,
    checkpoint: i64,
    started: Instant,
    stop: &CancellationToken,
) -> Result<PassOutcome, Failure> {
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
        outcome.checkpoint = record.last_source_position;
        if paused {
            stop.cancel();
        }
    }
    Ok(outcome)
}
