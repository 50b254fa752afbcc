//! `CopyBench`: a source and a target store and a control store, for timing one tenant's copy
//! two ways: evshift's bulk copy (`evshift ctl migrate`, the bulk pass as the control store
//! records it) and the raw single-stream pipe `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` into
//! `COPY events FROM STDIN (FORMAT BINARY)`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use evshift_tests::{apply_event_store_schema, PgCluster};
use futures::{SinkExt, TryStreamExt};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use super::proxy::Proxy;
use crate::procfs;

/// The database used on every cluster.
const DB: &str = "postgres";
/// Stream length of the seeded tenants.
const EVENTS_PER_STREAM: i64 = 10;
/// Pause between two looks at the migration's progress.
const POLL: Duration = Duration::from_millis(50);
/// The columns copied (everything but global_position and txid, as the copier does).
const COLUMNS: &str = "event_id, aggregate_id, aggregate_type, event_type, tenant_id, actor_id, version, timestamp, payload, created_at";

/// One timed copy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CopyRun {
    pub events: u64,
    pub seconds: f64,
    /// CPU seconds of everything involved (servers, evshift or the pipe).
    pub cpu_seconds: f64,
    /// evshift's VmHWM after the bulk pass, kB (evshift runs only).
    pub peak_rss_kb: Option<u64>,
}

impl CopyRun {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The clusters of a copy benchmark.
pub struct CopyBench {
    source: PgCluster,
    target: PgCluster,
    control: PgCluster,
    runs: usize,
}

impl CopyBench {
    /// Three clusters; the event-store schema (all indexes) on source and target.
    pub async fn start() -> Result<CopyBench> {
        let (source, target, control) = tokio::try_join!(
            PgCluster::start("bench-source"),
            PgCluster::start("bench-target"),
            PgCluster::start("bench-control")
        )?;
        apply_event_store_schema(&source.connect(DB).await?).await?;
        apply_event_store_schema(&target.connect(DB).await?).await?;
        Ok(CopyBench {
            source,
            target,
            control,
            runs: 0,
        })
    }

    /// Seeds each `(tenant, events)` in the source. The secondary indexes are dropped first and
    /// built once at the end (re-applying the schema), which is several times faster than
    /// maintaining them row by row for millions of events.
    pub async fn seed(&self, tenants: &[(Uuid, u64)]) -> Result<()> {
        let client = self.source.connect(DB).await?;
        drop_secondary_indexes(&client).await?;
        for (tenant, events) in tenants {
            insert_events(&client, *tenant, *events).await?;
        }
        client
            .batch_execute("SET maintenance_work_mem = '256MB'")
            .await?;
        apply_event_store_schema(&client).await?;
        client.batch_execute("VACUUM ANALYZE events").await?;
        Ok(())
    }

