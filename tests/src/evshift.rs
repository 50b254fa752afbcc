//! `EvshiftProcess`: the real `evshift` binary, run as a child process for end-to-end tests.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::net::TcpStream;

/// How long `start` and `restart` wait for the listener.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// A running `evshift serve --config FILE` child process. Dropping it kills the process.
///
/// The listen address is read from the configuration's `listen` key, so that is where readiness
/// is probed and where clients should connect: it must be a concrete `host:port` (not port 0).
/// The process's stdout and stderr go to a log file, printed to stderr when the process is
/// dropped during a panic (a failing test).
///
/// The child is killed if the thread that spawned it exits (Linux parent-death signal), so that a
/// test binary that dies never leaves a proxy running. Call `start` and `restart` from the test's
/// body or a runtime task, not from a short-lived thread such as `spawn_blocking`.
pub struct EvshiftProcess {
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    addr: SocketAddr,
    control_socket: Option<PathBuf>,
    child: Option<Child>,
    // Last field: deleted after `Drop::drop` killed the process.
    _dir: TempDir,
}

/// The configuration keys the harness itself needs.
#[derive(Debug, Deserialize)]
struct ConfigKeys {
    listen: String,
    control_socket: Option<PathBuf>,
}

impl EvshiftProcess {
    /// Writes `config_toml` to a file and starts the binary found by [`evshift_binary`] with it,
    /// returning once the listen address accepts TCP connections (at most ~10 s).
    pub async fn start(config_toml: &str) -> Result<EvshiftProcess> {
        EvshiftProcess::start_with_binary(&evshift_binary()?, config_toml).await
    }

    /// [`EvshiftProcess::start`] with an explicit binary (for instance a stand-in in harness
    /// tests). It is invoked as `<binary> serve --config FILE`.
    pub async fn start_with_binary(binary: &Path, config_toml: &str) -> Result<EvshiftProcess> {
        let keys: ConfigKeys = toml::from_str(config_toml)
            .context("the evshift configuration is not valid TOML or lacks `listen`")?;
        let addr = resolve(&keys.listen)?;
        let dir = tempfile::Builder::new()
            .prefix("evshift-proc-")
            .tempdir()
            .context("create the evshift process directory")?;
        let config_path = dir.path().join("evshift.toml");
        std::fs::write(&config_path, config_toml)
            .with_context(|| format!("write {}", config_path.display()))?;
        let mut process = EvshiftProcess {
            binary: binary.to_path_buf(),
            log_path: dir.path().join("evshift.log"),
            config_path,
            addr,
            control_socket: keys.control_socket,
            child: None,
            _dir: dir,
        };
        process.spawn_and_wait().await?;
        Ok(process)
    }

    /// The address clients connect to (the configuration's `listen`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `postgres://user@HOST:PORT/db` for the proxy.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{user}@{}:{}/{db}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// The configuration file the process runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the process wrote to stdout and stderr so far, across restarts.
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and reaps it. Does nothing if it is
    /// not running.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // kill() fails only if the process was already reaped, which wait() then reports.
        let _ = child.kill();
        child.wait().context("reap the evshift process")?;
        Ok(())
    }

    /// Kills the process if it runs, then starts it again with the same configuration and
    /// waits for the listener.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        // Otherwise the readiness probe would take the other listener for evshift.
        if accepts_connections(self.addr).await {
            bail!(
                "something already accepts connections on {}: evshift could not listen there",
                self.addr
            );
        }
        self.spawn()?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status()? {
                bail!(
                    "evshift exited during startup ({status}); output:\n{}",
                    self.log_contents()
                );
            }
            if accepts_connections(self.addr).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "evshift did not accept connections on {} within {STARTUP_TIMEOUT:?}; \
                     output:\n{}",
                    self.addr,
                    self.log_contents()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(clone_file(&log)?)
            .stderr(log);
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            command.env("RUST_BACKTRACE", "1");
        }
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().context("poll the evshift process"),
            None => bail!("evshift is not running"),
        }
    }
}

impl Drop for EvshiftProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== output of evshift ({}) =====\n{}\n===== end of evshift output =====",
                self.addr,
                self.log_contents()
            );
        }
        if let Err(error) = self.kill() {
            eprintln!("EvshiftProcess: kill on drop failed: {error:#}");
        }
        // SIGKILL leaves the control socket file behind.
        if let Some(socket) = &self.control_socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// The `evshift` binary to test: `$EVSHIFT_BIN` if set, else the most recently built of
/// `<target>/debug/evshift` and `<target>/release/evshift`, where `<target>` is
/// `$CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn evshift_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("EVSHIFT_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("EVSHIFT_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let candidates = ["debug", "release"].map(|profile| target.join(profile).join("evshift"));
    candidates
        .iter()
        .filter_map(|path| Some((modified(path)?, path)))
        .max()
        .map(|(_, path)| path.clone())
        .with_context(|| {
            format!(
                "the evshift binary was not found ({} or {}): run `cargo build -p evshift-proxy` \
                 first, or set EVSHIFT_BIN",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn modified(path: &Path) -> Option<SystemTime> {
    let metadata = std::fs::metadata(path).ok()?;
    metadata.is_file().then(|| metadata.modified().ok())?
}

fn resolve(listen: &str) -> Result<SocketAddr> {
    let addr = listen
        .to_socket_addrs()
        .with_context(|| format!("listen = {listen:?} is not a host:port address"))?
        .next()
        .with_context(|| format!("listen = {listen:?} resolves to no address"))?;
    if addr.port() == 0 {
        bail!("listen = {listen:?}: the harness needs a concrete port, not 0 (use free_port())");
    }
    Ok(addr)
}

fn clone_file(file: &File) -> Result<File> {
    file.try_clone().context("duplicate the log file handle")
}

/// Whether something accepts TCP connections at `addr` right now.
async fn accepts_connections(addr: SocketAddr) -> bool {
    // The probe connection is closed without a startup message; evshift sees a client that
    // went away, which it must handle anyway.
    matches!(
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
