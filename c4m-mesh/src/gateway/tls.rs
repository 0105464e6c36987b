//! TLS termination: certificates from Secret-shaped PEM, chosen by SNI.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::proxy::routes::{HostPattern, ObjectRef, TlsCertificate};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// `tls.crt` holds no PEM certificate, or unreadable PEM.
    #[error("tls.crt: no readable PEM certificate")]
    Chain(#[source] rustls::pki_types::pem::Error),
    /// `tls.key` holds no PEM private key, or unreadable PEM.
    #[error("tls.key: no readable PEM private key")]
    Key(#[source] rustls::pki_types::pem::Error),
    /// The key is of a kind the crypto provider cannot use, or does not
    /// belong to the certificate.
    #[error("tls.key does not fit tls.crt")]
    Unusable(#[source] rustls::Error),
    /// The client CA cannot verify client certificates.
    #[error("client CA")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
    /// A server TLS configuration could not be made.
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
}

/// A certificate that could not be loaded, with where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{secret} (for {hostname}, port {port})")]
pub struct RejectedCertificate {
    /// The Secret.
    pub secret: ObjectRef,
    /// The name it was to serve.
    pub hostname: String,
    /// The listener port.
    pub port: u16,
    /// Why.
    #[source]
    pub error: CertificateError,
}

/// Parses a PEM chain and key into a certificate rustls can serve.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertificateError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(CertificateError::Chain)?;
    if chain.is_empty() {
        return Err(CertificateError::Chain(
            rustls::pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(CertificateError::Key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(CertificateError::Unusable)
}

/// Picks a port's certificate by the client's SNI: an exact name, else the
/// longest matching wildcard, else the port's default (a listener without
/// hostname); no match and no default fails the handshake.
#[derive(Debug, Default)]
pub(crate) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Longest suffix first.
    wildcard: Vec<(HostPattern, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Loads a port's certificates; the first for a name wins. Those that
    /// cannot be loaded are returned, the others served.
    pub(crate) fn load(
        port: u16,
        certificates: &[TlsCertificate],
        provider: &CryptoProvider,
    ) -> (Self, Vec<RejectedCertificate>) {
        let mut resolver = SniResolver::default();
        let mut rejected = Vec::new();
        for cert in certificates {
            let key = match certified_key(&cert.chain_pem, &cert.key_pem, provider) {
                Ok(key) => Arc::new(key),
                Err(error) => {
                    rejected.push(RejectedCertificate {
                        secret: cert.secret.clone(),
                        hostname: cert.hostname.to_string(),
                        port,
                        error,
                    });
                    continue;
                }
            };
            match &cert.hostname {
                HostPattern::Exact(host) => {
                    resolver.exact.entry(host.clone()).or_insert(key);
                }
                wildcard @ HostPattern::Wildcard { .. } => {
                    if !resolver.wildcard.iter().any(|(w, _)| w == wildcard) {
                        resolver.wildcard.push((wildcard.clone(), key));
                    }
                }
                HostPattern::Any => {
                    resolver.default.get_or_insert(key);
                }
            }
        }
        resolver
            .wildcard
            .sort_by_key(|(w, _)| std::cmp::Reverse(w.to_string().len()));
        (resolver, rejected)
    }

    /// Whether any certificate loaded.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            if let Some(key) = self.exact.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, key)) = self.wildcard.iter().find(|(w, _)| w.matches(&name)) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(client_hello.server_name())
    }
}

/// The server TLS configuration of one port: certificates by SNI, ALPN
/// offering HTTP/2 then HTTP/1.1.
pub(crate) fn server_config(
    resolver: SniResolver,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<rustls::ServerConfig>, CertificateError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CertificateError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::generate_simple_self_signed(names).unwrap();
        (
            key.cert.pem().into_bytes(),
            key.signing_key.serialize_pem().into_bytes(),
        )
    }

    fn tls(host: HostPattern, pem: &(Vec<u8>, Vec<u8>)) -> TlsCertificate {
        TlsCertificate {
            hostname: host,
            secret: ObjectRef::new("Secret", "ns", "s"),
            chain_pem: pem.0.clone(),
            key_pem: pem.1.clone(),
        }
    }

    #[test]
    fn picks_exact_then_wildcard_then_default() {
        let provider = rustls::crypto::ring::default_provider();
        let exact = cert(&["a.example.com"]);
        let wild = cert(&["*.example.com"]);
        let fallback = cert(&["fallback"]);
        let (resolver, rejected) = SniResolver::load(
            443,
            &[
                tls(HostPattern::gateway("*.example.com").unwrap(), &wild),
                tls(HostPattern::gateway("a.example.com").unwrap(), &exact),
                tls(HostPattern::Any, &fallback),
            ],
            &provider,
        );
        assert!(rejected.is_empty());
        let leaf = |name: Option<&str>| resolver.find(name).unwrap().cert[0].clone();
        let der = |pem: &(Vec<u8>, Vec<u8>)| CertificateDer::from_pem_slice(&pem.0).unwrap();
        assert_eq!(leaf(Some("A.example.com")), der(&exact));
        assert_eq!(leaf(Some("b.example.com")), der(&wild));
        assert_eq!(leaf(Some("other.test")), der(&fallback));
        assert_eq!(leaf(None), der(&fallback));
    }

    #[test]
    fn a_broken_certificate_is_rejected_by_name() {
        let provider = rustls::crypto::ring::default_provider();
        let good = cert(&["a.example.com"]);
        let other = cert(&["b.example.com"]);
        let mismatched = (good.0.clone(), other.1.clone());
        let garbage = (b"not pem".to_vec(), good.1.clone());
        let (resolver, rejected) = SniResolver::load(
            443,
            &[
                tls(HostPattern::Any, &mismatched),
                tls(HostPattern::Any, &garbage),
                tls(HostPattern::Any, &good),
            ],
            &provider,
        );
        assert_eq!(rejected.len(), 2);
        assert!(
            matches!(rejected[0].error, CertificateError::Unusable(_)),
            "{:?}",
            rejected[0]
        );
        assert!(
            matches!(rejected[1].error, CertificateError::Chain(_)),
            "{:?}",
            rejected[1]
        );
        assert_eq!(rejected[0].to_string(), "Secret ns/s (for *, port 443)");
        assert!(!resolver.is_empty());
    }
}
