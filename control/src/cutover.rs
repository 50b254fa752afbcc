//! The cutover (DESIGN §8): hold the tenant, let its in-flight transactions end, copy what is
//! left, verify, commit MIGRATED with the route, swap the routing table, release the tenant.
//!
//! It runs inside the migration's driver, which owns the copier and its window, so nothing
//! else copies the tenant meanwhile. The hold (gate closed to gate open) is bounded by
//! `cutover_timeout`: on the timeout or any failure the gate opens with the route still on the
//! source and the migration returns to DUAL_WRITE with a `cutover_rolled_back` audit row.
//! Once the MIGRATED commit has started it is never cut short: its outcome decides the route.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::copier::{Copier, PassScope, WriteMode};
use crate::driver::Context;
use crate::error::ControlError;
use crate::gate::TrafficGate;
use crate::migration::{MigrationStatus, VerifyMode};
use crate::migration_store::{MigrationStore, Transition};
use crate::positions::PositionMapper;
use crate::rate_limit::RateLimiter;
use crate::retry::Failure;
use crate::routing::MigrationState;
use crate::subscriptions::SubscriptionMigrator;
use crate::tail_window::TailWindow;
use crate::telemetry;
use crate::verification;

/// Bound of the subscription translation inside the hold.
const SUBSCRIPTIONS_BOUND: Duration = Duration::from_secs(2);

/// Tail passes at most before the hold, and the size of a pass that ends them.
const CATCH_UP_PASSES: usize = 4;
const CATCH_UP_ENOUGH: u64 = 50;
/// Rounds of digest and catch-up at most before the hold (level `hash`).
const SETTLE_ROUNDS: usize = 3;

/// What the driver hands the cutover.
pub(crate) struct CutoverRun<'a> {
    pub context: &'a Context,
    pub gate: &'a dyn TrafficGate,
    pub control: &'a mut MigrationStore,
    pub copier: &'a mut Copier,
    pub window: &'a mut TailWindow,
    pub migration: &'a MigrationStatus,
    pub operator: &'a str,
    /// Why it runs: "automatic" (lag at the threshold) or "requested".
    pub trigger: &'a str,
}

/// How one step of the hold ended.
enum HoldError {
    Timeout(&'static str),
    Failed(ControlError),
}

impl From<ControlError> for HoldError {
    fn from(error: ControlError) -> HoldError {
        HoldError::Failed(error)
    }
}

impl From<Failure> for HoldError {
    fn from(failure: Failure) -> HoldError {
        HoldError::Failed(internal(failure))
    }
}

/// A copier failure as the cutover reports it.
fn internal(failure: Failure) -> ControlError {
    ControlError::Internal(failure.message().to_string())
}

impl CutoverRun<'_> {
    /// Runs the cutover. `Ok` is the MIGRATED status; an error means the migration is back
    /// in DUAL_WRITE (or could not even start).
    pub async fn run(self) -> Result<MigrationStatus, ControlError> {
        let CutoverRun {
            context,
            gate,
            control,
            copier,
            window,
            migration,
            operator,
            trigger,
        } = self;
        let id = migration.id;
        let tenant = migration.tenant_id;
        let timeout = context.settings.cutover_timeout;
        let level = migration.options()?.verify;
        // Before the hold, so that the hold copies and checks only the last appends: at
        // `hash` the rows up to the checkpoint are verified now, the rest under the hold.
        let verified_through = match level {
            VerifyMode::Hash => Some(settle(control, copier, window, migration).await?),
            _ => {
                catch_up(control, copier, window, migration.id).await?;
                None
            }
        };
        let mut start = transition(
            id,
            MigrationState::CutoverPaused,
            "cutover_started",
            operator,
        );
        start.details = json!({"trigger": trigger, "lag_events": migration.lag_events,
                               "timeout_ms": timeout.as_millis() as u64});
        start.only_from = Some(vec![MigrationState::DualWrite]);
        context.transition(control, &start).await?;

        gate.hold(tenant).await;
        let held = Instant::now();
        let deadline = held + timeout;
        let scope = HoldScope {
            context,
            gate,
            migration,
            level,
            verified_through,
            deadline,
        };
        let outcome = hold(&scope, control, copier, window).await;
        let outcome = match outcome {
            Ok(found) => commit(context, control, migration, operator, held, found).await,
            Err(error) => Err(error),
        };
        // The route is the target now (MIGRATED) or still the source: release either way.
        gate.release(tenant);
        let pause = held.elapsed();
        telemetry::cutover_pause(id, tenant, pause);
        match outcome {
            Ok(status) => {
                tracing::info!(
                    phase = "MIGRATED",
                    operation = "cutover",
                    pause_ms = pause.as_millis() as u64,
                    "cutover completed"
                );
                Ok(status)
            }
            Err(error) => {
                let error = match error {
                    HoldError::Timeout(step) => ControlError::CutoverTimeout {
                        migration_id: id,
                        step: step.to_string(),
                        timeout_ms: timeout.as_millis() as u64,
                    },
                    HoldError::Failed(error) => error,
                };
                roll_back(context, control, id, operator, &error, pause).await;
                Err(error)
            }
        }
    }
}

