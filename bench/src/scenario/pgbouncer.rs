//! `PgBouncer`: the Debian `pgbouncer` package's binary in front of one store, for comparison.
//! Two database names: `DB` pooled per transaction and `DB_session` pooled per session (for
//! protocol-level prepared statements, which PgBouncer before 1.21 loses between transactions).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use evshift_tests::{free_port, OsUser, LOOPBACK};
use tempfile::TempDir;
use tokio_postgres::NoTls;

/// How long PgBouncer may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a scenario compares with PgBouncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgBouncerUse {
    /// PgBouncer must be installed (`apt-get install pgbouncer`).
    Required,
    /// Compare with PgBouncer when it is installed.
    IfInstalled,
    /// Leave PgBouncer out.
    Off,
}

/// A running PgBouncer; killed on drop.
pub struct PgBouncer {
    child: Child,
    port: u16,
    version: String,
    _dir: TempDir,
}

impl PgBouncer {
    /// The binary: `pgbouncer` on PATH or `/usr/sbin/pgbouncer`.
    pub fn locate() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pgbouncer"))
                .find(|candidate| candidate.is_file())
        });
        on_path.or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/pgbouncer");
            sbin.is_file().then_some(sbin)
        })
    }

    /// The binary as `usage` asks: `None` when it is off or optional and missing.
    pub fn for_use(usage: PgBouncerUse) -> Result<Option<PathBuf>> {
        match (usage, PgBouncer::locate()) {
            (PgBouncerUse::Off, _) => Ok(None),
            (_, Some(binary)) => Ok(Some(binary)),
            (PgBouncerUse::IfInstalled, None) => Ok(None),
            (PgBouncerUse::Required, None) => bail!(
                "pgbouncer is not installed (apt-get install pgbouncer), or pass --pgbouncer off"
            ),
        }
    }

    /// Starts `binary` in front of database `db` on `127.0.0.1:store_port` as `postgres`,
    /// with `pool_size` server connections per pool.
    pub async fn start(
        binary: &Path,
        store_port: u16,
        db: &str,
        pool_size: usize,
    ) -> Result<PgBouncer> {
        let dir = tempfile::Builder::new()
            .prefix("evshift-pgbouncer-")
            .tempdir()
            .context("create PgBouncer's directory")?;
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").context("write userlist.txt")?;
        std::fs::write(&ini, ini_text(dir.path(), store_port, port, db, pool_size))
            .context("write pgbouncer.ini")?;
        let run_as = OsUser::for_server_tools()?;
        if let Some(user) = run_as {
            // PgBouncer refuses to run as root; its files must be readable by its user.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            user.chown_tree(dir.path())?;
        }
        let mut command = Command::new(binary);
        command
            .arg(&ini)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = run_as {
            user.apply(&mut command);
        }
        // SAFETY: only prctl runs in the child before exec; it is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut bouncer = PgBouncer {
            child,
            port,
            version: version(binary),
            _dir: dir,
        };
        bouncer.wait_ready(db).await?;
        Ok(bouncer)
    }

    /// The URL of database `alias` (`DB` or `DB_session`).
    pub fn url(&self, alias: &str) -> String {
        format!("postgres://postgres@{LOOPBACK}:{}/{alias}", self.port)
    }

    /// `pgbouncer --version`'s version number.
    pub fn version(&self) -> &str {
        &self.version
    }

    async fn wait_ready(&mut self, db: &str) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("pgbouncer exited during startup ({status})");
            }
            if let Ok((client, connection)) = tokio_postgres::connect(&self.url(db), NoTls).await {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                if client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("pgbouncer did not accept connections within {STARTUP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ini_text(dir: &Path, store_port: u16, port: u16, db: &str, pool_size: usize) -> String {
    format!(
        "[databases]\n\
         {db} = host={LOOPBACK} port={store_port} dbname={db} user=postgres\n\
         {db}_session = host={LOOPBACK} port={store_port} dbname={db} user=postgres pool_mode=session\n\
         \n\
         [pgbouncer]\n\
         listen_addr = {LOOPBACK}\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {users}\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = {max_clients}\n\
         ignore_startup_parameters = extra_float_digits\n\
         logfile = {log}\n",
        users = dir.join("userlist.txt").display(),
        log = dir.join("pgbouncer.log").display(),
        max_clients = pool_size * 4 + 10,
    )
}

fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("PgBouncer ").to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
