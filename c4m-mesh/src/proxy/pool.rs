//! Upstream endpoints and their connections: HTTP/1.1 connections kept
//! idle for reuse, one multiplexed HTTP/2 connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balance::PeakEwma;
use super::body::ProxyBody;
use super::error::ProxyError;

/// How upstream connections are made and kept.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long an HTTP/1.1 connection stays idle in the pool.
    pub idle_timeout: Duration,
    /// How many idle HTTP/1.1 connections one endpoint keeps.
    pub max_idle_per_endpoint: usize,
    /// The response time a new endpoint is assumed to have.
    pub default_rtt: Duration,
    /// How fast the load estimate forgets old response times.
    pub ewma_decay: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 256,
            default_rtt: Duration::from_millis(30),
            ewma_decay: Duration::from_secs(10),
        }
    }
}

/// What every endpoint's connections share: options, the task trackers,
/// and the token that ends their tasks on shutdown.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    pub(crate) options: UpstreamOptions,
    /// Connection tasks: they live as long as their pool holds them.
    pub(crate) tasks: TaskTracker,
    /// Work for one request: upgraded tunnels and mirrors, which a drain
    /// waits for.
    pub(crate) work: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Upstream {
    /// Runs a connection until it ends or the proxy shuts down.
    fn spawn_connection<F>(&self, connection: F, addr: SocketAddr)
    where
        F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%addr, error = %super::error::ErrorChain(&error), "upstream connection ended");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// One endpoint of a backend: its load and its connections.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) load: PeakEwma,
    upstream: Arc<Upstream>,
    /// Most recently returned last: taken from the back, so a few warm
    /// connections serve and the others age out at the front.
    idle: Mutex<VecDeque<(http1::SendRequest<ProxyBody>, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Held while an HTTP/2 connection is being made, so concurrent
    /// requests wait for one connection rather than each making their own.
    h2_connecting: tokio::sync::Mutex<()>,
}

/// An HTTP/1.1 connection lent to a response, returned to its endpoint's
/// pool when the response body has been read to its end.
#[derive(Debug)]
pub(crate) struct Checkin {
    endpoint: Arc<Endpoint>,
    sender: http1::SendRequest<ProxyBody>,
}

