//! Service-account tokens as Kubernetes' bound tokens: [`TokenIssuer`]
//! mints ES256 JWTs for a TokenRequest, [`ServiceAccountAuthenticator`]
//! checks them, and [`openid_configuration`] and [`jwks`] are the
//! discovery documents of the issuer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::authn::{AuthenticationError, Authenticator};
use crate::clock::{Clock, unix_seconds};
use crate::user::{UserInfo, service_account_user_name};

/// The shortest `expirationSeconds` Kubernetes accepts (10 minutes).
pub const MIN_TOKEN_EXPIRATION: Duration = Duration::from_secs(600);
/// The longest (2^32 seconds, Kubernetes' bound).
pub const MAX_TOKEN_EXPIRATION: Duration = Duration::from_secs(1 << 32);
/// Clock skew tolerated on `exp`, `nbf` and `iat` (Kubernetes: 1 minute).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// The JWS algorithm of c4m's tokens.
const ALGORITHM: &str = "ES256";
/// The DER prefix of a P-256 public key's SubjectPublicKeyInfo (id-ecPublicKey,
/// prime256v1, a 66-byte bit string), before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P256_POINT_LEN: usize = 65;

/// Extra keys of the user a token stands for, as Kubernetes names them.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// The uid of the pod the token is bound to.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// The node the token's pod runs on (or the token is bound to).
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// That node's uid.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// `JTI=<the token's id>`, for audit.
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// A key that cannot be used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Not PEM, or not the expected PEM block.
    #[error("expected a PEM block `{expected}`")]
    Pem {
        /// The label expected (`PRIVATE KEY`, `PUBLIC KEY`).
        expected: &'static str,
    },
    /// A private key that is not an ECDSA P-256 key in PKCS#8.
    #[error("not an ECDSA P-256 private key in PKCS#8: {0}")]
    PrivateKey(ring::error::KeyRejected),
    /// A public key that is not an ECDSA P-256 SubjectPublicKeyInfo.
    #[error("not an ECDSA P-256 public key (SubjectPublicKeyInfo)")]
    PublicKey,
    /// The system's random source failed.
    #[error("no randomness to make a key")]
    Random,
}

/// The cluster's token signing key: ECDSA P-256 (ES256).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    ///
    /// # Errors
    /// The system's random source failed.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Random)?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// The key in PKCS#8 DER.
    ///
    /// # Errors
    /// Not an ECDSA P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(KeyError::PrivateKey)?;
        let public = PublicKey::from_point(pair.public_key().as_ref())?;
        Ok(Self {
            pair,
            pkcs8: der.to_vec(),
            public,
        })
    }

    /// The key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    /// Not that PEM block, or not an ECDSA P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_pkcs8_der(&pem_contents(pem, "PRIVATE KEY")?)
    }

    /// The key as PKCS#8 PEM, to store in a Secret or file.
    pub fn to_pkcs8_pem(&self) -> String {
        to_pem("PRIVATE KEY", &self.pkcs8)
    }

    /// Its public half (for the authenticator and the JWKS).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// A P-256 public key that verifies tokens, with its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point (`04 || x || y`).
    point: Vec<u8>,
    /// base64url(SHA-256(SubjectPublicKeyInfo DER)), as Kubernetes' `kid`.
    kid: String,
}

impl PublicKey {
    fn from_point(point: &[u8]) -> Result<Self, KeyError> {
        if point.len() != P256_POINT_LEN || point[0] != 4 {
            return Err(KeyError::PublicKey);
        }
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        Ok(Self {
            point: point.to_vec(),
            kid: BASE64URL.encode(Sha256::digest(&spki)),
        })
    }

    /// The key as a SubjectPublicKeyInfo in DER.
    ///
    /// # Errors
    /// Not a P-256 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let point = der
            .strip_prefix(P256_SPKI_PREFIX.as_slice())
            .ok_or(KeyError::PublicKey)?;
        Self::from_point(point)
    }

    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// Not that PEM block, or not a P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_spki_der(&pem_contents(pem, "PUBLIC KEY")?)
    }

    /// The key as a SubjectPublicKeyInfo in DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        [P256_SPKI_PREFIX.as_slice(), &self.point].concat()
    }

    /// The key id tokens signed by it carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a JWK (RFC 7517), as the JWKS document lists it.
    pub fn jwk(&self) -> Value {
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": ALGORITHM,
            "x": BASE64URL.encode(&self.point[1..33]),
            "y": BASE64URL.encode(&self.point[33..]),
        })
    }
}

