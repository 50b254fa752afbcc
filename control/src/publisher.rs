//! `RoutingPublisher`: loads the routing table from the control store and publishes it.
//!
//! Several tasks publish tables: the refresher on every change notification and tick, and the
//! control socket right after it wrote a route. Each load-and-store runs under one lock, so a
//! table loaded earlier can never replace one loaded later: whoever wrote a route and then
//! published knows the published table (or a newer one) contains the write.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::control_store::ControlStore;
use crate::error::ControlError;
use crate::routing::RoutingHandle;

/// Bound on one load: a control store that stops answering must not hold the lock (and with
/// it every other publisher) forever.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes routing tables into a [`RoutingHandle`], one load at a time. Cheap to clone;
/// clones share the lock.
#[derive(Clone)]
pub struct RoutingPublisher {
    handle: RoutingHandle,
    order: Arc<Mutex<()>>,
}

impl RoutingPublisher {
    /// A publisher for `handle`. Every task that publishes into `handle` must use a clone of
    /// this one publisher, or the ordering guarantee does not hold.
    pub fn new(handle: RoutingHandle) -> RoutingPublisher {
        RoutingPublisher {
            handle,
            order: Arc::new(Mutex::new(())),
        }
    }

    /// The handle the data plane reads.
    pub fn handle(&self) -> &RoutingHandle {
        &self.handle
    }

    /// Loads the whole table through `store` and publishes it; returns the number of routes.
    /// On failure the published table stays as it was.
    pub async fn reload(&self, store: &ControlStore) -> Result<usize, ControlError> {
        let _turn = self.order.lock().await;
        let table = tokio::time::timeout(LOAD_TIMEOUT, store.load_routing_table())
            .await
            .map_err(|_| ControlError::ControlStoreUnavailable {
                context: format!("load tenant_routing from {}", store.target()),
                cause: format!("no answer within {LOAD_TIMEOUT:?}"),
            })??;
        let routes = table.len();
        self.handle.store(Arc::new(table));
        Ok(routes)
    }
}
