//! c4m's node-side storage: the volumes an agent provisions, mounts and
//! tears down on its node.
//!
//! - [`VolumeBackend`] is the seam (a plugin can implement it too), with the
//!   data types in [`types`](crate::VolumeId) and one [`Error`] enum.
//! - [`LocalBackend`]: one sparse ext4 image per volume on a loop device; the
//!   size is a hard limit; snapshots are sparse copies.
//! - `NfsBackend` (feature `nfs`): a directory per volume on an NFS export,
//!   mounted through FUSE by a userspace NFSv3 client where the host has no
//!   kernel NFS client.
//! - [`pod`]: `emptyDir` (disk with an exact `sizeLimit`, or memory), projected
//!   files written atomically, hostPath, a container's sized writable area.
//! - Crash safety: every operation keeps an atomically written record and
//!   [`VolumeBackend::reconcile`] repairs the node on start; [`FAIL_POINTS`]
//!   names the step boundaries a test can stop a process at.
//! - `csi` (feature `csi`): the local backend served as a CSI driver on a unix
//!   socket, and a CSI client that drives any driver in the spec's order.
//! - [`FakeBackend`] (feature `test-util`): an in-memory backend for callers' tests.
//!
//! ```no_run
//! # async fn demo() -> c4m_storage::Result<()> {
//! use c4m_storage::{LocalBackend, ProvisionRequest, VolumeBackend, VolumeId};
//!
//! // Needs root: a loop device per volume.
//! let backend = LocalBackend::open("/var/lib/c4m/volumes")?;
//! let id = VolumeId::new("cart-data")?;
//! backend.provision(&ProvisionRequest::new(id.clone(), 1 << 30)).await?;
//! let staging = std::path::Path::new("/var/lib/c4m/staging/cart-data");
//! backend.stage(&id, staging).await?;
//! // Writes past 1 GiB fail with ENOSPC: the size is a hard limit.
//! backend.publish(&id, staging, "/run/pods/cart/data".as_ref(), false).await?;
//! # Ok(())
//! # }
//! ```

mod backend;
#[cfg(feature = "csi")]
pub mod csi;
mod error;
mod failpoint;
#[cfg(any(test, feature = "test-util"))]
mod fake;
mod local;
#[cfg(feature = "nfs")]
mod nfs;
pub mod pod;
mod record;
mod sys;
#[cfg(feature = "test-util")]
pub mod testing;
mod types;

pub use backend::VolumeBackend;
pub use error::{Error, Result};
pub use failpoint::{ArmedFailPoint, FAIL_ACTION_ENV, FAIL_POINT_ENV, FAIL_POINTS, REACHED_PREFIX};
#[cfg(any(test, feature = "test-util"))]
pub use fake::FakeBackend;
pub use local::{LocalBackend, MIN_VOLUME_BYTES};
#[cfg(feature = "nfs")]
pub use nfs::{NfsBackend, NfsExport, NfsMounter};
pub use record::write_atomically;
pub use types::{
    AccessMode, Capabilities, Capacity, Expansion, Filesystem, MAX_ID_LEN, ProvisionRequest,
    ReconcileReport, Snapshot, SnapshotId, Volume, VolumeId,
};
