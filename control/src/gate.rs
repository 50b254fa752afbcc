//! `TrafficGate`: how the migration plane holds one tenant's traffic in the data plane.
//!
//! The cutover (DESIGN §8) closes the gate of the migrating tenant, waits until its in-flight
//! transactions end, swaps the route and opens the gate again. The data plane implements this
//! trait; the control crate only calls it, so it never sees the wire protocol.

use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

/// The gate has not become idle in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant} still has transactions in flight after {waited:?}")]
pub struct GateTimeout {
    pub tenant: Uuid,
    pub waited: Duration,
}

/// Per-tenant hold of new statements, implemented by the proxy.
pub trait TrafficGate: Send + Sync {
    /// From now on, new statements of `tenant` wait in evshift (other tenants flow).
    fn hold(&self, tenant: Uuid) -> BoxFuture<'_, ()>;

    /// Resolves once no transaction of `tenant` is in flight, or fails after `timeout`.
    fn wait_idle(&self, tenant: Uuid, timeout: Duration) -> BoxFuture<'_, Result<(), GateTimeout>>;

    /// Lets the held statements of `tenant` go, routed by the routing table in force then.
    fn release(&self, tenant: Uuid);
}
