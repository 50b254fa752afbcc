//! `SubscriptionMigrator` (DESIGN §10): moves the checkpoints of a migrated tenant's
//! subscriptions from source positions to target positions.
//!
//! A checkpoint is a `projection_checkpoints` row; its `position_token` holds the
//! `global_position` the subscription has processed up to, in the store its reads went to.
//! After the cutover the tenant's events are read from the target, where the same events have
//! other positions, so each token's position is translated by the [`PositionMapper`]; the
//! application's store id in the token is kept (see [`position_token`](crate::position_token)).
//!
//! Where the rows are: `projection_checkpoints` has no tenant column, so a checkpoint is
//! written to the store its statement routes to: the session's tenant's store (or the store
//! its transaction is pinned to), else the default store. A subscription that read the
//! tenant's events from the source therefore kept its checkpoint on the source or on the
//! default store; other stores hold positions of their own tenants and are not searched.
//!
//! - Named subscriptions are looked for on the source and on the default store; one found in
//!   neither is `SubscriptionNotFoundError`. Without names, every checkpoint on the source is
//!   taken, which is refused when the source is the default store (its checkpoints are those of
//!   every session without a tenant, not only this tenant's).
//! - A row is rewritten where it was found (sessions without a tenant keep reading it there)
//!   and, when it was found on the source, also written to the target (sessions of the tenant
//!   read and write it there after the cutover). A target row of the same name that is not
//!   this rewrite's is a conflict: the run refuses rather than overwrite another checkpoint.
//! - A rewrite is only allowed once the migration is MIGRATED (before, the subscribers still
//!   read the source); the dry run works in any state and returns the same plan.
//! - Each rewrite is recorded in the audit log (`subscription_rewritten`) before its rows are
//!   written, and each write only applies if the row still holds the token planned from. A
//!   subscription rewritten once by a migration is not translated again by it: its token
//!   already holds a target position. Should a run stop between the audit row and the write,
//!   the row still holds the recorded old token and the next run rewrites it.
//!
//! Stop the tenant's subscribers while their checkpoints are rewritten (the cutover holds the
//! tenant's sessions; sessions without a tenant are not held).

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::{describe_pg_error, ControlError};
use crate::migration::MigrationStatus;
use crate::migration_store::MigrationStore;
use crate::position_token::PositionToken;
use crate::positions::{PositionMapper, Translation};
use crate::routing::MigrationState;
use crate::store_directory::StoreDirectory;

/// The audit log's event type of one rewritten checkpoint.
pub const AUDIT_EVENT: &str = "subscription_rewritten";

/// What a subscriptions command did or would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionPlan {
    pub migration_id: i64,
    pub tenant_id: Uuid,
    pub source_store: String,
    pub target_store: String,
    pub dry_run: bool,
    /// The stores whose `projection_checkpoints` were searched.
    pub searched_stores: Vec<String>,
    pub rewrites: Vec<PlannedRewrite>,
    /// Checkpoints found but not rewritten (no readable token, or rewritten by an earlier
    /// run), with the reason.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// One checkpoint row and its rewrite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRewrite {
    /// `projection_name`.
    pub name: String,
    /// The store holding the row.
    pub store: String,
    /// The stores that get the rewritten row.
    pub write_to: Vec<String>,
    pub old_token: String,
    pub new_token: String,
    pub translation: Translation,
    pub status: RewriteStatus,
    /// Why the row cannot be written to the target, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

/// Where a rewrite stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewriteStatus {
    /// To be written (dry run, or before the real run writes it).
    Planned,
    /// Written by this run.
    Rewritten,
}

/// A checkpoint left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCheckpoint {
    pub name: String,
    pub store: String,
    pub reason: String,
}

/// A `projection_checkpoints` row as found.
struct Found {
    store: String,
    name: String,
    token: Option<String>,
}

/// An earlier rewrite, from the audit log.
struct Recorded {
    old_token: String,
}

