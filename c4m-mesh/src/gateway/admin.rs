//! The admin endpoint: `/metrics` (Prometheus text) and `/ready`, for
//! callers with the bearer token or a client certificate of the admin CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::GatewayError;
use super::tls::CertificateError;
use crate::proxy::ProxyBody;

/// Where the admin endpoint listens and whom it serves. At least one of
/// `bearer_token` and `tls.client_ca_pem` must be set: the endpoint never
/// serves anonymous callers.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// The address (port 0 picks one).
    pub addr: SocketAddr,
    /// Callers presenting `Authorization: Bearer <token>` are served.
    pub bearer_token: Option<String>,
    /// Serve over TLS; with a client CA, callers presenting a certificate
    /// it issued are served.
    pub tls: Option<AdminTls>,
}

/// The admin endpoint's TLS.
#[derive(Clone, Debug)]
pub struct AdminTls {
    /// The server's PEM certificate chain.
    pub chain_pem: Vec<u8>,
    /// The server's PEM private key.
    pub key_pem: Vec<u8>,
    /// PEM certificates of the CA whose client certificates are accepted.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// What the admin endpoint shows.
pub(crate) trait AdminView: Send + Sync + 'static {
    /// Appends the metrics in Prometheus' text format.
    fn render_metrics(&self, out: &mut String);
    /// Whether the gateway serves traffic.
    fn ready(&self) -> bool;
}

/// Refuses options that would serve anonymous callers.
pub(crate) fn validate(options: &AdminOptions) -> Result<(), GatewayError> {
    let client_ca = options.tls.as_ref().and_then(|t| t.client_ca_pem.as_ref());
    if options.bearer_token.as_deref().is_none_or(str::is_empty) && client_ca.is_none() {
        return Err(GatewayError::AdminUnauthenticated);
    }
    Ok(())
}

/// Binds the admin endpoint and serves it until `shutdown`.
pub(crate) fn start(
    options: &AdminOptions,
    view: Arc<dyn AdminView>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, GatewayError> {
    validate(options)?;
    let acceptor = options
        .tls
        .as_ref()
        .map(|tls| admin_tls(tls, provider))
        .transpose()?;
    let listener =
        std::net::TcpListener::bind(options.addr).map_err(|source| GatewayError::Bind {
            port: options.addr.port(),
            addr: options.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
        port: options.addr.port(),
        addr: options.addr,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| GatewayError::Bind {
            port: options.addr.port(),
            addr,
            source,
        })?;
    let listener = TcpListener::from_std(listener).map_err(|source| GatewayError::Bind {
        port: options.addr.port(),
        addr,
        source,
    })?;
    let token: Option<Arc<str>> = options
        .bearer_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Arc::from);
    let conn_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "admin endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            let (view, token, acceptor, shutdown) = (
                view.clone(),
                token.clone(),
                acceptor.clone(),
                shutdown.clone(),
            );
            conn_tasks.spawn(async move {
                let serve = async {
                    match acceptor {
                        Some(acceptor) => {
                            let stream = tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(stream),
                            )
                            .await
                            .ok()?
                            .ok()?;
                            let has_client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            serve_admin(TokioIo::new(stream), view, token, has_client_cert).await
                        }
                        None => serve_admin(TokioIo::new(stream), view, token, false).await,
                    }
                    Some(())
                };
                tokio::select! {
                    _ = serve => {}
                    () = shutdown.cancelled() => {}
                }
                tracing::trace!(%peer, "admin connection closed");
            });
        }
    });
    Ok(addr)
}

fn admin_tls(
    tls: &AdminTls,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<TlsAcceptor, GatewayError> {
    let fail = GatewayError::AdminTls;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(CertificateError::Chain(e)))?;
    let key =
        PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| fail(CertificateError::Key(e)))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(CertificateError::Config(e)))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| fail(CertificateError::Chain(e)))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(CertificateError::Config(e)))?;
            }
            // Callers without a certificate may still bring the bearer token.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| fail(CertificateError::ClientCa(e)))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| fail(CertificateError::Unusable(e)))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_admin<I>(
    io: I,
    view: Arc<dyn AdminView>,
    token: Option<Arc<str>>,
    has_client_cert: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let response = answer(&request, &*view, token.as_deref(), has_client_cert);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .await;
    if let Err(error) = result {
        tracing::debug!(%error, "admin connection failed");
    }
}

fn answer(
    request: &Request<Incoming>,
    view: &dyn AdminView,
    token: Option<&str>,
    has_client_cert: bool,
) -> Response<ProxyBody> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let authorized = has_client_cert
        || matches!((token, bearer), (Some(expected), Some(given)) if same(expected.as_bytes(), given.as_bytes()));
    if !authorized {
        let mut response = Response::new(ProxyBody::from("unauthorized\n"));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"c4m-gateway\""),
        );
        return response;
    }
    match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => {
            let mut text = String::with_capacity(4096);
            view.render_metrics(&mut text);
            let mut response = Response::new(ProxyBody::full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&http::Method::GET, "/ready") => {
            let ready = view.ready();
            let mut response = Response::new(ProxyBody::from(if ready {
                "ready\n"
            } else {
                "not ready\n"
            }));
            if !ready {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
        _ => {
            let mut response = Response::new(ProxyBody::from("not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"token", b"token"));
        assert!(!same(b"token", b"tokem"));
        assert!(!same(b"token", b"token2"));
        assert!(!same(b"", b"x"));
    }
}
