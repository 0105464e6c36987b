//! The error type of `c4m-api`.

/// Errors talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error status.
    #[error("{message}")]
    Api {
        /// HTTP status code.
        code: u16,
        /// Kubernetes-style reason (`NotFound`, `Conflict`, `Invalid`, ...).
        reason: String,
        /// Human-readable message.
        message: String,
    },
    /// The endpoint URL is invalid.
    #[error("invalid endpoint {0:?}: expected http://HOST:PORT")]
    Endpoint(String),
    /// The request could not be sent or the response not read.
    #[error("cannot reach the control plane at {endpoint}: {source}")]
    Transport {
        /// The endpoint tried.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A WebSocket stream (exec, port-forward) could not be opened or broke.
    #[error("stream to {url}: {source}")]
    Stream {
        /// The URL streamed with.
        url: String,
        /// What went wrong (the WebSocket client's error, or why c4m
        /// refused what the server answered).
        #[source]
        source: c4m_core::BoxError,
    },
    /// The response body was not what the API promises.
    #[error("unexpected response from the control plane: {0}")]
    Decode(#[source] serde_json::Error),
    /// A protobuf response could not be read.
    #[cfg(feature = "protobuf")]
    #[error("unexpected protobuf response from the control plane: {0}")]
    Protobuf(#[source] crate::protobuf::ProtobufError),
}

impl Error {
    /// The HTTP status code, when the API answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
