//! The supervisor: drives the node's containers toward the assigned set.
//!
//! One loop owns every instance's state. It wakes on a new assignment set, a
//! probe result, or a tick, and for each container of each instance
//! decides: start, restart (after backoff), stop, or leave alone. A pod's
//! containers start in the kubelet's order: init containers one at a time,
//! each to success (a sidecar, `restartPolicy: Always`, until it runs and
//! then for as long as the app runs), then the app containers. Probes run in their own tasks per
//! container run, so a slow probe never stalls the loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use c4m_api::agent::{
    ContainerEvent, ContainerReport, ContainerRunning, ContainerTerminated, ContainerWaiting,
    InstanceStatus, PortBinding as WirePort, ResourceUsage as WireUsage,
};
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus, Instance, PodContainer,
    PortBinding, ProbeTracker, Prober,
};
use c4m_mesh::InstanceNetwork;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::holder::PodHolders;
use crate::hooks::{Hook, HookRun, grace_after_hook};
use crate::pod_etc::PodEtc;
use crate::pod_volumes::{PodVolumes, VolumeDirs};
use crate::session::AssignmentSet;

/// How the supervisor spaces the restarts of a crashing container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    /// The first restart's delay; it doubles per consecutive crash.
    pub initial: Duration,
    /// The longest delay (as Kubernetes' CrashLoopBackOff).
    pub max: Duration,
    /// Running this long resets the delay.
    pub reset: Duration,
    /// The wait after the first failed pull of a container's image
    /// (Kubernetes: 10 s); it doubles per failed pull.
    pub image_pull_initial: Duration,
    /// The longest wait between pulls of an image (Kubernetes: 300 s).
    pub image_pull_max: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
            image_pull_initial: Duration::from_secs(10),
            image_pull_max: Duration::from_secs(300),
        }
    }
}

/// How often the loop looks at every container.
const TICK: Duration = Duration::from_millis(250);
/// Why a container waits right after its image could not be pulled (as
/// Kubernetes shows it).
const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Why it waits later, until the next pull.
const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
/// Why it waits when the node lacks its image and may not pull it.
const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// Where a container writes its termination message unless it says
/// otherwise (`terminationMessagePath`).
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The most of it that is kept, as the kubelet keeps.
const MAX_TERMINATION_MESSAGE: u64 = 4096;
/// The `terminationMessagePolicy` that takes the end of the log as the
/// message of a failed container that wrote none.
const FALLBACK_TO_LOGS_ON_ERROR: &str = "FallbackToLogsOnError";
/// How much of the log that is: the last lines, and of them the last
/// bytes (the kubelet's `MaxContainerTerminationMessageLog*`).
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;
/// How long reading a container's log for it (or to keep a previous
/// run's) may take: the supervisor's loop waits.
const LOG_READ_WAIT: Duration = Duration::from_secs(5);
/// Why a container waits after its postStart hook failed (the kubelet's).
const POST_START_HOOK_ERROR: &str = "PostStartHookError";
/// How long a stopping instance waits for a failed preStop hook's Event to
/// be published (a tick or two of the loop).
const TELL_WAIT: Duration = Duration::from_secs(2);
/// The most Events about one container kept for reports.
const EVENTS_KEPT: usize = 4;
/// How often volumes left of pods no longer here are looked for.
const VOLUME_SWEEP: Duration = Duration::from_secs(30);
/// The first wait before a pod's volumes are set up again after a failure
/// (at once when its resolved volumes change), and the longest (Kubernetes'
/// volume manager's).
const VOLUME_RETRY_INITIAL: Duration = Duration::from_millis(500);
const VOLUME_RETRY_MAX: Duration = Duration::from_secs(122);
/// A container's waiting reason while its pod's volumes are set up.
const CONTAINER_CREATING: &str = "ContainerCreating";
/// The Event of a volume that cannot be set up (the kubelet's reason).
const FAILED_MOUNT: &str = "FailedMount";
/// The variable telling an instance where the cluster DNS answers.
const DNS_SERVER_ENV: &str = "C4M_DNS_SERVER";

/// Where an instance runs: its containers' ids and its driver.
#[derive(Clone)]
pub(crate) struct Placement {
    /// The instance's id: its first app container's, under which its
    /// network is kept.
    pub id: String,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Each container's name and id, init containers first.
    pub containers: Vec<(String, String)>,
    /// Where each container's previous run's log is kept, by name
    /// ([`PodEtc::previous_log`]).
    pub previous_logs: HashMap<String, PathBuf>,
    /// When each container's current run began, by name: its log is what
    /// was written since (drivers may keep earlier runs' output in it).
    pub runs_began: HashMap<String, SystemTime>,
}

impl Placement {
    /// The id of the container named `name`; with no name, the first app
    /// container's (as Kubernetes' default container).
    pub(crate) fn container(&self, name: Option<&str>) -> Option<&str> {
        match name.filter(|n| !n.is_empty()) {
            None => Some(&self.id),
            Some(name) => self
                .containers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| id.as_str()),
        }
    }
}

/// Instances by (namespace, name), for the agent's HTTP server.
pub(crate) type Directory = Arc<Mutex<HashMap<(String, String), Placement>>>;

/// The id of an instance: unique and file-name safe. Its first app
/// container runs under it (so containers of agents that ran one container
/// per instance are adopted), its network is kept under it, and its other
/// containers' ids start with it ([`containers_of`]).
pub(crate) fn container_id(pod: &Instance) -> String {
    let meta = &pod.metadata;
    let uid: String = meta
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
        uid
    )
}

/// The PID namespace an ephemeral container (`index`) joins: its
/// `targetContainerName`'s, whose process must run. `None` for others.
fn target_pid_namespace(instance: &Managed, index: usize) -> Result<Option<PathBuf>, String> {
    let PodContainer::Ephemeral(i) = instance.slots[index].which else {
        return Ok(None);
    };
    let target = instance.pod.spec.as_ref().and_then(|s| {
        s.ephemeral_containers
            .as_ref()?
            .get(i)?
            .target_container_name
            .clone()
    });
    let Some(target) = target.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let pid = instance
        .slots
        .iter()
        .find(|s| s.name == target && !matches!(s.which, PodContainer::Ephemeral(_)))
        .and_then(|s| match s.status.as_ref()?.state {
            ContainerState::Running { pid, .. } => Some(pid),
            ContainerState::Exited { .. } => None,
        });
    match pid {
        Some(pid) => Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid")))),
        None => Err(format!("the target container {target:?} is not running")),
    }
}

/// Whether the pod's status shows its ephemeral container `name` ended
/// (an ephemeral container runs once).
fn known_ended(pod: &Instance, name: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.name == name && c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

/// The key of `pod` in the [`Directory`]: its namespace and name.
fn directory_key(pod: &Instance) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// The id of the instance container `id` belongs to ([`containers_of`]):
/// its first three `_`-separated parts (namespace, name and uid have no
/// `_`).
fn pod_of_container(id: &str) -> &str {
    match id.match_indices('_').nth(2) {
        Some((at, _)) => &id[..at],
        None => id,
    }
}

/// One container of a pod as the supervisor knows it before it runs.
pub(crate) struct PodMember {
    pub which: PodContainer,
    pub name: String,
    pub id: String,
    /// An init container with `restartPolicy: Always`.
    pub sidecar: bool,
}

/// A pod's containers, init containers first, in the pod's order, with
/// their ids: `pod_id` for the first app container, `pod_id_NAME` for the
/// others (container names are DNS labels: file-name safe, no `_`).
pub(crate) fn containers_of(pod: &Instance, pod_id: &str) -> Vec<PodMember> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let init = spec.init_containers.iter().flatten().enumerate();
    let init = init.map(|(i, c)| (PodContainer::Init(i), c));
    let app = spec.containers.iter().enumerate();
    let app = app.map(|(i, c)| {
        (
            PodContainer::App(i),
            c.name.as_str(),
            c.restart_policy.as_deref(),
        )
    });
    let init = init.map(|(which, c)| (which, c.name.as_str(), c.restart_policy.as_deref()));
    let ephemeral = spec.ephemeral_containers.iter().flatten().enumerate();
    let ephemeral = ephemeral.map(|(i, c)| (PodContainer::Ephemeral(i), c.name.as_str(), None));
    init.chain(app)
        .chain(ephemeral)
        .map(|(which, name, restart_policy)| PodMember {
            which,
            name: name.to_string(),
            id: match which {
                PodContainer::App(0) => pod_id.to_string(),
                _ => format!("{pod_id}_{name}"),
            },
            sidecar: matches!(which, PodContainer::Init(_)) && restart_policy == Some("Always"),
        })
        .collect()
}

/// What reports on a container's run: a probe, or a lifecycle hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
    /// Its postStart hook returned.
    PostStart,
    /// Its preStop hook failed.
    PreStop,
}

struct ProbeResult {
    /// The instance's id.
    pod: String,
    /// The container's id.
    id: String,
    run: u64,
    kind: ProbeKind,
    healthy: bool,
    message: String,
}

/// How a container's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exit {
    exit_code: Option<i32>,
    signal: Option<i32>,
    oom_killed: bool,
    started_at: SystemTime,
    finished_at: SystemTime,
    /// What the container wrote to its `terminationMessagePath`.
    message: String,
}

impl Exit {
    fn of(state: &ContainerState) -> Option<Exit> {
        match state {
            ContainerState::Exited {
                exit_code,
                signal,
                oom_killed,
                started_at,
                finished_at,
            } => Some(Exit {
                exit_code: *exit_code,
                signal: *signal,
                oom_killed: *oom_killed,
                started_at: *started_at,
                finished_at: *finished_at,
                message: String::new(),
            }),
            ContainerState::Running { .. } => None,
        }
    }

    fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// "exited with code 1", "killed by signal 9".
    fn how(&self) -> String {
        match (self.exit_code, self.signal) {
            (_, Some(signal)) => format!("killed by signal {signal}"),
            (Some(code), None) => format!("exited with code {code}"),
            (None, None) => "exited (code unknown)".to_string(),
        }
    }

    fn wire(&self) -> ContainerTerminated {
        ContainerTerminated {
            // Kubernetes shows 128 + the signal for a killed process.
            exit_code: self
                .exit_code
                .or(self.signal.map(|s| 128 + s))
                .unwrap_or(-1),
            signal: self.signal.unwrap_or(0),
            reason: termination_reason(self.exit_code, self.oom_killed).into(),
            message: self.message.clone(),
            started_at: rfc3339(self.started_at),
            finished_at: rfc3339(self.finished_at),
        }
    }
}

