//! What `/proc` says about processes: memory (VmRSS, VmHWM) and CPU time, including a
//! PostgreSQL cluster's (its postmaster, the backends that ended, and the live ones).

use std::path::Path;

use anyhow::{Context, Result};

/// Resident memory of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Memory {
    /// VmRSS: resident now, kB.
    pub rss_kb: u64,
    /// VmHWM: the peak resident size, kB.
    pub peak_kb: u64,
}

/// VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kb: field("VmRSS:"),
        peak_kb: field("VmHWM:"),
    })
}

/// CPU ticks of one process from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Ticks {
    ppid: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: children that ended and were waited for.
    children: u64,
}

fn ticks(pid: u32) -> Option<Ticks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Ticks {
        ppid: number(1)? as u32,
        own: number(11)? + number(12)?,
        children: number(13)? + number(14)?,
    })
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds `pid` used itself (0 when it is gone).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    ticks(pid).map_or(0.0, |t| t.own as f64 / ticks_per_second())
}

/// CPU seconds of this process, all threads.
pub fn own_cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id())
}

/// CPU seconds of the PostgreSQL cluster in `data_dir` so far: the postmaster, the backends
/// that ended (reaped by it) and the live ones.
pub fn cluster_cpu_seconds(data_dir: &Path) -> Result<f64> {
    let pid_file = data_dir.join("postmaster.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("read {}", pid_file.display()))?
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("no pid in {}", pid_file.display()))?;
    let postmaster = ticks(pid).with_context(|| format!("the postmaster {pid} is gone"))?;
    let mut total = postmaster.own + postmaster.children;
    for entry in std::fs::read_dir("/proc").context("list /proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(t) = ticks(child).filter(|t| t.ppid == pid) {
            total += t.own + t.children;
        }
    }
    Ok(total as f64 / ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let memory = memory(std::process::id()).unwrap();
        assert!(memory.rss_kb > 0 && memory.peak_kb >= memory.rss_kb);
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(own_cpu_seconds() >= 0.0);
        assert!(memory_of_missing().is_err());
    }

    fn memory_of_missing() -> Result<Memory> {
        memory(u32::MAX)
    }
}
