//! `VerificationReport`: what a verification found, as the control socket returns it and the
//! audit log keeps it. Plain data.
//!
//! The report names at most [`MAX_LISTED`] mismatches; the totals count all of them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::canonical::Digest;
use crate::error::ControlError;
use crate::migration::{MigrationStatus, VerifyMode};

/// Mismatches named in one report; the rest are only counted.
pub const MAX_LISTED: usize = 1000;

/// The outcome of one verification of a migration's target against its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    pub migration_id: i64,
    pub tenant_id: Uuid,
    pub source_store: String,
    pub target_store: String,
    pub level: VerifyMode,
    /// Set when the digest covers only the source's rows above this position (and their
    /// copies), as the cutover verifies what was copied since the last full verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_source_position: Option<i64>,
    /// True when nothing differs.
    pub passed: bool,
    pub source: SideSummary,
    pub target: SideSummary,
    pub totals: MismatchTotals,
    /// The first [`MAX_LISTED`] mismatches, in the order found.
    pub mismatches: Vec<Mismatch>,
    /// True when `mismatches` lists fewer than the totals count.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// What one store holds of the tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideSummary {
    /// The tenant's events.
    pub events: i64,
    /// The tenant's streams (distinct `aggregate_id`, `aggregate_type`).
    pub streams: i64,
    /// The digest (levels `hash`, and `verify_since` over the subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// A stream: `(aggregate_id, aggregate_type)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamKey {
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
}

/// One difference between the stores. `kind` names it in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// The source has the stream, the target has not.
    StreamMissing {
        #[serde(flatten)]
        stream: StreamKey,
        source_events: i64,
        source_last_version: i32,
    },
    /// The target has a stream of the tenant that the source has not.
    StreamExtra {
        #[serde(flatten)]
        stream: StreamKey,
        target_events: i64,
        target_last_version: i32,
    },
    /// The stream's event counts differ.
    StreamCount {
        #[serde(flatten)]
        stream: StreamKey,
        source_events: i64,
        target_events: i64,
    },
    /// The stream's last versions differ.
    StreamLastVersion {
        #[serde(flatten)]
        stream: StreamKey,
        source_last_version: i32,
        target_last_version: i32,
    },
    /// The digests differ: some row differs, is missing or is extra.
    Digest { source: Digest, target: Digest },
    /// The source has the event, the target has not (at this stream and version).
    EventMissing {
        event_id: Uuid,
        #[serde(flatten)]
        stream: StreamKey,
        version: i32,
    },
    /// The target has an event the source has not (at this stream and version).
    EventExtra {
        event_id: Uuid,
        #[serde(flatten)]
        stream: StreamKey,
        version: i32,
    },
    /// Both have the event; these columns differ.
    EventDiffers {
        event_id: Uuid,
        #[serde(flatten)]
        stream: StreamKey,
        version: i32,
        columns: Vec<String>,
    },
}

/// How many mismatches of each kind were found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchTotals {
    pub streams_missing: u64,
    pub streams_extra: u64,
    pub stream_counts: u64,
    pub stream_last_versions: u64,
    pub digests: u64,
    pub events_missing: u64,
    pub events_extra: u64,
    pub events_differing: u64,
}

impl MismatchTotals {
    /// All mismatches.
    pub fn total(&self) -> u64 {
        self.streams_missing
            + self.streams_extra
            + self.stream_counts
            + self.stream_last_versions
            + self.digests
            + self.events_missing
            + self.events_extra
            + self.events_differing
    }

    fn count(&mut self, mismatch: &Mismatch) {
        let slot = match mismatch {
            Mismatch::StreamMissing { .. } => &mut self.streams_missing,
            Mismatch::StreamExtra { .. } => &mut self.streams_extra,
            Mismatch::StreamCount { .. } => &mut self.stream_counts,
            Mismatch::StreamLastVersion { .. } => &mut self.stream_last_versions,
            Mismatch::Digest { .. } => &mut self.digests,
            Mismatch::EventMissing { .. } => &mut self.events_missing,
            Mismatch::EventExtra { .. } => &mut self.events_extra,
            Mismatch::EventDiffers { .. } => &mut self.events_differing,
        };
        *slot += 1;
    }

    /// "2 events missing, 1 extra event" style; "no mismatch" when all are zero.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.streams_missing, "stream(s) missing"),
            (self.streams_extra, "extra stream(s)"),
            (self.stream_counts, "stream(s) with another event count"),
            (
                self.stream_last_versions,
                "stream(s) with another last version",
            ),
            (self.digests, "digest mismatch"),
            (self.events_missing, "event(s) missing"),
            (self.events_extra, "extra event(s)"),
            (self.events_differing, "differing event(s)"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "no mismatch".into()
        } else {
            parts.join(", ")
        }
    }
}