/// One container of an assigned instance.
struct Slot {
    which: PodContainer,
    name: String,
    id: String,
    sidecar: bool,
    spec: Option<ContainerSpec>,
    status: Option<ContainerStatus>,
    /// Counts container runs, so late probe results of an old run are ignored.
    run: u64,
    probes: Option<CancellationToken>,
    ready: bool,
    /// The current run's startup probe has passed (or it has none):
    /// liveness and readiness probes run only then, and only then does a
    /// sidecar let the next container start.
    started: bool,
    /// The host file bound at the current run's `terminationMessagePath`.
    termination_log: Option<PathBuf>,
    /// What the current run wrote there, read when it ended.
    termination_message: String,
    restart_count: i32,
    backoff: Duration,
    restart_at: Option<Instant>,
    /// The wait after the next failed pull of the image.
    pull_backoff: Duration,
    /// When the current wait before a retry began, after a failed pull or
    /// a run killed for its failed postStart hook.
    failed_at: Option<Instant>,
    running_since: Option<Instant>,
    /// How the run before the current one ended (Kubernetes' `lastState`).
    last_exit: Option<Exit>,
    /// Why the container is not running as it should (config errors, probes).
    problem: Option<(String, String)>,
    /// An init container that succeeded, or a sidecar stopped after the app
    /// containers ended: not started again.
    finished: bool,
    /// The current run's postStart hook has yet to return: the container
    /// is not started (nor Running in reports), its probes wait.
    post_start_pending: bool,
    /// The current run is being stopped (its preStop hook, then the stop
    /// signal), in the background.
    stopping: bool,
    /// Recent Events its state does not show (failed hooks).
    events: Vec<ContainerEvent>,
    /// When this agent asked the driver to start the current run (its
    /// output is what the log holds since then).
    run_began: Option<SystemTime>,
    /// The current run's exit has been handled ([`Supervisor::on_exit`]).
    exit_handled: bool,
    /// Previous CPU counter sample for usage rates.
    cpu_sample: Option<(u64, Instant)>,
    usage: WireUsage,
}

impl Slot {
    fn running(&self) -> bool {
        matches!(
            self.status.as_ref().map(|s| &s.state),
            Some(ContainerState::Running { .. })
        )
    }

    fn exit(&self) -> Option<Exit> {
        let mut exit = self.status.as_ref().and_then(|s| Exit::of(&s.state))?;
        exit.message = self.termination_message.clone();
        Some(exit)
    }

    /// Ended and not to be started again.
    fn terminal(&self) -> bool {
        self.exit().is_some() && self.restart_at.is_none()
    }

    fn is_init(&self) -> bool {
        matches!(self.which, PodContainer::Init(_))
    }

    fn is_app(&self) -> bool {
        matches!(self.which, PodContainer::App(_))
    }
}

/// One assigned instance.
struct Managed {
    pod: Arc<Instance>,
    runtime: Arc<dyn ContainerRuntime>,
    /// Its containers, init containers first, in the pod's order.
    slots: Vec<Slot>,
    /// Every init container has succeeded (sidecars: started); kept once
    /// true, as the kubelet keeps a pod initialized.
    initialized: bool,
    /// Why none of its containers can run (a pod its driver cannot run).
    problem: Option<(String, String)>,
    /// The instance's address in its VPC, when its driver joins the
    /// namespace the agent makes.
    pod_ip: Option<Ipv4Addr>,
    /// Where its `hostPort`s are published on the node (in a VPC).
    host_bindings: Vec<PortBinding>,
    /// The network namespace its containers share when it has several and
    /// no VPC attachment.
    shared_namespace: Option<PathBuf>,
    /// Its volumes, once set up; nothing starts before.
    volume_dirs: Option<VolumeDirs>,
    /// Why its volumes are not set up yet (told once as `FailedMount`).
    volumes_waiting: Option<String>,
    /// The resolved volumes its files were last written from.
    resolved_volumes: Option<String>,
    /// After a failed set-up: when to try again, the wait that was, and
    /// the resolved volumes tried (new ones are tried at once).
    volumes_retry: Option<(Instant, Duration, Option<String>)>,
}

impl Managed {
    fn app(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.is_app())
    }

    fn policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// Every app container has ended for good.
    fn app_finished(&self) -> bool {
        self.initialized && self.app().all(Slot::terminal)
    }

    /// An init container failed and will not run again (restartPolicy
    /// Never): the pod has failed.
    fn init_failed(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.is_init() && !s.sidecar && s.terminal() && !s.finished)
    }
}

/// The supervisor's inputs and outputs.
pub(crate) struct Supervisor {
    pub runtimes: Vec<Arc<dyn ContainerRuntime>>,
    pub assignments: watch::Receiver<Option<AssignmentSet>>,
    pub statuses: watch::Sender<Arc<Vec<InstanceStatus>>>,
    pub directory: Directory,
    /// The cluster DNS address, passed to instances as `C4M_DNS_SERVER`.
    pub dns_address: watch::Receiver<String>,
    /// Instance networking, when this node has it.
    pub network: Option<Arc<InstanceNetwork>>,
    /// Where the network namespaces shared by the containers of a pod
    /// without a VPC address are kept (`None`: each container of such a
    /// pod gets its own).
    pub pod_namespaces: Option<PathBuf>,
    /// The holders of the IPC and PID namespaces the containers of a pod
    /// share, on drivers that take a network namespace (`None`: each
    /// container gets its own, and `shareProcessNamespace` is refused).
    pub holders: Option<Arc<PodHolders>>,
    /// Runs probe attempts.
    pub prober: Arc<dyn Prober>,
    /// How restarts of crashing containers are spaced.
    pub backoff: RestartBackoff,
    /// The `/etc` files of containers with a network namespace.
    pub pod_etc: PodEtc,
    /// Pods' volumes (`None`: a pod with volumes waits, saying so).
    pub volumes: Option<PodVolumes>,
    /// Pods the volume manager asks to restart (offline expansion).
    pub restarts: Restarts,
}

impl Supervisor {
    /// The driver named `driver`, or the node's default (the first) for
    /// instances that name none.
    fn runtime(&self, driver: Option<&str>) -> Option<Arc<dyn ContainerRuntime>> {
        match driver {
            Some(driver) => self.runtimes.iter().find(|r| r.name() == driver).cloned(),
            None => self.runtimes.first().cloned(),
        }
    }

    /// The network to attach containers of `runtime` to, if they take one.
    fn network_for(&self, runtime: &dyn ContainerRuntime) -> Option<Arc<InstanceNetwork>> {
        self.network
            .as_ref()
            .filter(|_| runtime.takes_network_namespace())
            .cloned()
    }

