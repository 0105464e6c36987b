//! The node's volume manager: provisions, restores, expands, snapshots and
//! garbage-collects the node's persistent volumes as the storage objects
//! mirrored from the control plane ask, mounts them into pods
//! ([`ClaimMounts`](crate::claims::ClaimMounts), in `mounts`), and reports
//! the node's whole storage state (`ReportVolumes`).
//!
//! Level-triggered: each pass compares what the objects want
//! ([`wanted::wanted`]) with what the backends hold and closes the gap; a
//! pass runs when the objects change, when a pod mounts or unmounts, and
//! every [`VolumeTimers::report_every`] (capacity changes on its own), or
//! sooner after a failure. Nothing is done before the first whole object set
//! has arrived: "not known yet" is never taken for "nothing exists", so no
//! volume is collected while the control plane is away.
//!
//! Backends: c4m's local pool under `<data dir>/volumes` (root and losetup
//! only), one NFS backend per export (cargo feature `nfs`), and CSI drivers
//! registered with `--csi-driver`. `reconcile()` of each runs at start,
//! before anything mounts.

mod backends;
mod mounts;
mod wanted;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use c4m_api::agent::{SnapshotState, StorageCapacity, VolumeReport, VolumeState};
use c4m_core::volumes::LOCAL_DRIVER;
use c4m_storage::{
    Error as StorageError, Filesystem, ProvisionRequest, SnapshotId, VolumeBackend, VolumeId,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub(crate) use backends::{Backends, NfsOpener};
use mounts::{ClaimPaths, PodMounts, key_of};
pub(crate) use wanted::KINDS;
use wanted::{Place, Wanted};

use crate::agent::AgentConfig;
use crate::objects::ObjectSet;
use crate::session::AssignmentSet;

/// How often the volume manager looks again on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeTimers {
    /// A fresh report (with free space) at least this often; 30 s.
    pub report_every: Duration,
    /// A failed operation (or a delete refused while in use) is tried again
    /// after this long; 5 s.
    pub retry_every: Duration,
}

impl Default for VolumeTimers {
    fn default() -> Self {
        Self {
            report_every: Duration::from_secs(30),
            retry_every: Duration::from_secs(5),
        }
    }
}

/// Restarts the pods using a volume that must be unmounted to grow (the
/// supervisor implements it): their containers stop, their volumes are
/// given back ([`unmount_pod`](crate::claims::ClaimMounts::unmount_pod)),
/// and they start again, which stages the volume afresh, grown.
pub(crate) trait RestartUsers: Send + Sync {
    /// Restarts the pods `pod_uids`; `reason` goes into their Events.
    fn restart(&self, pod_uids: Vec<String>, reason: String);
}

/// What went wrong lately, by handle.
#[derive(Debug, Default)]
struct Troubles {
    volumes: BTreeMap<String, String>,
    snapshots: BTreeMap<String, (String, String)>,
    expansion_pending: BTreeSet<String>,
    /// Expansions whose users were asked to restart (once per expansion).
    restarting: BTreeSet<String>,
    /// Something to try again soon (a failure, a delete refused in use).
    retry: bool,
}

/// The node's volume manager (see the module docs).
pub(crate) struct NodeVolumes {
    node: String,
    backends: Backends,
    paths: ClaimPaths,
    mounts: tokio::sync::Mutex<PodMounts>,
    troubles: Mutex<Troubles>,
    /// The last object set seen, for reports between passes.
    last_wanted: Mutex<Option<Wanted>>,
    wake: Notify,
    report: watch::Sender<Option<Arc<VolumeReport>>>,
    assignments: watch::Receiver<Option<AssignmentSet>>,
    restarts: Mutex<Option<Arc<dyn RestartUsers>>>,
    timers: VolumeTimers,
}

impl std::fmt::Debug for NodeVolumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeVolumes")
            .field("node", &self.node)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

