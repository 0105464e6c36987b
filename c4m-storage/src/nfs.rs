//! The NFS backend: a directory per volume on an NFS export, as
//! nfs-subdir-external-provisioner does. Directories are made and removed
//! with a userspace NFSv3 client (`nfs3_client`), so provisioning needs no
//! kernel NFS client.
//!
//! Mounting ([`NfsMounter`]): with [`NfsMounter::Kernel`] a volume is mounted
//! by mount(8) with `-t nfs -o vers=3` (hosts with a kernel NFS client; not
//! tested here, the build machines have none). With [`NfsMounter::Fuse`] it is
//! a FUSE mount (`fuser`) served by this process over the userspace NFSv3
//! client: it lives as long as the process, so after a crash
//! [`VolumeBackend::reconcile`] detaches dead FUSE mounts and mounts again
//! what the caller stages again.
//!
//! NFS has no per-directory quota: sizes are recorded, not enforced, and
//! expansion only changes the record (as nfs-subdir does). Snapshots are not
//! supported.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow,
    WriteFlags,
};
use nfs3_client::nfs3_types::nfs3::{self, Nfs3Option, Nfs3Result, nfs_fh3, nfsstat3};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Client, Nfs3ConnectionBuilder};
use tokio::net::TcpStream;

use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::sys;
use crate::types::{
    AccessMode, Capabilities, Capacity, Expansion, Filesystem as Fs, ProvisionRequest,
    ReconcileReport, Snapshot, SnapshotId, Volume, VolumeId,
};

const FS_NAME_PREFIX: &str = "c4m-nfs:";
const TTL: Duration = Duration::from_secs(1);
const IO_SIZE: u32 = 128 * 1024;

/// Where the NFS export is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfsExport {
    /// The server's IP address.
    pub host: String,
    /// The exported path, as the MOUNT protocol names it.
    pub path: String,
    /// The MOUNT service's TCP port.
    pub mount_port: u16,
    /// The NFS service's TCP port.
    pub nfs_port: u16,
}

/// How volumes are mounted on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NfsMounter {
    /// The kernel's NFS client via mount(8) (untested here: no kernel client).
    Kernel,
    /// A FUSE mount served by this process over the userspace NFSv3 client.
    Fuse,
}

type Client = Nfs3Client<TokioIo<TcpStream>>;

/// The NFS backend (see the module docs).
pub struct NfsBackend {
    export: NfsExport,
    mounter: NfsMounter,
    sessions: Mutex<HashMap<PathBuf, Session>>,
    /// Where this backend's mounts are: reconcile leaves FUSE mounts
    /// elsewhere (another process's) alone. None: every c4m FUSE mount.
    scope: Option<PathBuf>,
}

impl std::fmt::Debug for NfsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsBackend")
            .field("export", &self.export)
            .field("mounter", &self.mounter)
            .finish()
    }
}

fn status_error(op: &'static str, path: &str, status: nfsstat3) -> Error {
    Error::NfsStatus {
        op,
        path: path.to_owned(),
        status: status.to_string(),
    }
}

fn transport(op: &'static str, path: &str) -> impl FnOnce(nfs3_client::RpcError) -> Error {
    let path = path.to_owned();
    move |e| Error::NfsTransport {
        op,
        path,
        source: Box::new(e),
    }
}

fn ok<T, E>(op: &'static str, path: &str, result: Nfs3Result<T, E>) -> Result<T> {
    match result {
        Nfs3Result::Ok(value) => Ok(value),
        Nfs3Result::Err((status, _)) => Err(status_error(op, path, status)),
    }
}

fn name(bytes: &[u8]) -> nfs3::filename3<'_> {
    nfs3::filename3(Opaque::borrowed(bytes))
}

async fn connect(export: &NfsExport) -> Result<(Client, nfs_fh3)> {
    let credential = auth_unix {
        stamp: 0,
        machinename: Opaque::borrowed(b"c4m"),
        uid: 0,
        gid: 0,
        gids: vec![],
    };
    let connection = Nfs3ConnectionBuilder::new(TokioConnector, &export.host, &export.path)
        .mount_port(export.mount_port)
        .nfs3_port(export.nfs_port)
        .connect_from_privileged_port(false)
        .credential(opaque_auth::auth_unix(&credential))
        .mount()
        .await
        .map_err(|e| Error::NfsTransport {
            op: "MNT",
            path: export.path.clone(),
            source: Box::new(e),
        })?;
    let root = connection.root_nfs_fh3();
    Ok((connection.into_nfs3_client(), root))
}