    /// Runs until `shutdown`. Containers keep running after it returns.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut managed: BTreeMap<String, Managed> = BTreeMap::new();
        // Containers found on the node at start-up: adopted when assigned,
        // removed once an assignment set shows they are not.
        let mut leftovers: HashMap<String, (ContainerStatus, Arc<dyn ContainerRuntime>)> =
            HashMap::new();
        for runtime in &self.runtimes {
            match runtime.list().await {
                Ok(list) => {
                    for status in list {
                        leftovers.insert(status.id.clone(), (status, Arc::clone(runtime)));
                    }
                }
                Err(e) => {
                    tracing::error!(driver = runtime.name(), error = %e, "cannot list existing containers")
                }
            }
        }
        if !leftovers.is_empty() {
            tracing::info!(
                count = leftovers.len(),
                "found containers from an earlier agent run"
            );
        }
        // The namespace holders of those pods, adopted or removed likewise.
        let mut stray_holders = self
            .holders
            .as_ref()
            .map(|holders| holders.find_running())
            .unwrap_or_default();
        let stopping = Stopping::default();
        let mut volumes_swept: Option<Instant> = None;
        let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeResult>(64);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.assignments.changed() => if changed.is_err() { break },
                Some(result) = probe_rx.recv() => self.on_probe(&mut managed, result, &probe_tx),
                _ = self.restarts.wake.notified() => {}
                _ = ticker.tick() => {}
            }
            let assigned = self.assignments.borrow_and_update().clone();
            if let Some(assigned) = assigned {
                self.sync(
                    &mut managed,
                    &mut leftovers,
                    &mut stray_holders,
                    &stopping,
                    &assigned,
                )
                .await;
                if volumes_swept.is_none_or(|at| at.elapsed() >= VOLUME_SWEEP) {
                    volumes_swept = Some(Instant::now());
                    self.sweep_volumes(&managed, &stopping, &assigned).await;
                }
            }
            for (id, instance) in managed.iter_mut() {
                self.drive(id, instance, &probe_tx).await;
            }
            // An instance being stopped is still reported, until its
            // containers are gone: the control plane then removes its pod.
            let statuses: Vec<InstanceStatus> = managed
                .values()
                .map(report)
                .chain(lock(&stopping).values().cloned())
                .collect();
            self.statuses.send_if_modified(|current| {
                let changed = **current != statuses;
                if changed {
                    *current = Arc::new(statuses);
                }
                changed
            });
        }
        for instance in managed.values() {
            for slot in &instance.slots {
                if let Some(probes) = &slot.probes {
                    probes.cancel();
                }
            }
        }
    }

    /// Aligns the managed set with the assignment set.
    async fn sync(
        &self,
        managed: &mut BTreeMap<String, Managed>,
        leftovers: &mut HashMap<String, (ContainerStatus, Arc<dyn ContainerRuntime>)>,
        stray_holders: &mut HashSet<String>,
        stopping: &Stopping,
        assigned: &[Arc<Instance>],
    ) {
        let mut wanted = HashMap::new();
        // Pods being deleted stay assigned until stopped, with their grace.
        let mut deleted = HashMap::new();
        for pod in assigned {
            match pod.metadata.deletion_timestamp {
                Some(_) => deleted.insert(container_id(pod), pod),
                None => wanted.insert(container_id(pod), pod),
            };
        }
        // Gone from the assignment, or to restart for a volume: stop and
        // remove in the background.
        let gone: Vec<String> = managed
            .iter()
            .filter(|(id, instance)| {
                !wanted.contains_key(*id)
                    || self.restarts.take(instance.pod.metadata.uid.as_deref(), id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(instance) = managed.remove(&id) {
                for slot in &instance.slots {
                    if let Some(probes) = &slot.probes {
                        probes.cancel();
                    }
                }
                self.forget(&instance.pod);
                let grace = match deleted.get(&id) {
                    Some(pod) => deletion_grace_period(pod),
                    None => grace_period(&instance.pod),
                };
                let network = self.network_for(instance.runtime.as_ref());
                lock(stopping).insert(id.clone(), report(&instance));
                let stopping = Arc::clone(stopping);
                self.pod_etc.remove(&id);
                let volumes = self.volumes.clone();
                if let Some(volumes) = &volumes {
                    volumes.removing(&id);
                }
                let removal = Removal {
                    volumes,
                    network,
                    id: id.clone(),
                    // App containers first, then sidecars and init
                    // containers, last started first (as the kubelet).
                    containers: instance
                        .slots
                        .iter()
                        .rev()
                        .map(|slot| RemovedContainer {
                            id: slot.id.clone(),
                            name: slot.name.clone(),
                            app: !slot.is_init(),
                            pre_stop: hook_target(&instance, slot, Hook::PreStop),
                        })
                        .collect(),
                    runtime: instance.runtime,
                    prober: Arc::clone(&self.prober),
                    shared_namespace: instance.shared_namespace,
                    holders: self.holders.clone(),
                    grace,
                    reported: Some((Arc::clone(&stopping), self.statuses.subscribe())),
                };
                tokio::spawn(async move {
                    removal.run().await;
                    lock(&stopping).remove(&id);
                });
            }
        }
        let wanted_containers: HashSet<String> = wanted
            .iter()
            .flat_map(|(id, pod)| containers_of(pod, id).into_iter().map(|m| m.id))
            .collect();
        // Leftovers no longer assigned go pod by pod: containers, then the
        // pod's network and namespace holder.
        let mut unassigned: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in leftovers
            .keys()
            .filter(|id| !wanted_containers.contains(*id))
        {
            let pod = pod_of_container(id).to_string();
            unassigned.entry(pod).or_default().push(id.clone());
        }
        stray_holders.retain(|pod| !wanted.contains_key(pod));
        for pod in stray_holders.drain() {
            unassigned.entry(pod).or_default();
        }
        for (pod, containers) in unassigned {
            let runtimes: Vec<_> = containers
                .iter()
                .filter_map(|id| leftovers.remove(id))
                .map(|(_, runtime)| runtime)
                .collect();
            let Some(runtime) = runtimes.into_iter().next() else {
                // Only a holder is left.
                if let Some(holders) = &self.holders {
                    holders.remove(&pod);
                }
                continue;
            };
            tracing::info!(instance = %pod, ?containers, "removing containers that are no longer assigned");
            // A container the pod no longer has goes alone: its pod stays.
            let pod_gone = !wanted.contains_key(&pod);
            let network = self.network_for(runtime.as_ref()).filter(|_| pod_gone);
            if pod_gone {
                self.pod_etc.remove(&pod);
            }
            let volumes = self.volumes.clone().filter(|_| pod_gone);
            if let Some(volumes) = &volumes {
                volumes.removing(&pod);
            }
            let removal = Removal {
                volumes,
                runtime,
                prober: Arc::clone(&self.prober),
                network,
                containers: containers
                    .into_iter()
                    .map(|id| RemovedContainer {
                        id,
                        name: String::new(),
                        app: true,
                        pre_stop: None,
                    })
                    .collect(),
                id: pod,
                shared_namespace: None,
                holders: self.holders.clone().filter(|_| pod_gone),
                grace: Duration::from_secs(10),
                reported: None,
            };
            tokio::spawn(removal.run());
        }
        for (id, pod) in wanted {
            if let Some(instance) = managed.get_mut(&id) {
                instance.pod = Arc::clone(pod);
                self.add_ephemeral(&id, instance);
                continue;
            }
            let members = containers_of(pod, &id);
            let adopted: HashMap<String, (ContainerStatus, Arc<dyn ContainerRuntime>)> = members
                .iter()
                .filter_map(|m| Some((m.id.clone(), leftovers.remove(&m.id)?)))
                .collect();
            let driver = c4m_core::instance_driver(pod);
            let runtime = match (adopted.values().next(), self.runtime(driver)) {
                (Some((_, runtime)), _) => Arc::clone(runtime),
                (None, Some(runtime)) => runtime,
                (None, None) => {
                    tracing::warn!(instance = %id, driver = driver.unwrap_or_default(), "instance needs a driver this node lacks");
                    continue;
                }
            };
            if lock(stopping).contains_key(&id) {
                // Restarted: it starts again once its containers are gone.
                continue;
            }
            let mut instance = self.manage(pod, &id, members, adopted, runtime).await;
            if let (Some(event), Some(slot)) =
                (self.restarts.event_for(&id), instance.slots.first_mut())
            {
                slot.events.push(event);
            }
            managed.insert(id, instance);
        }
    }

    /// Takes over the instance `pod` (id `id`) on `runtime`, with the
    /// containers an earlier agent left running (`adopted`).
    async fn manage(
        &self,
        pod: &Arc<Instance>,
        id: &str,
        members: Vec<PodMember>,
        mut adopted: HashMap<String, (ContainerStatus, Arc<dyn ContainerRuntime>)>,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> Managed {
        let attached = self.network_for(runtime.as_ref()).is_some();
        let several = members.len() > 1;
        let problem = (several && !runtime.runs_several_containers_per_pod()).then(|| {
            let field = members
                .iter()
                .find(|m| m.which != PodContainer::App(0))
                .map(|m| m.which.to_string())
                .unwrap_or_default();
            (
                "CreateContainerConfigError".to_string(),
                format!(
                    "{field}: {}",
                    c4m_core::one_container_per_pod(runtime.name())
                ),
            )
        });
        // What the node's default driver cannot honour is refused here,
        // naming the field, as admission refuses it for a pod that names
        // its driver.
        let problem = problem.or_else(|| {
            let (field, why) = pod.spec.as_ref().and_then(|pod_spec| {
                c4m_core::pod_etc::unsupported_by_driver(runtime.name(), pod_spec)
            })?;
            Some((
                "CreateContainerConfigError".to_string(),
                format!("spec.{field}: {why}"),
            ))
        });
        let problem = problem.or_else(|| {
            let (field, why) = pod.spec.as_ref().and_then(|pod_spec| {
                c4m_core::mounts::unsupported_volumes(runtime.name(), pod_spec)
            })?;
            Some((
                "CreateContainerConfigError".to_string(),
                format!("spec.{field}: {why}"),
            ))
        });
        let problem = problem.or_else(|| {
            let shares = pod.spec.as_ref().and_then(|s| s.share_process_namespace);
            (shares == Some(true) && self.holders.is_none()).then(|| {
                (
                    "CreateContainerConfigError".to_string(),
                    "spec.shareProcessNamespace: this agent starts no pod namespace holder (AgentConfig::pod_holder)".to_string(),
                )
            })
        });
        let shared_namespace = match &self.pod_namespaces {
            Some(dir) if several && !attached && runtime.takes_network_namespace() => {
                Some(dir.join(id))
            }
            _ => None,
        };
        let known = |statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                     name: &str| {
            statuses
                .and_then(|list| list.iter().find(|c| c.name == name))
                .map(|c| {
                    (
                        c.restart_count,
                        c.state
                            .as_ref()
                            .and_then(|s| s.terminated.as_ref())
                            .is_some_and(|t| t.exit_code == 0),
                    )
                })
        };
        let pod_status = pod.status.as_ref();
        let mut slots = Vec::with_capacity(members.len());
        for member in members {
            // What the pod's status says survives an agent restart: the
            // restart count, and init containers that already succeeded.
            let (restart_count, succeeded) = match member.which {
                PodContainer::Init(_) => known(
                    pod_status.and_then(|s| s.init_container_statuses.as_ref()),
                    &member.name,
                ),
                PodContainer::App(_) => known(
                    pod_status.and_then(|s| s.container_statuses.as_ref()),
                    &member.name,
                ),
                PodContainer::Ephemeral(_) => known(
                    pod_status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
                    &member.name,
                ),
            }
            .unwrap_or((0, false));
            let status = adopted.remove(&member.id).map(|(status, _)| status);
            if status.is_some() {
                tracing::info!(container = %member.id, "adopted a running container");
            }
            let mut slot = self.new_slot(pod, member, runtime.as_ref(), status);
            slot.restart_count = restart_count;
            // An ephemeral container that ended stays ended.
            slot.finished = match slot.which {
                PodContainer::Init(_) => !slot.sidecar && succeeded,
                PodContainer::App(_) => false,
                PodContainer::Ephemeral(_) => slot.status.is_none() && known_ended(pod, &slot.name),
            };
            slots.push(slot);
        }
        let adopted_any = slots.iter().any(|s| s.status.is_some());
        // A pod whose app containers ran (or run) has been initialized.
        let initialized = !slots.iter().any(Slot::is_init)
            || slots
                .iter()
                .any(|s| s.is_app() && (s.status.is_some() || s.restart_count > 0));
        let (pod_ip, host_bindings) = match self.network_for(runtime.as_ref()) {
            Some(network) if adopted_any => (
                network.readopt(id, pod).await.map(|a| a.address),
                network.host_bindings(id),
            ),
            _ => (None, Vec::new()),
        };
        self.publish(pod, id, &runtime, &slots);
        Managed {
            pod: Arc::clone(pod),
            runtime,
            slots,
            initialized,
            problem,
            pod_ip,
            host_bindings,
            shared_namespace,
            volume_dirs: None,
            volumes_waiting: None,
            resolved_volumes: None,
            volumes_retry: None,
        }
    }

    /// Container `member` of `pod`, not yet run unless `status` (adopted).
    fn new_slot(
        &self,
        pod: &Instance,
        member: PodMember,
        runtime: &dyn ContainerRuntime,
        status: Option<ContainerStatus>,
    ) -> Slot {
        let attached = self.network_for(runtime).is_some();
        let spec =
            ContainerSpec::for_container(pod, member.which, member.id.clone()).map(|mut spec| {
                self.add_instance_env(&mut spec, pod, attached);
                spec
            });
        let refused = matches!(member.which, PodContainer::Ephemeral(_))
            .then(|| c4m_core::pod_etc::refuses_ephemeral_containers(runtime.name()))
            .flatten()
            .map(|why| format!("{}: {why}", member.which));
        let spec = match refused {
            Some(why) => Err(c4m_core::Error::Invalid(why)),
            None => spec,
        };
        let problem = spec
            .as_ref()
            .err()
            .map(|e| ("CreateContainerConfigError".to_string(), e.to_string()));
        Slot {
            which: member.which,
            name: member.name,
            id: member.id,
            sidecar: member.sidecar,
            spec: spec.ok(),
            running_since: status.as_ref().map(|_| Instant::now()),
            status,
            run: 0,
            probes: None,
            ready: false,
            started: false,
            termination_log: None,
            termination_message: String::new(),
            restart_count: 0,
            backoff: self.backoff.initial,
            restart_at: None,
            pull_backoff: self.backoff.image_pull_initial,
            failed_at: None,
            last_exit: None,
            problem,
            finished: false,
            cpu_sample: None,
            usage: WireUsage::default(),
            exit_handled: false,
            post_start_pending: false,
            stopping: false,
            events: Vec::new(),
            run_began: None,
        }
    }

    /// Adds the ephemeral containers `kubectl debug` added to a managed
    /// pod since (they are the only containers a pod gains).
    fn add_ephemeral(&self, id: &str, instance: &mut Managed) {
        // Called every tick: nothing to build while every ephemeral
        // container declared already has its slot.
        let declared = instance.pod.spec.as_ref();
        let declared = declared.and_then(|s| s.ephemeral_containers.as_ref());
        let has_slot = |name: &str| {
            instance
                .slots
                .iter()
                .any(|s| matches!(s.which, PodContainer::Ephemeral(_)) && s.name == name)
        };
        if declared.into_iter().flatten().all(|c| has_slot(&c.name)) {
            return;
        }
        let new: Vec<PodMember> = containers_of(&instance.pod, id)
            .into_iter()
            .filter(|m| matches!(m.which, PodContainer::Ephemeral(_)))
            .filter(|m| !instance.slots.iter().any(|s| s.id == m.id))
            .collect();
        if new.is_empty() {
            return;
        }
        for member in new {
            tracing::info!(container = %member.id, "an ephemeral container was added");
            let slot = self.new_slot(&instance.pod, member, instance.runtime.as_ref(), None);
            instance.slots.push(slot);
        }
        self.publish(&instance.pod, id, &instance.runtime, &instance.slots);
    }

    /// Makes pod `id`'s containers reachable by name for the HTTP server
    /// (logs, exec, attach).
    fn publish(
        &self,
        pod: &Instance,
        id: &str,
        runtime: &Arc<dyn ContainerRuntime>,
        slots: &[Slot],
    ) {
        let key = directory_key(pod);
        let mut directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        // Published again (an ephemeral container added): the runs keep
        // their beginnings.
        let runs_began = directory
            .get(&key)
            .filter(|placement| placement.id == id)
            .map(|placement| placement.runs_began.clone())
            .unwrap_or_default();
        directory.insert(
            key,
            Placement {
                id: id.to_string(),
                runtime: Arc::clone(runtime),
                containers: slots
                    .iter()
                    .map(|s| (s.name.clone(), s.id.clone()))
                    .collect(),
                previous_logs: slots
                    .iter()
                    .map(|s| (s.name.clone(), self.pod_etc.previous_log(id, &s.name)))
                    .collect(),
                runs_began,
            },
        );
    }

    /// What every instance learns about itself and the cluster from its
    /// environment (as Kubernetes' downward API and service env do). An
    /// instance `attached` to a VPC learns its DNS server when attached.
    fn add_instance_env(&self, spec: &mut ContainerSpec, pod: &Instance, attached: bool) {
        let meta = &pod.metadata;
        let mut env = vec![
            (
                "C4M_INSTANCE".to_string(),
                meta.name.clone().unwrap_or_default(),
            ),
            (
                "C4M_NAMESPACE".to_string(),
                meta.namespace.clone().unwrap_or_default(),
            ),
        ];
        let dns = self.dns_address.borrow().clone();
        if !dns.is_empty() && !attached {
            env.push((DNS_SERVER_ENV.to_string(), dns));
        }
        // The manifest's own variables come after, so they win.
        env.append(&mut spec.env);
        spec.env = env;
    }

    /// Tells the agent's HTTP server when container `name` of `pod` began
    /// its current run.
    fn note_run_began(&self, pod: &Instance, name: &str, began: SystemTime) {
        let key = directory_key(pod);
        let mut directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(placement) = directory.get_mut(&key) {
            placement.runs_began.insert(name.to_string(), began);
        }
    }

    fn forget(&self, pod: &Instance) {
        let key = directory_key(pod);
        self.directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Moves one instance along, as the kubelet orders a pod's containers:
    /// init containers one at a time, each to success (a sidecar: until it
    /// runs), then the app containers together; sidecars keep running
    /// until every app container has ended for good, then stop.
    async fn drive(&self, id: &str, instance: &mut Managed, probes: &mpsc::Sender<ProbeResult>) {
        if instance.problem.is_some() {
            return;
        }
        // An adopted pod's running containers are watched whatever its
        // volumes; only what has not started waits for them.
        let adopted = instance.slots.iter().any(|s| s.status.is_some());
        if !self.volumes_ready(id, instance).await && !adopted {
            self.sample_usage(instance).await;
            return;
        }
        // Observe every container that has run.
        for index in 0..instance.slots.len() {
            self.observe(instance, index).await;
        }
        if !instance.initialized {
            let mut all_done = true;
            for index in 0..instance.slots.len() {
                let slot = &instance.slots[index];
                if !slot.is_init() {
                    break;
                }
                if slot.finished && !slot.sidecar {
                    continue;
                }
                self.advance(id, instance, index, probes).await;
                let slot = &instance.slots[index];
                let through = if slot.sidecar {
                    slot.running() && slot.started
                } else {
                    slot.finished
                };
                if !through {
                    all_done = false;
                    break;
                }
            }
            if !all_done {
                self.sample_usage(instance).await;
                return;
            }
            instance.initialized = true;
        }
        if instance.app_finished() {
            self.stop_sidecars(id, instance, probes);
        } else {
            for index in 0..instance.slots.len() {
                let slot = &instance.slots[index];
                if slot.is_init() && !slot.sidecar {
                    continue;
                }
                self.advance(id, instance, index, probes).await;
            }
        }
        self.sample_usage(instance).await;
    }

    /// Reads the current state of container `index` if it has run, and
    /// records an exit.
    async fn observe(&self, instance: &mut Managed, index: usize) {
        let runtime = Arc::clone(&instance.runtime);
        let slot = &mut instance.slots[index];
        if slot.status.is_none() {
            return;
        }
        match runtime.status(&slot.id).await {
            Ok(status) => {
                slot.status = Some(status);
                self.note_exit(instance, index).await;
            }
            Err(c4m_core::Error::ContainerNotFound(_)) => {
                // Removed behind our back: start it again.
                slot.status = None;
            }
            Err(e) => {
                tracing::warn!(container = %slot.id, error = %e, "cannot read container status");
            }
        }
    }

    /// Handles the exit of container `index`'s current run once, however
    /// it was seen: ended between two looks, or already ended when its
    /// start or adoption returned.
    async fn note_exit(&self, instance: &mut Managed, index: usize) {
        let slot = &instance.slots[index];
        let Some(exit) = slot.exit().filter(|_| !slot.exit_handled) else {
            return;
        };
        let policy = instance.policy().to_string();
        let fallback_to_logs = slot.which.of(&instance.pod).is_some_and(|c| {
            c.termination_message_policy.as_deref() == Some(FALLBACK_TO_LOGS_ON_ERROR)
        });
        let slot = &mut instance.slots[index];
        let stopped_on_purpose = slot.finished;
        slot.exit_handled = true;
        slot.termination_message = slot
            .termination_log
            .as_deref()
            .map(read_termination_message)
            .unwrap_or_default();
        if slot
            .problem
            .as_ref()
            .is_some_and(|(reason, _)| reason == POST_START_HOOK_ERROR)
        {
            slot.failed_at = Some(Instant::now());
        }
        if slot.termination_message.is_empty() && !exit.succeeded() && fallback_to_logs {
            slot.termination_message =
                log_tail(instance.runtime.as_ref(), &slot.id, slot.run_began).await;
        }
        self.on_exit(slot, &policy, stopped_on_purpose);
    }

    /// Starts container `index` when it has not run, or restarts it when
    /// its backoff is over; starts its probes once it runs.
    async fn advance(
        &self,
        pod_id: &str,
        instance: &mut Managed,
        index: usize,
        probes: &mpsc::Sender<ProbeResult>,
    ) {
        let slot = &mut instance.slots[index];
        if slot.spec.is_none() || slot.finished {
            return;
        }
        let needs_probes = match &slot.status {
            None => {
                if let Some(at) = slot.restart_at.filter(|at| Instant::now() < *at) {
                    show_backoff(slot, at);
                    return;
                }
                // A container may exist that this agent has not seen (one
                // whose start outlived a crash): adopt it, never duplicate it.
                match instance.runtime.status(&slot.id).await {
                    Ok(status) if matches!(status.state, ContainerState::Running { .. }) => {
                        tracing::info!(container = %slot.id, "adopted a running container");
                        slot.status = Some(status);
                        slot.running_since = Some(Instant::now());
                        if let Some(network) = self.network_for(instance.runtime.as_ref()) {
                            instance.pod_ip = network
                                .readopt(pod_id, &instance.pod)
                                .await
                                .map(|a| a.address);
                            instance.host_bindings = network.host_bindings(pod_id);
                        }
                    }
                    _ => self.start(pod_id, instance, index).await,
                }
                true
            }
            Some(_) if slot.running() => !slot.stopping && slot.probes.is_none(),
            Some(_) => match slot.restart_at {
                Some(at) if Instant::now() >= at => {
                    slot.restart_at = None;
                    slot.restart_count += 1;
                    slot.last_exit = slot.exit();
                    self.keep_previous_log(pod_id, instance, index).await;
                    self.start(pod_id, instance, index).await;
                    true
                }
                Some(at) => {
                    show_backoff(slot, at);
                    false
                }
                None => false,
            },
        };
        self.note_exit(instance, index).await;
        if needs_probes && instance.slots[index].running() {
            if instance.slots[index].post_start_pending {
                self.start_post_start(pod_id, instance, index, probes.clone());
            } else {
                self.start_probes(pod_id, instance, index, probes.clone());
            }
        }
    }

    /// Keeps the log of container `index`'s ended run apart before it runs
    /// again, with its lines' times, for `kubectl logs --previous`: one run
    /// back, as the kubelet keeps.
    async fn keep_previous_log(&self, pod_id: &str, instance: &Managed, index: usize) {
        let slot = &instance.slots[index];
        if slot.exit().is_none() {
            return;
        }
        // What the run wrote: since it began (a driver may keep earlier
        // runs' output in the same log).
        let options = c4m_core::LogOptions {
            timestamps: true,
            since: slot.run_began,
            ..c4m_core::LogOptions::default()
        };
        let kept = match read_log(instance.runtime.as_ref(), &slot.id, options).await {
            Ok(log) => self
                .pod_etc
                .keep_previous_log(pod_id, &slot.name, &log)
                .map_err(|e| format!("writing the kept log: {e}")),
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            tracing::warn!(container = %slot.id, error = %e, "cannot keep the previous run's log");
        }
    }

    /// Runs the postStart hook of container `index`'s current run in the
    /// background; its probes start once it returns
    /// ([`ProbeKind::PostStart`]).
    fn start_post_start(
        &self,
        pod_id: &str,
        instance: &mut Managed,
        index: usize,
        results: mpsc::Sender<ProbeResult>,
    ) {
        let target = hook_target(instance, &instance.slots[index], Hook::PostStart);
        let slot = &mut instance.slots[index];
        let Some((hook, status)) = target else {
            slot.post_start_pending = false;
            return;
        };
        let token = CancellationToken::new();
        let cancelled = token.clone();
        let runtime = Arc::clone(&instance.runtime);
        let prober = Arc::clone(&self.prober);
        let (pod, id, run) = (pod_id.to_string(), slot.id.clone(), slot.run);
        tokio::spawn(async move {
            // The kubelet bounds a postStart hook by nothing but the
            // container's life (the token ends with the run).
            let outcome = tokio::select! {
                _ = cancelled.cancelled() => return,
                outcome = hook.run(prober.as_ref(), runtime.as_ref(), &status, Duration::MAX) => outcome,
            };
            let result = ProbeResult {
                pod,
                id,
                run,
                kind: ProbeKind::PostStart,
                healthy: outcome.is_ok(),
                message: outcome.err().unwrap_or_default(),
            };
            let _ = results.send(result).await;
        });
        slot.probes = Some(token);
    }

    /// Stops container `index` in the background as the kubelet kills one
    /// ([`kill`]); a failed preStop hook comes back as
    /// [`ProbeKind::PreStop`].
    fn spawn_kill(
        &self,
        pod_id: &str,
        instance: &mut Managed,
        index: usize,
        results: mpsc::Sender<ProbeResult>,
    ) {
        let grace = grace_period(&instance.pod);
        let pre_stop = hook_target(instance, &instance.slots[index], Hook::PreStop);
        let slot = &mut instance.slots[index];
        slot.stopping = true;
        if let Some(probes) = slot.probes.take() {
            probes.cancel();
        }
        let runtime = Arc::clone(&instance.runtime);
        let prober = Arc::clone(&self.prober);
        let (pod, id, run) = (pod_id.to_string(), slot.id.clone(), slot.run);
        tokio::spawn(async move {
            if let Some(message) =
                kill(runtime.as_ref(), prober.as_ref(), &id, pre_stop, grace).await
            {
                let result = ProbeResult {
                    pod,
                    id,
                    run,
                    kind: ProbeKind::PreStop,
                    healthy: false,
                    message,
                };
                let _ = results.send(result).await;
            }
        });
    }

    /// Stops the sidecars once the app containers have ended for good, the
    /// last started first, each once the one after it has stopped, so that
    /// a Job's pod completes.
    fn stop_sidecars(
        &self,
        pod_id: &str,
        instance: &mut Managed,
        results: &mpsc::Sender<ProbeResult>,
    ) {
        for index in (0..instance.slots.len()).rev() {
            let slot = &mut instance.slots[index];
            if !slot.sidecar {
                continue;
            }
            if slot.finished {
                if slot.running() {
                    return; // Still stopping: the next one waits.
                }
                continue;
            }
            slot.finished = true;
            slot.restart_at = None;
            if let Some(probes) = slot.probes.take() {
                probes.cancel();
            }
            if slot.running() {
                tracing::info!(container = %slot.id, "stopping a sidecar: the app containers have ended");
                self.spawn_kill(pod_id, instance, index, results.clone());
                return;
            }
        }
    }

    /// The network namespace container `index` joins: the VPC attachment's
    /// (attaching the pod first), else the one its pod's containers share.
    async fn start(&self, pod_id: &str, instance: &mut Managed, index: usize) {
        let Some(mut spec) = instance.slots[index].spec.clone() else {
            return;
        };
        let target = match target_pid_namespace(instance, index) {
            Ok(target) => target,
            Err(message) => {
                let slot = &mut instance.slots[index];
                tracing::warn!(container = %slot.id, "{message}");
                self.retry_later(slot, "CreateContainerError", message);
                return;
            }
        };
        match self.container_volumes(pod_id, instance, index, &spec).await {
            Ok((mounts, writable_layer)) => {
                spec.mounts = mounts;
                spec.writable_layer = writable_layer;
            }
            Err(message) => {
                let slot = &mut instance.slots[index];
                tracing::warn!(container = %slot.id, "{message}");
                self.retry_later(slot, "CreateContainerConfigError", message);
                return;
            }
        }
        let mut cluster_dns = None;
        let attached = match self.network_for(instance.runtime.as_ref()) {
            Some(network) => match network.attach(pod_id, &instance.pod).await {
                Ok(attachment) => {
                    // The cluster DNS as seen from inside: the relay on the
                    // gateway (the control plane's own address is the
                    // node's loopback, out of the instance's reach).
                    // First, so the manifest's own variables still win.
                    spec.env.insert(
                        0,
                        (
                            DNS_SERVER_ENV.to_string(),
                            network.dns_server(&attachment).to_string(),
                        ),
                    );
                    spec.network_namespace = Some(attachment.network_namespace);
                    cluster_dns = Some(attachment.gateway.into());
                    instance.pod_ip = Some(attachment.address);
                    instance.host_bindings = network.host_bindings(pod_id);
                    Ok(())
                }
                Err(e) => Err(("cannot attach to its vpc", e.to_string())),
            },
            None => match &instance.shared_namespace {
                Some(path) => match c4m_mesh::create_loopback_namespace(path).await {
                    Ok(()) => {
                        spec.network_namespace = Some(path.clone());
                        Ok(())
                    }
                    Err(e) => Err(("cannot make the pod's network namespace", e.to_string())),
                },
                None => Ok(()),
            },
        };
        let slot = &mut instance.slots[index];
        if let Err((what, error)) = attached {
            tracing::warn!(container = %slot.id, error = %error, "{what}");
            self.retry_later(slot, "NetworkNotReady", error);
            return;
        }
        if instance.runtime.takes_network_namespace() {
            if let Some(holders) = &self.holders {
                match holders.ensure(pod_id).await {
                    Ok(namespaces) => {
                        spec.ipc_namespace = Some(namespaces.ipc());
                        spec.shm = Some(namespaces.shm.clone());
                        let pod_spec = instance.pod.spec.as_ref();
                        if pod_spec.and_then(|s| s.share_process_namespace) == Some(true) {
                            spec.pid_namespace = Some(namespaces.pid());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(container = %slot.id, error = %e, "cannot start the pod's namespace holder");
                        self.retry_later(slot, "CreateContainerError", e.to_string());
                        return;
                    }
                }
            }
            // An ephemeral container sees its target's processes.
            if spec.pid_namespace.is_none() {
                spec.pid_namespace = target;
            }
            let address = instance.pod_ip.map(Into::into);
            if let Err(e) =
                self.pod_etc
                    .write(pod_id, &mut spec, &instance.pod, address, cluster_dns)
            {
                tracing::warn!(container = %slot.id, error = %e, "cannot write the pod's /etc files");
                let message = format!("writing the pod's /etc files: {e}");
                self.retry_later(slot, "CreateContainerConfigError", message);
                return;
            }
            let path = slot
                .which
                .of(&instance.pod)
                .and_then(|c| c.termination_message_path.clone())
                .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into());
            match self.pod_etc.termination_log(pod_id, &slot.name) {
                Ok(file) => {
                    spec.termination_message = Some((file.clone(), path.into()));
                    slot.termination_log = Some(file);
                }
                Err(e) => {
                    tracing::warn!(container = %slot.id, error = %e, "cannot make the termination log");
                    let message = format!("making the file for {path}: {e}");
                    self.retry_later(slot, "CreateContainerConfigError", message);
                    return;
                }
            }
        }
        let began = SystemTime::now();
        match instance.runtime.start(&spec).await {
            Ok(status) => {
                tracing::info!(
                    container = %slot.id,
                    restarts = slot.restart_count,
                    "container started"
                );
                slot.status = Some(status);
                slot.running_since = Some(Instant::now());
                slot.problem = None;
                slot.ready = false;
                slot.started = false;
                slot.termination_message.clear();
                slot.exit_handled = false;
                slot.stopping = false;
                slot.run_began = Some(began);
                self.note_run_began(&instance.pod, &slot.name, began);
                slot.post_start_pending = slot
                    .which
                    .of(&instance.pod)
                    .is_some_and(|c| Hook::PostStart.of(&c).is_some());
                slot.run += 1;
                slot.pull_backoff = self.backoff.image_pull_initial;
                slot.failed_at = None;
            }
            Err(e @ (c4m_core::Error::Image { .. } | c4m_core::Error::ImageNeverPull { .. })) => {
                tracing::warn!(container = %slot.id, error = %e, "cannot pull the container's image");
                let reason = match e {
                    c4m_core::Error::ImageNeverPull { .. } => ERR_IMAGE_NEVER_PULL,
                    _ => ERR_IMAGE_PULL,
                };
                slot.problem = Some((reason.into(), e.to_string()));
                let now = Instant::now();
                slot.failed_at = Some(now);
                slot.restart_at = Some(now + slot.pull_backoff);
                slot.pull_backoff = (slot.pull_backoff * 2).min(self.backoff.image_pull_max);
            }
            Err(e) => {
                tracing::warn!(container = %slot.id, error = %e, "cannot start container");
                self.retry_later(slot, "CreateContainerError", e.to_string());
            }
        }
    }

    /// Shows why container `slot` could not start (`reason`, `message`)
    /// and tries again after its backoff, which doubles.
    fn retry_later(&self, slot: &mut Slot, reason: &str, message: String) {
        slot.problem = Some((reason.into(), message));
        slot.restart_at = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(self.backoff.max);
    }

    /// Records an exit and schedules the restart the policy asks for: a
    /// sidecar always restarts (unless `stopped` on purpose), an init
    /// container until it succeeds (unless the pod's policy is Never), an
    /// app container as the pod's policy says.
    fn on_exit(&self, slot: &mut Slot, policy: &str, stopped: bool) {
        if let Some(probes) = slot.probes.take() {
            probes.cancel();
        }
        slot.ready = false;
        let Some(exit) = slot.exit() else {
            return;
        };
        let ran_long = slot
            .running_since
            .is_some_and(|since| since.elapsed() >= self.backoff.reset);
        if ran_long {
            slot.backoff = self.backoff.initial;
        }
        let failed = !exit.succeeded();
        let restart = match slot.which {
            _ if stopped => false,
            PodContainer::Init(_) if slot.sidecar => true,
            PodContainer::Init(_) => {
                slot.finished = !failed;
                failed && policy != "Never"
            }
            PodContainer::App(_) => policy == "Always" || (policy == "OnFailure" && failed),
            // Run once, as the kubelet runs them.
            PodContainer::Ephemeral(_) => false,
        };
        tracing::info!(
            container = %slot.id,
            exit_code = ?exit.exit_code,
            oom_killed = exit.oom_killed,
            restart,
            "container exited"
        );
        if restart {
            slot.restart_at = Some(Instant::now() + slot.backoff);
            slot.backoff = (slot.backoff * 2).min(self.backoff.max);
        }
    }

    fn start_probes(
        &self,
        pod_id: &str,
        instance: &mut Managed,
        index: usize,
        results: mpsc::Sender<ProbeResult>,
    ) {
        let slot = &mut instance.slots[index];
        if let Some(old) = slot.probes.take() {
            old.cancel();
        }
        let token = CancellationToken::new();
        let container = slot.which.of(&instance.pod);
        let container = container.as_deref();
        // A startup probe runs alone, until it passes; then the others.
        let startup = container
            .and_then(|c| c.startup_probe.clone())
            .filter(|_| !slot.started);
        let probes = match startup {
            Some(startup) => vec![(ProbeKind::Startup, Some(startup))],
            None => {
                slot.started = true;
                let readiness = container.and_then(|c| c.readiness_probe.clone());
                if readiness.is_none() {
                    slot.ready = true; // No readiness probe: ready once running.
                }
                vec![
                    (
                        ProbeKind::Liveness,
                        container.and_then(|c| c.liveness_probe.clone()),
                    ),
                    (ProbeKind::Readiness, readiness),
                ]
            }
        };
        let Some(mut status) = slot.status.clone() else {
            return;
        };
        // Probes go where the ports are reached: in a VPC, the instance's
        // own address (the driver binds nothing on the node).
        status.ports = port_bindings(&status, instance.pod_ip);
        for (kind, probe) in probes {
            let Some(probe) = probe else { continue };
            tokio::spawn(probe_loop(ProbeLoop {
                pod: pod_id.to_string(),
                id: slot.id.clone(),
                run: slot.run,
                kind,
                probe,
                runtime: Arc::clone(&instance.runtime),
                prober: Arc::clone(&self.prober),
                status: status.clone(),
                results: results.clone(),
                token: token.clone(),
            }));
        }
        slot.probes = Some(token);
    }

    fn on_probe(
        &self,
        managed: &mut BTreeMap<String, Managed>,
        result: ProbeResult,
        results: &mpsc::Sender<ProbeResult>,
    ) {
        let Some(instance) = managed.get_mut(&result.pod) else {
            return;
        };
        let Some(index) = instance.slots.iter().position(|s| s.id == result.id) else {
            return;
        };
        let slot = &mut instance.slots[index];
        if result.kind == ProbeKind::PreStop {
            // The run it stopped has ended by now, or is ending.
            tracing::warn!(container = %result.id, message = %result.message, "preStop hook failed");
            push_event(slot, Hook::PreStop.failure_reason(), result.message);
            return;
        }
        // A late result of a run being stopped changes nothing (it must not
        // kill it twice).
        if slot.run != result.run || slot.stopping {
            return;
        }
        match result.kind {
            ProbeKind::Readiness => {
                slot.ready = result.healthy;
                if !result.healthy {
                    tracing::info!(container = %result.id, message = %result.message, "readiness probe failed");
                }
            }
            ProbeKind::Startup | ProbeKind::PostStart if result.healthy => {
                // Its (other) probes start on the next look.
                slot.post_start_pending = false;
                if result.kind == ProbeKind::Startup {
                    slot.started = true;
                }
                if let Some(probes) = slot.probes.take() {
                    probes.cancel();
                }
            }
            ProbeKind::PostStart => {
                tracing::warn!(container = %result.id, message = %result.message, "postStart hook failed; killing the container");
                slot.problem = Some((POST_START_HOOK_ERROR.into(), result.message.clone()));
                push_event(slot, Hook::PostStart.failure_reason(), result.message);
                self.spawn_kill(&result.pod, instance, index, results.clone());
            }
            ProbeKind::Liveness | ProbeKind::Startup if !result.healthy => {
                let which = match result.kind {
                    ProbeKind::Startup => "Startup",
                    _ => "Liveness",
                };
                tracing::warn!(container = %result.id, message = %result.message, "{which} probe failed; restarting");
                slot.problem = Some((
                    "Unhealthy".into(),
                    format!("{which} probe failed: {}", result.message),
                ));
                slot.ready = false;
                self.spawn_kill(&result.pod, instance, index, results.clone());
            }
            ProbeKind::Liveness | ProbeKind::Startup | ProbeKind::PreStop => {}
        }
    }

    /// Sets up the volumes of pod `id` before its first container starts
    /// (again for an adopted pod: idempotent), and rewrites its projected
    /// files in place when a new assignment resolved them differently.
    /// While they cannot be set up, its containers wait in
    /// `ContainerCreating` with the reason, told once as `FailedMount`.
    async fn volumes_ready(&self, id: &str, instance: &mut Managed) -> bool {
        let resolved = instance
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(c4m_core::annotations::RESOLVED_VOLUMES))
            .cloned();
        if instance.volume_dirs.is_some() {
            if instance.resolved_volumes != resolved
                && let Some(volumes) = &self.volumes
            {
                match volumes.refresh_files(id, &instance.pod) {
                    Ok(()) => instance.resolved_volumes = resolved,
                    Err(e) => {
                        tracing::warn!(instance = %id, error = %e, "cannot update the pod's files")
                    }
                }
            }
            return true;
        }
        let has_volumes = instance
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| !v.is_empty());
        if let Some((at, _, tried)) = &instance.volumes_retry
            && Instant::now() < *at
            && *tried == resolved
        {
            return false;
        }
        let outcome = match (&self.volumes, has_volumes) {
            (_, false) => Ok(VolumeDirs::new()),
            (Some(volumes), true) => volumes.set_up(id, &instance.pod).await.map_err(|e| e.0),
            (None, true) => Err("this agent sets up no pod volumes".to_string()),
        };
        match outcome {
            Ok(dirs) => {
                instance.volume_dirs = Some(dirs);
                instance.volumes_waiting = None;
                instance.volumes_retry = None;
                instance.resolved_volumes = resolved;
                for slot in &mut instance.slots {
                    if slot
                        .problem
                        .as_ref()
                        .is_some_and(|(r, _)| r == CONTAINER_CREATING)
                    {
                        slot.problem = None;
                    }
                }
                true
            }
            Err(message) => {
                // The kubelet's volume retries: from 500 ms, doubling, to 2 min.
                let wait = instance
                    .volumes_retry
                    .as_ref()
                    .map_or(VOLUME_RETRY_INITIAL, |(_, wait, _)| {
                        (*wait * 2).min(VOLUME_RETRY_MAX)
                    });
                instance.volumes_retry = Some((Instant::now() + wait, wait, resolved));
                if instance.volumes_waiting.as_ref() != Some(&message) {
                    tracing::info!(instance = %id, reason = %message, "the pod's volumes are not ready");
                    if let Some(first) = instance.slots.first_mut() {
                        push_event(first, FAILED_MOUNT, message.clone());
                    }
                    instance.volumes_waiting = Some(message.clone());
                }
                for slot in instance.slots.iter_mut().filter(|s| s.status.is_none()) {
                    slot.problem = Some((CONTAINER_CREATING.to_string(), message.clone()));
                }
                false
            }
        }
    }

    /// The mounts and the bounded writable layer of container `index` of
    /// `instance`, from its pod's volumes; the error names the field.
    async fn container_volumes(
        &self,
        pod_id: &str,
        instance: &Managed,
        index: usize,
        spec: &ContainerSpec,
    ) -> Result<(Vec<c4m_core::Mount>, Option<PathBuf>), String> {
        let which = instance.slots[index].which;
        let Some(container) = which.of(&instance.pod) else {
            return Ok((Vec::new(), None));
        };
        let Some(volumes) = &self.volumes else {
            return Ok((Vec::new(), None));
        };
        let field = which.to_string();
        let empty = VolumeDirs::new();
        let dirs = instance.volume_dirs.as_ref().unwrap_or(&empty);
        let mounts = volumes.mounts_for(pod_id, &container, spec, dirs, &field)?;
        let bounded =
            c4m_core::mounts::DRIVERS_WITH_WRITABLE_LIMIT.contains(&instance.runtime.name());
        let layer = match bounded {
            true => {
                volumes
                    .writable_layer(pod_id, &instance.pod, &container, &field)
                    .await?
            }
            false => None,
        };
        Ok((mounts, layer))
    }

    /// Tears down the volumes left of pods no longer here (ended while no
    /// agent ran, or whose teardown failed before).
    async fn sweep_volumes(
        &self,
        managed: &BTreeMap<String, Managed>,
        stopping: &Stopping,
        assigned: &[Arc<Instance>],
    ) {
        let Some(volumes) = &self.volumes else {
            return;
        };
        let keep: HashSet<String> = managed
            .keys()
            .cloned()
            .chain(lock(stopping).keys().cloned())
            .chain(assigned.iter().map(|pod| container_id(pod)))
            .collect();
        volumes.tear_down_orphans(&keep).await;
    }

    async fn sample_usage(&self, instance: &mut Managed) {
        for slot in &mut instance.slots {
            if !slot.running() {
                slot.usage = WireUsage::default();
                continue;
            }
            let Ok(usage) = instance.runtime.stats(&slot.id).await else {
                continue;
            };
            let now = Instant::now();
            match slot.cpu_sample {
                Some((cpu, at)) if now.duration_since(at) >= Duration::from_secs(1) => {
                    let elapsed = now.duration_since(at);
                    let nanocores = cpu_nanocores(usage.cpu_nanos.saturating_sub(cpu), elapsed);
                    slot.usage.cpu_nanocores = nanocores;
                    slot.usage.cpu_millis = nanocores / 1_000_000;
                    slot.usage.window_millis =
                        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
                    slot.cpu_sample = Some((usage.cpu_nanos, now));
                }
                Some(_) => {}
                None => slot.cpu_sample = Some((usage.cpu_nanos, now)),
            }
            slot.usage.memory_bytes = usage.memory_bytes as i64;
        }
    }
}

/// The CPU rate of `used` nanoseconds of CPU time over `elapsed`, in
/// nanocores (metrics.k8s.io's unit).
pub(crate) fn cpu_nanocores(used: u64, elapsed: Duration) -> i64 {
    let elapsed = elapsed.as_nanos().max(1);
    (u128::from(used) * 1_000_000_000 / elapsed).min(i64::MAX as u128) as i64
}

/// The last status of each instance being stopped, by container id.
type Stopping = Arc<std::sync::Mutex<BTreeMap<String, InstanceStatus>>>;

fn lock(stopping: &Stopping) -> std::sync::MutexGuard<'_, BTreeMap<String, InstanceStatus>> {
    stopping
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The grace period of a deleted pod: the deletion's, else its own.
fn deletion_grace_period(pod: &Instance) -> Duration {
    match pod.metadata.deletion_grace_period_seconds {
        Some(seconds) => Duration::from_secs(seconds.clamp(0, 3600) as u64),
        None => grace_period(pod),
    }
}

/// Half way to the retry (`retry_at`) shows the wait instead of the error,
/// as the kubelet's next sync of the pod would: `ErrImagePull` turns into
/// `ImagePullBackOff`, `PostStartHookError` into `CrashLoopBackOff` (a
/// report's reason for a container waiting to restart without a problem).
fn show_backoff(slot: &mut Slot, retry_at: Instant) {
    let Some(failed_at) = slot.failed_at else {
        return;
    };
    let Some((reason, message)) = &mut slot.problem else {
        return;
    };
    if Instant::now() < failed_at + (retry_at - failed_at) / 2 {
        return;
    }
    match reason.as_str() {
        ERR_IMAGE_PULL => {
            let image = slot
                .spec
                .as_ref()
                .and_then(|spec| spec.image.as_deref())
                .unwrap_or_default();
            *reason = IMAGE_PULL_BACK_OFF.into();
            *message = format!("Back-off pulling image {image:?}");
        }
        POST_START_HOOK_ERROR => slot.problem = None,
        _ => {}
    }
}

fn grace_period(pod: &Instance) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.clamp(0, 3600) as u64)
}

