//! The NFS backend against Debian's nfs-ganesha (VFS export of a temporary
//! directory, NFSv3 over TCP on loopback, ports of the test's own), mounted
//! through FUSE by the userspace NFSv3 client (root: FUSE mounts, ganesha).
//! How ganesha runs: `c4m_storage::testing::Ganesha`.

use std::io::Write;
use std::path::Path;

use c4m_storage::testing::{CleanupGuard, Ganesha, require_root_and};
use c4m_storage::{
    Error, Filesystem, NfsBackend, NfsMounter, ProvisionRequest, VolumeBackend, VolumeId,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + FUSE, nfs-ganesha, nfs-ganesha-vfs, rpcbind, util-linux (unshare)"]
async fn nfs_volume_written_on_one_host_is_read_on_another() {
    require_root_and(&["ganesha.nfsd", "rpcbind", "unshare"]).unwrap();
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: FUSE is not available"
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    // Declared first, dropped last: unmounts before ganesha stops.
    let ganesha = Ganesha::start(dir.path(), std::net::Ipv4Addr::LOCALHOST);
    let _guard = CleanupGuard::new([mnt.clone()]);

    // Two simulated hosts: two backends, each with its own FUSE mount.
    let host_a = NfsBackend::new(ganesha.export.clone(), NfsMounter::Fuse);
    let host_b = NfsBackend::new(ganesha.export.clone(), NfsMounter::Fuse);
    let id = VolumeId::new("pvc-shared").unwrap();
    let mut req = ProvisionRequest::new(id.clone(), 1 << 30);
    req.filesystem = Filesystem::Nfs;
    host_a.provision(&req).await.unwrap();
    host_a.provision(&req).await.unwrap();
    assert!(
        ganesha.export_dir.join("pvc-shared").is_dir(),
        "a directory per volume on the export"
    );
    assert!(host_b.list().await.unwrap().iter().any(|v| v.id == id));
    let capacity = host_a.capacity().await.unwrap();
    assert!(
        capacity.total_bytes > 0 && capacity.available_bytes > 0,
        "{capacity:?}"
    );

    let (at_a, at_b) = (mnt.join("a"), mnt.join("b"));
    host_a.stage(&id, &at_a).await.unwrap();
    host_a.stage(&id, &at_a).await.unwrap();
    host_b.stage(&id, &at_b).await.unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" - fuse") && l.contains(" c4m-nfs:pvc-shared ")),
        "{mounts}"
    );

    // Written (and fsynced) on host A, read on host B, through the filesystem.
    let (a, b) = (at_a.clone(), at_b.clone());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir(a.join("sub")).unwrap();
        let mut file = std::fs::File::create(a.join("sub/hello.txt")).unwrap();
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&big).unwrap();
        file.sync_all().unwrap();
        drop(file);
        std::fs::rename(a.join("sub/hello.txt"), a.join("sub/data.bin")).unwrap();
        assert_eq!(std::fs::read(b.join("sub/data.bin")).unwrap(), big);
        let names: Vec<String> = std::fs::read_dir(b.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["data.bin".to_string()]);
        std::fs::write(b.join("from-b"), b"b wrote this").unwrap();
        assert_eq!(std::fs::read(a.join("from-b")).unwrap(), b"b wrote this");
        std::fs::remove_file(b.join("from-b")).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::metadata(ganesha.export_dir.join("pvc-shared/sub/data.bin"))
            .unwrap()
            .len(),
        600_000
    );

    // Published into a "container" on host B, read-only.
    let target = mnt.join("pod/data");
    host_b.publish(&id, &at_b, &target, true).await.unwrap();
    assert!(target.join("sub/data.bin").exists());
    assert!(std::fs::write(target.join("x"), b"x").is_err());

    let err = host_a.delete(&id).await.unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err}");
    host_b.unpublish(&id, &target).await.unwrap();
    host_b.unpublish(&id, &target).await.unwrap();
    for (host, at) in [(&host_a, &at_a), (&host_b, &at_b)] {
        host.unstage(&id, at).await.unwrap();
        host.unstage(&id, at).await.unwrap();
    }
    host_a.delete(&id).await.unwrap();
    host_a.delete(&id).await.unwrap();
    assert!(
        !ganesha.export_dir.join("pvc-shared").exists(),
        "the volume's directory is removed"
    );
    assert!(host_a.reconcile().await.unwrap().is_clean());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("c4m-nfs:"), "no FUSE mount left");
}
