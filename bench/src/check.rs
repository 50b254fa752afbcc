//! The end check of a load: every acknowledged event is present exactly once in the store that
//! now holds its tenant. Where a tenant lives comes from an explicit mapping, else from the
//! control store's `tenant_routing` table, else it is the default store.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::recorder::Acknowledged;
use crate::workload::redact_url;

/// Event ids asked for per query.
const CHUNK: usize = 5_000;
/// Missing ids listed per tenant in a report.
const MISSING_SAMPLES: usize = 5;

/// Where each tenant's events are to be found.
#[derive(Debug, Clone, Default)]
pub struct StoreMap {
    /// The store of tenants without a route.
    pub default_url: String,
    /// Store ids (as in `tenant_routing.store_id`) to URLs.
    pub stores: BTreeMap<String, String>,
    /// The control store, whose `tenant_routing` says where routed tenants live.
    pub control_url: Option<String>,
    /// Explicit tenant -> URL; wins over the control store.
    pub tenants: BTreeMap<Uuid, String>,
}

/// What the check found for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantCheck {
    pub tenant: Uuid,
    /// The store checked (URL without password).
    pub store: String,
    pub acknowledged: usize,
    /// Acknowledged events found exactly once.
    pub present: usize,
    pub missing: usize,
    /// Acknowledged events found more than once.
    pub duplicated: usize,
    /// A few missing event ids.
    pub missing_sample: Vec<Uuid>,
}

/// The check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// No event missing, none duplicated.
    pub ok: bool,
    pub acknowledged: usize,
    pub tenants: Vec<TenantCheck>,
}

impl CheckReport {
    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let missing: usize = self.tenants.iter().map(|t| t.missing).sum();
        let duplicated: usize = self.tenants.iter().map(|t| t.duplicated).sum();
        format!(
            "check {}: {} acknowledged events of {} tenants, {missing} missing, {duplicated} duplicated",
            if self.ok { "passed" } else { "FAILED" },
            self.acknowledged,
            self.tenants.len()
        )
    }
}

impl StoreMap {
    /// Parses `TENANT=URL`.
    pub fn parse_tenant_store(spec: &str) -> Result<(Uuid, String)> {
        let (tenant, url) = spec
            .split_once('=')
            .with_context(|| format!("expected TENANT=URL, not {spec:?}"))?;
        let tenant = tenant
            .trim()
            .parse::<Uuid>()
            .with_context(|| format!("{tenant:?} is not a tenant uuid"))?;
        Ok((tenant, url.trim().to_owned()))
    }

    /// Parses `STORE_ID=URL`.
    pub fn parse_store(spec: &str) -> Result<(String, String)> {
        match spec.split_once('=') {
            Some((id, url)) if !id.trim().is_empty() && !url.trim().is_empty() => {
                Ok((id.trim().to_owned(), url.trim().to_owned()))
            }
            _ => bail!("expected STORE_ID=URL, not {spec:?}"),
        }
    }

    /// The URL of the store holding each of `tenants`.
    pub async fn resolve(&self, tenants: &[Uuid]) -> Result<BTreeMap<Uuid, String>> {
        let routed = match &self.control_url {
            Some(url) => routes_from_control_store(url).await?,
            None => HashMap::new(),
        };
        let mut resolved = BTreeMap::new();
        for tenant in tenants {
            let url = if let Some(url) = self.tenants.get(tenant) {
                url.clone()
            } else if let Some(store) = routed.get(tenant) {
                self.stores.get(store).cloned().with_context(|| {
                    format!(
                        "tenant {tenant} is routed to store {store:?}, but no URL was given for it \
                         (--store {store}=URL)"
                    )
                })?
            } else {
                self.default_url.clone()
            };
            resolved.insert(*tenant, url);
        }
        Ok(resolved)
    }
}

