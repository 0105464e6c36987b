//! The innermost service: picks a backend and an endpoint, adapts the
//! request to the upstream's HTTP version, sends it, and passes upgrades
//! (WebSocket and others) through as a byte tunnel.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tower::Service;

use super::Shared;
use super::backend::Backend;
use super::body::ProxyBody;
use super::endpoints::AppProtocol;
use super::error::{ErrorChain, ProxyError};
use super::router::{ConnectionInfo, RouteMatch};
use crate::proxy::routes::RouteProtocol;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Sends each request to an endpoint of the matched rule's backends: the
/// weighted split picks the backend, power of two choices over peak EWMA
/// the endpoint. Honours the rule's backend request timeout.
#[derive(Clone, Debug)]
pub struct Forward {
    shared: Arc<Shared>,
}

impl Forward {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Forward { shared }
    }
}

impl Service<Request<ProxyBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    // The one allocation per request the stack makes itself: the async
    // forwarding (connection checkout, connect, send) in one boxed future.
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let route = request
                .extensions_mut()
                .remove::<RouteMatch>()
                .ok_or(ProxyError::BadRequest("request was not routed"))?;
            forward(&shared, &route, request).await
        })
    }
}

async fn forward(
    shared: &Shared,
    route: &RouteMatch,
    mut request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let action = route.action();
    let runtime = route.runtime();
    let mut rng = fastrand::Rng::new();
    let no_backend = || ProxyError::NoBackend {
        route: action.route.clone(),
        rule: action.rule,
    };
    let index = runtime.split.pick(&mut rng).ok_or_else(no_backend)?;
    let backend = runtime.backends[index].as_ref().ok_or_else(no_backend)?;
    let (endpoint, protocol) = backend.pick(&mut rng)?;
    let upgrade = is_upgrade(&request);
    let version = upstream_version(&request, action.protocol, protocol, upgrade);
    let downstream = upgrade.then(|| hyper::upgrade::on(&mut request));
    prepare(&mut request, version, route.connection(), upgrade)?;

    let started = shared.clock.now();
    let in_flight = endpoint.load.start();
    let result = match action.timeouts.backend_request {
        Some(limit) => tokio::time::timeout(limit, endpoint.send(request))
            .await
            .unwrap_or(Err(ProxyError::Timeout(limit))),
        None => endpoint.send(request).await,
    };
    drop(in_flight);
    let now = shared.clock.now();
    endpoint.load.observe(now.saturating_sub(started), now);

    let mut response = result?;
    match downstream {
        Some(downstream) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let upstream = hyper::upgrade::on(&mut response);
            tunnel(shared, downstream, upstream);
        }
        _ => strip_hop_by_hop(response.headers_mut(), false),
    }
    Ok(response)
}

/// Sends a copy of a request to a mirror backend in the background; its
/// response is read and dropped, its failure only logged.
pub(crate) fn mirror(
    shared: &Arc<Shared>,
    backend: Arc<Backend>,
    protocol: RouteProtocol,
    connection: ConnectionInfo,
    mut request: Request<ProxyBody>,
) {
    let shutdown = shared.upstream.shutdown.clone();
    shared.upstream.work.spawn(async move {
        let send = async {
            let (endpoint, app) = backend.pick(&mut fastrand::Rng::new())?;
            let version = upstream_version(&request, protocol, app, false);
            prepare(&mut request, version, &connection, false)?;
            let response = endpoint.send(request).await?;
            // Read to the end, so an HTTP/1.1 connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, ProxyError>(())
        };
        tokio::select! {
            result = send => {
                if let Err(error) = result {
                    tracing::debug!(service = %backend.service, error = %ErrorChain(&error), "mirrored request failed");
                }
            }
            () = shutdown.cancelled() => {}
        }
    });
}

/// Joins the client's and the upstream's upgraded connections once both
/// sides have switched protocols, and copies bytes both ways until either
/// closes or the proxy shuts down.
fn tunnel(shared: &Shared, downstream: OnUpgrade, upstream: OnUpgrade) {
    let shutdown = shared.upstream.shutdown.clone();
    shared.upstream.work.spawn(async move {
        let run = async {
            let (client, server) = tokio::try_join!(downstream, upstream)?;
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            tokio::io::copy_bidirectional(&mut client, &mut server).await.map_err(TunnelError::Io)?;
            Ok::<_, TunnelError>(())
        };
        tokio::select! {
            result = run => {
                if let Err(error) = result {
                    tracing::debug!(error = %ErrorChain(&error), "upgraded connection ended with an error");
                }
            }
            () = shutdown.cancelled() => {}
        }
    });
}

