//! `evshift demo`: a small run end to end (its own throwaway servers, evshift, load, the live
//! migration, the checks) ends MIGRATED with nothing lost or duplicated and removes what it
//! started; bad arguments are one line and exit status 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evshift_tests::evshift_binary;

/// Far more than the small run needs (about 20 s in a debug build), so that only a hang fails.
const DEMO_DEADLINE: Duration = Duration::from_secs(300);

/// What a finished `evshift demo` printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `evshift demo ARGS` with output to files, killing it past `DEMO_DEADLINE`.
fn demo(args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(evshift_binary().unwrap());
    command
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + DEMO_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "evshift demo did not end within {DEMO_DEADLINE:?}; output so far:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

/// The value of the summary line `label`, e.g. `lost` -> `0`.
fn figure<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .map(str::trim_start)
        .find_map(|line| {
            let value = line.strip_prefix(label)?;
            // The label is followed by alignment blanks; `lost` must not match `lost events`.
            value.starts_with("  ").then(|| value.trim())
        })
        .unwrap_or_else(|| panic!("no summary line {label:?} in:\n{stdout}"))
}

/// The working directory the demo announced (`... in /tmp/evshift-demo-XXXXXXXX)`).
fn work_dir(stdout: &str) -> PathBuf {
    let start = stdout
        .find("evshift-demo-")
        .unwrap_or_else(|| panic!("no working directory in:\n{stdout}"));
    let begin = stdout[..start].rfind(' ').map_or(0, |i| i + 1);
    let end = start + "evshift-demo-".len() + 8;
    PathBuf::from(&stdout[begin..end])
}

/// The evshift process id the demo announced (`pid N listening on ...`).
fn evshift_pid(stdout: &str) -> i32 {
    let after = stdout
        .split("pid ")
        .nth(1)
        .unwrap_or_else(|| panic!("no evshift pid in:\n{stdout}"));
    after
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no evshift pid in:\n{stdout}"))
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_small_demo_moves_the_biggest_tenant_without_loss_or_duplicates() {
    let run = demo(&["--events", "20000", "--tenants", "5"], &[]);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let out = &run.stdout;
    assert_eq!(figure(out, "state"), "MIGRATED");
    assert_eq!(figure(out, "lost"), "0");
    assert_eq!(figure(out, "duplicated"), "0");
    assert_eq!(figure(out, "source writes after cutover"), "0");
    assert!(
        figure(out, "acknowledged appends").ends_with("(0 client errors)"),
        "{out}"
    );
    assert!(
        figure(out, "verified at cutover").contains(" passed"),
        "{out}"
    );
    assert!(
        figure(out, "verified after load").contains("0 missing, 0 differing"),
        "{out}"
    );
    // Everything it started is gone: evshift, the servers, their files.
    let pid = evshift_pid(out);
    assert!(!process_exists(pid), "evshift {pid} still runs");
    let dir = work_dir(out);
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn bad_arguments_are_one_line_and_status_2() {
    let cases: [(&[&str], &str); 5] = [
        (&["--events", "lots"], "--events"),
        (&["--tenants", "1"], "--tenants"),
        (&["--events", "5"], "--events"),
        (
            &["--source", "postgres://postgres@127.0.0.1:1/app"],
            "go together",
        ),
        (&["--bogus"], "--bogus"),
    ];
    for (args, needle) in cases {
        let run = demo(args, &[]);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("evshift demo: "), "{}", run.stderr);
        assert!(
            run.stderr.contains(needle),
            "{needle:?} not in {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn missing_postgres_binaries_are_one_line_and_status_2() {
    let empty = tempfile::tempdir().unwrap();
    let run = demo(&[], &[("PG_BINDIR", empty.path().to_str().unwrap())]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("initdb"), "{}", run.stderr);
}
