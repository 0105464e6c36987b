//! The local backend: one sparse ext4 image file per volume, attached to a
//! loop device and mounted, so a volume's size is a hard limit (a write past
//! it fails with ENOSPC).
//!
//! Layout under the pool directory:
//! ```text
//! images/<volume>.img          the volume's filesystem image (sparse)
//! snapshots/<snapshot>.img     a snapshot: a sparse copy of an image
//! records/volumes/<id>.json    what the node should look like (see record.rs)
//! records/snapshots/<id>.json
//! ```
//! Every operation writes its record before its first side effect (with the
//! operation as `pending`) and again after its last, so [`LocalBackend::reconcile`]
//! can finish or roll back whatever a crash interrupted.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::failpoint::fail_point;
use crate::record::{RecordDir, sync_dir};
use crate::sys::{self, MountEntry};
use crate::types::{
    AccessMode, Capabilities, Capacity, Expansion, Filesystem, ProvisionRequest, ReconcileReport,
    Snapshot, SnapshotId, Volume, VolumeId,
};

/// The smallest volume: mkfs.ext4 needs room for its metadata and journal.
pub const MIN_VOLUME_BYTES: u64 = 8 << 20;
const BLOCK: u64 = 4096;
const RECORD_VERSION: u32 = 1;

/// Where a volume is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum VolumeState {
    Creating,
    Ready,
    Deleting,
}

/// An operation under way, written before its first side effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Pending {
    Stage { path: PathBuf },
    Unstage { path: PathBuf },
    Publish { target: PathBuf },
    Unpublish { target: PathBuf },
    Expand { size_bytes: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Publication {
    target: PathBuf,
    read_only: bool,
}

/// The on-disk record of one volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct VolumeRecord {
    version: u32,
    id: VolumeId,
    size_bytes: u64,
    access_mode: AccessMode,
    state: VolumeState,
    #[serde(default)]
    source_snapshot: Option<SnapshotId>,
    /// Declared: mounted here (set after the mount succeeded, cleared before unmounting).
    #[serde(default)]
    staged: Option<PathBuf>,
    /// Declared bind mounts, same rule.
    #[serde(default)]
    published: Vec<Publication>,
    #[serde(default)]
    pending: Option<Pending>,
}

impl VolumeRecord {
    fn volume(&self) -> Volume {
        Volume {
            id: self.id.clone(),
            size_bytes: self.size_bytes,
            access_mode: self.access_mode,
            filesystem: Filesystem::Ext4,
            source_snapshot: self.source_snapshot.clone(),
            staged_at: self.staged.clone(),
            published_at: self.published.iter().map(|p| p.target.clone()).collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SnapshotState {
    Creating,
    Ready,
}

/// The on-disk record of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotRecord {
    version: u32,
    id: SnapshotId,
    source_volume: VolumeId,
    size_bytes: u64,
    created_unix: i64,
    state: SnapshotState,
    /// The mount frozen for the copy, so a crash can thaw it.
    #[serde(default)]
    frozen: Option<PathBuf>,
}

impl SnapshotRecord {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            source_volume: self.source_volume.clone(),
            size_bytes: self.size_bytes,
            created_unix: self.created_unix,
        }
    }
}

/// The local loop+ext4 backend (see the module docs).
#[derive(Debug)]
pub struct LocalBackend {
    pool: PathBuf,
    images: PathBuf,
    snapshot_images: PathBuf,
    volumes: RecordDir,
    snapshots: RecordDir,
    /// One operation at a time: records are read, changed and written whole.
    lock: Mutex<()>,
}

impl LocalBackend {
    /// Opens (creating if needed) a pool at `pool`. Call
    /// [`reconcile`](VolumeBackend::reconcile) before anything else after a
    /// restart.
    pub fn open(pool: impl AsRef<Path>) -> Result<Self> {
        let pool = pool.as_ref();
        fs::create_dir_all(pool).map_err(|e| Error::io("create pool", pool, e))?;
        // Canonical, so it matches the backing-file paths losetup reports.
        let pool = fs::canonicalize(pool).map_err(|e| Error::io("resolve pool", pool, e))?;
        let images = pool.join("images");
        let snapshot_images = pool.join("snapshots");
        for dir in [&images, &snapshot_images] {
            fs::create_dir_all(dir).map_err(|e| Error::io("create pool directory", dir, e))?;
        }
        Ok(Self {
            volumes: RecordDir::open(pool.join("records/volumes"))?,
            snapshots: RecordDir::open(pool.join("records/snapshots"))?,
            images,
            snapshot_images,
            pool,
            lock: Mutex::new(()),
        })
    }

