//! Client certificates: [`ClientCertificateAuthenticator`] names the user
//! of a TLS peer certificate as Kubernetes does (CN the user, each O a
//! group).
//!
//! The chain itself (signed by the cluster CA, client-auth usage along the
//! chain) is verified by the TLS layer, rustls's client certificate
//! verifier with the CA as its root, before the handshake completes; this
//! authenticator sees only the leaf of a chain that verified, and adds what
//! the API decides per request: validity at its clock's time, the leaf's
//! extended key usage, and revocation.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::{Clock, unix_seconds};
use crate::user::UserInfo;

/// A client certificate refused.
#[derive(Debug, Error)]
pub enum CertificateError {
    /// Not a DER X.509 certificate.
    #[error("client certificate is not DER X.509: {0}")]
    Parse(String),
    /// No (or an empty, or a non-UTF-8) subject common name: no user name.
    #[error("client certificate subject has no common name")]
    NoCommonName,
    /// Past `notAfter`.
    #[error("client certificate expired at {not_after} (now {now})")]
    Expired {
        /// `notAfter`, seconds since the epoch.
        not_after: i64,
        /// The clock's time.
        now: i64,
    },
    /// Before `notBefore`.
    #[error("client certificate not valid before {not_before} (now {now})")]
    NotYetValid {
        /// `notBefore`, seconds since the epoch.
        not_before: i64,
        /// The clock's time.
        now: i64,
    },
    /// An extended key usage without client authentication.
    #[error("client certificate is not for client authentication (extended key usage)")]
    NotClientAuth,
    /// Revoked (its node or user deleted).
    #[error("client certificate serial {serial} of {user:?} is revoked")]
    Revoked {
        /// The serial, hex.
        serial: String,
        /// The user it named.
        user: String,
    },
}

/// Whether a certificate, valid otherwise, no longer authenticates: a
/// deleted node's certificate stops working before it expires.
pub trait Revocation: std::fmt::Debug + Send + Sync {
    /// Whether the certificate of serial `serial` (big-endian bytes) for
    /// `user` is revoked.
    fn is_revoked(&self, serial: &[u8], user: &UserInfo) -> bool;
}

/// Revoked serial numbers, updated as nodes are deleted.
#[derive(Debug, Default)]
pub struct RevokedSerials(RwLock<BTreeSet<Vec<u8>>>);

impl RevokedSerials {
    /// Revokes `serial` (big-endian bytes, as in the certificate).
    pub fn revoke(&self, serial: &[u8]) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(serial.to_vec());
    }
}

impl Revocation for RevokedSerials {
    fn is_revoked(&self, serial: &[u8], _user: &UserInfo) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(serial)
    }
}

/// Names the user of a verified client certificate.
#[derive(Debug)]
pub struct ClientCertificateAuthenticator {
    clock: Arc<dyn Clock>,
    revocation: Arc<dyn Revocation>,
}

impl ClientCertificateAuthenticator {
    /// Checks validity on `clock` and revocation with `revocation`.
    pub fn new(clock: Arc<dyn Clock>, revocation: Arc<dyn Revocation>) -> Self {
        Self { clock, revocation }
    }

    /// The user of the leaf certificate `leaf_der` of a chain the TLS layer
    /// verified: the subject's CN is the name, its O values the groups
    /// (then `system:authenticated`).
    ///
    /// # Errors
    /// Not a certificate, no CN, outside its validity, an extended key
    /// usage without client auth, or revoked.
    pub fn authenticate_certificate(&self, leaf_der: &[u8]) -> Result<UserInfo, CertificateError> {
        let (_, certificate) = X509Certificate::from_der(leaf_der)
            .map_err(|error| CertificateError::Parse(error.to_string()))?;
        check_validity(&certificate, self.clock.now())?;
        match certificate.extended_key_usage() {
            Ok(None) => {}
            Ok(Some(usage)) if usage.value.client_auth || usage.value.any => {}
            Ok(Some(_)) => return Err(CertificateError::NotClientAuth),
            Err(error) => return Err(CertificateError::Parse(error.to_string())),
        }
        let user = user_of(certificate.subject())?;
        let serial = certificate.raw_serial();
        if self.revocation.is_revoked(serial, &user) {
            return Err(CertificateError::Revoked {
                serial: certificate.raw_serial_as_string(),
                user: user.name,
            });
        }
        Ok(user.authenticated())
    }
}

/// Refuses `certificate` outside its validity at `now`.
fn check_validity(
    certificate: &X509Certificate<'_>,
    now: SystemTime,
) -> Result<(), CertificateError> {
    let now = unix_seconds(now);
    let validity = certificate.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now < not_before {
        return Err(CertificateError::NotYetValid { not_before, now });
    }
    if now > not_after {
        return Err(CertificateError::Expired { not_after, now });
    }
    Ok(())
}

/// Kubernetes' rule: the CN is the user (the last one if several, as Go's
/// `pkix.Name` keeps it), every O a group.
pub(crate) fn user_of(
    subject: &x509_parser::x509::X509Name<'_>,
) -> Result<UserInfo, CertificateError> {
    let name = subject
        .iter_common_name()
        .last()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(CertificateError::NoCommonName)?;
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Ok(UserInfo {
        name: name.to_owned(),
        groups,
        ..UserInfo::default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};

    use super::*;
    use crate::clock::ManualClock;

    /// A self-signed certificate (the chain is the TLS layer's concern).
    fn certificate(
        cn: Option<&str>,
        o: Option<&str>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Vec<u8> {
        let mut params = CertificateParams::default();
        // rcgen's default subject has a CN.
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(o) = o {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.extended_key_usages = usages;
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    fn authenticator() -> ClientCertificateAuthenticator {
        // rcgen's default validity is 1975 to 4096.
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        ClientCertificateAuthenticator::new(Arc::new(clock), Arc::new(RevokedSerials::default()))
    }

    #[test]
    fn the_common_name_is_the_user_and_organizations_the_groups() {
        let alice = certificate(
            Some("alice"),
            Some("devs"),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let user = authenticator().authenticate_certificate(&alice).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["devs", crate::user::AUTHENTICATED_GROUP]);
        // Every O value is a group (the second under O's OID: rcgen keeps one
        // value per attribute type).
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "carol");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "devs");
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 10]), "ops");
        let carol = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let user = authenticator()
            .authenticate_certificate(carol.der())
            .unwrap();
        assert_eq!(
            user.groups,
            ["devs", "ops", crate::user::AUTHENTICATED_GROUP]
        );
        // No extended key usage at all is accepted, as Go's verifier does for a leaf.
        let plain = certificate(Some("bob"), None, vec![]);
        assert_eq!(
            authenticator()
                .authenticate_certificate(&plain)
                .unwrap()
                .name,
            "bob"
        );
    }

    #[test]
    fn server_certificates_nameless_subjects_and_junk_are_refused() {
        let server = certificate(Some("api"), None, vec![ExtendedKeyUsagePurpose::ServerAuth]);
        assert!(matches!(
            authenticator().authenticate_certificate(&server),
            Err(CertificateError::NotClientAuth)
        ));
        let nameless = certificate(None, Some("devs"), vec![]);
        assert!(matches!(
            authenticator().authenticate_certificate(&nameless),
            Err(CertificateError::NoCommonName)
        ));
        assert!(matches!(
            authenticator().authenticate_certificate(b"\x30\x03junk"),
            Err(CertificateError::Parse(_))
        ));
    }
}
