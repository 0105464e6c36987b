//! The error type of `c4m-control`.

/// Errors of the control plane; each maps to a Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Kind (lowercase plural).
        kind: String,
        /// Name (with namespace where it has one).
        name: String,
    },
    /// The object already exists.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// Kind (lowercase plural).
        kind: String,
        /// Name.
        name: String,
    },
    /// The write was based on an outdated resourceVersion.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid (422): the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// An object is invalid (422), as Kubernetes says it: the kind, the
    /// object and one cause per field (`Status.details.causes`).
    #[error(
        "{} {name:?} is invalid: {}",
        qualified_kind(kind, group),
        joined(causes)
    )]
    InvalidObject {
        /// Kind (`Deployment`).
        kind: String,
        /// API group (`apps`, empty for the core group).
        group: String,
        /// Object name.
        name: String,
        /// What is wrong, field by field.
        causes: Vec<FieldCause>,
    },
    /// A server-side apply would change fields other managers own (409):
    /// one cause per field, naming its manager.
    #[error("{message}")]
    ApplyConflict {
        /// Kubernetes' message (`Apply failed with 1 conflict: ...`).
        message: String,
        /// The conflicting fields.
        causes: Vec<FieldCause>,
    },
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A request body or an object is larger than the API takes (413).
    #[error("{0}")]
    TooLarge(String),
    /// A bug met while handling a request (500): a handler panicked.
    #[error("{0}")]
    Internal(String),
    /// The path exists but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body's Content-Type is not one this path takes (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Missing or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The caller may not do this (an admission hook's denial, ...).
    #[error(transparent)]
    Forbidden(#[from] c4m_plugin::Denied),
    /// The API server's own rules forbid this to anyone (403), as
    /// Kubernetes' NamespaceLifecycle admission does: content for a
    /// namespace being deleted, the deletion of `default`.
    #[error("{plural} {name:?} is forbidden: {reason}")]
    ForbiddenObject {
        /// The kind's plural (`pods`).
        plural: String,
        /// The object's name.
        name: String,
        /// Why (`unable to create new content in namespace x because it
        /// is being terminated`).
        reason: String,
    },
    /// A watch asked for history that was compacted (410).
    #[error("{0}")]
    Gone(String),
    /// A node's agent could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
    /// A node's agent did not answer (503, as [`Error::Unavailable`]).
    #[error("cannot reach the agent of node {node}: {source}")]
    AgentUnreachable {
        /// The node.
        node: String,
        /// The HTTP or WebSocket client's error.
        #[source]
        source: c4m_core::BoxError,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[source] c4m_state::Error),
    /// A stored object could not be decoded.
    #[error("stored object {key} is corrupt: {source}")]
    Corrupt {
        /// Store key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A listener could not be bound or served.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A range Services take addresses from has none left (500, as
    /// kube-apiserver answers).
    #[error("{0}")]
    RangeFull(String),
    /// A controller could not reconcile some of the objects of a batch
    /// (each failure was logged where it happened); the batch is retried.
    #[error("{failed} {what} could not be reconciled")]
    Reconcile {
        /// How many failed.
        failed: usize,
        /// What they are (`workloads`).
        what: &'static str,
    },
    /// The DNS server failed.
    #[error(transparent)]
    Dns(#[from] c4m_mesh::DnsError),
    /// A body could not be read or written as Kubernetes' protobuf.
    #[error(transparent)]
    Protobuf(#[from] crate::protobuf::ProtobufError),
}

/// One reason an object is invalid (a Kubernetes `StatusCause`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: String,
    /// What is wrong with the field (`Invalid value: -1: must be ...`).
    pub message: String,
    /// The field's path (`spec.replicas`); empty for the whole object.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl std::fmt::Display for FieldCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// `Deployment.apps`, or `Pod` for the core group, as Kubernetes names a
/// kind in messages.
fn qualified_kind(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// One cause as it is, several as `[a, b]` (Kubernetes' aggregate).
fn joined(causes: &[FieldCause]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl From<c4m_state::Error> for Error {
    fn from(error: c4m_state::Error) -> Self {
        if error.is_conflict() {
            Error::Conflict(error.to_string())
        } else if error.is_compacted() {
            Error::Gone(error.to_string())
        } else {
            Error::Store(error)
        }
    }
}

impl Error {
    /// The agent of `node` did not answer, for `source`.
    pub(crate) fn agent_unreachable(
        node: impl Into<String>,
        source: impl Into<c4m_core::BoxError>,
    ) -> Self {
        Error::AgentUnreachable {
            node: node.into(),
            source: source.into(),
        }
    }

    /// HTTP status code and Kubernetes reason.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            Error::NotFound { .. } => (404, "NotFound"),
            Error::AlreadyExists { .. } => (409, "AlreadyExists"),
            Error::Conflict(_) | Error::ApplyConflict { .. } => (409, "Conflict"),
            Error::Invalid(_) | Error::InvalidObject { .. } => (422, "Invalid"),
            Error::BadRequest(_) => (400, "BadRequest"),
            Error::TooLarge(_) => (413, "RequestEntityTooLarge"),
            Error::MethodNotAllowed(_) => (405, "MethodNotAllowed"),
            Error::UnsupportedMediaType(_) => (415, "UnsupportedMediaType"),
            Error::Unauthorized(_) => (401, "Unauthorized"),
            Error::Forbidden(_) | Error::ForbiddenObject { .. } => (403, "Forbidden"),
            Error::Gone(_) => (410, "Expired"),
            Error::Unavailable(_) | Error::AgentUnreachable { .. } => (503, "ServiceUnavailable"),
            Error::Protobuf(error) => error.http_status(),
            Error::Store(_)
            | Error::Corrupt { .. }
            | Error::Io { .. }
            | Error::Dns(_)
            | Error::RangeFull(_)
            | Error::Internal(_)
            | Error::Reconcile { .. } => (500, "InternalError"),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
