//! A pod's volumes on its node, as the kubelet's volume manager makes them:
//! set up before its first container starts, bound into each container as
//! its `volumeMounts` say, torn down once its containers are gone.
//!
//! ```text
//! <data>/pod-volumes/<pod id>/uid              the pod's uid (claims are keyed by it)
//! <data>/pod-volumes/<pod id>/scratch.json     sized file systems made for it (ids, directories)
//! <data>/pod-volumes/<pod id>/volumes/<name>/  each volume's directory
//! <data>/pod-volumes/<pod id>/layers/<name>/   a container's bounded writable layer
//! <data>/pod-volumes/<pod id>/subpaths/<container>/<i>   bind mounts of checked subPaths
//! ```
//!
//! - `emptyDir`: a plain directory; with `sizeLimit`, a loop ext4 file
//!   system of that size ([`ScratchDirs`]): a write past it is ENOSPC,
//!   nothing is evicted; `medium: Memory`: a tmpfs of `sizeLimit`, else the
//!   pod's memory limit, else the node's memory.
//! - configMap, secret, projected, downwardAPI: the files the control plane
//!   resolved ([`ResolvedVolume::Files`]), written as the kubelet's
//!   AtomicWriter does and rewritten in place when an assignment carries
//!   others (no container restarts; subPath mounts keep what they had).
//! - hostPath: the node's path itself (the API lets only privileged
//!   containers mount one), checked against its `type`.
//! - persistentVolumeClaim and ephemeral: [`ClaimMounts`] mounts the claim's
//!   volume at the volume's directory.
//! - A container's `resources.limits.ephemeral-storage`: its writable layer
//!   on a sized file system too ([`ContainerSpec::writable_layer`]).
//!
//! Sized file systems are listed in `scratch.json` before they are made,
//! so that teardown (also of a pod dir found orphaned after a restart)
//! removes each, whatever step a crash stopped at.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use c4m_core::annotations::RESOLVED_VOLUMES;
use c4m_core::mounts::{EPHEMERAL_STORAGE, expand_sub_path_expr, relative_sub_path};
use c4m_core::volumes::ResolvedVolume;
use c4m_core::{ContainerSpec, Instance, Mount, MountPropagation};
use c4m_storage::pod::{
    AtomicWriter, FileProjection, HostPathType, ScratchDirs, check_host_path, mount_memory_dir,
    unmount_memory_dir,
};
use c4m_storage::{LocalBackend, MIN_VOLUME_BYTES, VolumeBackend, VolumeId};
use k8s_openapi::api::core::v1::{Container, Volume};
use nix::mount::{MntFlags, MsFlags};

use crate::claims::ClaimMounts;

/// Why a pod's volumes are not ready: its containers wait in
/// `ContainerCreating` with this message, and the pod gets an Event
/// `FailedMount` carrying it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotMounted(pub String);

/// Why the directory of pod volumes cannot be made a shared mount.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The directory of pod volumes.
    #[error("pod volumes directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Making it a shared mount.
    #[error("making {} a shared mount: {source}", path.display())]
    Shared {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Where each of a pod's volumes is on the node, by volume name.
pub(crate) type VolumeDirs = BTreeMap<String, VolumeDir>;

/// One volume of a pod on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeDir {
    /// Its directory (or a hostPath's file).
    pub path: PathBuf,
    /// Mounted read-only whatever `volumeMounts` say: files from the API
    /// (configMap, secret, projected, downwardAPI), as the kubelet mounts
    /// them, and a claim asked read-only.
    pub read_only: bool,
}

/// The node's pod volumes.
#[derive(Debug, Clone)]
pub(crate) struct PodVolumes {
    /// `<data>/pod-volumes`.
    root: PathBuf,
    /// Sized file systems (`emptyDir.sizeLimit`, ephemeral-storage), or
    /// why this node has none (not root, no losetup).
    scratch: Result<ScratchDirs, String>,
    /// The node's persistent volumes.
    claims: Arc<dyn ClaimMounts>,
    /// The node's memory, the size of a memory `emptyDir` nothing bounds.
    node_memory: u64,
    /// Pods whose containers are being removed: their volumes go after.
    removing: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// One sized file system made for a pod (a line of `scratch.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Scratch {
    id: String,
    dir: PathBuf,
}

