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
//! Deletion never trusts the store's silence alone: the node remembers, on
//! disk (`held`), every volume a PersistentVolume referenced, and deletes
//! one only when such a volume is reclaimed (being deleted, `Released`,
//! policy `Delete`, carrying the provisioner finalizer the control plane
//! takes off once this node stops reporting the volume). One nothing
//! references any more is kept and reported `orphaned` (a wiped store). A
//! `pvc-*` volume no PersistentVolume ever referenced is deleted once no
//! claim references it (a claim deleted before its volume was recorded).
//!
//! Backends: c4m's local pool under `<data dir>/volumes` (root and losetup
//! only), one NFS backend per export (cargo feature `nfs`), and CSI drivers
//! registered with `--csi-driver`. `reconcile()` of each runs at start,
//! before anything mounts.

mod backends;
mod held;
mod mounts;
mod pass;
mod report;
mod wanted;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use c4m_api::agent::VolumeReport;
use c4m_core::volumes::LOCAL_DRIVER;
use c4m_storage::{Error as StorageError, VolumeBackend};
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

/// The longest a backend may take to answer a question (list, capacity):
/// an NFS server that does not answer must not stall the manager.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(10);

/// `question`, or a timeout error after [`QUESTION_TIMEOUT`].
async fn bounded<T>(
    question: impl std::future::Future<Output = c4m_storage::Result<T>>,
) -> c4m_storage::Result<T> {
    tokio::time::timeout(QUESTION_TIMEOUT, question)
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::Driver {
                driver: "volume backend".into(),
                source: format!("no answer within {QUESTION_TIMEOUT:?}").into(),
            })
        })
}

/// Restarts the pods using a volume that must be unmounted to grow (the
/// supervisor implements it): their containers stop, their volumes are
/// given back ([`unmount_pod`](crate::claims::ClaimMounts::unmount_pod)),
/// and they start again, which stages the volume afresh, grown.
pub(crate) trait RestartUsers: Send + Sync {
    /// Restarts the pods `pod_uids`; `why` goes into their Events.
    fn restart(&self, pod_uids: Vec<String>, why: RestartReason);
}

/// Why pods restart for a volume: their next run's Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RestartReason {
    /// The Event's reason.
    pub event: &'static str,
    pub message: String,
}

impl RestartReason {
    /// The volume `handle` must be unmounted to grow.
    pub(crate) fn resize(handle: &str) -> Self {
        Self {
            event: "FileSystemResizeRequired",
            message: format!(
                "volume {handle} must be unmounted to grow: restarting the pod to expand it offline"
            ),
        }
    }

    /// The FUSE mount of NFS volume `handle` ended with the agent that
    /// served it: the pod's containers see it broken until they restart.
    pub(crate) fn mount_lost(handle: &str) -> Self {
        Self {
            event: "FailedMount",
            message: format!(
                "the NFS mount of volume {handle} ended with the previous agent: restarting the pod to mount it again"
            ),
        }
    }
}

/// What went wrong lately, by handle.
#[derive(Debug, Default)]
struct Troubles {
    volumes: BTreeMap<String, String>,
    snapshots: BTreeMap<String, (String, String)>,
    /// Volumes to grow offline, to the size wanted when the host refused to
    /// grow them mounted: their users restart, and the size travels with
    /// the expansion, since a user may be back (mounting, so growing it)
    /// before the pass that asked for the restart has ended.
    expansion_pending: BTreeMap<String, u64>,
    /// Expansions whose users were asked to restart (once per expansion).
    restarting: BTreeSet<String>,
    /// Something to try again soon (a failure, a delete refused in use).
    retry: bool,
    /// Volumes kept although nothing references them (a PersistentVolume
    /// did): reported `orphaned`, warned about once.
    orphaned: BTreeSet<(Place, String)>,
}

