//! Rolling a tenant back off a target store: the copied rows, snapshots and nothing else.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::retry::Failure;

/// What a rollback removed from the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub events: u64,
    pub snapshots: u64,
}

/// Deletes `tenant`'s snapshots and events from the target in one transaction. Snapshots go
/// first: they belong to the tenant through its events.
///
/// The coordinator refuses to start a migration onto a store that already holds events of the
/// tenant, so every row removed here was copied by the migration.
pub async fn remove_tenant(
    target: &mut Client,
    store: &str,
    tenant: Uuid,
) -> Result<Removed, Failure> {
    let failed = |what: &str, e: &tokio_postgres::Error| {
        Failure::from_pg(&format!("{what} on target store {store:?}"), e)
    };
    let transaction = target
        .transaction()
        .await
        .map_err(|e| failed("begin the rollback", &e))?;
    let snapshots = transaction
        .execute(
            "DELETE FROM snapshots s
              WHERE EXISTS (SELECT 1 FROM events e
                             WHERE e.aggregate_id = s.aggregate_id AND e.tenant_id = $1)",
            &[&tenant],
        )
        .await
        .map_err(|e| failed("delete the tenant's snapshots", &e))?;
    let events = transaction
        .execute("DELETE FROM events WHERE tenant_id = $1", &[&tenant])
        .await
        .map_err(|e| failed("delete the tenant's events", &e))?;
    transaction
        .commit()
        .await
        .map_err(|e| failed("commit the rollback", &e))?;
    Ok(Removed { events, snapshots })
}
