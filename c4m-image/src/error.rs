//! The error type of `c4m-image`.

use std::path::PathBuf;

use c4m_core::{BoxError, InvalidReference};

/// Why an image store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No image in the store matches the reference.
    #[error("image {0} not found")]
    NotFound(String),

    /// An image reference does not parse.
    #[error(transparent)]
    Reference(#[from] InvalidReference),

    /// What was read (an archive, a manifest, a layer, a registry's answer,
    /// a caller's argument) is not what it must be.
    #[error("{0}")]
    Invalid(String),

    /// As [`Error::Invalid`], with the error that showed it.
    #[error("{what}: {source}")]
    Malformed {
        /// What was being read or built.
        what: String,
        /// The decoder's, builder's or registry's error.
        #[source]
        source: BoxError,
    },

    /// A layer could not be unpacked.
    #[error("layer {diff_id}: {source}")]
    Layer {
        /// The layer's diff-id (the digest of its uncompressed tar).
        diff_id: String,
        /// Why (a bad tar, an entry leaving the layer, a write that failed).
        #[source]
        source: Box<Error>,
    },

    /// An OCI layout or archive could not be imported.
    #[error("import {path}: {source}")]
    Import {
        /// The layout or archive.
        path: PathBuf,
        /// Why (it cannot be read, is no image, holds a bad manifest, ...).
        #[source]
        source: BoxError,
    },

    /// An image could not be pulled.
    #[error("pull {reference}: {source}")]
    Pull {
        /// The image as asked for.
        reference: String,
        /// Why (the registry's error, content that does not verify, ...).
        #[source]
        source: Box<Error>,
    },

    /// A registry could not be reached or refused a request.
    #[error("{what}: {source}")]
    Registry {
        /// What was asked (`manifest`, `blob sha256:...`).
        what: String,
        /// The registry client's error.
        #[source]
        source: BoxError,
    },

    /// A blocking task of the store panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        /// What the task was doing (`store task failed`).
        what: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
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
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// What a registry was asked, and the registry client's error.
    #[cfg(feature = "pull")]
    pub(crate) fn registry(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Registry {
            what: what.into(),
            source: source.into(),
        }
    }

    /// What was being read or built, and the error that showed it wrong.
    pub(crate) fn malformed(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Malformed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// A container's image problem, as the runtime seam reports it.
impl From<Error> for c4m_core::Error {
    fn from(error: Error) -> Self {
        let reference = match &error {
            Error::NotFound(reference) => reference.clone(),
            Error::Reference(invalid) => invalid.text.clone(),
            Error::Pull { reference, .. } => reference.clone(),
            _ => String::new(),
        };
        c4m_core::Error::Image {
            reference,
            source: Box::new(error),
        }
    }
}
