//! `MigrationStore`: one control-store connection of its own and every query about migrations:
//! `tenant_migrations`, the routing row that goes with each phase, the audit log, the position
//! mappings, and the per-tenant advisory lock.
//!
//! Each write that changes a migration's phase (or its pause flag) commits together with its
//! routing change and its audit row in ONE transaction; the caller then republishes the
//! in-memory routing table. The connection is exclusive (`&mut self`), so a transaction never
//! interleaves with another caller's statements.

use std::sync::LazyLock;

use futures::SinkExt;
use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, NoTls, Row, Transaction};
use uuid::Uuid;

use crate::control_store::{connection_config, describe_target};
use crate::error::{describe_pg_error, ControlError};
use crate::migration::{AuditEntry, MigrationOptions, MigrationRef, MigrationStatus};
use crate::routing::MigrationState;
use crate::{telemetry, transitions};

/// A timestamp column as RFC 3339 text in UTC.
fn rfc3339(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// The columns of `tenant_migrations` that make a `MigrationStatus`, in `status_from_row` order.
static STATUS_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    let mut columns = vec![
        "id".to_string(),
        "tenant_id".into(),
        "source_store_id".into(),
        "target_store_id".into(),
        "state".into(),
        "paused".into(),
        "progress_percentage".into(),
        "events_total".into(),
        "events_copied".into(),
        "lag_events".into(),
        "events_per_second".into(),
        "last_source_position".into(),
        "error_message".into(),
        "config".into(),
    ];
    for column in [
        "created_at",
        "started_at",
        "bulk_copy_completed_at",
        "dual_write_started_at",
        "cutover_started_at",
        "completed_at",
    ] {
        columns.push(rfc3339(column));
    }
    columns.join(", ")
});

/// A phase change to write: the new state, and what the audit row says about it.
#[derive(Debug, Clone)]
pub struct Transition {
    pub migration_id: i64,
    pub to: MigrationState,
    /// The audit row's `event_type`, e.g. `bulk_copy_completed`.
    pub event: String,
    pub details: Value,
    pub operator: String,
    /// Set on FAILED; cleared on any other state.
    pub error_message: Option<String>,
    /// When set, the migration must currently be in one of these states.
    pub only_from: Option<Vec<MigrationState>>,
}

/// One committed batch: its mappings and the checkpoint they move to.
#[derive(Debug, Clone, Default)]
pub struct BatchRecord {
    /// Source rows in the batch.
    pub events: i64,
    /// The highest source position in the batch: the new checkpoint.
    pub last_source_position: i64,
    pub source_positions: Vec<i64>,
    pub target_positions: Vec<i64>,
    pub event_ids: Vec<Uuid>,
    /// Copy speed over the pass so far.
    pub events_per_second: f64,
}

/// An exclusive control-store connection for migrations.
pub struct MigrationStore {
    client: Client,
    target: String,
}

