//! Accepting connections on a port and serving them with the proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::{ConnectionInfo, Proxy, ProxyService};

/// Counters of the gateway's connections.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
}

/// What every connection of the gateway shares.
#[derive(Debug)]
pub(crate) struct Serving {
    pub(crate) proxy: Proxy,
    /// HTTP/1.1 or HTTP/2, told apart by the preface (plain connections).
    auto: auto::Builder<TokioExecutor>,
    /// For TLS connections that negotiated `h2`.
    h2: auto::Builder<TokioExecutor>,
    /// For TLS connections that did not.
    h1: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    pub(crate) connections: TaskTracker,
    /// Cancelled when the gateway shuts down: stop accepting, drain.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the drain time is over: drop what is left.
    pub(crate) force: CancellationToken,
    pub(crate) stats: ConnectionStats,
}

impl Serving {
    pub(crate) fn new(
        proxy: Proxy,
        handshake_timeout: Duration,
        header_read_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20));
        Serving {
            proxy,
            h2: auto.clone().http2_only(),
            h1: auto.clone().http1_only(),
            auto,
            handshake_timeout,
            connections: TaskTracker::new(),
            shutdown,
            force: CancellationToken::new(),
            stats: ConnectionStats::default(),
        }
    }
}

/// How a port serves its connections, as of its last reload.
#[derive(Debug)]
pub(crate) enum PortMode {
    /// Plain HTTP.
    Plain,
    /// HTTPS with this configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// HTTPS whose TLS configuration failed: connections are closed (never
    /// served in plain text).
    TlsUnavailable,
}

/// Accepts connections on `listener` until `stop` or the gateway's
/// shutdown; each is served in its own task, TLS or not as the port's
/// configuration says at the moment it is accepted.
pub(crate) fn spawn_accept(
    serving: Arc<Serving>,
    port: u16,
    listener: TcpListener,
    mode: Arc<ArcSwap<PortMode>>,
    stop: CancellationToken,
) {
    let tasks = serving.connections.clone();
    tasks.spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, don't spin.
                        tracing::warn!(port, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
                () = serving.shutdown.cancelled() => return,
            };
            serving.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let config = match &**mode.load() {
                PortMode::Plain => None,
                PortMode::Tls(config) => Some(config.clone()),
                PortMode::TlsUnavailable => {
                    serving.stats.closed.fetch_add(1, Ordering::Relaxed);
                    serving.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let conn_serving = serving.clone();
            serving.connections.spawn(async move {
                serve_connection(&conn_serving, stream, remote, port, config).await;
                conn_serving.stats.closed.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
}

async fn serve_connection(
    serving: &Serving,
    stream: TcpStream,
    remote: SocketAddr,
    port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(remote);
    let connection = ConnectionInfo {
        remote,
        local,
        port,
        tls: tls.is_some(),
    };
    let service = TowerToHyperService::new(serving.proxy.service(connection));
    let Some(config) = tls else {
        return drive(serving, &serving.auto, TokioIo::new(stream), service).await;
    };
    let handshake = tokio::time::timeout(
        serving.handshake_timeout,
        TlsAcceptor::from(config).accept(stream),
    );
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                serving.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, port, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                serving.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, port, "TLS handshake timed out");
                return;
            }
        },
        () = serving.shutdown.cancelled() => return,
    };
    let builder = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        &serving.h2
    } else {
        &serving.h1
    };
    drive(serving, builder, TokioIo::new(stream), service).await;
}

/// Serves one connection to its end; on shutdown, lets it finish what is
/// in flight (HTTP/1.1: the current exchange, then close; HTTP/2: GOAWAY),
/// until the drain time is over.
async fn drive<I>(
    serving: &Serving,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: TowerToHyperService<ProxyService>,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = serving.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = serving.force.cancelled() => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}
