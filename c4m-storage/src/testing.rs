//! Helpers for root tests and benchmarks of the local backend (feature
//! `test-util`): a workload that passes every fail point, a leak count, and a
//! guard that removes every mount and loop device a test made, also when the
//! test fails.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::local::LocalBackend;
use crate::sys;
use crate::types::{ProvisionRequest, SnapshotId, VolumeId};

#[cfg(feature = "nfs")]
mod ganesha;
#[cfg(feature = "nfs")]
pub use ganesha::Ganesha;

/// The programs the local backend runs (util-linux, e2fsprogs, coreutils).
pub const LOCAL_PROGRAMS: &[&str] = &[
    "losetup",
    "mkfs.ext4",
    "e2fsck",
    "resize2fs",
    "fsfreeze",
    "cp",
];

/// Unpublishes, unstages and deletes every volume of `backend`.
pub async fn tear_down_all(backend: &dyn VolumeBackend) -> Result<()> {
    for volume in backend.list().await? {
        for target in &volume.published_at {
            backend.unpublish(&volume.id, target).await?;
        }
        if let Some(staging) = &volume.staged_at {
            backend.unstage(&volume.id, staging).await?;
        }
        backend.delete(&volume.id).await?;
    }
    Ok(())
}

/// What the workload writes (and fsyncs) into its first volume.
pub const WORKLOAD_DATA: &[u8] = b"fsynced before the crash\n";
/// The fail points the workload reaches after it has fsynced [`WORKLOAD_DATA`].
pub const FAIL_POINTS_AFTER_WRITE: &[&str] = &[
    "snapshot.frozen",
    "snapshot.copied",
    "restore.copied",
    "unmount.unpublished",
    "unmount.unstaged",
    "unmount.detached",
    "expand.grown",
    "delete.marked",
];
/// The size of the workload's volumes.
pub const WORKLOAD_VOLUME_BYTES: u64 = 32 << 20;

/// Paths the workload uses under `root`.
#[derive(Clone, Debug)]
pub struct WorkloadPaths {
    /// The first volume's staging path.
    pub staging: PathBuf,
    /// Its published (bind-mounted) path.
    pub target: PathBuf,
    /// The file holding [`WORKLOAD_DATA`], inside the staging path.
    pub data_file: PathBuf,
}

impl WorkloadPaths {
    /// The paths under `root`.
    pub fn new(root: &Path) -> Self {
        let staging = root.join("stage");
        Self {
            data_file: staging.join("data"),
            target: root.join("pub"),
            staging,
        }
    }
}

/// The workload's ids: volume `v1`, its snapshot `s1`, and `v2` restored from it.
pub fn workload_ids() -> (VolumeId, SnapshotId, VolumeId) {
    let id = |s: &str| VolumeId::new(s).unwrap_or_else(|e| unreachable!("constant id {s}: {e}"));
    let snapshot = SnapshotId::new("s1").unwrap_or_else(|e| unreachable!("constant id s1: {e}"));
    (id("v1"), snapshot, id("v2"))
}

/// Provisions, stages, publishes, writes and fsyncs, snapshots, restores,
/// unpublishes, unstages, expands and deletes: every fail point in
/// [`crate::FAIL_POINTS`] is on its way, in that order.
pub async fn every_step_workload(backend: &LocalBackend, root: &Path) -> Result<()> {
    let (v1, s1, v2) = workload_ids();
    let paths = WorkloadPaths::new(root);
    backend
        .provision(&ProvisionRequest::new(v1.clone(), WORKLOAD_VOLUME_BYTES))
        .await?;
    backend.stage(&v1, &paths.staging).await?;
    backend
        .publish(&v1, &paths.staging, &paths.target, false)
        .await?;
    let mut file = std::fs::File::create(&paths.data_file)
        .map_err(|e| Error::io("create", &paths.data_file, e))?;
    file.write_all(WORKLOAD_DATA)
        .map_err(|e| Error::io("write", &paths.data_file, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync", &paths.data_file, e))?;
    drop(file);
    backend.snapshot(&v1, &s1).await?;
    backend
        .restore(
            &s1,
            &ProvisionRequest::new(v2.clone(), WORKLOAD_VOLUME_BYTES),
        )
        .await?;
    backend.unpublish(&v1, &paths.target).await?;
    backend.unstage(&v1, &paths.staging).await?;
    backend.expand(&v1, WORKLOAD_VOLUME_BYTES * 2).await?;
    backend.delete(&v2).await?;
    backend.delete(&v1).await?;
    backend.delete_snapshot(&s1).await
}

/// What a pool leaked: loop devices backed by its files and mounts of them or
/// under `root`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaks {
    /// Loop devices whose backing file is in the pool (counted by backing file).
    pub loops: Vec<String>,
    /// Mount points under `root` or of the pool's loop devices.
    pub mounts: Vec<PathBuf>,
}

impl Leaks {
    /// True when nothing leaked.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty() && self.mounts.is_empty()
    }
}

