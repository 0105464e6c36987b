//! The error type of `c4m-core`.

use std::path::PathBuf;

/// Errors from the resource model, manifests and drivers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest document is invalid; nothing from it may be applied.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),

    /// A resource quantity (`500m`, `1Gi`) could not be parsed.
    #[error("invalid quantity {value:?}: {reason}")]
    Quantity {
        /// The text as written.
        value: String,
        /// Why it is invalid.
        reason: String,
    },

    /// An object is valid YAML/JSON but not a valid c4m object.
    #[error("{0}")]
    Invalid(String),

    /// No container with this id is known to the driver.
    #[error("container {0} not found")]
    ContainerNotFound(String),

    /// A driver operation failed.
    #[error("container {id}: {message}")]
    Runtime {
        /// Container id.
        id: String,
        /// What failed.
        message: String,
    },

    /// A container daemon (dockerd, ...) does not answer on its socket.
    #[error("the {daemon} daemon at {socket} is unreachable: {message}")]
    DaemonUnreachable {
        /// Which daemon.
        daemon: &'static str,
        /// The socket it was asked on.
        socket: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The driver does not do this.
    #[error("the {driver} driver does not support {operation}")]
    Unsupported {
        /// The driver's name.
        driver: String,
        /// What was asked.
        operation: &'static str,
    },

    /// A cgroup operation failed.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An image store operation failed (bad archive, corrupt blob, ...).
    #[error("{0}")]
    Image(String),

    /// No image in the store matches the reference.
    #[error("image {0} not found")]
    ImageNotFound(String),

    /// A health check could not run or failed.
    #[error("probe: {0}")]
    Probe(String),

    /// Setting up or tearing down instance networking failed.
    #[error("network {what}: {message}")]
    Network {
        /// What was being set up (a VPC, an instance, a file).
        what: String,
        /// What failed.
        message: String,
    },

    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
