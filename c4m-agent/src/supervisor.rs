//! The supervisor: drives the node's containers toward the assigned set.
//!
//! One loop owns every instance's state. It wakes on a new assignment set, a
//! probe result, or a tick, and for each instance decides: start, restart
//! (after backoff), stop, or leave alone. Probes run in their own tasks per
//! container run, so a slow probe never stalls the loop.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c4m_api::agent::{InstanceStatus, PortBinding as WirePort, ResourceUsage as WireUsage};
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus, Instance, PortBinding,
    ProbeTracker, Prober,
};
use c4m_mesh::InstanceNetwork;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::pod_etc::PodEtc;
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
/// The variable telling an instance where the cluster DNS answers.
const DNS_SERVER_ENV: &str = "C4M_DNS_SERVER";

/// Where an instance runs: its container id and driver.
#[derive(Clone)]
pub(crate) struct Placement {
    pub id: String,
    pub runtime: Arc<dyn ContainerRuntime>,
}

/// Instances by (namespace, name), for the agent's HTTP server.
pub(crate) type Directory = Arc<Mutex<HashMap<(String, String), Placement>>>;

/// The container id of an instance: unique and file-name safe.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
}

struct ProbeResult {
    id: String,
    run: u64,
    kind: ProbeKind,
    healthy: bool,
    message: String,
}

