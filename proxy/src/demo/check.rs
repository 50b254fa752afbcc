//! The demo's proof that nothing was lost or duplicated: every event the load had
//! acknowledged is exactly once in the store that holds its tenant now, and that store holds
//! no other event on the load's streams (beyond those whose COMMIT was never answered).
//!
//! Asked directly of the stores, not through evshift, so that routing cannot hide anything.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use tokio_postgres::Client;
use uuid::Uuid;

use super::load::LoadRecord;

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Acknowledged events not in the store holding their tenant.
    pub lost: u64,
    /// Extra copies: acknowledged events found more than once, and events on the load's
    /// streams that no client had written.
    pub duplicated: u64,
}

/// Checks every tenant of `record` in the store `holder` names for it.
pub async fn check(
    record: &LoadRecord,
    holder: impl Fn(Uuid) -> String,
    stores: &HashMap<String, Client>,
) -> Result<CheckOutcome> {
    let uncertain: HashSet<Uuid> = record.uncertain.iter().copied().collect();
    let mut outcome = CheckOutcome::default();
    for (tenant, acknowledged) in &record.acknowledged {
        let store = holder(*tenant);
        let client = stores
            .get(&store)
            .with_context(|| format!("no connection to store {store}"))?;
        let streams = record.streams.get(tenant).cloned().unwrap_or_default();
        let found = events_on_streams(client, *tenant, &streams)
            .await
            .with_context(|| format!("read tenant {tenant}'s events on store {store}"))?;
        let tenant_outcome = compare(acknowledged, &found, &uncertain);
        outcome.lost += tenant_outcome.lost;
        outcome.duplicated += tenant_outcome.duplicated;
    }
    Ok(outcome)
}

/// The event ids on `streams` of `tenant`, one entry per row.
async fn events_on_streams(client: &Client, tenant: Uuid, streams: &[Uuid]) -> Result<Vec<Uuid>> {
    let rows = client
        .query(
            "SELECT event_id FROM events WHERE tenant_id = $1 AND aggregate_id = ANY($2)",
            &[&tenant, &streams],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Acknowledged ids against the rows found: missing ones are lost; a second row of an id,
/// or a row no client acknowledged or might have written, is a duplicate.
fn compare(acknowledged: &[Uuid], found: &[Uuid], uncertain: &HashSet<Uuid>) -> CheckOutcome {
    let mut rows: HashMap<Uuid, u64> = HashMap::new();
    for id in found {
        *rows.entry(*id).or_default() += 1;
    }
    let acknowledged: HashSet<Uuid> = acknowledged.iter().copied().collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !rows.contains_key(id))
        .count() as u64;
    let duplicated = rows
        .iter()
        .map(|(id, n)| {
            if acknowledged.contains(id) || uncertain.contains(id) {
                n - 1
            } else {
                *n
            }
        })
        .sum();
    CheckOutcome { lost, duplicated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128) -> Vec<Uuid> {
        (1..=n).map(Uuid::from_u128).collect()
    }

    #[test]
    fn all_there_once_is_clean() {
        let acked = ids(3);
        let outcome = compare(&acked, &acked, &HashSet::new());
        assert_eq!(outcome, CheckOutcome::default());
    }

    #[test]
    fn missing_extra_and_repeated_rows_are_counted() {
        let acked = ids(3);
        let unknown = Uuid::from_u128(99);
        let maybe = Uuid::from_u128(50);
        let found = vec![acked[0], acked[0], acked[1], unknown, maybe];
        let outcome = compare(&acked, &found, &HashSet::from([maybe]));
        assert_eq!(
            outcome,
            CheckOutcome {
                lost: 1,
                duplicated: 2
            }
        );
    }
}