/// Rewrites the checkpoints of one migration's subscriptions.
pub struct SubscriptionMigrator<'a> {
    stores: &'a StoreDirectory,
    /// For the audit rows.
    control_url: &'a str,
    migration: &'a MigrationStatus,
    mapper: &'a PositionMapper,
}

impl<'a> SubscriptionMigrator<'a> {
    /// `migration` as read now; `mapper` translates its positions.
    pub fn new(
        stores: &'a StoreDirectory,
        control_url: &'a str,
        migration: &'a MigrationStatus,
        mapper: &'a PositionMapper,
    ) -> SubscriptionMigrator<'a> {
        SubscriptionMigrator {
            stores,
            control_url,
            migration,
            mapper,
        }
    }

    /// Plans, then, unless `dry_run`, applies the plan. Empty `names`: every checkpoint on
    /// the source.
    pub async fn run(
        &self,
        names: &[String],
        dry_run: bool,
        operator: &str,
    ) -> Result<SubscriptionPlan, ControlError> {
        if !dry_run {
            self.require_migrated()?;
        }
        let plan = self.plan(names).await?;
        if dry_run {
            return Ok(plan);
        }
        self.apply(plan, operator).await
    }

    /// What a rewrite of `names` would do; writes nothing.
    pub async fn plan(&self, names: &[String]) -> Result<SubscriptionPlan, ControlError> {
        let searched = self.searched_stores(names)?;
        let clients = self.connect_all(&searched).await?;
        let filter = (!names.is_empty()).then_some(names);
        let found: Vec<Found> = try_join_all(
            searched
                .iter()
                .zip(&clients)
                .map(|(store, client)| read_checkpoints(client, store, filter)),
        )
        .await?
        .into_iter()
        .flatten()
        .collect();
        self.refuse_unknown(names, &found, &searched)?;
        let previous = self.previous_rewrites().await?;
        let mut plan = SubscriptionPlan {
            migration_id: self.migration.id,
            tenant_id: self.migration.tenant_id,
            source_store: self.migration.source_store.clone(),
            target_store: self.migration.target_store.clone(),
            dry_run: true,
            searched_stores: searched,
            rewrites: Vec::new(),
            skipped: Vec::new(),
        };
        for row in found {
            self.plan_row(row, &previous, &mut plan).await?;
        }
        self.find_conflicts(&mut plan.rewrites).await?;
        Ok(plan)
    }

    /// Writes `plan`'s planned rewrites (the migration must be MIGRATED and the plan free of
    /// conflicts), each after its audit row.
    pub async fn apply(
        &self,
        mut plan: SubscriptionPlan,
        operator: &str,
    ) -> Result<SubscriptionPlan, ControlError> {
        self.require_migrated()?;
        if let Some(conflict) = plan.rewrites.iter().find_map(|r| r.conflict.as_ref()) {
            return Err(ControlError::InvalidRequest(conflict.clone()));
        }
        plan.dry_run = false;
        let audit = MigrationStore::connect(self.control_url).await?;
        for rewrite in &mut plan.rewrites {
            if rewrite.status != RewriteStatus::Planned {
                continue;
            }
            audit
                .audit_event(
                    self.migration.id,
                    AUDIT_EVENT,
                    &audit_details(rewrite),
                    operator,
                )
                .await?;
            self.write(rewrite).await?;
            rewrite.status = RewriteStatus::Rewritten;
            tracing::info!(migration_id = self.migration.id, tenant_id = %self.migration.tenant_id,
                phase = %self.migration.state, operation = "subscriptions",
                subscription = %rewrite.name, store = %rewrite.store,
                old_token = %rewrite.old_token, new_token = %rewrite.new_token,
                "subscription checkpoint rewritten");
        }
        Ok(plan)
    }

    fn require_migrated(&self) -> Result<(), ControlError> {
        if self.migration.state == MigrationState::Migrated {
            return Ok(());
        }
        Err(ControlError::InvalidStateTransition {
            migration_id: self.migration.id,
            state: self.migration.state,
            action: "rewrite subscriptions".into(),
            detail: ": the subscribers read the source until the cutover; \
                     a dry run works in any state"
                .into(),
        })
    }

    /// The source, and the default store if it is another (see the module documentation).
    fn searched_stores(&self, names: &[String]) -> Result<Vec<String>, ControlError> {
        let stores = self.stores;
        let source = &self.migration.source_store;
        let default = stores.default_store();
        if names.is_empty() {
            if source == default {
                return Err(ControlError::InvalidRequest(format!(
                    "the source {source:?} is the default store, whose checkpoints belong to \
                     every session without a tenant: name the tenant's subscriptions (--names)"
                )));
            }
            return Ok(vec![source.clone()]);
        }
        let mut searched = vec![source.clone()];
        if default != source {
            searched.push(default.to_string());
        }
        Ok(searched)
    }

    async fn connect_all(&self, stores: &[String]) -> Result<Vec<Client>, ControlError> {
        let directory = self.stores;
        try_join_all(stores.iter().map(|store| directory.connect(store))).await
    }

    fn refuse_unknown(
        &self,
        names: &[String],
        found: &[Found],
        searched: &[String],
    ) -> Result<(), ControlError> {
        let seen: BTreeSet<&str> = found.iter().map(|f| f.name.as_str()).collect();
        let unknown: BTreeSet<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !seen.contains(n))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(ControlError::SubscriptionNotFound {
            names: unknown.into_iter().collect::<Vec<_>>().join(", "),
            stores: searched.join(", "),
        })
    }

    /// Earlier rewrites of this migration, by (name, store).
    async fn previous_rewrites(&self) -> Result<HashMap<(String, String), Recorded>, ControlError> {
        let entries = MigrationStore::connect(self.control_url)
            .await?
            .audit(self.migration.id)
            .await?;
        Ok(entries
            .iter()
            .filter(|e| e.event_type == AUDIT_EVENT)
            .filter_map(|e| {
                let text = |key: &str| e.details.get(key)?.as_str().map(str::to_string);
                let key = (text("name")?, text("store")?);
                Some((
                    key,
                    Recorded {
                        old_token: text("old_token")?,
                    },
                ))
            })
            .collect())
    }

    async fn plan_row(
        &self,
        row: Found,
        previous: &HashMap<(String, String), Recorded>,
        plan: &mut SubscriptionPlan,
    ) -> Result<(), ControlError> {
        let skip = |reason: String| SkippedCheckpoint {
            name: row.name.clone(),
            store: row.store.clone(),
            reason,
        };
        let Some(text) = row.token.clone() else {
            plan.skipped.push(skip(
                "no position_token (a checkpoint of an older eventsource-py)".into(),
            ));
            return Ok(());
        };
        let token = match PositionToken::parse(&text) {
            Ok(token) => token,
            Err(reason) => {
                plan.skipped.push(skip(reason));
                return Ok(());
            }
        };
        let recorded = previous.get(&(row.name.clone(), row.store.clone()));
        if recorded.is_some_and(|r| r.old_token != text) {
            plan.skipped.push(skip(
                "rewritten by an earlier run of this migration: its token holds a target \
                 position"
                    .into(),
            ));
            return Ok(());
        }
        let translation = self.mapper.translate(token.position).await?;
        plan.rewrites.push(PlannedRewrite {
            write_to: self.write_to(&row.store),
            new_token: token.with_position(translation.target_position).encode(),
            name: row.name,
            store: row.store,
            old_token: text,
            translation,
            status: RewriteStatus::Planned,
            conflict: None,
        });
        Ok(())
    }

    /// Where a row found on `store` is written: there, and on the target if it was found on
    /// the source.
    fn write_to(&self, store: &str) -> Vec<String> {
        let mut stores = vec![store.to_string()];
        if store == self.migration.source_store {
            stores.push(self.migration.target_store.clone());
        }
        stores
    }

    /// Marks the planned rewrites whose target row would overwrite another checkpoint.
    async fn find_conflicts(&self, rewrites: &mut [PlannedRewrite]) -> Result<(), ControlError> {
        let target = &self.migration.target_store;
        // Only rows copied to the target can collide there.
        let copying =
            |r: &PlannedRewrite| r.status == RewriteStatus::Planned && copies_to(r, target);
        let copied: Vec<String> = rewrites
            .iter()
            .filter(|r| copying(r))
            .map(|r| r.name.clone())
            .collect();
        if copied.is_empty() {
            return Ok(());
        }
        let client = self.stores.connect(target).await?;
        let existing: HashMap<String, Option<String>> =
            read_checkpoints(&client, target, Some(&copied))
                .await?
                .into_iter()
                .map(|f| (f.name, f.token))
                .collect();
        for rewrite in rewrites.iter_mut().filter(|r| copying(r)) {
            let Some(token) = existing.get(&rewrite.name) else {
                continue;
            };
            let ours = token.as_deref() == Some(rewrite.old_token.as_str())
                || token.as_deref() == Some(rewrite.new_token.as_str());
            if !ours {
                rewrite.conflict = Some(format!(
                    "subscription {:?}: target store {target:?} already has a checkpoint of \
                     that name (position_token {}): remove it there, or leave the \
                     subscription out (--names)",
                    rewrite.name,
                    token.as_deref().unwrap_or("NULL")
                ));
            }
        }
        Ok(())
    }

    /// Writes one rewrite: the target copy first, then the row where it was found.
    async fn write(&self, rewrite: &PlannedRewrite) -> Result<(), ControlError> {
        let stores = self.stores;
        let found_on = stores.connect(&rewrite.store).await?;
        let target = &self.migration.target_store;
        if copies_to(rewrite, target) {
            let row = read_row(&found_on, rewrite).await?;
            let target_client = stores.connect(target).await?;
            upsert_on_target(&target_client, target, rewrite, &row).await?;
        }
        update_in_place(&found_on, rewrite).await
    }
}

