//! The HTTP proxy shared by the edge gateway and the mesh sidecar.
//!
//! [`api`] and [`routes`] are the route model (feature `routes`). The rest
//! (feature `proxy`) is the proxy core: tower layers over hyper 1, each
//! doing one thing, so a sidecar can put its own (identity, authorization,
//! retries) between them. The default stack, outermost first:
//!
//! | layer | does |
//! |---|---|
//! | [`ErrorResponseLayer`] | takes hyper's bodies; [`ProxyError`]s become 5xx answers |
//! | [`TraceContextLayer`] | W3C `traceparent`: propagated with a new span id, or started |
//! | [`RouterLayer`] | matches the request to a rule of the current [`Routes`] (404 otherwise) and puts a [`RouteMatch`] in its extensions |
//! | [`MetricsLayer`] | counts the answer by route and status, times it |
//! | [`RateLimitLayer`] | the route's GCRA limit: 429 with `Retry-After` |
//! | [`FiltersLayer`] | redirect, header edits, rewrite, mirrors |
//! | [`TimeoutLayer`] | the rule's request timeout: 504 |
//! | [`Forward`] | weighted split, P2C over peak EWMA, pooled connections, HTTP/1.1, HTTP/2, gRPC, upgrades |
//!
//! A [`Proxy`] owns the shared state: the current [`Routes`] (a
//! [`RouteConfig`](routes::RouteConfig) bound to live backends, swapped
//! atomically by [`Proxy::load`]), the endpoint source, connection pools,
//! limiters and metrics that survive reloads.

pub mod api;
pub mod routes;

#[cfg(feature = "proxy")]
mod backend;
#[cfg(feature = "proxy")]
mod balance;
#[cfg(feature = "proxy")]
mod body;
#[cfg(feature = "proxy")]
mod clock;
#[cfg(feature = "proxy")]
mod endpoints;
#[cfg(feature = "proxy")]
mod error;
#[cfg(feature = "proxy")]
mod filters;
#[cfg(feature = "proxy")]
mod forward;
#[cfg(feature = "proxy")]
mod metrics;
#[cfg(feature = "proxy")]
mod pool;
#[cfg(feature = "proxy")]
mod ratelimit;
#[cfg(feature = "proxy")]
mod router;
#[cfg(feature = "proxy")]
mod short_circuit;
#[cfg(feature = "proxy")]
mod stack;
#[cfg(feature = "proxy")]
mod timeout;
#[cfg(feature = "proxy")]
mod trace;

#[cfg(feature = "proxy")]
pub use self::{
    balance::{InFlight, PeakEwma, WeightedSplit, p2c},
    body::{BodyError, ProxyBody},
    clock::{Clock, SharedClock, SystemClock},
    endpoints::{AppProtocol, EndpointSource, ServiceEndpoints, StaticEndpoints},
    error::{ErrorResponseFuture, ErrorResponseLayer, ErrorResponseService, ProxyError},
    filters::{FiltersFuture, FiltersLayer, FiltersService},
    forward::Forward,
    metrics::{MetricsFuture, MetricsLayer, MetricsService, ProxyMetrics, RouteMetrics},
    pool::UpstreamOptions,
    ratelimit::{Decision, Gcra, RateLimitLayer, RateLimitService},
    router::{ConnectionInfo, RouteHandle, RouteMatch, RouterLayer, RouterService, Routes},
    short_circuit::ShortCircuit,
    stack::{Proxy, ProxyOptions, ProxyService},
    timeout::{TimeoutFuture, TimeoutLayer, TimeoutService},
    trace::{TRACEPARENT, TRACESTATE, TraceContextLayer, TraceContextService, TraceParent},
};

#[cfg(all(feature = "proxy", any(test, feature = "test-util")))]
pub use clock::ManualClock;

#[cfg(feature = "proxy")]
pub(crate) use {error::ErrorChain, stack::Shared};