/// Why an upgraded connection ended badly.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("protocol switch failed")]
    Upgrade(#[from] hyper::Error),
    #[error("tunnel i/o failed")]
    Io(#[source] std::io::Error),
}

/// Whether the request asks to switch protocols (HTTP/1.1 `Upgrade`).
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(UPGRADE)
        && request.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// The HTTP version to the upstream: HTTP/1.1 for upgrades; HTTP/2 for
/// GRPCRoutes, gRPC requests and `h2c` backends; HTTP/1.1 otherwise.
fn upstream_version<B>(
    request: &Request<B>,
    route: RouteProtocol,
    app: AppProtocol,
    upgrade: bool,
) -> Version {
    let grpc = || {
        request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    };
    if upgrade {
        Version::HTTP_11
    } else if route == RouteProtocol::Grpc || app == AppProtocol::H2c || grpc() {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

/// Adapts a request for the upstream: hop-by-hop headers out,
/// `X-Forwarded-For`/`-Proto` in, and the target in the form the version
/// needs (HTTP/1.1: origin form with `Host`; HTTP/2: absolute URI whose
/// authority becomes `:authority`).
fn prepare(
    request: &mut Request<ProxyBody>,
    version: Version,
    connection: &ConnectionInfo,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    append_forwarded_for(headers, connection.remote.ip());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if connection.tls { "https" } else { "http" }),
    );

    let uri_authority = request.uri().authority().cloned();
    match version {
        Version::HTTP_2 => {
            let authority = match uri_authority {
                Some(authority) => authority,
                None => request
                    .headers()
                    .get(HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .ok_or(ProxyError::BadRequest("no host for :authority"))?,
            };
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path)
                .build();
            *request.uri_mut() =
                uri.map_err(|_| ProxyError::BadRequest("unusable request target"))?;
            request.headers_mut().remove(HOST);
        }
        _ => {
            if let Some(authority) = uri_authority {
                if !request.headers().contains_key(HOST) {
                    let host = HeaderValue::from_str(authority.as_str())
                        .map_err(|_| ProxyError::BadRequest("unusable authority"))?;
                    request.headers_mut().insert(HOST, host);
                }
                let path = request
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *request.uri_mut() = Uri::from(path);
            }
        }
    }
    *request.version_mut() = version;
    Ok(())
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1),
/// keeping `Connection: upgrade` and `Upgrade` for a protocol switch and
/// `TE: trailers` (which gRPC needs).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers the Connection header names are hop-by-hop too; the usual
    // tokens are handled below, so this allocates only for unusual ones.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',').map(str::trim) {
            let usual = ["keep-alive", "close", "upgrade", "te"]
                .iter()
                .any(|u| token.eq_ignore_ascii_case(u));
            if !usual && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    use std::io::Write as _;
    // The client's address, written on the stack: one allocation (the
    // header value) rather than two.
    let mut ip = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut ip[..]);
    let _ = write!(cursor, "{client}");
    let len = cursor.position() as usize;
    let ip = &ip[..len];
    let value = match headers.get(&X_FORWARDED_FOR) {
        Some(existing) => HeaderValue::from_bytes(&[existing.as_bytes(), b", ", ip].concat()),
        None => HeaderValue::from_bytes(ip),
    };
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionInfo {
        ConnectionInfo {
            remote: "10.1.2.3:5555".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            port: 80,
            tls: true,
        }
    }

    #[test]
    fn http2_requests_become_origin_form_with_host_for_http1() {
        let mut request = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://shop.example.com/a?b=1")
            .header("te", "trailers")
            .body(ProxyBody::empty())
            .unwrap();
        prepare(&mut request, Version::HTTP_11, &conn(), false).unwrap();
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.headers()[HOST], "shop.example.com");
        assert_eq!(request.headers()["x-forwarded-proto"], "https");
        assert_eq!(request.headers()["x-forwarded-for"], "10.1.2.3");
        assert_eq!(request.version(), Version::HTTP_11);
    }

    #[test]
    fn http1_requests_get_an_authority_for_http2() {
        let mut request = Request::builder()
            .uri("/svc/Method")
            .header(HOST, "grpc.example.com:8080")
            .header("x-forwarded-for", "192.0.2.1")
            .header("te", "trailers")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .body(ProxyBody::empty())
            .unwrap();
        prepare(&mut request, Version::HTTP_2, &conn(), false).unwrap();
        assert_eq!(request.uri(), "http://grpc.example.com:8080/svc/Method");
        assert!(!request.headers().contains_key(HOST));
        assert_eq!(request.headers()[TE], "trailers");
        assert_eq!(request.headers()["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        for gone in ["connection", "x-private", "keep-alive"] {
            assert!(!request.headers().contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn upgrades_keep_their_headers_and_go_http1() {
        let request = Request::builder()
            .uri("/ws")
            .header(HOST, "h")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(ProxyBody::empty())
            .unwrap();
        assert!(is_upgrade(&request));
        assert_eq!(
            upstream_version(&request, RouteProtocol::Http, AppProtocol::H2c, true),
            Version::HTTP_11
        );
        let mut request = request;
        prepare(&mut request, Version::HTTP_11, &conn(), true).unwrap();
        assert_eq!(request.headers()["connection"], "upgrade");
        assert_eq!(request.headers()["upgrade"], "websocket");
    }

    #[test]
    fn grpc_goes_http2_whatever_the_backend_says() {
        let grpc = Request::builder()
            .header(CONTENT_TYPE, "application/grpc+proto")
            .body(())
            .unwrap();
        assert_eq!(
            upstream_version(&grpc, RouteProtocol::Http, AppProtocol::Http1, false),
            Version::HTTP_2
        );
        let plain = Request::builder().body(()).unwrap();
        assert_eq!(
            upstream_version(&plain, RouteProtocol::Http, AppProtocol::Http1, false),
            Version::HTTP_11
        );
        assert_eq!(
            upstream_version(&plain, RouteProtocol::Grpc, AppProtocol::Http1, false),
            Version::HTTP_2
        );
    }
}