impl NfsBackend {
    /// A backend on `export`, mounting with `mounter`.
    pub fn new(export: NfsExport, mounter: NfsMounter) -> Self {
        Self {
            export,
            mounter,
            sessions: Mutex::new(HashMap::new()),
            scope: None,
        }
    }

    /// Limits [`reconcile`](VolumeBackend::reconcile) to mounts under
    /// `root`, so several processes on one host (an agent per simulated
    /// node) each repair only their own.
    pub fn within(mut self, root: impl Into<PathBuf>) -> Self {
        self.scope = Some(sys::absolute(&root.into()));
        self
    }

    async fn connect(&self) -> Result<(Client, nfs_fh3)> {
        connect(&self.export).await
    }

    async fn lookup(client: &mut Client, dir: &nfs_fh3, entry: &str) -> Result<Option<nfs_fh3>> {
        let args = nfs3::LOOKUP3args {
            what: nfs3::diropargs3 {
                dir: dir.clone(),
                name: name(entry.as_bytes()),
            },
        };
        match client
            .lookup(&args)
            .await
            .map_err(transport("LOOKUP", entry))?
        {
            Nfs3Result::Ok(found) => Ok(Some(found.object)),
            Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(None),
            Nfs3Result::Err((status, _)) => Err(status_error("LOOKUP", entry, status)),
        }
    }

    /// Removes everything under `dir` (named `path` in errors).
    async fn remove_tree(client: &mut Client, dir: &nfs_fh3, path: &str) -> Result<()> {
        loop {
            let entries = Self::entries(client, dir, path).await?;
            if entries.is_empty() {
                return Ok(());
            }
            for (entry, is_dir, handle) in entries {
                let child = format!("{path}/{entry}");
                if is_dir {
                    if let Some(handle) = handle {
                        Box::pin(Self::remove_tree(client, &handle, &child)).await?;
                    }
                    let args = nfs3::RMDIR3args {
                        object: nfs3::diropargs3 {
                            dir: dir.clone(),
                            name: name(entry.as_bytes()),
                        },
                    };
                    let result = client
                        .rmdir(&args)
                        .await
                        .map_err(transport("RMDIR", &child))?;
                    ok("RMDIR", &child, result)?;
                } else {
                    let args = nfs3::REMOVE3args {
                        object: nfs3::diropargs3 {
                            dir: dir.clone(),
                            name: name(entry.as_bytes()),
                        },
                    };
                    let result = client
                        .remove(&args)
                        .await
                        .map_err(transport("REMOVE", &child))?;
                    ok("REMOVE", &child, result)?;
                }
            }
        }
    }

    /// The entries of a directory (without `.` and `..`): name, is a directory, handle.
    async fn entries(
        client: &mut Client,
        dir: &nfs_fh3,
        path: &str,
    ) -> Result<Vec<(String, bool, Option<nfs_fh3>)>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        let mut cookieverf = nfs3::cookieverf3::default();
        loop {
            let args = nfs3::READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf,
                dircount: IO_SIZE,
                maxcount: IO_SIZE,
            };
            let result = client
                .readdirplus(&args)
                .await
                .map_err(transport("READDIRPLUS", path))?;
            let page = ok("READDIRPLUS", path, result)?;
            let entries = page.reply.entries.into_inner();
            for entry in &entries {
                let entry_name = String::from_utf8_lossy(entry.name.0.as_ref()).into_owned();
                if entry_name == "." || entry_name == ".." {
                    continue;
                }
                let is_dir = matches!(&entry.name_attributes, Nfs3Option::Some(a) if matches!(a.type_, nfs3::ftype3::NF3DIR));
                let handle = match &entry.name_handle {
                    Nfs3Option::Some(h) => Some(h.clone()),
                    Nfs3Option::None => None,
                };
                out.push((entry_name, is_dir, handle));
            }
            if page.reply.eof || entries.is_empty() {
                return Ok(out);
            }
            cookie = entries.last().map(|e| e.cookie).unwrap_or(0);
            cookieverf = page.cookieverf;
        }
    }

    fn volume_of(&self, id: &VolumeId, size_bytes: u64) -> Volume {
        let staged = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, s)| s.fs_name == format!("{FS_NAME_PREFIX}{id}"))
            .map(|(p, _)| p.clone());
        Volume {
            id: id.clone(),
            size_bytes,
            access_mode: AccessMode::ReadWriteMany,
            filesystem: Fs::Nfs,
            source_snapshot: None,
            staged_at: staged,
            published_at: Vec::new(),
        }
    }

    fn fuse_mounts_of(id: Option<&VolumeId>) -> Result<Vec<sys::MountEntry>> {
        Ok(sys::mounts()?
            .into_iter()
            .filter(|m| m.fs_type.starts_with("fuse") && m.source.starts_with(FS_NAME_PREFIX))
            .filter(|m| id.is_none_or(|id| m.source == format!("{FS_NAME_PREFIX}{id}")))
            .collect())
    }
}