/// Stopping and removing an instance's containers, then its network.
struct Removal {
    runtime: Arc<dyn ContainerRuntime>,
    prober: Arc<dyn Prober>,
    network: Option<Arc<InstanceNetwork>>,
    /// The instance's id (its network's key).
    id: String,
    /// Its containers, in the order they stop.
    containers: Vec<RemovedContainer>,
    shared_namespace: Option<PathBuf>,
    /// Whose holder of this pod goes last.
    holders: Option<Arc<PodHolders>>,
    /// The pod's volumes, torn down once its containers are gone.
    volumes: Option<PodVolumes>,
    grace: Duration,
    /// Where the instance is reported while it stops, and what the
    /// supervisor publishes: a failed preStop hook is told there.
    reported: Option<(Stopping, watch::Receiver<Arc<Vec<InstanceStatus>>>)>,
}

/// One container of a [`Removal`].
struct RemovedContainer {
    id: String,
    name: String,
    /// An app container: stopped together with the others, first.
    app: bool,
    /// Its preStop hook, when it has one and runs.
    pre_stop: Option<(HookRun, ContainerStatus)>,
}

impl Removal {
    async fn run(mut self) {
        // App containers stop together, each within the grace period; then
        // the sidecars, last started first, within what is left of it.
        let deadline = Instant::now() + self.grace;
        let containers = std::mem::take(&mut self.containers);
        let (app, others): (Vec<_>, Vec<_>) = containers.into_iter().partition(|c| c.app);
        let ids: Vec<String> = app.iter().chain(&others).map(|c| c.id.clone()).collect();
        futures::future::join_all(app.into_iter().map(|c| self.stop(c, self.grace))).await;
        for container in others {
            let grace = deadline.saturating_duration_since(Instant::now());
            self.stop(container, grace).await;
        }
        for id in &ids {
            match self.runtime.remove(id).await {
                Ok(()) => tracing::info!(container = %id, "container removed"),
                Err(e) => {
                    // Its namespace and volumes stay while the container
                    // might still use them.
                    tracing::warn!(container = %id, error = %e, "cannot remove container");
                    return;
                }
            }
        }
        if let Some(volumes) = &self.volumes {
            volumes.removed(&self.id).await;
        }
        if let Some(network) = self.network {
            network.detach(&self.id).await;
        }
        if let Some(path) = self.shared_namespace
            && let Err(e) = c4m_mesh::remove_network_namespace(&path)
        {
            tracing::warn!(instance = %self.id, error = %e, "cannot remove the pod's network namespace");
        }
        if let Some(holders) = &self.holders {
            holders.remove(&self.id);
        }
    }