/// The local pool under `data_dir/volumes`, when this agent can run it
/// (root, losetup on the PATH); otherwise None, with one warning.
pub(crate) fn open_local(data_dir: &Path) -> Option<Arc<c4m_storage::LocalBackend>> {
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "no local volumes on this node: the agent does not run as root (it reports no local capacity)"
        );
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| dir.join("losetup").is_file()) {
        tracing::warn!(
            "no local volumes on this node: losetup is not installed (it reports no local capacity)"
        );
        return None;
    }
    match c4m_storage::LocalBackend::open(data_dir.join("volumes")) {
        Ok(local) => Some(Arc::new(local)),
        Err(e) => {
            tracing::warn!(error = %e, "no local volumes on this node");
            None
        }
    }
}

/// NFS backends mounting through FUSE, their reconcile scoped to `data_dir`.
#[cfg(feature = "nfs")]
pub(crate) fn nfs_opener(data_dir: &Path) -> Option<NfsOpener> {
    let scope = data_dir.to_path_buf();
    Some(Box::new(move |target: &wanted::NfsTarget| {
        let export = c4m_storage::NfsExport {
            host: target.server.clone(),
            path: target.share.clone(),
            mount_port: target.mount_port,
            nfs_port: target.nfs_port,
        };
        Arc::new(
            c4m_storage::NfsBackend::new(export, c4m_storage::NfsMounter::Fuse)
                .within(scope.clone()),
        ) as Arc<dyn VolumeBackend>
    }))
}

/// No NFS in this build.
#[cfg(not(feature = "nfs"))]
pub(crate) fn nfs_opener(_data_dir: &Path) -> Option<NfsOpener> {
    None
}

/// The volume manager `config` asks for, recovered (each backend
/// reconciled, the claims' users read back) and ready to mount; its
/// reports come on the receiver. `shutdown` stops the CSI servers.
pub(crate) async fn open(
    config: &AgentConfig,
    assignments: watch::Receiver<Option<AssignmentSet>>,
    shutdown: CancellationToken,
) -> (Arc<NodeVolumes>, watch::Receiver<Option<Arc<VolumeReport>>>) {
    let local = open_local(&config.data_dir).map(|l| l as Arc<dyn VolumeBackend>);
    if let Some(socket) = config.storage.csi_socket.clone() {
        match &local {
            Some(local) => {
                let driver = c4m_storage::csi::CsiDriver::new(
                    LOCAL_DRIVER,
                    &config.node_name,
                    Arc::clone(local),
                );
                tracing::info!(socket = %socket.display(), driver = LOCAL_DRIVER, "serving the local volumes as a csi driver");
                tokio::spawn(async move {
                    if let Err(e) = c4m_storage::csi::serve_driver(driver, &socket, shutdown).await
                    {
                        tracing::error!(error = %e, "the csi driver stopped");
                    }
                });
            }
            None => {
                tracing::warn!(socket = %socket.display(), "not serving a csi driver: this node has no local volumes");
            }
        }
    }
    let csi = config
        .storage
        .csi_drivers
        .iter()
        .map(|(name, socket)| {
            tracing::info!(driver = %name, socket = %socket.display(), "csi driver registered");
            let backend = c4m_storage::csi::CsiBackend::new(name.clone(), socket.clone());
            (name.clone(), Arc::new(backend) as Arc<dyn VolumeBackend>)
        })
        .collect();
    let backends = Backends::new(local, nfs_opener(&config.data_dir), csi);
    let (volumes, reports) = NodeVolumes::new(
        &config.node_name,
        backends,
        &config.data_dir.join("claims"),
        assignments,
        config.storage.timers,
    );
    volumes.recover().await;
    (volumes, reports)
}

impl NodeVolumes {
    /// A manager for node `node` over `backends`, keeping its claims under
    /// `claims_dir`; it names pods through `assignments` and publishes its
    /// reports on the returned receiver.
    pub(crate) fn new(
        node: &str,
        backends: Backends,
        claims_dir: &Path,
        assignments: watch::Receiver<Option<AssignmentSet>>,
        timers: VolumeTimers,
    ) -> (Arc<Self>, watch::Receiver<Option<Arc<VolumeReport>>>) {
        let (report, reports) = watch::channel(None);
        let volumes = Arc::new(Self {
            node: node.to_string(),
            backends,
            paths: ClaimPaths::under(claims_dir),
            mounts: tokio::sync::Mutex::default(),
            troubles: Mutex::default(),
            last_wanted: Mutex::default(),
            wake: Notify::new(),
            report,
            assignments,
            restarts: Mutex::default(),
            timers,
        });
        (volumes, reports)
    }

