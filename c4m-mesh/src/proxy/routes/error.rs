//! Validation errors: the object, the field and what is wrong with it.

use std::error::Error as StdError;
use std::fmt;

use super::action::ObjectRef;
use super::host::HostnameError;
use crate::proxy::api::DecodeError;

/// What is wrong with one field of one object. The object (or, for a
/// backend or a certificate, that reference only) is left out of the
/// configuration; everything else still applies.
#[derive(Debug)]
pub struct RouteError(Box<Detail>);

#[derive(Debug)]
struct Detail {
    object: ObjectRef,
    field: String,
    problem: Problem,
}

impl RouteError {
    /// An error on `field` of `object`.
    pub fn new(object: &ObjectRef, field: impl Into<String>, problem: Problem) -> Self {
        RouteError(Box::new(Detail {
            object: object.clone(),
            field: field.into(),
            problem,
        }))
    }

    /// The object at fault.
    pub fn object(&self) -> &ObjectRef {
        &self.0.object
    }

    /// The field, as a path: `spec.rules[0].matches[1].path.value`.
    pub fn field(&self) -> &str {
        &self.0.field
    }

    /// What is wrong.
    pub fn problem(&self) -> &Problem {
        &self.0.problem
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.0.object, self.0.field, self.0.problem)
    }
}

impl StdError for RouteError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        // The problem's text is already in this error's message.
        self.0.problem.source()
    }
}

impl Problem {
    /// Whether the problem makes the object invalid as written, whatever
    /// else the cluster holds: an API server refuses such a write. The
    /// others (a reference that does not resolve or is not granted, a
    /// value this implementation does not serve) are reported in the
    /// object's status, as Gateway API controllers report them.
    pub fn invalidates_object(&self) -> bool {
        match self {
            Problem::Invalid(_) | Problem::Regex(_) | Problem::Hostname(_) | Problem::Decode(_) => {
                true
            }
            Problem::Unsupported(_) | Problem::NotPermitted { .. } | Problem::NotFound(_) => false,
        }
    }
}

/// The kinds of problem a field can have.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A value outside what the API allows.
    #[error("{0}")]
    Invalid(String),
    /// A valid value this implementation does not serve.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A regular expression that does not compile.
    #[error("invalid regular expression: {0}")]
    Regex(#[source] regex::Error),
    /// A bad hostname.
    #[error(transparent)]
    Hostname(#[from] HostnameError),
    /// A reference into another namespace that no ReferenceGrant allows.
    #[error(
        "reference to {target} is not permitted: no ReferenceGrant in namespace {namespace:?} allows it"
    )]
    NotPermitted {
        /// What was referred to.
        target: String,
        /// The namespace that would need the grant.
        namespace: String,
    },
    /// A reference to an object that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An object that could not be decoded at all.
    #[error("could not decode: {0}")]
    Decode(#[source] DecodeError),
}
