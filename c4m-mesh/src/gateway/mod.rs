//! The edge gateway: the proxy behind listeners on the configured ports,
//! with TLS termination by SNI, reloads that keep every connection, a
//! graceful drain on shutdown, and an authenticated admin endpoint.
//!
//! The control plane translates Gateway API and Ingress objects into a
//! [`RouteConfig`] ([`translate`](crate::proxy::routes::translate)), starts
//! a [`Gateway`] with it and an [`EndpointSource`], and calls
//! [`Gateway::reload`] with each new translation.
//!
//! **Reload model.** A reload binds the ports it newly needs first (a port
//! that cannot be bound fails the reload and changes nothing), loads the
//! certificates, then swaps the routes and each port's TLS configuration
//! atomically (`arc-swap`). Connections are never touched: each request is
//! routed by the routes current when it arrives, each handshake uses the
//! certificates current when it starts. A port no longer configured stops
//! accepting; its open connections live on (their requests get 404 once no
//! routes remain for the port) until they close.

mod admin;
mod listener;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{AdminOptions, AdminTls};
pub use tls::{CertificateError, RejectedCertificate, certified_key};

use crate::proxy::routes::RouteConfig;
use crate::proxy::{EndpointSource, Proxy, ProxyOptions};
use listener::{PortMode, Serving};

/// How the gateway listens and drains.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The address listeners bind on (all IPv4 addresses by default).
    pub bind_ip: IpAddr,
    /// Other addresses for some listener ports (port 0 picks a free port;
    /// see [`Gateway::local_addr`]): for tests, or a port remapped.
    pub bind_overrides: HashMap<u16, SocketAddr>,
    /// How long in-flight requests and upgraded connections may take to
    /// finish after shutdown begins.
    pub drain_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long a client may take to send an HTTP/1.1 request's headers.
    pub header_read_timeout: Duration,
    /// The proxy's options.
    pub proxy: ProxyOptions,
    /// The admin endpoint, if any.
    pub admin: Option<AdminOptions>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            bind_overrides: HashMap::new(),
            drain_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            proxy: ProxyOptions::default(),
            admin: None,
        }
    }
}

/// Why the gateway could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener port could not be bound.
    #[error("binding {addr} for port {port} failed")]
    Bind {
        /// The configured port.
        port: u16,
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint was given neither a bearer token nor a client CA.
    #[error(
        "the admin endpoint needs a bearer token or a client CA: it never serves anonymous callers"
    )]
    AdminUnauthenticated,
    /// The admin endpoint's TLS settings are unusable.
    #[error("admin endpoint TLS")]
    AdminTls(#[source] CertificateError),
}

/// What a (re)load did besides swapping the routes.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Ports newly listened on.
    pub opened: Vec<u16>,
    /// Ports no longer accepting.
    pub closed: Vec<u16>,
    /// Certificates left out, and why; the others are served.
    pub rejected_certificates: Vec<RejectedCertificate>,
}

