//! The error type of `c4m-mesh`.

use std::path::PathBuf;

use c4m_core::BoxError;

/// Why setting up, tearing down or serving the instance network failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting up or tearing down instance networking failed.
    #[error("network {what}: {message}")]
    Network {
        /// What was being set up (a VPC, an instance, a file).
        what: String,
        /// What failed.
        message: String,
    },

    /// As [`Error::Network`], with the error of the layer below (netlink,
    /// nftables, a decoder).
    #[error("network {what}: {source}")]
    Failed {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// An instance or a node's settings do not allow attaching it (no
    /// slice yet, a VPC without its CIDR, a bad annotation).
    #[error("{0}")]
    Config(String),

    /// A value is not what it must be (a CIDR, a slice index, a name).
    #[error("{0}")]
    Invalid(String),

    /// A CNI network configuration list is invalid.
    #[error("cni config {file}: {field}: {message}{}", caused_by(.source))]
    CniConfig {
        /// The configuration file.
        file: PathBuf,
        /// The field at fault (`plugins[1].type`), or `-` for the file as a whole.
        field: String,
        /// What is wrong with it.
        message: String,
        /// The decoder's error, when one showed it.
        #[source]
        source: Option<BoxError>,
    },

    /// A CNI plugin failed: its error object (CNI spec 1.0.0), or how it
    /// ended when it printed none.
    #[error("cni plugin {plugin} {command} for {container}: {message}{}", caused_by(.source))]
    CniPlugin {
        /// The plugin (its `type`).
        plugin: String,
        /// `ADD`, `DEL`, `CHECK` or `VERSION`.
        command: &'static str,
        /// The container the command was for.
        container: String,
        /// The error object's `code` (1-99 are the spec's, 100+ the
        /// plugin's own); None when the plugin printed no error object.
        code: Option<u32>,
        /// The error object's `msg` and `details` with its code, or the
        /// plugin's exit status and standard error, or what c4m was doing
        /// when running it failed.
        message: String,
        /// Why running it failed (spawning, waiting, decoding what it
        /// printed); None when the plugin itself reported the failure.
        #[source]
        source: Option<BoxError>,
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

/// `: cause` after a message, when there is a cause.
fn caused_by(source: &Option<BoxError>) -> String {
    source
        .as_ref()
        .map(|source| format!(": {source}"))
        .unwrap_or_default()
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

    /// What was being done, and the error of the layer below that failed it.
    pub fn failed(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// A network failure as the runtime seam reports it.
impl From<Error> for c4m_core::Error {
    fn from(error: Error) -> Self {
        c4m_core::Error::driver("instance network", error)
    }
}
