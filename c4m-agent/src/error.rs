//! The error type of `c4m-agent`.

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane could not be reached or refused a call.
    #[error("control plane {endpoint}: {message}")]
    ControlPlane {
        /// The gRPC endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The control plane's endpoint is not a URL a channel can use.
    #[error("control plane {endpoint}: invalid endpoint: {source}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why it is unusable.
        #[source]
        source: c4m_core::BoxError,
    },
    /// A driver the configuration asks for could not be started.
    #[error("invalid agent configuration: {what}: {source}")]
    Driver {
        /// The driver and the option that asks for it
        /// (`the cri driver (--cri-socket)`).
        what: &'static str,
        /// Why it could not start.
        #[source]
        source: c4m_core::Error,
    },
    /// A driver failed.
    #[error(transparent)]
    Runtime(#[from] c4m_core::Error),
    /// The node's image store failed.
    #[error(transparent)]
    Image(#[from] c4m_image::Error),
    /// The node's instance network failed.
    #[error(transparent)]
    Network(#[from] c4m_mesh::Error),
    /// A listener could not be bound or served.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid agent configuration: {0}")]
    Config(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