impl PodVolumes {
    /// Pod volumes under `data_dir/pod-volumes`, sized ones in a loop pool
    /// at `data_dir/pod-scratch` (repaired from its records first), claims
    /// through `claims`.
    pub(crate) async fn open(
        data_dir: &Path,
        claims: Arc<dyn ClaimMounts>,
        node_memory: u64,
    ) -> PodVolumes {
        let scratch = async {
            let local = LocalBackend::open(data_dir.join("pod-scratch"))?;
            let report = local.reconcile().await?;
            if !report.is_clean() {
                tracing::info!(?report, "repaired the pods' sized file systems");
            }
            Ok::<_, c4m_storage::Error>(ScratchDirs::new(Arc::new(local)))
        };
        let scratch = scratch.await.map_err(|e| {
            tracing::warn!(error = %e, "no sized emptyDirs or ephemeral-storage limits on this node");
            format!("this node cannot make sized file systems: {e}")
        });
        PodVolumes {
            root: data_dir.join("pod-volumes"),
            scratch,
            claims,
            node_memory,
            removing: Arc::default(),
        }
    }

    /// Makes the directory of pod volumes a shared mount ([`make_shared`]),
    /// so that `mountPropagation` works: done the first time a container
    /// asks for propagation, the node left as it was until then.
    fn share_root(&self) -> Result<(), OpenError> {
        make_shared(&self.root)
    }

    fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.root.join(pod_id)
    }

    /// Makes every volume of `pod` (id `pod_id`) ready, or says why one
    /// cannot be yet. Idempotent: an adopted pod's volumes are found as
    /// they are, and its files brought up to date.
    pub(crate) async fn set_up(
        &self,
        pod_id: &str,
        pod: &Instance,
    ) -> Result<VolumeDirs, NotMounted> {
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let resolved = resolved_volumes(pod)?;
        // What cannot be set up yet is told before anything is made (the
        // supervisor asks again every tick).
        for volume in &volumes {
            match resolved.get(&volume.name) {
                Some(ResolvedVolume::Waiting { message }) => {
                    return Err(NotMounted(message.clone()));
                }
                None if needs_resolution(volume) => {
                    return Err(NotMounted(format!(
                        "volume {:?} is not resolved yet",
                        volume.name
                    )));
                }
                _ => {}
            }
        }
        let dir = self.pod_dir(pod_id);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        write_uid(&dir, &uid).map_err(|e| {
            NotMounted(format!(
                "cannot make the pod's volume directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut dirs = VolumeDirs::new();
        for volume in &volumes {
            let target = dir.join("volumes").join(&volume.name);
            let failed = |why: String| {
                NotMounted(format!(
                    "MountVolume.SetUp failed for volume {:?}: {why}",
                    volume.name
                ))
            };
            let mut read_only = false;
            let path = if let Some(empty) = &volume.empty_dir {
                let size = empty
                    .size_limit
                    .as_ref()
                    .map(|q| c4m_core::parse_memory_bytes(&q.0))
                    .transpose()
                    .map_err(|e| failed(format!("sizeLimit: {e}")))?;
                if empty.medium.as_deref() == Some("Memory") {
                    let size = size
                        .or_else(|| pod_memory_limit(pod))
                        .unwrap_or(self.node_memory);
                    mount_memory_dir(&target, size, 0o777).map_err(|e| failed(e.to_string()))?;
                } else if let Some(size) = size {
                    self.sized_dir(pod_id, &uid, "e", &volume.name, size, &target)
                        .await
                        .map_err(failed)?;
                } else {
                    plain_dir(&target).map_err(|e| failed(e.to_string()))?;
                }
                target
            } else if let Some(host) = &volume.host_path {
                let kind = host_path_type(host.type_.as_deref()).map_err(failed)?;
                let path = PathBuf::from(&host.path);
                check_host_path(&path, kind).map_err(|e| failed(e.to_string()))?;
                path
            } else {
                match resolved.get(&volume.name) {
                    Some(ResolvedVolume::Files { files }) => {
                        write_files(&target, files).map_err(failed)?;
                        read_only = true;
                        target
                    }
                    Some(ResolvedVolume::Claim {
                        source,
                        read_only: read_only_claim,
                        ..
                    }) => {
                        self.claims
                            .mount(&uid, &volume.name, source, *read_only_claim, &target)
                            .await
                            .map_err(NotMounted)?;
                        read_only = *read_only_claim;
                        target
                    }
                    Some(ResolvedVolume::Waiting { .. }) | None => {
                        return Err(failed(
                            "this node does not know its volume source".to_string(),
                        ));
                    }
                }
            };
            dirs.insert(volume.name.clone(), VolumeDir { path, read_only });
        }
        Ok(dirs)
    }

    /// Rewrites the files of `pod`'s projected volumes that its newest
    /// assignment carries, in place (the containers see them change); a
    /// volume now `Waiting` (its ConfigMap deleted) keeps its files, as the
    /// kubelet keeps them.
    pub(crate) fn refresh_files(&self, pod_id: &str, pod: &Instance) -> Result<(), NotMounted> {
        let resolved = resolved_volumes(pod)?;
        let declared = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let declared = |name: &str| declared.is_some_and(|v| v.iter().any(|v| v.name == name));
        for (name, volume) in resolved {
            if let ResolvedVolume::Files { files } = volume
                && declared(&name)
            {
                let target = self.pod_dir(pod_id).join("volumes").join(&name);
                write_files(&target, &files).map_err(|why| {
                    NotMounted(format!(
                        "MountVolume.SetUp failed for volume {name:?}: {why}"
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// The mounts of `container` (whose environment is `spec.env`) from the
    /// pod's volume directories `dirs`: each `volumeMounts` entry, with its
    /// `subPath` (or expanded `subPathExpr`) resolved inside its volume and
    /// bound under the pod's directory, so that a symbolic link swapped in
    /// later cannot lead the container's mount out of the volume.
    pub(crate) fn mounts_for(
        &self,
        pod_id: &str,
        container: &Container,
        spec: &ContainerSpec,
        dirs: &VolumeDirs,
        field: &str,
    ) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::new();
        for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
            let field = format!("{field}.volumeMounts[{i}]");
            let volume = dirs
                .get(&mount.name)
                .ok_or_else(|| format!("{field}.name: no volume {:?}", mount.name))?;
            let root = &volume.path;
            let sub_path = match (
                mount.sub_path.as_deref().filter(|s| !s.is_empty()),
                mount.sub_path_expr.as_deref().filter(|s| !s.is_empty()),
            ) {
                (Some(sub_path), _) => Some(
                    relative_sub_path(sub_path)
                        .map(str::to_string)
                        .map_err(|why| format!("{field}.subPath: {why}"))?,
                ),
                (None, Some(expr)) => Some(
                    expand_sub_path_expr(expr, &spec.env)
                        .map_err(|why| format!("{field}.subPathExpr: {why}"))?,
                ),
                (None, None) => None,
            };
            let source = match sub_path {
                Some(sub_path) => {
                    let bound = self
                        .pod_dir(pod_id)
                        .join("subpaths")
                        .join(&container.name)
                        .join(i.to_string());
                    bind_sub_path(root, &sub_path, &bound).map_err(|why| {
                        format!(
                            "{field}: subPath {sub_path:?} of volume {:?}: {why}",
                            mount.name
                        )
                    })?;
                    bound
                }
                None => root.clone(),
            };
            let propagation = MountPropagation::of(mount.mount_propagation.as_deref())
                .map_err(|why| format!("{field}.mountPropagation: {why}"))?;
            if propagation != MountPropagation::None {
                self.share_root()
                    .map_err(|e| format!("{field}.mountPropagation: {e}"))?;
            }
            mounts.push(Mount {
                source,
                destination: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only.unwrap_or(false) || volume.read_only,
                propagation,
            });
        }
        Ok(mounts)
    }

    /// The writable layer of `container` when it has an ephemeral-storage
    /// limit: a sized file system made for it (fresh for each pod, kept
    /// across its restarts; the driver empties it at each start).
    pub(crate) async fn writable_layer(
        &self,
        pod_id: &str,
        pod: &Instance,
        container: &Container,
        field: &str,
    ) -> Result<Option<PathBuf>, String> {
        let Some(limit) = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(EPHEMERAL_STORAGE))
        else {
            return Ok(None);
        };
        let size = c4m_core::parse_memory_bytes(&limit.0)
            .map_err(|e| format!("{field}.resources.limits.{EPHEMERAL_STORAGE}: {e}"))?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let target = self.pod_dir(pod_id).join("layers").join(&container.name);
        self.sized_dir(pod_id, &uid, "l", &container.name, size, &target)
            .await
            .map_err(|why| format!("{field}.resources.limits.{EPHEMERAL_STORAGE}: {why}"))?;
        Ok(Some(target))
    }

    /// A sized file system `kind`/`name` of the pod at `target`, listed
    /// in its `scratch.json` before it is made.
    async fn sized_dir(
        &self,
        pod_id: &str,
        uid: &str,
        kind: &str,
        name: &str,
        size: u64,
        target: &Path,
    ) -> Result<(), String> {
        let dirs = self.scratch.as_ref().map_err(Clone::clone)?;
        let safe_uid: String = uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let id = format!("pod-{safe_uid}-{kind}-{name}");
        let volume = VolumeId::new(id.clone()).map_err(|e| e.to_string())?;
        let list = self.pod_dir(pod_id).join("scratch.json");
        let mut listed = read_scratch(&list).map_err(|e| e.to_string())?;
        let entry = Scratch {
            id,
            dir: target.to_path_buf(),
        };
        if !listed.contains(&entry) {
            listed.push(entry);
            let json = serde_json::to_vec(&listed).map_err(|e| e.to_string())?;
            c4m_storage::write_atomically(&list, &json).map_err(|e| e.to_string())?;
        }
        // ext4 needs room for its own metadata: smaller limits get the
        // smallest file system.
        let size = size.max(MIN_VOLUME_BYTES);
        dirs.create_dir(&volume, size, target)
            .await
            .map_err(|e| e.to_string())?;
        // Writable by the containers' users, as Kubernetes makes emptyDirs.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", target.display()))
    }

    /// Undoes everything made for the pod `pod_id` (its containers are
    /// gone): claims given back, subPath binds, memory and sized file
    /// systems unmounted and deleted, its directory removed. Idempotent;
    /// what fails is logged and left for the next call.
    pub(crate) async fn tear_down(&self, pod_id: &str) -> bool {
        let dir = self.pod_dir(pod_id);
        if !dir.exists() {
            return true;
        }
        let clean = std::sync::atomic::AtomicBool::new(true);
        let fail = |what: &str, error: &dyn std::fmt::Display| {
            tracing::warn!(pod = %pod_id, error = %error, "cannot {what}");
            clean.store(false, std::sync::atomic::Ordering::Relaxed);
        };
        if let Ok(uid) = std::fs::read_to_string(dir.join("uid"))
            && let Err(e) = self.claims.unmount_pod(uid.trim()).await
        {
            fail("give back the pod's claims", &e);
        }
        for bound in children(&dir.join("subpaths"))
            .into_iter()
            .flat_map(|c| children(&c))
        {
            if let Err(e) = unbind(&bound) {
                fail("unbind a subPath", &e);
            }
        }
        // What containers mounted inside a volume and propagated to the
        // node (mountPropagation: Bidirectional), deepest first.
        for volume in children(&dir.join("volumes")) {
            for nested in mounts_under(&volume).into_iter().rev() {
                if let Err(e) = unbind(&nested) {
                    fail("unmount what a container mounted in a volume", &e);
                }
            }
        }
        match read_scratch(&dir.join("scratch.json")) {
            Ok(listed) => {
                for scratch in listed {
                    let removed = match VolumeId::new(scratch.id.clone()) {
                        Ok(id) => match &self.scratch {
                            Ok(dirs) => dirs
                                .remove_dir(&id, &scratch.dir)
                                .await
                                .map_err(|e| e.to_string()),
                            Err(why) => Err(why.clone()),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = removed {
                        fail("remove a sized file system", &e);
                    }
                }
            }
            Err(e) => fail("read the pod's sized file systems", &e),
        }
        for volume in children(&dir.join("volumes")) {
            // A memory emptyDir (or anything else left mounted there).
            if let Err(e) = unmount_memory_dir(&volume) {
                fail("unmount a volume", &e);
            }
        }
        if !clean.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        if let Err(e) = remove_unmounted(&dir) {
            fail("remove the pod's volume directory", &e);
            return false;
        }
        true
    }

    /// Marks pod `pod_id`'s containers as being removed: the sweep of
    /// [`PodVolumes::tear_down_orphans`] leaves its volumes until
    /// [`PodVolumes::removed`].
    pub(crate) fn removing(&self, pod_id: &str) {
        self.removing_set().insert(pod_id.to_string());
    }

    /// Pod `pod_id`'s containers are gone: tears its volumes down.
    pub(crate) async fn removed(&self, pod_id: &str) {
        self.tear_down(pod_id).await;
        self.removing_set().remove(pod_id);
    }

    fn removing_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.removing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tears down the volumes of pods not in `keep` and whose containers
    /// are not being removed: those of pods that ended while no agent ran
    /// or whose teardown failed before.
    pub(crate) async fn tear_down_orphans(&self, keep: &HashSet<String>) {
        let pods: Vec<String> = children(&self.root)
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|pod| !keep.contains(pod))
            .collect();
        for pod in pods {
            if self.removing_set().contains(&pod) {
                continue;
            }
            tracing::info!(pod = %pod, "removing the volumes of a pod no longer assigned");
            self.tear_down(&pod).await;
        }
    }
}

/// Makes `root` a mount point of its own with shared propagation (bound
/// onto itself first where it is not one), as the kubelet makes its root
/// directory: a container's `Bidirectional` mount of a volume below it then
/// propagates to the node, and from there to `HostToContainer` mounts.
fn make_shared(root: &Path) -> Result<(), OpenError> {
    let io = |source| OpenError::Io {
        path: root.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(root).map_err(io)?;
    let canonical = std::fs::canonicalize(root).map_err(io)?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(io)?;
    let entry = mounts
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4).map(Path::new) == Some(canonical.as_path()));
    let mount = |source: Option<&Path>, flags: MsFlags| {
        nix::mount::mount(source, &canonical, None::<&str>, flags, None::<&str>).map_err(|source| {
            OpenError::Shared {
                path: canonical.clone(),
                source,
            }
        })
    };
    match entry {
        Some(line) if line.contains(" shared:") => return Ok(()),
        Some(_) => {}
        None => mount(Some(&canonical), MsFlags::MS_BIND)?,
    }
    mount(None, MsFlags::MS_SHARED | MsFlags::MS_REC)
}

/// The pod's [`RESOLVED_VOLUMES`] annotation, parsed.
fn resolved_volumes(pod: &Instance) -> Result<BTreeMap<String, ResolvedVolume>, NotMounted> {
    let Some(json) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESOLVED_VOLUMES))
    else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(json)
        .map_err(|e| NotMounted(format!("annotation {RESOLVED_VOLUMES} is not valid: {e}")))
}

/// Whether the control plane resolves `volume`'s source (it is not
/// emptyDir or hostPath).
fn needs_resolution(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.projected.is_some()
        || volume.downward_api.is_some()
        || volume.persistent_volume_claim.is_some()
        || volume.ephemeral.is_some()
}

/// The pod's memory limit: the sum of its app containers' when each has
/// one (as the kubelet sizes a memory emptyDir).
fn pod_memory_limit(pod: &Instance) -> Option<u64> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .map(|c| {
            let limit = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
            c4m_core::parse_memory_bytes(&limit.0).ok()
        })
        .sum()
}

fn host_path_type(kind: Option<&str>) -> Result<HostPathType, String> {
    Ok(match kind.unwrap_or("") {
        "" => HostPathType::Unset,
        "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
        "Directory" => HostPathType::Directory,
        "FileOrCreate" => HostPathType::FileOrCreate,
        "File" => HostPathType::File,
        "Socket" => HostPathType::Socket,
        "CharDevice" => HostPathType::CharDevice,
        "BlockDevice" => HostPathType::BlockDevice,
        other => return Err(format!("hostPath.type {other:?} is not known")),
    })
}

/// The resolved files of a volume into its directory, atomically.
fn write_files(target: &Path, files: &[c4m_core::volumes::ProjectedFile]) -> Result<(), String> {
    let mut payload = BTreeMap::new();
    for file in files {
        let data = base64::engine::general_purpose::STANDARD
            .decode(&file.base64)
            .map_err(|e| format!("file {:?} is not base64: {e}", file.path))?;
        payload.insert(
            file.path.clone(),
            FileProjection {
                data,
                mode: file.mode,
            },
        );
    }
    AtomicWriter::new(target)
        .write(&payload)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An `emptyDir` without a size: a directory anyone in the pod may write.
fn plain_dir(target: &Path) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o777))
}

fn write_uid(dir: &Path, uid: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("uid");
    match std::fs::read_to_string(&file) {
        Ok(existing) if existing == uid => Ok(()),
        _ => std::fs::write(file, uid),
    }
}

fn read_scratch(list: &Path) -> io::Result<Vec<Scratch>> {
    match std::fs::read(list) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", list.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The entries of `dir` (none if it is missing or unreadable).
fn children(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.flatten().map(|e| e.path()).collect()
}

/// The mount points strictly below `dir` (as given or canonical), in
/// the order they were mounted.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|point| {
            (point.starts_with(dir) && point != dir)
                || (point.starts_with(&canonical) && *point != canonical)
        })
        .collect()
}

