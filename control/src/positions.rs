//! `PositionMapper` (DESIGN §10): translates a source `global_position` of a migration's
//! tenant into the target's, from `migration_position_mappings` (one row per copied event:
//! source position, target position, event id).
//!
//! A subscriber's checkpoint P on the source means "every event of the feed up to P is
//! processed"; after the cutover it reads the target from the translated position T on. The
//! rule keeps delivery at-least-once: T is below the target position of every event the
//! subscriber has not processed yet, so it never misses one, and as high as that allows, so it
//! repeats as few as possible.
//!
//! Target positions do not always follow source order: an event whose dual-write failed is
//! copied later by the tail and lands above events that follow it on the source. With A the
//! mapped events at or before P (processed) and B those after P (not processed):
//!
//! - `T = min(max target of A, min target of B - 1)`.
//! - When positions follow source order this is the target of the nearest mapping at or
//!   before P: `exact` when P itself is mapped, else `nearest` (P is the position of another
//!   tenant's event, or of a gap).
//! - When an out-of-order event of B lies below A's targets, T drops below it (`adjusted`),
//!   and the events of A above T are delivered again: `possible_repeats` counts them.
//! - P before the first mapped event: nothing of the tenant is processed, T is just below the
//!   lowest target position (`before_first`).
//!
//! A position cannot be translated (`PositionMappingError`) when the migration has no
//! mappings, when it is negative, or when it is beyond the copied range (above the checkpoint)
//! before the migration is MIGRATED: the tenant may then have source events up to P that are
//! not mapped yet, so no safe T is known. Once MIGRATED every event of the tenant is mapped
//! and such a P translates to the highest target position.

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls, Row};

use crate::control_store::{connection_config, describe_target};
use crate::error::ControlError;
use crate::migration::MigrationStatus;
use crate::routing::MigrationState;

/// How a translation was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranslationKind {
    /// The position is mapped: its event's target position.
    Exact,
    /// The position is not mapped: the target of the nearest mapping before it.
    Nearest,
    /// Out-of-order mappings around the position: lowered (or raised) so nothing is missed.
    Adjusted,
    /// Before the tenant's first copied event: just below its lowest target position.
    BeforeFirst,
}

/// A source position and its target position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    pub source_position: i64,
    pub target_position: i64,
    pub kind: TranslationKind,
    /// The nearest mapped source position at or before `source_position`, if any.
    pub mapped_source_position: Option<i64>,
    /// Already processed events of the tenant that a subscriber resuming at
    /// `target_position` receives again.
    pub possible_repeats: i64,
}

/// What the mappings of a migration say about one position: the inputs of the rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingSummary {
    /// Mappings of the migration.
    pub total: i64,
    /// The nearest mapping at or before the position: (source, target).
    pub nearest: Option<(i64, i64)>,
    /// The highest target position of the mappings at or before the position.
    pub max_target_at_or_before: Option<i64>,
    /// The lowest target position of the mappings after the position.
    pub min_target_after: Option<i64>,
}

/// Where a migration's copy stands, as far as translating is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyExtent {
    /// The last source position copied.
    pub checkpoint: i64,
    /// Every event of the tenant is copied and mapped (MIGRATED).
    pub complete: bool,
}

/// The translation rule (see the module documentation), without `possible_repeats`, which
/// needs one more count. `Err` is the reason the position cannot be translated.
pub fn choose(
    position: i64,
    extent: CopyExtent,
    summary: &MappingSummary,
) -> Result<Translation, String> {
    if position < 0 {
        return Err("positions are not negative".into());
    }
    if summary.total == 0 {
        return Err("the migration has no position mappings (nothing is copied yet)".into());
    }
    if position > extent.checkpoint && !extent.complete {
        return Err(format!(
            "it is beyond the copied range (checkpoint {}): the tenant may have events up to \
             it that are not mapped yet; it translates once the migration is MIGRATED",
            extent.checkpoint
        ));
    }
    let Some((nearest_source, nearest_target)) = summary.nearest else {
        let lowest = summary
            .min_target_after
            .ok_or_else(|| "the mappings are inconsistent".to_string())?;
        return Ok(Translation {
            source_position: position,
            target_position: lowest - 1,
            kind: TranslationKind::BeforeFirst,
            mapped_source_position: None,
            possible_repeats: 0,
        });
    };
    let highest_processed = summary
        .max_target_at_or_before
        .unwrap_or(nearest_target)
        .max(nearest_target);
    let target = match summary.min_target_after {
        Some(lowest_unprocessed) if lowest_unprocessed <= highest_processed => {
            lowest_unprocessed - 1
        }
        _ => highest_processed,
    };
    let kind = if target != nearest_target {
        TranslationKind::Adjusted
    } else if nearest_source == position {
        TranslationKind::Exact
    } else {
        TranslationKind::Nearest
    };
    Ok(Translation {
        source_position: position,
        target_position: target,
        kind,
        mapped_source_position: Some(nearest_source),
        possible_repeats: 0,
    })
}

