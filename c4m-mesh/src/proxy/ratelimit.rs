//! Per-route rate limits: the generic cell rate algorithm (GCRA), lock-free,
//! over an injectable clock, and the layer answering 429 with `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use super::body::ProxyBody;
use super::clock::SharedClock;
use super::error::{ProxyError, local_answer};
use super::router::RouteMatch;
use super::short_circuit::ShortCircuit;
use crate::proxy::routes::RateLimit;

/// A GCRA limiter: each request advances a theoretical arrival time (TAT)
/// by the emission interval `T = period / requests`; a request is refused
/// while the TAT lies more than the burst tolerance `τ = (burst − 1)·T`
/// ahead of now. One atomic word of state, so no lock on the hot path.
#[derive(Debug)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
    /// The TAT, in nanoseconds of the clock's time.
    tat: AtomicU64,
}

/// A limiter's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may pass.
    Allow,
    /// Refused; the earliest a request would pass.
    Deny {
        /// How long until then.
        retry_after: Duration,
    },
}

impl Gcra {
    /// A limiter for `limit`.
    pub fn new(limit: &RateLimit) -> Self {
        let interval = (limit.per.as_nanos() / u128::from(limit.requests.max(1))).max(1) as u64;
        let tolerance = interval.saturating_mul(u64::from(limit.burst.max(1) - 1));
        Gcra {
            interval,
            tolerance,
            tat: AtomicU64::new(0),
        }
    }

    /// Decides on one request arriving at `now` (the clock's time).
    pub fn check(&self, now: Duration) -> Decision {
        let now = now.as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            // Refused when the TAT is further ahead of now than the tolerance allows.
            if start - now > self.tolerance {
                return Decision::Deny {
                    retry_after: Duration::from_nanos(start - now - self.tolerance),
                };
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Decision::Allow,
                Err(current) => tat = current,
            }
        }
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least 1.
fn retry_after_value(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// Applies the matched route's rate limit (see [`RouteMatch`]); requests
/// beyond it get `429 Too Many Requests` with `Retry-After`.
#[derive(Clone)]
pub struct RateLimitLayer {
    clock: SharedClock,
}

impl RateLimitLayer {
    /// A layer reading time from `clock`.
    pub fn new(clock: SharedClock) -> Self {
        RateLimitLayer { clock }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            clock: self.clock.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    clock: SharedClock,
}

impl<S> Service<Request<ProxyBody>> for RateLimitService<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = ShortCircuit<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let limiter = request
            .extensions()
            .get::<RouteMatch>()
            .and_then(|m| m.limiter());
        if let Some(limiter) = limiter
            && let Decision::Deny { retry_after } = limiter.check(self.clock.now())
        {
            let mut response = local_answer(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_value(retry_after));
            return ShortCircuit::answer(response);
        }
        ShortCircuit::inner(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_ms: u64, burst: u32) -> Gcra {
        Gcra::new(&RateLimit {
            requests,
            per: Duration::from_millis(per_ms),
            burst,
        })
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn steady_rate_is_one_request_per_interval() {
        // 10/s: one per 100 ms, no burst.
        let g = limit(10, 1000, 1);
        assert_eq!(g.check(Duration::ZERO), Decision::Allow);
        assert_eq!(
            g.check(Duration::ZERO),
            Decision::Deny {
                retry_after: 100 * MS
            }
        );
        assert_eq!(
            g.check(60 * MS),
            Decision::Deny {
                retry_after: 40 * MS
            }
        );
        assert_eq!(g.check(100 * MS), Decision::Allow);
        assert_eq!(
            g.check(150 * MS),
            Decision::Deny {
                retry_after: 50 * MS
            }
        );
        assert_eq!(g.check(200 * MS), Decision::Allow);
        // Idle time does not bank more than the burst.
        assert_eq!(g.check(10_000 * MS), Decision::Allow);
        assert_eq!(
            g.check(10_000 * MS),
            Decision::Deny {
                retry_after: 100 * MS
            }
        );
    }

    #[test]
    fn a_burst_passes_at_once_then_refills_at_the_rate() {
        // 5/s with bursts of 3: interval 200 ms, tolerance 400 ms.
        let g = limit(5, 1000, 3);
        for _ in 0..3 {
            assert_eq!(g.check(Duration::ZERO), Decision::Allow);
        }
        assert_eq!(
            g.check(Duration::ZERO),
            Decision::Deny {
                retry_after: 200 * MS
            }
        );
        assert_eq!(g.check(200 * MS), Decision::Allow);
        assert_eq!(
            g.check(200 * MS),
            Decision::Deny {
                retry_after: 200 * MS
            }
        );
        // After a full second of quiet the whole burst is back, not more.
        let later = 1400 * MS;
        for _ in 0..3 {
            assert_eq!(g.check(later), Decision::Allow);
        }
        assert!(matches!(g.check(later), Decision::Deny { .. }));
    }

    #[test]
    fn over_a_long_window_the_rate_holds_exactly() {
        // 100/s for 10 s of requests every 1 ms (1,000/s offered).
        let g = limit(100, 1000, 1);
        let allowed = (0..10_000u64)
            .filter(|ms| g.check(Duration::from_millis(*ms)) == Decision::Allow)
            .count();
        assert_eq!(allowed, 1000);
        // With a burst of 10: the burst once, then the rate.
        let g = limit(100, 1000, 10);
        let allowed = (0..10_000u64)
            .filter(|ms| g.check(Duration::from_millis(*ms)) == Decision::Allow)
            .count();
        assert_eq!(allowed, 1000 + 9);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_value(Duration::from_millis(10)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1000)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1001)), "2");
        assert_eq!(retry_after_value(Duration::ZERO), "1");
    }
}
