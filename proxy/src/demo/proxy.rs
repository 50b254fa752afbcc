//! evshift for the demo: its configuration file, and the current executable started as
//! `evshift serve --config FILE` in a process of its own.
//!
//! A separate process rather than a task: `serve` installs the global logger and metrics
//! recorder, and with `--keep` evshift must outlive the demo. It runs in its own process group,
//! so a Ctrl-C in the terminal reaches only the demo, which then stops it (or leaves it running
//! with `--keep`).

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The id of the store the demo's tenants live on at first (the default store).
pub const SOURCE_STORE: &str = "shared";

/// The id of the store the biggest tenant moves to.
pub const TARGET_STORE: &str = "dedicated-1";

/// Lag (tenant events not yet on the target) at or under which the cutover starts by itself:
/// under a steady write load the lag is rarely exactly 0.
pub const MAX_LAG_EVENTS: i64 = 500;

/// How long evshift may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where evshift listens and which servers it fronts.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    pub control_socket: PathBuf,
    pub control_url: String,
    pub source_url: String,
    pub target_url: String,
}

impl ProxySettings {
    /// The evshift configuration file (DESIGN §13 key names).
    pub fn config_toml(&self) -> String {
        let store = |id: &str, url: &str, default: bool| {
            let mut table = toml::Table::new();
            table.insert("id".into(), id.into());
            table.insert("url".into(), url.into());
            if default {
                table.insert("default".into(), true.into());
            }
            toml::Value::Table(table)
        };
        let section = |pairs: &[(&str, toml::Value)]| {
            toml::Value::Table(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        };
        let mut config = toml::Table::new();
        config.insert("listen".into(), self.listen.to_string().into());
        config.insert(
            "control_socket".into(),
            self.control_socket.display().to_string().into(),
        );
        config.insert("metrics_listen".into(), self.metrics.to_string().into());
        config.insert("auth".into(), section(&[("method", "trust".into())]));
        config.insert(
            "control".into(),
            section(&[("url", self.control_url.as_str().into())]),
        );
        config.insert(
            "stores".into(),
            toml::Value::Array(vec![
                store(SOURCE_STORE, &self.source_url, true),
                store(TARGET_STORE, &self.target_url, false),
            ]),
        );
        config.insert(
            "migration".into(),
            section(&[
                ("max_lag_events", MAX_LAG_EVENTS.into()),
                ("cutover_timeout_ms", 5000.into()),
                ("verify", "hash".into()),
                ("tail_interval_ms", 100.into()),
            ]),
        );
        config.insert("log".into(), section(&[("level", "info".into())]));
        config.to_string()
    }
}

/// A running `evshift serve`. Stopped (SIGTERM, then SIGKILL) when dropped, unless kept.
#[derive(Debug)]
pub struct Evshift {
    child: Child,
    settings: ProxySettings,
    config_path: PathBuf,
    log_path: PathBuf,
    owned: bool,
}

impl Evshift {
    /// Writes the configuration into `dir` and starts evshift with it; returns once it accepts
    /// connections and its control socket answers.
    pub async fn start(settings: ProxySettings, dir: &Path) -> Result<Evshift> {
        let config_path = dir.join("evshift.toml");
        std::fs::write(&config_path, settings.config_toml())
            .with_context(|| format!("write {}", config_path.display()))?;
        let log_path = dir.join("evshift.log");
        let log =
            File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let binary = std::env::current_exe().context("locate the evshift executable")?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicate the log file")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {} serve", binary.display()))?;
        let mut evshift = Evshift {
            child,
            settings,
            config_path,
            log_path,
            owned: true,
        };
        evshift.wait_until_ready().await?;
        Ok(evshift)
    }

    /// A client URL through evshift (trust: any user name is admitted).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.settings.listen)
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Leaves evshift running when this handle is dropped.
    pub fn keep(&mut self) {
        self.owned = false;
    }

    /// The Prometheus text of `/metrics` (HTTP/1.0, so the body ends at the close).
    pub async fn metrics(&self) -> Result<String> {
        let mut stream = TcpStream::connect(self.settings.metrics)
            .await
            .with_context(|| format!("connect to {}", self.settings.metrics))?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        Ok(body)
    }

    async fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("evshift exited at start-up ({status}): {}", self.log_tail());
            }
            let listening = TcpStream::connect(self.settings.listen).await.is_ok();
            let socket = UnixStream::connect(&self.settings.control_socket)
                .await
                .is_ok();
            if listening && socket {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "evshift did not accept connections within {STARTUP_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last line evshift logged, for a one-line error.
    fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .ok()
            .and_then(|log| {
                log.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("see {}", self.log_path.display()))
    }

    /// SIGTERM (evshift closes its listeners and removes its socket), SIGKILL after 10 s.
    fn stop(&mut self) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            let _ = self.child.kill();
            return;
        };
        // SAFETY: kill has no memory preconditions; pid is our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Evshift {
    fn drop(&mut self) {
        if self.owned {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_valid_for_serve() {
        let settings = ProxySettings {
            listen: "127.0.0.1:6432".parse().unwrap(),
            metrics: "127.0.0.1:9187".parse().unwrap(),
            control_socket: "/tmp/demo dir/evshift.sock".into(),
            control_url: "postgres://postgres@127.0.0.1:5434/evshift".into(),
            source_url: "postgres://postgres@127.0.0.1:5432/app".into(),
            target_url: "postgres://u:p\"w@127.0.0.1:5433/app".into(),
        };
        let text = settings.config_toml();
        let config = evshift_proxy::config::Config::from_toml(&text).expect("a valid config");
        assert_eq!(config.stores.len(), 2);
        assert_eq!(config.default_store().id, SOURCE_STORE);
        assert_eq!(config.migration.settings().max_lag_events, 500);
    }
}