fn pem_contents(pem: &str, expected: &'static str) -> Result<Vec<u8>, KeyError> {
    match x509_parser::pem::parse_x509_pem(pem.as_bytes()) {
        Ok((_, block)) if block.label == expected => Ok(block.contents),
        _ => Err(KeyError::Pem { expected }),
    }
}

/// `der` as a PEM block of `label`, lines of 64 characters.
pub(crate) fn to_pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// An object a token is bound to: its name and uid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundRef {
    /// The object's name.
    pub name: String,
    /// The object's uid (a recreated object with the same name has another).
    pub uid: String,
}

impl BoundRef {
    /// `name` with `uid`.
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// What a TokenRequest asks (`POST .../serviceaccounts/NAME/token`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: BoundRef,
    /// Who the token is for; empty means the issuer's default audiences.
    pub audiences: Vec<String>,
    /// `expirationSeconds`.
    pub expiration: Duration,
    /// The pod the token is bound to (`boundObjectRef` kind Pod).
    pub pod: Option<BoundRef>,
    /// The node (that pod's node, or `boundObjectRef` kind Node).
    pub node: Option<BoundRef>,
}

/// A TokenRequest refused.
#[derive(Debug, Error)]
pub enum IssueError {
    /// `expirationSeconds` out of bounds.
    #[error(
        "spec.expirationSeconds: may not specify a duration less than {} seconds or more than {} seconds, got {}",
        min.as_secs(), MAX_TOKEN_EXPIRATION.as_secs(), got.as_secs()
    )]
    Expiration {
        /// What was asked.
        got: Duration,
        /// The issuer's minimum.
        min: Duration,
    },
    /// No namespace or service account name.
    #[error("a token needs a service account namespace and name")]
    NoServiceAccount,
    /// Signing failed (ring reports no detail).
    #[error("cannot sign the token")]
    Sign,
}

/// A minted token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Its `exp`, seconds since the epoch (`status.expirationTimestamp`).
    pub expires_at: i64,
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KubernetesClaim {
    namespace: String,
    serviceaccount: BoundRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<BoundRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<BoundRef>,
}

/// The claims of a c4m service-account token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim,
}

/// Mints service-account tokens with the cluster's signing key.
#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    default_audiences: Vec<String>,
    min_expiration: Duration,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

impl TokenIssuer {
    /// Tokens of issuer `issuer` (a URL, `iss`), signed with `key`, whose
    /// default audience is the issuer itself (as Kubernetes' API audiences
    /// default to it).
    pub fn new(key: SigningKey, issuer: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        let issuer = issuer.into();
        Self {
            key,
            default_audiences: vec![issuer.clone()],
            issuer,
            min_expiration: MIN_TOKEN_EXPIRATION,
            clock,
            rng: SystemRandom::new(),
        }
    }

    /// Like [`Self::new`] but accepting expirations down to `min`: for tests
    /// and development clusters only, since short-lived tokens the kubelet
    /// cannot refresh in time break pods.
    pub fn new_for_dev(
        key: SigningKey,
        issuer: impl Into<String>,
        clock: Arc<dyn Clock>,
        min: Duration,
    ) -> Self {
        Self {
            min_expiration: min,
            ..Self::new(key, issuer, clock)
        }
    }

