//! The machine and software a figure was measured on, for the docs.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Where and when a scenario ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// `date -u`.
    pub date: String,
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs available.
    pub nproc: usize,
    /// MemTotal in GiB.
    pub memory_gib: f64,
    /// `uname -r`.
    pub kernel: String,
    /// 1-minute load average when the scenario started.
    pub load_before: f64,
    /// `postgres --version`.
    pub postgres: String,
    /// The evshift binary: when it was built, and the latest commit of the working tree then.
    pub evshift_build: String,
}

impl Machine {
    /// Describes this machine now, and the `evshift` binary measured.
    pub fn describe(evshift_bin: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0 / 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            load_before: load_average(),
            postgres: postgres_version(),
            evshift_build: evshift_build(evshift_bin),
        }
    }

    /// The markdown bullet lines that go under every figure's table.
    pub fn markdown(&self, command: &str) -> String {
        format!(
            "- Command: `{command}`\n\
             - Date: {}; evshift: {}\n\
             - Machine: {}, `nproc` = {}, {:.0} GiB, kernel {}; PostgreSQL {} (throwaway clusters, fsync off)\n\
             - Everything (clients, PostgreSQL servers, evshift, PgBouncer) shares these {} cores, and other builds ran on the machine at the same time (1-minute load average {:.2} at the start, {:.2} at the end): absolute figures are low and noisy; compare the columns of one run.\n",
            self.date,
            self.evshift_build,
            self.cpu,
            self.nproc,
            self.memory_gib,
            self.kernel,
            self.postgres,
            self.nproc,
            self.load_before,
            load_average()
        )
    }
}

/// The 1-minute load average now.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn postgres_version() -> String {
    match evshift_tests::PgBinaries::locate().and_then(|b| b.postgres()) {
        Ok(postgres) => command_line(&postgres.to_string_lossy(), &["--version"])
            .trim_start_matches("postgres (PostgreSQL) ")
            .to_owned(),
        Err(_) => "unknown".to_owned(),
    }
}

/// When `binary` was built and the latest commit at that time (the binary does not record its
/// commit; a build right before the run, as the bench scripts do, makes the two agree), plus a
/// note when proxy/ or control/ have uncommitted changes now.
fn evshift_build(binary: &Path) -> String {
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let Some(built) = built else {
        return format!("`{}`", binary.display());
    };
    let root = workspace_root();
    let root = root.to_string_lossy();
    let when = command_line(
        "date",
        &["-u", "-d", &format!("@{built}"), "+%Y-%m-%d %H:%M UTC"],
    );
    let commit = command_line(
        "git",
        &[
            "-C",
            &root,
            "log",
            "-1",
            "--format=%h",
            &format!("--before=@{built}"),
        ],
    );
    let dirty = !command_line(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            "proxy",
            "control",
        ],
    )
    .is_empty();
    let mut text = format!("binary built {when}");
    if !commit.is_empty() {
        text.push_str(&format!(" from the working tree at commit {commit}"));
    }
    if dirty {
        text.push_str(" (proxy/ or control/ had uncommitted changes at the run)");
    }
    text
}

/// The workspace root (where docs/ lives).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_machine_and_a_binary() {
        let exe = std::env::current_exe().unwrap();
        let machine = Machine::describe(&exe);
        assert!(machine.nproc >= 1 && machine.memory_gib > 0.0);
        assert!(
            machine.evshift_build.starts_with("binary built 20"),
            "{}",
            machine.evshift_build
        );
        let text = machine.markdown("evshift-bench copy");
        assert!(text.contains("- Command: `evshift-bench copy`"));
        assert!(Machine::describe(Path::new("/nonexistent"))
            .evshift_build
            .contains("/nonexistent"));
    }
}
