//! The time controllers act on, behind a trait so that unit tests can drive
//! deadlines, backoffs, schedules and windows with a fake clock instead of
//! waiting for them.

use std::fmt;
use std::time::SystemTime;

/// Where controllers read the wall-clock time.
pub(crate) trait Clock: fmt::Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (unit tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FakeClock(std::sync::Mutex<SystemTime>);

#[cfg(test)]
impl FakeClock {
    /// A clock showing `at`.
    pub(crate) fn at(at: SystemTime) -> FakeClock {
        FakeClock(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward by `by`.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