    /// Stops one container ([`kill`]); tells a failed preStop hook.
    async fn stop(&self, container: RemovedContainer, grace: Duration) {
        let failure = kill(
            self.runtime.as_ref(),
            self.prober.as_ref(),
            &container.id,
            container.pre_stop,
            grace,
        )
        .await;
        if let (Some(message), Some((stopping, published))) = (failure, &self.reported) {
            self.tell(stopping, published.clone(), &container.name, message)
                .await;
        }
    }

    /// Adds a failed preStop hook's Event to the instance's report, and
    /// waits (a little) until the supervisor has published it, so that it
    /// is sent before the instance's report goes with its containers.
    async fn tell(
        &self,
        stopping: &Stopping,
        mut published: watch::Receiver<Arc<Vec<InstanceStatus>>>,
        container: &str,
        message: String,
    ) {
        let event = {
            let mut stopping = lock(stopping);
            let Some(report) = stopping
                .get_mut(&self.id)
                .and_then(|status| status.containers.iter_mut().find(|c| c.name == container))
            else {
                return;
            };
            let event = event_of(Hook::PreStop.failure_reason(), message);
            report.events.push(event.clone());
            event
        };
        let told = |statuses: &Arc<Vec<InstanceStatus>>| {
            statuses
                .iter()
                .flat_map(|s| &s.containers)
                .any(|c| c.events.contains(&event))
        };
        let _ = tokio::time::timeout(TELL_WAIT, published.wait_for(told)).await;
    }
}