    /// The pool directory.
    pub fn pool(&self) -> &Path {
        &self.pool
    }

    /// The image file of a volume (it exists once the volume is provisioned).
    pub fn image_path(&self, id: &VolumeId) -> PathBuf {
        self.images.join(format!("{id}.img"))
    }

    fn snapshot_path(&self, id: &SnapshotId) -> PathBuf {
        self.snapshot_images.join(format!("{id}.img"))
    }

    fn read_volume(&self, id: &VolumeId) -> Result<Option<VolumeRecord>> {
        self.volumes.read(id.as_str())
    }

    fn ready_volume(&self, id: &VolumeId) -> Result<VolumeRecord> {
        match self.read_volume(id)? {
            Some(r) if r.state == VolumeState::Ready => Ok(r),
            _ => Err(Error::NotFound {
                kind: "volume",
                id: id.to_string(),
            }),
        }
    }

    fn write_volume(&self, record: &VolumeRecord) -> Result<()> {
        self.volumes.write(record.id.as_str(), record)
    }

    fn check_capacity(&self, bytes: u64) -> Result<()> {
        let (available, _) = sys::fs_space(&self.pool)?;
        if bytes > available {
            return Err(Error::InsufficientCapacity {
                requested: bytes,
                available,
            });
        }
        Ok(())
    }

    /// Loop devices of `image` and the mounts of those devices.
    async fn attachments(&self, image: &Path) -> Result<(Vec<PathBuf>, Vec<MountEntry>)> {
        let loops = sys::loops_of(image).await?;
        let devices: Vec<_> = loops
            .iter()
            .filter_map(|d| sys::device_number(d).ok())
            .collect();
        let mounts = sys::mounts()?
            .into_iter()
            .filter(|m| devices.contains(&m.device))
            .collect();
        Ok((loops, mounts))
    }

    /// Unmounts every mount of `image`'s loop devices and detaches them.
    async fn tear_down(&self, image: &Path, report: &mut ReconcileReport) -> Result<()> {
        let (loops, mounts) = self.attachments(image).await?;
        for mount in mounts.iter().rev() {
            if sys::unmount(&mount.mount_point)? {
                report.unmounted.push(mount.mount_point.clone());
            }
        }
        for device in loops {
            sys::detach_loop(&device).await?;
            report.detached.push(device.display().to_string());
        }
        Ok(())
    }

    async fn make_filesystem(image: &Path) -> Result<()> {
        sys::run(
            "mkfs.ext4",
            [
                OsStr::new("-q"),
                OsStr::new("-F"),
                // No blocks reserved for root: the size asked for is the size usable.
                OsStr::new("-m"),
                OsStr::new("0"),
                OsStr::new("-E"),
                OsStr::new("lazy_itable_init=1,lazy_journal_init=1,nodiscard"),
                image.as_os_str(),
            ],
        )
        .await
        .map(drop)
    }

    /// Grows an unmounted image's filesystem to the image's size.
    async fn resize_offline(image: &Path) -> Result<()> {
        sys::run_allowing(
            "e2fsck",
            [OsStr::new("-f"), OsStr::new("-y"), image.as_os_str()],
            &["1"],
        )
        .await?;
        sys::run("resize2fs", [image]).await.map(drop)
    }

    fn create_sparse(path: &Path, size: u64) -> Result<()> {
        let file = fs::File::create(path).map_err(|e| Error::io("create image", path, e))?;
        file.set_len(size)
            .map_err(|e| Error::io("size image", path, e))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync image", path, e))
    }

