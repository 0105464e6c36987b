//! The node's image store: content-addressed blobs, images by name and by
//! digest, and layers unpacked once per diff-id for overlayfs; OCI layouts
//! and docker archives imported, registries pulled (feature `pull`),
//! unused content collected.
//!
//! Layout under the store's root:
//! - `blobs/sha256/<hex>`: manifests, configs and layer archives, each
//!   verified against its digest before it gets its name;
//! - `layers/sha256/<diff-id hex>/`: a layer unpacked (whiteouts already in
//!   overlayfs form), shared by every image that has it; an overlay lower dir;
//! - `images.json`: the images (manifest digest, names, config, layers);
//! - `leases/<container>.json`: the layers a container's overlay mounts, which
//!   garbage collection keeps even after their image is removed;
//! - `tmp/`: work in progress, renamed into place when complete.
//!
//! The store is synchronous (file system work); async callers run it on a
//! blocking thread.
//!
//! ```no_run
//! # fn demo() -> c4m_image::Result<()> {
//! let store = c4m_image::ImageStore::open("/var/lib/c4m/images")?;
//! for image in store.import(std::path::Path::new("busybox.tar"), Some("bb:1"))? {
//!     println!("{} has {} layers", image.names[0], image.layers.len());
//! }
//! # Ok(())
//! # }
//! ```

mod blob;
mod error;
mod import;
mod layer;
mod layout;
#[cfg(feature = "pull")]
mod pull;
mod store;
#[cfg(test)]
mod tests;

pub use c4m_core::{GcReport, Image, Layer};
pub use error::{Error, Result};
pub use layout::{
    busybox_image_tar, tar_directory, write_busybox_image, write_busybox_rootfs, write_oci_layout,
};
#[cfg(feature = "pull")]
pub use pull::{RegistryCredentials, pull};
pub use store::{ImageStore, SHORT_ID_LEN};
