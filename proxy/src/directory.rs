//! The aggregate directory: which tenant an aggregate (or an event) belongs to.
//!
//! Statements such as eventsource's version read or stream read name only an aggregate. The
//! tenant of an aggregate never changes, and the stores' own `events` tables are the directory:
//! on a miss evshift asks the stores, default first, and caches positive answers in a bounded
//! LRU. An aggregate found nowhere is new: it matches no rows in any store. A lookup that could
//! not reach every store it asks is not a miss: it is an error, so evshift never guesses. Only
//! stores that serve some tenant are asked: a migration's target holds copies until the
//! cutover, so its outage must not fail the tenant's reads on the source.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::store::Store;

/// Who owns an aggregate or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Found, with its tenant (None: rows without a tenant).
    Tenant(Option<Uuid>),
    /// In no store: a new aggregate.
    Nowhere,
}

/// Which key is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Aggregate(Uuid),
    Event(Uuid),
}

/// A lookup that could not ask every store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot look up the tenant of {key}: store \"{store}\" is unreachable: {reason}")]
pub struct LookupError {
    pub key: String,
    pub store: String,
    pub reason: String,
}

/// One store's lookup connection with its prepared statements.
struct LookupConnection {
    client: Client,
    by_aggregate: Statement,
    by_event: Statement,
}

/// Aggregate and event ownership, cached, backed by the stores' `events` tables.
pub struct AggregateDirectory {
    /// Stores in lookup order: the default store first.
    stores: Vec<Arc<Store>>,
    connections: Vec<tokio::sync::Mutex<Option<Arc<LookupConnection>>>>,
    cache: Mutex<LruCache<Key, Option<Uuid>>>,
    connect_timeout: Duration,
}

impl AggregateDirectory {
    pub fn new(stores: &[Arc<Store>], capacity: usize, connect_timeout: Duration) -> Self {
        let mut ordered: Vec<Arc<Store>> = stores.to_vec();
        ordered.sort_by_key(|s| !s.is_default);
        AggregateDirectory {
            connections: ordered
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            stores: ordered,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("capacity is at least 1"),
            )),
            connect_timeout,
        }
    }

    /// The cached owner, if known.
    pub fn cached(&self, key: Key) -> Option<Option<Uuid>> {
        self.cache.lock().ok()?.get(&key).copied()
    }

    /// Records that `key` belongs to `tenant` (learned from an INSERT naming both).
    pub fn remember(&self, key: Key, tenant: Option<Uuid>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(key, tenant);
        }
    }

    /// Finds the owner of `key`, asking on a cache miss the stores for which `serves` is true
    /// (the stores that hold some tenant; a migration target that holds none has only copies).
    pub async fn owner(
        &self,
        key: Key,
        serves: impl Fn(&Store) -> bool,
    ) -> Result<Owner, LookupError> {
        if let Some(tenant) = self.cached(key) {
            metrics::counter!("evshift_aggregate_lookups_total", "result" => "hit").increment(1);
            return Ok(Owner::Tenant(tenant));
        }
        metrics::counter!("evshift_aggregate_lookups_total", "result" => "miss").increment(1);
        for index in 0..self.stores.len() {
            if !serves(&self.stores[index]) {
                continue;
            }
            if let Some(tenant) = self.ask(index, key).await? {
                self.remember(key, tenant);
                return Ok(Owner::Tenant(tenant));
            }
        }
        Ok(Owner::Nowhere)
    }

    /// Asks one store; `Some(tenant)` when it holds the key.
    async fn ask(&self, index: usize, key: Key) -> Result<Option<Option<Uuid>>, LookupError> {
        let store = &self.stores[index];
        let failed = |reason: String| LookupError {
            key: match key {
                Key::Aggregate(id) => format!("aggregate {id}"),
                Key::Event(id) => format!("event {id}"),
            },
            store: store.id.to_string(),
            reason,
        };
        let connection = self.connection(index).await.map_err(&failed)?;
        let (statement, id) = match key {
            Key::Aggregate(id) => (&connection.by_aggregate, id),
            Key::Event(id) => (&connection.by_event, id),
        };
        match connection.client.query_opt(statement, &[&id]).await {
            Ok(row) => Ok(row.map(|r| r.get::<_, Option<Uuid>>(0))),
            Err(e) => {
                // Drop the connection so that the next lookup reconnects.
                *self.connections[index].lock().await = None;
                Err(failed(e.to_string()))
            }
        }
    }

    async fn connection(&self, index: usize) -> Result<Arc<LookupConnection>, String> {
        let mut slot = self.connections[index].lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.client.is_closed() {
                return Ok(Arc::clone(connection));
            }
        }
        let connection = tokio::time::timeout(self.connect_timeout, self.open(index))
            .await
            .map_err(|_| format!("timed out after {:?}", self.connect_timeout))??;
        let connection = Arc::new(connection);
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    async fn open(&self, index: usize) -> Result<LookupConnection, String> {
        let config = self.stores[index]
            .endpoint
            .client_config("evshift-directory");
        let (client, driver) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        let by_aggregate = client
            .prepare("SELECT tenant_id FROM events WHERE aggregate_id = $1 LIMIT 1")
            .await
            .map_err(|e| e.to_string())?;
        let by_event = client
            .prepare("SELECT tenant_id FROM events WHERE event_id = $1 LIMIT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok(LookupConnection {
            client,
            by_aggregate,
            by_event,
        })
    }
}