/// Removes `dir`, refusing to descend into anything still mounted (a
/// volume's data must never be deleted through a mount left behind).
fn remove_unmounted(dir: &Path) -> io::Result<()> {
    if let Some(point) = mounts_under(dir).first() {
        return Err(io::Error::other(format!(
            "{} is still mounted",
            point.display()
        )));
    }
    std::fs::remove_dir_all(dir)
}

/// What `sub_path` names inside the volume directory `root`, made (as
/// directories) where missing, as the kubelet makes them. Symbolic links
/// are followed only while they stay inside the volume.
fn resolve_sub_path(root: &Path, sub_path: &str) -> Result<PathBuf, String> {
    let root = std::fs::canonicalize(root).map_err(|e| format!("the volume: {e}"))?;
    let mut path = root.clone();
    for component in Path::new(sub_path).components() {
        let Component::Normal(part) = component else {
            continue;
        };
        let next = path.join(part);
        if std::fs::symlink_metadata(&next).is_err() {
            std::fs::create_dir(&next).map_err(|e| format!("making {}: {e}", next.display()))?;
            std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("chmod {}: {e}", next.display()))?;
        }
        path = std::fs::canonicalize(&next).map_err(|e| format!("{}: {e}", next.display()))?;
        if !path.starts_with(&root) {
            return Err("it leads out of the volume (through a symbolic link)".into());
        }
    }
    Ok(path)
}