/// What the hold works with besides the connections.
#[derive(Clone, Copy)]
struct HoldScope<'a> {
    context: &'a Context,
    gate: &'a dyn TrafficGate,
    migration: &'a MigrationStatus,
    level: VerifyMode,
    /// Rows up to this source position were verified before the hold (`hash`).
    verified_through: Option<i64>,
    deadline: Instant,
}

/// What the hold found.
struct Held {
    /// Rows the final tail copied.
    copied: u64,
    /// The verification done under the hold, for the audit row.
    verification: serde_json::Value,
    /// How long each step of the hold took (ms), for the audit row.
    steps: serde_json::Value,
}

/// Durations of the hold's steps, each from the end of the previous one.
struct StepTimes {
    last: Instant,
    steps: serde_json::Map<String, serde_json::Value>,
}

impl StepTimes {
    fn new() -> StepTimes {
        StepTimes {
            last: Instant::now(),
            steps: serde_json::Map::new(),
        }
    }

    fn done(&mut self, step: &str) {
        let now = Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        self.steps
            .insert(step.to_string(), json!((ms * 100.0).round() / 100.0));
        self.last = now;
    }

    fn into_json(self) -> serde_json::Value {
        serde_json::Value::Object(self.steps)
    }
}

/// Steps 2-4 under the hold: in-flight transactions end, final tail, verification (the
/// tenant's counts always; the migration's `hash` or `full` level on top).
async fn hold(
    scope: &HoldScope<'_>,
    control: &mut MigrationStore,
    copier: &mut Copier,
    window: &mut TailWindow,
) -> Result<Held, HoldError> {
    let HoldScope {
        context,
        gate,
        migration,
        level,
        verified_through,
        deadline,
    } = *scope;
    let tenant = migration.tenant_id;
    let mut steps = StepTimes::new();
    gate.wait_idle(tenant, remaining(deadline))
        .await
        .map_err(|_| HoldError::Timeout("waiting for the tenant's transactions in flight"))?;
    steps.done("wait_idle_ms");
    let checkpoint = control.get(migration.id).await?.last_source_position;
    let stop = CancellationToken::new();
    let mut unlimited = RateLimiter::new(0);
    let final_tail = copier.pass(
        checkpoint,
        PassScope {
            limit: None,
            mode: WriteMode::Idempotent,
            window,
            quiescent: true,
        },
        control,
        &mut unlimited,
        &stop,
    );
    let outcome = tokio::time::timeout(remaining(deadline), final_tail)
        .await
        .map_err(|_| HoldError::Timeout("copying the last events"))??;
    steps.done("final_tail_ms");
    let verified = tokio::time::timeout(remaining(deadline), copier.count_both())
        .await
        .map_err(|_| HoldError::Timeout("verifying the counts"))??;
    steps.done("count_ms");
    if verified.source != verified.target {
        return Err(HoldError::Failed(ControlError::Consistency {
            migration_id: migration.id,
            summary: format!(
                "the source holds {} events of the tenant, the target {}",
                verified.source, verified.target
            ),
        }));
    }
    let mut verification = json!({"level": "count", "source_events": verified.source,
                                  "target_events": verified.target});
    let report = match (level, verified_through) {
        (VerifyMode::Count, _) => None,
        (VerifyMode::Hash, Some(through)) => Some(
            tokio::time::timeout(
                remaining(deadline),
                verification::verify_range(
                    &copier.source,
                    &copier.target,
                    migration,
                    through,
                    None,
                ),
            )
            .await
            .map_err(|_| HoldError::Timeout("verifying the target"))??,
        ),
        _ => Some(
            tokio::time::timeout(
                remaining(deadline),
                verification::verify(&context.stores, migration, level),
            )
            .await
            .map_err(|_| HoldError::Timeout("verifying the target"))??,
        ),
    };
    steps.done("verify_ms");
    if let Some(report) = report {
        refuse_unless_passed(migration, &report)?;
        verification = json!({"counts": verification,
                              "report": serde_json::to_value(&report).unwrap_or_default()});
    }
    if Instant::now() >= deadline {
        return Err(HoldError::Timeout("verifying the target"));
    }
    Ok(Held {
        copied: outcome.copied,
        verification,
        steps: steps.into_json(),
    })
}