/// The `hook` of `slot`'s container and the container as it is reached
/// (its ports at the pod's address), when it has one and runs.
fn hook_target(instance: &Managed, slot: &Slot, hook: Hook) -> Option<(HookRun, ContainerStatus)> {
    if !slot.running() {
        return None;
    }
    let container = slot.which.of(&instance.pod)?;
    let run = HookRun::of(hook, &instance.pod, &container)?;
    let mut status = slot.status.clone()?;
    status.ports = port_bindings(&status, instance.pod_ip);
    Some((run, status))
}

/// Keeps an Event (`reason`: a failed hook's, `FailedMount`) for the
/// container's reports (the control plane records each once).
fn push_event(slot: &mut Slot, reason: &str, message: String) {
    if slot.events.len() >= EVENTS_KEPT {
        slot.events.remove(0);
    }
    slot.events.push(event_of(reason, message));
}

/// An Event of `reason`, with an id of its own.
fn event_of(reason: &str, message: String) -> ContainerEvent {
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    ContainerEvent {
        id: format!("{reason}-{at}"),
        reason: reason.into(),
        message,
    }
}

/// Stops container `id` as the kubelet kills one: its preStop hook first
/// (when it has one and runs, and the grace period is not zero), bounded by
/// the grace period, then the stop signal with what is left of it (at least
/// [`crate::hooks::MINIMUM_STOP_GRACE`]). Returns the hook's failure.
async fn kill(
    runtime: &dyn ContainerRuntime,
    prober: &dyn Prober,
    id: &str,
    pre_stop: Option<(HookRun, ContainerStatus)>,
    grace: Duration,
) -> Option<String> {
    let mut failure = None;
    let mut signal_grace = grace;
    if let Some((hook, status)) = pre_stop.filter(|_| !grace.is_zero()) {
        let began = Instant::now();
        if let Err(message) = hook.run(prober, runtime, &status, grace).await {
            tracing::warn!(container = %id, %message, "preStop hook failed");
            failure = Some(message);
        }
        signal_grace = grace_after_hook(grace, began.elapsed());
    }
    if let Err(e) = runtime.stop(id, signal_grace).await {
        tracing::warn!(container = %id, error = %e, "cannot stop container");
    }
    failure
}