    /// The raw pipe of `tenant` into the emptied target.
    pub async fn pipe(&self, tenant: Uuid, events: u64) -> Result<CopyRun> {
        self.reset_target().await?;
        let source = connect_tcp(&self.source).await?;
        let target = connect_tcp(&self.target).await?;
        let cpu_before =
            self.cluster_cpu(&[&self.source, &self.target])? + procfs::own_cpu_seconds();
        let started = Instant::now();
        let rows = source
            .copy_out(&format!(
                "COPY (SELECT {COLUMNS} FROM events WHERE tenant_id = '{tenant}' ORDER BY global_position) TO STDOUT (FORMAT BINARY)"
            ))
            .await?;
        let sink = target
            .copy_in(&format!(
                "COPY events ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ))
            .await?;
        futures::pin_mut!(rows);
        futures::pin_mut!(sink);
        while let Some(chunk) = rows.try_next().await? {
            sink.feed(chunk).await?;
        }
        sink.finish().await?;
        let seconds = started.elapsed().as_secs_f64();
        drop((source, target));
        let cpu = self.cluster_cpu(&[&self.source, &self.target])? + procfs::own_cpu_seconds()
            - cpu_before;
        self.expect_target_count(events).await?;
        Ok(CopyRun {
            events,
            seconds,
            cpu_seconds: cpu,
            peak_rss_kb: None,
        })
    }

    /// evshift's bulk copy of `tenant` into the emptied target, with a fresh evshift process
    /// and control database, batches of `batch_size`.
    pub async fn evshift(
        &mut self,
        binary: &std::path::Path,
        tenant: Uuid,
        events: u64,
        batch_size: usize,
    ) -> Result<CopyRun> {
        self.reset_target().await?;
        self.runs += 1;
        let control_db = format!("control_{}", self.runs);
        self.control.create_database(&control_db).await?;
        let stores = [
            ("source", self.source.url(DB)),
            ("target", self.target.url(DB)),
        ];
        let proxy = Proxy::start(
            binary,
            &stores,
            Some(&self.control.url(&control_db)),
            &format!("[migration]\nbatch_size = {batch_size}\n"),
        )
        .await?;
        let clusters = [&self.source, &self.target, &self.control];
        let cpu_before = self.cluster_cpu(&clusters)? + proxy.cpu_seconds()?;
        let status = proxy
            .ctl(&["migrate", &tenant.to_string(), "--to", "target"])
            .await?;
        let id = status["id"]
            .as_i64()
            .context("migrate replied without an id")?;
        let control = self.control.connect(&control_db).await?;
        let seconds = wait_for_bulk_pass(&control, id, events).await?;
        let peak_rss_kb = proxy.memory()?.peak_kb;
        let cpu = self.cluster_cpu(&clusters)? + proxy.cpu_seconds()? - cpu_before;
        drop(proxy);
        self.expect_target_count(events).await?;
        Ok(CopyRun {
            events,
            seconds,
            cpu_seconds: cpu,
            peak_rss_kb: Some(peak_rss_kb),
        })
    }

    async fn reset_target(&self) -> Result<()> {
        self.target
            .connect(DB)
            .await?
            .batch_execute("TRUNCATE events, snapshots; CHECKPOINT")
            .await
            .context("empty the target")?;
        self.source
            .connect(DB)
            .await?
            .batch_execute("CHECKPOINT")
            .await?;
        Ok(())
    }

    async fn expect_target_count(&self, events: u64) -> Result<()> {
        let copied: i64 = self
            .target
            .connect(DB)
            .await?
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0);
        if copied as u64 != events {
            bail!("the target holds {copied} events after the copy, expected {events}");
        }
        Ok(())
    }

    fn cluster_cpu(&self, clusters: &[&PgCluster]) -> Result<f64> {
        clusters
            .iter()
            .map(|c| procfs::cluster_cpu_seconds(c.data_dir()))
            .sum()
    }
}

/// Drops the indexes of `events` that back no constraint (the schema creates them again).
async fn drop_secondary_indexes(client: &Client) -> Result<()> {
    let rows = client
        .query(
            "SELECT i.indexrelid::regclass::text FROM pg_index i
              WHERE i.indrelid = 'events'::regclass
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            &[],
        )
        .await
        .context("list the secondary indexes of events")?;
    for row in rows {
        let index: String = row.get(0);
        client.batch_execute(&format!("DROP INDEX {index}")).await?;
    }
    Ok(())
}

/// Inserts `events` events of `tenant`: streams of 10, payloads like the harness's, in one
/// server-side statement with bigint arithmetic (sizes up to 10M and more).
async fn insert_events(client: &Client, tenant: Uuid, events: u64) -> Result<()> {
    let events = i64::try_from(events).context("too many events")?;
    client
        .execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, tenant_id,
                                 actor_id, version, timestamp, payload, created_at)
             SELECT md5($1::uuid::text || '/event/' || n)::uuid,
                    md5($1::uuid::text || '/order/' || n / $3::bigint)::uuid, 'Order',
                    CASE WHEN n % $3::bigint = 0 THEN 'OrderCreated' ELSE 'ItemAdded' END, $1::uuid,
                    'user-' || (n % 13), (n % $3::bigint + 1)::int,
                    timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => n::float8),
                    jsonb_build_object('order_no', n / $3::bigint, 'sku', 'SKU-' || (n * 7919 % 1000),
                                       'quantity', 1 + n % 5, 'note', repeat('x', (n % 16)::int)),
                    timestamptz '2024-01-01 00:00:00.005+00' + make_interval(secs => n::float8)
               FROM generate_series(0::bigint, $2::bigint - 1) AS g(n)",
            &[&tenant, &events, &EVENTS_PER_STREAM],
            )
        .await
        .with_context(|| format!("seed {events} events of tenant {tenant}"))?;
    Ok(())
}

/// Polls the control store until migration `id` finished its bulk pass; its duration
/// (`started_at` to `bulk_copy_completed_at`) in seconds.
async fn wait_for_bulk_pass(control: &Client, id: i64, events: u64) -> Result<f64> {
    // Generous: a slow, shared machine copies at a few thousand events per second at worst.
    let deadline = Instant::now() + Duration::from_secs(120 + events / 2_000);
    loop {
        let row = control
            .query_one(
                "SELECT state, error_message, \
                        extract(epoch FROM bulk_copy_completed_at - started_at)::float8 \
                   FROM tenant_migrations WHERE id = $1",
                &[&id],
            )
            .await
            .context("read the migration's state")?;
        let state: String = row.get(0);
        if let Some(seconds) = row.get::<_, Option<f64>>(2) {
            return Ok(seconds);
        }
        if state == "FAILED" || state == "ROLLED_BACK" {
            bail!(
                "migration {id} ended {state}: {}",
                row.get::<_, Option<String>>(1).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("migration {id} did not finish its bulk pass in time (state {state})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A TCP connection, as the copier's and psql's would be.
async fn connect_tcp(cluster: &PgCluster) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(&cluster.url(DB), NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