    fn grow_file(path: &Path, size: u64) -> Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open image", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat image", path, e))?
            .len();
        if len < size {
            file.set_len(size)
                .map_err(|e| Error::io("grow image", path, e))?;
            file.sync_all()
                .map_err(|e| Error::io("fsync image", path, e))?;
        }
        Ok(())
    }

    async fn sparse_copy(from: &Path, to: &Path) -> Result<()> {
        sys::run(
            "cp",
            [
                OsStr::new("--sparse=always"),
                from.as_os_str(),
                to.as_os_str(),
            ],
        )
        .await?;
        fs::File::open(to)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("fsync copy", to, e))?;
        sync_dir(to.parent().unwrap_or(Path::new("/")))
    }

    fn remove_file(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    fn checked_size(size_bytes: u64) -> Result<u64> {
        if size_bytes < MIN_VOLUME_BYTES {
            return Err(Error::invalid(
                "size",
                format!("{size_bytes} bytes is below the minimum of {MIN_VOLUME_BYTES}"),
            ));
        }
        size_bytes
            .checked_next_multiple_of(BLOCK)
            .ok_or_else(|| Error::invalid("size", format!("{size_bytes} bytes is too large")))
    }

    fn check_request(req: &ProvisionRequest) -> Result<u64> {
        if req.filesystem != Filesystem::Ext4 {
            return Err(Error::invalid(
                "filesystem",
                format!(
                    "the local backend makes ext4, not {}",
                    req.filesystem.as_str()
                ),
            ));
        }
        if matches!(req.access_mode, AccessMode::ReadWriteMany) {
            return Err(Error::invalid(
                "access mode",
                "a local volume cannot be written from many nodes",
            ));
        }
        Self::checked_size(req.size_bytes)
    }

    /// Removes what a record and its image left (a half-made or deleted volume).
    async fn purge(&self, id: &VolumeId, report: &mut ReconcileReport) -> Result<()> {
        let image = self.image_path(id);
        self.tear_down(&image, report).await?;
        Self::remove_file(&image)?;
        self.volumes.remove(id.as_str())
    }

    async fn do_provision(
        &self,
        req: &ProvisionRequest,
        source: Option<&SnapshotRecord>,
    ) -> Result<Volume> {
        let size = Self::check_request(req)?;
        if let Some(existing) = self.read_volume(&req.id)? {
            if existing.state == VolumeState::Ready {
                let source_matches = existing.source_snapshot.as_ref() == source.map(|s| &s.id);
                if existing.size_bytes == size && source_matches {
                    return Ok(existing.volume());
                }
                return Err(Error::AlreadyExists {
                    kind: "volume",
                    id: req.id.to_string(),
                    existing: describe(existing.size_bytes, existing.source_snapshot.as_ref()),
                    requested: describe(size, source.map(|s| &s.id)),
                });
            }
            // Half made or half deleted before a crash: start clean.
            self.purge(&req.id, &mut ReconcileReport::default()).await?;
        }
        if let Some(snapshot) = source
            && size < snapshot.size_bytes
        {
            return Err(Error::invalid(
                "size",
                format!(
                    "{size} bytes is smaller than snapshot {} ({} bytes)",
                    snapshot.id, snapshot.size_bytes
                ),
            ));
        }
        self.check_capacity(size)?;
        let mut record = VolumeRecord {
            version: RECORD_VERSION,
            id: req.id.clone(),
            size_bytes: size,
            access_mode: req.access_mode,
            state: VolumeState::Creating,
            source_snapshot: source.map(|s| s.id.clone()),
            staged: None,
            published: Vec::new(),
            pending: None,
        };
        self.write_volume(&record)?;
        let image = self.image_path(&req.id);
        let made = async {
            match source {
                None => {
                    Self::create_sparse(&image, size)?;
                    fail_point("create.image");
                    Self::make_filesystem(&image).await?;
                    fail_point("create.format");
                }
                Some(snapshot) => {
                    Self::sparse_copy(&self.snapshot_path(&snapshot.id), &image).await?;
                    fail_point("restore.copied");
                    if size > snapshot.size_bytes {
                        Self::grow_file(&image, size)?;
                        Self::resize_offline(&image).await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = made {
            tracing::warn!(volume = %req.id, error = %e, "provisioning failed; removing what was made");
            Self::remove_file(&image)?;
            self.volumes.remove(req.id.as_str())?;
            return Err(e);
        }
        record.state = VolumeState::Ready;
        self.write_volume(&record)?;
        Ok(record.volume())
    }

    /// Puts one volume's mounts and loop devices in line with its record.
    async fn reconcile_volume(
        &self,
        mut record: VolumeRecord,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let image = self.image_path(&record.id);
        if record.state != VolumeState::Ready || !image.exists() {
            if record.state == VolumeState::Deleting {
                report.finished_deletes.push(record.id.to_string());
            } else {
                report.removed_partial.push(record.id.to_string());
            }
            return self.purge(&record.id, report).await;
        }
        let pending = record.pending.take();
        if let Some(Pending::Expand { size_bytes }) = pending {
            // The image may have grown; the filesystem follows while unmounted.
            let mounted = !self.attachments(&image).await?.1.is_empty();
            if !mounted {
                Self::grow_file(&image, size_bytes)?;
                Self::resize_offline(&image).await?;
                record.size_bytes = size_bytes;
            }
        }
        let declared: BTreeSet<PathBuf> = record
            .staged
            .iter()
            .cloned()
            .chain(record.published.iter().map(|p| p.target.clone()))
            .collect();
        let (loops, mounts) = self.attachments(&image).await?;
        // Undeclared mounts go, bind mounts (anything but the staging path) first.
        let mut undeclared: Vec<&MountEntry> = mounts
            .iter()
            .filter(|m| !declared.contains(&m.mount_point))
            .collect();
        undeclared.sort_by_key(|m| Some(&m.mount_point) == record.staged.as_ref());
        for mount in undeclared {
            if sys::unmount(&mount.mount_point)? {
                report.unmounted.push(mount.mount_point.clone());
            }
        }
        let mounted: BTreeSet<PathBuf> = sys::mounts()?
            .into_iter()
            .filter(|m| mounts.iter().any(|ours| ours.device == m.device))
            .map(|m| m.mount_point)
            .collect();
        // Declared mounts that are missing (a reboot, a dead mount namespace) come back.
        let mut staging_device = None;
        if let Some(staging) = record.staged.clone() {
            if mounted.contains(&staging) {
                staging_device = sys::mount_at(&staging)?.map(|m| m.device);
            } else {
                let device = sys::attach_loop(&image).await?;
                sys::ensure_dir(&staging)?;
                sys::mount(&device, &staging, "ext4", MsFlags::empty(), None)?;
                staging_device = Some(sys::device_number(&device)?);
                report.remounted.push(staging.clone());
            }
            for publication in &record.published {
                if !mounted.contains(&publication.target) {
                    sys::ensure_dir(&publication.target)?;
                    sys::bind_mount(&staging, &publication.target, publication.read_only)?;
                    report.remounted.push(publication.target.clone());
                }
            }
        }
        for device in loops {
            if staging_device.is_some() && sys::device_number(&device).ok() == staging_device {
                continue;
            }
            sys::detach_loop(&device).await?;
            report.detached.push(device.display().to_string());
        }
        if let Some(Pending::Unpublish { target }) = &pending {
            let _ = fs::remove_dir(target);
        }
        if pending.is_some() {
            self.write_volume(&record)?;
        }
        Ok(())
    }

    /// Thaws a frozen filesystem; true if it was frozen.
    async fn thaw(path: &Path) -> Result<bool> {
        match sys::run("fsfreeze", [OsStr::new("-u"), path.as_os_str()]).await {
            Ok(_) => Ok(true),
            // Not frozen (or no longer mounted): nothing to thaw.
            Err(Error::Command { stderr, .. })
                if stderr.contains("Invalid argument") || stderr.contains("not a mount") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

fn describe(size: u64, source: Option<&SnapshotId>) -> String {
    match source {
        Some(s) => format!("{size} bytes from snapshot {s}"),
        None => format!("{size} bytes"),
    }
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[async_trait]
impl VolumeBackend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            expansion: Expansion::Online,
            enforces_size: true,
            access_modes: vec![
                AccessMode::ReadWriteOnce,
                AccessMode::ReadWriteOncePod,
                AccessMode::ReadOnlyMany,
            ],
        }
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Volume> {
        let _guard = self.lock.lock().await;
        self.do_provision(req, None).await
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some(mut record) = self.read_volume(id)? else {
            return Ok(());
        };
        let image = self.image_path(id);
        let (_, mounts) = self.attachments(&image).await?;
        let mut paths: Vec<PathBuf> = mounts.into_iter().map(|m| m.mount_point).collect();
        paths.extend(record.staged.iter().cloned());
        paths.extend(record.published.iter().map(|p| p.target.clone()));
        paths.sort();
        paths.dedup();
        if !paths.is_empty() {
            return Err(Error::InUse {
                id: id.to_string(),
                paths,
            });
        }
        record.state = VolumeState::Deleting;
        self.write_volume(&record)?;
        fail_point("delete.marked");
        for device in sys::loops_of(&image).await? {
            sys::detach_loop(&device).await?;
        }
        Self::remove_file(&image)?;
        fail_point("delete.image");
        self.volumes.remove(id.as_str())
    }

    async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        Ok(self
            .read_volume(id)?
            .filter(|r| r.state == VolumeState::Ready)
            .map(|r| r.volume()))
    }

    async fn list(&self) -> Result<Vec<Volume>> {
        let mut volumes = Vec::new();
        for id in self.volumes.ids()? {
            if let Some(r) = self.volumes.read::<VolumeRecord>(&id)?
                && r.state == VolumeState::Ready
            {
                volumes.push(r.volume());
            }
        }
        Ok(volumes)
    }

    async fn stage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let _guard = self.lock.lock().await;
        let mut record = self.ready_volume(id)?;
        let staging = sys::absolute(staging);
        let image = self.image_path(id);
        let (loops, mounts) = self.attachments(&image).await?;
        if let Some(current) = &record.staged {
            if current == &staging && mounts.iter().any(|m| m.mount_point == staging) {
                return Ok(());
            }
            if current != &staging {
                return Err(Error::invalid(
                    "staging path",
                    format!(
                        "volume {id} is already staged at {}, not {}",
                        current.display(),
                        staging.display()
                    ),
                ));
            }
        }
        if let Some(other) = sys::mount_at(&staging)? {
            return Err(Error::invalid(
                "staging path",
                format!(
                    "{} already has {} ({}) mounted",
                    staging.display(),
                    other.source,
                    other.fs_type
                ),
            ));
        }
        record.pending = Some(Pending::Stage {
            path: staging.clone(),
        });
        self.write_volume(&record)?;
        let mounted = async {
            sys::ensure_dir(&staging)?;
            // A device left attached (and unmounted) by an earlier failure is reused.
            let device = match loops.into_iter().next() {
                Some(device) => device,
                None => sys::attach_loop(&image).await?,
            };
            fail_point("attach.loop");
            if let Err(e) = sys::mount(&device, &staging, "ext4", MsFlags::empty(), None) {
                sys::detach_loop(&device).await?;
                return Err(e);
            }
            fail_point("mount.staged");
            Ok(())
        }
        .await;
        record.pending = None;
        if mounted.is_ok() {
            record.staged = Some(staging);
        }
        self.write_volume(&record)?;
        mounted
    }

    async fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some(mut record) = self.read_volume(id)? else {
            return Ok(());
        };
        let staging = sys::absolute(staging);
        if record
            .staged
            .as_ref()
            .is_some_and(|current| current != &staging)
        {
            // Staged elsewhere: nothing is staged at this path.
            return Ok(());
        }
        if !record.published.is_empty() {
            return Err(Error::InUse {
                id: id.to_string(),
                paths: record.published.iter().map(|p| p.target.clone()).collect(),
            });
        }
        record.staged = None;
        record.pending = Some(Pending::Unstage {
            path: staging.clone(),
        });
        self.write_volume(&record)?;
        let image = self.image_path(id);
        let (_, mounts) = self.attachments(&image).await?;
        if mounts.iter().any(|m| m.mount_point == staging) {
            sys::unmount(&staging)?;
        }
        fail_point("unmount.unstaged");
        for device in sys::loops_of(&image).await? {
            sys::detach_loop(&device).await?;
        }
        fail_point("unmount.detached");
        record.pending = None;
        self.write_volume(&record)
    }

    async fn publish(
        &self,
        id: &VolumeId,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        let _guard = self.lock.lock().await;
        let mut record = self.ready_volume(id)?;
        let staging = sys::absolute(staging);
        let target = sys::absolute(target);
        if record.staged.as_ref() != Some(&staging) {
            return Err(Error::invalid(
                "staging path",
                format!("volume {id} is not staged at {}", staging.display()),
            ));
        }
        if let Some(existing) = record.published.iter().find(|p| p.target == target) {
            if existing.read_only != read_only {
                return Err(Error::AlreadyExists {
                    kind: "publication",
                    id: target.display().to_string(),
                    existing: format!("read_only={}", existing.read_only),
                    requested: format!("read_only={read_only}"),
                });
            }
            if sys::mount_at(&target)?.is_some() {
                return Ok(());
            }
        }
        record.pending = Some(Pending::Publish {
            target: target.clone(),
        });
        self.write_volume(&record)?;
        let mounted =
            sys::ensure_dir(&target).and_then(|()| sys::bind_mount(&staging, &target, read_only));
        if mounted.is_ok() {
            fail_point("mount.published");
            record.published.retain(|p| p.target != target);
            record.published.push(Publication { target, read_only });
        }
        record.pending = None;
        self.write_volume(&record)?;
        mounted
    }

    async fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<()> {
        let _guard = self.lock.lock().await;
        let target = sys::absolute(target);
        let Some(mut record) = self.read_volume(id)? else {
            return Ok(());
        };
        record.published.retain(|p| p.target != target);
        record.pending = Some(Pending::Unpublish {
            target: target.clone(),
        });
        self.write_volume(&record)?;
        let image = self.image_path(id);
        let (_, mounts) = self.attachments(&image).await?;
        // Only our own bind mount is removed, never something else mounted there.
        if mounts.iter().any(|m| m.mount_point == target) {
            sys::unmount(&target)?;
        }
        fail_point("unmount.unpublished");
        let _ = fs::remove_dir(&target);
        record.pending = None;
        self.write_volume(&record)
    }

    async fn expand(&self, id: &VolumeId, size_bytes: u64) -> Result<u64> {
        let _guard = self.lock.lock().await;
        let mut record = self.ready_volume(id)?;
        let size = Self::checked_size(size_bytes)?;
        if size <= record.size_bytes {
            return Ok(record.size_bytes);
        }
        self.check_capacity(size - record.size_bytes)?;
        record.pending = Some(Pending::Expand { size_bytes: size });
        self.write_volume(&record)?;
        let image = self.image_path(id);
        let staging_device = match &record.staged {
            Some(staging) => {
                let (loops, _) = self.attachments(&image).await?;
                let staged = sys::mount_at(staging)?.map(|m| m.device);
                loops
                    .into_iter()
                    .find(|d| sys::device_number(d).ok() == staged)
            }
            None => None,
        };
        let grown = async {
            Self::grow_file(&image, size)?;
            fail_point("expand.grown");
            match &staging_device {
                Some(device) => {
                    sys::run(
                        "losetup",
                        [OsStr::new("--set-capacity"), device.as_os_str()],
                    )
                    .await?;
                    sys::run("resize2fs", [device])
                        .await
                        .map(drop)
                        .map_err(|e| match e {
                            // The kernel refuses online resize without CAP_SYS_RESOURCE.
                            Error::Command { stderr, .. } => Error::OfflineExpansionRequired {
                                id: id.to_string(),
                                size_bytes: size,
                                reason: stderr,
                            },
                            other => other,
                        })
                }
                None => Self::resize_offline(&image).await,
            }
        }
        .await;
        record.pending = None;
        if grown.is_ok() {
            record.size_bytes = size;
        }
        self.write_volume(&record)?;
        grown.map(|()| size)
    }

    async fn snapshot(&self, id: &VolumeId, snapshot: &SnapshotId) -> Result<Snapshot> {
        let _guard = self.lock.lock().await;
        if let Some(existing) = self.snapshots.read::<SnapshotRecord>(snapshot.as_str())? {
            if existing.state == SnapshotState::Ready {
                if &existing.source_volume == id {
                    return Ok(existing.snapshot());
                }
                return Err(Error::AlreadyExists {
                    kind: "snapshot",
                    id: snapshot.to_string(),
                    existing: format!("source volume {}", existing.source_volume),
                    requested: format!("source volume {id}"),
                });
            }
            if let Some(frozen) = &existing.frozen {
                Self::thaw(frozen).await?;
            }
            Self::remove_file(&self.snapshot_path(snapshot))?;
        }
        let volume = self.ready_volume(id)?;
        let image = self.image_path(id);
        let (_, mounts) = self.attachments(&image).await?;
        // A mounted volume is frozen for the copy (writers block meanwhile), so
        // the copy is a consistent filesystem; an unmounted one is copied as is.
        let frozen = volume
            .staged
            .clone()
            .filter(|s| mounts.iter().any(|m| &m.mount_point == s));
        // The copy takes what the image has allocated (it is sparse).
        let allocated = fs::metadata(&image)
            .map_err(|e| Error::io("stat image", &image, e))?
            .blocks()
            * 512;
        self.check_capacity(allocated)?;
        let mut record = SnapshotRecord {
            version: RECORD_VERSION,
            id: snapshot.clone(),
            source_volume: id.clone(),
            size_bytes: volume.size_bytes,
            created_unix: now_unix(),
            state: SnapshotState::Creating,
            frozen: frozen.clone(),
        };
        self.snapshots.write(snapshot.as_str(), &record)?;
        let target = self.snapshot_path(snapshot);
        let mut partial = target.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let copied = async {
            if let Some(path) = &frozen {
                sys::run("fsfreeze", [OsStr::new("-f"), path.as_os_str()]).await?;
            }
            fail_point("snapshot.frozen");
            let copy = Self::sparse_copy(&image, &partial).await;
            if let Some(path) = &frozen {
                Self::thaw(path).await?;
            }
            copy?;
            fail_point("snapshot.copied");
            fs::rename(&partial, &target).map_err(|e| Error::io("rename snapshot", &target, e))?;
            sync_dir(&self.snapshot_images)
        }
        .await;
        if let Err(e) = copied {
            tracing::warn!(snapshot = %snapshot, error = %e, "snapshot failed; removing what was made");
            Self::remove_file(&partial)?;
            self.snapshots.remove(snapshot.as_str())?;
            return Err(e);
        }
        record.state = SnapshotState::Ready;
        record.frozen = None;
        self.snapshots.write(snapshot.as_str(), &record)?;
        Ok(record.snapshot())
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotId) -> Result<()> {
        let _guard = self.lock.lock().await;
        Self::remove_file(&self.snapshot_path(snapshot))?;
        self.snapshots.remove(snapshot.as_str())
    }

    async fn get_snapshot(&self, snapshot: &SnapshotId) -> Result<Option<Snapshot>> {
        Ok(self
            .snapshots
            .read::<SnapshotRecord>(snapshot.as_str())?
            .filter(|r| r.state == SnapshotState::Ready)
            .map(|r| r.snapshot()))
    }

    async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut snapshots = Vec::new();
        for id in self.snapshots.ids()? {
            if let Some(r) = self.snapshots.read::<SnapshotRecord>(&id)?
                && r.state == SnapshotState::Ready
            {
                snapshots.push(r.snapshot());
            }
        }
        Ok(snapshots)
    }

    async fn restore(&self, snapshot: &SnapshotId, req: &ProvisionRequest) -> Result<Volume> {
        let _guard = self.lock.lock().await;
        let source = self
            .snapshots
            .read::<SnapshotRecord>(snapshot.as_str())?
            .filter(|r| r.state == SnapshotState::Ready)
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot.to_string(),
            })?;
        self.do_provision(req, Some(&source)).await
    }

    async fn capacity(&self) -> Result<Capacity> {
        let (available_bytes, total_bytes) = sys::fs_space(&self.pool)?;
        Ok(Capacity {
            available_bytes,
            total_bytes,
        })
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        let _guard = self.lock.lock().await;
        let mut report = ReconcileReport::default();
        self.volumes.sweep()?;
        self.snapshots.sweep()?;
        // Snapshots first: a filesystem frozen by a crashed snapshot would
        // block everything below.
        for id in self.snapshots.ids()? {
            let Some(record) = self.snapshots.read::<SnapshotRecord>(&id)? else {
                continue;
            };
            if record.state == SnapshotState::Ready {
                continue;
            }
            if let Some(frozen) = &record.frozen
                && Self::thaw(frozen).await?
            {
                report.thawed.push(frozen.clone());
            }
            let target = self.snapshot_path(&record.id);
            let mut partial = target.clone().into_os_string();
            partial.push(".partial");
            Self::remove_file(Path::new(&partial))?;
            Self::remove_file(&target)?;
            self.snapshots.remove(&id)?;
            report.removed_partial.push(format!("snapshot {id}"));
        }
        for entry in fs::read_dir(&self.snapshot_images)
            .map_err(|e| Error::io("list", &self.snapshot_images, e))?
        {
            let entry = entry.map_err(|e| Error::io("list", &self.snapshot_images, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let known = name.strip_suffix(".img").is_some_and(|id| {
                self.snapshots
                    .read::<SnapshotRecord>(id)
                    .ok()
                    .flatten()
                    .is_some()
            });
            if !known {
                Self::remove_file(&entry.path())?;
                report.removed_partial.push(format!("snapshot file {name}"));
            }
        }
        let mut known_images = BTreeSet::new();
        for id in self.volumes.ids()? {
            let Some(record) = self.volumes.read::<VolumeRecord>(&id)? else {
                continue;
            };
            if record.state == VolumeState::Ready {
                known_images.insert(self.image_path(&record.id));
            }
            self.reconcile_volume(record, &mut report).await?;
        }
        // Images no record declares (a crash between creating the file and its
        // record cannot happen, but a hand-copied file can).
        for entry in fs::read_dir(&self.images).map_err(|e| Error::io("list", &self.images, e))? {
            let entry = entry.map_err(|e| Error::io("list", &self.images, e))?;
            let path = entry.path();
            if !known_images.contains(&path) {
                self.tear_down(&path, &mut report).await?;
                Self::remove_file(&path)?;
                report
                    .removed_partial
                    .push(format!("image {}", entry.file_name().to_string_lossy()));
            }
        }
        // Loop devices whose image is gone (deleted while attached).
        for (device, file) in sys::all_loops().await? {
            if file.starts_with(&self.pool) && !known_images.contains(&file) {
                if let Ok(number) = sys::device_number(&device) {
                    for mount in sys::mounts()?
                        .into_iter()
                        .rev()
                        .filter(|m| m.device == number)
                    {
                        if sys::unmount(&mount.mount_point)? {
                            report.unmounted.push(mount.mount_point);
                        }
                    }
                }
                sys::detach_loop(&device).await?;
                report.detached.push(device.display().to_string());
            }
        }
        if !report.is_clean() {
            tracing::info!(pool = %self.pool.display(), ?report, "reconciled local volumes");
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_format() {
        let record = VolumeRecord {
            version: 1,
            id: VolumeId::new("v").unwrap(),
            size_bytes: 1 << 30,
            access_mode: AccessMode::ReadWriteOnce,
            state: VolumeState::Ready,
            source_snapshot: None,
            staged: Some("/s".into()),
            published: vec![Publication {
                target: "/t".into(),
                read_only: true,
            }],
            pending: Some(Pending::Stage { path: "/s".into() }),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["state"], "ready");
        assert_eq!(json["pending"]["op"], "stage");
        assert_eq!(
            serde_json::from_value::<VolumeRecord>(json).unwrap(),
            record
        );
    }

    #[test]
    fn sizes_are_checked_and_rounded() {
        assert!(LocalBackend::checked_size(1 << 20).is_err());
        assert_eq!(
            LocalBackend::checked_size(MIN_VOLUME_BYTES + 1).unwrap(),
            MIN_VOLUME_BYTES + BLOCK
        );
        let mut req = ProvisionRequest::new(VolumeId::new("v").unwrap(), 1 << 30);
        req.filesystem = Filesystem::Nfs;
        assert!(matches!(
            LocalBackend::check_request(&req),
            Err(Error::InvalidArgument {
                what: "filesystem",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn provision_rejects_bad_requests_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open(dir.path()).unwrap();
        let req = ProvisionRequest::new(VolumeId::new("v").unwrap(), 1024);
        assert!(matches!(
            backend.provision(&req).await,
            Err(Error::InvalidArgument { what: "size", .. })
        ));
        assert!(backend.list().await.unwrap().is_empty());
        // Deleting or unstaging what does not exist succeeds.
        backend.delete(&req.id).await.unwrap();
        backend.unstage(&req.id, dir.path()).await.unwrap();
        backend
            .delete_snapshot(&SnapshotId::new("s").unwrap())
            .await
            .unwrap();
    }
}
