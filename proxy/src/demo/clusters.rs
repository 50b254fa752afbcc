//! Throwaway PostgreSQL servers for the demo: `initdb` and `pg_ctl` from the installed server
//! binaries, each cluster in its own directory with its own loopback port and unix socket.
//!
//! PostgreSQL refuses to run as root, so when the demo runs as root every server tool runs as
//! the `postgres` OS user (`runuser -u postgres --`) and the cluster directory is given to that
//! user. A cluster is stopped and its directory removed when it is dropped, unless it was
//! kept ([`Cluster::keep`]).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// The OS user that runs the servers when the demo runs as root.
const SERVER_USER: &str = "postgres";

/// The superuser `initdb` creates; every demo connection uses it (trust authentication).
pub const SUPERUSER: &str = "postgres";

/// How long `pg_ctl` may take to start or stop a server.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Fresh ports to try when another process takes the chosen one first.
const START_ATTEMPTS: usize = 3;

/// The settings file the demo owns, included at the end of `postgresql.conf`.
const DEMO_CONF: &str = "evshift_demo.conf";

/// The PostgreSQL server bin directory (`initdb`, `pg_ctl`, `postgres`).
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries: `$PG_BINDIR`, `initdb` on `PATH`, `pg_config --bindir`, then
    /// the newest `/usr/lib/postgresql/*/bin`. The error is one line saying how to fix it.
    pub fn locate() -> Result<PgBinaries, String> {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            let dir = PathBuf::from(dir);
            return if is_server_bindir(&dir) {
                Ok(PgBinaries { dir })
            } else {
                Err(format!(
                    "PG_BINDIR={} holds no initdb and pg_ctl: point it at the PostgreSQL server \
                     bin directory",
                    dir.display()
                ))
            };
        }
        initdb_on_path()
            .or_else(pg_config_bindir)
            .or_else(newest_debian_bindir)
            .map(|dir| PgBinaries { dir })
            .ok_or_else(|| {
                "PostgreSQL server binaries (initdb, pg_ctl) not found: install the server \
                 (apt-get install postgresql), set PG_BINDIR, or use scripts/demo, which \
                 installs it"
                    .to_string()
            })
    }

    /// The bin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `postgres --version`, e.g. `postgres (PostgreSQL) 15.8`; empty if it cannot be run.
    pub fn version(&self) -> String {
        Command::new(self.tool("postgres"))
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

fn is_server_bindir(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

fn initdb_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| initdb.is_file())
        // A Debian wrapper on PATH resolves to the real bin directory.
        .filter_map(|initdb| std::fs::canonicalize(initdb).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| is_server_bindir(dir))
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    (output.status.success() && is_server_bindir(&dir)).then_some(dir)
}

fn newest_debian_bindir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let dir = entry.path().join("bin");
            is_server_bindir(&dir).then_some((version, dir))
        })
        .max()
        .map(|(_, dir)| dir)
}

/// Who runs the server tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// This process's own user.
    Me,
    /// `postgres`, through `runuser`, because this process is root.
    ServerUser,
}

impl RunAs {
    /// `ServerUser` when running as root (after checking that the user exists), else `Me`.
    pub fn detect() -> Result<RunAs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(RunAs::Me);
        }
        let exists = Command::new("id")
            .args(["-u", SERVER_USER])
            .output()
            .is_ok_and(|o| o.status.success());
        if exists {
            Ok(RunAs::ServerUser)
        } else {
            Err(format!(
                "running as root, but there is no OS user '{SERVER_USER}' to run PostgreSQL as \
                 (PostgreSQL refuses to run as root)"
            ))
        }
    }

    /// `program` as a command run by this user.
    fn command(self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::ServerUser => {
                let mut command = Command::new("runuser");
                command.args(["-u", SERVER_USER, "--"]).arg(program);
                command
            }
        }
    }

    /// The shell prefix of a command run by this user, for printed instructions.
    pub fn shell_prefix(self) -> &'static str {
        match self {
            RunAs::Me => "",
            RunAs::ServerUser => "runuser -u postgres -- ",
        }
    }

    /// Gives `dir` to the server user (a no-op for `Me`).
    fn hand_over(self, dir: &Path) -> Result<()> {
        if self == RunAs::Me {
            return Ok(());
        }
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{SERVER_USER}:"))
            .arg(dir)
            .status()
            .context("run chown")?;
        if !status.success() {
            bail!("chown -R {SERVER_USER}: {} failed", dir.display());
        }
        Ok(())
    }
}

/// A running throwaway cluster. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    dir: PathBuf,
    port: u16,
    bin: PgBinaries,
    run_as: RunAs,
    /// Cleared by `keep`: then dropping the handle leaves the server running.
    owned: bool,
}