    /// The `iss` of the tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key that verifies the tokens.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// A token for `request`, valid from now for `request.expiration`.
    ///
    /// # Errors
    /// An expiration out of bounds, no service account, or signing failed.
    pub fn issue(&self, request: &TokenRequest) -> Result<IssuedToken, IssueError> {
        if !(self.min_expiration..=MAX_TOKEN_EXPIRATION).contains(&request.expiration) {
            return Err(IssueError::Expiration {
                got: request.expiration,
                min: self.min_expiration,
            });
        }
        if request.namespace.is_empty() || request.service_account.name.is_empty() {
            return Err(IssueError::NoServiceAccount);
        }
        let now = unix_seconds(self.clock.now());
        let expiration = i64::try_from(request.expiration.as_secs()).unwrap_or(i64::MAX);
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| IssueError::Sign)?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: service_account_user_name(&request.namespace, &request.service_account.name),
            aud: if request.audiences.is_empty() {
                self.default_audiences.clone()
            } else {
                request.audiences.clone()
            },
            exp: now.saturating_add(expiration),
            iat: now,
            nbf: now,
            jti: uuid_text(jti),
            kubernetes: KubernetesClaim {
                namespace: request.namespace.clone(),
                serviceaccount: request.service_account.clone(),
                pod: request.pod.clone(),
                node: request.node.clone(),
            },
        };
        let header = json!({ "alg": ALGORITHM, "kid": self.key.public.kid });
        let signing_input = format!(
            "{}.{}",
            BASE64URL.encode(header.to_string()),
            BASE64URL.encode(serde_json::to_vec(&claims).map_err(|_| IssueError::Sign)?)
        );
        let signature = self
            .key
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| IssueError::Sign)?;
        Ok(IssuedToken {
            token: format!("{signing_input}.{}", BASE64URL.encode(signature.as_ref())),
            expires_at: claims.exp,
        })
    }
}

/// 16 random bytes as a version-4 UUID's text, as Kubernetes' `jti`.
fn uuid_text(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// An object a token names, to be checked for existence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundObject<'a> {
    /// The service account `namespace/name` with `uid`.
    ServiceAccount {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
        /// Its uid.
        uid: &'a str,
    },
    /// The pod `namespace/name` with `uid`.
    Pod {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
        /// Its uid.
        uid: &'a str,
    },
    /// The node `name` with `uid`.
    Node {
        /// Its name.
        name: &'a str,
        /// Its uid.
        uid: &'a str,
    },
}

impl std::fmt::Display for BoundObject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceAccount {
                namespace,
                name,
                uid,
            } => write!(f, "service account {namespace}/{name} (uid {uid})"),
            Self::Pod {
                namespace,
                name,
                uid,
            } => write!(f, "pod {namespace}/{name} (uid {uid})"),
            Self::Node { name, uid } => write!(f, "node {name} (uid {uid})"),
        }
    }
}

/// Whether the objects a token is bound to still exist: the API backs it
/// with the store, so a token bound to a deleted pod (or a recreated one,
/// whose uid differs) stops working before it expires.
pub trait BoundObjects: std::fmt::Debug + Send + Sync {
    /// Whether `object` exists with that uid.
    ///
    /// # Errors
    /// The lookup itself failed (the token is then refused as unverifiable).
    fn exists(&self, object: BoundObject<'_>) -> Result<bool, AuthenticationError>;
}

/// Verifies c4m's service-account tokens (Kubernetes' bound tokens).
///
/// A JWT whose `iss` is not one of ours is not this authenticator's
/// (`Ok(None)`: another authenticator may know it); one that claims our
/// issuer must pass every check or is refused with the reason.
#[derive(Debug)]
pub struct ServiceAccountAuthenticator {
    issuers: Vec<String>,
    keys: Vec<PublicKey>,
    audiences: Vec<String>,
    clock: Arc<dyn Clock>,
    leeway: Duration,
    bound_objects: Arc<dyn BoundObjects>,
}

impl ServiceAccountAuthenticator {
    /// Accepts tokens of `issuers` signed by any of `keys` (old and new
    /// during a rotation) for any of `audiences`, checking bound objects
    /// with `bound_objects`; leeway [`DEFAULT_LEEWAY`].
    pub fn new(
        issuers: Vec<String>,
        keys: Vec<PublicKey>,
        audiences: Vec<String>,
        clock: Arc<dyn Clock>,
        bound_objects: Arc<dyn BoundObjects>,
    ) -> Self {
        Self {
            issuers,
            keys,
            audiences,
            clock,
            leeway: DEFAULT_LEEWAY,
            bound_objects,
        }
    }

    /// The same with `leeway` of clock skew on the time claims.
    #[must_use]
    pub fn with_leeway(self, leeway: Duration) -> Self {
        Self { leeway, ..self }
    }