/// Whether `rewrite` writes a copy of its row to `target` (another store than its own).
fn copies_to(rewrite: &PlannedRewrite, target: &str) -> bool {
    rewrite.store != target && rewrite.write_to.iter().any(|s| s == target)
}

fn audit_details(rewrite: &PlannedRewrite) -> serde_json::Value {
    json!({
        "name": rewrite.name,
        "store": rewrite.store,
        "written_to": rewrite.write_to,
        "old_token": rewrite.old_token,
        "new_token": rewrite.new_token,
        "translation": rewrite.translation,
    })
}

/// The checkpoints of `store`: those named in `names`, or every one with a token.
async fn read_checkpoints(
    client: &Client,
    store: &str,
    names: Option<&[String]>,
) -> Result<Vec<Found>, ControlError> {
    let rows = match names {
        Some(names) => {
            client
                .query(
                    "SELECT projection_name::text, position_token FROM projection_checkpoints
                      WHERE projection_name = ANY($1) ORDER BY projection_name",
                    &[&names],
                )
                .await
        }
        None => {
            client
                .query(
                    "SELECT projection_name::text, position_token FROM projection_checkpoints
                      WHERE position_token IS NOT NULL ORDER BY projection_name",
                    &[],
                )
                .await
        }
    }
    .map_err(|e| store_error(store, "read projection_checkpoints", &e))?;
    Ok(rows
        .iter()
        .map(|row| Found {
            store: store.to_string(),
            name: row.get(0),
            token: row.get(1),
        })
        .collect())
}

