//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong in a storage operation.
///
/// Callers branch on [`Error::InUse`], [`Error::OfflineExpansionRequired`],
/// [`Error::AlreadyExists`], [`Error::NotFound`] and [`Error::InvalidArgument`];
/// the rest carry their cause for the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was malformed; nothing was changed.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument (`volume id`, `size`, `path`, ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The volume or snapshot does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `volume` or `snapshot`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A volume or snapshot with this id exists with different properties.
    #[error("{kind} {id} already exists with {existing}, not {requested}")]
    AlreadyExists {
        /// `volume` or `snapshot`.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What the existing one has.
        existing: String,
        /// What was asked for.
        requested: String,
    },
    /// The volume is mounted or published and cannot be deleted or unstaged.
    #[error("volume {id} is in use at {}", .paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    InUse {
        /// The volume.
        id: String,
        /// Where it is mounted.
        paths: Vec<PathBuf>,
    },
    /// The filesystem could not be grown while mounted (on this host the kernel
    /// refuses online ext4 resize without CAP_SYS_RESOURCE): unmount the volume
    /// (restart its users) and expand again.
    #[error("volume {id} must be unmounted to grow to {size_bytes} bytes: {reason}")]
    OfflineExpansionRequired {
        /// The volume.
        id: String,
        /// The size asked for.
        size_bytes: u64,
        /// What the resize tool said.
        reason: String,
    },
    /// The pool has too little free space.
    #[error("not enough capacity: {requested} bytes requested, {available} available")]
    InsufficientCapacity {
        /// Bytes asked for.
        requested: u64,
        /// Bytes free.
        available: u64,
    },
    /// The backend cannot do this at all.
    #[error("{backend} backend does not support {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        what: &'static str,
    },
    /// An external program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An external program failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A mount or unmount system call failed.
    #[error("{op} {}", .path.display())]
    Mount {
        /// `mount`, `bind mount`, `unmount`, ...
        op: &'static str,
        /// The mount point.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// An on-disk record could not be read or written.
    #[error("record {}", .path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The NFS server answered a call with an error status.
    #[error("nfs {op} {path}: {status}")]
    NfsStatus {
        /// The NFS procedure.
        op: &'static str,
        /// The path on the export.
        path: String,
        /// The server's status (`NFS3ERR_...`).
        status: String,
    },
    /// An NFS call did not get an answer (connection, RPC or mount protocol).
    #[error("nfs {op} {path}")]
    NfsTransport {
        /// The NFS procedure.
        op: &'static str,
        /// The path on the export.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A plugin, remote driver or server failed.
    #[error("{driver}")]
    Driver {
        /// Which driver or server.
        driver: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            reason: reason.into(),
        }
    }
}