impl MigrationStore {
    /// Connects to the control store at `url`.
    pub async fn connect(url: &str) -> Result<MigrationStore, ControlError> {
        let mut config = connection_config(url)?;
        config.application_name("evshift-migrations");
        let target = describe_target(&config);
        let bound = *config
            .get_connect_timeout()
            .expect("connection_config sets a connect timeout");
        let (client, connection) = tokio::time::timeout(bound, config.connect(NoTls))
            .await
            .map_err(|_| ControlError::ControlStoreUnavailable {
                context: format!("connect to {target}"),
                cause: format!("no answer within {bound:?}"),
            })?
            .map_err(|e| ControlError::from_control_store(format!("connect to {target}"), &e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(MigrationStore { client, target })
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn error(&self, what: &str, error: &tokio_postgres::Error) -> ControlError {
        ControlError::from_control_store(format!("{what} on {}", self.target), error)
    }

    /// The migration `id`.
    pub async fn get(&self, id: i64) -> Result<MigrationStatus, ControlError> {
        let sql = format!(
            "SELECT {} FROM tenant_migrations WHERE id = $1",
            *STATUS_COLUMNS
        );
        let row = self
            .client
            .query_opt(&sql, &[&id])
            .await
            .map_err(|e| self.error(&format!("read migration {id}"), &e))?;
        match row {
            Some(row) => status_from_row(&row),
            None => Err(ControlError::MigrationNotFound(id.to_string())),
        }
    }

    /// The migration a command names: by id, or the tenant's active migration (else its
    /// latest one).
    pub async fn find(&self, reference: MigrationRef) -> Result<MigrationStatus, ControlError> {
        let tenant = match reference {
            MigrationRef::Id(id) => return self.get(id).await,
            MigrationRef::Tenant(tenant) => tenant,
        };
        let sql = format!(
            "SELECT {} FROM tenant_migrations WHERE tenant_id = $1
              ORDER BY (state NOT IN ('MIGRATED', 'ROLLED_BACK')) DESC, id DESC LIMIT 1",
            *STATUS_COLUMNS
        );
        let row = self
            .client
            .query_opt(&sql, &[&tenant])
            .await
            .map_err(|e| self.error(&format!("read the migrations of tenant {tenant}"), &e))?;
        match row {
            Some(row) => status_from_row(&row),
            None => Err(ControlError::MigrationNotFound(format!(
                "for tenant {tenant}"
            ))),
        }
    }

    /// Every migration, newest first.
    pub async fn list(&self) -> Result<Vec<MigrationStatus>, ControlError> {
        let sql = format!(
            "SELECT {} FROM tenant_migrations ORDER BY id DESC",
            *STATUS_COLUMNS
        );
        let rows = self
            .client
            .query(&sql, &[])
            .await
            .map_err(|e| self.error("list migrations", &e))?;
        rows.iter().map(status_from_row).collect()
    }

    /// Migrations that a coordinator should be driving: active, not paused, not FAILED.
    pub async fn resumable(&self) -> Result<Vec<MigrationStatus>, ControlError> {
        let sql = format!(
            "SELECT {} FROM tenant_migrations
              WHERE state IN ('PENDING', 'BULK_COPY', 'DUAL_WRITE', 'CUTOVER_PAUSED')
                AND NOT paused
              ORDER BY id",
            *STATUS_COLUMNS
        );
        let rows = self
            .client
            .query(&sql, &[])
            .await
            .map_err(|e| self.error("list active migrations", &e))?;
        let migrations: Vec<MigrationStatus> =
            rows.iter().map(status_from_row).collect::<Result<_, _>>()?;
        // After a restart these figures are exported before the drivers' first batch.
        migrations.iter().for_each(telemetry::loaded);
        Ok(migrations)
    }

    /// The active migration of `tenant`, if any.
    pub async fn active_for_tenant(
        &self,
        tenant: Uuid,
    ) -> Result<Option<MigrationStatus>, ControlError> {
        match self.find(MigrationRef::Tenant(tenant)).await {
            Ok(status) if transitions::is_active(status.state) => Ok(Some(status)),
            Ok(_) | Err(ControlError::MigrationNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The audit rows of migration `id`, oldest first.
    pub async fn audit(&self, id: i64) -> Result<Vec<AuditEntry>, ControlError> {
        let sql = format!(
            "SELECT id, migration_id, event_type, details, operator, {}
               FROM migration_audit_log WHERE migration_id = $1 ORDER BY id",
            rfc3339("\"timestamp\"")
        );
        let rows = self
            .client
            .query(&sql, &[&id])
            .await
            .map_err(|e| self.error(&format!("read the audit log of migration {id}"), &e))?;
        Ok(rows
            .iter()
            .map(|row| AuditEntry {
                id: row.get(0),
                migration_id: row.get(1),
                event_type: row.get(2),
                details: row.get(3),
                operator: row.get(4),
                timestamp: row.get(5),
            })
            .collect())
    }

    /// Creates a PENDING migration, its route and its `created` audit row in one transaction.
    /// Another active migration of the tenant refuses with `TenantMigrating`.
    pub async fn create(
        &mut self,
        tenant: Uuid,
        source: &str,
        target: &str,
        options: &MigrationOptions,
        operator: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let config = serde_json::to_value(options)
            .map_err(|e| ControlError::Internal(format!("encode migration options: {e}")))?;
        let what = format!("create a migration of tenant {tenant}");
        let fail = failer(&self.target, &what);
        let transaction = self.begin(&what).await?;
        let inserted = transaction
            .query_one(
                "INSERT INTO tenant_migrations (tenant_id, source_store_id, target_store_id, config)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&tenant, &source, &target, &config],
            )
            .await;
        let id: i64 = match inserted {
            Ok(row) => row.get(0),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                drop(transaction);
                return Err(self.migrating_error(tenant).await);
            }
            Err(e) => return Err(fail(&e)),
        };
        write_route(
            &transaction,
            tenant,
            source,
            MigrationState::Pending,
            target,
            id,
        )
        .await
        .map_err(|e| fail(&e))?;
        let details = json!({"source_store": source, "target_store": target, "config": config});
        append_audit(&transaction, id, "created", &details, operator)
            .await
            .map_err(|e| fail(&e))?;
        transaction.commit().await.map_err(|e| fail(&e))?;
        let status = self.get(id).await?;
        telemetry::loaded(&status);
        Ok(status)
    }

    /// `TenantMigrating` for the tenant's active migration (after a unique violation).
    async fn migrating_error(&self, tenant: Uuid) -> ControlError {
        match self.active_for_tenant(tenant).await {
            Ok(Some(active)) => ControlError::TenantMigrating {
                tenant,
                migration_id: active.id,
                state: active.state,
            },
            Ok(None) => ControlError::ControlStore {
                context: format!("create a migration of tenant {tenant}"),
                cause: "another migration of the tenant was active a moment ago; try again".into(),
            },
            Err(e) => e,
        }
    }

    /// Writes a phase change: the state (with its timestamp), the tenant's route and the
    /// audit row, in one transaction. The change must be in the transition table.
    pub async fn transition(
        &mut self,
        change: &Transition,
    ) -> Result<MigrationStatus, ControlError> {
        let id = change.migration_id;
        let what = format!("move migration {id} to {}", change.to);
        let fail = failer(&self.target, &what);
        let transaction = self.begin(&what).await?;
        let current = lock_migration(&transaction, id)
            .await
            .map_err(|e| fail(&e))?
            .ok_or_else(|| ControlError::MigrationNotFound(id.to_string()))?;
        if let Some(allowed) = &change.only_from {
            if !allowed.contains(&current.state) {
                return Err(ControlError::InvalidStateTransition {
                    migration_id: id,
                    state: current.state,
                    action: format!("move to {}", change.to),
                    detail: String::new(),
                });
            }
        }
        transitions::check(id, current.state, change.to)?;
        let timestamp = match change.to {
            MigrationState::BulkCopy => "started_at = COALESCE(started_at, now()),",
            MigrationState::DualWrite => {
                "bulk_copy_completed_at = COALESCE(bulk_copy_completed_at, now()),
                 dual_write_started_at = COALESCE(dual_write_started_at, now()),"
            }
            MigrationState::CutoverPaused => "cutover_started_at = now(),",
            MigrationState::Migrated | MigrationState::RolledBack => "completed_at = now(),",
            MigrationState::Pending | MigrationState::Failed => "",
        };
        let sql = format!(
            "UPDATE tenant_migrations SET state = $2, {timestamp} error_message = $3,
                    updated_at = now()
              WHERE id = $1"
        );
        // FAILED keeps its error; a cutover rolled back to DUAL_WRITE keeps why, until the
        // next phase change.
        let error_message = match change.to {
            MigrationState::Failed | MigrationState::DualWrite => change.error_message.clone(),
            _ => None,
        };
        transaction
            .execute(&sql, &[&id, &change.to.as_str(), &error_message])
            .await
            .map_err(|e| fail(&e))?;
        write_route(
            &transaction,
            current.tenant_id,
            &current.source_store,
            change.to,
            &current.target_store,
            id,
        )
        .await
        .map_err(|e| fail(&e))?;
        let mut details = change.details.clone();
        if let Value::Object(map) = &mut details {
            map.insert("from".into(), current.state.as_str().into());
            map.insert("to".into(), change.to.as_str().into());
        }
        append_audit(&transaction, id, &change.event, &details, &change.operator)
            .await
            .map_err(|e| fail(&e))?;
        transaction.commit().await.map_err(|e| fail(&e))?;
        record_transition(change, current.tenant_id);
        self.get(id).await
    }

    /// Sets or clears the pause flag with its audit row. Pausing needs a state with a copier;
    /// resuming needs the flag set.
    pub async fn set_paused(
        &mut self,
        id: i64,
        paused: bool,
        operator: &str,
    ) -> Result<MigrationStatus, ControlError> {
        let action = if paused { "pause" } else { "resume" };
        let what = format!("{action} migration {id}");
        let fail = failer(&self.target, &what);
        let transaction = self.begin(&what).await?;
        let current = lock_migration(&transaction, id)
            .await
            .map_err(|e| fail(&e))?
            .ok_or_else(|| ControlError::MigrationNotFound(id.to_string()))?;
        let refusal = if paused && !transitions::can_pause(current.state) {
            Some(String::new())
        } else if current.paused == paused {
            Some(format!(
                ": it is {}paused",
                if paused { "already " } else { "not " }
            ))
        } else {
            None
        };
        if let Some(detail) = refusal {
            return Err(ControlError::InvalidStateTransition {
                migration_id: id,
                state: current.state,
                action: action.into(),
                detail,
            });
        }
        transaction
            .execute(
                "UPDATE tenant_migrations SET paused = $2, updated_at = now() WHERE id = $1",
                &[&id, &paused],
            )
            .await
            .map_err(|e| fail(&e))?;
        let event = if paused { "paused" } else { "resumed" };
        let details = json!({"state": current.state.as_str(),
                             "last_source_position": current.last_source_position});
        append_audit(&transaction, id, event, &details, operator)
            .await
            .map_err(|e| fail(&e))?;
        transaction.commit().await.map_err(|e| fail(&e))?;
        self.get(id).await
    }

    /// The first step of an abort: pause the migration and forget what it copied (checkpoint
    /// and mappings), with an audit row, so that a crash before the target is cleaned leaves
    /// a paused migration that copies from scratch if resumed.
    pub async fn prepare_abort(&mut self, id: i64, operator: &str) -> Result<(), ControlError> {
        let what = format!("abort migration {id}");
        let fail = failer(&self.target, &what);
        let transaction = self.begin(&what).await?;
        let current = lock_migration(&transaction, id)
            .await
            .map_err(|e| fail(&e))?
            .ok_or_else(|| ControlError::MigrationNotFound(id.to_string()))?;
        if !transitions::can_abort(current.state) {
            return Err(ControlError::InvalidStateTransition {
                migration_id: id,
                state: current.state,
                action: "abort".into(),
                detail: String::new(),
            });
        }
        transaction
            .execute(
                "DELETE FROM migration_position_mappings WHERE migration_id = $1",
                &[&id],
            )
            .await
            .map_err(|e| fail(&e))?;
        transaction
            .execute(
                "UPDATE tenant_migrations
                    SET paused = true, last_source_position = 0, last_target_position = 0,
                        events_copied = 0,
                        progress_percentage = 0, lag_events = events_total, updated_at = now()
                  WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| fail(&e))?;
        let details = json!({"state": current.state.as_str(),
                             "events_copied": current.events_copied});
        append_audit(&transaction, id, "abort_started", &details, operator)
            .await
            .map_err(|e| fail(&e))?;
        transaction.commit().await.map_err(|e| fail(&e))?;
        // What the UPDATE above wrote: nothing copied, everything to copy again.
        telemetry::progress(id, current.tenant_id, 0.0);
        telemetry::lag(id, current.tenant_id, current.events_total);
        Ok(())
    }

    /// Records a batch that the target committed: its position mappings and the new
    /// checkpoint and progress, in one transaction. Returns whether the migration is paused
    /// (an operator may have paused it through another evshift instance).
    pub async fn record_batch(
        &mut self,
        id: i64,
        batch: &BatchRecord,
    ) -> Result<bool, ControlError> {
        let what = format!("checkpoint migration {id}");
        let fail = failer(&self.target, &what);
        let transaction = self.begin(&what).await?;
        let sink = transaction
            .copy_in(
                "COPY migration_position_mappings
                      (migration_id, source_position, target_position, event_id)
                 FROM STDIN (FORMAT BINARY)",
            )
            .await
            .map_err(|e| fail(&e))?;
        futures::pin_mut!(sink);
        sink.send(mappings_copy_data(id, batch))
            .await
            .map_err(|e| fail(&e))?;
        sink.as_mut().finish().await.map_err(|e| fail(&e))?;
        let row = transaction
            .query_opt(
                "UPDATE tenant_migrations SET
                        last_source_position = GREATEST(last_source_position, $2),
                        last_target_position = GREATEST(last_target_position, $5),
                        events_copied = events_copied + $3,
                        events_total = GREATEST(events_total, events_copied + $3),
                        lag_events = GREATEST(events_total - (events_copied + $3), 0),
                        progress_percentage = CASE
                            WHEN GREATEST(events_total, events_copied + $3) = 0 THEN 0
                            ELSE LEAST(100, 100.0 * (events_copied + $3)
                                            / GREATEST(events_total, events_copied + $3)) END,
                        events_per_second = $4,
                        updated_at = now()
                  WHERE id = $1
                  RETURNING paused, tenant_id, state, progress_percentage, lag_events",
                &[
                    &id,
                    &batch.last_source_position,
                    &batch.events,
                    &batch.events_per_second,
                    &batch.target_positions.last().copied().unwrap_or(0),
                ],
            )
            .await
            .map_err(|e| fail(&e))?;
        transaction.commit().await.map_err(|e| fail(&e))?;
        let Some(row) = row else {
            return Ok(false);
        };
        record_checkpoint(id, batch, &row);
        Ok(row.get(0))
    }

    /// The target position of the last checkpointed event (target positions follow source
    /// order, so it is the highest), `None` before the first checkpoint.
    pub async fn last_target_position(&self, id: i64) -> Result<Option<i64>, ControlError> {
        let row = self
            .client
            .query_opt(
                "SELECT last_target_position FROM tenant_migrations
                  WHERE id = $1 AND last_source_position > 0",
                &[&id],
            )
            .await
            .map_err(|e| self.error(&format!("read the checkpoint of migration {id}"), &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Sets the number of tenant events still to copy (the total follows: copied + lag).
    pub async fn set_lag(&self, id: i64, lag: i64) -> Result<(), ControlError> {
        let row = self
            .client
            .query_opt(
                "UPDATE tenant_migrations SET
                        lag_events = $2,
                        events_total = events_copied + $2,
                        progress_percentage = CASE WHEN events_copied + $2 = 0 THEN 100
                            ELSE 100.0 * events_copied / (events_copied + $2) END,
                        updated_at = now()
                  WHERE id = $1 AND (lag_events <> $2 OR events_total <> events_copied + $2)
                  RETURNING tenant_id, progress_percentage",
                &[&id, &lag],
            )
            .await
            .map_err(|e| self.error(&format!("record the lag of migration {id}"), &e))?;
        // No row: the figures did not change, and were exported when they last did.
        if let Some(row) = row {
            let tenant: Uuid = row.get(0);
            telemetry::lag(id, tenant, lag);
            telemetry::progress(id, tenant, row.get(1));
        }
        Ok(())
    }

    /// Sets the copy speed shown by `status`.
    pub async fn set_rate(&self, id: i64, events_per_second: f64) -> Result<(), ControlError> {
        self.client
            .execute(
                "UPDATE tenant_migrations SET events_per_second = $2 WHERE id = $1
                    AND events_per_second <> $2",
                &[&id, &events_per_second],
            )
            .await
            .map_err(|e| self.error(&format!("record the speed of migration {id}"), &e))?;
        Ok(())
    }

    /// Appends an audit row outside a phase change (e.g. a retried error).
    pub async fn audit_event(
        &self,
        id: i64,
        event: &str,
        details: &Value,
        operator: &str,
    ) -> Result<(), ControlError> {
        append_audit(&self.client, id, event, details, operator)
            .await
            .map_err(|e| self.error(&format!("audit migration {id}"), &e))
    }

    /// Takes the tenant's advisory lock (session-level) if nobody holds it.
    pub async fn try_lock_tenant(&self, tenant: Uuid) -> Result<bool, ControlError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('evshift tenant ' || $1::uuid::text, 0))",
                &[&tenant],
            )
            .await
            .map_err(|e| self.error(&format!("lock tenant {tenant}"), &e))?;
        Ok(row.get(0))
    }

    /// Releases the tenant's advisory lock (a closed connection releases it too).
    pub async fn unlock_tenant(&self, tenant: Uuid) -> Result<(), ControlError> {
        self.client
            .query_one(
                "SELECT pg_advisory_unlock(hashtextextended('evshift tenant ' || $1::uuid::text, 0))",
                &[&tenant],
            )
            .await
            .map_err(|e| self.error(&format!("unlock tenant {tenant}"), &e))?;
        Ok(())
    }

    async fn begin(&mut self, what: &str) -> Result<Transaction<'_>, ControlError> {
        let target = self.target.clone();
        self.client
            .transaction()
            .await
            .map_err(|e| ControlError::from_control_store(format!("{what} on {target}"), &e))
    }
}

/// Exports a committed phase change: the state, and a failure when the change is one.
fn record_transition(change: &Transition, tenant: Uuid) {
    let id = change.migration_id;
    telemetry::state_changed(id, tenant, change.to);
    if change.to == MigrationState::Failed {
        telemetry::failure(id, tenant, "failed");
    }
    if change.event == "cutover_rolled_back" {
        telemetry::failure(id, tenant, "cutover_rolled_back");
    }
}

/// Exports a committed batch from the row its checkpoint UPDATE returned
/// (`paused, tenant_id, state, progress_percentage, lag_events`).
fn record_checkpoint(id: i64, batch: &BatchRecord, row: &Row) {
    let tenant: Uuid = row.get(1);
    let state: &str = row.get(2);
    let lag: i64 = row.get(4);
    telemetry::events_copied(id, tenant, batch.events.max(0) as u64);
    telemetry::progress(id, tenant, row.get(3));
    telemetry::lag(id, tenant, lag);
    tracing::debug!(migration_id = id, tenant_id = %tenant, phase = state,
        operation = "checkpoint", events = batch.events,
        checkpoint = batch.last_source_position, lag, "batch checkpointed");
}

/// A batch's mappings as binary COPY data for `migration_position_mappings`.
fn mappings_copy_data(id: i64, batch: &BatchRecord) -> bytes::Bytes {
    use bytes::BufMut;
    let mut out = bytes::BytesMut::with_capacity(21 + batch.event_ids.len() * 62);
    out.put_slice(crate::copy_format::SIGNATURE);
    out.put_i32(0);
    out.put_i32(0);
    let rows = batch
        .source_positions
        .iter()
        .zip(&batch.target_positions)
        .zip(&batch.event_ids);
    for ((source, target), event_id) in rows {
        out.put_i16(4);
        for value in [id, *source, *target] {
            out.put_i32(8);
            out.put_i64(value);
        }
        out.put_i32(16);
        out.put_slice(event_id.as_bytes());
    }
    out.put_i16(-1);
    out.freeze()
}

/// A function making a control-store error about `what`, that does not borrow the store.
fn failer(target: &str, what: &str) -> impl Fn(&tokio_postgres::Error) -> ControlError {
    let context = format!("{what} on {target}");
    move |e| ControlError::from_control_store(context.clone(), e)
}

/// The migration row, locked until the transaction ends.
async fn lock_migration(
    transaction: &Transaction<'_>,
    id: i64,
) -> Result<Option<MigrationStatus>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM tenant_migrations WHERE id = $1 FOR UPDATE",
        *STATUS_COLUMNS
    );
    let row = transaction.query_opt(&sql, &[&id]).await?;
    // A row that cannot be read is reported by the caller's next `get`.
    Ok(row.and_then(|r| status_from_row(&r).ok()))
}

/// Upserts the tenant's route for a migration phase (the tenant stays on `source`; reads move
/// to the target only at MIGRATED, see `Route::read_store`).
async fn write_route(
    client: &impl GenericClient,
    tenant: Uuid,
    source: &str,
    state: MigrationState,
    target: &str,
    migration_id: i64,
) -> Result<u64, tokio_postgres::Error> {
    // Once MIGRATED the tenant lives on the target.
    let store = match state {
        MigrationState::Migrated => target,
        _ => source,
    };
    client
        .execute(
            "INSERT INTO tenant_routing
                    (tenant_id, store_id, migration_state, target_store_id, migration_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id) DO UPDATE
                SET store_id = EXCLUDED.store_id, migration_state = EXCLUDED.migration_state,
                    target_store_id = EXCLUDED.target_store_id,
                    migration_id = EXCLUDED.migration_id, updated_at = now()",
            &[&tenant, &store, &state.as_str(), &target, &migration_id],
        )
        .await
}

async fn append_audit(
    client: &impl GenericClient,
    id: i64,
    event: &str,
    details: &Value,
    operator: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO migration_audit_log (migration_id, event_type, details, operator)
             VALUES ($1, $2, $3, $4)",
            &[&id, &event, details, &operator],
        )
        .await
        .map(|_| ())
}

/// One `tenant_migrations` row (columns `STATUS_COLUMNS`).
fn status_from_row(row: &Row) -> Result<MigrationStatus, ControlError> {
    let bad = |e: tokio_postgres::Error| ControlError::ControlStore {
        context: "tenant_migrations row".into(),
        cause: describe_pg_error(&e),
    };
    let state: String = row.try_get(4).map_err(bad)?;
    Ok(MigrationStatus {
        id: row.try_get(0).map_err(bad)?,
        tenant_id: row.try_get(1).map_err(bad)?,
        source_store: row.try_get(2).map_err(bad)?,
        target_store: row.try_get(3).map_err(bad)?,
        state: state
            .parse()
            .map_err(|e: String| ControlError::ControlStore {
                context: "tenant_migrations row".into(),
                cause: e,
            })?,
        paused: row.try_get(5).map_err(bad)?,
        progress_percentage: row.try_get(6).map_err(bad)?,
        events_total: row.try_get(7).map_err(bad)?,
        events_copied: row.try_get(8).map_err(bad)?,
        lag_events: row.try_get(9).map_err(bad)?,
        events_per_second: row.try_get(10).map_err(bad)?,
        last_source_position: row.try_get(11).map_err(bad)?,
        error_message: row.try_get(12).map_err(bad)?,
        config: row.try_get(13).map_err(bad)?,
        created_at: row.try_get(14).map_err(bad)?,
        started_at: row.try_get(15).map_err(bad)?,
        bulk_copy_completed_at: row.try_get(16).map_err(bad)?,
        dual_write_started_at: row.try_get(17).map_err(bad)?,
        cutover_started_at: row.try_get(18).map_err(bad)?,
        completed_at: row.try_get(19).map_err(bad)?,
    })
}
