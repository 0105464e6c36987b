//! Route selection: a configuration bound to live state, swapped whole on
//! reload, and the layer that matches each request against it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::backend::Backend;
use super::balance::WeightedSplit;
use super::body::ProxyBody;
use super::error::{ProxyError, local_answer};
use super::metrics::{ProxyMetrics, RouteMetrics};
use super::ratelimit::Gcra;
use super::short_circuit::ShortCircuit;
use crate::proxy::routes::{ActionId, RouteAction, RouteConfig};

/// The connection a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// The listener port the configuration names (which route table
    /// applies; may differ from `local`'s port when a test binds elsewhere).
    pub port: u16,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The live state of one action: backends with their endpoints, the split
/// between them, mirrors, the route's limiter and metrics.
#[derive(Debug)]
pub(crate) struct ActionRuntime {
    /// `None` for a reference that was invalid or not permitted.
    pub(crate) backends: Vec<Option<Arc<Backend>>>,
    pub(crate) split: WeightedSplit,
    /// Mirror backends with the share of requests they get.
    pub(crate) mirrors: Vec<(Option<Arc<Backend>>, u32, u32)>,
    pub(crate) limiter: Option<Arc<Gcra>>,
    pub(crate) metrics: Arc<RouteMetrics>,
}

/// A [`RouteConfig`] bound to live backends, limiters and metrics: what
/// requests are routed by. Made by [`Proxy::bind`](super::Proxy::bind).
#[derive(Debug)]
pub struct Routes {
    pub(crate) config: RouteConfig,
    pub(crate) actions: Vec<ActionRuntime>,
}

impl Routes {
    /// The configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }
}

/// The routes requests are matched against now; replaced atomically, so a
/// request sees either the old or the new routes whole, and connections
/// are untouched.
#[derive(Clone, Debug)]
pub struct RouteHandle(Arc<ArcSwap<Routes>>);

impl RouteHandle {
    pub(crate) fn new(routes: Routes) -> Self {
        RouteHandle(Arc::new(ArcSwap::from_pointee(routes)))
    }

    /// Makes `routes` current.
    pub fn store(&self, routes: Routes) {
        self.0.store(Arc::new(routes));
    }

    /// The routes now current.
    pub fn load(&self) -> Arc<Routes> {
        self.0.load_full()
    }
}

/// What the router found for a request, in its extensions for the layers
/// after it.
#[derive(Clone, Debug)]
pub struct RouteMatch {
    routes: Arc<Routes>,
    action: ActionId,
    prefix_len: usize,
    connection: ConnectionInfo,
}

impl RouteMatch {
    /// The matched rule's action.
    pub fn action(&self) -> &RouteAction {
        self.routes.config.action(self.action)
    }

    /// How many bytes of the path the rule's prefix matched (for
    /// `ReplacePrefixMatch`).
    pub fn matched_prefix_len(&self) -> usize {
        self.prefix_len
    }

    /// The connection the request arrived on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    pub(crate) fn runtime(&self) -> &ActionRuntime {
        &self.routes.actions[self.action.0 as usize]
    }

    pub(crate) fn limiter(&self) -> Option<&Gcra> {
        self.runtime().limiter.as_deref()
    }
}

/// Matches each request against the current routes of its listener port;
/// a request no rule matches gets 404.
#[derive(Clone, Debug)]
pub struct RouterLayer {
    routes: RouteHandle,
    connection: ConnectionInfo,
    metrics: Arc<ProxyMetrics>,
}

impl RouterLayer {
    pub(crate) fn new(
        routes: RouteHandle,
        connection: ConnectionInfo,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        RouterLayer {
            routes,
            connection,
            metrics,
        }
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = RouterService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouterService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RouterLayer`].
#[derive(Clone, Debug)]
pub struct RouterService<S> {
    inner: S,
    layer: RouterLayer,
}

impl<S> Service<Request<ProxyBody>> for RouterService<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = ShortCircuit<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let routes = self.layer.routes.load();
        let found = routes
            .config
            .listener(self.layer.connection.port)
            .and_then(|l| l.table.find(&request));
        let Some(entry) = found else {
            self.layer.metrics.count_unmatched();
            return ShortCircuit::answer(local_answer(StatusCode::NOT_FOUND, "no route\n"));
        };
        let route_match = RouteMatch {
            action: entry.action,
            prefix_len: entry.matcher.path.matched_prefix_len(request.uri().path()),
            connection: self.layer.connection,
            routes: routes.clone(),
        };
        request.extensions_mut().insert(route_match);
        ShortCircuit::inner(self.inner.call(request))
    }
}
