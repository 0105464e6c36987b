//! The cluster CA: makes or loads the CA, approves node CSRs by
//! Kubernetes' kubelet client rules, signs them, and tells when a
//! certificate is due for renewal.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authn::{CertificateError, user_of};
use crate::user::{NODES_GROUP, parse_node_user_name};

/// The CA refused or failed.
#[derive(Debug, Error)]
pub enum CaError {
    /// rcgen could not build, parse or sign (a bad key, CSR, or PEM).
    #[error("{what}")]
    Certificate {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// The CSR is not PKCS#10 PEM/DER.
    #[error("not a PKCS#10 certificate signing request")]
    Csr,
    /// The CSR's subject has no user name.
    #[error("certificate signing request: {0}")]
    Subject(#[source] CertificateError),
    /// The CSR asks what node auto-approval does not grant.
    #[error("certificate signing request refused: {0}")]
    Refused(String),
    /// A time outside what X.509 can hold.
    #[error("time out of range for a certificate")]
    Time,
    /// The system's random source failed.
    #[error("no randomness for a serial number")]
    Random,
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Certificate { what, source }
}

/// The cluster's certificate authority: its key and self-signed certificate.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// A certificate the CA signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCertificate {
    /// PEM, for the node's file.
    pub pem: String,
    /// DER, as the TLS layer presents it.
    pub der: Vec<u8>,
}

impl ClusterCa {
    /// A new CA named `common_name` (ECDSA P-256), valid from `now` for
    /// `lifetime`.
    ///
    /// # Errors
    /// Key generation or self-signing failed, or the times do not fit.
    pub fn generate(
        common_name: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(rcgen_error("cannot generate the CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        (params.not_before, params.not_after) = validity(now, lifetime)?;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("cannot self-sign the CA certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of certificate `cert_pem` and PKCS#8 key `key_pem`.
    ///
    /// # Errors
    /// Either PEM is unreadable.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("cannot read the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(rcgen_error("cannot read the CA certificate"))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate (clients' and the TLS verifier's root).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, PKCS#8 PEM (to store it; a secret).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Signs the node client certificate `csr_pem` asks for, valid from
    /// `now` for `lifetime`, after [`approve_node_csr`]: the certificate
    /// keeps the request's public key and subject (CN `system:node:NAME`, O
    /// `system:nodes`) and is for client authentication only.
    ///
    /// # Errors
    /// An unreadable or badly signed CSR, one the policy refuses, or
    /// signing failed.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        bootstrap_ok: bool,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<SignedCertificate, CaError> {
        let node = approve_node_csr(csr_pem, bootstrap_ok)?;
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(rcgen_error("cannot read the certificate signing request"))?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, crate::user::node_user_name(&node));
        subject.push(DnType::OrganizationName, NODES_GROUP);
        let params = &mut request.params;
        params.distinguished_name = subject;
        params.subject_alt_names.clear();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        (params.not_before, params.not_after) = validity(now, lifetime)?;
        let cert = request
            .signed_by(&self.issuer)
            .map_err(rcgen_error("cannot sign the node certificate"))?;
        Ok(SignedCertificate {
            pem: cert.pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// Kubernetes' auto-approval of kubelet client certificates: the node name
/// if `csr_pem` asks exactly for CN `system:node:NAME` in O `system:nodes`
/// (no other O), no subject alternative names, and no extended key usage
/// but client auth; and the requester may ask (`bootstrap_ok`: a bootstrap
/// token or the node renewing its own certificate, which the API checks).
///
/// # Errors
/// [`CaError::Refused`] with the rule broken, or an unreadable CSR.
pub fn approve_node_csr(csr_pem: &str, bootstrap_ok: bool) -> Result<String, CaError> {
    let refuse = |why: String| Err(CaError::Refused(why));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|_| CaError::Csr)?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).map_err(|_| CaError::Csr)?;
    let requested = user_of(&csr.certification_request_info.subject).map_err(CaError::Subject)?;
    let Some(node) = parse_node_user_name(&requested.name) else {
        return refuse(format!(
            "common name {:?} is not system:node:NAME",
            requested.name
        ));
    };
    if requested.groups != [NODES_GROUP] {
        return refuse(format!(
            "organizations {:?} are not exactly [{NODES_GROUP:?}]",
            requested.groups
        ));
    }
    for extension in csr.requested_extensions().into_iter().flatten() {
        match extension {
            ParsedExtension::SubjectAlternativeName(names) => {
                if let Some(name) = names.general_names.first() {
                    let name = match name {
                        GeneralName::DNSName(dns) => format!("DNS name {dns}"),
                        other => format!("{other:?}"),
                    };
                    return refuse(format!(
                        "a node client certificate has no alternative names ({name})"
                    ));
                }
            }
            ParsedExtension::ExtendedKeyUsage(usage) => {
                let only_client = usage.client_auth
                    && !(usage.any
                        || usage.server_auth
                        || usage.code_signing
                        || usage.email_protection
                        || usage.time_stamping
                        || usage.ocsp_signing)
                    && usage.other.is_empty();
                if !only_client {
                    return refuse("extended key usage must be client auth only".to_owned());
                }
            }
            _ => {}
        }
    }
    if !bootstrap_ok {
        return refuse(format!(
            "the requester may not ask for node {node:?}'s client certificate"
        ));
    }
    Ok(node.to_owned())
}

/// When to renew the certificate `cert_der`: at 70 % to 90 % of its
/// lifetime after `notBefore`, `jitter` (0 to 1, drawn by the caller) placing
/// it in that window, as the kubelet spreads its nodes' renewals.
///
/// # Errors
/// Not a certificate.
pub fn renew_before(cert_der: &[u8], jitter: f64) -> Result<SystemTime, CertificateError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|error| CertificateError::Parse(error.to_string()))?;
    let validity = cert.validity();
    let since_epoch = |seconds: i64| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    };
    let not_before = since_epoch(validity.not_before.timestamp());
    let lifetime = since_epoch(validity.not_after.timestamp())
        .duration_since(not_before)
        .unwrap_or_default();
    Ok(not_before + lifetime.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0)))
}

