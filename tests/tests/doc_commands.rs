//! The doc runner: the commands that `README.md` and `docs/*.md` mark are run, in document
//! order, against a real throwaway environment, so that documented commands keep working.
//!
//! # Marking commands
//!
//! - `<!-- doctest -->` on the line directly above a fenced block runs that block. The marker
//!   is an HTML comment, so readers never see it.
//!   - A `sh`, `bash`, `shell`, `console` or plain block is a bash script, run with
//!     `bash -e -o pipefail`: it fails at its first failing command. Each block is its own
//!     process, so the variables below reach every block but a shell variable set in one block
//!     does not reach the next. A block in which some line starts with `$ ` is a transcript:
//!     only its `$ ` lines (and their `\` continuation lines) run; the lines between them are
//!     sample output and are not compared (they hold ports, times and speeds).
//!   - A `sql` block is run by psql through evshift, stopping at its first error.
//! - `<!-- doctest-setup: COMMANDS -->` on one line runs COMMANDS at that point, unseen by
//!   readers: what the surrounding text takes for granted (a migration that exists).
//!
//! A misspelt marker (a line beginning `<!-- doctest` in neither form), a marker not directly
//! above a fence, or a marked block in another language fails the test and names the line.
//! Markers quoted inside a line of prose are text. A failing block fails it with the file, the
//! line of the block, its commands and all they printed.
//!
//! # The environment
//!
//! Each document gets a fresh one, the world of the examples: store `shared` (the default; it
//! holds tenant `7f8e2c4a-1111-4222-8333-444455556666`, 2,000 events, and two other tenants),
//! store `dedicated-1` (the event-store schema, no events), a control store, and evshift with
//! quick migration retries. Migration ids start at 7, as in the examples. Blocks run in a
//! directory holding the running configuration as `evshift.toml`, with these variables:
//!
//! | variable | value |
//! |---|---|
//! | `TENANT` | `7f8e2c4a-1111-4222-8333-444455556666` |
//! | `EVSHIFT_CONFIG` | the path of that `evshift.toml` |
//! | `EVSHIFT_SOCKET` | evshift's control socket (`evshift ctl` uses it without `--socket`) |
//! | `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` | evshift's listener: `psql` with no arguments goes through evshift |
//! | `PATH` | `evshift` and the PostgreSQL client tools first |
//!
//! # What stays unmarked, and why
//!
//! - `scripts/demo` and `scripts/test`: they install packages, build in release mode and run for
//!   minutes; `scripts/test` runs this suite itself.
//! - `docker build` and `docker compose`: no Docker engine runs here; `docker_files.rs` checks
//!   what can be checked of `docker/`.
//! - `socat` in `control-socket.md`: not part of the test environment; `evshift ctl` sends the
//!   same requests.
//! - Command synopses, JSON replies, configuration files, and sample output outside
//!   transcripts: they are not commands.
//! - Commands for situations the environment does not create (a store down, a FAILED
//!   migration) and commands of features not released yet.

mod control_support;
mod doc_support;
mod migration_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use doc_support::environment::DocEnvironment;
use doc_support::markdown::{extract, DocStep};
use doc_support::runner::{path_with, run_steps, RunContext};

/// Documents that must keep marked commands: removing every marker from one of them fails.
const MUST_BE_MARKED: [&str; 4] = [
    "README.md",
    "docs/control-socket.md",
    "docs/migration-guide.md",
    "docs/runbook.md",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// `README.md`, then `docs/*.md` by name, as paths relative to the repository.
fn documents() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    docs.insert(0, "README.md".to_string());
    docs
}

/// Every document's marked steps; panics listing every malformed marker.
fn marked_steps() -> Vec<(String, Vec<DocStep>)> {
    let mut errors = Vec::new();
    let mut found = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(repo_root().join(&doc))
            .unwrap_or_else(|e| panic!("read {doc}: {e}"));
        match extract(&text) {
            Ok(steps) => found.push((doc, steps)),
            Err(error) => errors.push(format!("{doc}: {error}")),
        }
    }
    assert!(
        errors.is_empty(),
        "malformed markers:\n{}",
        errors.join("\n")
    );
    found
}