#[async_trait]
impl VolumeBackend for NfsBackend {
    fn name(&self) -> &str {
        "nfs"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: false,
            expansion: Expansion::Online,
            enforces_size: false,
            access_modes: vec![
                AccessMode::ReadWriteOnce,
                AccessMode::ReadWriteMany,
                AccessMode::ReadOnlyMany,
            ],
        }
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Volume> {
        if !matches!(req.filesystem, Fs::Nfs) {
            return Err(Error::invalid(
                "filesystem",
                format!(
                    "the nfs backend makes nfs directories, not {}",
                    req.filesystem.as_str()
                ),
            ));
        }
        let (mut client, root) = self.connect().await?;
        if Self::lookup(&mut client, &root, req.id.as_str())
            .await?
            .is_none()
        {
            let attributes = with_mode(0o777);
            let args = nfs3::MKDIR3args {
                where_: nfs3::diropargs3 {
                    dir: root,
                    name: name(req.id.as_str().as_bytes()),
                },
                attributes,
            };
            match client
                .mkdir(&args)
                .await
                .map_err(transport("MKDIR", req.id.as_str()))?
            {
                Nfs3Result::Ok(_) | Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => {}
                Nfs3Result::Err((status, _)) => {
                    return Err(status_error("MKDIR", req.id.as_str(), status));
                }
            }
        }
        Ok(self.volume_of(&req.id, req.size_bytes))
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        let mounts = Self::fuse_mounts_of(Some(id))?;
        if !mounts.is_empty() {
            return Err(Error::InUse {
                id: id.to_string(),
                paths: mounts.into_iter().map(|m| m.mount_point).collect(),
            });
        }
        let (mut client, root) = self.connect().await?;
        let Some(dir) = Self::lookup(&mut client, &root, id.as_str()).await? else {
            return Ok(());
        };
        Self::remove_tree(&mut client, &dir, id.as_str()).await?;
        let args = nfs3::RMDIR3args {
            object: nfs3::diropargs3 {
                dir: root,
                name: name(id.as_str().as_bytes()),
            },
        };
        match client
            .rmdir(&args)
            .await
            .map_err(transport("RMDIR", id.as_str()))?
        {
            Nfs3Result::Ok(_) | Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(()),
            Nfs3Result::Err((status, _)) => Err(status_error("RMDIR", id.as_str(), status)),
        }
    }