struct ProbeLoop {
    pod: String,
    id: String,
    run: u64,
    kind: ProbeKind,
    probe: k8s_openapi::api::core::v1::Probe,
    runtime: Arc<dyn ContainerRuntime>,
    prober: Arc<dyn Prober>,
    status: ContainerStatus,
    results: mpsc::Sender<ProbeResult>,
    token: CancellationToken,
}

async fn probe_loop(p: ProbeLoop) {
    let mut tracker = ProbeTracker::new(&p.probe, Instant::now(), p.kind == ProbeKind::Liveness);
    loop {
        let due = tokio::time::Instant::from_std(tracker.next_due());
        tokio::select! {
            _ = p.token.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let outcome = p
            .prober
            .probe_once(&p.probe, p.runtime.as_ref(), &p.status)
            .await;
        let message = outcome
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        let flipped = tracker.record(outcome.is_ok(), Instant::now());
        let verdict = match p.kind {
            ProbeKind::Startup => tracker.verdict(),
            _ => flipped,
        };
        if let Some(healthy) = verdict {
            let result = ProbeResult {
                pod: p.pod.clone(),
                id: p.id.clone(),
                run: p.run,
                kind: p.kind,
                healthy,
                message,
            };
            // A startup probe stops at its verdict.
            if p.results.send(result).await.is_err() || p.kind == ProbeKind::Startup {
                return;
            }
        }
    }
}

use c4m_core::format_rfc3339 as rfc3339;

/// The first 4096 bytes of a container's termination log (lossy UTF-8);
/// empty when it cannot be read.
fn read_termination_message(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut bytes));
    if let Err(e) = read {
        tracing::warn!(file = %path.display(), error = %e, "cannot read a termination message");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The end of container `id`'s log of the run that began at `began`: its
/// last [`FALLBACK_LOG_LINES`] lines, of them the last
/// [`FALLBACK_LOG_BYTES`] (lossy UTF-8); empty when it cannot be read.
async fn log_tail(runtime: &dyn ContainerRuntime, id: &str, began: Option<SystemTime>) -> String {
    let options = c4m_core::LogOptions {
        tail_lines: Some(FALLBACK_LOG_LINES),
        since: began,
        ..c4m_core::LogOptions::default()
    };
    match read_log(runtime, id, options).await {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(FALLBACK_LOG_BYTES);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "cannot read the log for a termination message");
            String::new()
        }
    }
}

