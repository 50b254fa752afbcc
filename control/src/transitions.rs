//! The migration state machine of DESIGN §5 as an explicit table of allowed transitions.
//!
//! ```text
//! PENDING -> BULK_COPY -> DUAL_WRITE -> CUTOVER_PAUSED -> MIGRATED
//!                            ^---------------/  (cutover timed out or failed)
//! any of PENDING, BULK_COPY, DUAL_WRITE, CUTOVER_PAUSED -> FAILED       (an error)
//! any of PENDING, BULK_COPY, DUAL_WRITE, CUTOVER_PAUSED, FAILED -> ROLLED_BACK  (abort)
//! FAILED -> BULK_COPY | DUAL_WRITE                                   (resume from checkpoint)
//! ```
//!
//! A FAILED migration still holds the rows it copied, so it can be resumed or aborted, and it
//! keeps other migrations of its tenant out until it is rolled back.

use crate::error::ControlError;
use crate::routing::MigrationState;

use MigrationState::*;

/// Every allowed `(from, to)` pair. Anything else is an `InvalidStateTransitionError`.
pub const ALLOWED_TRANSITIONS: &[(MigrationState, MigrationState)] = &[
    (Pending, BulkCopy),
    (BulkCopy, DualWrite),
    (DualWrite, CutoverPaused),
    (CutoverPaused, Migrated),
    (CutoverPaused, DualWrite),
    (Pending, Failed),
    (BulkCopy, Failed),
    (DualWrite, Failed),
    (CutoverPaused, Failed),
    (Pending, RolledBack),
    (BulkCopy, RolledBack),
    (DualWrite, RolledBack),
    (CutoverPaused, RolledBack),
    (Failed, RolledBack),
    (Failed, BulkCopy),
    (Failed, DualWrite),
];

/// Whether `from -> to` is in [`ALLOWED_TRANSITIONS`].
pub fn is_allowed(from: MigrationState, to: MigrationState) -> bool {
    ALLOWED_TRANSITIONS.contains(&(from, to))
}

/// `Ok` if `from -> to` is allowed, else the `InvalidStateTransition` error for `migration_id`.
pub fn check(
    migration_id: i64,
    from: MigrationState,
    to: MigrationState,
) -> Result<(), ControlError> {
    if is_allowed(from, to) {
        return Ok(());
    }
    Err(ControlError::InvalidStateTransition {
        migration_id,
        state: from,
        action: format!("move to {to}"),
        detail: String::new(),
    })
}

/// True while the migration keeps other migrations of its tenant out (the unique index
/// `tenant_migrations_one_active`): every state but MIGRATED and ROLLED_BACK.
pub fn is_active(state: MigrationState) -> bool {
    !matches!(state, Migrated | RolledBack)
}

/// True while a copier should run for the migration (unless it is paused).
pub fn is_copying(state: MigrationState) -> bool {
    matches!(state, Pending | BulkCopy | DualWrite)
}

/// Whether an operator may pause a migration in `state` (a copier runs or will run).
pub fn can_pause(state: MigrationState) -> bool {
    is_copying(state)
}

/// Whether `abort` applies: every state that may hold copied rows and is not finished.
pub fn can_abort(state: MigrationState) -> bool {
    is_allowed(state, RolledBack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_is_allowed() {
        let path = [Pending, BulkCopy, DualWrite, CutoverPaused, Migrated];
        for pair in path.windows(2) {
            assert!(is_allowed(pair[0], pair[1]), "{:?}", pair);
        }
        assert!(is_allowed(CutoverPaused, DualWrite));
    }

    #[test]
    fn terminal_states_go_nowhere_and_nothing_skips_ahead() {
        for to in MigrationState::ALL {
            assert!(!is_allowed(Migrated, to));
            assert!(!is_allowed(RolledBack, to));
        }
        assert!(!is_allowed(Pending, DualWrite));
        assert!(!is_allowed(BulkCopy, Migrated));
        assert!(!is_allowed(DualWrite, Migrated));
        assert!(!is_allowed(Migrated, RolledBack));
        let error = check(3, Migrated, RolledBack).unwrap_err();
        assert_eq!(error.kind(), "InvalidStateTransitionError");
        assert!(error.to_string().contains("MIGRATED"), "{error}");
    }

    #[test]
    fn every_non_terminal_state_can_fail_and_be_aborted() {
        for state in [Pending, BulkCopy, DualWrite, CutoverPaused] {
            assert!(is_allowed(state, Failed));
            assert!(can_abort(state));
            assert!(is_active(state));
        }
        assert!(can_abort(Failed) && is_active(Failed));
        assert!(!can_abort(Migrated) && !can_abort(RolledBack));
        assert!(!can_pause(Failed) && !can_pause(CutoverPaused));
    }
}
