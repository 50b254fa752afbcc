//! The listener: accepts client connections and runs one session task per connection.

use std::sync::Arc;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::cancel::CancelRegistry;
use crate::classify::Classifier;
use crate::config::Config;
use crate::directory::AggregateDirectory;
use crate::gate::TenantGate;
use crate::session;
use crate::store::Store;
use crate::wire::messages::{sqlstate, ErrorFields};
use evshift_control::dual_write::DualWriter;
use evshift_control::RoutingHandle;

/// State shared by all sessions of one evshift process. Read-only after start-up except for
/// the cancel registry, which is concurrent.
pub struct Shared {
    pub config: Config,
    pub authenticator: Authenticator,
    pub stores: Vec<Arc<Store>>,
    pub default_store: Arc<Store>,
    pub cancels: Arc<CancelRegistry>,
    /// Where each tenant lives; swapped atomically by the control plane.
    pub routing: RoutingHandle,
    pub classifier: Classifier,
    pub directory: AggregateDirectory,
    /// The per-tenant hold of the cutover; sessions take a pass per tenant they work on.
    pub gate: Arc<TenantGate>,
    /// Copies migrating tenants' committed events to their targets (with a control store).
    pub dual_writer: Option<Arc<DualWriter>>,
}

impl Shared {
    pub fn new(
        config: Config,
        routing: RoutingHandle,
        gate: Arc<TenantGate>,
        dual_writer: Option<Arc<DualWriter>>,
    ) -> anyhow::Result<Shared> {
        let stores = config
            .stores
            .iter()
            .map(|s| Store::from_config(s).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let default_store = stores
            .iter()
            .find(|s| s.is_default)
            .cloned()
            .context("no default store")?;
        Ok(Shared {
            authenticator: Authenticator::new(&config.auth),
            classifier: Classifier::new(&config.tenancy, CLASSIFIER_CACHE_ENTRIES),
            directory: AggregateDirectory::new(
                &stores,
                DIRECTORY_CACHE_ENTRIES,
                config.limits.connect_timeout(),
            ),
            stores,
            default_store,
            cancels: Arc::new(CancelRegistry::default()),
            routing,
            gate,
            dual_writer,
            config,
        })
    }
}

impl Shared {
    /// The index of store `id` in `stores`.
    pub fn store_index(&self, id: &str) -> Option<usize> {
        self.stores.iter().position(|s| &*s.id == id)
    }

    /// The index of the default store.
    pub fn default_store_index(&self) -> usize {
        self.stores.iter().position(|s| s.is_default).unwrap_or(0)
    }
}

/// Distinct statement texts (literal-insensitive) whose classification is kept.
const CLASSIFIER_CACHE_ENTRIES: usize = 10_000;
/// Aggregates and events whose tenant is kept.
const DIRECTORY_CACHE_ENTRIES: usize = 100_000;

/// Binds the configured listen address.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    tokio::spawn(export_cache_counters(Arc::clone(&shared)));
    let slots = Arc::new(Semaphore::new(shared.config.limits.max_client_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: keep serving the sessions we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(refuse_too_many(stream));
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            metrics::gauge!("evshift_client_connections").increment(1.0);
            session::run(shared, stream, peer).await;
            metrics::gauge!("evshift_client_connections").decrement(1.0);
            drop(permit);
        });
    }
}

/// Publishes the classifier cache's counters as Prometheus counters once a second (the cache
/// counts with atomics; the metrics registry is not on the statement path).
async fn export_cache_counters(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let stats = shared.classifier.cache_stats();
        metrics::counter!("evshift_parse_cache_hits_total").absolute(stats.hits);
        metrics::counter!("evshift_parse_cache_misses_total").absolute(stats.misses);
        metrics::gauge!("evshift_parse_cache_entries").set(stats.entries as f64);
    }
}

async fn refuse_too_many(mut stream: TcpStream) {
    let mut out = BytesMut::new();
    ErrorFields::fatal(
        sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    )
    .encode(&mut out);
    let _ = stream.write_all(&out).await;
}