/// The node's volume manager (see the module docs).
pub(crate) struct NodeVolumes {
    node: String,
    backends: Backends,
    paths: ClaimPaths,
    mounts: tokio::sync::Mutex<PodMounts>,
    troubles: Mutex<Troubles>,
    /// The volumes a PersistentVolume referenced, and the NFS volumes this
    /// node provisioned, remembered across restarts.
    held: Mutex<held::HeldVolumes>,
    /// The last object set seen, for reports between passes.
    last_wanted: Mutex<Option<Wanted>>,
    wake: Notify,
    report: watch::Sender<Option<Arc<VolumeReport>>>,
    assignments: watch::Receiver<Option<AssignmentSet>>,
    restarts: Mutex<Option<Arc<dyn RestartUsers>>>,
    /// Restarts asked before anyone could take them (at recovery).
    pending_restarts: Mutex<Vec<(Vec<String>, RestartReason)>>,
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
    let backends = Backends::new(local.clone(), nfs_opener(&config.data_dir), csi);
    let (volumes, reports) = NodeVolumes::new(
        &config.node_name,
        backends,
        &config.data_dir.join("claims"),
        assignments,
        config.storage.timers,
    );
    volumes.recover().await;
    // Served once repaired, like the node's own pods.
    if let Some(socket) = config.storage.csi_socket.clone() {
        serve_csi(config, local, socket, shutdown);
    }
    (volumes, reports)
}

/// Serves the local pool as the CSI driver `c4m.io/local` on `socket`
/// until `shutdown`.
fn serve_csi(
    config: &AgentConfig,
    local: Option<Arc<dyn VolumeBackend>>,
    socket: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    let Some(local) = local else {
        tracing::warn!(socket = %socket.display(), "not serving a csi driver: this node has no local volumes");
        return;
    };
    let driver = c4m_storage::csi::CsiDriver::new(LOCAL_DRIVER, &config.node_name, local);
    tracing::info!(socket = %socket.display(), driver = LOCAL_DRIVER, "serving the local volumes as a csi driver");
    tokio::spawn(async move {
        if let Err(e) = c4m_storage::csi::serve_driver(driver, &socket, shutdown).await {
            tracing::error!(error = %e, "the csi driver stopped");
        }
    });
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
        let paths = ClaimPaths::under(claims_dir);
        let volumes = Arc::new(Self {
            node: node.to_string(),
            backends,
            held: Mutex::new(held::HeldVolumes::open(&paths.held)),
            paths,
            mounts: tokio::sync::Mutex::default(),
            troubles: Mutex::default(),
            last_wanted: Mutex::default(),
            wake: Notify::new(),
            report,
            assignments,
            restarts: Mutex::default(),
            pending_restarts: Mutex::default(),
            timers,
        });
        (volumes, reports)
    }

    /// Who restarts a volume's users (offline expansion, NFS mounts lost
    /// with a previous agent); restarts asked before are handed over now.
    pub(crate) fn set_restarts(&self, restarts: Arc<dyn RestartUsers>) {
        let pending = std::mem::take(
            &mut *self
                .pending_restarts
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (pods, why) in pending {
            restarts.restart(pods, why);
        }
        *self.restarts.lock().unwrap_or_else(PoisonError::into_inner) = Some(restarts);
    }

    /// Asks for `pods` to restart, now or once someone restarts pods.
    pub(super) fn ask_restart(&self, pods: Vec<String>, why: RestartReason) {
        let restarts = self
            .restarts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match restarts {
            Some(restarts) => restarts.restart(pods, why),
            None => self
                .pending_restarts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((pods, why)),
        }
    }

    fn troubles(&self) -> std::sync::MutexGuard<'_, Troubles> {
        self.troubles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, held::HeldVolumes> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
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
        // Their pods' containers still see the dead mounts: restart them.
        let mut lost: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (uid, entry) in nfs {
            let target = entry.target.clone();
            if let Err(e) = self.remount(&entry).await {
                tracing::warn!(pod = %uid, target = %target.display(), error = %e, "cannot mount an nfs volume again after a restart");
            }
            if let Some((_, handle)) = key_of(&entry.source) {
                lost.entry(handle).or_default().push(uid);
            }
        }
        for (handle, pods) in lost {
            self.ask_restart(pods, RestartReason::mount_lost(&handle));
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
}

#[cfg(test)]
mod tests;
