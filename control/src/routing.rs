//! The routing table: which store holds each tenant, and where a migration is taking it.
//!
//! Readers take a snapshot with `RoutingHandle::load` (lock-free); the control plane publishes a
//! new table with `store`. A tenant without an entry lives on the default store.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The shared, atomically swapped routing table.
pub type RoutingHandle = Arc<ArcSwap<RoutingTable>>;

/// Phases of a tenant migration, named as the control store and operators see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MigrationState {
    Pending,
    BulkCopy,
    DualWrite,
    CutoverPaused,
    Migrated,
    Failed,
    RolledBack,
}

impl MigrationState {
    pub const ALL: [MigrationState; 7] = [
        MigrationState::Pending,
        MigrationState::BulkCopy,
        MigrationState::DualWrite,
        MigrationState::CutoverPaused,
        MigrationState::Migrated,
        MigrationState::Failed,
        MigrationState::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Pending => "PENDING",
            MigrationState::BulkCopy => "BULK_COPY",
            MigrationState::DualWrite => "DUAL_WRITE",
            MigrationState::CutoverPaused => "CUTOVER_PAUSED",
            MigrationState::Migrated => "MIGRATED",
            MigrationState::Failed => "FAILED",
            MigrationState::RolledBack => "ROLLED_BACK",
        }
    }

    /// MIGRATED, FAILED and ROLLED_BACK end a migration.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationState::Migrated | MigrationState::Failed | MigrationState::RolledBack
        )
    }
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MigrationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MigrationState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown migration state {s:?}"))
    }
}

/// A migration in progress for a tenant, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMigration {
    pub migration_id: i64,
    pub state: MigrationState,
    pub target_store: String,
}

/// Where one tenant lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub tenant_id: Uuid,
    /// The store that holds the tenant (the source while a migration runs).
    pub store: String,
    pub migration: Option<RouteMigration>,
}

impl Route {
    /// The store that serves the tenant's reads (DESIGN §3: the target only once MIGRATED).
    pub fn read_store(&self) -> &str {
        match &self.migration {
            Some(m) if m.state == MigrationState::Migrated => &m.target_store,
            _ => &self.store,
        }
    }

    /// True when the tenant's statements must wait at the gate.
    pub fn is_held(&self) -> bool {
        matches!(&self.migration, Some(m) if m.state == MigrationState::CutoverPaused)
    }
}

/// An immutable snapshot of all tenant routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    routes: HashMap<Uuid, Route>,
}

impl RoutingTable {
    pub fn new(routes: impl IntoIterator<Item = Route>) -> RoutingTable {
        RoutingTable {
            routes: routes.into_iter().map(|r| (r.tenant_id, r)).collect(),
        }
    }

    pub fn route(&self, tenant: &Uuid) -> Option<&Route> {
        self.routes.get(tenant)
    }

    /// All routes, sorted by tenant id for stable output.
    pub fn routes(&self) -> Vec<&Route> {
        let mut all: Vec<&Route> = self.routes.values().collect();
        all.sort_by_key(|r| r.tenant_id);
        all
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A handle holding `table`.
pub fn handle(table: RoutingTable) -> RoutingHandle {
    Arc::new(ArcSwap::from_pointee(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for state in MigrationState::ALL {
            assert_eq!(state.as_str().parse::<MigrationState>(), Ok(state));
        }
        assert!("MOVING".parse::<MigrationState>().is_err());
    }

    #[test]
    fn reads_follow_the_target_only_once_migrated() {
        let tenant = Uuid::new_v4();
        let mut route = Route {
            tenant_id: tenant,
            store: "shared".into(),
            migration: Some(RouteMigration {
                migration_id: 1,
                state: MigrationState::DualWrite,
                target_store: "dedicated".into(),
            }),
        };
        assert_eq!(route.read_store(), "shared");
        route.migration.as_mut().unwrap().state = MigrationState::Migrated;
        assert_eq!(route.read_store(), "dedicated");
        let table = RoutingTable::new([route]);
        assert_eq!(table.route(&tenant).unwrap().read_store(), "dedicated");
    }
}
