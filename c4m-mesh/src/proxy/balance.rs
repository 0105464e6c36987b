//! Choosing where a request goes: a weighted split between a rule's
//! backends, then power-of-two-choices over peak-EWMA load between the
//! backend's endpoints.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fastrand::Rng;

/// A weighted choice between backends: each is picked in proportion to
/// its weight; weight 0 is never picked.
#[derive(Clone, Debug, Default)]
pub struct WeightedSplit {
    /// Running totals of the weights.
    cumulative: Vec<u64>,
}

impl WeightedSplit {
    /// A split over `weights`, in order.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        WeightedSplit { cumulative }
    }

    /// The index picked, or `None` when every weight is 0.
    pub fn pick(&self, rng: &mut Rng) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        if self.cumulative.len() == 1 {
            return Some(0);
        }
        let ticket = rng.u64(..total);
        Some(self.cumulative.partition_point(|&c| c <= ticket))
    }
}

/// An endpoint's load as peak-EWMA sees it: an exponentially weighted
/// moving average of response times that jumps to any higher sample at
/// once (the "peak") and decays towards lower ones, multiplied by the
/// requests in flight plus one. Linkerd's and Finagle's balancer cost.
#[derive(Debug)]
pub struct PeakEwma {
    pending: AtomicU32,
    /// (estimate in nanoseconds, when it was last updated).
    estimate: Mutex<(f64, Duration)>,
    decay_ns: f64,
}

impl PeakEwma {
    /// A load starting at `default_rtt`, whose samples age over `decay`.
    pub fn new(default_rtt: Duration, decay: Duration, now: Duration) -> Self {
        PeakEwma {
            pending: AtomicU32::new(0),
            estimate: Mutex::new((default_rtt.as_nanos() as f64, now)),
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// The cost of sending one more request now.
    pub fn cost(&self, now: Duration) -> f64 {
        let estimate = self.update(now, 0.0);
        estimate * f64::from(self.pending.load(Ordering::Relaxed) + 1)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight { load: self }
    }

    /// Records a response time observed at `now`.
    pub fn observe(&self, rtt: Duration, now: Duration) {
        self.update(now, rtt.as_nanos() as f64);
    }

    /// Folds a sample (0 to just age the estimate) into the estimate.
    fn update(&self, now: Duration, sample: f64) -> f64 {
        let mut state = self
            .estimate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (estimate, at) = &mut *state;
        if sample > *estimate {
            *estimate = sample;
        } else {
            let elapsed = now.saturating_sub(*at).as_nanos() as f64;
            let decay = (-elapsed / self.decay_ns).exp();
            *estimate = *estimate * decay + sample * (1.0 - decay);
        }
        *at = now.max(*at);
        *estimate
    }

    /// Requests in flight.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }
}

/// A request in flight on an endpoint; dropping it ends the count, also
/// when the request is abandoned.
#[derive(Debug)]
pub struct InFlight<'a> {
    load: &'a PeakEwma,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Power of two choices: of two distinct endpoints picked at random, the
/// one of lower cost. `None` when there are none.
pub fn p2c(len: usize, cost: impl Fn(usize) -> f64, rng: &mut Rng) -> Option<usize> {
    match len {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.usize(..n);
            let mut b = rng.usize(..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_split_lands_in_proportion() {
        let split = WeightedSplit::new([90, 10, 0]);
        let mut rng = Rng::with_seed(7);
        let mut counts = [0u32; 3];
        let n = 100_000;
        for _ in 0..n {
            counts[split.pick(&mut rng).unwrap()] += 1;
        }
        let share = f64::from(counts[0]) / f64::from(n);
        assert!((share - 0.9).abs() < 0.005, "{counts:?}");
        assert_eq!(counts[2], 0, "weight 0 is never picked");
        assert_eq!(counts[0] + counts[1], n);
    }

    #[test]
    fn a_split_with_no_weight_picks_nothing() {
        let mut rng = Rng::with_seed(1);
        assert_eq!(WeightedSplit::new([0, 0]).pick(&mut rng), None);
        assert_eq!(WeightedSplit::new([]).pick(&mut rng), None);
        assert_eq!(WeightedSplit::new([3]).pick(&mut rng), Some(0));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let ms = Duration::from_millis;
        let load = PeakEwma::new(ms(10), ms(1000), Duration::ZERO);
        assert_eq!(load.cost(Duration::ZERO), 10e6);
        // A slow response raises the estimate at once.
        load.observe(ms(100), ms(1));
        assert!((load.cost(ms(1)) - 100e6).abs() < 1.0);
        // Fast responses bring it down gradually.
        load.observe(ms(1), ms(1001));
        let after_one_decay = load.cost(ms(1001));
        let expected = 100e6 * (-1f64).exp() + 1e6 * (1.0 - (-1f64).exp());
        assert!(
            (after_one_decay - expected).abs() / expected < 1e-6,
            "{after_one_decay} vs {expected}"
        );
        // Requests in flight multiply the cost.
        let a = load.start();
        let _b = load.start();
        assert!((load.cost(ms(1001)) - 3.0 * after_one_decay).abs() < 1.0);
        drop(a);
        assert_eq!(load.pending(), 1);
    }

    #[test]
    fn p2c_prefers_the_cheaper_of_two() {
        let costs = [5.0, 1.0, 5.0, 5.0];
        let mut rng = Rng::with_seed(3);
        let mut picks = [0u32; 4];
        for _ in 0..10_000 {
            picks[p2c(4, |i| costs[i], &mut rng).unwrap()] += 1;
        }
        // Endpoint 1 wins every pair it is in: 1 - (3/4 · 2/3) = 1/2 of picks.
        let share = f64::from(picks[1]) / 10_000.0;
        assert!((share - 0.5).abs() < 0.03, "{picks:?}");
        assert_eq!(p2c(0, |_| 0.0, &mut rng), None);
        assert_eq!(p2c(1, |_| 0.0, &mut rng), Some(0));
    }
}
