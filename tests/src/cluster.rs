//! `PgCluster`: a throwaway PostgreSQL server for one test.
//!
//! Every cluster is fully private: its own temporary directory (data, unix socket, log), its own
//! loopback port, its own server processes. Several clusters can run at once in one test process
//! and across parallel test processes. Dropping the cluster kills the server and deletes
//! everything.
//!
//! The server is tuned for tests, not for surviving power loss: `fsync` and `full_page_writes`
//! are off. `synchronous_commit` stays on, deliberately: with `fsync` off a commit costs one
//! `write()` of WAL to the OS page cache and no disk flush, so asynchronous commit gains nothing
//! measurable, while it would lose acknowledged transactions on `stop_immediate` (measured: about
//! 45 of 200 just-committed inserts gone after the restart). Here a committed transaction survives
//! `stop_immediate`, as it would on a production store, so fault tests can count on it.
//!
//! Host (TCP) connections use the authentication method of [`PgCluster::use_auth`] (`trust` at
//! start); unix-socket connections are always trusted, and the harness's own administrative
//! connections ([`PgCluster::connect`]) use the socket so that they keep working whatever the
//! test does to host authentication.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

use crate::os_user::OsUser;
use crate::pg_bin::PgBinaries;
use crate::port::{free_port, LOOPBACK};

/// The superuser `initdb` creates, and the user of every harness connection.
pub const SUPERUSER: &str = "postgres";

/// Host authentication methods `use_auth` accepts.
const AUTH_METHODS: [&str; 4] = ["trust", "password", "md5", "scram-sha-256"];

/// How many fresh ports to try when another process grabs the chosen port first.
const START_ATTEMPTS: u32 = 5;

/// Upper bound for server start, stop and reload; generous because CI machines can be slow.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings file the harness owns, included at the end of `postgresql.conf`.
const HARNESS_CONF: &str = "evshift_harness.conf";

/// A custom setting bumped at every reload. A new backend that sees the new value was forked
/// after the postmaster finished reloading, `pg_hba.conf` included.
const GENERATION_SETTING: &str = "evshift_harness.generation";

/// A running (or deliberately stopped) throwaway PostgreSQL cluster. See the module
/// documentation.
pub struct PgCluster {
    name: String,
    server: Server,
    port: u16,
    auth_method: String,
    generation: u64,
    // Last field: dropped (deleted) after `Drop::drop` stopped the server.
    _root: TempDir,
}

