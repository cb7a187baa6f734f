//! Injected time: the scheduler reads the time from a [`Clock`] and sleeps
//! with tokio's timer, so tests run it under `tokio::time::pause()`.

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where the scheduler reads "now" from.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock (production).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall time that advances with tokio's clock: `base + (tokio now − start)`.
/// Under `tokio::time::pause()` it moves only when the test (or auto-advance) moves time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base
            + chrono::Duration::from_std(self.start.elapsed()).unwrap_or(chrono::Duration::MAX)
    }
}

/// How long from `now` until `at` (zero if past).
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}