/// One listening port.
#[derive(Debug)]
struct Port {
    addr: SocketAddr,
    mode: Arc<ArcSwap<PortMode>>,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct GatewayStats {
    reloads: AtomicU64,
    rejected_certificates: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    serving: Arc<Serving>,
    options: GatewayOptions,
    provider: Arc<CryptoProvider>,
    ports: Mutex<BTreeMap<u16, Port>>,
    admin_addr: Option<SocketAddr>,
    stats: Arc<GatewayStats>,
    /// Cancelled once everything has stopped.
    stopped: CancellationToken,
}

/// A running edge gateway. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// Binds the listeners of `config` (and the admin endpoint) and serves
    /// them until `shutdown` is cancelled; then stops accepting, drains
    /// connections for up to [`GatewayOptions::drain_timeout`], and stops.
    /// Must run inside a tokio runtime.
    pub fn start(
        config: RouteConfig,
        endpoints: Arc<dyn EndpointSource>,
        options: GatewayOptions,
        shutdown: CancellationToken,
    ) -> Result<(Gateway, ReloadReport), GatewayError> {
        if let Some(admin) = &options.admin {
            admin::validate(admin)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Upstream connections outlive the downstream drain, so in-flight
        // requests can finish; they get their own token.
        let proxy_shutdown = CancellationToken::new();
        let proxy = Proxy::new(endpoints, options.proxy.clone(), proxy_shutdown.clone());
        let serving = Arc::new(Serving::new(
            proxy,
            options.tls_handshake_timeout,
            options.header_read_timeout,
            shutdown.clone(),
        ));
        let mut inner = Inner {
            serving,
            options,
            provider,
            ports: Mutex::new(BTreeMap::new()),
            admin_addr: None,
            stats: Arc::default(),
            stopped: CancellationToken::new(),
        };
        let report = inner.reload(config)?;
        if let Some(admin) = inner.options.admin.clone() {
            let view: Arc<dyn admin::AdminView> = Arc::new(AdminMetrics {
                serving: inner.serving.clone(),
                stats: inner.stats.clone(),
            });
            let addr = admin::start(
                &admin,
                view,
                inner.provider.clone(),
                &inner.serving.connections,
                shutdown.clone(),
            );
            match addr {
                Ok(addr) => inner.admin_addr = Some(addr),
                Err(error) => {
                    // Stop the listeners already accepting.
                    for port in inner
                        .ports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                    {
                        port.stop.cancel();
                    }
                    return Err(error);
                }
            }
        }
        let inner = Arc::new(inner);
        tokio::spawn(supervise(inner.clone(), shutdown, proxy_shutdown));
        Ok((Gateway { inner }, report))
    }

    /// Swaps in a new configuration without dropping any connection (see
    /// the [module documentation](self)). On error nothing changed.
    pub fn reload(&self, config: RouteConfig) -> Result<ReloadReport, GatewayError> {
        self.inner.reload(config)
    }

    /// The address the listener of configured `port` is bound to.
    pub fn local_addr(&self, port: u16) -> Option<SocketAddr> {
        self.inner
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&port)
            .map(|p| p.addr)
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// The proxy serving the listeners.
    pub fn proxy(&self) -> &Proxy {
        &self.inner.serving.proxy
    }

    /// The gateway's and the proxy's metrics, in Prometheus' text format.
    pub fn render_metrics(&self, out: &mut String) {
        AdminMetrics {
            serving: self.inner.serving.clone(),
            stats: self.inner.stats.clone(),
        }
        .render(out);
    }

    /// Waits until the gateway has stopped after shutdown: connections
    /// drained (or cut at the drain timeout) and background tasks ended.
    pub async fn stopped(&self) {
        self.inner.stopped.cancelled().await;
    }
}

impl Inner {
    fn reload(&self, config: RouteConfig) -> Result<ReloadReport, GatewayError> {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ReloadReport::default();
        // Bind what is new first: if that fails, nothing has changed.
        let mut bound = Vec::new();
        for listener in &config.listeners {
            if ports.contains_key(&listener.port) {
                continue;
            }
            let addr = self
                .options
                .bind_overrides
                .get(&listener.port)
                .copied()
                .unwrap_or(SocketAddr::new(self.options.bind_ip, listener.port));
            bound.push((listener.port, bind(listener.port, addr)?));
        }
        let mut tls_configs = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let tls = listener.tls.as_ref().map(|certs| {
                let (resolver, rejected) =
                    tls::SniResolver::load(listener.port, certs, &self.provider);
                report.rejected_certificates.extend(rejected);
                if resolver.is_empty() {
                    tracing::warn!(
                        port = listener.port,
                        "HTTPS port has no usable certificate: its handshakes fail"
                    );
                }
                tls::server_config(resolver, self.provider.clone())
            });
            let mode = match tls {
                None => PortMode::Plain,
                Some(Ok(config)) => PortMode::Tls(config),
                Some(Err(error)) => {
                    // No TLS configuration: handshakes on the port fail until one loads.
                    let secret = listener
                        .tls
                        .iter()
                        .flatten()
                        .next()
                        .map(|c| c.secret.clone());
                    let secret = secret
                        .unwrap_or_else(|| crate::proxy::routes::ObjectRef::new("Secret", "", ""));
                    report.rejected_certificates.push(RejectedCertificate {
                        secret,
                        hostname: "*".into(),
                        port: listener.port,
                        error,
                    });
                    PortMode::TlsUnavailable
                }
            };
            tls_configs.push((listener.port, Arc::new(mode)));
        }
        self.serving.proxy.load(config);
        for (port, mode) in tls_configs {
            match ports.get(&port) {
                Some(existing) => existing.mode.store(mode),
                None => {
                    let (_, (listener, addr)) = bound
                        .iter()
                        .position(|(p, _)| *p == port)
                        .map(|i| bound.swap_remove(i))
                        .expect("new ports were bound above");
                    let port_state = Port {
                        addr,
                        mode: Arc::new(ArcSwap::new(mode)),
                        stop: CancellationToken::new(),
                    };
                    listener::spawn_accept(
                        self.serving.clone(),
                        port,
                        listener,
                        port_state.mode.clone(),
                        port_state.stop.clone(),
                    );
                    ports.insert(port, port_state);
                    report.opened.push(port);
                }
            }
        }
        let wanted: Vec<u16> = self
            .serving
            .proxy
            .routes()
            .load()
            .config()
            .listeners
            .iter()
            .map(|l| l.port)
            .collect();
        ports.retain(|port, state| {
            let keep = wanted.contains(port);
            if !keep {
                state.stop.cancel();
                report.closed.push(*port);
            }
            keep
        });
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .rejected_certificates
            .store(report.rejected_certificates.len() as u64, Ordering::Relaxed);
        for rejected in &report.rejected_certificates {
            tracing::warn!(error = %crate::proxy::ErrorChain(rejected), "certificate left out");
        }
        Ok(report)
    }
}