/// One assigned instance.
struct Managed {
    pod: Arc<Instance>,
    spec: Option<ContainerSpec>,
    runtime: Arc<dyn ContainerRuntime>,
    status: Option<ContainerStatus>,
    /// Counts container runs, so late probe results of an old run are ignored.
    run: u64,
    probes: Option<CancellationToken>,
    ready: bool,
    restart_count: i32,
    backoff: Duration,
    restart_at: Option<Instant>,
    /// The wait after the next failed pull of the image.
    pull_backoff: Duration,
    /// When the last pull failed, while the next one waits.
    pull_failed_at: Option<Instant>,
    running_since: Option<Instant>,
    last_exit: Option<(Option<i32>, bool)>,
    /// Why the instance is not running as it should (config errors, probes).
    problem: Option<(String, String)>,
    /// Previous CPU counter sample for usage rates.
    cpu_sample: Option<(u64, Instant)>,
    usage: WireUsage,
    /// The instance's address in its VPC, when its driver joins the
    /// namespace the agent makes.
    pod_ip: Option<Ipv4Addr>,
    /// Where its `hostPort`s are published on the node (in a VPC).
    host_bindings: Vec<PortBinding>,
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
    /// Runs probe attempts.
    pub prober: Arc<dyn Prober>,
    /// How restarts of crashing containers are spaced.
    pub backoff: RestartBackoff,
    /// The `/etc` files of containers with a network namespace.
    pub pod_etc: PodEtc,
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
        let stopping = Stopping::default();
        let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeResult>(64);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.assignments.changed() => if changed.is_err() { break },
                Some(result) = probe_rx.recv() => self.on_probe(&mut managed, result).await,
                _ = ticker.tick() => {}
            }
            let assigned = self.assignments.borrow_and_update().clone();
            if let Some(assigned) = assigned {
                self.sync(&mut managed, &mut leftovers, &stopping, &assigned)
                    .await;
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
            if let Some(probes) = &instance.probes {
                probes.cancel();
            }
        }
    }

    /// Aligns the managed set with the assignment set.
    async fn sync(
        &self,
        managed: &mut BTreeMap<String, Managed>,
        leftovers: &mut HashMap<String, (ContainerStatus, Arc<dyn ContainerRuntime>)>,
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
        // Gone from the assignment: stop and remove in the background.
        let gone: Vec<String> = managed
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(instance) = managed.remove(&id) {
                if let Some(probes) = &instance.probes {
                    probes.cancel();
                }
                self.forget(&instance.pod);
                let grace = match deleted.get(&id) {
                    Some(pod) => deletion_grace_period(pod),
                    None => grace_period(&instance.pod),
                };
                let network = self.network_for(instance.runtime.as_ref());
                lock(stopping).insert(id.clone(), report(&instance));
                let stopping = Arc::clone(stopping);
                let runtime = instance.runtime;
                self.pod_etc.remove(&id);
                tokio::spawn(async move {
                    remove(runtime, network, id.clone(), grace).await;
                    lock(&stopping).remove(&id);
                });
            }
        }
        let unassigned: Vec<String> = leftovers
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in unassigned {
            if let Some((_, runtime)) = leftovers.remove(&id) {
                tracing::info!(container = %id, "removing a container that is no longer assigned");
                let network = self.network_for(runtime.as_ref());
                self.pod_etc.remove(&id);
                tokio::spawn(remove(runtime, network, id, Duration::from_secs(10)));
            }
        }
        for (id, pod) in wanted {
            if let Some(instance) = managed.get_mut(&id) {
                instance.pod = Arc::clone(pod);
                continue;
            }
            let driver = c4m_core::instance_driver(pod);
            let adopted = leftovers.remove(&id);
            let runtime = match (&adopted, self.runtime(driver)) {
                (Some((_, runtime)), _) => Arc::clone(runtime),
                (None, Some(runtime)) => runtime,
                (None, None) => {
                    tracing::warn!(instance = %id, driver = driver.unwrap_or_default(), "instance needs a driver this node lacks");
                    continue;
                }
            };
            let attached = self.network_for(runtime.as_ref()).is_some();
            let spec = ContainerSpec::from_pod(pod, id.clone()).and_then(|mut spec| {
                // What the node's default driver cannot honour is refused
                // here, naming the field, as admission refuses it for a pod
                // that names its driver.
                if let Some((field, why)) = pod.spec.as_ref().and_then(|pod_spec| {
                    c4m_core::pod_etc::unsupported_by_driver(runtime.name(), pod_spec)
                }) {
                    return Err(c4m_core::Error::Invalid(format!("spec.{field}: {why}")));
                }
                self.add_instance_env(&mut spec, pod, attached);
                Ok(spec)
            });
            let problem = spec
                .as_ref()
                .err()
                .map(|e| ("CreateContainerConfigError".to_string(), e.to_string()));
            let restart_count = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .map_or(0, |c| c.restart_count);
            let status = adopted.map(|(status, _)| status);
            if status.is_some() {
                tracing::info!(instance = %id, "adopted a running container");
            }
            let (pod_ip, host_bindings) = match self.network_for(runtime.as_ref()) {
                Some(network) if status.is_some() => (
                    network.readopt(&id, pod).await.map(|a| a.address),
                    network.host_bindings(&id),
                ),
                _ => (None, Vec::new()),
            };
            self.directory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    (
                        pod.metadata.namespace.clone().unwrap_or_default(),
                        pod.metadata.name.clone().unwrap_or_default(),
                    ),
                    Placement {
                        id: id.clone(),
                        runtime: Arc::clone(&runtime),
                    },
                );
            managed.insert(
                id,
                Managed {
                    pod: Arc::clone(pod),
                    spec: spec.ok(),
                    runtime,
                    running_since: status.as_ref().map(|_| Instant::now()),
                    status,
                    run: 0,
                    probes: None,
                    ready: false,
                    restart_count,
                    backoff: self.backoff.initial,
                    restart_at: None,
                    pull_backoff: self.backoff.image_pull_initial,
                    pull_failed_at: None,
                    last_exit: None,
                    problem,
                    cpu_sample: None,
                    usage: WireUsage::default(),
                    pod_ip,
                    host_bindings,
                },
            );
        }
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

    fn forget(&self, pod: &Instance) {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        self.directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Moves one instance along: start, observe, restart.
    async fn drive(&self, id: &str, instance: &mut Managed, probes: &mpsc::Sender<ProbeResult>) {
        let Some(spec) = instance.spec.clone() else {
            return;
        };
        let needs_probes = match &instance.status {
            None => {
                if let Some(at) = instance.restart_at.filter(|at| Instant::now() < *at) {
                    show_pull_backoff(instance, at);
                    return;
                }
                // A container may exist that this agent has not seen (one
                // whose start outlived a crash): adopt it, never duplicate it.
                match instance.runtime.status(id).await {
                    Ok(status) if matches!(status.state, ContainerState::Running { .. }) => {
                        tracing::info!(container = id, "adopted a running container");
                        instance.status = Some(status);
                        instance.running_since = Some(Instant::now());
                        if let Some(network) = self.network_for(instance.runtime.as_ref()) {
                            instance.pod_ip =
                                network.readopt(id, &instance.pod).await.map(|a| a.address);
                            instance.host_bindings = network.host_bindings(id);
                        }
                    }
                    _ => self.start(id, instance, &spec).await,
                }
                true
            }
            Some(_) => match instance.runtime.status(id).await {
                Ok(status) => {
                    let was_running = matches!(
                        instance.status.as_ref().map(|s| &s.state),
                        Some(ContainerState::Running { .. })
                    );
                    let exited = matches!(status.state, ContainerState::Exited { .. });
                    instance.status = Some(status);
                    if exited {
                        if was_running {
                            self.on_exit(id, instance);
                        }
                        if instance.restart_at.is_some_and(|at| Instant::now() >= at) {
                            instance.restart_at = None;
                            instance.restart_count += 1;
                            self.start(id, instance, &spec).await;
                            true
                        } else {
                            false
                        }
                    } else {
                        instance.probes.is_none()
                    }
                }
                Err(c4m_core::Error::ContainerNotFound(_)) => {
                    // Removed behind our back: start it again.
                    instance.status = None;
                    false
                }
                Err(e) => {
                    tracing::warn!(container = id, error = %e, "cannot read container status");
                    false
                }
            },
        };
        if needs_probes
            && matches!(
                instance.status.as_ref().map(|s| &s.state),
                Some(ContainerState::Running { .. })
            )
        {
            self.start_probes(id, instance, probes.clone());
        }
        self.sample_usage(id, instance).await;
    }

    async fn start(&self, id: &str, instance: &mut Managed, spec: &ContainerSpec) {
        let mut spec = spec.clone();
        let mut cluster_dns = None;
        if let Some(network) = self.network_for(instance.runtime.as_ref()) {
            match network.attach(id, &instance.pod).await {
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
                    instance.host_bindings = network.host_bindings(id);
                }
                Err(e) => {
                    tracing::warn!(container = id, error = %e, "cannot attach to its vpc");
                    instance.problem = Some(("NetworkNotReady".into(), e.to_string()));
                    instance.restart_at = Some(Instant::now() + instance.backoff);
                    instance.backoff = (instance.backoff * 2).min(self.backoff.max);
                    return;
                }
            }
        }
        if instance.runtime.takes_network_namespace() {
            let address = instance.pod_ip.map(Into::into);
            if let Err(e) = self
                .pod_etc
                .write(&mut spec, &instance.pod, address, cluster_dns)
            {
                tracing::warn!(container = id, error = %e, "cannot write the pod's /etc files");
                instance.problem = Some((
                    "CreateContainerConfigError".into(),
                    format!("writing the pod's /etc files: {e}"),
                ));
                instance.restart_at = Some(Instant::now() + instance.backoff);
                instance.backoff = (instance.backoff * 2).min(self.backoff.max);
                return;
            }
        }
        match instance.runtime.start(&spec).await {
            Ok(status) => {
                tracing::info!(
                    container = id,
                    restarts = instance.restart_count,
                    "container started"
                );
                instance.status = Some(status);
                instance.running_since = Some(Instant::now());
                instance.problem = None;
                instance.ready = false;
                instance.run += 1;
                instance.pull_backoff = self.backoff.image_pull_initial;
                instance.pull_failed_at = None;
            }
            Err(e @ (c4m_core::Error::Image { .. } | c4m_core::Error::ImageNeverPull { .. })) => {
                tracing::warn!(container = id, error = %e, "cannot pull the container's image");
                let reason = match e {
                    c4m_core::Error::ImageNeverPull { .. } => ERR_IMAGE_NEVER_PULL,
                    _ => ERR_IMAGE_PULL,
                };
                instance.problem = Some((reason.into(), e.to_string()));
                let now = Instant::now();
                instance.pull_failed_at = Some(now);
                instance.restart_at = Some(now + instance.pull_backoff);
                instance.pull_backoff =
                    (instance.pull_backoff * 2).min(self.backoff.image_pull_max);
            }
            Err(e) => {
                tracing::warn!(container = id, error = %e, "cannot start container");
                instance.problem = Some(("CreateContainerError".into(), e.to_string()));
                instance.restart_at = Some(Instant::now() + instance.backoff);
                instance.backoff = (instance.backoff * 2).min(self.backoff.max);
            }
        }
    }

    /// Records an exit and schedules the restart the policy asks for.
    fn on_exit(&self, id: &str, instance: &mut Managed) {
        if let Some(probes) = instance.probes.take() {
            probes.cancel();
        }
        instance.ready = false;
        let Some(ContainerState::Exited {
            exit_code,
            oom_killed,
            ..
        }) = instance.status.as_ref().map(|s| &s.state)
        else {
            return;
        };
        instance.last_exit = Some((*exit_code, *oom_killed));
        let ran_long = instance
            .running_since
            .is_some_and(|since| since.elapsed() >= self.backoff.reset);
        if ran_long {
            instance.backoff = self.backoff.initial;
        }
        let policy = instance
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let failed = *exit_code != Some(0);
        let restart = policy == "Always" || (policy == "OnFailure" && failed);
        tracing::info!(
            container = id,
            ?exit_code,
            oom_killed,
            restart,
            "container exited"
        );
        if restart {
            instance.restart_at = Some(Instant::now() + instance.backoff);
            instance.backoff = (instance.backoff * 2).min(self.backoff.max);
        }
    }

    fn start_probes(&self, id: &str, instance: &mut Managed, results: mpsc::Sender<ProbeResult>) {
        if let Some(old) = instance.probes.take() {
            old.cancel();
        }
        let token = CancellationToken::new();
        let container = instance
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first());
        let liveness = container.and_then(|c| c.liveness_probe.clone());
        let readiness = container.and_then(|c| c.readiness_probe.clone());
        if readiness.is_none() {
            instance.ready = true; // No readiness probe: ready once running.
        }
        let Some(mut status) = instance.status.clone() else {
            return;
        };
        // Probes go where the ports are reached: in a VPC, the instance's
        // own address (the driver binds nothing on the node).
        status.ports = port_bindings(&status, instance.pod_ip);
        for (kind, probe) in [
            (ProbeKind::Liveness, liveness),
            (ProbeKind::Readiness, readiness),
        ] {
            let Some(probe) = probe else { continue };
            tokio::spawn(probe_loop(ProbeLoop {
                id: id.to_string(),
                run: instance.run,
                kind,
                probe,
                runtime: Arc::clone(&instance.runtime),
                prober: Arc::clone(&self.prober),
                status: status.clone(),
                results: results.clone(),
                token: token.clone(),
            }));
        }
        instance.probes = Some(token);
    }

    async fn on_probe(&self, managed: &mut BTreeMap<String, Managed>, result: ProbeResult) {
        let Some(instance) = managed.get_mut(&result.id) else {
            return;
        };
        if instance.run != result.run {
            return;
        }
        match result.kind {
            ProbeKind::Readiness => {
                instance.ready = result.healthy;
                if !result.healthy {
                    tracing::info!(container = %result.id, message = %result.message, "readiness probe failed");
                }
            }
            ProbeKind::Liveness if !result.healthy => {
                tracing::warn!(container = %result.id, message = %result.message, "liveness probe failed; restarting");
                instance.problem = Some((
                    "Unhealthy".into(),
                    format!("liveness probe failed: {}", result.message),
                ));
                instance.ready = false;
                if let Some(probes) = instance.probes.take() {
                    probes.cancel();
                }
                let grace = grace_period(&instance.pod);
                if let Err(e) = instance.runtime.stop(&result.id, grace).await {
                    tracing::warn!(container = %result.id, error = %e, "cannot stop an unhealthy container");
                }
            }
            ProbeKind::Liveness => {}
        }
    }

    async fn sample_usage(&self, id: &str, instance: &mut Managed) {
        if !matches!(
            instance.status.as_ref().map(|s| &s.state),
            Some(ContainerState::Running { .. })
        ) {
            instance.usage = WireUsage::default();
            return;
        }
        let Ok(usage) = instance.runtime.stats(id).await else {
            return;
        };
        let now = Instant::now();
        match instance.cpu_sample {
            Some((cpu, at)) if now.duration_since(at) >= Duration::from_secs(1) => {
                let elapsed = now.duration_since(at);
                let nanocores = cpu_nanocores(usage.cpu_nanos.saturating_sub(cpu), elapsed);
                instance.usage.cpu_nanocores = nanocores;
                instance.usage.cpu_millis = nanocores / 1_000_000;
                instance.usage.window_millis = elapsed.as_millis() as i64;
                instance.cpu_sample = Some((usage.cpu_nanos, now));
            }
            Some(_) => {}
            None => instance.cpu_sample = Some((usage.cpu_nanos, now)),
        }
        instance.usage.memory_bytes = usage.memory_bytes as i64;
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

/// Turns `ErrImagePull` into `ImagePullBackOff` half way to the next pull
/// (`retry_at`), as the kubelet's next sync of the pod would: the error is
/// seen first, then the wait.
fn show_pull_backoff(instance: &mut Managed, retry_at: Instant) {
    let Some(failed_at) = instance.pull_failed_at else {
        return;
    };
    let Some((reason, message)) = &mut instance.problem else {
        return;
    };
    if reason.as_str() != ERR_IMAGE_PULL || Instant::now() < failed_at + (retry_at - failed_at) / 2
    {
        return;
    }
    let image = instance
        .spec
        .as_ref()
        .and_then(|spec| spec.image.as_deref())
        .unwrap_or_default();
    *reason = IMAGE_PULL_BACK_OFF.into();
    *message = format!("Back-off pulling image {image:?}");
}

fn grace_period(pod: &Instance) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.clamp(0, 3600) as u64)
}

