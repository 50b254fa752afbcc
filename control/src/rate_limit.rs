//! `RateLimiter`: keeps a copy at or under a number of events per second.

use std::time::{Duration, Instant};

/// Paces events so that, since it started, at most `per_second` went through per second.
/// A limit of 0 never waits.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: u64,
    started: Instant,
    events: u64,
}

impl RateLimiter {
    pub fn new(per_second: u64) -> RateLimiter {
        RateLimiter {
            per_second,
            started: Instant::now(),
            events: 0,
        }
    }

    /// Records `events` and returns how long to wait before the next ones may go.
    pub fn record(&mut self, events: u64) -> Duration {
        if self.per_second == 0 {
            return Duration::ZERO;
        }
        self.events += events;
        let due = Duration::from_secs_f64(self.events as f64 / self.per_second as f64);
        due.saturating_sub(self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_when_limited() {
        assert_eq!(RateLimiter::new(0).record(1_000_000), Duration::ZERO);
        let wait = RateLimiter::new(100).record(100);
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
    }
}