/// Before the hold, at level `hash`: the digest of the rows up to the copy's checkpoint, then
/// catch-up tail passes and the digest of what they copied, until a catch-up finds little.
/// Returns the position verified through. (A row that commits late below it is copied by the
/// final tail and counted under the hold; one still missing now makes this check refuse, and
/// the cutover is tried again.)
async fn settle(
    control: &mut MigrationStore,
    copier: &mut Copier,
    window: &mut TailWindow,
    migration: &MigrationStatus,
) -> Result<i64, ControlError> {
    let mut verified = 0;
    let mut checkpoint = migration.last_source_position;
    for _ in 0..SETTLE_ROUNDS {
        let report = verification::verify_range(
            &copier.source,
            &copier.target,
            migration,
            verified,
            Some(checkpoint),
        )
        .await?;
        refuse_unless_passed(migration, &report).map_err(|e| match e {
            HoldError::Failed(error) => error,
            HoldError::Timeout(step) => ControlError::Internal(step.to_string()),
        })?;
        verified = checkpoint;
        let (caught_up, copied) = catch_up(control, copier, window, migration.id).await?;
        checkpoint = caught_up;
        if copied <= CATCH_UP_ENOUGH {
            break;
        }
    }
    Ok(verified)
}

/// Tail passes before the hold, until one finds at most `CATCH_UP_ENOUGH` rows (or after
/// `CATCH_UP_PASSES`): each pass is short, so the next finds only what was appended meanwhile.
/// Returns the checkpoint after them and the rows they copied.
async fn catch_up(
    control: &mut MigrationStore,
    copier: &mut Copier,
    window: &mut TailWindow,
    id: i64,
) -> Result<(i64, u64), ControlError> {
    let stop = CancellationToken::new();
    let mut unlimited = RateLimiter::new(0);
    let mut checkpoint = control.get(id).await?.last_source_position;
    let mut copied = 0;
    for _ in 0..CATCH_UP_PASSES {
        let scope = PassScope {
            limit: None,
            mode: WriteMode::Idempotent,
            window: &mut *window,
            quiescent: false,
        };
        let outcome = copier
            .pass(checkpoint, scope, control, &mut unlimited, &stop)
            .await
            .map_err(internal)?;
        checkpoint = outcome.checkpoint;
        copied += outcome.copied;
        if outcome.copied <= CATCH_UP_ENOUGH {
            break;
        }
    }
    Ok((checkpoint, copied))
}

/// `ConsistencyError` naming the first mismatches when `report` did not pass.
fn refuse_unless_passed(
    migration: &MigrationStatus,
    report: &verification::VerificationReport,
) -> Result<(), HoldError> {
    if report.passed {
        return Ok(());
    }
    let named: Vec<String> = report
        .mismatches
        .iter()
        .take(3)
        .filter_map(|m| serde_json::to_string(m).ok())
        .collect();
    Err(HoldError::Failed(ControlError::Consistency {
        migration_id: migration.id,
        summary: format!("{}; first: {}", report.summary(), named.join(", ")),
    }))
}

