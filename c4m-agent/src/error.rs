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
