//! Helpers for root tests and benchmarks of the local backend (feature
//! `test-util`): a workload that passes every fail point, a leak count, a
//! guard that removes every mount and loop device a test made, also when the
//! test fails, and the seeded generator random crash runs draw from.

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

/// xorshift64*: a small generator, enough for crash runs to pick fail
/// points and workloads reproducibly from a seed they print (never for
/// anything secret).
#[derive(Clone, Debug)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// The generator of `seed` (0, xorshift's fixed point, is taken as 1).
    pub fn new(seed: u64) -> Self {
        Self { state: seed.max(1) }
    }

    /// A seed from the clock, for a run that prints it (and can be run
    /// again with it).
    pub fn seed_from_clock() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// True once in `n` times on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One of `items`, None when there is none.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let index = self.below(items.len() as u64) as usize;
        items.get(index)
    }

    /// Fills `bytes` with incompressible data.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn a_seed_gives_the_same_numbers_every_run() {
        // xorshift64*'s published first output for seed 1: a run printed
        // with a seed must draw the same again after a change here.
        assert_eq!(XorShift::new(1).next_u64(), 0x47e4_ce4b_896c_dd1d);
        assert_eq!(XorShift::new(0).next_u64(), XorShift::new(1).next_u64());
        let draw = |seed| {
            let mut rng = XorShift::new(seed);
            (0..100).map(|_| rng.below(14)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        assert!(draw(42).iter().all(|n| *n < 14));
    }

    #[test]
    fn picks_and_fills_stay_in_bounds() {
        let mut rng = XorShift::new(7);
        assert_eq!(rng.pick::<u8>(&[]), None);
        assert_eq!(rng.below(0), 0);
        let items = ["a", "b", "c"];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.insert(*rng.pick(&items).unwrap());
        }
        assert_eq!(seen.len(), 3, "every item is picked sometimes");
        let mut bytes = [0u8; 13];
        rng.fill(&mut bytes);
        assert!(bytes.iter().any(|b| *b != 0));
    }
}
