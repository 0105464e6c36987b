//! The local backend against real loop devices, ext4 and mounts (root).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use c4m_storage::pod::{
    HostPathType, ScratchDirs, mount_memory_dir, publish_host_path, unmount_memory_dir,
    unpublish_host_path,
};
use c4m_storage::testing::{CleanupGuard, LOCAL_PROGRAMS, leaks, require_root_and};
use c4m_storage::{Error, LocalBackend, ProvisionRequest, SnapshotId, VolumeBackend, VolumeId};

struct Setup {
    backend: Arc<LocalBackend>,
    pool: std::path::PathBuf,
    mnt: std::path::PathBuf,
    _guard: CleanupGuard,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    require_root_and(LOCAL_PROGRAMS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let backend = Arc::new(LocalBackend::open(&pool).unwrap());
    let guard = CleanupGuard::new([dir.path().to_path_buf()]);
    Setup {
        backend,
        pool,
        mnt,
        _guard: guard,
        _dir: dir,
    }
}

fn id(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}

/// Writes `len` bytes to `path` in 1 MiB chunks and fsyncs; returns the
/// first error (ENOSPC at the limit).
fn fill(path: &Path, len: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n;
    }
    file.sync_all()
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ENOSPC)
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs)"]
async fn volume_lifecycle_is_idempotent_and_size_is_a_hard_limit() {
    let s = setup();
    let v = id("v1");
    let req = ProvisionRequest::new(v.clone(), 16 << 20);
    let vol = s.backend.provision(&req).await.unwrap();
    assert_eq!(vol.size_bytes, 16 << 20);
    assert_eq!(
        s.backend.provision(&req).await.unwrap(),
        vol,
        "same id and size again succeeds"
    );
    let err = s
        .backend
        .provision(&ProvisionRequest::new(v.clone(), 32 << 20))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let staging = s.mnt.join("stage");
    let target = s.mnt.join("pod/vol");
    s.backend.stage(&v, &staging).await.unwrap();
    s.backend.stage(&v, &staging).await.unwrap();
    s.backend
        .publish(&v, &staging, &target, false)
        .await
        .unwrap();
    s.backend
        .publish(&v, &staging, &target, false)
        .await
        .unwrap();
    let err = s
        .backend
        .publish(&v, &staging, &target, true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(
        leaks(&s.pool, &s.mnt).await.unwrap().loops.len(),
        1,
        "one loop device per staged volume"
    );

    // A write past the size fails with ENOSPC, through the published path.
    let err = fill(&target.join("big"), 32 << 20).unwrap_err();
    assert!(is_enospc(&err), "{err}");
    std::fs::remove_file(target.join("big")).unwrap();
    fill(&target.join("small"), 4 << 20).unwrap();
    assert!(staging.join("small").exists());

    let err = s.backend.delete(&v).await.unwrap_err();
    assert!(
        matches!(&err, Error::InUse { paths, .. } if paths.contains(&staging)),
        "{err}"
    );
    let err = s.backend.unstage(&v, &staging).await.unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err}");

    s.backend.unpublish(&v, &target).await.unwrap();
    s.backend.unpublish(&v, &target).await.unwrap();
    assert!(!target.exists(), "the publish target is removed");
    s.backend.unstage(&v, &staging).await.unwrap();
    s.backend.unstage(&v, &staging).await.unwrap();
    // Data survives unstage and stage.
    s.backend.stage(&v, &staging).await.unwrap();
    assert_eq!(
        std::fs::metadata(staging.join("small")).unwrap().len(),
        4 << 20
    );
    s.backend.unstage(&v, &staging).await.unwrap();

    s.backend.delete(&v).await.unwrap();
    s.backend.delete(&v).await.unwrap();
    assert!(s.backend.volume(&v).await.unwrap().is_none());
    assert!(leaks(&s.pool, &s.mnt).await.unwrap().is_empty());
    assert!(s.backend.reconcile().await.unwrap().is_clean());
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs), fsfreeze"]
async fn snapshot_restore_and_expand() {
    let s = setup();
    let v = id("src");
    s.backend
        .provision(&ProvisionRequest::new(v.clone(), 32 << 20))
        .await
        .unwrap();
    let staging = s.mnt.join("src");
    s.backend.stage(&v, &staging).await.unwrap();
    std::fs::write(staging.join("a"), b"before").unwrap();
    fill(&staging.join("blob"), 8 << 20).unwrap();

    // Taken while mounted: the filesystem is frozen for the copy.
    let snap = SnapshotId::new("snap").unwrap();
    let taken = s.backend.snapshot(&v, &snap).await.unwrap();
    assert_eq!(taken.size_bytes, 32 << 20);
    assert_eq!(
        s.backend.snapshot(&v, &snap).await.unwrap(),
        taken,
        "same snapshot again succeeds"
    );
    std::fs::write(staging.join("a"), b"after").unwrap();

    let restored = id("restored");
    let err = s
        .backend
        .restore(&snap, &ProvisionRequest::new(restored.clone(), 16 << 20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { what: "size", .. }),
        "{err}"
    );
    s.backend
        .restore(&snap, &ProvisionRequest::new(restored.clone(), 48 << 20))
        .await
        .unwrap();
    let r_staging = s.mnt.join("restored");
    s.backend.stage(&restored, &r_staging).await.unwrap();
    assert_eq!(std::fs::read(r_staging.join("a")).unwrap(), b"before");
    assert_eq!(
        std::fs::metadata(r_staging.join("blob")).unwrap().len(),
        8 << 20
    );
    let (_, total) = fs_size(&r_staging);
    assert!(
        total > 36 << 20,
        "a restore into a larger volume grows the filesystem ({total} bytes)"
    );

    // Expansion while mounted: this host refuses online resize, so the caller
    // is told to unmount; elsewhere it grows in place.
    let (_, before) = fs_size(&staging);
    match s.backend.expand(&v, 64 << 20).await {
        Ok(size) => assert_eq!(size, 64 << 20),
        Err(Error::OfflineExpansionRequired { size_bytes, .. }) => {
            assert_eq!(size_bytes, 64 << 20);
            assert_eq!(
                s.backend.volume(&v).await.unwrap().unwrap().size_bytes,
                32 << 20,
                "size unchanged"
            );
            s.backend.unstage(&v, &staging).await.unwrap();
            assert_eq!(s.backend.expand(&v, 64 << 20).await.unwrap(), 64 << 20);
            s.backend.stage(&v, &staging).await.unwrap();
        }
        Err(e) => panic!("expand: {e}"),
    }
    let (_, after) = fs_size(&staging);
    assert!(
        after > before + (24 << 20),
        "filesystem grew from {before} to {after}"
    );
    assert_eq!(std::fs::read(staging.join("a")).unwrap(), b"after");
    assert_eq!(
        s.backend.expand(&v, 16 << 20).await.unwrap(),
        64 << 20,
        "shrinking changes nothing"
    );

    for (vol, path) in [(&v, &staging), (&restored, &r_staging)] {
        s.backend.unstage(vol, path).await.unwrap();
        s.backend.delete(vol).await.unwrap();
    }
    s.backend.delete_snapshot(&snap).await.unwrap();
    s.backend.delete_snapshot(&snap).await.unwrap();
    assert!(leaks(&s.pool, &s.mnt).await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(s.pool.join("snapshots")).unwrap().count(),
        0
    );
}