impl VerificationReport {
    /// `Consistency` unless the verification passed.
    pub fn ensure_passed(self) -> Result<VerificationReport, ControlError> {
        if self.passed {
            return Ok(self);
        }
        Err(ControlError::Consistency {
            migration_id: self.migration_id,
            summary: self.summary(),
        })
    }

    /// One line: the level, the verdict and what differs.
    pub fn summary(&self) -> String {
        let level = match self.since_source_position {
            None => format!("{:?}", self.level).to_lowercase(),
            Some(position) => format!(
                "{} since source position {position}",
                format!("{:?}", self.level).to_lowercase()
            ),
        };
        let verdict = if self.passed { "passed" } else { "failed" };
        format!(
            "{level} verification {verdict}: {} (source {} events, target {} events)",
            self.totals.describe(),
            self.source.events,
            self.target.events
        )
    }
}

/// Collects mismatches and side summaries while a verification runs.
#[derive(Debug, Default)]
pub(crate) struct ReportBuilder {
    pub source: SideSummary,
    pub target: SideSummary,
    totals: MismatchTotals,
    mismatches: Vec<Mismatch>,
}

impl ReportBuilder {
    /// Counts `mismatch`, and lists it while fewer than [`MAX_LISTED`] are.
    pub fn push(&mut self, mismatch: Mismatch) {
        self.totals.count(&mismatch);
        if self.mismatches.len() < MAX_LISTED {
            self.mismatches.push(mismatch);
        }
    }

    /// The counts so far.
    #[cfg(test)]
    pub fn totals(&self) -> MismatchTotals {
        self.totals
    }

    /// The mismatches listed so far.
    #[cfg(test)]
    pub fn listed(&self) -> &[Mismatch] {
        &self.mismatches
    }

    /// The report of `migration` at `level`, taking `duration_ms`.
    pub fn finish(
        self,
        migration: &MigrationStatus,
        level: VerifyMode,
        since_source_position: Option<i64>,
        duration_ms: u64,
    ) -> VerificationReport {
        let total = self.totals.total();
        VerificationReport {
            migration_id: migration.id,
            tenant_id: migration.tenant_id,
            source_store: migration.source_store.clone(),
            target_store: migration.target_store.clone(),
            level,
            since_source_position,
            passed: total == 0,
            source: self.source,
            target: self.target,
            totals: self.totals,
            truncated: (self.mismatches.len() as u64) < total,
            mismatches: self.mismatches,
            duration_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamKey {
        StreamKey {
            aggregate_id: Uuid::nil(),
            aggregate_type: "Order".into(),
        }
    }

    fn missing(version: i32) -> Mismatch {
        Mismatch::EventMissing {
            event_id: Uuid::nil(),
            stream: stream(),
            version,
        }
    }

    #[test]
    fn the_list_is_capped_but_the_totals_are_not() {
        let mut builder = ReportBuilder::default();
        for version in 0..(MAX_LISTED as i32 + 5) {
            builder.push(missing(version));
        }
        builder.push(Mismatch::StreamExtra {
            stream: stream(),
            target_events: 1,
            target_last_version: 1,
        });
        assert_eq!(builder.mismatches.len(), MAX_LISTED);
        assert_eq!(builder.totals.events_missing, MAX_LISTED as u64 + 5);
        assert_eq!(builder.totals.streams_extra, 1);
        assert_eq!(builder.totals.total(), MAX_LISTED as u64 + 6);
        assert_eq!(
            builder.totals.describe(),
            "1 extra stream(s), 1005 event(s) missing"
        );
    }

    #[test]
    fn mismatches_serialise_flat_with_their_kind() {
        let json = serde_json::to_value(Mismatch::EventDiffers {
            event_id: Uuid::nil(),
            stream: stream(),
            version: 3,
            columns: vec!["payload".into()],
        })
        .unwrap();
        assert_eq!(json["kind"], "event_differs");
        assert_eq!(json["aggregate_type"], "Order");
        assert_eq!(json["columns"][0], "payload");
        let back: Mismatch = serde_json::from_value(json).unwrap();
        assert!(matches!(back, Mismatch::EventDiffers { version: 3, .. }));
    }

    #[test]
    fn an_empty_builder_passes() {
        assert_eq!(MismatchTotals::default().describe(), "no mismatch");
        assert_eq!(ReportBuilder::default().totals.total(), 0);
    }
}
