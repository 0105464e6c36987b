//! The NFS backend against Debian's nfs-ganesha (VFS export of a temporary
//! directory, NFSv3 over TCP on loopback, ports of the test's own), mounted
//! through FUSE by the userspace NFSv3 client (root: FUSE mounts, ganesha).
//!
//! How ganesha runs here: ganesha.nfsd refuses to start unless it can
//! register with rpcbind, and rpcbind always binds port 111. So the test
//! starts both in a private mount namespace with a tmpfs on /run (their
//! rendezvous, /run/rpcbind.sock), rpcbind in a network namespace of its own
//! (its port 111 clashes with nothing), and ganesha in the host's network
//! namespace bound to 127.0.0.1 on free ports. The client never asks rpcbind:
//! it is given the MOUNT and NFS ports.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use c4m_storage::testing::{CleanupGuard, require_root_and};
use c4m_storage::{
    Error, Filesystem, NfsBackend, NfsExport, NfsMounter, ProvisionRequest, VolumeBackend, VolumeId,
};

/// nfs-ganesha and its rpcbind, killed (the whole process group) on drop.
struct Ganesha {
    child: Child,
    export_dir: PathBuf,
    export: NfsExport,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Ganesha {
    fn start(dir: &Path) -> Ganesha {
        let export_dir = dir.join("export");
        let recovery = dir.join("recovery");
        std::fs::create_dir_all(&export_dir).unwrap();
        std::fs::create_dir_all(&recovery).unwrap();
        let (nfs_port, mount_port) = (free_port(), free_port());
        let config = dir.join("ganesha.conf");
        let log = dir.join("ganesha.log");
        std::fs::write(
            &config,
            format!(
                r#"NFS_CORE_PARAM {{
  Bind_addr = 127.0.0.1;
  NFS_Port = {nfs_port};
  MNT_Port = {mount_port};
  NLM_Port = {nlm};
  Rquota_Port = {rquota};
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  Protocols = 3;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {recovery}; }}
EXPORT {{
  Export_Id = 1;
  Path = {export};
  Pseudo = /c4m;
  Access_Type = RW;
  Squash = No_Root_Squash;
  Protocols = 3;
  Transports = TCP;
  SecType = sys;
  FSAL {{ Name = VFS; }}
}}
"#,
                nlm = free_port(),
                rquota = free_port(),
                recovery = recovery.display(),
                export = export_dir.display(),
            ),
        )
        .unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs /run && \
             (unshare --net rpcbind -f &) && \
             for i in $(seq 100); do [ -S /run/rpcbind.sock ] && break; sleep 0.05; done; \
             exec ganesha.nfsd -F -f {config} -L {log} -p {pid} -N NIV_EVENT",
            config = config.display(),
            log = log.display(),
            pid = dir.join("ganesha.pid").display(),
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let ganesha = Ganesha {
            child,
            export: NfsExport {
                host: "127.0.0.1".into(),
                path: export_dir.display().to_string(),
                mount_port,
                nfs_port,
            },
            export_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", mount_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ganesha did not listen on {mount_port}: {}",
                ganesha.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ganesha
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // rpcbind (same process group) and anything left.
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

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
    let ganesha = Ganesha::start(dir.path());
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
