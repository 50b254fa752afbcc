//! `Proxy`: the real evshift binary in front of the scenario's stores, with the helpers the
//! scenarios need: `evshift ctl`, its memory and CPU, and its Prometheus counters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use evshift_tests::{free_port, EvshiftConfig, EvshiftProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procfs::{self, Memory};

/// The user clients connect to evshift as (trust authentication).
const CLIENT_USER: &str = "bench";
/// Bound on one metrics scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running evshift.
pub struct Proxy {
    binary: PathBuf,
    config: EvshiftConfig,
    process: EvshiftProcess,
}

impl Proxy {
    /// Starts `binary` with the stores `(id, url)` (the first is the default), an optional
    /// control store, `[log] level = "warn"` and the extra top-level TOML sections `extra`
    /// (e.g. a `[migration]` table; a `[log]` table there replaces the default one).
    pub async fn start(
        binary: &Path,
        stores: &[(&str, String)],
        control_url: Option<&str>,
        extra: &str,
    ) -> Result<Proxy> {
        let mut config = EvshiftConfig::new(free_port());
        for (i, (id, url)) in stores.iter().enumerate() {
            config = config.with_store(id, url, i == 0);
        }
        if let Some(url) = control_url {
            config = config.with_control(url);
        }
        let mut table: toml::Table = config
            .to_toml()
            .parse()
            .context("the harness writes TOML")?;
        let quiet: toml::Table = "[log]\nlevel = \"warn\"\n"
            .parse()
            .context("the default [log] section")?;
        let extra: toml::Table = extra.parse().context("extra evshift configuration")?;
        table.extend(quiet);
        table.extend(extra);
        let process = EvshiftProcess::start_with_binary(binary, &table.to_string())
            .await
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Proxy {
            binary: binary.to_path_buf(),
            config,
            process,
        })
    }

    /// The URL clients use for database `db`.
    pub fn url(&self, db: &str) -> String {
        self.process.url(CLIENT_USER, db)
    }

    /// Everything evshift wrote to stderr and stdout so far (its log).
    pub fn log(&self) -> String {
        self.process.log_contents()
    }

    /// The process id.
    pub fn pid(&self) -> Result<u32> {
        self.process.pid().context("evshift is not running")
    }

    /// VmRSS and VmHWM.
    pub fn memory(&self) -> Result<Memory> {
        procfs::memory(self.pid()?)
    }

    /// CPU seconds used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        Ok(procfs::process_cpu_seconds(self.pid()?))
    }

    /// `evshift ctl --socket SOCKET --json ARGS...`: the `"ok"` value of the JSON reply, or an
    /// error with the command's one-line message.
    pub async fn ctl(&self, args: &[&str]) -> Result<serde_json::Value> {
        let output = tokio::process::Command::new(&self.binary)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.config.control_socket)
            .arg("--json")
            .args(args)
            .output()
            .await
            .context("run evshift ctl")?;
        if !output.status.success() {
            bail!(
                "evshift ctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let reply: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("evshift ctl {}: the reply is not JSON", args.join(" ")))?;
        Ok(reply["ok"].clone())
    }

    /// The value of the Prometheus counter or gauge `name` (0 when it is not exported yet).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(&self.config.metrics_listen))
            .await
            .context("the metrics endpoint did not answer in time")??;
        Ok(metric_value(&text, name).unwrap_or(0.0))
    }
}

async fn scrape(address: &str) -> Result<String> {
    let mut stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to the metrics endpoint {address}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The value of the first sample of `name` without labels (or with any labels) in a
/// Prometheus text exposition.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once('}')?.1,
                None => rest,
            };
            rest.split_whitespace().next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_found() {
        let text = "# HELP x\nevshift_parse_cache_hits_total 42\nevshift_parse_cache_hits_total_other 1\nfoo{a=\"b\"} 3.5\n";
        assert_eq!(
            metric_value(text, "evshift_parse_cache_hits_total"),
            Some(42.0)
        );
        assert_eq!(metric_value(text, "foo"), Some(3.5));
        assert_eq!(metric_value(text, "bar"), None);
    }
}
