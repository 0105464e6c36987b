//! Probe thresholds: when the next attempt of a Kubernetes probe is due, and
//! when its attempts flip health ([`ProbeTracker`]); the attempts themselves
//! are a [`Prober`]'s (the agent's runs HTTP GET, TCP, exec and gRPC).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Probe;

use crate::runtime::{ContainerRuntime, ContainerStatus};

/// Kubernetes defaults for the probe fields.
const DEFAULT_TIMEOUT_SECONDS: i32 = 1;
const DEFAULT_PERIOD_SECONDS: i32 = 10;
const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// A probe field in seconds or count; unset or below 1 means the default
/// (Kubernetes rejects values below 1 for these fields).
fn at_least_one(value: Option<i32>, default: i32) -> u32 {
    value.filter(|&v| v >= 1).unwrap_or(default).unsigned_abs()
}

/// The probe's per-attempt timeout (`timeoutSeconds`, default 1 s).
pub fn probe_timeout(probe: &Probe) -> Duration {
    Duration::from_secs(at_least_one(probe.timeout_seconds, DEFAULT_TIMEOUT_SECONDS).into())
}

/// Why one probe attempt failed, as the kubelet words it
/// (`HTTP GET http://127.0.0.1:40123/healthz: status 503`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeFailure(pub String);

/// Runs one attempt of a probe: the seam between the agent's health
/// checks and how they reach a container.
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    /// Runs ONE attempt of `probe` against the container `status`
    /// describes, bounded by the probe's `timeoutSeconds`; exec probes run
    /// through `runtime`.
    async fn probe_once(
        &self,
        probe: &Probe,
        runtime: &dyn ContainerRuntime,
        status: &ContainerStatus,
    ) -> Result<(), ProbeFailure>;
}

/// Applies a probe's timing and thresholds to its attempts: when the next
/// attempt is due, and when health flips. Pure logic over explicit
/// [`Instant`]s.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    next_due: Instant,
    healthy: bool,
    consecutive_successes: u32,
    consecutive_failures: u32,
}

impl ProbeTracker {
    /// A tracker for `probe` on a container that started at `started`: the
    /// first attempt is due after `initialDelaySeconds`. Readiness probes
    /// start unhealthy (`initially_healthy = false`), liveness probes start
    /// healthy (`true`).
    pub fn new(probe: &Probe, started: Instant, initially_healthy: bool) -> Self {
        let initial_delay = probe
            .initial_delay_seconds
            .unwrap_or(0)
            .max(0)
            .unsigned_abs();
        ProbeTracker {
            period: Duration::from_secs(
                at_least_one(probe.period_seconds, DEFAULT_PERIOD_SECONDS).into(),
            ),
            timeout: probe_timeout(probe),
            success_threshold: at_least_one(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
            failure_threshold: at_least_one(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
            next_due: started + Duration::from_secs(initial_delay.into()),
            healthy: initially_healthy,
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }

    /// When the next attempt is due.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// The per-attempt timeout (`timeoutSeconds`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records an attempt's outcome at `now`; the next attempt is due one
    /// period later. Returns the new health when this attempt flipped it
    /// (`successThreshold` successes or `failureThreshold` failures in a row).
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<bool> {
        self.next_due = now + self.period;
        if ok {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if !self.healthy && self.consecutive_successes >= self.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.healthy && self.consecutive_failures >= self.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }

    /// The current health.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// A startup probe's verdict on the attempts so far: passed
    /// (`successThreshold` successes in a row), failed (`failureThreshold`
    /// failures in a row), or undecided (`None`). A startup probe stops at
    /// its verdict.
    pub fn verdict(&self) -> Option<bool> {
        if self.consecutive_successes >= self.success_threshold {
            Some(true)
        } else if self.consecutive_failures >= self.failure_threshold {
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> Probe {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_apply() {
        let start = Instant::now();
        let mut tracker = ProbeTracker::new(&probe("exec: {command: [true]}"), start, true);
        assert_eq!(tracker.next_due(), start);
        assert_eq!(tracker.timeout(), Duration::from_secs(1));
        assert!(tracker.healthy());
        // failureThreshold 3.
        assert_eq!(tracker.record(false, start), None);
        assert_eq!(tracker.next_due(), start + Duration::from_secs(10));
        assert_eq!(tracker.record(false, start), None);
        assert_eq!(tracker.record(false, start), Some(false));
        assert_eq!(tracker.record(false, start), None);
        // successThreshold 1.
        assert_eq!(tracker.record(true, start), Some(true));
        assert!(tracker.healthy());
    }

    #[test]
    fn readiness_starts_unhealthy_and_needs_success_threshold() {
        let start = Instant::now();
        let probe = probe(
            "{tcpSocket: {port: 80}, initialDelaySeconds: 5, periodSeconds: 2, successThreshold: 2, failureThreshold: 1, timeoutSeconds: 3}",
        );
        let mut tracker = ProbeTracker::new(&probe, start, false);
        assert!(!tracker.healthy());
        assert_eq!(tracker.next_due(), start + Duration::from_secs(5));
        assert_eq!(tracker.timeout(), Duration::from_secs(3));
        let t1 = start + Duration::from_secs(5);
        assert_eq!(tracker.record(true, t1), None);
        assert_eq!(tracker.next_due(), t1 + Duration::from_secs(2));
        // A failure resets the success count.
        assert_eq!(tracker.record(false, t1), None);
        assert_eq!(tracker.record(true, t1), None);
        assert_eq!(tracker.record(true, t1), Some(true));
        // failureThreshold 1: one failure flips.
        assert_eq!(tracker.record(false, t1), Some(false));
    }

    #[test]
    fn a_startup_probe_passes_on_success_and_fails_after_the_threshold() {
        let start = Instant::now();
        let probe = probe("{exec: {command: [x]}, failureThreshold: 2}");
        let mut tracker = ProbeTracker::new(&probe, start, false);
        assert_eq!(tracker.verdict(), None);
        tracker.record(false, start);
        assert_eq!(tracker.verdict(), None);
        tracker.record(true, start);
        assert_eq!(tracker.verdict(), Some(true));
        let mut tracker = ProbeTracker::new(&probe, start, false);
        tracker.record(false, start);
        tracker.record(false, start);
        assert_eq!(tracker.verdict(), Some(false));
    }

    #[test]
    fn nonsense_values_fall_back_to_defaults() {
        let start = Instant::now();
        let probe = probe(
            "{exec: {command: [x]}, initialDelaySeconds: -4, periodSeconds: 0, failureThreshold: -1}",
        );
        let mut tracker = ProbeTracker::new(&probe, start, true);
        assert_eq!(tracker.next_due(), start);
        assert_eq!(tracker.record(false, start), None);
        assert_eq!(tracker.next_due(), start + Duration::from_secs(10));
        assert_eq!(tracker.record(false, start), None);
        assert_eq!(tracker.record(false, start), Some(false));
    }
}
