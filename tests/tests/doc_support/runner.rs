//! Running a document's steps in order, each as its own process, and reporting the first one
//! that fails with the document, the line, the script and everything it printed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::markdown::{DocStep, StepBody};

/// How long output pipes may stay open after a step ended.
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Where steps run and what they see.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The working directory of every step.
    pub workdir: PathBuf,
    /// Variables set for every step, on top of the test's own environment.
    pub env: Vec<(String, String)>,
    /// The bound of one step; a step still running then is killed, with its children.
    pub timeout: Duration,
}

/// What one step printed and how it ended.
struct Outcome {
    status: String,
    success: bool,
    stdout: String,
    stderr: String,
}

/// `PATH` with `dirs` first, then the test's own `PATH`.
pub fn path_with(dirs: &[PathBuf]) -> String {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let all = dirs
        .iter()
        .cloned()
        .chain(std::env::split_paths(&inherited));
    std::env::join_paths(all)
        .expect("directories without ':'")
        .to_string_lossy()
        .into_owned()
}

/// Runs `steps` of document `doc` in order; stops at the first failure and returns its report.
pub async fn run_steps(doc: &str, steps: &[DocStep], context: &RunContext) -> Result<(), String> {
    for step in steps {
        let (script, outcome) = match &step.body {
            StepBody::Shell(script) => (script, run_shell(script, context).await?),
            StepBody::Sql(sql) => (sql, run_sql(sql, context).await?),
        };
        if !outcome.success {
            return Err(format!(
                "{doc}:{line}: the marked commands failed ({status})\n\
                 --- commands ---\n{script}\
                 --- stdout ---\n{stdout}\n\
                 --- stderr ---\n{stderr}",
                line = step.line,
                status = outcome.status,
                stdout = outcome.stdout,
                stderr = outcome.stderr,
            ));
        }
    }
    Ok(())
}

/// `bash -e -o pipefail -c SCRIPT`.
async fn run_shell(script: &str, context: &RunContext) -> Result<Outcome, String> {
    let mut command = tokio::process::Command::new("bash");
    command.args(["-e", "-o", "pipefail", "-c", script]);
    run(command, context).await
}

/// psql through evshift (the `PG*` variables of the context), stopping at the first error.
async fn run_sql(sql: &str, context: &RunContext) -> Result<Outcome, String> {
    let file = tempfile::NamedTempFile::new().map_err(|e| format!("a temporary file: {e}"))?;
    std::fs::write(file.path(), sql).map_err(|e| format!("write the SQL: {e}"))?;
    let mut command = tokio::process::Command::new("psql");
    command
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(file.path());
    run(command, context).await
}

async fn run(
    mut command: tokio::process::Command,
    context: &RunContext,
) -> Result<Outcome, String> {
    command
        .current_dir(&context.workdir)
        .envs(context.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout also ends what the script started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    // Read while it runs, so that a step that times out still shows what it printed.
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let (status, success) = match tokio::time::timeout(context.timeout, child.wait()).await {
        Ok(Ok(status)) => (status.to_string(), status.success()),
        Ok(Err(e)) => return Err(format!("waiting for {command:?}: {e}")),
        Err(_) => {
            if let Some(group) = child.id() {
                // SAFETY: kill(2) on the step's process group, whose leader is not reaped yet
                // (so the group id is still its own); no memory is involved.
                unsafe {
                    libc::kill(-(group as libc::pid_t), libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            (
                format!("still running after {:?}, killed", context.timeout),
                false,
            )
        }
    };
    Ok(Outcome {
        status,
        success,
        stdout: collected(stdout).await,
        stderr: collected(stderr).await,
    })
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The text a reader task collected; a background process the step left holding the pipe
/// would keep it open, so the wait is bounded.
async fn collected(reader: tokio::task::JoinHandle<String>) -> String {
    match tokio::time::timeout(PIPE_GRACE, reader).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => format!("(output lost: {e})"),
        Err(_) => format!("(output still open {PIPE_GRACE:?} after the step ended)"),
    }
}
