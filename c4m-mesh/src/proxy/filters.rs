//! Gateway API filters: redirects, rewrites, header edits and mirrors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{HOST, LOCATION};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use tower::{Layer, Service};

use super::Shared;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::forward;
use super::router::RouteMatch;
use super::short_circuit::ShortCircuit;
use crate::proxy::routes::{Redirect, Rewrite, Scheme};

/// How many body frames a mirror may fall behind before its copy is cut.
const MIRROR_BUFFER_FRAMES: usize = 16;

/// Applies the matched rule's filters: a `RequestRedirect` answers at
/// once; otherwise request headers are edited, the URL rewritten, copies
/// sent to mirrors, and the response headers edited on the way back.
#[derive(Clone, Debug)]
pub struct FiltersLayer {
    shared: Arc<Shared>,
}

impl FiltersLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        FiltersLayer { shared }
    }
}

impl<S> Layer<S> for FiltersLayer {
    type Service = FiltersService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FiltersService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`FiltersLayer`].
#[derive(Clone, Debug)]
pub struct FiltersService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<ProxyBody>> for FiltersService<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = FiltersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        // A reference count, so the request can be edited while the rule is read.
        let Some(route) = request.extensions().get::<RouteMatch>().cloned() else {
            return FiltersFuture {
                inner: ShortCircuit::inner(self.inner.call(request)),
                response_edits: None,
            };
        };
        let action = route.action();
        if let Some(redirect) = &action.redirect {
            let response = redirect_response(redirect, &request, &route);
            return FiltersFuture {
                inner: ShortCircuit::answer(response),
                response_edits: None,
            };
        }
        if let Some(edits) = &action.request_headers {
            edits.apply(request.headers_mut());
        }
        if let Some(rewrite) = &action.rewrite {
            rewrite_request(rewrite, route.matched_prefix_len(), &mut request);
        }
        mirror_copies(&self.shared, &route, &mut request);
        let response_edits = action.response_headers.is_some().then_some(route);
        FiltersFuture {
            inner: ShortCircuit::inner(self.inner.call(request)),
            response_edits,
        }
    }
}

fn mirror_copies(shared: &Arc<Shared>, route: &RouteMatch, request: &mut Request<ProxyBody>) {
    for (backend, numerator, denominator) in &route.runtime().mirrors {
        let Some(backend) = backend else { continue };
        if fastrand::u32(..*denominator) >= *numerator {
            continue;
        }
        let mut copy = Request::new(request.body_mut().tee(MIRROR_BUFFER_FRAMES));
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        forward::mirror(
            shared,
            backend.clone(),
            route.action().protocol,
            *route.connection(),
            copy,
        );
    }
}

/// The redirect's `Location` and status, by Gateway API's rules: the
/// request's scheme, host and path unless replaced; the port given, else
/// the scheme's well-known one if the scheme changed, else the listener's;
/// a well-known port left out.
fn redirect_response(
    redirect: &Redirect,
    request: &Request<ProxyBody>,
    route: &RouteMatch,
) -> Response<ProxyBody> {
    let connection = route.connection();
    let scheme = redirect.scheme.unwrap_or(if connection.tls {
        Scheme::Https
    } else {
        Scheme::Http
    });
    let request_host = request
        .uri()
        .host()
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(host_without_port)
        })
        .unwrap_or("");
    let host = redirect.host.as_deref().unwrap_or(request_host);
    let port = redirect.port.unwrap_or(if redirect.scheme.is_some() {
        scheme.default_port()
    } else {
        connection.port
    });
    let path = request.uri().path();
    let path = match &redirect.path {
        Some(modifier) => modifier.apply(path, route.matched_prefix_len()),
        None => path.to_owned(),
    };
    let mut location = format!("{}://{host}", scheme.as_str());
    if port != scheme.default_port() {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&path);
    if let Some(query) = request.uri().query() {
        location.push('?');
        location.push_str(query);
    }
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = redirect.status;
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Rewrites the host (`Host` and any URI authority) and the path.
fn rewrite_request(rewrite: &Rewrite, prefix_len: usize, request: &mut Request<ProxyBody>) {
    let mut parts = request.uri().clone().into_parts();
    if let Some(host) = &rewrite.host {
        request.headers_mut().insert(HOST, host.clone());
        if parts.authority.is_some() {
            parts.authority = Authority::try_from(host.as_bytes()).ok();
        }
    }
    if let Some(modifier) = &rewrite.path {
        let path = modifier.apply(request.uri().path(), prefix_len);
        let with_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        if let Ok(path) = PathAndQuery::try_from(with_query) {
            parts.path_and_query = Some(path);
        }
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

pin_project_lite::pin_project! {
    /// The future of [`FiltersService`].
    pub struct FiltersFuture<F> {
        #[pin]
        inner: ShortCircuit<F>,
        response_edits: Option<RouteMatch>,
    }
}

impl<F> Future for FiltersFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&mut result, this.response_edits.take())
            && let Some(edits) = &route.action().response_headers
        {
            edits.apply(response.headers_mut());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("a.example.com:8080"), "a.example.com");
        assert_eq!(host_without_port("a.example.com"), "a.example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}