/// Every loop device backed by a file in `pool` (`losetup -j` for each image,
/// plus `losetup --list` for images already deleted) and every mount under
/// `root` or of those devices.
pub async fn leaks(pool: &Path, root: &Path) -> Result<Leaks> {
    let pool = std::fs::canonicalize(pool).unwrap_or_else(|_| pool.to_path_buf());
    let mut loops = Vec::new();
    for dir in ["images", "snapshots"] {
        if let Ok(entries) = std::fs::read_dir(pool.join(dir)) {
            for entry in entries.flatten() {
                loops.extend(sys::loops_of(&entry.path()).await?);
            }
        }
    }
    for (device, file) in sys::all_loops().await? {
        if file.starts_with(&pool) && !loops.contains(&device) {
            loops.push(device);
        }
    }
    let devices: Vec<_> = loops
        .iter()
        .filter_map(|d| sys::device_number(d).ok())
        .collect();
    let root = sys::absolute(root);
    let mounts = sys::mounts()?
        .into_iter()
        .filter(|m| {
            devices.contains(&m.device)
                || m.mount_point.starts_with(&root)
                || m.mount_point.starts_with(&pool)
        })
        .map(|m| m.mount_point)
        .collect();
    Ok(Leaks {
        loops: loops.iter().map(|d| d.display().to_string()).collect(),
        mounts,
    })
}

/// Removes, when dropped, every mount under its directories and every loop
/// device backed by a file in them, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct CleanupGuard {
    dirs: Vec<PathBuf>,
}

impl CleanupGuard {
    /// Guards `dirs` (a pool and the directories volumes are mounted under).
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            dirs: dirs
                .into_iter()
                .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
                .collect(),
        }
    }

    /// Unmounts and detaches everything now.
    pub fn clean(&self) {
        // A crashed snapshot may have left a filesystem frozen; thaw first.
        if let Ok(mounts) = sys::mounts() {
            for mount in mounts
                .iter()
                .rev()
                .filter(|m| self.dirs.iter().any(|d| m.mount_point.starts_with(d)))
            {
                let _ = std::process::Command::new("fsfreeze")
                    .arg("-u")
                    .arg(&mount.mount_point)
                    .output();
                if nix::mount::umount2(&mount.mount_point, nix::mount::MntFlags::empty()).is_err() {
                    let _ =
                        nix::mount::umount2(&mount.mount_point, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        if let Ok(out) = std::process::Command::new("losetup")
            .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((device, file)) = line.trim().split_once(char::is_whitespace)
                    && self
                        .dirs
                        .iter()
                        .any(|d| Path::new(file.trim()).starts_with(d))
                {
                    let _ = std::process::Command::new("losetup")
                        .arg("-d")
                        .arg(device)
                        .output();
                }
            }
        }
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Fails with a message naming what is missing unless this process is root
/// and every program in `programs` is on the PATH.
pub fn require_root_and(programs: &[&str]) -> std::result::Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("this test needs root (loop devices and mounts)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !std::env::split_paths(&path).any(|dir| dir.join(p).is_file()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing programs: {} (see scripts/test.sh for the Debian packages)",
            missing.join(", ")
        ))
    }
}
