//! Why the proxy could not forward a request, and the answer the client gets.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::body::ProxyBody;
use crate::proxy::routes::{ObjectRef, ServiceRef};

/// A request the proxy could not forward. [`ErrorResponseLayer`] turns it
/// into the response named by [`status`](Self::status).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The matched rule has no backend that can take the request: none, all
    /// of weight 0, or a reference that was invalid or not permitted (500,
    /// as Gateway API requires).
    #[error("{route}: rule {rule} has no usable backend")]
    NoBackend {
        /// The route.
        route: ObjectRef,
        /// The rule's index.
        rule: usize,
    },
    /// The chosen Service has no ready endpoint (503).
    #[error("service {0} has no ready endpoints")]
    NoEndpoints(ServiceRef),
    /// Connecting to an endpoint failed (502).
    #[error("connecting to {addr} failed")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to an endpoint took longer than the connect timeout (504).
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The endpoint failed the request: the HTTP handshake, or the
    /// exchange (reset, closed, malformed) (502).
    #[error("upstream {addr} failed the request")]
    Upstream {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The route's request or backend timeout passed before a response (504).
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The request cannot be forwarded as it is, e.g. HTTP/2 to a backend
    /// without any host to put in `:authority` (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoBackend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::Timeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The body the client gets (no detail of the backend leaks out).
    fn body(&self) -> &'static str {
        match self {
            ProxyError::NoBackend { .. } => "no backend\n",
            ProxyError::NoEndpoints(_) => "no healthy upstream\n",
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => "upstream error\n",
            ProxyError::ConnectTimeout { .. } | ProxyError::Timeout(_) => "upstream timeout\n",
            ProxyError::BadRequest(_) => "bad request\n",
        }
    }

    /// The response for this error.
    pub fn to_response(&self) -> Response<ProxyBody> {
        local_answer(self.status(), self.body())
    }
}

/// Marks a response the proxy made itself (not the backend's), so that a
/// gRPC client gets it in gRPC's terms.
#[derive(Clone, Copy, Debug)]
struct LocalAnswer;

/// A response the proxy makes itself: `status` with a short text.
pub(crate) fn local_answer(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::from(text));
    *response.status_mut() = status;
    response.extensions_mut().insert(LocalAnswer);
    response
}

/// gRPC's status code for an HTTP status, by gRPC's own mapping
/// (`doc/http-grpc-status-mapping.md`).
fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "13",                   // INTERNAL
        401 => "16",                   // UNAUTHENTICATED
        403 => "7",                    // PERMISSION_DENIED
        404 => "12",                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => "14", // UNAVAILABLE
        _ => "2",                      // UNKNOWN
    }
}

/// Turns a local answer to a gRPC request into a trailers-only gRPC
/// response (HTTP 200 with `grpc-status`), which gRPC clients read as the
/// call's status rather than as a broken response.
fn as_grpc(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut parts, _) = response.into_parts();
    let status = parts.status;
    parts.status = StatusCode::OK;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    parts.headers.insert(
        "grpc-status",
        http::HeaderValue::from_static(grpc_status(status)),
    );
    if let Some(reason) = status.canonical_reason()
        && let Ok(message) = http::HeaderValue::from_str(&format!("proxy: {reason}"))
    {
        parts.headers.insert("grpc-message", message);
    }
    Response::from_parts(parts, ProxyBody::empty())
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The outermost layer: turns [`ProxyError`]s into responses (logging
/// them: this is where they are handled), answers gRPC requests the proxy
/// itself refused (no route, rate limit, errors) in gRPC's terms, and takes
/// requests with any body that converts into a [`ProxyBody`] (hyper's
/// `Incoming`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponseLayer;

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponseService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponseService { inner }
    }
}

/// The service of [`ErrorResponseLayer`].
#[derive(Clone, Debug)]
pub struct ErrorResponseService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ErrorResponseService<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>,
    B: Into<ProxyBody>,
{
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                // The inner services are always ready; an error here would
                // surface again on call.
                tracing::warn!(%error, "proxy service not ready");
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = is_grpc(&request);
        ErrorResponseFuture {
            inner: self.inner.call(request.map(Into::into)),
            grpc,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ErrorResponseService`].
    pub struct ErrorResponseFuture<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

impl<F> std::future::Future for ErrorResponseFuture<F>
where
    F: std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = Result<Response<ProxyBody>, std::convert::Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let grpc = *this.grpc;
        let response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                if status.is_server_error() {
                    tracing::warn!(error = %ErrorChain(&error), %status, "request failed");
                } else {
                    tracing::debug!(error = %ErrorChain(&error), %status, "request refused");
                }
                error.to_response()
            }
        };
        if grpc && response.extensions().get::<LocalAnswer>().is_some() {
            return Poll::Ready(Ok(as_grpc(response)));
        }
        Poll::Ready(Ok(response))
    }
}

/// Displays an error with its causes: `a: b: c`.
pub(crate) struct ErrorChain<'e>(pub &'e (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