fn bind(port: u16, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let fail = |source| GatewayError::Bind { port, addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((TcpListener::from_std(listener).map_err(fail)?, local))
}

/// Waits for shutdown, then drains: connections get the drain time to
/// finish, then whatever is left is cut, then the proxy's own tasks end.
async fn supervise(
    inner: Arc<Inner>,
    shutdown: CancellationToken,
    proxy_shutdown: CancellationToken,
) {
    shutdown.cancelled().await;
    let serving = &inner.serving;
    serving.connections.close();
    let deadline = tokio::time::Instant::now() + inner.options.drain_timeout;
    if tokio::time::timeout_at(deadline, serving.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = serving.connections.len(),
            "drain time over: closing the remaining connections"
        );
        serving.force.cancel();
        serving.connections.wait().await;
    }
    // Upgraded connections and mirrors get what is left of the drain time.
    let _ = tokio::time::timeout_at(deadline, serving.proxy.drained()).await;
    proxy_shutdown.cancel();
    serving.proxy.closed().await;
    inner.stopped.cancel();
}

struct AdminMetrics {
    serving: Arc<Serving>,
    stats: Arc<GatewayStats>,
}

impl admin::AdminView for AdminMetrics {
    fn render_metrics(&self, out: &mut String) {
        self.render(out);
    }

    fn ready(&self) -> bool {
        !self.serving.shutdown.is_cancelled()
    }
}

impl AdminMetrics {
    fn render(&self, out: &mut String) {
        let stats = &self.stats;
        use std::fmt::Write as _;
        self.serving.proxy.metrics().render(out);
        let s = &self.serving.stats;
        let accepted = s.accepted.load(Ordering::Relaxed);
        let closed = s.closed.load(Ordering::Relaxed);
        let lines = [
            (
                "c4m_gateway_connections_total",
                "counter",
                "Connections accepted.",
                accepted,
            ),
            (
                "c4m_gateway_connections_open",
                "gauge",
                "Connections open.",
                accepted.saturating_sub(closed),
            ),
            (
                "c4m_gateway_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed or timed out.",
                s.tls_failures.load(Ordering::Relaxed),
            ),
            (
                "c4m_gateway_reloads_total",
                "counter",
                "Configurations loaded.",
                stats.reloads.load(Ordering::Relaxed),
            ),
            (
                "c4m_gateway_rejected_certificates",
                "gauge",
                "Certificates left out by the last reload.",
                stats.rejected_certificates.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}