/// Binds what `sub_path` names inside the volume directory `root`
/// ([`resolve_sub_path`]) at `bound`. The path is opened without following
/// a last link and checked again through the open descriptor, which is
/// what gets bound, so that a link swapped in between cannot escape.
fn bind_sub_path(root: &Path, sub_path: &str, bound: &Path) -> Result<(), String> {
    let path = resolve_sub_path(root, sub_path)?;
    let root = std::fs::canonicalize(root).map_err(|e| format!("the volume: {e}"))?;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(open_flags())
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let through = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let opened = std::fs::read_link(&through).map_err(|e| e.to_string())?;
    if !opened.starts_with(&root) {
        return Err("it leads out of the volume (it changed while being checked)".into());
    }
    let is_dir = file.metadata().map_err(|e| e.to_string())?.is_dir();
    if let Some(parent) = bound.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    // Bound already (a restart of the container): bind again.
    unbind(bound).map_err(|e| format!("unbinding {}: {e}", bound.display()))?;
    if is_dir {
        std::fs::create_dir_all(bound).map_err(|e| e.to_string())?;
    } else {
        std::fs::File::create(bound).map_err(|e| e.to_string())?;
    }
    nix::mount::mount(
        Some(&through),
        bound,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding it at {}: {e}", bound.display()))
}

/// Detaches a subPath bind; none there is Ok.
fn unbind(bound: &Path) -> nix::Result<()> {
    match nix::mount::umount2(bound, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Open without following a last symbolic link, a path only.
fn open_flags() -> i32 {
    (nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC)
        .bits()
}

#[cfg(test)]
pub(crate) mod tests;
