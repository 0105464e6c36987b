//! The error type of `c4m-image`.

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
            _ => String::new(),
        };
        c4m_core::Error::Image {
            reference,
            source: Box::new(error),
        }
    }
}
