//! Query cancellation. Clients get evshift's own BackendKeyData; a CancelRequest carrying it is
//! forwarded to the backend session currently serving that client.

use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;

use crate::backend;
use crate::store::Store;

/// Where a cancel for one client session must go: a backend session on a store.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub store: Arc<Store>,
    pub pid: i32,
    pub secret: i32,
}

#[derive(Debug)]
struct Entry {
    secret: i32,
    target: Option<CancelTarget>,
}

/// All client sessions that can be cancelled, by the process id evshift gave them.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: DashMap<i32, Entry>,
}

/// A client session's registration; dropping it unregisters the session.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
}

impl CancelRegistry {
    /// Registers a new client session under a fresh random key.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let mut rng = rand::thread_rng();
        let secret: i32 = rng.gen();
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(pid) {
                slot.insert(Entry {
                    secret,
                    target: None,
                });
                return CancelHandle {
                    registry: Arc::clone(self),
                    pid,
                    secret,
                };
            }
        }
    }

    /// Forwards a client's CancelRequest; unknown keys are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) {
        let target = match self.sessions.get(&pid) {
            Some(entry) if secret == entry.secret.to_be_bytes() => entry.target.clone(),
            _ => {
                tracing::debug!(pid, "cancel request with an unknown key ignored");
                return;
            }
        };
        let Some(target) = target else { return };
        if let Err(e) = backend::send_cancel(&target.store, target.pid, target.secret).await {
            tracing::warn!(store = %target.store.id, error = %e, "could not forward a cancel request");
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

impl CancelHandle {
    /// Points cancels of this client session at `target` (or nowhere).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        if let Some(mut entry) = self.registry.sessions.get_mut(&self.pid) {
            entry.target = target;
        }
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.pid);
    }
}