    /// Who restarts a volume's users for an offline expansion.
    #[allow(dead_code)] // The supervisor hands itself in next (offline expansion).
    pub(crate) fn set_restarts(&self, restarts: Arc<dyn RestartUsers>) {
        *self.restarts.lock().unwrap_or_else(PoisonError::into_inner) = Some(restarts);
    }

    fn troubles(&self) -> std::sync::MutexGuard<'_, Troubles> {
        self.troubles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Repairs the node after a restart, before anything mounts: each
    /// backend's `reconcile()`, then the claims: the pods' records are read
    /// back (they are the volumes' users), a volume staged or published for
    /// no recorded pod is unpublished and unstaged, and NFS mounts (which
    /// died with the previous process) are made again.
    pub(crate) async fn recover(&self) {
        let mut mounts = self.mounts.lock().await;
        *mounts = self.paths.read_all();
        // The NFS exports the records name, so their dead mounts are seen.
        for entries in mounts.values() {
            for entry in entries {
                if let Ok((place @ Place::Nfs(_), _)) = backends::place_of(&entry.source) {
                    let _ = self.backends.get(&place);
                }
            }
        }
        for (place, backend) in self.backends.opened() {
            match backend.reconcile().await {
                Ok(report) if !report.is_clean() => {
                    tracing::info!(
                        driver = place.driver(),
                        ?report,
                        "volumes repaired after a restart"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(driver = place.driver(), error = %e, "volume reconcile failed");
                }
            }
        }
        if let Some(local) = self.backends.local() {
            self.release_unrecorded(local, &mounts).await;
        }
        // NFS FUSE mounts lived in the previous process: mount them again.
        let nfs: Vec<(String, mounts::MountEntry)> = mounts
            .iter()
            .flat_map(|(uid, entries)| entries.iter().map(move |e| (uid.clone(), e.clone())))
            .filter(|(_, e)| matches!(backends::place_of(&e.source), Ok((Place::Nfs(_), _))))
            .collect();
        for (uid, entry) in nfs {
            let target = entry.target.clone();
            if let Err(e) = self.remount(&entry).await {
                tracing::warn!(pod = %uid, target = %target.display(), error = %e, "cannot mount an nfs volume again after a restart");
            }
        }
    }

    async fn remount(&self, entry: &mounts::MountEntry) -> Result<(), String> {
        let (backend, id, staging, _) = self.resolve(&entry.source)?;
        backend
            .stage(&id, &staging)
            .await
            .map_err(|e| e.to_string())?;
        backend
            .publish(&id, &staging, &entry.target, entry.read_only)
            .await
            .map_err(|e| e.to_string())
    }

    /// Unpublishes and unstages the local volumes staged under the claims'
    /// staging directory for no recorded pod.
    async fn release_unrecorded(&self, local: &Arc<dyn VolumeBackend>, mounts: &PodMounts) {
        let volumes = match local.list().await {
            Ok(volumes) => volumes,
            Err(e) => {
                tracing::error!(error = %e, "cannot list local volumes");
                return;
            }
        };
        for volume in volumes {
            let Some(staged) = &volume.staged_at else {
                continue;
            };
            if !staged.starts_with(&self.paths.staging) {
                // A pod's scratch directory, not a claim.
                continue;
            }
            let key = (LOCAL_DRIVER.to_string(), volume.id.to_string());
            let recorded: Vec<&Path> = mounts
                .values()
                .flatten()
                .filter(|e| key_of(&e.source).as_ref() == Some(&key))
                .map(|e| e.target.as_path())
                .collect();
            for target in &volume.published_at {
                if !recorded.contains(&target.as_path())
                    && let Err(e) = local.unpublish(&volume.id, target).await
                {
                    tracing::error!(volume = %volume.id, target = %target.display(), error = %e, "cannot unpublish an unrecorded mount");
                }
            }
            if recorded.is_empty() {
                match local.unstage(&volume.id, staged).await {
                    Ok(()) => {
                        tracing::info!(volume = %volume.id, "unstaged a volume no pod uses")
                    }
                    Err(e) => {
                        tracing::error!(volume = %volume.id, error = %e, "cannot unstage a volume no pod uses")
                    }
                }
            }
        }
    }

    /// Runs until `shutdown`: reports, then keeps the node's volumes as
    /// `objects` ask (call [`recover`](Self::recover) first).
    pub(crate) async fn run(
        self: Arc<Self>,
        mut objects: watch::Receiver<Option<Arc<ObjectSet>>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let set = objects.borrow_and_update().clone();
            if let Some(set) = set {
                self.pass(&set).await;
            }
            self.publish_report().await;
            let next = if self.troubles().retry {
                self.timers.retry_every
            } else {
                self.timers.report_every
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = objects.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// One level-triggered pass over `set`.
    pub(crate) async fn pass(&self, set: &ObjectSet) {
        let wanted = wanted::wanted(set, &self.node);
        self.troubles().retry = false;
        for target in &wanted.nfs_exports {
            // Opened so their volumes are collected and their capacity reported.
            let _ = self.backends.get(&Place::Nfs(target.clone()));
        }
        self.provision(&wanted).await;
        if let Some(local) = self.backends.local().cloned() {
            self.expand(&local, &wanted).await;
            self.take_snapshots(&local, &wanted).await;
        }
        self.collect(&wanted).await;
        *self
            .last_wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(wanted);
    }

    async fn provision(&self, wanted: &Wanted) {
        for p in &wanted.provisions {
            let result = async {
                let backend = self.backends.get(&p.place)?;
                let id = VolumeId::new(p.handle.clone()).map_err(|e| e.to_string())?;
                if backend
                    .volume(&id)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(false);
                }
                let request = ProvisionRequest {
                    id,
                    size_bytes: p.size_bytes,
                    access_mode: p.access_mode,
                    filesystem: match p.place {
                        Place::Nfs(_) => Filesystem::Nfs,
                        _ => Filesystem::Ext4,
                    },
                    parameters: p.parameters.clone(),
                };
                match &p.restore_from {
                    Some(snapshot) => {
                        let snapshot =
                            SnapshotId::new(snapshot.clone()).map_err(|e| e.to_string())?;
                        backend.restore(&snapshot, &request).await
                    }
                    None => backend.provision(&request).await,
                }
                .map(|_| true)
                .map_err(|e| e.to_string())
            }
            .await;
            let mut troubles = self.troubles();
            match result {
                Ok(made) => {
                    if made {
                        tracing::info!(claim = %p.claim, volume = %p.handle, driver = p.place.driver(), bytes = p.size_bytes, "volume provisioned");
                    }
                    troubles.volumes.remove(&p.handle);
                }
                Err(e) => {
                    tracing::warn!(claim = %p.claim, volume = %p.handle, error = %e, "cannot provision a volume");
                    troubles.volumes.insert(p.handle.clone(), e);
                    troubles.retry = true;
                }
            }
        }
    }

    /// Grows local volumes to their claims' size; one the host cannot grow
    /// mounted waits (`expansion_pending`) while its users restart.
    async fn expand(&self, local: &Arc<dyn VolumeBackend>, wanted: &Wanted) {
        let volumes = local.list().await.unwrap_or_default();
        for volume in volumes {
            let Some(&size) = wanted.sizes.get(volume.id.as_str()) else {
                continue;
            };
            let handle = volume.id.to_string();
            if size <= volume.size_bytes {
                let mut troubles = self.troubles();
                troubles.expansion_pending.remove(&handle);
                troubles.restarting.remove(&handle);
                continue;
            }
            if volume.staged_at.is_some() && self.troubles().expansion_pending.contains(&handle) {
                self.restart_users(&handle).await;
                continue;
            }
            match local.expand(&volume.id, size).await {
                Ok(bytes) => {
                    tracing::info!(volume = %handle, bytes, "volume expanded");
                    self.troubles().volumes.remove(&handle);
                }
                Err(StorageError::OfflineExpansionRequired { .. }) => {
                    tracing::info!(volume = %handle, bytes = size, "volume must be unmounted to grow: restarting its users");
                    self.troubles().expansion_pending.insert(handle.clone());
                    self.restart_users(&handle).await;
                }
                Err(e) => {
                    let mut troubles = self.troubles();
                    troubles.volumes.insert(handle, e.to_string());
                    troubles.retry = true;
                }
            }
        }
    }

    /// Asks the supervisor, once per expansion, to restart the pods using
    /// local volume `handle`.
    async fn restart_users(&self, handle: &str) {
        if !self.troubles().restarting.insert(handle.to_string()) {
            return;
        }
        let key = (LOCAL_DRIVER.to_string(), handle.to_string());
        let users: Vec<String> = self
            .mounts
            .lock()
            .await
            .iter()
            .filter(|(_, entries)| {
                entries
                    .iter()
                    .any(|e| key_of(&e.source).as_ref() == Some(&key))
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        let restarts = self
            .restarts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match restarts {
            Some(restarts) if !users.is_empty() => restarts.restart(
                users,
                format!("volume {handle} must be unmounted to grow: restarting the pod to expand it offline"),
            ),
            _ => {
                tracing::warn!(volume = %handle, "volume must be unmounted to grow and nothing restarts its users");
            }
        }
    }

    /// Grows `id` if an expansion waits for it to be unmounted (called
    /// before it is staged again).
    pub(crate) async fn expand_offline(&self, backend: &Arc<dyn VolumeBackend>, id: &VolumeId) {
        let handle = id.to_string();
        if !self.troubles().expansion_pending.contains(&handle) {
            return;
        }
        let size = self
            .last_wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|w| w.sizes.get(&handle).copied());
        let Some(size) = size else {
            return;
        };
        match backend.expand(id, size).await {
            Ok(bytes) => {
                tracing::info!(volume = %handle, bytes, "volume expanded offline");
                let mut troubles = self.troubles();
                troubles.expansion_pending.remove(&handle);
                troubles.restarting.remove(&handle);
                troubles.volumes.remove(&handle);
            }
            Err(e) => {
                tracing::warn!(volume = %handle, error = %e, "offline expansion failed");
                self.troubles().volumes.insert(handle, e.to_string());
            }
        }
        self.wake.notify_one();
    }

    async fn take_snapshots(&self, local: &Arc<dyn VolumeBackend>, wanted: &Wanted) {
        let volumes: BTreeSet<String> = local
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.id.to_string())
            .collect();
        for take in &wanted.snapshots {
            if !volumes.contains(&take.volume) {
                continue;
            }
            let result = async {
                let snapshot = SnapshotId::new(take.handle.clone()).map_err(|e| e.to_string())?;
                if local
                    .get_snapshot(&snapshot)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(false);
                }
                let volume = VolumeId::new(take.volume.clone()).map_err(|e| e.to_string())?;
                local
                    .snapshot(&volume, &snapshot)
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string())
            }
            .await;
            let mut troubles = self.troubles();
            match result {
                Ok(taken) => {
                    if taken {
                        tracing::info!(snapshot = %take.handle, volume = %take.volume, "snapshot taken");
                    }
                    troubles.snapshots.remove(&take.handle);
                }
                Err(e) => {
                    tracing::warn!(snapshot = %take.handle, error = %e, "cannot take a snapshot");
                    troubles
                        .snapshots
                        .insert(take.handle.clone(), (take.volume.clone(), e));
                    troubles.retry = true;
                }
            }
        }
    }

