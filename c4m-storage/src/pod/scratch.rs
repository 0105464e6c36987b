//! Sized scratch space: `emptyDir` on disk or in memory, and a container's
//! writable area (`--disk`, ephemeral-storage).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::MsFlags;

use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::local::LocalBackend;
use crate::sys;
use crate::types::{ProvisionRequest, VolumeId};

/// Disk-backed sized directories on a [`LocalBackend`]: each one is a loop
/// ext4 volume mounted straight at its directory, so its size is exact (a write
/// past it fails with ENOSPC; nothing is evicted after the fact). They share
/// the backend's records, so [`VolumeBackend::reconcile`] repairs them too.
#[derive(Clone, Debug)]
pub struct ScratchDirs {
    local: Arc<LocalBackend>,
}

/// A container's writable area: overlayfs `upperdir` and `workdir` on one
/// sized filesystem, so the container's writes stop at its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WritableArea {
    /// Where the area is mounted.
    pub root: PathBuf,
    /// The overlay upper directory.
    pub upper: PathBuf,
    /// The overlay work directory.
    pub work: PathBuf,
}

impl ScratchDirs {
    /// Sized directories on `local`.
    pub fn new(local: Arc<LocalBackend>) -> Self {
        Self { local }
    }

    /// An `emptyDir` with `sizeLimit` = `size_bytes`, mounted at `dir`
    /// (made if missing). Calling it again for the same id and directory succeeds.
    pub async fn create_dir(&self, id: &VolumeId, size_bytes: u64, dir: &Path) -> Result<()> {
        self.local
            .provision(&ProvisionRequest::new(id.clone(), size_bytes))
            .await?;
        self.local.stage(id, dir).await
    }

    /// Unmounts and deletes a directory made by [`create_dir`](Self::create_dir)
    /// or [`create_writable_area`](Self::create_writable_area); a missing one succeeds.
    pub async fn remove_dir(&self, id: &VolumeId, dir: &Path) -> Result<()> {
        self.local.unstage(id, dir).await?;
        self.local.delete(id).await?;
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove directory", dir, e)),
        }
    }

    /// A writable area of `size_bytes` mounted at `root`, with `upper` and
    /// `work` directories for an overlay mount.
    pub async fn create_writable_area(
        &self,
        id: &VolumeId,
        size_bytes: u64,
        root: &Path,
    ) -> Result<WritableArea> {
        self.create_dir(id, size_bytes, root).await?;
        let area = WritableArea {
            root: root.to_path_buf(),
            upper: root.join("upper"),
            work: root.join("work"),
        };
        for dir in [&area.upper, &area.work] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create overlay directory", dir, e))?;
        }
        Ok(area)
    }
}

/// Mounts a tmpfs of `size_bytes` at `dir` (an `emptyDir` with `medium:
/// Memory`); the kernel enforces the size. An existing tmpfs there is left as it is.
pub fn mount_memory_dir(dir: &Path, size_bytes: u64, mode: u32) -> Result<()> {
    if size_bytes == 0 {
        return Err(Error::invalid(
            "size",
            "a memory directory needs a size limit above 0",
        ));
    }
    if let Some(existing) = sys::mount_at(dir)? {
        if existing.fs_type == "tmpfs" {
            return Ok(());
        }
        return Err(Error::invalid(
            "path",
            format!("{} already has {} mounted", dir.display(), existing.fs_type),
        ));
    }
    sys::ensure_dir(dir)?;
    let options = format!("size={size_bytes},mode={mode:o}");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    sys::mount(Path::new("tmpfs"), dir, "tmpfs", flags, Some(&options))
}

/// Unmounts a memory directory; one not mounted succeeds.
pub fn unmount_memory_dir(dir: &Path) -> Result<()> {
    sys::unmount(dir).map(drop)
}