    fn check(&self, claims: &Claims) -> Result<UserInfo, String> {
        let now = unix_seconds(self.clock.now());
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        if now > claims.exp.saturating_add(leeway) {
            return Err(format!("token expired at {} (now {now})", claims.exp));
        }
        if now.saturating_add(leeway) < claims.nbf {
            return Err(format!("token not valid before {} (now {now})", claims.nbf));
        }
        if now.saturating_add(leeway) < claims.iat {
            return Err(format!("token issued in the future, at {}", claims.iat));
        }
        if !claims.aud.iter().any(|aud| self.audiences.contains(aud)) {
            return Err(format!(
                "token audiences {:?} are not among the accepted {:?}",
                claims.aud, self.audiences
            ));
        }
        let claim = &claims.kubernetes;
        let account = &claim.serviceaccount;
        let user_name = service_account_user_name(&claim.namespace, &account.name);
        if claims.sub != user_name {
            return Err(format!(
                "sub {:?} is not the token's service account {user_name:?}",
                claims.sub
            ));
        }
        let mut bound = vec![BoundObject::ServiceAccount {
            namespace: &claim.namespace,
            name: &account.name,
            uid: &account.uid,
        }];
        if let Some(pod) = &claim.pod {
            bound.push(BoundObject::Pod {
                namespace: &claim.namespace,
                name: &pod.name,
                uid: &pod.uid,
            });
        }
        if let Some(node) = &claim.node {
            bound.push(BoundObject::Node {
                name: &node.name,
                uid: &node.uid,
            });
        }
        for object in bound {
            match self.bound_objects.exists(object) {
                Ok(true) => {}
                Ok(false) => return Err(format!("{object} no longer exists")),
                Err(error) => return Err(format!("cannot check {object}: {error}")),
            }
        }
        let mut user = UserInfo::service_account(&claim.namespace, &account.name, &account.uid);
        let mut extra = BTreeMap::new();
        if let Some(pod) = &claim.pod {
            extra.insert(EXTRA_POD_NAME.to_owned(), vec![pod.name.clone()]);
            extra.insert(EXTRA_POD_UID.to_owned(), vec![pod.uid.clone()]);
        }
        if let Some(node) = &claim.node {
            extra.insert(EXTRA_NODE_NAME.to_owned(), vec![node.name.clone()]);
            extra.insert(EXTRA_NODE_UID.to_owned(), vec![node.uid.clone()]);
        }
        extra.insert(
            EXTRA_CREDENTIAL_ID.to_owned(),
            vec![format!("JTI={}", claims.jti)],
        );
        user.extra = extra;
        Ok(user.authenticated())
    }
}

/// The JOSE header fields read.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Just the issuer, read before the signature is checked to tell whether
/// the token is ours at all.
#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: String,
}

impl Authenticator for ServiceAccountAuthenticator {
    fn authenticate(&self, bearer: &str) -> Result<Option<UserInfo>, AuthenticationError> {
        let mut parts = bearer.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Some(payload_json) = BASE64URL.decode(payload).ok() else {
            return Ok(None);
        };
        let Ok(IssuerOnly { iss }) = serde_json::from_slice(&payload_json) else {
            return Ok(None);
        };
        if !self.issuers.contains(&iss) {
            return Ok(None);
        }
        let refuse = |reason: String| AuthenticationError::InvalidToken { reason };
        let header: Header = BASE64URL
            .decode(header)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| refuse("malformed JWT header".to_owned()))?;
        if header.alg != ALGORITHM {
            return Err(refuse(format!(
                "signing algorithm {:?} is not {ALGORITHM}",
                header.alg
            )));
        }
        let signature = BASE64URL
            .decode(signature)
            .map_err(|_| refuse("malformed JWT signature".to_owned()))?;
        let candidates: Vec<&PublicKey> = match &header.kid {
            Some(kid) => self.keys.iter().filter(|key| key.kid == *kid).collect(),
            None => self.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(refuse(format!(
                "unknown key id {:?}",
                header.kid.unwrap_or_default()
            )));
        }
        let signing_input = &bearer[..header_and_payload_len(bearer)];
        let verified = candidates.iter().any(|key| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.point)
                .verify(signing_input.as_bytes(), &signature)
                .is_ok()
        });
        if !verified {
            return Err(refuse("signature does not verify".to_owned()));
        }
        let claims: Claims = serde_json::from_slice(&payload_json)
            .map_err(|error| refuse(format!("malformed claims: {error}")))?;
        self.check(&claims).map(Some).map_err(refuse)
    }
}