    async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        let (mut client, root) = self.connect().await?;
        Ok(Self::lookup(&mut client, &root, id.as_str())
            .await?
            .map(|_| self.volume_of(id, 0)))
    }

    async fn list(&self) -> Result<Vec<Volume>> {
        let (mut client, root) = self.connect().await?;
        let entries = Self::entries(&mut client, &root, &self.export.path).await?;
        Ok(entries
            .into_iter()
            .filter(|(_, is_dir, _)| *is_dir)
            .filter_map(|(entry, _, _)| VolumeId::new(entry).ok())
            .map(|id| self.volume_of(&id, 0))
            .collect())
    }

    async fn stage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let staging = sys::absolute(staging);
        if let Some(existing) = sys::mount_at(&staging)? {
            if existing.source == format!("{FS_NAME_PREFIX}{id}")
                || self.mounter == NfsMounter::Kernel && existing.fs_type.starts_with("nfs")
            {
                return Ok(());
            }
            return Err(Error::invalid(
                "staging path",
                format!(
                    "{} already has {} mounted",
                    staging.display(),
                    existing.source
                ),
            ));
        }
        sys::ensure_dir(&staging)?;
        match self.mounter {
            NfsMounter::Kernel => {
                let export = &self.export;
                let options = format!(
                    "vers=3,proto=tcp,port={},mountport={},mountproto=tcp,nolock",
                    export.nfs_port, export.mount_port
                );
                let source = format!("{}:{}/{id}", export.host, export.path.trim_end_matches('/'));
                sys::run(
                    "mount",
                    [
                        OsStr::new("-t"),
                        OsStr::new("nfs"),
                        OsStr::new("-o"),
                        OsStr::new(&options),
                        OsStr::new(&source),
                        staging.as_os_str(),
                    ],
                )
                .await
                .map(drop)
            }
            NfsMounter::Fuse => {
                let fs_name = format!("{FS_NAME_PREFIX}{id}");
                let (export, volume, mount_at) = (self.export.clone(), id.clone(), staging.clone());
                let name = fs_name.clone();
                // The FUSE thread drives its own runtime, so a caller blocked in
                // a read on the mount never starves the NFS connection.
                let session =
                    tokio::task::spawn_blocking(move || -> Result<fuser::BackgroundSession> {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| Error::io("start fuse runtime", &mount_at, e))?;
                        let (client, dir) = runtime.block_on(async {
                            let (mut client, root) = connect(&export).await?;
                            let dir = Self::lookup(&mut client, &root, volume.as_str())
                                .await?
                                .ok_or_else(|| Error::NotFound {
                                    kind: "volume",
                                    id: volume.to_string(),
                                })?;
                            Ok::<_, Error>((client, dir))
                        })?;
                        let fs = NfsFuse::new(runtime, client, dir, &name)?;
                        let mut config = fuser::Config::default();
                        config.mount_options = vec![
                            MountOption::FSName(name),
                            MountOption::Subtype("c4m-nfs".into()),
                        ];
                        config.acl = SessionACL::All;
                        fuser::Session::new(fs, &mount_at, &config)
                            .and_then(|s| s.spawn())
                            .map_err(|e| Error::io("mount fuse", &mount_at, e))
                    })
                    .await
                    .map_err(|e| Error::io("mount fuse", &staging, std::io::Error::other(e)))??;
                self.sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        staging,
                        Session {
                            _session: session,
                            fs_name,
                        },
                    );
                Ok(())
            }
        }
    }

    async fn unstage(&self, _id: &VolumeId, staging: &Path) -> Result<()> {
        let staging = sys::absolute(staging);
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&staging);
        match session {
            Some(session) => {
                // Dropping the session unmounts and joins its thread.
                tokio::task::spawn_blocking(move || drop(session))
                    .await
                    .map_err(|e| Error::io("unmount fuse", &staging, std::io::Error::other(e)))?;
                sys::unmount(&staging).map(drop)
            }
            None => sys::unmount(&staging).map(drop),
        }
    }

    async fn publish(
        &self,
        _id: &VolumeId,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        if sys::mount_at(target)?.is_some() {
            return Ok(());
        }
        sys::ensure_dir(target)?;
        sys::bind_mount(staging, target, read_only)
    }

    async fn unpublish(&self, _id: &VolumeId, target: &Path) -> Result<()> {
        sys::unmount(target)?;
        let _ = std::fs::remove_dir(target);
        Ok(())
    }

    async fn expand(&self, _id: &VolumeId, size_bytes: u64) -> Result<u64> {
        // No quota to grow: the size is only recorded by the caller.
        Ok(size_bytes)
    }

    async fn snapshot(&self, _id: &VolumeId, _snapshot: &SnapshotId) -> Result<Snapshot> {
        Err(Error::Unsupported {
            backend: "nfs",
            what: "snapshots",
        })
    }

    async fn delete_snapshot(&self, _snapshot: &SnapshotId) -> Result<()> {
        Err(Error::Unsupported {
            backend: "nfs",
            what: "snapshots",
        })
    }

    async fn get_snapshot(&self, _snapshot: &SnapshotId) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn restore(&self, _snapshot: &SnapshotId, _req: &ProvisionRequest) -> Result<Volume> {
        Err(Error::Unsupported {
            backend: "nfs",
            what: "restore from snapshot",
        })
    }

    async fn capacity(&self) -> Result<Capacity> {
        let (mut client, root) = self.connect().await?;
        let result = client
            .fsstat(&nfs3::FSSTAT3args { fsroot: root })
            .await
            .map_err(transport("FSSTAT", &self.export.path))?;
        let stat = ok("FSSTAT", &self.export.path, result)?;
        Ok(Capacity {
            available_bytes: stat.abytes,
            total_bytes: stat.tbytes,
        })
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let live: Vec<PathBuf> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        // FUSE mounts of a process that died answer ENOTCONN: detach them.
        let in_scope = |path: &Path| {
            self.scope
                .as_ref()
                .is_none_or(|root| path.starts_with(root))
        };
        for mount in Self::fuse_mounts_of(None)? {
            if in_scope(&mount.mount_point)
                && !live.contains(&mount.mount_point)
                && sys::unmount(&mount.mount_point)?
            {
                report.unmounted.push(mount.mount_point);
            }
        }
        Ok(report)
    }
}