    /// Deletes the provisioned volumes (`pvc-*`) nothing references and the
    /// snapshots no content references; one still in use is tried later.
    async fn collect(&self, wanted: &Wanted) {
        let used: BTreeSet<(String, String)> = self
            .mounts
            .lock()
            .await
            .values()
            .flatten()
            .filter_map(|e| key_of(&e.source))
            .collect();
        for (place, backend) in self.backends.opened() {
            let volumes = match backend.list().await {
                Ok(volumes) => volumes,
                Err(e) => {
                    tracing::warn!(driver = place.driver(), error = %e, "cannot list volumes");
                    continue;
                }
            };
            for volume in volumes {
                let handle = volume.id.to_string();
                if !handle.starts_with("pvc-")
                    || wanted.kept_volumes.contains(&handle)
                    || used.contains(&(place.driver().to_string(), handle.clone()))
                {
                    continue;
                }
                match backend.delete(&volume.id).await {
                    Ok(()) => {
                        tracing::info!(volume = %handle, driver = place.driver(), "deleted a volume nothing references");
                        self.troubles().volumes.remove(&handle);
                    }
                    Err(e) => {
                        tracing::debug!(volume = %handle, error = %e, "cannot delete a volume yet");
                        self.troubles().retry = true;
                    }
                }
            }
            for snapshot in backend.list_snapshots().await.unwrap_or_default() {
                if wanted.kept_snapshots.contains(snapshot.id.as_str()) {
                    continue;
                }
                match backend.delete_snapshot(&snapshot.id).await {
                    Ok(()) => {
                        tracing::info!(snapshot = %snapshot.id, "deleted a snapshot no content references")
                    }
                    Err(e) => {
                        tracing::warn!(snapshot = %snapshot.id, error = %e, "cannot delete a snapshot");
                        self.troubles().retry = true;
                    }
                }
            }
        }
        let mut troubles = self.troubles();
        troubles
            .snapshots
            .retain(|handle, _| wanted.kept_snapshots.contains(handle));
        troubles.volumes.retain(|handle, _| {
            wanted.kept_volumes.contains(handle) || wanted.refused.contains_key(handle)
        });
    }