/// The length of `HEADER.PAYLOAD` in a three-part JWT.
fn header_and_payload_len(jwt: &str) -> usize {
    jwt.rfind('.').unwrap_or(jwt.len())
}

/// `/.well-known/openid-configuration` of the service-account issuer, as
/// Kubernetes serves it; the JWKS is at `jwks_uri` (Kubernetes:
/// `ISSUER/openid/v1/jwks` unless configured).
pub fn openid_configuration(issuer: &str, jwks_uri: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
    })
}

/// The JWKS document (`/openid/v1/jwks`): every key tokens may be signed by.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Value {
    json!({ "keys": keys.into_iter().map(PublicKey::jwk).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::user::{AUTHENTICATED_GROUP, SERVICE_ACCOUNTS_GROUP};

    const ISSUER: &str = "https://c4m.test";

    /// Objects that exist, by uid; a deleted one is removed.
    #[derive(Debug, Default)]
    struct Existing(Mutex<BTreeSet<String>>);

    impl BoundObjects for Existing {
        fn exists(&self, object: BoundObject<'_>) -> Result<bool, AuthenticationError> {
            let uid = match object {
                BoundObject::ServiceAccount { uid, .. }
                | BoundObject::Pod { uid, .. }
                | BoundObject::Node { uid, .. } => uid,
            };
            Ok(self.0.lock().unwrap().contains(uid))
        }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        existing: Arc<Existing>,
        issuer: TokenIssuer,
        authenticator: ServiceAccountAuthenticator,
    }

    fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let existing = Arc::new(Existing::default());
        existing
            .0
            .lock()
            .unwrap()
            .extend(["sa-uid", "pod-uid", "node-uid"].map(str::to_owned));
        let issuer = TokenIssuer::new_for_dev(
            SigningKey::generate().unwrap(),
            ISSUER,
            clock.clone(),
            Duration::from_secs(10),
        );
        let authenticator = ServiceAccountAuthenticator::new(
            vec![ISSUER.to_owned()],
            vec![issuer.public_key().clone()],
            vec!["api".to_owned(), ISSUER.to_owned()],
            clock.clone(),
            existing.clone(),
        )
        .with_leeway(Duration::from_secs(5));
        Fixture {
            clock,
            existing,
            issuer,
            authenticator,
        }
    }

    fn pod_request() -> TokenRequest {
        TokenRequest {
            namespace: "shop".to_owned(),
            service_account: BoundRef::new("web", "sa-uid"),
            audiences: vec!["api".to_owned()],
            expiration: Duration::from_secs(60),
            pod: Some(BoundRef::new("web-0", "pod-uid")),
            node: Some(BoundRef::new("n1", "node-uid")),
        }
    }

    fn refusal(authenticator: &ServiceAccountAuthenticator, token: &str) -> String {
        match authenticator.authenticate(token) {
            Err(AuthenticationError::InvalidToken { reason }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&BASE64URL.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_bound_token_names_its_service_account_pod_and_node() {
        let f = fixture();
        let issued = f.issuer.issue(&pod_request()).unwrap();
        assert_eq!(issued.expires_at, 1_800_000_060);
        let user = f
            .authenticator
            .authenticate(&issued.token)
            .unwrap()
            .unwrap();
        assert_eq!(user.name, "system:serviceaccount:shop:web");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            [
                SERVICE_ACCOUNTS_GROUP,
                "system:serviceaccounts:shop",
                AUTHENTICATED_GROUP
            ]
        );
        assert_eq!(user.extra[EXTRA_POD_NAME], ["web-0"]);
        assert_eq!(user.extra[EXTRA_POD_UID], ["pod-uid"]);
        assert_eq!(user.extra[EXTRA_NODE_NAME], ["n1"]);
        assert_eq!(user.extra[EXTRA_NODE_UID], ["node-uid"]);
        let payload = decode(&parts(&issued.token)[1]);
        let jti = payload["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 36);
        assert_eq!(user.extra[EXTRA_CREDENTIAL_ID], [format!("JTI={jti}")]);
        assert_eq!(payload["sub"], "system:serviceaccount:shop:web");
        assert_eq!(payload["aud"], json!(["api"]));
        assert_eq!(payload["iat"], payload["nbf"]);
        assert_eq!(payload["kubernetes.io"]["pod"]["uid"], "pod-uid");
        let header = decode(&parts(&issued.token)[0]);
        assert_eq!(
            header,
            json!({"alg": "ES256", "kid": f.issuer.public_key().kid()})
        );
    }

    #[test]
    fn an_empty_audience_list_means_the_issuer_and_expirations_are_bounded() {
        let f = fixture();
        let mut request = pod_request();
        request.audiences.clear();
        let token = f.issuer.issue(&request).unwrap().token;
        assert_eq!(decode(&parts(&token)[1])["aud"], json!([ISSUER]));

        request.expiration = Duration::from_secs(9);
        let error = f.issuer.issue(&request).unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec.expirationSeconds: may not specify a duration less than 10 seconds or more than 4294967296 seconds, got 9"
        );
        // The production constructor keeps Kubernetes' 10 minutes.
        let production = TokenIssuer::new(SigningKey::generate().unwrap(), ISSUER, f.clock.clone());
        request.expiration = Duration::from_secs(599);
        assert!(matches!(
            production.issue(&request),
            Err(IssueError::Expiration { .. })
        ));
        request.expiration = MIN_TOKEN_EXPIRATION;
        production.issue(&request).unwrap();
    }

    #[test]
    fn time_claims_are_checked_with_leeway() {
        let f = fixture();
        let token = f.issuer.issue(&pod_request()).unwrap().token;
        f.clock.advance(Duration::from_secs(65));
        f.authenticator.authenticate(&token).unwrap().unwrap();
        f.clock.advance(Duration::from_secs(1));
        assert_eq!(
            refusal(&f.authenticator, &token),
            "token expired at 1800000060 (now 1800000066)"
        );

        // A token minted by a clock ahead of ours.
        let ahead = Arc::new(ManualClock::new(f.clock.now() + Duration::from_secs(30)));
        let ahead_issuer = TokenIssuer::new_for_dev(
            SigningKey::from_pkcs8_pem(&f.issuer.key.to_pkcs8_pem()).unwrap(),
            ISSUER,
            ahead,
            Duration::from_secs(10),
        );
        let early = ahead_issuer.issue(&pod_request()).unwrap().token;
        assert_eq!(
            refusal(&f.authenticator, &early),
            "token not valid before 1800000096 (now 1800000066)"
        );
    }

    #[test]
    fn forged_tampered_and_misdirected_tokens_are_refused() {
        let f = fixture();
        let token = f.issuer.issue(&pod_request()).unwrap().token;
        let [header, payload, signature] = <[String; 3]>::try_from(parts(&token)).unwrap();

        // Another key, claiming our kid.
        let other = TokenIssuer::new_for_dev(
            SigningKey::generate().unwrap(),
            ISSUER,
            f.clock.clone(),
            Duration::from_secs(10),
        );
        let forged = parts(&other.issue(&pod_request()).unwrap().token);
        assert_eq!(
            refusal(&f.authenticator, &forged.join(".")),
            format!("unknown key id {:?}", other.public_key().kid())
        );
        let forged_with_our_kid = format!("{header}.{}.{}", forged[1], forged[2]);
        assert_eq!(
            refusal(&f.authenticator, &forged_with_our_kid),
            "signature does not verify"
        );

        // A payload changed after signing: another namespace.
        let mut claims = decode(&payload);
        claims["kubernetes.io"]["namespace"] = json!("kube-system");
        claims["sub"] = json!("system:serviceaccount:kube-system:web");
        let tampered = format!(
            "{header}.{}.{signature}",
            BASE64URL.encode(claims.to_string())
        );
        assert_eq!(
            refusal(&f.authenticator, &tampered),
            "signature does not verify"
        );

        // `alg: none` with no signature.
        let none = BASE64URL.encode(json!({"alg": "none"}).to_string());
        assert_eq!(
            refusal(&f.authenticator, &format!("{none}.{payload}.")),
            "signing algorithm \"none\" is not ES256"
        );

        // Another audience.
        let mut request = pod_request();
        request.audiences = vec!["vault".to_owned()];
        let vault = f.issuer.issue(&request).unwrap().token;
        assert_eq!(
            refusal(&f.authenticator, &vault),
            r#"token audiences ["vault"] are not among the accepted ["api", "https://c4m.test"]"#
        );

        // Not ours at all: another issuer's JWT, or not a JWT; others may know it.
        let foreign_payload = BASE64URL.encode(json!({"iss": "https://elsewhere"}).to_string());
        let foreign = format!("{header}.{foreign_payload}.{signature}");
        assert_eq!(f.authenticator.authenticate(&foreign).unwrap(), None);
        assert_eq!(f.authenticator.authenticate("abc123").unwrap(), None);
    }

    #[test]
    fn a_token_stops_working_when_its_pod_is_deleted() {
        let f = fixture();
        let token = f.issuer.issue(&pod_request()).unwrap().token;
        f.authenticator.authenticate(&token).unwrap().unwrap();
        f.existing.0.lock().unwrap().remove("pod-uid");
        assert_eq!(
            refusal(&f.authenticator, &token),
            "pod shop/web-0 (uid pod-uid) no longer exists"
        );
        f.existing.0.lock().unwrap().remove("sa-uid");
        assert_eq!(
            refusal(&f.authenticator, &token),
            "service account shop/web (uid sa-uid) no longer exists"
        );
    }

    #[test]
    fn tokens_of_either_key_verify_during_a_rotation() {
        let f = fixture();
        let new_issuer = TokenIssuer::new_for_dev(
            SigningKey::generate().unwrap(),
            ISSUER,
            f.clock.clone(),
            Duration::from_secs(10),
        );
        let keys = vec![
            f.issuer.public_key().clone(),
            new_issuer.public_key().clone(),
        ];
        let both = ServiceAccountAuthenticator::new(
            vec![ISSUER.to_owned()],
            keys,
            vec!["api".to_owned()],
            f.clock.clone(),
            f.existing.clone(),
        );
        for issuer in [&f.issuer, &new_issuer] {
            let token = issuer.issue(&pod_request()).unwrap().token;
            both.authenticate(&token).unwrap().unwrap();
        }
    }

    #[test]
    fn keys_round_trip_through_pem_and_the_kid_is_the_spki_digest() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let spki = key.public_key().to_spki_der();
        let public_pem = to_pem("PUBLIC KEY", &spki);
        assert_eq!(&PublicKey::from_pem(&public_pem).unwrap(), key.public_key());
        assert_eq!(
            key.public_key().kid(),
            BASE64URL.encode(Sha256::digest(&spki))
        );
        // The SPKI prefix is the one rcgen (an independent encoder) writes.
        let rcgen_key = rcgen::KeyPair::from_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&rcgen_key),
            spki
        );
        assert!(matches!(
            SigningKey::from_pkcs8_pem(&public_pem),
            Err(KeyError::Pem {
                expected: "PRIVATE KEY"
            })
        ));
    }

    #[test]
    fn the_jwks_verifies_a_token_independently() {
        let f = fixture();
        let token = f.issuer.issue(&pod_request()).unwrap().token;
        let document: Value =
            serde_json::from_str(&jwks([f.issuer.public_key()]).to_string()).unwrap();
        let [header, payload, signature] = <[String; 3]>::try_from(parts(&token)).unwrap();
        let kid = decode(&header)["kid"].clone();
        let jwk = document["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|jwk| jwk["kid"] == kid)
            .unwrap();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        let coordinate = |name: &str| BASE64URL.decode(jwk[name].as_str().unwrap()).unwrap();
        let point = [vec![4], coordinate("x"), coordinate("y")].concat();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(
                format!("{header}.{payload}").as_bytes(),
                &BASE64URL.decode(signature).unwrap(),
            )
            .unwrap();

        let configuration = openid_configuration(ISSUER, "https://c4m.test/openid/v1/jwks");
        assert_eq!(configuration["issuer"], ISSUER);
        assert_eq!(
            configuration["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
    }
}