/// A live FUSE mount: dropping it unmounts and joins its thread.
struct Session {
    _session: fuser::BackgroundSession,
    fs_name: String,
}

/// A FUSE filesystem over one directory of an NFS export.
struct NfsFuse {
    runtime: tokio::runtime::Runtime,
    client: tokio::sync::Mutex<Client>,
    inodes: Mutex<Inodes>,
    name: String,
}

/// FUSE inode numbers are NFS file ids, except the volume's root, which is 1.
struct Inodes {
    root_fileid: u64,
    handles: HashMap<u64, nfs_fh3>,
}

impl NfsFuse {
    fn new(
        runtime: tokio::runtime::Runtime,
        mut client: Client,
        root: nfs_fh3,
        name: &str,
    ) -> Result<Self> {
        let result = runtime
            .block_on(client.getattr(&nfs3::GETATTR3args {
                object: root.clone(),
            }))
            .map_err(transport("GETATTR", name))?;
        let attr = ok("GETATTR", name, result)?.obj_attributes;
        let handles = HashMap::from([(1, root)]);
        Ok(Self {
            runtime,
            client: tokio::sync::Mutex::new(client),
            inodes: Mutex::new(Inodes {
                root_fileid: attr.fileid,
                handles,
            }),
            name: name.to_owned(),
        })
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, ino: INodeNo) -> std::result::Result<nfs_fh3, Errno> {
        self.inodes()
            .handles
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ESTALE)
    }

    fn ino(&self, fileid: u64) -> u64 {
        if fileid == self.inodes().root_fileid {
            1
        } else {
            fileid
        }
    }

    fn remember(&self, attr: &nfs3::fattr3, handle: nfs_fh3) -> FileAttr {
        let ino = self.ino(attr.fileid);
        self.inodes().handles.insert(ino, handle);
        self.attr(attr)
    }

    fn attr(&self, a: &nfs3::fattr3) -> FileAttr {
        let time =
            |t: &nfs3::nfstime3| UNIX_EPOCH + Duration::new(u64::from(t.seconds), t.nseconds);
        let kind = match a.type_ {
            nfs3::ftype3::NF3DIR => FileType::Directory,
            nfs3::ftype3::NF3LNK => FileType::Symlink,
            nfs3::ftype3::NF3BLK => FileType::BlockDevice,
            nfs3::ftype3::NF3CHR => FileType::CharDevice,
            nfs3::ftype3::NF3SOCK => FileType::Socket,
            nfs3::ftype3::NF3FIFO => FileType::NamedPipe,
            _ => FileType::RegularFile,
        };
        FileAttr {
            ino: INodeNo(self.ino(a.fileid)),
            size: a.size,
            blocks: a.used.div_ceil(512),
            atime: time(&a.atime),
            mtime: time(&a.mtime),
            ctime: time(&a.ctime),
            crtime: time(&a.ctime),
            kind,
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: IO_SIZE,
            flags: 0,
        }
    }

    /// Runs an NFS call on the runtime; an RPC failure is EIO, an NFS status its errno.
    fn call<T, F>(&self, op: &'static str, f: F) -> std::result::Result<T, Errno>
    where
        F: AsyncFnOnce(&mut Client) -> std::result::Result<T, Errno>,
    {
        let result = self.runtime.block_on(async {
            let mut client = self.client.lock().await;
            f(&mut client).await
        });
        if let Err(errno) = &result {
            tracing::debug!(volume = %self.name, op, ?errno, "nfs call failed");
        }
        result
    }

    fn lookup_attr(
        &self,
        parent: &nfs_fh3,
        entry: &[u8],
    ) -> std::result::Result<(nfs_fh3, nfs3::fattr3), Errno> {
        let args = nfs3::LOOKUP3args {
            what: nfs3::diropargs3 {
                dir: parent.clone(),
                name: name(entry),
            },
        };
        self.call("LOOKUP", async move |c| {
            let found = nfs_ok(c.lookup(&args).await)?;
            let attr = match found.obj_attributes {
                Nfs3Option::Some(a) => a,
                Nfs3Option::None => {
                    nfs_ok(
                        c.getattr(&nfs3::GETATTR3args {
                            object: found.object.clone(),
                        })
                        .await,
                    )?
                    .obj_attributes
                }
            };
            Ok((found.object, attr))
        })
    }

    /// REMOVE (a file) or RMDIR (a directory) of `entry` in `parent`.
    fn remove_entry(
        &self,
        parent: INodeNo,
        entry: &[u8],
        is_dir: bool,
    ) -> std::result::Result<(), Errno> {
        let object = nfs3::diropargs3 {
            dir: self.handle(parent)?,
            name: name(entry),
        };
        if is_dir {
            let args = nfs3::RMDIR3args { object };
            self.call("RMDIR", async move |c| {
                nfs_ok(c.rmdir(&args).await).map(drop)
            })
        } else {
            let args = nfs3::REMOVE3args { object };
            self.call("REMOVE", async move |c| {
                nfs_ok(c.remove(&args).await).map(drop)
            })
        }
    }

    fn created(
        &self,
        handle: Nfs3Option<nfs_fh3>,
        attr: Nfs3Option<nfs3::fattr3>,
        parent: &nfs_fh3,
        entry: &[u8],
    ) -> std::result::Result<FileAttr, Errno> {
        match (handle, attr) {
            (Nfs3Option::Some(h), Nfs3Option::Some(a)) => Ok(self.remember(&a, h)),
            _ => {
                let (h, a) = self.lookup_attr(parent, entry)?;
                Ok(self.remember(&a, h))
            }
        }
    }
}

