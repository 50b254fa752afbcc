//! `MigrationSettings`: the `[migration]` section of the configuration, as the migration plane
//! uses it (defaults for new migrations, retry policy, tail interval).

use std::time::Duration;

use crate::error::ControlError;
use crate::migration::{MigrationOptions, OptionOverrides, VerifyMode};

/// Largest batch accepted: a batch is held in memory between the source and the target.
pub const MAX_BATCH_SIZE: u32 = 100_000;

/// Process-wide migration settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSettings {
    /// Default events per batch.
    pub batch_size: u32,
    /// Default copy speed limit in events per second; 0 = off.
    pub rate_limit_events_per_sec: u64,
    /// Bound of the cutover hold (used by the cutover).
    pub cutover_timeout: Duration,
    /// Lag at or under which the cutover starts (used by the cutover).
    pub max_lag_events: u64,
    /// Default verification of the cutover.
    pub verify: VerifyMode,
    /// Consecutive failed attempts of a transient error before the migration is FAILED.
    pub retry_limit: u32,
    /// First delay after a transient error.
    pub retry_initial_backoff: Duration,
    /// Longest delay between attempts.
    pub retry_max_backoff: Duration,
    /// How often the tail looks for new source events after the bulk pass.
    pub tail_interval: Duration,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            batch_size: 1000,
            rate_limit_events_per_sec: 0,
            cutover_timeout: Duration::from_millis(5000),
            max_lag_events: 0,
            verify: VerifyMode::Hash,
            retry_limit: 30,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_millis(5000),
            tail_interval: Duration::from_millis(200),
        }
    }
}

impl MigrationSettings {
    /// The options of a new migration: the overrides where given, else these defaults.
    pub fn options(&self, overrides: &OptionOverrides) -> Result<MigrationOptions, ControlError> {
        let batch_size = overrides.batch_size.unwrap_or(self.batch_size);
        if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
            return Err(ControlError::InvalidRequest(format!(
                "batch size {batch_size} is out of range 1..={MAX_BATCH_SIZE}"
            )));
        }
        Ok(MigrationOptions {
            batch_size,
            rate_limit_events_per_sec: overrides
                .rate_limit_events_per_sec
                .unwrap_or(self.rate_limit_events_per_sec),
            manual_cutover: overrides.manual_cutover,
            verify: overrides.verify.unwrap_or(self.verify),
            subscriptions: overrides.subscriptions.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_batch_sizes_are_bounded() {
        let settings = MigrationSettings::default();
        let defaults = settings.options(&OptionOverrides::default()).unwrap();
        assert_eq!(defaults.batch_size, 1000);
        assert_eq!(defaults.verify, VerifyMode::Hash);
        let custom = settings
            .options(&OptionOverrides {
                batch_size: Some(50),
                verify: Some(VerifyMode::Full),
                manual_cutover: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (custom.batch_size, custom.verify, custom.manual_cutover),
            (50, VerifyMode::Full, true)
        );
        for bad in [0, MAX_BATCH_SIZE + 1] {
            let overrides = OptionOverrides {
                batch_size: Some(bad),
                ..Default::default()
            };
            assert!(settings.options(&overrides).is_err());
        }
    }
}
