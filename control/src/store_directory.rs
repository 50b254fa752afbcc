//! `StoreDirectory`: the configured event stores by id, as the migration plane reaches them.
//!
//! The proxy builds it from `[[stores]]`; the copier, the schema check and the rollback open
//! their own connections through it (tokio-postgres, the store's configured credentials).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::control_store::describe_target;
use crate::error::{describe_pg_error, ControlError};

/// Bound on TCP connect plus authentication to a store.
pub const STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The event stores by id. Cheap to clone.
#[derive(Clone)]
pub struct StoreDirectory {
    stores: Arc<BTreeMap<String, tokio_postgres::Config>>,
    default_store: String,
}

impl StoreDirectory {
    /// `stores` are `(id, url)` pairs; `default_store` must be one of them.
    pub fn new(
        stores: impl IntoIterator<Item = (String, String)>,
        default_store: &str,
    ) -> Result<StoreDirectory, ControlError> {
        let mut map = BTreeMap::new();
        for (id, url) in stores {
            let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| {
                ControlError::InvalidRequest(format!("store {id:?}: invalid url: {e}"))
            })?;
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(STORE_CONNECT_TIMEOUT);
            }
            config.application_name("evshift-migration");
            map.insert(id, config);
        }
        if !map.contains_key(default_store) {
            return Err(ControlError::InvalidRequest(format!(
                "the default store {default_store:?} is not configured"
            )));
        }
        Ok(StoreDirectory {
            stores: Arc::new(map),
            default_store: default_store.to_string(),
        })
    }

    /// The store of tenants without a route.
    pub fn default_store(&self) -> &str {
        &self.default_store
    }

    /// `StoreNotFound` unless `id` is configured.
    pub fn require(&self, id: &str) -> Result<(), ControlError> {
        if self.stores.contains_key(id) {
            return Ok(());
        }
        Err(ControlError::StoreNotFound {
            store: id.to_string(),
            known: self.stores.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// `host:port/database` of store `id`, for messages.
    pub fn describe(&self, id: &str) -> String {
        self.stores
            .get(id)
            .map(describe_target)
            .unwrap_or_else(|| id.to_string())
    }

    /// A new connection to store `id`; its connection task runs on the current runtime.
    pub async fn connect(&self, id: &str) -> Result<Client, ControlError> {
        self.require(id)?;
        let config = &self.stores[id];
        let bound = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(STORE_CONNECT_TIMEOUT);
        let (client, connection) = tokio::time::timeout(bound, config.connect(NoTls))
            .await
            .map_err(|_| {
                ControlError::store_unavailable(id, format!("no answer within {bound:?}"))
            })?
            .map_err(|e| ControlError::store_unavailable(id, describe_pg_error(&e)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_stores() {
        let directory = StoreDirectory::new(
            [
                (
                    "shared".to_string(),
                    "postgres://u@127.0.0.1:1/app".to_string(),
                ),
                (
                    "dedicated".to_string(),
                    "host=127.0.0.1 port=2 user=u dbname=app".to_string(),
                ),
            ],
            "shared",
        )
        .unwrap();
        assert_eq!(directory.default_store(), "shared");
        assert!(directory.require("dedicated").is_ok());
        let error = directory.require("nope").unwrap_err();
        assert_eq!(error.kind(), "StoreNotFoundError");
        assert!(error.to_string().contains("dedicated, shared"), "{error}");
        assert_eq!(directory.describe("dedicated"), "127.0.0.1:2/app");
        assert!(StoreDirectory::new([], "shared").is_err());
    }
}
