//! Set-ups shared by the proxy suites: real clusters, the real evshift binary, real clients.

#![allow(dead_code)]

pub mod python;
pub mod raw;
pub mod routed;

use evshift_tests::{free_port, EvshiftConfig, EvshiftProcess, PgCluster};
use tokio_postgres::{Client, NoTls};

/// One store cluster (id "shared", the default) behind a running evshift.
pub struct SingleStore {
    pub proxy: EvshiftProcess,
    pub store: PgCluster,
}

impl SingleStore {
    /// A store with trust auth and evshift with trust auth.
    pub async fn start() -> SingleStore {
        let store = PgCluster::start("shared").await.expect("start the store");
        SingleStore::start_with(store, |c| c).await
    }

    /// Starts evshift in front of `store`, letting `adjust` change the config.
    pub async fn start_with(
        store: PgCluster,
        adjust: impl FnOnce(EvshiftConfig) -> EvshiftConfig,
    ) -> SingleStore {
        let config = adjust(EvshiftConfig::new(free_port()).with_store(
            "shared",
            &store.url("postgres"),
            true,
        ));
        let proxy = EvshiftProcess::start(&config.to_toml())
            .await
            .expect("start evshift");
        SingleStore { proxy, store }
    }

    /// `host:port` of the proxy.
    pub fn proxy_addr(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// A tokio-postgres connection through evshift as user `app`.
    pub async fn connect(&self) -> Client {
        self.try_connect().await.expect("connect through evshift")
    }

    pub async fn try_connect(&self) -> Result<Client, tokio_postgres::Error> {
        connect_url(&self.proxy.url("app", "postgres")).await
    }

    /// A direct connection to the store, bypassing evshift: for assertions.
    pub async fn direct(&self) -> Client {
        self.store
            .connect("postgres")
            .await
            .expect("connect to the store")
    }
}

/// Connects with tokio-postgres and drives the connection in a task.
pub async fn connect_url(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