/// Attributes that set only the mode.
fn with_mode(mode: u32) -> nfs3::sattr3 {
    nfs3::sattr3 {
        mode: Nfs3Option::Some(mode),
        ..Default::default()
    }
}

fn errno(status: nfsstat3) -> Errno {
    Errno::from_i32(match status {
        nfsstat3::NFS3ERR_PERM => nix::libc::EPERM,
        nfsstat3::NFS3ERR_NOENT => nix::libc::ENOENT,
        nfsstat3::NFS3ERR_ACCES => nix::libc::EACCES,
        nfsstat3::NFS3ERR_EXIST => nix::libc::EEXIST,
        nfsstat3::NFS3ERR_NOTDIR => nix::libc::ENOTDIR,
        nfsstat3::NFS3ERR_ISDIR => nix::libc::EISDIR,
        nfsstat3::NFS3ERR_INVAL => nix::libc::EINVAL,
        nfsstat3::NFS3ERR_FBIG => nix::libc::EFBIG,
        nfsstat3::NFS3ERR_NOSPC => nix::libc::ENOSPC,
        nfsstat3::NFS3ERR_ROFS => nix::libc::EROFS,
        nfsstat3::NFS3ERR_NAMETOOLONG => nix::libc::ENAMETOOLONG,
        nfsstat3::NFS3ERR_NOTEMPTY => nix::libc::ENOTEMPTY,
        nfsstat3::NFS3ERR_DQUOT => nix::libc::EDQUOT,
        nfsstat3::NFS3ERR_STALE => nix::libc::ESTALE,
        nfsstat3::NFS3ERR_NOTSUPP => nix::libc::EOPNOTSUPP,
        _ => nix::libc::EIO,
    })
}