/// Steps 5-6: MIGRATED, the route and the audit row in one control-store transaction, then
/// the routing table this process routes by.
async fn commit(
    context: &Context,
    control: &mut MigrationStore,
    migration: &MigrationStatus,
    operator: &str,
    held: Instant,
    found: Held,
) -> Result<MigrationStatus, HoldError> {
    let mut change = transition(
        migration.id,
        MigrationState::Migrated,
        "cutover_completed",
        operator,
    );
    change.details = json!({
        "final_tail_events": found.copied,
        "pause_ms_before_commit": held.elapsed().as_secs_f64() * 1000.0,
        "verification": found.verification,
        "steps": found.steps,
    });
    change.only_from = Some(vec![MigrationState::CutoverPaused]);
    let status = match control.transition(&change).await {
        Ok(status) => status,
        Err(error) => migrated_anyway(context, migration.id)
            .await
            .ok_or(HoldError::Failed(error))?,
    };
    // The held statements must see the target: reload until the table says so.
    for attempt in 0..50u32 {
        context.publish().await;
        let table = context.publisher.handle().load();
        let moved = table
            .route(&migration.tenant_id)
            .is_some_and(|r| r.read_store() == migration.target_store);
        if moved {
            break;
        }
        tracing::warn!(
            attempt,
            "the routing table does not show the cutover yet; reloading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names = migration.options()?.subscriptions;
    if !names.is_empty() {
        translate_subscriptions(context, &status, &names, operator).await;
    }
    Ok(status)
}

/// Step 6's optional part: the checkpoints of the subscriptions named at `migrate` are
/// translated before the held statements go on. The migration is MIGRATED whatever happens
/// here: a failure is logged (the audit log has a row per rewritten checkpoint) and the
/// operator runs `evshift ctl subscriptions` again.
async fn translate_subscriptions(
    context: &Context,
    migrated: &MigrationStatus,
    names: &[String],
    operator: &str,
) {
    let run = async {
        let mapper = PositionMapper::connect(&context.control_url, migrated).await?;
        SubscriptionMigrator::new(&context.stores, &context.control_url, migrated, &mapper)
            .run(names, false, operator)
            .await
    };
    match tokio::time::timeout(SUBSCRIPTIONS_BOUND, run).await {
        Ok(Ok(plan)) => tracing::info!(phase = "MIGRATED", operation = "subscriptions",
            rewritten = plan.rewrites.len(), "subscription checkpoints translated"),
        Ok(Err(error)) => tracing::error!(phase = "MIGRATED", operation = "subscriptions",
            kind = error.kind(), error = %error,
            "cannot translate the subscription checkpoints; run `evshift ctl subscriptions`"),
        Err(_) => tracing::error!(phase = "MIGRATED", operation = "subscriptions",
            "translating the subscription checkpoints took too long; run `evshift ctl subscriptions`"),
    }
}

/// After a MIGRATED commit that failed: whether it committed all the same (the connection
/// broke after the server committed). Then the route is the target's and must stay so.
async fn migrated_anyway(context: &Context, id: i64) -> Option<MigrationStatus> {
    let fresh = MigrationStore::connect(&context.control_url).await.ok()?;
    let status = fresh.get(id).await.ok()?;
    (status.state == MigrationState::Migrated).then_some(status)
}

/// Back to DUAL_WRITE with the reason, retrying while the control store is unreachable.
async fn roll_back(
    context: &Context,
    control: &mut MigrationStore,
    id: i64,
    operator: &str,
    error: &ControlError,
    pause: Duration,
) {
    tracing::warn!(phase = "CUTOVER_PAUSED", operation = "cutover", error = %error,
        pause_ms = pause.as_millis() as u64, "cutover rolled back; the tenant stays on its source");
    let mut change = transition(
        id,
        MigrationState::DualWrite,
        "cutover_rolled_back",
        operator,
    );
    change.details = json!({"error": {"kind": error.kind(), "message": error.to_string()},
                            "pause_ms": pause.as_secs_f64() * 1000.0});
    change.error_message = Some(format!("{}: {error}", error.kind()));
    change.only_from = Some(vec![MigrationState::CutoverPaused]);
    for attempt in 0..20u32 {
        match context.transition(control, &change).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cannot record the cutover rollback yet");
                if !e.is_unavailable() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                // The driver's connection (and its tenant lock) may be gone: use a new one.
                if let Ok(mut fresh) = MigrationStore::connect(&context.control_url).await {
                    if context.transition(&mut fresh, &change).await.is_ok() {
                        return;
                    }
                }
            }
        }
    }
}

fn transition(id: i64, to: MigrationState, event: &str, operator: &str) -> Transition {
    Transition {
        migration_id: id,
        to,
        event: event.to_string(),
        details: json!({}),
        operator: operator.to_string(),
        error_message: None,
        only_from: None,
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
