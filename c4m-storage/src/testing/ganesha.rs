//! nfs-ganesha for tests (feature `test-util` with `nfs`): Debian's
//! userspace NFS server, serving a temporary directory over NFSv3.
//!
//! How it runs here: ganesha.nfsd refuses to start unless it can register
//! with rpcbind, and rpcbind always binds port 111. So it starts both in a
//! private mount namespace with a tmpfs on /run (their rendezvous,
//! /run/rpcbind.sock), rpcbind in a network namespace of its own (its port
//! 111 clashes with nothing), and ganesha in the caller's network namespace
//! bound to one address on free ports. Clients never ask rpcbind: they are
//! given the MOUNT and NFS ports.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::NfsExport;

/// nfs-ganesha and its rpcbind, killed (the whole process group) on drop.
#[derive(Debug)]
pub struct Ganesha {
    child: Child,
    /// The exported directory.
    pub export_dir: PathBuf,
    /// How a client reaches the export.
    pub export: NfsExport,
    log: PathBuf,
}

fn free_port(address: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((address, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Ganesha {
    /// Serves a new directory under `dir` over NFSv3 on `address` (its
    /// configuration, log and state in `dir`), on free ports; waits until
    /// its MOUNT service answers. Needs root, nfs-ganesha (with
    /// nfs-ganesha-vfs), rpcbind and unshare.
    pub fn start(dir: &Path, address: Ipv4Addr) -> Ganesha {
        let export_dir = dir.join("export");
        let recovery = dir.join("recovery");
        std::fs::create_dir_all(&export_dir).unwrap();
        std::fs::create_dir_all(&recovery).unwrap();
        let (nfs_port, mount_port) = (free_port(address), free_port(address));
        let config = dir.join("ganesha.conf");
        let log = dir.join("ganesha.log");
        std::fs::write(
            &config,
            format!(
                r#"NFS_CORE_PARAM {{
  Bind_addr = {address};
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
                nlm = free_port(address),
                rquota = free_port(address),
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
                host: address.to_string(),
                path: export_dir.display().to_string(),
                mount_port,
                nfs_port,
            },
            export_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((address, mount_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ganesha did not listen on {mount_port}: {}",
                ganesha.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ganesha
    }

    /// What ganesha logged so far.
    pub fn log_text(&self) -> String {
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