/// The columns of a checkpoint copied to the target besides its name and token.
struct CheckpointRow {
    last_event_id: Option<Uuid>,
    last_event_type: Option<String>,
    last_processed_at: Option<SystemTime>,
    global_position: Option<i64>,
    events_processed: i64,
    created_at: SystemTime,
}

async fn read_row(
    client: &Client,
    rewrite: &PlannedRewrite,
) -> Result<CheckpointRow, ControlError> {
    let row = client
        .query_opt(
            "SELECT last_event_id, last_event_type::text, last_processed_at, global_position,
                    events_processed, created_at
               FROM projection_checkpoints
              WHERE projection_name = $1 AND position_token = $2",
            &[&rewrite.name, &rewrite.old_token],
        )
        .await
        .map_err(|e| store_error(&rewrite.store, "read a checkpoint", &e))?
        .ok_or_else(|| moved(rewrite))?;
    Ok(CheckpointRow {
        last_event_id: row.get(0),
        last_event_type: row.get(1),
        last_processed_at: row.get(2),
        global_position: row.get(3),
        events_processed: row.get(4),
        created_at: row.get(5),
    })
}

/// Inserts or replaces the checkpoint on the target, unless the target's row of that name is
/// another checkpoint (neither the old nor the new token).
async fn upsert_on_target(
    client: &Client,
    target: &str,
    rewrite: &PlannedRewrite,
    row: &CheckpointRow,
) -> Result<(), ControlError> {
    let position = rewrite.translation.target_position;
    let legacy = row.global_position.map(|_| position);
    let written = client
        .execute(
            "INSERT INTO projection_checkpoints AS c
                    (projection_name, last_event_id, last_event_type, last_processed_at,
                     global_position, events_processed, position_token, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
             ON CONFLICT (projection_name) DO UPDATE
                SET last_event_id = EXCLUDED.last_event_id,
                    last_event_type = EXCLUDED.last_event_type,
                    last_processed_at = EXCLUDED.last_processed_at,
                    global_position = EXCLUDED.global_position,
                    events_processed = EXCLUDED.events_processed,
                    position_token = EXCLUDED.position_token,
                    updated_at = now()
              WHERE c.position_token IN ($9, $7)",
            &[
                &rewrite.name,
                &row.last_event_id,
                &row.last_event_type,
                &row.last_processed_at,
                &legacy,
                &row.events_processed,
                &rewrite.new_token,
                &row.created_at,
                &rewrite.old_token,
            ],
        )
        .await
        .map_err(|e| store_error(target, "write a checkpoint", &e))?;
    if written == 0 {
        return Err(ControlError::InvalidRequest(format!(
            "subscription {:?}: target store {target:?} has another checkpoint of that name; \
             nothing of it was rewritten",
            rewrite.name
        )));
    }
    Ok(())
}

/// Rewrites the row where it was found, if it still holds the old token.
async fn update_in_place(client: &Client, rewrite: &PlannedRewrite) -> Result<(), ControlError> {
    let updated = client
        .execute(
            "UPDATE projection_checkpoints
                SET position_token = $3,
                    global_position = CASE WHEN global_position IS NULL THEN NULL ELSE $4::bigint END,
                    updated_at = now()
              WHERE projection_name = $1 AND position_token = $2",
            &[
                &rewrite.name,
                &rewrite.old_token,
                &rewrite.new_token,
                &rewrite.translation.target_position,
            ],
        )
        .await
        .map_err(|e| store_error(&rewrite.store, "rewrite a checkpoint", &e))?;
    if updated == 0 {
        return Err(moved(rewrite));
    }
    Ok(())
}

/// The checkpoint changed between plan and write: its subscriber is running.
fn moved(rewrite: &PlannedRewrite) -> ControlError {
    ControlError::InvalidRequest(format!(
        "subscription {:?} on store {:?} no longer holds {}: its subscriber is running; stop \
         it and run again",
        rewrite.name, rewrite.store, rewrite.old_token
    ))
}

fn store_error(store: &str, what: &str, error: &tokio_postgres::Error) -> ControlError {
    ControlError::store_unavailable(store, format!("{what}: {}", describe_pg_error(error)))
}