#[test]
fn the_docs_markers_are_well_formed_and_present() {
    let found = marked_steps();
    for doc in MUST_BE_MARKED {
        let steps = found
            .iter()
            .find(|(name, _)| name == doc)
            .map(|(_, steps)| steps.len())
            .unwrap_or_else(|| panic!("{doc} is missing"));
        assert!(steps > 0, "{doc} marks no commands for the doc runner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_commands_in_the_docs_run() {
    let mut failures = Vec::new();
    for (doc, steps) in marked_steps() {
        if steps.is_empty() {
            continue;
        }
        let environment = DocEnvironment::start().await;
        match run_steps(&doc, &steps, &environment.context()).await {
            Ok(()) => eprintln!("{doc}: {} marked step(s) passed", steps.len()),
            Err(report) => failures.push(format!(
                "{report}\n--- evshift log ---\n{}",
                environment.proxy.log_contents()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} document(s) with failing commands:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A context with no environment behind it, for the runner's own checks.
fn bare_context(timeout: Duration) -> (tempfile::TempDir, RunContext) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let context = RunContext {
        workdir: dir.path().to_path_buf(),
        env: vec![("GREETING".to_string(), "hello".to_string())],
        timeout,
    };
    (dir, context)
}

#[tokio::test]
async fn a_failing_block_is_reported_with_its_file_line_and_output() {
    let text = "\
Intro.

<!-- doctest -->
```sh
test \"$GREETING\" = hello
```

<!-- doctest -->
```sh
echo before
echo trouble >&2
false
echo after
```
";
    let (dir, context) = bare_context(Duration::from_secs(30));
    let steps = extract(text).unwrap();
    let report = run_steps("docs/example.md", &steps, &context)
        .await
        .expect_err("the second block fails");
    assert!(
        report.starts_with("docs/example.md:9: "),
        "names file and line: {report}"
    );
    assert!(report.contains("exit status: 1"), "{report}");
    assert!(
        report.contains("echo trouble >&2"),
        "shows the commands: {report}"
    );
    assert!(
        report.contains("before") && report.contains("trouble"),
        "{report}"
    );
    assert!(
        !report.contains("\nafter"),
        "bash -e stops at false: {report}"
    );

    // The first block alone passes: it sees the context's variables.
    run_steps("docs/example.md", &steps[..1], &context)
        .await
        .expect("the first block passes");
    drop(dir);
}

#[tokio::test]
async fn a_block_that_hangs_is_killed_with_what_it_started() {
    let text = "<!-- doctest -->\n```sh\n(sleep 300; echo late) &\necho started\nwait\n```\n";
    let (_dir, context) = bare_context(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let report = run_steps("README.md", &extract(text).unwrap(), &context)
        .await
        .expect_err("the block outlives its timeout");
    assert!(report.starts_with("README.md:2: "), "{report}");
    assert!(report.contains("killed"), "{report}");
    assert!(
        report.contains("started"),
        "output before the timeout: {report}"
    );
    // The background sleep was killed with the group, or reading its pipe would have waited.
    assert!(started.elapsed() < Duration::from_secs(30), "{report}");
}

#[tokio::test]
async fn a_failing_sql_block_names_its_line() {
    let text = "<!-- doctest -->\n```sql\nSELECT 1;\n```\n";
    // No server at this port: psql fails to connect, and that is reported like any failure.
    let (_dir, mut context) = bare_context(Duration::from_secs(30));
    let bindir = evshift_tests::PgBinaries::locate()
        .unwrap()
        .bindir()
        .to_path_buf();
    context.env.extend([
        ("PATH".to_string(), path_with(&[bindir])),
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), evshift_tests::free_port().to_string()),
        ("PSQLRC".to_string(), "/dev/null".to_string()),
    ]);
    let report = run_steps("docs/runbook.md", &extract(text).unwrap(), &context)
        .await
        .expect_err("nothing listens there");
    assert!(report.starts_with("docs/runbook.md:2: "), "{report}");
    assert!(report.contains("SELECT 1;"), "{report}");
    assert!(report.contains("psql"), "psql's complaint: {report}");
}
