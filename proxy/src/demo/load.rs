//! The demo's application: clients appending and reading through evshift exactly as
//! eventsource-py does, at a steady rate, recording the latency of every append and every
//! acknowledged event.
//!
//! Each client owns its streams (one `Order` aggregate per tenant at a time, a new one every
//! [`STREAM_LENGTH`] events), so no two clients race for a version. An append is the library's
//! transaction: the stream's version read (no tenant id in it), the INSERT with
//! `RETURNING global_position`, COMMIT; it counts as acknowledged once COMMIT returned. Every
//! fourth transaction also reads the stream back (it must hold every acknowledged version),
//! and every tenth reads a page of the tenant's feed with the store's horizon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// Events per stream before a client starts a new one.
const STREAM_LENGTH: i32 = 50;

/// The aggregate type of every appended event.
const AGGREGATE_TYPE: &str = "Order";

/// Pause before a client that lost its connection tries again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// A client URL through evshift.
    pub url: String,
    /// The tenant that moves.
    pub moving: Uuid,
    /// Every other tenant.
    pub others: Vec<Uuid>,
    /// Clients appending to the moving tenant only.
    pub moving_clients: usize,
    /// Clients taking turns over the other tenants.
    pub other_clients: usize,
    /// Transactions per second of each client.
    pub rate_per_client: f64,
}

/// One timed append.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it started, since the load started.
    pub at: Duration,
    /// How long it took, BEGIN to COMMIT acknowledged.
    pub latency: Duration,
    /// Whether it was an append of the moving tenant.
    pub moving: bool,
}

/// Live figures for the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub appends: AtomicU64,
    pub reads: AtomicU64,
    pub errors: AtomicU64,
}

/// What the load did, once stopped.
#[derive(Debug, Default)]
pub struct LoadRecord {
    pub samples: Vec<Sample>,
    /// Acknowledged event ids per tenant.
    pub acknowledged: HashMap<Uuid, Vec<Uuid>>,
    /// Events whose COMMIT failed or was never answered: they may or may not exist.
    pub uncertain: Vec<Uuid>,
    /// The streams the load appended to, per tenant.
    pub streams: HashMap<Uuid, Vec<Uuid>>,
    /// Every error a client saw (failed transactions, reads missing acknowledged events).
    pub errors: Vec<String>,
    pub reads: u64,
}

impl LoadRecord {
    /// Acknowledged appends of every tenant.
    pub fn acknowledged_total(&self) -> usize {
        self.acknowledged.values().map(Vec::len).sum()
    }

    fn absorb(&mut self, client: ClientRecord) {
        self.samples.extend(client.samples);
        for (tenant, ids) in client.acknowledged {
            self.acknowledged.entry(tenant).or_default().extend(ids);
        }
        self.uncertain.extend(client.uncertain);
        for (tenant, streams) in client.streams {
            self.streams.entry(tenant).or_default().extend(streams);
        }
        self.errors.extend(client.errors);
        self.reads += client.reads;
    }
}

/// A running load.
pub struct Load {
    started: Instant,
    started_wall: SystemTime,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<ClientRecord>>,
}

