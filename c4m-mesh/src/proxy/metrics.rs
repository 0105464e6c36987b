//! Per-route request counts by status and latency histograms, kept in
//! atomics (no lock, no allocation per request), rendered as Prometheus text.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::backend::Registry;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::router::RouteMatch;
use crate::proxy::routes::ObjectRef;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Distinct status codes counted per route; more fall under `code="other"`.
const CODE_SLOTS: usize = 16;

/// One route's counters.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    codes: [AtomicU16; CODE_SLOTS],
    counts: [AtomicU64; CODE_SLOTS],
    other: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl RouteMetrics {
    /// Records one answered request.
    pub fn record(&self, status: StatusCode, latency: Duration) {
        self.status_counter(status.as_u16())
            .fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of `code`: its slot, claimed on first use.
    fn status_counter(&self, code: u16) -> &AtomicU64 {
        for (slot, count) in self.codes.iter().zip(&self.counts) {
            match slot.load(Ordering::Acquire) {
                c if c == code => return count,
                0 => match slot.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return count,
                    Err(c) if c == code => return count,
                    Err(_) => continue,
                },
                _ => continue,
            }
        }
        &self.other
    }

    /// Requests counted with `code`.
    pub fn count_of(&self, code: StatusCode) -> u64 {
        self.codes
            .iter()
            .zip(&self.counts)
            .find(|(slot, _)| slot.load(Ordering::Acquire) == code.as_u16())
            .map_or(0, |(_, count)| count.load(Ordering::Relaxed))
    }
}

/// The proxy's metrics: every live route's, and requests no route matched.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub(crate) routes: Registry<ObjectRef, RouteMetrics>,
    unmatched: AtomicU64,
}

impl ProxyMetrics {
    pub(crate) fn count_unmatched(&self) {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics of `route`, while it is configured.
    pub fn route(&self, route: &ObjectRef) -> Option<Arc<RouteMetrics>> {
        self.routes
            .live()
            .into_iter()
            .find(|(r, _)| r == route)
            .map(|(_, m)| m)
    }

    /// Appends the metrics in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let mut routes = self.routes.live();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(
            "# HELP c4m_proxy_requests_total Requests answered, by route and status code.\n",
        );
        out.push_str("# TYPE c4m_proxy_requests_total counter\n");
        for (route, m) in &routes {
            let labels = labels(route);
            for (slot, count) in m.codes.iter().zip(&m.counts) {
                let code = slot.load(Ordering::Acquire);
                if code != 0 {
                    let _ = writeln!(
                        out,
                        "c4m_proxy_requests_total{{{labels},code=\"{code}\"}} {}",
                        count.load(Ordering::Relaxed)
                    );
                }
            }
            let other = m.other.load(Ordering::Relaxed);
            if other > 0 {
                let _ = writeln!(
                    out,
                    "c4m_proxy_requests_total{{{labels},code=\"other\"}} {other}"
                );
            }
        }
        out.push_str(
            "# HELP c4m_proxy_unmatched_requests_total Requests no route matched (answered 404).\n",
        );
        out.push_str("# TYPE c4m_proxy_unmatched_requests_total counter\n");
        let _ = writeln!(
            out,
            "c4m_proxy_unmatched_requests_total {}",
            self.unmatched.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP c4m_proxy_request_duration_seconds Time to the response's headers, by route.\n",
        );
        out.push_str("# TYPE c4m_proxy_request_duration_seconds histogram\n");
        for (route, m) in &routes {
            let labels = labels(route);
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&m.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "c4m_proxy_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = m.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "c4m_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "c4m_proxy_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "c4m_proxy_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
    }
}

fn labels(route: &ObjectRef) -> String {
    format!(
        "kind=\"{}\",namespace=\"{}\",name=\"{}\"",
        route.kind,
        escape(&route.namespace),
        escape(&route.name)
    )
}

/// Escapes a label value as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Records each routed request's status and time to response headers in
/// its route's metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S> Service<Request<ProxyBody>> for MetricsService<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let metrics = request
            .extensions()
            .get::<RouteMatch>()
            .map(|m| m.runtime().metrics.clone());
        MetricsFuture {
            inner: self.inner.call(request),
            metrics,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        metrics: Option<Arc<RouteMetrics>>,
        start: Instant,
    }
}

impl<F> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(metrics) = this.metrics.take() {
            let status = match &result {
                Ok(response) => response.status(),
                Err(error) => error.status(),
            };
            metrics.record(status, this.start.elapsed());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status_and_renders_a_histogram() {
        let metrics = ProxyMetrics::default();
        let route = ObjectRef::new("HTTPRoute", "shop", "web");
        let m = metrics
            .routes
            .get_or_insert_with(&route, RouteMetrics::default);
        m.record(StatusCode::OK, Duration::from_micros(700));
        m.record(StatusCode::OK, Duration::from_millis(3));
        m.record(StatusCode::TOO_MANY_REQUESTS, Duration::from_micros(10));
        metrics.count_unmatched();
        assert_eq!(m.count_of(StatusCode::OK), 2);
        let mut out = String::new();
        metrics.render(&mut out);
        let labels = "kind=\"HTTPRoute\",namespace=\"shop\",name=\"web\"";
        for line in [
            format!("c4m_proxy_requests_total{{{labels},code=\"200\"}} 2"),
            format!("c4m_proxy_requests_total{{{labels},code=\"429\"}} 1"),
            "c4m_proxy_unmatched_requests_total 1".to_owned(),
            format!("c4m_proxy_request_duration_seconds_bucket{{{labels},le=\"0.0005\"}} 1"),
            format!("c4m_proxy_request_duration_seconds_bucket{{{labels},le=\"0.001\"}} 2"),
            format!("c4m_proxy_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 3"),
            format!("c4m_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
            format!("c4m_proxy_request_duration_seconds_count{{{labels}}} 3"),
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn codes_beyond_the_slots_count_as_other() {
        let m = RouteMetrics::default();
        for code in 200..(200 + CODE_SLOTS as u16 + 3) {
            m.record(StatusCode::from_u16(code).unwrap(), Duration::ZERO);
        }
        assert_eq!(m.other.load(Ordering::Relaxed), 3);
        assert_eq!(m.count_of(StatusCode::OK), 1);
    }
}
