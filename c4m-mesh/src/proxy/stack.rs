//! The proxy's shared state and its default stack of layers.

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

use super::backend::{Backend, Registry};
use super::balance::WeightedSplit;
use super::clock::{SharedClock, SystemClock};
use super::endpoints::EndpointSource;
use super::error::{ErrorResponseLayer, ErrorResponseService};
use super::filters::{FiltersLayer, FiltersService};
use super::forward::Forward;
use super::metrics::{MetricsLayer, MetricsService, ProxyMetrics, RouteMetrics};
use super::pool::{Upstream, UpstreamOptions};
use super::ratelimit::{Gcra, RateLimitLayer, RateLimitService};
use super::router::{
    ActionRuntime, ConnectionInfo, RouteHandle, RouterLayer, RouterService, Routes,
};
use super::timeout::{TimeoutLayer, TimeoutService};
use super::trace::{TraceContextLayer, TraceContextService};
use crate::proxy::routes::{BackendTarget, ObjectRef, RateLimit, RouteConfig, ServiceRef};

/// How the proxy behaves.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// Upstream connections and load estimates.
    pub upstream: UpstreamOptions,
}

/// What every layer and request of one proxy shares.
pub(crate) struct Shared {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) clock: SharedClock,
    endpoints: Arc<dyn EndpointSource>,
    backends: Registry<ServiceRef, Backend>,
    limiters: Registry<(ObjectRef, RateLimit), Gcra>,
    pub(crate) metrics: Arc<ProxyMetrics>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// The default stack: see the [module documentation](super).
pub type ProxyService = ErrorResponseService<
    TraceContextService<
        RouterService<MetricsService<RateLimitService<FiltersService<TimeoutService<Forward>>>>>,
    >,
>;

/// A proxy: routes bound to live backends, and the layers that serve them.
///
/// Cloning is cheap and shares everything.
#[derive(Clone, Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    routes: RouteHandle,
}

impl Proxy {
    /// A proxy with no routes yet, resolving backends through `endpoints`.
    /// Its background tasks (upstream connections, tunnels, mirrors) end
    /// when `shutdown` is cancelled.
    pub fn new(
        endpoints: Arc<dyn EndpointSource>,
        options: ProxyOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_clock(endpoints, options, Arc::new(SystemClock::new()), shutdown)
    }

    /// As [`new`](Self::new), with the clock limiters and load estimates read.
    pub fn with_clock(
        endpoints: Arc<dyn EndpointSource>,
        options: ProxyOptions,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            upstream: Arc::new(Upstream {
                options: options.upstream,
                tasks: TaskTracker::new(),
                work: TaskTracker::new(),
                shutdown,
            }),
            clock,
            endpoints,
            backends: Registry::default(),
            limiters: Registry::default(),
            metrics: Arc::new(ProxyMetrics::default()),
        });
        let routes = RouteHandle::new(Routes {
            config: RouteConfig::default(),
            actions: Vec::new(),
        });
        Proxy { shared, routes }
    }

    /// Binds a configuration to live state: backends (with their endpoints
    /// and pooled connections), limiters and metrics are those of the
    /// current routes where they are the same, new ones otherwise.
    pub fn bind(&self, config: RouteConfig) -> Routes {
        let shared = &self.shared;
        let backend = |target: &BackendTarget| match target {
            BackendTarget::Service(service) => {
                Some(shared.backends.get_or_insert_with(service, || {
                    Backend::new(
                        service.clone(),
                        &*shared.endpoints,
                        shared.upstream.clone(),
                        shared.clock.clone(),
                    )
                }))
            }
            BackendTarget::Invalid => None,
        };
        let actions = config
            .actions
            .iter()
            .map(|action| ActionRuntime {
                backends: action.backends.iter().map(|b| backend(&b.target)).collect(),
                split: WeightedSplit::new(action.backends.iter().map(|b| b.weight)),
                mirrors: action
                    .mirrors
                    .iter()
                    .map(|m| (backend(&m.target), m.numerator, m.denominator))
                    .collect(),
                limiter: action.rate_limit.map(|limit| {
                    shared
                        .limiters
                        .get_or_insert_with(&(action.route.clone(), limit), || Gcra::new(&limit))
                }),
                metrics: shared
                    .metrics
                    .routes
                    .get_or_insert_with(&action.route, RouteMetrics::default),
            })
            .collect();
        Routes { config, actions }
    }

    /// Binds `config` and makes it current atomically: requests already
    /// routed finish as they were, the next ones see the new routes, and no
    /// connection is touched.
    pub fn load(&self, config: RouteConfig) {
        let routes = self.bind(config);
        self.routes.store(routes);
        // State only the old routes held is gone now.
        self.shared.backends.prune();
        self.shared.limiters.prune();
        self.shared.metrics.routes.prune();
    }

    /// The current routes.
    pub fn routes(&self) -> &RouteHandle {
        &self.routes
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.shared.metrics
    }

    /// The default stack for one connection.
    pub fn service(&self, connection: ConnectionInfo) -> ProxyService {
        ServiceBuilder::new()
            .layer(ErrorResponseLayer)
            .layer(TraceContextLayer)
            .layer(self.router_layer(connection))
            .layer(MetricsLayer)
            .layer(self.rate_limit_layer())
            .layer(self.filters_layer())
            .layer(TimeoutLayer)
            .service(self.forward())
    }

    /// The router, for a custom stack.
    pub fn router_layer(&self, connection: ConnectionInfo) -> RouterLayer {
        RouterLayer::new(self.routes.clone(), connection, self.shared.metrics.clone())
    }

    /// The rate limiter, for a custom stack.
    pub fn rate_limit_layer(&self) -> RateLimitLayer {
        RateLimitLayer::new(self.shared.clock.clone())
    }

    /// The filters, for a custom stack.
    pub fn filters_layer(&self) -> FiltersLayer {
        FiltersLayer::new(self.shared.clone())
    }

    /// The forwarding service, for a custom stack.
    pub fn forward(&self) -> Forward {
        Forward::new(self.shared.clone())
    }

    /// Waits until the work of past requests has ended: upgraded
    /// connections (WebSockets) closed and mirrored copies sent. New
    /// requests may still start such work.
    pub async fn drained(&self) {
        let work = &self.shared.upstream.work;
        work.close();
        work.wait().await;
        work.reopen();
    }

    /// Waits until every background task has ended; they end once the
    /// shutdown token given at construction is cancelled.
    pub async fn closed(&self) {
        let upstream = &self.shared.upstream;
        upstream.work.close();
        upstream.tasks.close();
        upstream.work.wait().await;
        upstream.tasks.wait().await;
    }
}
