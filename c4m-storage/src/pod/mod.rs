//! Building blocks for a pod's own volumes: `emptyDir` (on disk with a hard
//! `sizeLimit`, or in memory), projected files (configMap, secret,
//! downwardAPI, projected) written as the kubelet's AtomicWriter does, hostPath
//! bind mounts, and a hard-limited writable area for a container's
//! ephemeral-storage limit.

mod atomic_writer;
mod host_path;
mod scratch;

pub use atomic_writer::{AtomicWriter, FileProjection, KeyToPath, project};
pub use host_path::{HostPathType, check_host_path, publish_host_path, unpublish_host_path};
pub use scratch::{ScratchDirs, WritableArea, mount_memory_dir, unmount_memory_dir};
