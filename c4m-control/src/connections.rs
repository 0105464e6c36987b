//! The API's connections, served by hyper: at most
//! [`ConnectionLimits::max_connections`] open at once, and each given
//! [`ConnectionLimits::header_timeout`] to send a request's headers (and
//! to start one on an idle connection), as kube-apiserver gives 32 s. A
//! client that opens connections and never finishes a request line (a
//! half-open flood) so holds at most that many descriptors, each for at
//! most that long, and the API goes on answering the others.
//!
//! A connection over the cap is closed as soon as it is accepted: it costs
//! a descriptor for an instant, where leaving it in the kernel's backlog
//! would stall every connection queued behind it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::tls::{self, ApiStream};

/// How long a client has at most to send its first byte and finish a TLS
/// handshake (less when the header timeout is shorter).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the API holds open, and how long each may take
/// over a request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; more are closed as they come.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, from when the
    /// connection (or its previous request) allows one.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 8192,
            // kube-apiserver's ReadHeaderTimeout.
            header_timeout: Duration::from_secs(32),
        }
    }
}

/// One API connection, holding its place under the cap while it is open.
struct ApiConnection {
    stream: ApiStream,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for ApiConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Connections closed for being over the cap, told in the log at most once
/// a second.
struct Refusals {
    since_told: u64,
    told_at: Option<Instant>,
}

impl Refusals {
    fn refused(&mut self, peer: SocketAddr, limits: &ConnectionLimits) {
        self.since_told += 1;
        if self
            .told_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            %peer,
            closed = self.since_told,
            max_connections = limits.max_connections,
            "the API has as many connections open as it takes; closing new ones"
        );
        self.since_told = 0;
        self.told_at = Some(Instant::now());
    }
}

/// Serves `router` on `listener` (HTTPS too with `acceptor`) until
/// `shutdown`, then lets open connections finish their requests (the
/// caller bounds how long).
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut refusals = Refusals {
        since_told: 0,
        told_at: None,
    };
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            drop(stream);
            refusals.refused(peer, &limits);
            continue;
        };
        // Watch events are small writes in a row: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let (acceptor, builder, shutdown) = (acceptor.clone(), builder.clone(), shutdown.clone());
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let handshake = limits.header_timeout.min(HANDSHAKE_TIMEOUT);
            let stream =
                match tokio::time::timeout(handshake, tls::classify(stream, acceptor)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "API connection dropped");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "API connection timed out in handshake");
                        return;
                    }
                };
            let connection = ApiConnection {
                stream,
                _place: place,
            };
            let served = builder.serve_connection_with_upgrades(TokioIo::new(connection), service);
            tokio::pin!(served);
            let result = tokio::select! {
                result = served.as_mut() => result,
                () = shutdown.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "API connection ended");
            }
        });
    }
    // Every place back: every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = places.acquire_many(all).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use axum::routing::get;

    use super::*;

    /// An API with `limits` on loopback, answering `/healthz`.
    async fn api(limits: ConnectionLimits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        tokio::spawn(serve(listener, None, router, limits, shutdown.clone()));
        (addr, shutdown)
    }

    /// A blocking client (on a thread of its own): the response to `GET
    /// /healthz`, or an empty string when the connection is closed.
    fn healthz(addr: SocketAddr) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// Reads until the server closes the connection: what it sent, or
    /// the error (a timeout when it never closed).
    fn until_closed(mut stream: std::net::TcpStream) -> std::io::Result<String> {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map(|_| answer)
    }

    /// A connection that never finishes its request line is closed after
    /// the header timeout; while it is open, others are served.
    #[tokio::test]
    async fn a_request_that_never_finishes_its_headers_is_cut_off() {
        let limits = ConnectionLimits {
            max_connections: 16,
            header_timeout: Duration::from_millis(200),
        };
        let (addr, shutdown) = api(limits).await;
        let answered = tokio::task::spawn_blocking(move || {
            let mut stalled = std::net::TcpStream::connect(addr).unwrap();
            stalled.write_all(b"GET /healthz HTT").unwrap();
            let answer = healthz(addr);
            (answer, until_closed(stalled))
        })
        .await
        .unwrap();
        assert!(answered.0.starts_with("HTTP/1.1 200"), "{}", answered.0);
        match answered.1 {
            Ok(sent) => assert!(
                !sent.contains(" 200 "),
                "the stalled request was served: {sent}"
            ),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "the stalled connection was not closed: {e}"
            ),
        }
        shutdown.cancel();
    }

    /// Over the cap a new connection is closed at once; once one closes,
    /// its place serves another.
    #[tokio::test]
    async fn connections_over_the_cap_are_closed() {
        let limits = ConnectionLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(60),
        };
        let (addr, shutdown) = api(limits).await;
        tokio::task::spawn_blocking(move || {
            let held: Vec<_> = (0..2)
                .map(|_| {
                    let mut stream = std::net::TcpStream::connect(addr).unwrap();
                    stream.write_all(b"G").unwrap();
                    stream
                })
                .collect();
            // The held ones are served first: the accept loop takes
            // connections in order.
            assert_eq!(healthz(addr), "", "a third connection was served");
            drop(held);
            // The places come back once the server sees the closes.
            let served = (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                healthz(addr).starts_with("HTTP/1.1 200")
            });
            assert!(
                served,
                "no place came back after the held connections closed"
            );
        })
        .await
        .unwrap();
        shutdown.cancel();
    }
}
