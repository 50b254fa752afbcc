//! An event store as the data plane sees it: its id and how to reach it.

use std::sync::Arc;

use crate::config::{StoreConfig, StoreEndpoint};

/// One configured event store.
#[derive(Debug, Clone)]
pub struct Store {
    pub id: Arc<str>,
    pub endpoint: StoreEndpoint,
    pub is_default: bool,
}

impl Store {
    /// Builds the store from validated configuration.
    pub fn from_config(config: &StoreConfig) -> Result<Store, String> {
        Ok(Store {
            id: Arc::from(config.id.as_str()),
            endpoint: StoreEndpoint::parse(&config.url)?,
            is_default: config.default,
        })
    }
}
