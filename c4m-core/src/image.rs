//! What a node's image store holds, as the agent's API and the CLI
//! exchange it (the store itself is `c4m-image`).

use serde::{Deserialize, Serialize};

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Digest of its manifest: the image's identity.
    pub digest: String,
    /// Normalized `registry/repository:tag` names pointing at it (a name
    /// points at one image at a time).
    pub names: Vec<String>,
    /// Digest of its configuration blob.
    pub config_digest: String,
    /// Its layers, lowest first.
    pub layers: Vec<Layer>,
    /// Total size of its blobs in bytes (compressed layers).
    pub size: u64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the (possibly compressed) blob.
    pub digest: String,
    /// Digest of the uncompressed tar: the unpacked directory's name.
    pub diff_id: String,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Unpacked layers removed.
    pub layers: usize,
}
