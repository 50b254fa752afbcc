//! `Failure` and `RetryPolicy`: which errors of a migration are worth retrying, and how long.
//!
//! A lost connection (to the source, the target or the control store), a server shutting down,
//! a serialization failure or a deadlock are transient: the copier backs off (exponentially,
//! with jitter) and tries again from its checkpoint. Anything a server refused for a reason
//! retrying cannot change (a constraint, a schema difference, bad data) is permanent.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::backoff::Backoff;
use crate::error::{describe_pg_error, is_unavailable, ControlError};
use crate::settings::MigrationSettings;

/// Why one attempt of a migration step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt after a delay.
    Transient(String),
    /// Retrying cannot help: the migration fails.
    Permanent(String),
}

impl Failure {
    /// Classifies a tokio-postgres error from `what` (e.g. "insert a batch into store x").
    pub fn from_pg(what: &str, error: &tokio_postgres::Error) -> Failure {
        let message = format!("{what}: {}", describe_pg_error(error));
        if is_transient_pg(error) {
            Failure::Transient(message)
        } else {
            Failure::Permanent(message)
        }
    }

    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient(_))
    }
}

impl From<ControlError> for Failure {
    fn from(error: ControlError) -> Failure {
        if error.is_unavailable() {
            Failure::Transient(error.to_string())
        } else {
            Failure::Permanent(error.to_string())
        }
    }
}

/// Whether a server error is worth retrying: the connection or the server went away, or a
/// concurrency failure that the same statement may not meet again.
pub fn is_transient_pg(error: &tokio_postgres::Error) -> bool {
    let Some(code) = error.code() else {
        // No server error: the connection broke (transient), unless the client itself could
        // not encode or decode a value, which no retry changes.
        let text = error.to_string();
        return !(text.starts_with("error serializing")
            || text.starts_with("error deserializing")
            || text.starts_with("invalid configuration"));
    };
    if is_unavailable(error) {
        return true;
    }
    [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
    ]
    .contains(code)
}

/// Consecutive transient failures allowed, and the delays between attempts.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    limit: u32,
    failures: u32,
    backoff: Backoff,
}

impl RetryPolicy {
    pub fn new(settings: &MigrationSettings) -> RetryPolicy {
        RetryPolicy {
            limit: settings.retry_limit,
            failures: 0,
            backoff: Backoff::new(settings.retry_initial_backoff, settings.retry_max_backoff),
        }
    }

    /// After a failed attempt: the delay before the next one, or `None` when the limit of
    /// consecutive failures is reached.
    pub fn after_failure(&mut self) -> Option<Duration> {
        self.failures += 1;
        if self.failures > self.limit {
            return None;
        }
        Some(self.backoff.next_delay())
    }

    /// After progress: the count starts again.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.backoff.reset();
    }

    /// Failed attempts since the last progress.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_consecutive_failures() {
        let settings = MigrationSettings {
            retry_limit: 2,
            retry_initial_backoff: Duration::from_millis(1),
            retry_max_backoff: Duration::from_millis(4),
            ..Default::default()
        };
        let mut policy = RetryPolicy::new(&settings);
        assert!(policy.after_failure().is_some());
        assert!(policy.after_failure().is_some());
        assert!(policy.after_failure().is_none());
        policy.reset();
        assert_eq!(policy.failures(), 0);
        assert!(policy.after_failure().unwrap() <= Duration::from_millis(4));
    }

    #[test]
    fn unavailable_control_errors_are_transient() {
        let down: Failure = ControlError::store_unavailable("x", "refused").into();
        assert!(down.is_transient());
        let refused: Failure = ControlError::SchemaMismatch {
            store: "x".into(),
            detail: "d".into(),
        }
        .into();
        assert!(!refused.is_transient());
    }
}