impl Checkin {
    /// Returns the connection to the pool (unless closed or the pool is full).
    pub(crate) fn release(self) {
        let Checkin { endpoint, sender } = self;
        if sender.is_closed() {
            return;
        }
        let mut idle = endpoint.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < endpoint.upstream.options.max_idle_per_endpoint {
            idle.push_back((sender, Instant::now()));
        }
    }
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, upstream: Arc<Upstream>, now: Duration) -> Self {
        let load = PeakEwma::new(
            upstream.options.default_rtt,
            upstream.options.ewma_decay,
            now,
        );
        Endpoint {
            addr,
            load,
            upstream,
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends a request prepared for `version` (HTTP/1.1 in origin form with
    /// `Host`, or HTTP/2 with an absolute URI). A pooled connection that
    /// turns out closed before the request was written is replaced
    /// transparently.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if request.version() == Version::HTTP_2 {
            self.send_h2(request).await
        } else {
            self.send_h1(request).await
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        loop {
            let (mut sender, pooled) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect_h1().await?, false),
            };
            if let Err(source) = sender.ready().await {
                if pooled {
                    continue;
                }
                return Err(ProxyError::Upstream {
                    addr: self.addr,
                    source,
                });
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    // An upgraded connection belongs to the tunnel, not the pool.
                    let checkin = (!upgraded).then(|| Checkin {
                        endpoint: self.clone(),
                        sender,
                    });
                    return Ok(response.map(|body| ProxyBody::upstream(body, checkin)));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if pooled => request = unsent,
                    _ => {
                        return Err(ProxyError::Upstream {
                            addr: self.addr,
                            source: error.into_error(),
                        });
                    }
                },
            }
        }
    }

    async fn send_h2(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut retried = false;
        loop {
            let mut sender = self.h2_sender().await?;
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response.map(|body| ProxyBody::upstream(body, None))),
                Err(mut error) => match error.take_message() {
                    // The connection closed (GOAWAY) before the stream opened: once more on a new one.
                    Some(unsent) if !retried => {
                        retried = true;
                        request = unsent;
                        self.h2.lock().unwrap_or_else(|p| p.into_inner()).take();
                    }
                    _ => {
                        return Err(ProxyError::Upstream {
                            addr: self.addr,
                            source: error.into_error(),
                        });
                    }
                },
            }
        }
    }

    /// An idle connection ready for a request. One whose previous exchange
    /// is still finishing (its request body still being sent) stays in the
    /// pool rather than making this request wait for it.
    fn take_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let idle_timeout = self.upstream.options.idle_timeout;
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest are at the front: drop those past the idle timeout.
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= idle_timeout)
        {
            idle.pop_front();
        }
        // The newest ready one; closed ones met on the way are dropped. A
        // handful at most are looked at: the newest are the likeliest ready.
        let mut looked = 0;
        let mut i = idle.len();
        while i > 0 && looked < 8 {
            i -= 1;
            looked += 1;
            let (sender, _) = &idle[i];
            if sender.is_closed() {
                idle.remove(i);
            } else if sender.is_ready() {
                return idle.remove(i).map(|(sender, _)| sender);
            }
        }
        None
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<ProxyBody>, ProxyError> {
        if let Some(sender) = self.cached_h2() {
            return Ok(sender);
        }
        let _connecting = self.h2_connecting.lock().await;
        if let Some(sender) = self.cached_h2() {
            return Ok(sender);
        }
        let stream = self.connect().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Upstream {
                addr: self.addr,
                source,
            })?;
        self.upstream.spawn_connection(connection, self.addr);
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    fn cached_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let cached = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        cached.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<ProxyBody>, ProxyError> {
        let stream = self.connect().await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Upstream {
                addr: self.addr,
                source,
            })?;
        self.upstream
            .spawn_connection(connection.with_upgrades(), self.addr);
        Ok(sender)
    }

    async fn connect(&self) -> Result<TcpStream, ProxyError> {
        let after = self.upstream.options.connect_timeout;
        let stream = tokio::time::timeout(after, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout {
                addr: self.addr,
                after,
            })?
            .map_err(|source| ProxyError::Connect {
                addr: self.addr,
                source,
            })?;
        // Requests are small writes; don't wait to coalesce them.
        stream
            .set_nodelay(true)
            .map_err(|source| ProxyError::Connect {
                addr: self.addr,
                source,
            })?;
        Ok(stream)
    }

    /// Idle HTTP/1.1 connections held.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioExecutor;
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1.1 server on loopback counting its connections; with
    /// `close`, it closes each connection after one response.
    async fn server(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| async move {
                        let mut response =
                            Response::new(Full::new(bytes::Bytes::from_static(b"ok")));
                        if close {
                            response.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, connections)
    }

    fn request() -> Request<ProxyBody> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, "test")
            .body(ProxyBody::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn http1_connections_are_reused_once_their_response_is_read() {
        let (addr, connections) = server(false).await;
        let endpoint = Arc::new(Endpoint::new(
            addr,
            Arc::new(Upstream::default()),
            Duration::ZERO,
        ));
        for _ in 0..10 {
            let response = endpoint.send(request()).await.unwrap();
            assert_eq!(
                response.into_body().collect().await.unwrap().to_bytes(),
                "ok"
            );
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        assert_eq!(endpoint.idle_count(), 1);

        // A response dropped before its end takes its connection with it.
        let unread = endpoint.send(request()).await.unwrap();
        assert_eq!(endpoint.idle_count(), 0);
        drop(unread);
        endpoint
            .send(request())
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn closed_connections_are_replaced_without_failing_a_request() {
        let (addr, connections) = server(true).await;
        let endpoint = Arc::new(Endpoint::new(
            addr,
            Arc::new(Upstream::default()),
            Duration::ZERO,
        ));
        for _ in 0..5 {
            let response = endpoint.send(request()).await.unwrap();
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(connections.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = Arc::new(Endpoint::new(
            addr,
            Arc::new(Upstream::default()),
            Duration::ZERO,
        ));
        let error = endpoint.send(request()).await.unwrap_err();
        assert!(matches!(error, ProxyError::Connect { .. }), "{error}");
        assert_eq!(error.status(), http::StatusCode::BAD_GATEWAY);
    }
}
