//! The demo's client of evshift's control socket: the same request lines `evshift ctl` sends
//! (`migrate`, `status`, `audit`, `verify`, `routes`), one connection per request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use uuid::Uuid;

use evshift_control::{
    AuditEntry, MigrationRef, MigrationStatus, OptionOverrides, VerificationReport, VerifyMode,
};
use evshift_proxy::control_socket::protocol::{Reply, Request, RouteView};

/// How the demo signs its commands in the audit log.
const OPERATOR: &str = "evshift demo";

/// How long a reply may take; a full verification reads the tenant on both stores.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// A control socket to send requests to.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    pub fn new(socket: &Path) -> ControlClient {
        ControlClient {
            socket: socket.to_path_buf(),
        }
    }

    /// Starts migrating `tenant` to `target`, verifying at `verify` under the cutover's hold.
    pub async fn migrate(
        &self,
        tenant: Uuid,
        target: &str,
        verify: VerifyMode,
    ) -> Result<MigrationStatus> {
        self.call(&Request::Migrate {
            tenant,
            to: target.to_string(),
            overrides: OptionOverrides {
                verify: Some(verify),
                ..OptionOverrides::default()
            },
            operator: Some(OPERATOR.into()),
        })
        .await
    }

    /// The migration's status.
    pub async fn status(&self, id: i64) -> Result<MigrationStatus> {
        self.call(&Request::Status {
            migration: Some(MigrationRef::Id(id)),
        })
        .await
    }

    /// The migration's audit log, oldest first.
    pub async fn audit(&self, id: i64) -> Result<Vec<AuditEntry>> {
        self.call(&Request::Audit {
            migration: MigrationRef::Id(id),
        })
        .await
    }

    /// Compares the migration's target with its source at `level`.
    pub async fn verify(&self, id: i64, level: VerifyMode) -> Result<VerificationReport> {
        self.call(&Request::Verify {
            migration: MigrationRef::Id(id),
            level: Some(level),
            operator: Some(OPERATOR.into()),
        })
        .await
    }

    /// The running evshift's routing table.
    pub async fn routes(&self) -> Result<Vec<RouteView>> {
        self.call(&Request::Routes { tenant: None }).await
    }

    /// Sends one request and decodes the result; an error reply is an error naming its kind.
    async fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let line = tokio::time::timeout(REPLY_TIMEOUT, self.exchange(&request.to_line()))
            .await
            .map_err(|_| anyhow!("no reply from {} in time", self.socket.display()))??;
        let reply: Reply = serde_json::from_str(&line)
            .with_context(|| format!("unexpected reply from {}", self.socket.display()))?;
        match reply {
            Reply::Ok(result) => serde_json::from_value(result)
                .with_context(|| format!("unexpected result from {}", self.socket.display())),
            Reply::Error(error) => Err(anyhow!("{}: {}", error.kind, error.message)),
        }
    }

    async fn exchange(&self, request: &str) -> Result<String> {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connect to the control socket {}", self.socket.display()))?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .with_context(|| format!("send to {}", self.socket.display()))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .with_context(|| format!("read the reply from {}", self.socket.display()))?;
        if line.is_empty() {
            return Err(anyhow!(
                "{} closed the connection without a reply",
                self.socket.display()
            ));
        }
        Ok(line.trim_end().to_string())
    }
}
