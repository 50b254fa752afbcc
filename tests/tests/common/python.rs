//! The Python environments the suites drive real Python clients with.

use std::path::PathBuf;

/// The interpreter of `.venv-eventsource`, or `None` after saying why the test does not run.
pub fn eventsource_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("EVSHIFT_EVENTSOURCE_PYTHON") {
        return Some(PathBuf::from(python));
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "EVSHIFT_EVENTSOURCE_PYTHON is not set: under CI, scripts/test must provide the \
             Python >= 3.13 environment with eventsource-py (.venv-eventsource, \
             tests/python/requirements-eventsource.txt)"
        );
    }
    eprintln!(
        "skipped: no Python >= 3.13 environment (run scripts/test): EVSHIFT_EVENTSOURCE_PYTHON \
         is not set, so eventsource-py cannot be driven through evshift"
    );
    None
}

/// `postgres://app@HOST:PORT/postgres` as a SQLAlchemy asyncpg URL.
pub fn asyncpg_url(url: &str) -> String {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("not a PostgreSQL URL: {url}"));
    format!("postgresql+asyncpg://{rest}")
}
