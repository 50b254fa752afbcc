//! The migration model: how a migration is named, its options, its status and its audit rows,
//! as the control store keeps them and the control socket shows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::ControlError;
use crate::routing::MigrationState;

/// How a command names a migration: by its id, or by its tenant (the tenant's active
/// migration, else its latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationRef {
    Id(i64),
    Tenant(Uuid),
}

impl FromStr for MigrationRef {
    type Err = ControlError;

    /// A UUID is a tenant, a positive integer a migration id.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(tenant) = Uuid::parse_str(text) {
            return Ok(MigrationRef::Tenant(tenant));
        }
        match text.parse::<i64>() {
            Ok(id) if id > 0 => Ok(MigrationRef::Id(id)),
            _ => Err(ControlError::InvalidRequest(format!(
                "{text:?} is neither a migration id (a positive integer) nor a tenant id (a UUID)"
            ))),
        }
    }
}

impl fmt::Display for MigrationRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationRef::Id(id) => write!(f, "{id}"),
            MigrationRef::Tenant(tenant) => write!(f, "of tenant {tenant}"),
        }
    }
}

/// How the cutover verifies the target (DESIGN §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    Count,
    #[default]
    Hash,
    Full,
}

impl FromStr for VerifyMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "count" => Ok(VerifyMode::Count),
            "hash" => Ok(VerifyMode::Hash),
            "full" => Ok(VerifyMode::Full),
            other => Err(format!(
                "unknown verify mode {other:?}: count, hash or full"
            )),
        }
    }
}

/// The options of one migration, fixed when it starts (the `config` JSON of its row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationOptions {
    /// Events per copy batch (and per checkpoint).
    pub batch_size: u32,
    /// Copy speed limit; 0 = unlimited.
    pub rate_limit_events_per_sec: u64,
    /// Whether the cutover waits for `evshift ctl cutover` instead of starting at low lag.
    pub manual_cutover: bool,
    /// How the cutover verifies the target.
    pub verify: VerifyMode,
    /// Subscriptions whose checkpoints the cutover translates to the target's positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
}

/// What an operator may override when starting a migration; the rest comes from `[migration]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionOverrides {
    pub batch_size: Option<u32>,
    pub rate_limit_events_per_sec: Option<u64>,
    pub manual_cutover: bool,
    pub verify: Option<VerifyMode>,
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// A request to migrate a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartMigration {
    pub tenant: Uuid,
    pub target_store: String,
    pub overrides: OptionOverrides,
    /// Who asked, for the audit log.
    pub operator: String,
}

/// One migration as `status` reports it: its `tenant_migrations` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    pub id: i64,
    pub tenant_id: Uuid,
    pub source_store: String,
    pub target_store: String,
    pub state: MigrationState,
    pub paused: bool,
    pub progress_percentage: f64,
    pub events_total: i64,
    pub events_copied: i64,
    /// Source events of the tenant not yet in the target, as of the last checkpoint.
    pub lag_events: i64,
    pub events_per_second: f64,
    /// The checkpoint: the last source `global_position` copied.
    pub last_source_position: i64,
    pub error_message: Option<String>,
    pub config: Value,
    /// Timestamps, RFC 3339 in UTC.
    pub created_at: String,
    pub started_at: Option<String>,
    pub bulk_copy_completed_at: Option<String>,
    pub dual_write_started_at: Option<String>,
    pub cutover_started_at: Option<String>,
    pub completed_at: Option<String>,
}

impl MigrationStatus {
    /// The options the migration runs with, as far as its stored JSON can be read.
    pub fn options(&self) -> Result<MigrationOptions, ControlError> {
        serde_json::from_value(self.config.clone()).map_err(|e| ControlError::ControlStore {
            context: format!("config of migration {}", self.id),
            cause: e.to_string(),
        })
    }
}

/// One row of `migration_audit_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub migration_id: i64,
    pub event_type: String,
    pub details: Value,
    pub operator: String,
    /// RFC 3339 in UTC.
    pub timestamp: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_ids_or_tenants() {
        assert_eq!("12".parse::<MigrationRef>().unwrap(), MigrationRef::Id(12));
        let tenant = Uuid::new_v4();
        assert_eq!(
            tenant.to_string().parse::<MigrationRef>().unwrap(),
            MigrationRef::Tenant(tenant)
        );
        for bad in ["0", "-3", "x", ""] {
            assert_eq!(
                bad.parse::<MigrationRef>().unwrap_err().kind(),
                "InvalidRequestError"
            );
        }
    }

    #[test]
    fn options_round_trip_as_json() {
        let options = MigrationOptions {
            batch_size: 1000,
            rate_limit_events_per_sec: 0,
            manual_cutover: false,
            verify: VerifyMode::Hash,
            subscriptions: Vec::new(),
        };
        let json = serde_json::to_value(&options).unwrap();
        assert_eq!(json["verify"], "hash");
        assert_eq!(
            serde_json::from_value::<MigrationOptions>(json).unwrap(),
            options
        );
    }
}