impl Load {
    /// Connects every client through evshift, then starts them.
    pub async fn start(spec: &LoadSpec) -> Result<Load> {
        if spec.others.is_empty() && spec.other_clients > 0 {
            bail!("the load needs other tenants for its other clients");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut connections = Vec::new();
        for _ in 0..spec.moving_clients + spec.other_clients {
            connections.push(Connection::open(&spec.url).await?);
        }
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let period = Duration::from_secs_f64(1.0 / spec.rate_per_client.max(0.1));
        let tasks = connections
            .into_iter()
            .enumerate()
            .map(|(index, connection)| {
                let tenants = client_tenants(spec, index);
                let worker = Worker {
                    url: spec.url.clone(),
                    moving: spec.moving,
                    tenants,
                    started,
                    period,
                    stop: Arc::clone(&stop),
                    counters: Arc::clone(&counters),
                    record: ClientRecord::default(),
                };
                tokio::spawn(worker.run(connection))
            })
            .collect();
        Ok(Load {
            started,
            started_wall,
            stop,
            counters,
            tasks,
        })
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A wall-clock instant (e.g. a control-store timestamp) as time since the load started;
    /// zero before it.
    pub fn offset_of(&self, wall: SystemTime) -> Duration {
        wall.duration_since(self.started_wall).unwrap_or_default()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Stops every client after its current transaction and gathers what they recorded.
    pub async fn stop(self) -> Result<LoadRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let mut record = LoadRecord::default();
        for task in self.tasks {
            record.absorb(
                task.await
                    .map_err(|e| anyhow!("a load client failed: {e}"))?,
            );
        }
        record.samples.sort_by_key(|s| s.at);
        Ok(record)
    }
}

/// The tenants client `index` appends to: the moving one, or its share of the others.
fn client_tenants(spec: &LoadSpec, index: usize) -> Vec<Uuid> {
    if index < spec.moving_clients {
        return vec![spec.moving];
    }
    let nth = index - spec.moving_clients;
    let mine: Vec<Uuid> = spec
        .others
        .iter()
        .copied()
        .skip(nth % spec.others.len())
        .step_by(spec.other_clients.max(1))
        .collect();
    // More clients than tenants: several clients share a tenant, each on its own streams.
    if mine.is_empty() {
        vec![spec.others[nth % spec.others.len()]]
    } else {
        mine
    }
}

/// What one client recorded.
#[derive(Debug, Default)]
struct ClientRecord {
    samples: Vec<Sample>,
    acknowledged: HashMap<Uuid, Vec<Uuid>>,
    uncertain: Vec<Uuid>,
    streams: HashMap<Uuid, Vec<Uuid>>,
    errors: Vec<String>,
    reads: u64,
}

/// A client's open stream of one tenant.
#[derive(Debug, Clone, Copy)]
struct Stream {
    aggregate: Uuid,
    version: i32,
}

/// One client connection with its prepared statements (named, as asyncpg prepares them).
struct Connection {
    client: Client,
    version: Statement,
    insert: Statement,
    read_stream: Statement,
    horizon: Statement,
    read_feed: Statement,
}

impl Connection {
    async fn open(url: &str) -> Result<Connection> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .context("connect through evshift")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let prepare = |sql: &'static str| client.prepare(sql);
        let version = prepare(VERSION_SQL).await?;
        let insert = prepare(INSERT_SQL).await?;
        let read_stream = prepare(READ_STREAM_SQL).await?;
        let horizon = prepare(HORIZON_SQL).await?;
        let read_feed = prepare(READ_FEED_SQL).await?;
        Ok(Connection {
            client,
            version,
            insert,
            read_stream,
            horizon,
            read_feed,
        })
    }
}

/// One client's loop.
struct Worker {
    url: String,
    moving: Uuid,
    tenants: Vec<Uuid>,
    started: Instant,
    period: Duration,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    record: ClientRecord,
}

impl Worker {
    async fn run(mut self, connection: Connection) -> ClientRecord {
        let mut connection = Some(connection);
        let mut streams: HashMap<Uuid, Stream> = HashMap::new();
        let mut ticker = tokio::time::interval(self.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut turn = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let Some(conn) = connection.as_mut() else {
                connection = self.reconnect().await;
                continue;
            };
            let tenant = self.tenants[turn % self.tenants.len()];
            turn += 1;
            let stream = *streams
                .entry(tenant)
                .or_insert_with(|| self.new_stream(tenant));
            let ok = match self.append(conn, tenant, stream).await {
                Some(version) => {
                    let stream = Stream {
                        aggregate: stream.aggregate,
                        version,
                    };
                    streams.insert(tenant, stream);
                    self.read_back(conn, tenant, stream, turn).await
                }
                None => false,
            };
            // A full stream is done; after a failed append its version is uncertain.
            if !ok || stream.version + 1 >= STREAM_LENGTH {
                streams.remove(&tenant);
            }
            if !ok && conn.client.is_closed() {
                connection = None;
            }
        }
        self.record
    }

    fn new_stream(&mut self, tenant: Uuid) -> Stream {
        let aggregate = Uuid::new_v4();
        self.record
            .streams
            .entry(tenant)
            .or_default()
            .push(aggregate);
        Stream {
            aggregate,
            version: 0,
        }
    }

    /// One append; the new version when it was acknowledged.
    async fn append(&mut self, conn: &mut Connection, tenant: Uuid, stream: Stream) -> Option<i32> {
        let event_id = Uuid::new_v4();
        let started = Instant::now();
        match append_event(conn, tenant, stream, event_id).await {
            Ok(version) => {
                self.record.samples.push(Sample {
                    at: started.duration_since(self.started),
                    latency: started.elapsed(),
                    moving: tenant == self.moving,
                });
                self.record
                    .acknowledged
                    .entry(tenant)
                    .or_default()
                    .push(event_id);
                self.counters.appends.fetch_add(1, Ordering::Relaxed);
                Some(version)
            }
            Err(error) => {
                self.record.uncertain.push(event_id);
                self.fail(format!("append to tenant {tenant}: {error:#}"));
                None
            }
        }
    }