async fn remove(
    runtime: Arc<dyn ContainerRuntime>,
    network: Option<Arc<InstanceNetwork>>,
    id: String,
    grace: Duration,
) {
    if let Err(e) = runtime.stop(&id, grace).await {
        tracing::warn!(container = %id, error = %e, "cannot stop container");
    }
    match runtime.remove(&id).await {
        Ok(()) => tracing::info!(container = %id, "container removed"),
        Err(e) => {
            // Its namespace stays while the container might still use it.
            tracing::warn!(container = %id, error = %e, "cannot remove container");
            return;
        }
    }
    if let Some(network) = network {
        network.detach(&id).await;
    }
}

struct ProbeLoop {
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
        if let Some(healthy) = tracker.record(outcome.is_ok(), Instant::now()) {
            let result = ProbeResult {
                id: p.id.clone(),
                run: p.run,
                kind: p.kind,
                healthy,
                message,
            };
            if p.results.send(result).await.is_err() {
                return;
            }
        }
    }
}

use c4m_core::format_rfc3339 as rfc3339;

fn termination_reason(exit_code: Option<i32>, oom_killed: bool) -> &'static str {
    match (oom_killed, exit_code) {
        (true, _) => "OOMKilled",
        (false, Some(0)) => "Completed",
        _ => "Error",
    }
}