/// Translates source positions of one migration, over its own control-store connection.
pub struct PositionMapper {
    client: Client,
    control: String,
    migration_id: i64,
    extent: CopyExtent,
}

impl PositionMapper {
    /// Connects to the control store at `control_url` for `migration` (its checkpoint and
    /// state as given: read the migration again for a newer view).
    pub async fn connect(
        control_url: &str,
        migration: &MigrationStatus,
    ) -> Result<PositionMapper, ControlError> {
        let mut config = connection_config(control_url)?;
        config.application_name("evshift-positions");
        let control = describe_target(&config);
        let bound = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(crate::store_directory::STORE_CONNECT_TIMEOUT);
        let (client, connection) = tokio::time::timeout(bound, config.connect(NoTls))
            .await
            .map_err(|_| ControlError::ControlStoreUnavailable {
                context: format!("connect to {control}"),
                cause: format!("no answer within {bound:?}"),
            })?
            .map_err(|e| ControlError::from_control_store(format!("connect to {control}"), &e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PositionMapper {
            client,
            control,
            migration_id: migration.id,
            extent: CopyExtent {
                checkpoint: migration.last_source_position,
                complete: migration.state == MigrationState::Migrated,
            },
        })
    }

    /// The target position a subscriber at source position `position` resumes from.
    pub async fn translate(&self, position: i64) -> Result<Translation, ControlError> {
        let summary = self.summary(position).await?;
        let mut translation = choose(position, self.extent, &summary).map_err(|reason| {
            ControlError::PositionMapping {
                migration_id: self.migration_id,
                position,
                reason,
            }
        })?;
        let highest_processed = summary.max_target_at_or_before.unwrap_or(i64::MIN);
        if translation.target_position < highest_processed {
            translation.possible_repeats = self
                .processed_above(position, translation.target_position)
                .await?;
        }
        Ok(translation)
    }

    /// The rule's inputs for `position`: one pass over the migration's mappings, then the
    /// nearest mapping's target.
    async fn summary(&self, position: i64) -> Result<MappingSummary, ControlError> {
        let row = self
            .query_one(
                "SELECT count(*),
                        max(source_position) FILTER (WHERE source_position <= $2),
                        max(target_position) FILTER (WHERE source_position <= $2),
                        min(target_position) FILTER (WHERE source_position > $2)
                   FROM migration_position_mappings WHERE migration_id = $1",
                &[&self.migration_id, &position],
            )
            .await?;
        let nearest_source: Option<i64> = self.get(&row, 1)?;
        let nearest = match nearest_source {
            None => None,
            Some(source) => {
                let target = self
                    .query_one(
                        "SELECT min(target_position) FROM migration_position_mappings
                          WHERE migration_id = $1 AND source_position = $2",
                        &[&self.migration_id, &source],
                    )
                    .await?;
                self.get::<Option<i64>>(&target, 0)?.map(|t| (source, t))
            }
        };
        Ok(MappingSummary {
            total: self.get(&row, 0)?,
            nearest,
            max_target_at_or_before: self.get(&row, 2)?,
            min_target_after: self.get(&row, 3)?,
        })
    }

    /// Mapped events at or before `position` whose target is above `target`.
    async fn processed_above(&self, position: i64, target: i64) -> Result<i64, ControlError> {
        let row = self
            .query_one(
                "SELECT count(*) FROM migration_position_mappings
                  WHERE migration_id = $1 AND source_position <= $2 AND target_position > $3",
                &[&self.migration_id, &position, &target],
            )
            .await?;
        self.get(&row, 0)
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Row, ControlError> {
        self.client.query_one(sql, params).await.map_err(|e| {
            ControlError::from_control_store(
                format!(
                    "read the position mappings of migration {} on {}",
                    self.migration_id, self.control
                ),
                &e,
            )
        })
    }

    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
        &self,
        row: &'r Row,
        index: usize,
    ) -> Result<T, ControlError> {
        row.try_get(index).map_err(|e| ControlError::ControlStore {
            context: format!("position mappings of migration {}", self.migration_id),
            cause: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// The summary of `mappings` (source, target) around `position`, computed naively.
    fn summary_of(mappings: &[(i64, i64)], position: i64) -> MappingSummary {
        let before = mappings.iter().filter(|(s, _)| *s <= position);
        let after = mappings.iter().filter(|(s, _)| *s > position);
        MappingSummary {
            total: mappings.len() as i64,
            nearest: before.clone().max_by_key(|(s, _)| *s).copied(),
            max_target_at_or_before: before.map(|(_, t)| *t).max(),
            min_target_after: after.map(|(_, t)| *t).min(),
        }
    }

    fn open(checkpoint: i64) -> CopyExtent {
        CopyExtent {
            checkpoint,
            complete: false,
        }
    }

    fn translate(mappings: &[(i64, i64)], position: i64) -> Translation {
        let checkpoint = mappings.iter().map(|(s, _)| *s).max().unwrap_or(0);
        choose(position, open(checkpoint), &summary_of(mappings, position)).unwrap()
    }

    #[test]
    fn exact_and_nearest_in_order() {
        let mappings = [(10, 100), (20, 101), (30, 102)];
        let exact = translate(&mappings, 20);
        assert_eq!(exact.target_position, 101);
        assert_eq!(exact.kind, TranslationKind::Exact);
        assert_eq!(exact.mapped_source_position, Some(20));
        let nearest = translate(&mappings, 25);
        assert_eq!(nearest.target_position, 101);
        assert_eq!(nearest.kind, TranslationKind::Nearest);
        assert_eq!(nearest.mapped_source_position, Some(20));
        let first = translate(&mappings, 5);
        assert_eq!(first.target_position, 99);
        assert_eq!(first.kind, TranslationKind::BeforeFirst);
    }

    #[test]
    fn an_inversion_lowers_the_translation_so_nothing_is_missed() {
        // Source 20 was dual-written late: it landed at 105, after 30 (103).
        let mappings = [(10, 100), (20, 105), (30, 103), (40, 106)];
        // At 20: 30 (103) is not processed, 20 (105) is: resume below 103, repeat 20.
        let at_20 = translate(&mappings, 20);
        assert_eq!(at_20.target_position, 102);
        assert_eq!(at_20.kind, TranslationKind::Adjusted);
        // At 30: both processed; the highest processed target is 105, 40 is at 106.
        let at_30 = translate(&mappings, 30);
        assert_eq!(at_30.target_position, 105);
        assert_eq!(at_30.kind, TranslationKind::Adjusted);
    }

    #[test]
    fn untranslatable_positions() {
        let mappings = [(10, 100)];
        let summary = summary_of(&mappings, 11);
        let error = choose(11, open(10), &summary).unwrap_err();
        assert!(error.contains("beyond the copied range"), "{error}");
        let done = CopyExtent {
            checkpoint: 10,
            complete: true,
        };
        let after_cutover = choose(50, done, &summary_of(&mappings, 50)).unwrap();
        assert_eq!(after_cutover.target_position, 100);
        assert_eq!(after_cutover.kind, TranslationKind::Nearest);
        assert!(choose(-1, open(10), &summary).is_err());
        assert!(choose(5, open(0), &MappingSummary::default())
            .unwrap_err()
            .contains("no position mappings"));
    }

    /// Whatever the order of the target positions: no unprocessed event at or below the
    /// translation (nothing missed), and the translation is the highest such position.
    #[test]
    fn never_misses_an_event_on_shuffled_mappings() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let n = rng.gen_range(1..30);
            let sources: Vec<i64> = (1..=n).map(|i| i * 3).collect();
            let mut targets: Vec<i64> = (1..=n).map(|i| 1000 + i * 2).collect();
            // A few late landings: swap some neighbours.
            for _ in 0..rng.gen_range(0..4) {
                let i = rng.gen_range(0..targets.len());
                let j = (i + rng.gen_range(1..4)).min(targets.len() - 1);
                targets.swap(i, j);
            }
            if rng.gen_bool(0.1) {
                targets.shuffle(&mut rng);
            }
            let mappings: Vec<(i64, i64)> = sources.iter().copied().zip(targets).collect();
            let position = rng.gen_range(0..=n * 3 + 1);
            let checkpoint = n * 3 + 1;
            let translation =
                choose(position, open(checkpoint), &summary_of(&mappings, position)).unwrap();
            let target = translation.target_position;
            for (s, t) in &mappings {
                if *s > position {
                    assert!(
                        *t > target,
                        "missed {s}->{t} at {position}: {translation:?}"
                    );
                }
            }
            let unprocessed_min = mappings
                .iter()
                .filter(|(s, _)| *s > position)
                .map(|(_, t)| *t)
                .min();
            let processed_max = mappings
                .iter()
                .filter(|(s, _)| *s <= position)
                .map(|(_, t)| *t)
                .max();
            let best = match (processed_max, unprocessed_min) {
                (Some(p), Some(u)) => p.min(u - 1),
                (Some(p), None) => p,
                (None, Some(u)) => u - 1,
                (None, None) => unreachable!(),
            };
            assert_eq!(target, best, "{mappings:?} at {position}");
        }
    }
}