fn fs_size(path: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    (
        st.blocks_available() * st.fragment_size(),
        st.blocks() * st.fragment_size(),
    )
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs)"]
async fn reconcile_remounts_what_is_declared_and_removes_the_rest() {
    let s = setup();
    let v = id("v");
    s.backend
        .provision(&ProvisionRequest::new(v.clone(), 16 << 20))
        .await
        .unwrap();
    let staging = s.mnt.join("stage");
    let target = s.mnt.join("pub");
    s.backend.stage(&v, &staging).await.unwrap();
    s.backend
        .publish(&v, &staging, &target, true)
        .await
        .unwrap();
    std::fs::write(staging.join("f"), b"kept").unwrap();

    // Lost mounts (as after a reboot) and a stray loop device.
    nix::mount::umount2(&target, nix::mount::MntFlags::empty()).unwrap();
    nix::mount::umount2(&staging, nix::mount::MntFlags::empty()).unwrap();
    let image = s.backend.image_path(&v);
    std::process::Command::new("losetup")
        .arg("-f")
        .arg(&image)
        .status()
        .unwrap();

    let report = s.backend.reconcile().await.unwrap();
    assert_eq!(
        report.remounted,
        vec![staging.clone(), target.clone()],
        "{report:?}"
    );
    assert!(!report.detached.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"kept");
    let err = std::fs::write(target.join("g"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::libc::EROFS),
        "published read-only again"
    );
    assert_eq!(leaks(&s.pool, &s.mnt).await.unwrap().loops.len(), 1);
    assert!(
        s.backend.reconcile().await.unwrap().is_clean(),
        "a second reconcile finds nothing"
    );

    // An image with no record (copied in by hand) is removed.
    std::fs::write(s.pool.join("images/stray.img"), b"").unwrap();
    let report = s.backend.reconcile().await.unwrap();
    assert_eq!(report.removed_partial, vec!["image stray.img".to_string()]);

    s.backend.unpublish(&v, &target).await.unwrap();
    s.backend.unstage(&v, &staging).await.unwrap();
    s.backend.delete(&v).await.unwrap();
    assert!(leaks(&s.pool, &s.mnt).await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs), tmpfs"]
async fn pod_volumes_enforce_their_limits() {
    let s = setup();
    let scratch = ScratchDirs::new(s.backend.clone());
    // emptyDir on disk: sizeLimit is exact, the write stops with ENOSPC.
    let empty_dir = s.mnt.join("pod/empty");
    let ed = id("pod-uid-1.empty");
    scratch.create_dir(&ed, 16 << 20, &empty_dir).await.unwrap();
    scratch.create_dir(&ed, 16 << 20, &empty_dir).await.unwrap();
    let err = fill(&empty_dir.join("x"), 20 << 20).unwrap_err();
    assert!(is_enospc(&err), "{err}");

    // --disk: a writable area with overlay dirs on a sized filesystem.
    let area = scratch
        .create_writable_area(&id("ctr-1.disk"), 16 << 20, &s.mnt.join("ctr"))
        .await
        .unwrap();
    assert!(area.upper.is_dir() && area.work.is_dir());
    let err = fill(&area.upper.join("x"), 20 << 20).unwrap_err();
    assert!(is_enospc(&err), "{err}");

    // emptyDir medium: Memory, a sized tmpfs.
    let mem = s.mnt.join("pod/mem");
    mount_memory_dir(&mem, 4 << 20, 0o777).unwrap();
    mount_memory_dir(&mem, 4 << 20, 0o777).unwrap();
    let err = fill(&mem.join("x"), 8 << 20).unwrap_err();
    assert!(is_enospc(&err), "{err}");
    unmount_memory_dir(&mem).unwrap();
    unmount_memory_dir(&mem).unwrap();

    // hostPath, read-only.
    let host = s.mnt.join("host");
    let target = s.mnt.join("pod/host");
    publish_host_path(&host, &target, HostPathType::DirectoryOrCreate, true).unwrap();
    assert!(std::fs::write(target.join("x"), b"x").is_err());
    unpublish_host_path(&target).unwrap();
    unpublish_host_path(&target).unwrap();

    scratch.remove_dir(&ed, &empty_dir).await.unwrap();
    scratch.remove_dir(&ed, &empty_dir).await.unwrap();
    scratch
        .remove_dir(&id("ctr-1.disk"), &area.root)
        .await
        .unwrap();
    assert!(leaks(&s.pool, &s.mnt).await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs)"]
async fn capacity_is_the_pool_filesystems_free_space() {
    let s = setup();
    let cap = s.backend.capacity().await.unwrap();
    let st = nix::sys::statvfs::statvfs(&s.pool).unwrap();
    let free = st.blocks_available() * st.fragment_size();
    assert!(
        cap.available_bytes.abs_diff(free) < 64 << 20,
        "{cap:?} vs {free}"
    );
    let err = s
        .backend
        .provision(&ProvisionRequest::new(id("huge"), cap.total_bytes * 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InsufficientCapacity { .. }), "{err}");
    assert!(
        s.backend.list().await.unwrap().is_empty(),
        "nothing was made"
    );
}
