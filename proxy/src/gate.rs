//! `TenantGate`: the per-tenant hold of the cutover (DESIGN §8), and the count of each
//! tenant's transactions in flight that the hold waits for.
//!
//! A session takes a [`TenantPass`] for every tenant its unit belongs to before it sends the
//! unit, and keeps it until the session is idle again (no transaction, no answer owed). While
//! a tenant's gate is closed, a session without a pass waits for it; a session holding one
//! (its transaction is in flight) goes on, so in-flight transactions run to their end. Other
//! tenants are never looked at.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Notify;
use uuid::Uuid;

use evshift_control::telemetry::HeldStatement;
use evshift_control::{GateTimeout, TrafficGate};

/// One tenant's gate.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Woken when the gate opens.
    opened: Notify,
    /// Woken when the last pass of a held tenant is dropped.
    idle: Notify,
}

#[derive(Default)]
struct SlotState {
    closed: bool,
    /// Passes out: sessions with a unit or transaction of the tenant in flight.
    passes: usize,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // The critical sections cannot panic; a poisoned lock still holds consistent counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The gates of all tenants of this process. Share it with an `Arc`.
#[derive(Default)]
pub struct TenantGate {
    slots: Mutex<HashMap<Uuid, Arc<Slot>>>,
    /// Statements waiting at a closed gate now (all tenants).
    waiting: AtomicI64,
}

/// A session's right to send statements of one tenant; dropping it ends the session's
/// in-flight work for that tenant.
pub struct TenantPass {
    slot: Arc<Slot>,
}

impl Drop for TenantPass {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        state.passes -= 1;
        if state.passes == 0 && state.closed {
            self.slot.idle.notify_waiters();
        }
    }
}

/// One statement waiting at a closed gate, counted until dropped.
struct Waiting<'a> {
    count: &'a AtomicI64,
    _metric: HeldStatement,
}

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicI64) -> Waiting<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting {
            count,
            _metric: HeldStatement::new(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a session got its pass.
pub enum Admission {
    /// The gate was open.
    Immediate(TenantPass),
    /// The session waited at a closed gate; the route may have changed meanwhile.
    AfterHold(TenantPass),
}

impl TenantGate {
    pub fn new() -> TenantGate {
        TenantGate::default()
    }

    fn slot(&self, tenant: Uuid) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(tenant).or_default())
    }

    /// A pass for `tenant`, once its gate is open.
    pub async fn enter(&self, tenant: Uuid) -> Admission {
        let slot = self.slot(tenant);
        // Counted while waiting; dropped with this future if the client goes away meanwhile.
        let mut waited: Option<(Instant, Waiting<'_>)> = None;
        loop {
            // Registered before the check, so an opening in between is not missed.
            let opened = slot.opened.notified();
            {
                let mut state = slot.lock();
                if !state.closed {
                    state.passes += 1;
                    drop(state);
                    let pass = TenantPass {
                        slot: Arc::clone(&slot),
                    };
                    return match waited {
                        None => Admission::Immediate(pass),
                        Some((since, _counted)) => {
                            tracing::debug!(tenant_id = %tenant, held_ms = since.elapsed().as_millis() as u64,
                                "statement released by the tenant gate");
                            Admission::AfterHold(pass)
                        }
                    };
                }
            }
            if waited.is_none() {
                waited = Some((Instant::now(), Waiting::new(&self.waiting)));
            }
            opened.await;
        }
    }

    /// Statements waiting at a closed gate now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Closes `tenant`'s gate.
    pub fn close(&self, tenant: Uuid) {
        self.slot(tenant).lock().closed = true;
        tracing::info!(tenant_id = %tenant, operation = "cutover", "tenant gate closed");
    }

    /// Opens `tenant`'s gate; the statements waiting go on.
    pub fn open(&self, tenant: Uuid) {
        let slot = self.slot(tenant);
        slot.lock().closed = false;
        slot.opened.notify_waiters();
        tracing::info!(tenant_id = %tenant, operation = "cutover", "tenant gate opened");
    }

    /// Resolves when no pass of `tenant` is out, or fails after `timeout`.
    pub async fn idle(&self, tenant: Uuid, timeout: Duration) -> Result<(), GateTimeout> {
        let slot = self.slot(tenant);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = slot.idle.notified();
            if slot.lock().passes == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return Err(GateTimeout {
                    tenant,
                    waited: timeout,
                });
            }
        }
    }

    /// Passes of `tenant` out now.
    pub fn in_flight(&self, tenant: Uuid) -> usize {
        self.slot(tenant).lock().passes
    }
}

impl TrafficGate for TenantGate {
    fn hold(&self, tenant: Uuid) -> BoxFuture<'_, ()> {
        self.close(tenant);
        Box::pin(async {})
    }

    fn wait_idle(&self, tenant: Uuid, timeout: Duration) -> BoxFuture<'_, Result<(), GateTimeout>> {
        Box::pin(self.idle(tenant, timeout))
    }

    fn release(&self, tenant: Uuid) {
        self.open(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Uuid {
        Uuid::from_u128(7)
    }

    #[tokio::test]
    async fn an_open_gate_admits_at_once_and_counts_the_pass() {
        let gate = TenantGate::new();
        let pass = gate.enter(tenant()).await;
        assert!(matches!(pass, Admission::Immediate(_)));
        assert_eq!(gate.in_flight(tenant()), 1);
        drop(pass);
        assert_eq!(gate.in_flight(tenant()), 0);
    }

    #[tokio::test]
    async fn a_closed_gate_holds_new_statements_until_it_opens() {
        let gate = Arc::new(TenantGate::new());
        gate.close(tenant());
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(
                async move { matches!(gate.enter(tenant()).await, Admission::AfterHold(_)) },
            )
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        gate.open(tenant());
        assert!(waiter.await.unwrap());
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_is_no_longer_counted() {
        let gate = Arc::new(TenantGate::new());
        gate.close(tenant());
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _ = gate.enter(tenant()).await;
            })
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test]
    async fn other_tenants_pass_a_closed_gate() {
        let gate = TenantGate::new();
        gate.close(tenant());
        let other = gate.enter(Uuid::from_u128(8)).await;
        assert!(matches!(other, Admission::Immediate(_)));
    }

    #[tokio::test]
    async fn idle_waits_for_the_passes_out_and_times_out_otherwise() {
        let gate = Arc::new(TenantGate::new());
        let pass = gate.enter(tenant()).await;
        gate.close(tenant());
        let short = gate.idle(tenant(), Duration::from_millis(20)).await;
        assert!(short.is_err());
        let idle = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.idle(tenant(), Duration::from_secs(30)).await })
        };
        drop(pass);
        assert!(idle.await.unwrap().is_ok());
    }
}