/// `tenant_routing`: tenant -> the id of the store that holds it (the target once its
/// migration is MIGRATED: `store_id` stays the source until the route is rewritten).
async fn routes_from_control_store(url: &str) -> Result<HashMap<Uuid, String>> {
    let client = connect(url).await?;
    let rows = client
        .query(
            "SELECT tenant_id, CASE WHEN migration_state = 'MIGRATED' THEN target_store_id \
             ELSE store_id END FROM tenant_routing",
            &[],
        )
        .await
        .with_context(|| format!("read tenant_routing from {}", redact_url(url)))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Checks that every event of `acknowledged` is exactly once in its tenant's store.
pub async fn check_acknowledged(
    acknowledged: &[Acknowledged],
    stores: &StoreMap,
) -> Result<CheckReport> {
    let mut by_tenant: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for ack in acknowledged {
        by_tenant.entry(ack.tenant).or_default().push(ack.event_id);
    }
    let tenants: Vec<Uuid> = by_tenant.keys().copied().collect();
    let holders = stores.resolve(&tenants).await?;
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut checks = Vec::new();
    for (tenant, events) in &by_tenant {
        let url = &holders[tenant];
        if !clients.contains_key(url) {
            clients.insert(url.clone(), connect(url).await?);
        }
        let counts = count_events(&clients[url], *tenant, events)
            .await
            .with_context(|| format!("check tenant {tenant} in {}", redact_url(url)))?;
        checks.push(tenant_check(*tenant, url, events, &counts));
    }
    Ok(CheckReport {
        ok: checks.iter().all(|c| c.missing == 0 && c.duplicated == 0),
        acknowledged: acknowledged.len(),
        tenants: checks,
    })
}

fn tenant_check(
    tenant: Uuid,
    url: &str,
    events: &[Uuid],
    counts: &HashMap<Uuid, i64>,
) -> TenantCheck {
    let mut check = TenantCheck {
        tenant,
        store: redact_url(url),
        acknowledged: events.len(),
        present: 0,
        missing: 0,
        duplicated: 0,
        missing_sample: Vec::new(),
    };
    for event in events {
        match counts.get(event).copied().unwrap_or(0) {
            0 => {
                check.missing += 1;
                if check.missing_sample.len() < MISSING_SAMPLES {
                    check.missing_sample.push(*event);
                }
            }
            1 => check.present += 1,
            _ => check.duplicated += 1,
        }
    }
    check
}

/// How often each of `events` occurs among `tenant`'s rows.
async fn count_events(
    client: &Client,
    tenant: Uuid,
    events: &[Uuid],
) -> Result<HashMap<Uuid, i64>> {
    let mut counts = HashMap::new();
    for chunk in events.chunks(CHUNK) {
        let rows = client
            .query(
                "SELECT event_id, count(*) FROM events \
                 WHERE tenant_id = $1 AND event_id = ANY($2) GROUP BY event_id",
                &[&tenant, &chunk],
            )
            .await?;
        for row in rows {
            counts.insert(row.get(0), row.get(1));
        }
    }
    Ok(counts)
}

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {}", redact_url(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_clear_errors() {
        let (tenant, url) =
            StoreMap::parse_tenant_store("0e750000-0000-0000-0000-000000000001=postgres://h/db")
                .unwrap();
        assert_eq!(tenant, crate::ids::tenant_id(0));
        assert_eq!(url, "postgres://h/db");
        assert!(StoreMap::parse_tenant_store("nope=postgres://h/db").is_err());
        assert!(StoreMap::parse_store("=postgres://h/db").is_err());
        assert_eq!(
            StoreMap::parse_store("a=b").unwrap(),
            ("a".into(), "b".into())
        );
    }

    #[test]
    fn counts_classify_events() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let counts = HashMap::from([(a, 1), (b, 2)]);
        let check = tenant_check(Uuid::nil(), "postgres://u:p@h/db", &[a, b, c], &counts);
        assert_eq!((check.present, check.duplicated, check.missing), (1, 1, 1));
        assert_eq!(check.missing_sample, vec![c]);
        assert_eq!(check.store, "postgres://u@h/db");
    }
}