    /// Reads the stream back every 4th turn and the tenant's feed every 10th; false on an error.
    async fn read_back(
        &mut self,
        conn: &mut Connection,
        tenant: Uuid,
        stream: Stream,
        turn: usize,
    ) -> bool {
        let mut result = Ok(());
        if turn.is_multiple_of(4) {
            result = read_stream(conn, stream).await;
        }
        if result.is_ok() && turn.is_multiple_of(10) {
            result = read_feed(conn, tenant).await;
        }
        match result {
            Ok(()) => {
                if turn.is_multiple_of(4) || turn.is_multiple_of(10) {
                    self.record.reads += 1;
                    self.counters.reads.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(error) => {
                self.fail(format!("read of tenant {tenant}: {error:#}"));
                false
            }
        }
    }

    fn fail(&mut self, message: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.record.errors.push(message);
    }

    async fn reconnect(&mut self) -> Option<Connection> {
        tokio::time::sleep(RECONNECT_PAUSE).await;
        match Connection::open(&self.url).await {
            Ok(connection) => Some(connection),
            Err(error) => {
                self.fail(format!("reconnect: {error:#}"));
                None
            }
        }
    }
}

/// The eventsource-py append transaction; returns the new version.
async fn append_event(
    conn: &mut Connection,
    tenant: Uuid,
    stream: Stream,
    event_id: Uuid,
) -> Result<i32> {
    let transaction = conn.client.transaction().await.context("BEGIN")?;
    let current: i32 = transaction
        .query_one(&conn.version, &[&stream.aggregate, &AGGREGATE_TYPE])
        .await
        .context("read the stream version")?
        .get(0);
    if current != stream.version {
        bail!(
            "stream {} is at version {current}, expected {}",
            stream.aggregate,
            stream.version
        );
    }
    let version = stream.version + 1;
    let event_type = if version == 1 {
        "OrderCreated"
    } else {
        "ItemAdded"
    };
    let payload = serde_json::json!({ "sku": format!("SKU-{:05}", version * 7919 % 10000),
                                      "quantity": 1 + version % 5 });
    let actor = "demo-client";
    transaction
        .query_one(
            &conn.insert,
            &[
                &event_id,
                &event_type,
                &AGGREGATE_TYPE,
                &stream.aggregate,
                &Some(tenant),
                &actor,
                &version,
                &SystemTime::now(),
                &payload,
            ],
        )
        .await
        .context("insert the event")?;
    transaction.commit().await.context("COMMIT")?;
    Ok(version)
}

/// The stream must hold every version acknowledged so far.
async fn read_stream(conn: &Connection, stream: Stream) -> Result<()> {
    let rows = conn
        .client
        .query(&conn.read_stream, &[&stream.aggregate, &AGGREGATE_TYPE])
        .await
        .context("read the stream")?;
    if rows.len() != stream.version as usize {
        bail!(
            "stream {} returned {} events after {} were acknowledged",
            stream.aggregate,
            rows.len(),
            stream.version
        );
    }
    Ok(())
}

/// A page of the tenant's feed below the horizon of the store that serves it.
async fn read_feed(conn: &Connection, tenant: Uuid) -> Result<()> {
    let horizon: String = conn
        .client
        .query_one(&conn.horizon, &[])
        .await
        .context("fetch the feed horizon")?
        .get(0);
    conn.client
        .query(&conn.read_feed, &[&horizon, &Some(tenant)])
        .await
        .context("read the feed")?;
    Ok(())
}

const VERSION_SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM events \
     WHERE aggregate_id = $1 AND aggregate_type = $2";

const INSERT_SQL: &str = "INSERT INTO events (event_id, event_type, aggregate_type, \
     aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position";

const READ_STREAM_SQL: &str = "SELECT global_position, event_id, event_type, aggregate_type, \
     aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at \
     FROM events WHERE aggregate_id = $1 AND aggregate_type = $2 ORDER BY version ASC";

const HORIZON_SQL: &str = "SELECT eventsource_feed_horizon()";

const READ_FEED_SQL: &str = "SELECT global_position, event_id, event_type, aggregate_type, \
     aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at \
     FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND tenant_id = $2 \
     ORDER BY global_position DESC LIMIT 20";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(others: usize, other_clients: usize) -> LoadSpec {
        LoadSpec {
            url: String::new(),
            moving: Uuid::from_u128(1),
            others: (2..2 + others as u128).map(Uuid::from_u128).collect(),
            moving_clients: 2,
            other_clients,
            rate_per_client: 10.0,
        }
    }

    #[test]
    fn other_clients_share_every_other_tenant() {
        let spec = spec(19, 6);
        assert_eq!(client_tenants(&spec, 0), vec![spec.moving]);
        let mut covered: Vec<Uuid> = (2..8).flat_map(|i| client_tenants(&spec, i)).collect();
        covered.sort();
        let mut expected = spec.others.clone();
        expected.sort();
        assert_eq!(covered, expected, "each other tenant exactly once");
    }

    #[test]
    fn more_clients_than_tenants_share_tenants() {
        let spec = spec(2, 6);
        for index in 2..8 {
            let tenants = client_tenants(&spec, index);
            assert_eq!(tenants.len(), 1);
            assert!(spec.others.contains(&tenants[0]));
        }
    }
}