fn nfs_ok<T, E>(
    result: std::result::Result<Nfs3Result<T, E>, nfs3_client::RpcError>,
) -> std::result::Result<T, Errno> {
    match result {
        Ok(Nfs3Result::Ok(value)) => Ok(value),
        Ok(Nfs3Result::Err((status, _))) => Err(errno(status)),
        Err(_) => Err(Errno::EIO),
    }
}

fn nfs_time(t: Option<TimeOrNow>) -> (nfs3::set_atime, nfs3::set_mtime) {
    match t {
        None => (nfs3::set_atime::DONT_CHANGE, nfs3::set_mtime::DONT_CHANGE),
        Some(TimeOrNow::Now) => (
            nfs3::set_atime::SET_TO_SERVER_TIME,
            nfs3::set_mtime::SET_TO_SERVER_TIME,
        ),
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            let time = nfs3::nfstime3 {
                seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
                nseconds: d.subsec_nanos(),
            };
            (
                nfs3::set_atime::SET_TO_CLIENT_TIME(time),
                nfs3::set_mtime::SET_TO_CLIENT_TIME(time),
            )
        }
    }
}

impl Filesystem for NfsFuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, entry: &OsStr, reply: ReplyEntry) {
        let result = self
            .handle(parent)
            .and_then(|dir| self.lookup_attr(&dir, entry.as_encoded_bytes()))
            .map(|(h, a)| self.remember(&a, h));
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.handle(ino).and_then(|object| {
            self.call("GETATTR", async move |c| {
                Ok(nfs_ok(c.getattr(&nfs3::GETATTR3args { object }).await)?.obj_attributes)
            })
        });
        match result {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let opt = |v: Option<u32>| v.map_or(Nfs3Option::None, Nfs3Option::Some);
        let attributes = nfs3::sattr3 {
            mode: opt(mode.map(|m| m & 0o7777)),
            uid: opt(uid),
            gid: opt(gid),
            size: size.map_or(Nfs3Option::None, Nfs3Option::Some),
            atime: nfs_time(atime).0,
            mtime: nfs_time(mtime).1,
        };
        let result = self.handle(ino).and_then(|object| {
            self.call("SETATTR", async move |c| {
                let args = nfs3::SETATTR3args {
                    object: object.clone(),
                    new_attributes: attributes,
                    guard: Nfs3Option::None,
                };
                nfs_ok(c.setattr(&args).await)?;
                Ok(nfs_ok(c.getattr(&nfs3::GETATTR3args { object }).await)?.obj_attributes)
            })
        });
        match result {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        entry: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let bytes = entry.as_encoded_bytes().to_vec();
        let result = self.handle(parent).and_then(|dir| {
            let attributes = with_mode(mode & !umask & 0o7777);
            let args = nfs3::MKDIR3args {
                where_: nfs3::diropargs3 {
                    dir: dir.clone(),
                    name: name(&bytes),
                },
                attributes,
            };
            let made = self.call("MKDIR", async move |c| nfs_ok(c.mkdir(&args).await))?;
            self.created(made.obj, made.obj_attributes, &dir, &bytes)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, entry: &OsStr, reply: ReplyEmpty) {
        match self.remove_entry(parent, entry.as_encoded_bytes(), false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, entry: &OsStr, reply: ReplyEmpty) {
        match self.remove_entry(parent, entry.as_encoded_bytes(), true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        entry: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.handle(parent).and_then(|from| {
            let to = self.handle(newparent)?;
            let args = nfs3::RENAME3args {
                from: nfs3::diropargs3 {
                    dir: from,
                    name: name(entry.as_encoded_bytes()),
                },
                to: nfs3::diropargs3 {
                    dir: to,
                    name: name(newname.as_encoded_bytes()),
                },
            };
            self.call("RENAME", async move |c| {
                nfs_ok(c.rename(&args).await).map(drop)
            })
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.handle(ino).and_then(|file| {
            self.call("READ", async move |c| {
                let mut data = Vec::with_capacity(size as usize);
                while data.len() < size as usize {
                    let count = (size - data.len() as u32).min(IO_SIZE);
                    let args = nfs3::READ3args {
                        file: file.clone(),
                        offset: offset + data.len() as u64,
                        count,
                    };
                    let chunk = nfs_ok(c.read(&args).await)?;
                    data.extend_from_slice(chunk.data.as_ref());
                    if chunk.eof || chunk.count == 0 {
                        break;
                    }
                }
                Ok(data)
            })
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.handle(ino).and_then(|file| {
            self.call("WRITE", async move |c| {
                let mut written = 0usize;
                while written < data.len() {
                    let end = (written + IO_SIZE as usize).min(data.len());
                    // FILE_SYNC: once the write returns it is on the server's disk,
                    // so fsync has nothing left to do.
                    let args = nfs3::WRITE3args {
                        file: file.clone(),
                        offset: offset + written as u64,
                        count: (end - written) as u32,
                        stable: nfs3::stable_how::FILE_SYNC,
                        data: Opaque::borrowed(&data[written..end]),
                    };
                    let done = nfs_ok(c.write(&args).await)?;
                    if done.count == 0 {
                        return Err(Errno::EIO);
                    }
                    written += done.count as usize;
                }
                Ok(written as u32)
            })
        });
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.handle(ino).and_then(|dir| {
            self.call("READDIRPLUS", async move |c| {
                let mut out = Vec::new();
                let mut cookie = 0;
                let mut cookieverf = nfs3::cookieverf3::default();
                loop {
                    let args = nfs3::READDIRPLUS3args {
                        dir: dir.clone(),
                        cookie,
                        cookieverf,
                        dircount: IO_SIZE,
                        maxcount: IO_SIZE,
                    };
                    let page = nfs_ok(c.readdirplus(&args).await)?;
                    let entries = page.reply.entries.into_inner();
                    for e in &entries {
                        let attr = match &e.name_attributes {
                            Nfs3Option::Some(a) => Some(a.clone()),
                            Nfs3Option::None => None,
                        };
                        let handle = match &e.name_handle {
                            Nfs3Option::Some(h) => Some(h.clone()),
                            Nfs3Option::None => None,
                        };
                        out.push((e.fileid, e.name.0.to_vec(), attr, handle));
                    }
                    if page.reply.eof || entries.is_empty() {
                        return Ok(out);
                    }
                    cookie = entries.last().map(|e| e.cookie).unwrap_or(0);
                    cookieverf = page.cookieverf;
                }
            })
        });
        let entries = match result {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (index, (fileid, entry, attr, handle)) in
            entries.into_iter().enumerate().skip(offset as usize)
        {
            let kind = match &attr {
                Some(a) if matches!(a.type_, nfs3::ftype3::NF3DIR) => FileType::Directory,
                Some(a) if matches!(a.type_, nfs3::ftype3::NF3LNK) => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            if let (Some(a), Some(h)) = (&attr, handle)
                && entry != b"."
                && entry != b".."
            {
                self.remember(a, h);
            }
            let ino = if entry == b"." {
                ino.0
            } else {
                self.ino(fileid)
            };
            if reply.add(
                INodeNo(ino),
                (index + 1) as u64,
                kind,
                OsStr::from_bytes(&entry),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let result = self.handle(ino).and_then(|fsroot| {
            self.call("FSSTAT", async move |c| {
                nfs_ok(c.fsstat(&nfs3::FSSTAT3args { fsroot }).await)
            })
        });
        match result {
            Ok(s) => {
                let block = u64::from(IO_SIZE);
                reply.statfs(
                    s.tbytes / block,
                    s.fbytes / block,
                    s.abytes / block,
                    s.tfiles,
                    s.ffiles,
                    IO_SIZE,
                    255,
                    IO_SIZE,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        entry: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let bytes = entry.as_encoded_bytes().to_vec();
        let result = self.handle(parent).and_then(|dir| {
            let attributes = with_mode(mode & !umask & 0o7777);
            let args = nfs3::CREATE3args {
                where_: nfs3::diropargs3 {
                    dir: dir.clone(),
                    name: name(&bytes),
                },
                how: nfs3::createhow3::UNCHECKED(attributes),
            };
            let made = self.call("CREATE", async move |c| nfs_ok(c.create(&args).await))?;
            self.created(made.obj, made.obj_attributes, &dir, &bytes)
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

use std::os::unix::ffi::OsStrExt;