/// Container `id`'s log as `options` ask (not followed), read within
/// [`LOG_READ_WAIT`] (the supervisor's loop waits).
async fn read_log(
    runtime: &dyn ContainerRuntime,
    id: &str,
    options: c4m_core::LogOptions,
) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    let read = async {
        let mut stream = runtime.logs(id, options).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok::<_, c4m_core::Error>(bytes)
    };
    match tokio::time::timeout(LOG_READ_WAIT, read).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(_) => Err(format!("reading the log took over {LOG_READ_WAIT:?}")),
    }
}

fn termination_reason(exit_code: Option<i32>, oom_killed: bool) -> &'static str {
    match (oom_killed, exit_code) {
        (true, _) => "OOMKilled",
        (false, Some(0)) => "Completed",
        _ => "Error",
    }
}

/// Where the container's declared ports are reached: in a VPC at the
/// instance's own address (`pod_ip`), else where the driver bound them.
pub(crate) fn port_bindings(
    container: &ContainerStatus,
    pod_ip: Option<Ipv4Addr>,
) -> Vec<PortBinding> {
    match pod_ip {
        Some(ip) => container
            .spec
            .ports
            .iter()
            .map(|p| PortBinding {
                name: p.name.clone(),
                container_port: p.container_port,
                host_ip: ip.to_string(),
                host_port: p.container_port,
                protocol: p.protocol.clone(),
            })
            .collect(),
        None => container.ports.clone(),
    }
}

/// The pod's phase as the kubelet computes it: Pending while initializing
/// or while an app container has yet to run; Running while one runs or
/// will run again (sidecars being stopped included); then Succeeded when
/// every app container succeeded, else Failed.
fn pod_phase(instance: &Managed) -> &'static str {
    if instance.problem.is_some() {
        return "Pending";
    }
    if !instance.initialized {
        return if instance.init_failed() {
            "Failed"
        } else {
            "Pending"
        };
    }
    let app: Vec<&Slot> = instance.app().collect();
    if app
        .iter()
        .any(|s| (s.status.is_none() || s.post_start_pending) && s.restart_count == 0)
    {
        return "Pending";
    }
    let sidecar_running = instance.slots.iter().any(|s| s.sidecar && s.running());
    if sidecar_running || app.iter().any(|s| !s.terminal()) {
        return "Running";
    }
    if app.iter().all(|s| s.exit().is_some_and(|e| e.succeeded())) {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// What the control plane hears about one container.
fn container_report(instance: &Managed, slot: &Slot) -> ContainerReport {
    let mut report = ContainerReport {
        name: slot.name.clone(),
        init: slot.is_init(),
        ephemeral: matches!(slot.which, PodContainer::Ephemeral(_)),
        ready: slot.running() && slot.ready,
        started: slot.running() && slot.started,
        restart_count: slot.restart_count,
        last_terminated: slot.last_exit.as_ref().map(Exit::wire),
        container_id: match &slot.status {
            Some(_) => format!("{}://{}", instance.runtime.name(), slot.id),
            None => String::new(),
        },
        events: slot.events.clone(),
        ..ContainerReport::default()
    };
    let waiting = |reason: &str, message: String| ContainerWaiting {
        reason: reason.to_string(),
        message,
    };
    if let Some((reason, message)) = &instance.problem {
        report.waiting = Some(waiting(reason, message.clone()));
        return report;
    }
    match (&slot.status, slot.exit()) {
        // Not Running until its postStart hook returns, as the kubelet.
        (Some(_), None) if slot.post_start_pending => {
            report.waiting = Some(waiting("ContainerCreating", String::new()));
        }
        (
            Some(ContainerStatus {
                state: ContainerState::Running { started_at, .. },
                ..
            }),
            _,
        ) => {
            report.running = Some(ContainerRunning {
                started_at: rfc3339(*started_at),
            })
        }
        (_, Some(exit)) if slot.restart_at.is_some() => {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}: the process {}",
                slot.backoff.as_secs(),
                slot.name,
                instance.pod.metadata.name.as_deref().unwrap_or_default(),
                exit.how()
            );
            report.waiting = Some(match &slot.problem {
                Some((reason, message)) => waiting(reason, message.clone()),
                None => waiting("CrashLoopBackOff", message),
            });
            report.last_terminated = Some(exit.wire());
        }
        (_, Some(exit)) => {
            let mut terminated = exit.wire();
            if terminated.message.is_empty() {
                terminated.message = format!("the process {}", exit.how());
            }
            report.terminated = Some(terminated);
        }
        (_, None) => {
            let blocked = !instance.initialized && !slot.is_init();
            report.waiting = Some(match &slot.problem {
                Some((reason, message)) => waiting(reason, message.clone()),
                None if blocked => waiting("PodInitializing", String::new()),
                None => waiting("ContainerCreating", String::new()),
            });
        }
    }
    report
}

/// What the control plane hears about an instance: each container, and
/// the pod-wide fields (phase, readiness, ports, usage). The fields agents
/// of one container per pod sent alone describe the container that
/// decides the pod's state: the init container it waits for, else the
/// first app container.
fn report(instance: &Managed) -> InstanceStatus {
    let meta = &instance.pod.metadata;
    let containers: Vec<ContainerReport> = instance
        .slots
        .iter()
        .map(|slot| container_report(instance, slot))
        .collect();
    // The pod's usage is its running containers' (metrics.k8s.io lists
    // each; the window is the longest of theirs).
    let running: Vec<&Slot> = instance.slots.iter().filter(|s| s.running()).collect();
    let usage = WireUsage {
        cpu_millis: running.iter().map(|s| s.usage.cpu_millis).sum(),
        memory_bytes: running.iter().map(|s| s.usage.memory_bytes).sum(),
        cpu_nanocores: running.iter().map(|s| s.usage.cpu_nanocores).sum(),
        window_millis: running
            .iter()
            .map(|s| s.usage.window_millis)
            .max()
            .unwrap_or(0),
        containers: running
            .iter()
            .map(|s| c4m_api::agent::ContainerUsage {
                name: s.name.clone(),
                cpu_nanocores: s.usage.cpu_nanocores,
                memory_bytes: s.usage.memory_bytes,
            })
            .collect(),
    };
    let phase = pod_phase(instance);
    let ready = phase == "Running"
        && instance.initialized
        && instance.app().all(|s| s.running() && s.ready);
    let main = instance
        .slots
        .iter()
        .position(|s| {
            if instance.initialized {
                s.which == PodContainer::App(0)
            } else {
                s.is_init() && !s.finished && !(s.sidecar && s.running())
            }
        })
        .unwrap_or_default();
    let mut status = InstanceStatus {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        phase: phase.into(),
        ready,
        restart_count: instance
            .slots
            .iter()
            .find(|s| s.which == PodContainer::App(0))
            .map_or(0, |s| s.restart_count),
        usage: Some(usage),
        pod_ip: instance.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        initialized: instance.initialized,
        ..InstanceStatus::default()
    };
    status.ports = instance
        .slots
        .iter()
        .filter_map(|s| s.status.as_ref())
        .flat_map(|container| port_bindings(container, instance.pod_ip))
        .chain(instance.host_bindings.iter().cloned())
        .map(|p| WirePort {
            name: p.name,
            container_port: i32::from(p.container_port),
            host_ip: p.host_ip,
            host_port: i32::from(p.host_port),
            protocol: p.protocol,
        })
        .collect();
    if let Some(container) = containers.get(main) {
        if let Some(last) = &container.last_terminated {
            status.exit_code = Some(last.exit_code);
            status.last_termination_reason = last.reason.clone();
        }
        if let Some(running) = &container.running {
            status.started_at = running.started_at.clone();
            if let Some((reason, message)) = &instance.slots[main].problem {
                status.message = format!("{reason}: {message}");
            }
        }
        if let Some(waiting) = &container.waiting {
            status.reason = waiting.reason.clone();
            status.message = waiting.message.clone();
        }
        if let Some(terminated) = &container.terminated {
            status.started_at = terminated.started_at.clone();
            status.exit_code = Some(terminated.exit_code);
            status.reason = terminated.reason.clone();
            status.message = terminated.message.clone();
        }
    }
    if !matches!(phase, "Pending") && status.reason == "ContainerCreating" {
        status.reason.clear();
    }
    status.containers = containers;
    status
}

mod restarts;

pub(crate) use restarts::Restarts;

#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod tests;
