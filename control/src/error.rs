//! `ControlError`: why a control-plane operation was refused or failed.
//!
//! Each variant has a public kind name (`kind()`), which the control socket puts in its JSON
//! error replies and `evshift ctl` prints. Scripts and runbooks match on these names, so they
//! never change once published; new failures get new variants.

use uuid::Uuid;

use crate::routing::MigrationState;

/// A control-plane failure. Messages are one line, fit for a JSON reply or a terminal.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The tenant has no route where one is required.
    #[error("tenant {tenant} has no route")]
    TenantNotFound { tenant: Uuid },

    /// The named store is not configured in this evshift.
    #[error("no store {store:?} is configured (known stores: {known})")]
    StoreNotFound { store: String, known: String },

    /// The tenant already has events, so placing it elsewhere would strand them.
    #[error("tenant {tenant} already has events in store {store:?}: use migrate to move it")]
    TenantHasEvents { tenant: Uuid, store: String },

    /// The tenant has a migration that has not reached a terminal state.
    #[error("tenant {tenant} is being migrated (migration {migration_id}, state {state})")]
    TenantMigrating {
        tenant: Uuid,
        migration_id: i64,
        state: MigrationState,
    },

    /// The control store could not be reached, or the connection to it broke.
    #[error("control store unavailable: {context}: {cause}")]
    ControlStoreUnavailable { context: String, cause: String },

    /// The control store answered with an error (a constraint, a permission, a bad row).
    #[error("control store error: {context}: {cause}")]
    ControlStore { context: String, cause: String },

    /// An event store could not be asked (unreachable, or it failed the query).
    #[error("store {store:?} unavailable: {cause}")]
    StoreUnavailable { store: String, cause: String },

    /// The operation needs the control store and this evshift has no `[control]` section.
    #[error("no control store is configured: add a [control] section with a url")]
    NoControlStore,

    /// The request could not be understood (malformed, unknown command, bad argument).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// No migration matches the id or tenant given.
    #[error("no migration {0}")]
    MigrationNotFound(String),

    /// The migration's state does not allow the requested step (see `transitions`).
    #[error("migration {migration_id} cannot {action} in state {state}{detail}")]
    InvalidStateTransition {
        migration_id: i64,
        state: MigrationState,
        action: String,
        /// Empty, or `": why"`.
        detail: String,
    },

    /// A tenant cannot be migrated to the store it is on.
    #[error("tenant {tenant} is already on store {store:?}")]
    SameStore { tenant: Uuid, store: String },

    /// A store's event-store schema is not the one evshift copies (columns or types differ).
    #[error("store {store:?} has an events schema evshift cannot copy: {detail}")]
    SchemaMismatch { store: String, detail: String },

    /// Verification found the target different from the source (DESIGN §9).
    #[error("migration {migration_id}: the target differs from the source: {summary}")]
    Consistency { migration_id: i64, summary: String },

    /// A source position cannot be translated to a target position (DESIGN §10).
    #[error("migration {migration_id}: cannot translate source position {position}: {reason}")]
    PositionMapping {
        migration_id: i64,
        position: i64,
        reason: String,
    },

    /// Named subscriptions have no checkpoint where the migration's subscribers keep them.
    #[error("no checkpoint for subscription(s) {names} on store(s) {stores}")]
    SubscriptionNotFound { names: String, stores: String },

    /// The cutover hold lasted longer than `cutover_timeout_ms`; the tenant went back to
    /// DUAL_WRITE on its source.
    #[error("migration {migration_id}: cutover {step} did not finish within {timeout_ms} ms; rolled back to DUAL_WRITE")]
    CutoverTimeout {
        migration_id: i64,
        step: String,
        timeout_ms: u64,
    },

    /// A bug in evshift: something that cannot happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    /// The public name of this kind of error, as JSON replies and `evshift ctl` show it.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlError::TenantNotFound { .. } => "TenantNotFoundError",
            ControlError::StoreNotFound { .. } => "StoreNotFoundError",
            ControlError::TenantHasEvents { .. } => "TenantHasEventsError",
            ControlError::TenantMigrating { .. } => "TenantMigratingError",
            ControlError::ControlStoreUnavailable { .. } => "ControlStoreUnavailableError",
            ControlError::ControlStore { .. } => "ControlStoreError",
            ControlError::StoreUnavailable { .. } => "StoreUnavailableError",
            ControlError::NoControlStore => "NoControlStoreError",
            ControlError::InvalidRequest(_) => "InvalidRequestError",
            ControlError::MigrationNotFound(_) => "MigrationNotFoundError",
            ControlError::InvalidStateTransition { .. } => "InvalidStateTransitionError",
            ControlError::SameStore { .. } => "SameStoreError",
            ControlError::SchemaMismatch { .. } => "SchemaMismatchError",
            ControlError::Consistency { .. } => "ConsistencyError",
            ControlError::PositionMapping { .. } => "PositionMappingError",
            ControlError::SubscriptionNotFound { .. } => "SubscriptionNotFoundError",
            ControlError::CutoverTimeout { .. } => "CutoverTimeoutError",
            ControlError::Internal(_) => "InternalError",
        }
    }

    /// Classifies a failed control-store call: a broken or refused connection (and a server
    /// that is shutting down) is "unavailable", anything the server itself refused is not.
    pub fn from_control_store(context: impl Into<String>, error: &tokio_postgres::Error) -> Self {
        let context = context.into();
        let cause = describe_pg_error(error);
        if is_unavailable(error) {
            ControlError::ControlStoreUnavailable { context, cause }
        } else {
            ControlError::ControlStore { context, cause }
        }
    }

    /// An event store failed to answer.
    pub fn store_unavailable(store: impl Into<String>, cause: impl Into<String>) -> Self {
        ControlError::StoreUnavailable {
            store: store.into(),
            cause: cause.into(),
        }
    }

    /// True for failures that a later retry may not see (the connection, not the request).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ControlError::ControlStoreUnavailable { .. } | ControlError::StoreUnavailable { .. }
        )
    }
}