impl PgCluster {
    /// Creates a cluster with `initdb` and starts it on a free loopback port.
    ///
    /// `name` only labels the temporary directory and log output. The blocking work runs on
    /// tokio's blocking pool, so several clusters started with `tokio::try_join!` initialise in
    /// parallel, and a `current_thread` runtime keeps serving other tasks meanwhile.
    pub async fn start(name: &str) -> Result<PgCluster> {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || PgCluster::start_blocking(&name))
            .await
            .context("cluster start task failed")?
    }

    /// [`PgCluster::start`] for callers without a tokio runtime.
    pub fn start_blocking(name: &str) -> Result<PgCluster> {
        let bin = PgBinaries::locate()?;
        let run_as = OsUser::for_server_tools()?;
        let root = tempfile::Builder::new()
            .prefix(&format!("evshift-pg-{}-", dir_label(name)))
            .tempdir()
            .context("create the cluster's temporary directory")?;
        let server = Server::new(bin, root.path(), run_as);
        server
            .prepare_root()
            .with_context(|| format!("prepare {}", root.path().display()))?;
        server.initdb()?;

        let mut cluster = PgCluster {
            name: name.to_owned(),
            server,
            port: 0,
            auth_method: "trust".to_owned(),
            generation: 0,
            _root: root,
        };
        cluster.write_hba()?;
        cluster.include_harness_conf()?;
        // From here on a failure drops `cluster`, which stops whatever did start.
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// The label given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TCP port the server listens on (kept across `stop_immediate` / `start_again`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        LOOPBACK
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.server.data_dir
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.server.socket_dir
    }

    /// The server binaries this cluster runs (handy for `psql` and `pgbench`).
    pub fn binaries(&self) -> &PgBinaries {
        &self.server.bin
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`: a TCP URL as the superuser, without password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@{LOOPBACK}:{}/{db}", self.port)
    }

    /// A TCP URL for `user` with `password` (both percent-encoded).
    pub fn url_with_password(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@{LOOPBACK}:{}/{db}",
            percent_encode(user),
            percent_encode(password),
            self.port
        )
    }

    /// An administrative connection to `db` as the superuser over the unix socket (always
    /// trusted). The connection task is spawned on the current tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.server.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .application_name("evshift-tests");
        connect_with(&config)
            .await
            .with_context(|| format!("connect to {db} on cluster {} (unix socket)", self.name))
    }

    /// A TCP connection to `db` as `user`, subject to the host authentication method.
    pub async fn connect_as(&self, db: &str, user: &str, password: Option<&str>) -> Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(LOOPBACK)
            .port(self.port)
            .user(user)
            .dbname(db)
            .application_name("evshift-tests");
        if let Some(password) = password {
            config.password(password);
        }
        connect_with(&config).await.with_context(|| {
            format!(
                "connect to {db} as {user} on cluster {} ({LOOPBACK}:{})",
                self.name, self.port
            )
        })
    }

    /// Creates database `name`.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .with_context(|| format!("create database {name} on cluster {}", self.name))
    }

    /// Gives `user` a SCRAM-SHA-256 password, creating the role (with LOGIN) if it does not
    /// exist. Only host connections ask for it, and only once `use_auth` requires a password.
    pub async fn set_password(&self, user: &str, password: &str) -> Result<()> {
        self.store_password(user, password, "scram-sha-256").await
    }

    /// Like [`PgCluster::set_password`] but stores an MD5 hash, for tests of the `md5` exchange
    /// (with `use_auth("md5")` a SCRAM-stored password makes the server use SCRAM instead).
    pub async fn set_md5_password(&self, user: &str, password: &str) -> Result<()> {
        self.store_password(user, password, "md5").await
    }

    /// Switches the host (TCP) lines of `pg_hba.conf` to `method` (`trust`, `password`, `md5` or
    /// `scram-sha-256`), reloads, and returns once new connections use it.
    pub async fn use_auth(&mut self, method: &str) -> Result<()> {
        if !AUTH_METHODS.contains(&method) {
            bail!("unsupported auth method {method:?}: expected one of {AUTH_METHODS:?}");
        }
        self.auth_method = method.to_owned();
        self.write_hba()?;
        self.reload().await
    }

    /// The current host authentication method.
    pub fn auth_method(&self) -> &str {
        &self.auth_method
    }

    /// Re-reads the configuration files and returns once new connections see them.
    pub async fn reload(&mut self) -> Result<()> {
        self.generation += 1;
        self.write_harness_conf()?;
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.reload())
            .await
            .context("reload task failed")??;
        self.wait_for_generation().await
    }

    /// Kills the server the way a crash would (`pg_ctl stop -m immediate`): no checkpoint, open
    /// connections cut. The next start runs crash recovery.
    pub async fn stop_immediate(&self) -> Result<()> {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.stop_immediate())
            .await
            .context("stop task failed")?
            .with_context(|| format!("stop cluster {}", self.name))
    }

    /// Starts the server again on the same port with the same data (after `stop_immediate`).
    pub async fn start_again(&self) -> Result<()> {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.start())
            .await
            .context("start task failed")?
            .with_context(|| format!("restart cluster {} on port {}", self.name, self.port))
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Everything the server logged so far.
    pub fn log_contents(&self) -> String {
        self.server.log_contents()
    }

    async fn store_password(&self, user: &str, password: &str, encryption: &str) -> Result<()> {
        let client = self.connect("postgres").await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await?
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        // Utility statements take no parameters: quote by hand.
        let sql = format!(
            "SET password_encryption = {}; {verb} ROLE {} WITH LOGIN PASSWORD {}",
            quote_literal(encryption),
            quote_ident(user),
            quote_literal(password),
        );
        client
            .batch_execute(&sql)
            .await
            .with_context(|| format!("set the password of {user} on cluster {}", self.name))
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            self.port = free_port();
            self.write_harness_conf()?;
            let log_before = self.server.log_contents().len();
            let Err(error) = self.server.start() else {
                return Ok(());
            };
            let new_log = self.server.log_contents().split_off(log_before);
            // Someone took the port between free_port() and the server's bind: pick another.
            if attempt == START_ATTEMPTS || !is_port_conflict(&new_log) {
                return Err(error.context(format!("start cluster {}", self.name)));
            }
            attempt += 1;
        }
    }

    async fn wait_for_generation(&self) -> Result<()> {
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let wanted = self.generation.to_string();
        loop {
            // A fresh connection each time: its backend is forked with the postmaster's state.
            let seen = match self.connect("postgres").await {
                Ok(client) => client
                    .query_one("SELECT current_setting($1, true)", &[&GENERATION_SETTING])
                    .await?
                    .get::<_, Option<String>>(0),
                Err(_) => None,
            };
            if seen.as_deref() == Some(wanted.as_str()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster {} did not apply its reloaded configuration within {SERVER_TIMEOUT:?}; \
                     log:\n{}",
                    self.name,
                    self.server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn write_hba(&self) -> Result<()> {
        let method = &self.auth_method;
        let mut hba = String::from(
            "# Written by the evshift test harness.\n\
             # TYPE  DATABASE     USER  ADDRESS        METHOD\n\
             local   all          all                  trust\n\
             local   replication  all                  trust\n",
        );
        for address in ["127.0.0.1/32", "::1/128"] {
            for database in ["all", "replication"] {
                writeln!(hba, "host    {database:<12} all   {address:<14} {method}")
                    .expect("writing to a String cannot fail");
            }
        }
        self.server
            .write_file(&self.server.data_dir.join("pg_hba.conf"), &hba)
    }

    fn write_harness_conf(&self) -> Result<()> {
        let conf = format!(
            "# Written by the evshift test harness; included by postgresql.conf.\n\
             listen_addresses = '{LOOPBACK}'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = 300\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             synchronous_commit = on\n\
             full_page_writes = off\n\
             password_encryption = 'scram-sha-256'\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             {GENERATION_SETTING} = '{generation}'\n",
            port = self.port,
            socket_dir = conf_escape(&self.server.socket_dir.to_string_lossy()),
            generation = self.generation,
        );
        self.server
            .write_file(&self.server.data_dir.join(HARNESS_CONF), &conf)
    }

    fn include_harness_conf(&self) -> Result<()> {
        let path = self.server.data_dir.join("postgresql.conf");
        let mut conf =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        // Last, so that the harness settings win over initdb's.
        conf.push_str(&format!("\ninclude '{HARNESS_CONF}'\n"));
        self.server.write_file(&path, &conf)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== server log of PgCluster {} (port {}) =====\n{}\n===== end of server log =====",
                self.name,
                self.port,
                self.server.log_contents()
            );
        }
        if self.server.has_pid_file() {
            if let Err(error) = self.server.stop_immediate() {
                eprintln!("PgCluster {}: stop on drop failed: {error:#}", self.name);
            }
        }
    }
}

/// How to drive one data directory with the server tools. Cheap to clone into blocking tasks.
#[derive(Debug, Clone)]
struct Server {
    bin: PgBinaries,
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    run_as: Option<OsUser>,
}

impl Server {
    fn new(bin: PgBinaries, root: &Path, run_as: Option<OsUser>) -> Server {
        Server {
            bin,
            root: root.to_path_buf(),
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            log_file: root.join("postgres.log"),
            run_as,
        }
    }

    /// Makes the root usable by the server user: traversable (a tempdir is 0700) and, when we
    /// are root, owned by it so that it can create the data directory and the log file.
    fn prepare_root(&self) -> Result<()> {
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir(&self.socket_dir)?;
        if let Some(user) = self.run_as {
            user.chown_tree(&self.root)?;
        }
        Ok(())
    }

    fn initdb(&self) -> Result<()> {
        let mut initdb = self.command(&self.bin.initdb()?);
        initdb
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        run(initdb, "initdb")
    }

    fn start(&self) -> Result<()> {
        let mut pg_ctl = self.pg_ctl("start")?;
        pg_ctl.arg("-l").arg(&self.log_file);
        run(pg_ctl, "pg_ctl start").with_context(|| format!("server log:\n{}", self.log_tail()))
    }

    fn stop_immediate(&self) -> Result<()> {
        let mut pg_ctl = self.pg_ctl("stop")?;
        pg_ctl.args(["-m", "immediate"]);
        run(pg_ctl, "pg_ctl stop -m immediate")
    }

    fn reload(&self) -> Result<()> {
        run(self.pg_ctl("reload")?, "pg_ctl reload")
    }

    fn is_running(&self) -> bool {
        // pg_ctl status exits 0 when running, 3 when not, 4 without a data directory.
        self.pg_ctl("status")
            .and_then(|mut status| Ok(status.output()?.status.success()))
            .unwrap_or(false)
    }

    fn has_pid_file(&self) -> bool {
        self.data_dir.join("postmaster.pid").exists()
    }

    /// A `pg_ctl` command for `action` on this data directory, waiting up to `SERVER_TIMEOUT`.
    fn pg_ctl(&self, action: &str) -> Result<Command> {
        let mut pg_ctl = self.command(&self.bin.pg_ctl()?);
        pg_ctl
            .arg(action)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-w")
            .arg("-t")
            .arg(SERVER_TIMEOUT.as_secs().to_string());
        Ok(pg_ctl)
    }

    /// A command for a server tool, run as the server user, from a directory that user can
    /// enter (the test's own working directory may be private to root).
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.root);
        // Settings from the environment must not redirect the tools to another server.
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGOPTIONS"] {
            command.env_remove(var);
        }
        if let Some(user) = self.run_as {
            user.apply(&mut command);
        }
        command
    }

    /// Writes a file in the cluster directory, owned by the server user.
    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
        if let Some(user) = self.run_as {
            user.chown_tree(path)?;
        }
        Ok(())
    }

    fn log_contents(&self) -> String {
        std::fs::read(&self.log_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The end of the log, for error messages.
    fn log_tail(&self) -> String {
        let log = self.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Runs `command` to completion; on failure the error carries its output.
fn run(mut command: Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what} ({:?})", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn connect_with(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await?;
    // The connection ends with an error when a test stops the server under it; that is the
    // test's business, reported through the client's own errors.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn is_port_conflict(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

/// Keeps the temporary directory name short and shell-friendly: unix socket paths are limited
/// to about 100 bytes.
fn dir_label(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(20)
        .collect()
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings is on by default).
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Escapes a value for a single-quoted postgresql.conf string.
fn conf_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(percent_encode("a b@c"), "a%20b%40c");
        assert_eq!(dir_label("src/../x y"), "srcxy");
    }
}
