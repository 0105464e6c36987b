//! The error type of `c4m-core`: the model's and the runtime seam's.

use std::path::PathBuf;

/// A boxed error from a layer below (an image store, cgroups, a daemon's
/// client), kept as the cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from the resource model, manifests and the runtime seam
/// ([`ContainerRuntime`](crate::ContainerRuntime) drivers).
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

    /// A field of an object holds a value that is not valid there.
    #[error("{field}: {source}")]
    InvalidField {
        /// The field's path (`containers[1].resources.limits.memory`).
        field: String,
        /// Why its value is invalid ([`Error::Quantity`], ...).
        #[source]
        source: Box<Error>,
    },

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

    /// As [`Error::Runtime`], with the error of the layer below that failed
    /// it (a runtime binary that would not run, a mount, a daemon's answer,
    /// a decoder).
    #[error("container {id}: {context}: {source}")]
    Container {
        /// Container id.
        id: String,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// A container daemon (dockerd, ...) does not answer on its socket.
    #[error("the {daemon} daemon at {socket} is unreachable: {source}")]
    DaemonUnreachable {
        /// Which daemon.
        daemon: &'static str,
        /// The socket it was asked on.
        socket: PathBuf,
        /// What went wrong (a connection's error, a timeout).
        #[source]
        source: BoxError,
    },

    /// The driver does not do this.
    #[error("the {driver} driver does not support {operation}")]
    Unsupported {
        /// The driver's name.
        driver: String,
        /// What was asked.
        operation: &'static str,
    },

    /// A container's image is not in the node's store and could not be
    /// pulled, or could not be read.
    #[error("image {reference}: {source}")]
    Image {
        /// The image as the container names it.
        reference: String,
        /// Why (not found, a registry's refusal, a corrupt layer, ...).
        #[source]
        source: BoxError,
    },

    /// A container's image is not on the node and its `imagePullPolicy`
    /// is `Never` (the kubelet's `ErrImageNeverPull`).
    #[error("Container image {reference:?} is not present with pull policy of Never")]
    ImageNeverPull {
        /// The image as the container names it.
        reference: String,
    },

    /// A layer under the driver failed (cgroups, a daemon's API, ...).
    #[error("{context}: {source}")]
    Driver {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
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

    /// Wraps an error of the layer below that failed an operation on
    /// container `id`, with what was being done.
    pub fn container(
        id: impl Into<String>,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Container {
            id: id.into(),
            context: context.into(),
            source: source.into(),
        }
    }

    /// Daemon `daemon` did not answer on `socket`, for `source`.
    pub fn daemon_unreachable(
        daemon: &'static str,
        socket: impl Into<PathBuf>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::DaemonUnreachable {
            daemon,
            socket: socket.into(),
            source: source.into(),
        }
    }

    /// Wraps an error of a layer under a driver with what was being done.
    pub fn driver(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Driver {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