/// Whether a tokio-postgres error means "the server is not there" rather than "the server said
/// no": no database error at all (I/O, closed, timeout), or SQLSTATE class 08 (connection
/// exception) or 57P0x (shutdown, crash, cannot connect now).
pub fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}

/// A tokio-postgres error as one line: its own text, then each cause, joined by `": "`.
///
/// tokio-postgres prints only the outer text ("db error", "error connecting to server"), and a
/// server error's DETAIL and HINT come on lines of their own, so neither is fit for a one-line
/// message as it stands.
pub fn describe_pg_error(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" (detail: {detail})"));
        }
        return one_line(&text);
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    one_line(&text)
}

/// Folds line breaks into spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_public_names_ending_in_error() {
        let tenant = Uuid::nil();
        let all = [
            ControlError::TenantNotFound { tenant },
            ControlError::StoreNotFound {
                store: "x".into(),
                known: "shared".into(),
            },
            ControlError::TenantHasEvents {
                tenant,
                store: "shared".into(),
            },
            ControlError::TenantMigrating {
                tenant,
                migration_id: 7,
                state: MigrationState::DualWrite,
            },
            ControlError::ControlStoreUnavailable {
                context: "c".into(),
                cause: "down".into(),
            },
            ControlError::ControlStore {
                context: "c".into(),
                cause: "no".into(),
            },
            ControlError::store_unavailable("shared", "down"),
            ControlError::NoControlStore,
            ControlError::InvalidRequest("x".into()),
            ControlError::MigrationNotFound("7".into()),
            ControlError::InvalidStateTransition {
                migration_id: 7,
                state: MigrationState::RolledBack,
                action: "pause".into(),
                detail: String::new(),
            },
            ControlError::SameStore {
                tenant,
                store: "shared".into(),
            },
            ControlError::SchemaMismatch {
                store: "x".into(),
                detail: "payload is json".into(),
            },
            ControlError::Consistency {
                migration_id: 7,
                summary: "1 event missing".into(),
            },
            ControlError::PositionMapping {
                migration_id: 7,
                position: 12,
                reason: "no mappings".into(),
            },
            ControlError::SubscriptionNotFound {
                names: "orders".into(),
                stores: "shared".into(),
            },
            ControlError::CutoverTimeout {
                migration_id: 7,
                step: "waiting for in-flight transactions".into(),
                timeout_ms: 5000,
            },
            ControlError::Internal("x".into()),
        ];
        for error in all {
            assert!(error.kind().ends_with("Error"), "{}", error.kind());
            assert!(!error.to_string().contains('\n'));
        }
    }

    #[test]
    fn one_line_folds_breaks() {
        assert_eq!(one_line("a\nDETAIL:  b\n"), "a DETAIL: b");
    }
}
