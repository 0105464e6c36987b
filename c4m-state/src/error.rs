//! The crate's single error type.

use crate::types::Precondition;

/// A boxed error of what failed underneath (a thread, a task), kept as the cause.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A precondition of a put or delete did not hold; nothing in the transaction was written.
    /// Callers map this to HTTP 409 Conflict.
    #[error("{}", conflict_message(key, expected, *actual))]
    Conflict {
        /// The key whose precondition failed.
        key: String,
        /// The precondition the caller asked for.
        expected: Precondition,
        /// The key's actual `mod_revision`, or `None` if the key does not exist.
        actual: Option<i64>,
    },
    /// A watch asked for history that compaction has already discarded.
    /// Callers map this to HTTP 410 Gone and re-list.
    #[error("revision {requested} has been compacted; oldest available is {oldest}")]
    Compacted {
        /// The `after_revision` the watch asked for.
        requested: i64,
        /// The smallest `after_revision` a watch may currently start from.
        oldest: i64,
    },
    /// A watcher fell too far behind the live event stream; it must re-list and watch again.
    /// [`crate::RedbStore`] catches slow watchers up from history instead; other backends
    /// may still end a watch with it.
    #[error("watch fell behind the event stream and was closed; re-list and watch again")]
    WatchLagged,
    /// The request is malformed (empty key, duplicate key in one transaction, negative revision).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// Data read from disk could not be decoded.
    #[error("corrupt data in store: {0}")]
    Corrupt(String),
    /// The underlying redb database failed.
    #[cfg(feature = "redb")]
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    /// A background task or thread failed unexpectedly.
    #[error("internal error: {context}: {source}")]
    Internal {
        /// What was being done (`read task failed`).
        context: &'static str,
        /// Why it failed (a join error, an I/O error, a failed group commit's message).
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A failed precondition (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// History the caller asked for is gone (HTTP 410): re-list.
    pub fn is_compacted(&self) -> bool {
        matches!(self, Error::Compacted { .. })
    }

    /// A background task or thread that failed while doing `context`.
    pub(crate) fn internal(context: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Internal {
            context,
            source: source.into(),
        }
    }

    /// Wraps any redb error (they all convert into `redb::Error`).
    #[cfg(feature = "redb")]
    pub(crate) fn storage(err: impl Into<redb::Error>) -> Self {
        Error::Storage(err.into())
    }
}

fn conflict_message(key: &str, expected: &Precondition, actual: Option<i64>) -> String {
    match (expected, actual) {
        (Precondition::Absent, Some(found)) => {
            format!("key {key} already exists at revision {found}")
        }
        (Precondition::ModRevision(want), Some(found)) => {
            format!("key {key} changed: expected revision {want}, found {found}")
        }
        (Precondition::ModRevision(want), None) => {
            format!("key {key} not found: expected revision {want}")
        }
        // Unreachable in practice (these preconditions cannot fail), but keep a sane message.
        (_, found) => format!("key {key} precondition {expected:?} failed (found {found:?})"),
    }
}
