//! HTTPS beside HTTP on the API port. kubectl and client-go never send a
//! bearer token over plain HTTP, so Kubernetes clients need TLS; the `c4m`
//! CLI and agents keep plain HTTP on loopback. Each connection's first byte
//! tells which it speaks (a TLS handshake starts with 0x16, an HTTP
//! request with a letter).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

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

/// A connection to the API: plain HTTP or HTTPS.
pub(crate) type ApiStream = Either<TcpStream, TlsStream<TcpStream>>;

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

/// What accepts TLS on the API port: None without an identity.
pub(crate) fn acceptor(identity: Option<&TlsIdentity>) -> Result<Option<TlsAcceptor>> {
    Ok(identity
        .map(server_config)
        .transpose()?
        .map(|config| TlsAcceptor::from(Arc::new(config))))
}

/// Peeks at the first byte: a TLS handshake is completed, anything else
/// is served as plain HTTP.
pub(crate) async fn classify(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
) -> std::io::Result<ApiStream> {
    let mut first = [0u8; 1];
    stream.peek(&mut first).await?;
    match acceptor {
        Some(acceptor) if first[0] == TLS_HANDSHAKE => {
            Ok(Either::Right(acceptor.accept(stream).await?))
        }
        _ => Ok(Either::Left(stream)),
    }
}
