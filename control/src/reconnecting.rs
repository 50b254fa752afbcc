//! `ReconnectingControlStore`: a control-store connection for occasional commands, re-opened
//! when it broke.
//!
//! The control socket writes through it. A command that finds the control store gone fails
//! with `ControlStoreUnavailable`; the next command tries a fresh connection, so commands work
//! again as soon as the control store is back, without restarting evshift.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::control_store::ControlStore;
use crate::error::ControlError;

/// A lazily (re)connected [`ControlStore`].
pub struct ReconnectingControlStore {
    url: String,
    current: Mutex<Option<Arc<ControlStore>>>,
}

impl ReconnectingControlStore {
    /// Connects on first use.
    pub fn new(url: String) -> ReconnectingControlStore {
        ReconnectingControlStore {
            url,
            current: Mutex::new(None),
        }
    }

    /// Starts with an open connection (the one start-up used).
    pub fn with_connection(url: String, store: ControlStore) -> ReconnectingControlStore {
        ReconnectingControlStore {
            url,
            current: Mutex::new(Some(Arc::new(store))),
        }
    }

    /// The open connection, or a new one if there is none or it was closed.
    pub async fn get(&self) -> Result<Arc<ControlStore>, ControlError> {
        let mut current = self.current.lock().await;
        if let Some(store) = current.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(store));
        }
        *current = None;
        let store = Arc::new(ControlStore::connect(&self.url).await?);
        *current = Some(Arc::clone(&store));
        Ok(store)
    }
}