fn validity(
    now: SystemTime,
    lifetime: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    let start = OffsetDateTime::from(now);
    let end = start.checked_add(time::Duration::try_from(lifetime).map_err(|_| CaError::Time)?);
    Ok((start, end.ok_or(CaError::Time)?))
}

/// 16 random bytes, the top bit clear so the serial is positive.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::authn::{ClientCertificateAuthenticator, RevokedSerials};
    use crate::clock::{Clock, ManualClock};
    use crate::user::AUTHENTICATED_GROUP;

    const HOUR: Duration = Duration::from_secs(3600);

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A CSR for `subject` (CN, then O values) with `customize` applied.
    fn csr(cn: &str, o: Option<&str>, customize: impl FnOnce(&mut CertificateParams)) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = o {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        customize(&mut params);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn node_csr(name: &str) -> String {
        csr(&format!("system:node:{name}"), Some(NODES_GROUP), |_| {})
    }

    fn refusal(result: Result<impl std::fmt::Debug, CaError>) -> String {
        match result {
            Err(CaError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_signed_node_certificate_authenticates_the_node_until_it_expires() {
        let clock = Arc::new(ManualClock::new(start()));
        let ca = ClusterCa::generate("c4m-ca", start(), 24 * HOUR).unwrap();
        let signed = ca
            .sign_node_csr(&node_csr("n1"), true, start(), HOUR)
            .unwrap();

        // Signed by the CA (an independent check: x509-parser's verifier).
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(&ca_der.contents).unwrap();
        let (_, leaf) = X509Certificate::from_der(&signed.der).unwrap();
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(!leaf.is_ca());

        let revoked = Arc::new(RevokedSerials::default());
        let authenticator = ClientCertificateAuthenticator::new(clock.clone(), revoked.clone());
        let user = authenticator.authenticate_certificate(&signed.der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, [NODES_GROUP, AUTHENTICATED_GROUP]);

        clock.advance(HOUR + Duration::from_secs(1));
        let error = authenticator
            .authenticate_certificate(&signed.der)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "client certificate expired at 1800003600 (now 1800003601)"
        );

        // Not yet valid: signed for later.
        let later = ca
            .sign_node_csr(&node_csr("n1"), true, clock.now() + HOUR, HOUR)
            .unwrap();
        assert!(matches!(
            authenticator.authenticate_certificate(&later.der),
            Err(CertificateError::NotYetValid { .. })
        ));
    }

    #[test]
    fn a_revoked_certificate_stops_working() {
        let clock = Arc::new(ManualClock::new(start()));
        let ca = ClusterCa::generate("c4m-ca", start(), 24 * HOUR).unwrap();
        let signed = ca
            .sign_node_csr(&node_csr("n2"), true, start(), HOUR)
            .unwrap();
        let revoked = Arc::new(RevokedSerials::default());
        let authenticator = ClientCertificateAuthenticator::new(clock, revoked.clone());
        authenticator.authenticate_certificate(&signed.der).unwrap();
        let (_, leaf) = X509Certificate::from_der(&signed.der).unwrap();
        revoked.revoke(leaf.raw_serial());
        let error = authenticator
            .authenticate_certificate(&signed.der)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("of \"system:node:n2\" is revoked"),
            "{error}"
        );
    }

    #[test]
    fn node_auto_approval_refuses_anything_but_a_kubelet_client_certificate() {
        assert_eq!(approve_node_csr(&node_csr("n1"), true).unwrap(), "n1");
        assert_eq!(
            refusal(approve_node_csr(
                &csr("admin", Some("system:masters"), |_| {}),
                true
            )),
            r#"common name "admin" is not system:node:NAME"#
        );
        assert_eq!(
            refusal(approve_node_csr(
                &csr("system:node:n1", Some("system:masters"), |_| {}),
                true
            )),
            r#"organizations ["system:masters"] are not exactly ["system:nodes"]"#
        );
        // A second O smuggled next to system:nodes (rcgen keeps one value per
        // attribute type, so the second goes under O's OID as a custom type).
        let smuggled = csr("system:node:n1", Some(NODES_GROUP), |params| {
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), "system:masters");
        });
        assert_eq!(
            refusal(approve_node_csr(&smuggled, true)),
            r#"organizations ["system:nodes", "system:masters"] are not exactly ["system:nodes"]"#
        );
        assert_eq!(
            refusal(approve_node_csr(&csr("system:node:n1", None, |_| {}), true)),
            r#"organizations [] are not exactly ["system:nodes"]"#
        );
        let with_san = csr("system:node:n1", Some(NODES_GROUP), |params| {
            params.subject_alt_names = vec![rcgen::SanType::DnsName("api".try_into().unwrap())];
        });
        assert_eq!(
            refusal(approve_node_csr(&with_san, true)),
            "a node client certificate has no alternative names (DNS name api)"
        );
        let serving = csr("system:node:n1", Some(NODES_GROUP), |params| {
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
        });
        assert_eq!(
            refusal(approve_node_csr(&serving, true)),
            "extended key usage must be client auth only"
        );
        assert_eq!(
            refusal(approve_node_csr(&node_csr("n1"), false)),
            r#"the requester may not ask for node "n1"'s client certificate"#
        );
        let ca = ClusterCa::generate("c4m-ca", start(), HOUR).unwrap();
        assert!(matches!(
            ca.sign_node_csr(
                &csr("admin", Some("system:masters"), |_| {}),
                true,
                start(),
                HOUR
            ),
            Err(CaError::Refused(_))
        ));
        assert!(matches!(
            approve_node_csr("not a csr", true),
            Err(CaError::Csr)
        ));
    }

    #[test]
    fn a_ca_reloaded_from_pem_signs_certificates_its_certificate_verifies() {
        let ca = ClusterCa::generate("c4m-ca", start(), 24 * HOUR).unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let signed = again
            .sign_node_csr(&node_csr("n3"), true, start(), HOUR)
            .unwrap();
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(&ca_der.contents).unwrap();
        let (_, leaf) = X509Certificate::from_der(&signed.der).unwrap();
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());
    }

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_lifetime() {
        let ca = ClusterCa::generate("c4m-ca", start(), 24 * HOUR).unwrap();
        let signed = ca
            .sign_node_csr(&node_csr("n1"), true, start(), 10 * HOUR)
            .unwrap();
        assert_eq!(renew_before(&signed.der, 0.0).unwrap(), start() + 7 * HOUR);
        assert_eq!(renew_before(&signed.der, 1.0).unwrap(), start() + 9 * HOUR);
        assert_eq!(renew_before(&signed.der, 0.5).unwrap(), start() + 8 * HOUR);
        assert!(matches!(
            renew_before(b"junk", 0.5),
            Err(CertificateError::Parse(_))
        ));
    }
}
