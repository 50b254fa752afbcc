//! Locating the installed PostgreSQL server binaries.
//!
//! The harness never downloads or builds Postgres: it uses whatever server is installed. The
//! directory is searched in this order, and the first one that holds `initdb` wins:
//!
//! 1. the environment variable `PG_BINDIR`;
//! 2. `initdb` found on `PATH` (symlinks resolved, so `/usr/local/bin/initdb ->
//!    /usr/lib/postgresql/15/bin/initdb` yields the real directory, where `postgres` lives too);
//! 3. `pg_config --bindir`;
//! 4. the newest `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu layout).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The tool whose presence marks a directory as a PostgreSQL server bin directory.
const MARKER: &str = "initdb";

/// Where Debian-family distributions install one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// A directory holding the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`, `psql`,
/// `pgbench`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bindir: PathBuf,
}

impl PgBinaries {
    /// Finds the bin directory (see the module documentation for the search order).
    pub fn locate() -> Result<PgBinaries> {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            let dir = PathBuf::from(dir);
            if !is_bindir(&dir) {
                bail!(
                    "PG_BINDIR={} does not contain `{MARKER}`: point it at the PostgreSQL server \
                     bin directory",
                    dir.display()
                );
            }
            return Ok(PgBinaries { bindir: dir });
        }
        let found = from_path()
            .or_else(from_pg_config)
            .or_else(newest_debian_bindir)
            .context(
                "PostgreSQL server binaries not found: set PG_BINDIR, put initdb on PATH, or \
                 install the server (e.g. `apt-get install postgresql`)",
            )?;
        Ok(PgBinaries { bindir: found })
    }

    /// Uses `bindir` as is, without searching.
    pub fn at(bindir: impl Into<PathBuf>) -> PgBinaries {
        PgBinaries {
            bindir: bindir.into(),
        }
    }

    /// The bin directory.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The path of `tool` in the bin directory, or an error naming it if it is not there.
    pub fn tool(&self, tool: &str) -> Result<PathBuf> {
        let path = self.bindir.join(tool);
        if !path.is_file() {
            bail!(
                "`{tool}` not found in the PostgreSQL bin directory {}",
                self.bindir.display()
            );
        }
        Ok(path)
    }

    /// `initdb`.
    pub fn initdb(&self) -> Result<PathBuf> {
        self.tool("initdb")
    }

    /// `pg_ctl`.
    pub fn pg_ctl(&self) -> Result<PathBuf> {
        self.tool("pg_ctl")
    }

    /// `postgres`, the server itself.
    pub fn postgres(&self) -> Result<PathBuf> {
        self.tool("postgres")
    }

    /// `psql`.
    pub fn psql(&self) -> Result<PathBuf> {
        self.tool("psql")
    }

    /// `pgbench`.
    pub fn pgbench(&self) -> Result<PathBuf> {
        self.tool("pgbench")
    }
}

fn is_bindir(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

fn from_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(MARKER))
        .find(|candidate| candidate.is_file())
        // Resolve symlinks: the real directory also holds `postgres`, which a PATH directory of
        // symlinks may not.
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
}

fn from_pg_config() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    // pg_config may come from the client-only package: check the server is really there.
    is_bindir(&dir).then_some(dir)
}

fn newest_debian_bindir() -> Option<PathBuf> {
    std::fs::read_dir(DEBIAN_ROOT)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = version_key(&entry.file_name())?;
            let bindir = entry.path().join("bin");
            is_bindir(&bindir).then_some((version, bindir))
        })
        .max()
        .map(|(_, bindir)| bindir)
}

/// Orders directory names such as `9.6`, `15` and `16` numerically rather than as strings.
fn version_key(name: &OsStr) -> Option<Vec<u32>> {
    name.to_str()?
        .split('.')
        .map(|part| part.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let key = |s: &str| version_key(OsStr::new(s)).unwrap();
        assert!(key("16") > key("9.6"));
        assert!(key("15") > key("13"));
        assert!(version_key(OsStr::new("main")).is_none());
    }
}
