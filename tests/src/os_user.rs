//! Running the PostgreSQL server tools as an unprivileged OS user.
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root, and CI containers (and this project's
//! machines) run the tests as root without `sudo`. So when the test process is root, the harness
//! runs those tools as the OS user `postgres` (created by the distribution's server package) and
//! hands the cluster's files to that user. As any other user it runs them as itself.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The OS user the server tools run as when the test process is root.
const SERVER_USER: &str = "postgres";

/// An OS identity to switch to before running a server tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl OsUser {
    /// The identity server tools must run as: `None` (run as ourselves) unless we are root, in
    /// which case the `postgres` user, which must then exist.
    pub fn for_server_tools() -> Result<Option<OsUser>> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        match OsUser::lookup(SERVER_USER)? {
            Some(user) => Ok(Some(user)),
            None => bail!(
                "the tests run as root, and PostgreSQL refuses to run as root, but there is no \
                 OS user `{SERVER_USER}` to run it as: install the PostgreSQL server package or \
                 create that user"
            ),
        }
    }

    /// Looks a user up by name in the password database.
    pub fn lookup(name: &str) -> Result<Option<OsUser>> {
        let c_name = CString::new(name).context("user name contains a NUL byte")?;
        // SAFETY: getpwnam takes a valid NUL-terminated string and returns either NULL or a
        // pointer to a static record, which we read at once. The harness looks users up rarely;
        // the non-reentrancy of getpwnam is harmless for reading two integers.
        let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
        if entry.is_null() {
            return Ok(None);
        }
        // SAFETY: non-null entry points to a valid passwd record (see above).
        let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
        Ok(Some(OsUser { uid, gid }))
    }

    /// Makes `command` run as this user (setgid, then setuid, supplementary groups dropped by
    /// std when the parent is root).
    pub fn apply(&self, command: &mut Command) {
        command.uid(self.uid).gid(self.gid);
    }

    /// Gives `path` and everything below it to this user, without following symlinks.
    pub fn chown_tree(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("chown {}", path.display()))?;
        let metadata =
            std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
        if metadata.is_dir() {
            for entry in
                std::fs::read_dir(path).with_context(|| format!("list {}", path.display()))?
            {
                self.chown_tree(&entry?.path())?;
            }
        }
        Ok(())
    }
}
