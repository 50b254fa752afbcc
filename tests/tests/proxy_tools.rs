//! psql, pgbench and a Python driver (psycopg 3) through the real proxy.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::SingleStore;
use evshift_tests::PgBinaries;

fn run(mut command: Command) -> Output {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy_prepare_and_error_stop() {
    let setup = SingleStore::start().await;
    let psql = PgBinaries::locate().unwrap().psql().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        format!(
            r#"
CREATE TABLE s (id int PRIMARY KEY, note text);
INSERT INTO s SELECT g, 'note ' || g FROM generate_series(1, 500) g;
\copy s TO '{csv}' CSV
CREATE TABLE s2 (LIKE s);
\copy s2 FROM '{csv}' CSV
PREPARE pick(int) AS SELECT note FROM s2 WHERE id = $1;
EXECUTE pick(42);
SELECT count(*) AS copied FROM s2 \gset
\echo copied=:copied
"#,
            csv = csv.display()
        ),
    )
    .unwrap();
    let url = setup.proxy.url("app", "postgres");
    let mut command = Command::new(&psql);
    command
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-f",
        ])
        .arg(&script);
    let output = run(command);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "psql failed: {}",
        text(&output.stderr)
    );
    assert!(stdout.contains("note 42"), "{stdout}");
    assert!(stdout.contains("copied=500"), "{stdout}");
    let direct = setup.direct().await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM s2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 500);

    // ON_ERROR_STOP: the store's error reaches psql and stops the script (exit 3).
    let mut command = Command::new(&psql);
    command.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        &url,
        "-c",
        "SELECT * FROM no_such_table",
    ]);
    let output = run(command);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("relation \"no_such_table\" does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_all_three_protocol_modes_without_failures() {
    let setup = SingleStore::start().await;
    let pgbench = PgBinaries::locate().unwrap().pgbench().unwrap();
    let url = setup.proxy.url("app", "postgres");
    // Initialisation through evshift too: it uses COPY FROM STDIN.
    let mut init = Command::new(&pgbench);
    init.args(["-i", "-s", "1", "-q", &url]);
    let output = run(init);
    assert!(
        output.status.success(),
        "pgbench -i: {}",
        text(&output.stderr)
    );
    let direct = setup.direct().await;
    let accounts: i64 = direct
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(accounts, 100_000);

    for mode in ["simple", "extended", "prepared"] {
        let before: i64 = direct
            .query_one("SELECT count(*) FROM pgbench_history", &[])
            .await
            .unwrap()
            .get(0);
        let mut bench = Command::new(&pgbench);
        bench.args(["-n", "-M", mode, "-c", "4", "-j", "2", "-t", "200", &url]);
        let output = run(bench);
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "pgbench -M {mode}: {}{stdout}",
            text(&output.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 800/800"),
            "{stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0 "),
            "{stdout}"
        );
        let after: i64 = direct
            .query_one("SELECT count(*) FROM pgbench_history", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            after - before,
            800,
            "every pgbench transaction committed on the store"
        );
    }
}

/// The Python interpreter with the test requirements: `EVSHIFT_PYTHON`, else the workspace's
/// `.venv` (both prepared by `scripts/test`).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EVSHIFT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python environment for client tests: run scripts/test (it creates .venv with tests/python/requirements.txt) or set EVSHIFT_PYTHON"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_three_through_the_proxy() {
    let setup = SingleStore::start().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/psycopg_through_proxy.py");
    let mut command = Command::new(python());
    command
        .arg(&script)
        .arg(setup.proxy.url("app", "postgres"))
        .arg(setup.store.url("postgres"));
    let output = run(command);
    assert!(
        output.status.success(),
        "psycopg script failed:\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout).trim(), "ok");
}
