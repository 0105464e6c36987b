//! Authentication: the [`Authenticator`] seam (a bearer token to a user),
//! [`Authenticators`] asked in order, and the authenticators themselves.

mod service_account;
mod static_tokens;
mod x509;

use std::error::Error as StdError;
use std::fmt;

use thiserror::Error;

use crate::user::UserInfo;

pub use service_account::{
    BoundObject, BoundObjects, BoundRef, DEFAULT_LEEWAY, EXTRA_CREDENTIAL_ID, EXTRA_NODE_NAME,
    EXTRA_NODE_UID, EXTRA_POD_NAME, EXTRA_POD_UID, IssueError, IssuedToken, KeyError,
    MAX_TOKEN_EXPIRATION, MIN_TOKEN_EXPIRATION, PublicKey, ServiceAccountAuthenticator, SigningKey,
    TokenIssuer, TokenRequest, jwks, openid_configuration,
};
pub use static_tokens::{StaticTokens, TokenFileError};
pub(crate) use x509::user_of;
pub use x509::{CertificateError, ClientCertificateAuthenticator, Revocation, RevokedSerials};

/// A token an authenticator recognised but refused, or could not check.
#[derive(Debug, Error)]
pub enum AuthenticationError {
    /// The token is of this authenticator's kind but not valid (expired,
    /// badly signed, revoked).
    #[error("invalid bearer token: {reason}")]
    InvalidToken {
        /// Why, for the log (never the token itself).
        reason: String,
    },
    /// The authenticator could not decide (its issuer or server is
    /// unreachable).
    #[error("authenticator {authenticator} is unavailable")]
    Unavailable {
        /// Which authenticator.
        authenticator: String,
        /// What failed.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// Turns a bearer token into the user it stands for. Service-account JWTs,
/// OIDC ID tokens, tokens `c4m login` issues, and webhook reviews are
/// authenticators too; each answers from memory or a cache it keeps
/// current itself, since the API asks on every request.
pub trait Authenticator: fmt::Debug + Send + Sync {
    /// The user `bearer` (the token, without `Bearer `) stands for, or
    /// `Ok(None)` when this authenticator does not know the token (the next
    /// one is asked). The user is as the authenticator knows it:
    /// [`Authenticators`] adds `system:authenticated`.
    ///
    /// # Errors
    /// The token is of this authenticator's kind but refused, or the
    /// authenticator could not check it.
    fn authenticate(&self, bearer: &str) -> Result<Option<UserInfo>, AuthenticationError>;
}

/// Authenticators asked in order (Kubernetes' union): the first that knows
/// the token names the user, who is then in `system:authenticated`. If
/// none knows it, the first error, if any, is the answer (a 401 either
/// way).
#[derive(Debug, Default)]
pub struct Authenticators(pub Vec<Box<dyn Authenticator>>);

impl Authenticator for Authenticators {
    fn authenticate(&self, bearer: &str) -> Result<Option<UserInfo>, AuthenticationError> {
        let mut first_error = None;
        for authenticator in &self.0 {
            match authenticator.authenticate(bearer) {
                Ok(Some(user)) => return Ok(Some(user.authenticated())),
                Ok(None) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::AUTHENTICATED_GROUP;

    /// Knows one token; refuses tokens starting with `expired-`.
    #[derive(Debug)]
    struct One(&'static str, &'static str);

    impl Authenticator for One {
        fn authenticate(&self, bearer: &str) -> Result<Option<UserInfo>, AuthenticationError> {
            if bearer.starts_with("expired-") {
                return Err(AuthenticationError::InvalidToken {
                    reason: format!("{} says expired", self.1),
                });
            }
            Ok((bearer == self.0).then(|| UserInfo::new(self.1, &["dev"])))
        }
    }

    #[test]
    fn the_first_authenticator_that_knows_the_token_names_the_user() {
        let chain = Authenticators(vec![Box::new(One("a", "alice")), Box::new(One("b", "bob"))]);
        let bob = chain.authenticate("b").unwrap().unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, ["dev", AUTHENTICATED_GROUP]);
        assert_eq!(chain.authenticate("c").unwrap(), None);
        let error = chain.authenticate("expired-x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid bearer token: alice says expired"
        );
        assert_eq!(Authenticators::default().authenticate("a").unwrap(), None);
    }
}