/// What the control plane hears about an instance.
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

fn report(instance: &Managed) -> InstanceStatus {
    let meta = &instance.pod.metadata;
    let mut status = InstanceStatus {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        phase: "Pending".into(),
        ready: false,
        restart_count: instance.restart_count,
        usage: Some(instance.usage.clone()),
        pod_ip: instance.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        ..InstanceStatus::default()
    };
    if let Some((exit_code, oom_killed)) = instance.last_exit {
        status.exit_code = exit_code;
        status.last_termination_reason = termination_reason(exit_code, oom_killed).into();
    }
    let Some(container) = &instance.status else {
        if let Some((reason, message)) = &instance.problem {
            status.reason = reason.clone();
            status.message = message.clone();
        }
        return status;
    };
    status.ports = port_bindings(container, instance.pod_ip)
        .into_iter()
        .chain(instance.host_bindings.iter().cloned())
        .map(|p| WirePort {
            name: p.name,
            container_port: i32::from(p.container_port),
            host_ip: p.host_ip,
            host_port: i32::from(p.host_port),
            protocol: p.protocol,
        })
        .collect();
    match &container.state {
        ContainerState::Running { started_at, .. } => {
            status.phase = "Running".into();
            status.ready = instance.ready;
            status.started_at = rfc3339(*started_at);
            if let Some((reason, message)) = &instance.problem {
                status.message = format!("{reason}: {message}");
            }
        }
        ContainerState::Exited {
            exit_code,
            signal,
            oom_killed,
            started_at,
            ..
        } => {
            status.started_at = rfc3339(*started_at);
            status.exit_code = *exit_code;
            let how = match (exit_code, signal) {
                (_, Some(signal)) => format!("killed by signal {signal}"),
                (Some(code), None) => format!("exited with code {code}"),
                (None, None) => "exited (code unknown)".to_string(),
            };
            if instance.restart_at.is_some() {
                status.phase = "Running".into();
                status.reason = "CrashLoopBackOff".into();
                status.message = format!("back-off restarting: the process {how}");
            } else {
                status.phase = if *exit_code == Some(0) {
                    "Succeeded"
                } else {
                    "Failed"
                }
                .into();
                status.reason = termination_reason(*exit_code, *oom_killed).into();
                status.message = format!("the process {how}");
            }
        }
    }
    status
}

#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod tests;
