//! HTTPS beside HTTP on the API port. kubectl and client-go never send a
//! bearer token over plain HTTP, so Kubernetes clients need TLS; the `c4m`
//! CLI and agents keep plain HTTP on loopback. Each connection's first byte
//! tells which it speaks (a TLS handshake starts with 0x16, an HTTP
//! request with a letter).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// The API server's certificate chain and key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    /// Certificate chain, leaf first (PEM). Clients trust this (self-signed)
    /// certificate as their certificate authority.
    pub certificate_pem: String,
    /// The certificate's private key (PEM).
    pub private_key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a client has to send its first byte and finish a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the API: plain HTTP or HTTPS.
pub(crate) type ApiStream = Either<TcpStream, TlsStream<TcpStream>>;

/// The API's listener: accepts on one port and hands axum connections that
/// finished their handshake, so a slow or broken client delays nobody.
pub(crate) struct ApiListener {
    connections: mpsc::Receiver<(ApiStream, SocketAddr)>,
    local_addr: SocketAddr,
}

/// The TLS `what` of the API is invalid, as `source` says.
fn invalid(what: &str, source: impl Into<c4m_core::BoxError>) -> Error {
    Error::Io {
        context: format!("the API's TLS {what} is invalid"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
    }
}

fn server_config(identity: &TlsIdentity) -> Result<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.private_key_pem.as_bytes())
        .map_err(|e| invalid("private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("configuration", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid("certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl ApiListener {
    /// Serves `listener`; with `identity`, also TLS on the same port.
    pub(crate) fn new(
        listener: TcpListener,
        identity: Option<&TlsIdentity>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            context: "the API listener has no address".into(),
            source,
        })?;
        let acceptor = identity
            .map(server_config)
            .transpose()?
            .map(|config| TlsAcceptor::from(Arc::new(config)));
        let (sender, connections) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Watch events are small writes in a row: no Nagle delay.
                let _ = stream.set_nodelay(true);
                let sender = sender.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let connection =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, classify(stream, acceptor)).await;
                    match connection {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API connection dropped"),
                        Err(_) => tracing::debug!(%peer, "API connection timed out in handshake"),
                    }
                });
            }
        });
        Ok(ApiListener {
            connections,
            local_addr,
        })
    }
}

/// Peeks at the first byte: a TLS handshake is completed, anything else
/// is served as plain HTTP.
async fn classify(stream: TcpStream, acceptor: Option<TlsAcceptor>) -> std::io::Result<ApiStream> {
    let mut first = [0u8; 1];
    stream.peek(&mut first).await?;
    match acceptor {
        Some(acceptor) if first[0] == TLS_HANDSHAKE => {
            Ok(Either::Right(acceptor.accept(stream).await?))
        }
        _ => Ok(Either::Left(stream)),
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = ApiStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): wait for axum to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