    /// `NAMESPACE/NAME` of every assigned pod, by uid.
    fn pod_names(&self) -> BTreeMap<String, String> {
        self.assignments
            .borrow()
            .iter()
            .flat_map(|set| set.iter())
            .filter_map(|pod| {
                let uid = pod.metadata.uid.clone()?;
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                let name = pod.metadata.name.as_deref()?;
                Some((uid, format!("{namespace}/{name}")))
            })
            .collect()
    }

    /// The node's whole storage state now.
    pub(crate) async fn report_now(&self) -> VolumeReport {
        let names = self.pod_names();
        let mut users: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (uid, entries) in self.mounts.lock().await.iter() {
            for entry in entries {
                if let (Some(key), Some(name)) = (key_of(&entry.source), names.get(uid)) {
                    users.entry(key).or_default().insert(name.clone());
                }
            }
        }
        let wanted = self
            .last_wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        let mut report = VolumeReport {
            node_name: self.node.clone(),
            ..VolumeReport::default()
        };
        let mut nfs_capacity: Option<StorageCapacity> = None;
        for (place, backend) in self.backends.opened() {
            let driver = place.driver().to_string();
            match backend.capacity().await {
                Ok(capacity) => match place {
                    Place::Nfs(_) => {
                        let total = nfs_capacity.get_or_insert_with(|| StorageCapacity {
                            driver: driver.clone(),
                            ..StorageCapacity::default()
                        });
                        total.free_bytes += capacity.available_bytes;
                        total.total_bytes += capacity.total_bytes;
                    }
                    _ => report.capacity.push(StorageCapacity {
                        driver: driver.clone(),
                        free_bytes: capacity.available_bytes,
                        total_bytes: capacity.total_bytes,
                    }),
                },
                Err(e) => tracing::debug!(driver = %driver, error = %e, "no capacity"),
            }
            let volumes: Vec<c4m_storage::Volume> = match (&place, backend.list().await) {
                (_, Err(e)) => {
                    tracing::debug!(driver = %driver, error = %e, "cannot list volumes");
                    continue;
                }
                (Place::Nfs(_), Ok(volumes)) => {
                    // An export is shared: report what this node provisioned
                    // or mounts, with the size its claim asks for.
                    volumes
                        .into_iter()
                        .filter(|v| {
                            let handle = v.id.as_str();
                            wanted
                                .provisions
                                .iter()
                                .any(|p| p.handle == handle && p.place == place)
                                || users.contains_key(&(driver.clone(), handle.to_string()))
                        })
                        .map(|mut v| {
                            v.size_bytes = wanted
                                .sizes
                                .get(v.id.as_str())
                                .copied()
                                .or_else(|| {
                                    wanted
                                        .provisions
                                        .iter()
                                        .find(|p| p.handle == v.id.as_str())
                                        .map(|p| p.size_bytes)
                                })
                                .unwrap_or(v.size_bytes);
                            v
                        })
                        .collect()
                }
                // Claims' volumes: not the pods' scratch directories, which
                // share the local pool (staged at the pod's directory).
                (_, Ok(volumes)) => volumes
                    .into_iter()
                    .filter(|v| {
                        v.staged_at
                            .as_ref()
                            .map_or(v.id.as_str().starts_with("pvc-"), |s| {
                                s.starts_with(&self.paths.staging)
                            })
                    })
                    .collect(),
            };
            {
                let troubles = self.troubles();
                for volume in volumes {
                    let handle = volume.id.to_string();
                    report.volumes.push(VolumeState {
                        driver: driver.clone(),
                        size_bytes: volume.size_bytes,
                        error: troubles.volumes.get(&handle).cloned().unwrap_or_default(),
                        expansion_pending: troubles.expansion_pending.contains(&handle),
                        users: users
                            .get(&(driver.clone(), handle.clone()))
                            .map(|u| u.iter().cloned().collect())
                            .unwrap_or_default(),
                        handle,
                    });
                }
            }
            for snapshot in backend.list_snapshots().await.unwrap_or_default() {
                report.snapshots.push(SnapshotState {
                    driver: driver.clone(),
                    handle: snapshot.id.to_string(),
                    source_volume: snapshot.source_volume.to_string(),
                    size_bytes: snapshot.size_bytes,
                    ready: true,
                    created_at: jiff::Timestamp::from_second(snapshot.created_unix)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    error: String::new(),
                });
            }
        }
        report.capacity.extend(nfs_capacity);
        let troubles = self.troubles();
        // Claims this node could not provision: reported with the reason.
        let failed = wanted
            .provisions
            .iter()
            .map(|p| (p.place.driver().to_string(), p.handle.clone()))
            .chain(
                wanted
                    .refused
                    .keys()
                    .map(|h| (LOCAL_DRIVER.to_string(), h.clone())),
            );
        for (driver, handle) in failed {
            let error = troubles
                .volumes
                .get(&handle)
                .or_else(|| wanted.refused.get(&handle));
            if let Some(error) = error
                && !report.volumes.iter().any(|v| v.handle == handle)
            {
                report.volumes.push(VolumeState {
                    driver,
                    handle,
                    error: error.clone(),
                    ..VolumeState::default()
                });
            }
        }
        for (handle, (volume, error)) in &troubles.snapshots {
            if !report.snapshots.iter().any(|s| &s.handle == handle) {
                report.snapshots.push(SnapshotState {
                    driver: LOCAL_DRIVER.to_string(),
                    handle: handle.clone(),
                    source_volume: volume.clone(),
                    error: error.clone(),
                    ..SnapshotState::default()
                });
            }
        }
        report.volumes.sort_by(|a, b| a.handle.cmp(&b.handle));
        report.snapshots.sort_by(|a, b| a.handle.cmp(&b.handle));
        report
    }

    /// Publishes the state now when it changed since the last report.
    async fn publish_report(&self) {
        let report = self.report_now().await;
        self.report.send_if_modified(|last| {
            let changed = last.as_deref() != Some(&report);
            if changed {
                *last = Some(Arc::new(report));
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests;