impl Cluster {
    /// Creates a cluster in `parent/name` with `initdb` and starts it on a free loopback port.
    /// Blocking: run it on a blocking thread.
    pub fn start(bin: &PgBinaries, run_as: RunAs, parent: &Path, name: &str) -> Result<Cluster> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        run_as.hand_over(&dir)?;
        // From here on a failure drops the cluster, which stops what started and removes dir.
        let mut cluster = Cluster {
            name: name.to_string(),
            dir,
            port: 0,
            bin: bin.clone(),
            run_as,
            owned: true,
        };
        cluster.initdb()?;
        cluster.start_on_a_free_port()?;
        Ok(cluster)
    }

    /// The cluster's label (`shared`, `dedicated-1`, `control`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The shell command that stops this cluster, for printed instructions.
    pub fn stop_command(&self) -> String {
        format!(
            "{}{} stop -D {} -m fast",
            self.run_as.shell_prefix(),
            self.bin.tool("pg_ctl").display(),
            self.data_dir().display()
        )
    }

    /// Leaves the server running when this handle is dropped.
    pub fn keep(&mut self) {
        self.owned = false;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A server tool run as the server user from the cluster directory (the caller's working
    /// directory may be closed to that user), with no environment steering it elsewhere.
    fn tool(&self, name: &str) -> Command {
        let mut command = self.run_as.command(&self.bin.tool(name));
        command.current_dir(&self.dir);
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGOPTIONS"] {
            command.env_remove(var);
        }
        command
    }

    fn initdb(&self) -> Result<()> {
        let mut initdb = self.tool("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        let output = initdb.output().context("run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed for cluster {}: {}",
                self.name,
                last_line(&output)
            );
        }
        let conf = self.data_dir().join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
        // Last, so that the demo's settings win over initdb's.
        text.push_str(&format!("\ninclude '{DEMO_CONF}'\n"));
        std::fs::write(&conf, text).with_context(|| format!("write {}", conf.display()))
    }

    /// The demo's settings: tuned for a throwaway server (no fsync), loopback only.
    fn write_settings(&self) -> Result<()> {
        let mut conf = String::from("# Written by evshift demo.\n");
        for (key, value) in [
            ("listen_addresses", "'127.0.0.1'".to_string()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                format!("'{}'", self.dir.display().to_string().replace('\'', "''")),
            ),
            ("max_connections", "200".into()),
            ("shared_buffers", "128MB".into()),
            ("fsync", "off".into()),
            ("full_page_writes", "off".into()),
            ("max_wal_size", "2GB".into()),
            ("checkpoint_timeout", "30min".into()),
            ("logging_collector", "off".into()),
        ] {
            writeln!(conf, "{key} = {value}").expect("writing to a String cannot fail");
        }
        let path = self.data_dir().join(DEMO_CONF);
        std::fs::write(&path, conf).with_context(|| format!("write {}", path.display()))
    }

    fn start_on_a_free_port(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            self.write_settings()?;
            let log_before = self.log_len();
            let mut pg_ctl = self.tool("pg_ctl");
            pg_ctl
                .arg("start")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
                .arg("-l")
                .arg(self.log_file());
            let output = pg_ctl.output().context("run pg_ctl start")?;
            if output.status.success() {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let new_log = log.get(log_before..).unwrap_or_default();
            // Someone took the port between free_port() and the server's bind: pick another.
            if attempt == START_ATTEMPTS || !new_log.contains("could not bind") {
                bail!(
                    "cluster {} did not start: {}",
                    self.name,
                    new_log
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("see its log")
                );
            }
            attempt += 1;
        }
    }

    fn log_len(&self) -> usize {
        std::fs::metadata(self.log_file()).map_or(0, |m| m.len() as usize)
    }

    /// Stops the server (fast, then immediate) and removes the cluster directory.
    fn stop_and_remove(&self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let stop = |mode: &str| {
                let mut pg_ctl = self.tool("pg_ctl");
                pg_ctl.arg("stop").arg("-D").arg(self.data_dir()).args([
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    PG_CTL_TIMEOUT_SECS,
                ]);
                pg_ctl.output().is_ok_and(|o| o.status.success())
            };
            if !stop("fast") && !stop("immediate") {
                eprintln!(
                    "evshift demo: could not stop cluster {} ({})",
                    self.name,
                    self.dir.display()
                );
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("evshift demo: cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            self.stop_and_remove();
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last non-empty line a tool wrote (stderr first), for a one-line error.
fn last_line(output: &Output) -> String {
    [&output.stderr, &output.stdout]
        .iter()
        .filter_map(|bytes| {
            String::from_utf8_lossy(bytes)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .next()
        .unwrap_or_else(|| format!("exit status {}", output.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_server_tools_is_not_a_bindir() {
        let dir = std::env::temp_dir();
        assert!(!is_server_bindir(&dir));
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().unwrap();
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
    }
}
