//! The routing refresher: keeps this process's routing table in step with the control store.
//!
//! Another evshift instance (or an operator with psql) may change `tenant_routing` at any time.
//! The refresher holds its own connection that listens on `evshift_routing`; the control
//! store's trigger notifies it on every change, and it reloads the whole table. A periodic
//! reload backs this up, in case a notification was lost (a reconnect, a full buffer).
//!
//! While the control store is unreachable the last table stays in force: routing never stops
//! because the control store did. The refresher reconnects with capped exponential backoff,
//! and reloads as soon as it is back (a change made meanwhile is picked up then).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::control_store::{ControlStore, RoutingNotifications};
use crate::error::ControlError;
use crate::publisher::RoutingPublisher;
use crate::routing::RoutingHandle;

/// First delay before reconnecting.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// Longest delay between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Shortest periodic reload interval; `tokio::time::interval` panics on zero.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Starts the refresher for `handle`: reloads on every change notification and every
/// `interval`. It runs until the task is aborted, and never panics.
pub fn spawn_routing_refresher(
    control_url: String,
    handle: RoutingHandle,
    interval: Duration,
) -> JoinHandle<()> {
    spawn_routing_refresher_with(control_url, RoutingPublisher::new(handle), interval)
}

/// [`spawn_routing_refresher`] publishing through `publisher`, which other writers of the
/// same handle share (see [`RoutingPublisher`] for why they must).
pub fn spawn_routing_refresher_with(
    control_url: String,
    publisher: RoutingPublisher,
    interval: Duration,
) -> JoinHandle<()> {
    let refresher = Refresher {
        url: control_url,
        publisher,
        interval: interval.max(MIN_INTERVAL),
        backoff: Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX),
    };
    tokio::spawn(refresher.run())
}

/// The refresher's state across connections.
struct Refresher {
    url: String,
    publisher: RoutingPublisher,
    interval: Duration,
    backoff: Backoff,
}

impl Refresher {
    /// Connection after connection, forever.
    async fn run(mut self) {
        loop {
            let error = self.connected_session().await;
            let delay = self.backoff.next_delay();
            tracing::warn!(
                kind = error.kind(),
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "routing refresher lost the control store; keeping the last routing table"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection's life: connect, LISTEN, load, then reload on each notification and
    /// tick. Returns why it ended.
    async fn connected_session(&mut self) -> ControlError {
        let (store, mut notifications) =
            match ControlStore::connect_with_notifications(&self.url).await {
                Ok(connected) => connected,
                Err(error) => return error,
            };
        // LISTEN before loading: a change committed after the load is then notified, and one
        // committed before it is in the table.
        if let Err(error) = store.listen_for_routing_changes().await {
            return error;
        }
        match self.publisher.reload(&store).await {
            Ok(routes) => {
                tracing::info!(store = %store.target(), routes, "routing refresher connected")
            }
            Err(error) => return error,
        }
        self.backoff.reset();
        self.follow_changes(&store, &mut notifications).await
    }

    /// Reloads on every notification and tick until the connection fails.
    async fn follow_changes(
        &mut self,
        store: &ControlStore,
        notifications: &mut RoutingNotifications,
    ) -> ControlError {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; the table was just loaded.
        ticks.tick().await;
        loop {
            tokio::select! {
                note = notifications.recv() => {
                    if note.is_none() {
                        return ControlError::ControlStoreUnavailable {
                            context: format!("listen on {}", store.target()),
                            cause: "connection closed".into(),
                        };
                    }
                    // A burst of changes costs one reload.
                    while notifications.try_recv().is_ok() {}
                }
                _ = ticks.tick() => {}
            }
            match self.publisher.reload(store).await {
                Ok(routes) => tracing::debug!(routes, "routing table reloaded"),
                Err(error) => return error,
            }
        }
    }
}
