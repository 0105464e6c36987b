//! Hollow nodes: many simulated nodes in one process, like kubemark or
//! KWOK, to measure the control plane at thousands of nodes on one machine.
//!
//! Each hollow node runs the agent's own [`Session`] (register, heartbeats,
//! assignment stream, status reports), so the control plane cannot tell it
//! from a real node; in place of a supervisor, it reports every assigned
//! instance Running and Ready at once and forgets it when unassigned. With
//! [`HollowConfig::run_for`], an instance that does not restart (a Job's:
//! `restartPolicy` Never or OnFailure) exits 0 that long after it started
//! and is reported Succeeded, as a batch workload of that length would. No
//! driver, cgroup, port or process is involved. Nodes share HTTP/2
//! connections, [`NODES_PER_CONNECTION`] to each.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use c4m_api::agent::{Driver, InstanceStatus};
use c4m_core::{DEFAULT_DRIVER, format_rfc3339};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::objects::NodeObjects;
use crate::session::{AssignmentSet, ControlPlaneChannel, Session, register_request};
use crate::{Error, Result};

/// How many hollow nodes share one HTTP/2 connection. One connection could
/// carry them all, but a gRPC server buffers a connection's small requests
/// only up to a budget (half its 1 MiB flow-control window in h2), and a
/// few thousand concurrent heartbeats exceed it.
const NODES_PER_CONNECTION: usize = 500;

/// What the hollow nodes are called, what each offers, and where the
/// control plane is.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// gRPC URL of the control plane (`http://127.0.0.1:8141`).
    pub control_plane: String,
    /// Cluster token; None when the control plane runs in dev mode.
    pub token: Option<String>,
    /// How many nodes to simulate.
    pub count: usize,
    /// Nodes are named `{name_prefix}-0` to `{name_prefix}-{count - 1}`.
    pub name_prefix: String,
    /// CPU each node offers, in millicores.
    pub cpu_millis: u64,
    /// Memory each node offers, in bytes.
    pub memory_bytes: u64,
    /// Most instances each node runs at once.
    pub max_instances: u64,
    /// Labels of every node.
    pub labels: BTreeMap<String, String>,
    /// Address every node advertises.
    pub address: IpAddr,
    /// How long an instance that does not restart (`restartPolicy` Never
    /// or OnFailure) runs before it exits 0; None: it runs until
    /// unassigned, like every other instance.
    pub run_for: Option<Duration>,
}

/// A set of hollow nodes, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct HollowAgents {
    config: HollowConfig,
}

impl HollowAgents {
    /// Checks the configuration.
    pub fn new(config: HollowConfig) -> Result<Self> {
        if config.count == 0 {
            return Err(Error::Config(
                "a hollow agent needs at least one node".into(),
            ));
        }
        Ok(HollowAgents { config })
    }

    /// The names of the simulated nodes, in order.
    pub fn node_names(&self) -> Vec<String> {
        (0..self.config.count)
            .map(|index| format!("{}-{index}", self.config.name_prefix))
            .collect()
    }

    /// Runs every node until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut nodes = JoinSet::new();
        let node_names = self.node_names();
        for group in node_names.chunks(NODES_PER_CONNECTION) {
            let channel =
                ControlPlaneChannel::new(&self.config.control_plane, self.config.token.as_deref())?;
            for node_name in group {
                self.spawn_node(node_name, &channel, &mut nodes, &shutdown);
            }
        }
        tracing::info!(
            count = self.config.count,
            prefix = %self.config.name_prefix,
            "hollow nodes running"
        );
        while nodes.join_next().await.is_some() {}
        tracing::info!("hollow nodes stopped");
        Ok(())
    }

    /// Starts one node's session and hollow supervisor.
    fn spawn_node(
        &self,
        node_name: &str,
        channel: &ControlPlaneChannel,
        nodes: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let (assignments_tx, assignments_rx) = watch::channel(None);
        let (statuses_tx, statuses_rx) = watch::channel(Arc::new(Vec::new()));
        let mut register = register_request(
            node_name,
            self.config.cpu_millis,
            self.config.memory_bytes,
            self.config.max_instances,
            &self.config.labels,
            self.config.address,
        );
        // The default driver, so instances schedule here as on real nodes.
        register.drivers = vec![Driver {
            name: DEFAULT_DRIVER.to_string(),
            version: "hollow".to_string(),
        }];
        register.default_driver = DEFAULT_DRIVER.to_string();
        let session = Session {
            channel: channel.clone(),
            register,
            assignments: assignments_tx,
            statuses: statuses_rx,
            dns_address: watch::channel(String::new()).0,
            network: None,
            objects: NodeObjects::new(),
            measure_node: false,
            volume_reports: None,
            volume_report_every: std::time::Duration::MAX,
        };
        nodes.spawn(session.run(shutdown.clone()));
        nodes.spawn(report_running(
            assignments_rx,
            statuses_tx,
            self.config.run_for,
            shutdown.clone(),
        ));
    }
}

/// An instance as a hollow node runs it.
struct Run {
    /// RFC 3339, as reported.
    started_at: String,
    /// When it exits 0, if it does.
    exits_at: Option<tokio::time::Instant>,
}

/// The hollow supervisor: every assigned instance is Running and Ready since
/// it was first assigned, until it exits 0 `run_for` later if it does not
/// restart (then Succeeded); an unassigned one is forgotten.
async fn report_running(
    mut assignments: watch::Receiver<Option<AssignmentSet>>,
    statuses: watch::Sender<Arc<Vec<InstanceStatus>>>,
    run_for: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut runs: HashMap<String, Run> = HashMap::new();
    let mut assigned: AssignmentSet = Arc::new(Vec::new());
    loop {
        let next_exit = runs
            .values()
            .filter_map(|run| run.exits_at)
            .filter(|at| *at > tokio::time::Instant::now())
            .min();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = assignments.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(set) = assignments.borrow_and_update().clone() else {
                    continue;
                };
                assigned = set;
            }
            _ = async {
                match next_exit {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = tokio::time::Instant::now();
        let wall = format_rfc3339(SystemTime::now());
        let mut kept = HashMap::with_capacity(assigned.len());
        // A deleted pod stops at once on a hollow node.
        let reports = assigned
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .map(|pod| {
                let meta = &pod.metadata;
                let uid = meta.uid.clone().unwrap_or_default();
                let restarts = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.restart_policy.as_deref())
                    .is_none_or(|policy| policy == "Always");
                let run = runs.remove(&uid).unwrap_or_else(|| Run {
                    started_at: wall.clone(),
                    exits_at: run_for.filter(|_| !restarts).map(|run_for| now + run_for),
                });
                let exited = run.exits_at.is_some_and(|at| at <= now);
                let status = InstanceStatus {
                    namespace: meta.namespace.clone().unwrap_or_default(),
                    name: meta.name.clone().unwrap_or_default(),
                    uid: uid.clone(),
                    phase: if exited { "Succeeded" } else { "Running" }.into(),
                    ready: !exited,
                    started_at: run.started_at.clone(),
                    exit_code: exited.then_some(0),
                    reason: if exited { "Completed" } else { "" }.into(),
                    ..InstanceStatus::default()
                };
                kept.insert(uid, run);
                status
            })
            .collect();
        runs = kept;
        statuses.send_replace(Arc::new(reports));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c4m_core::Instance;

    fn pod(name: &str, uid: &str) -> Instance {
        let mut pod = Instance::default();
        pod.metadata.namespace = Some("default".into());
        pod.metadata.name = Some(name.into());
        pod.metadata.uid = Some(uid.into());
        pod
    }

    /// `report_running` on channels of the test's: assignments in,
    /// statuses out.
    #[allow(clippy::type_complexity)]
    fn run_hollow(
        run_for: Option<Duration>,
    ) -> (
        watch::Sender<Option<AssignmentSet>>,
        watch::Receiver<Arc<Vec<InstanceStatus>>>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (assignments_tx, assignments_rx) = watch::channel(None);
        let (statuses_tx, statuses_rx) = watch::channel(Arc::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(report_running(
            assignments_rx,
            statuses_tx,
            run_for,
            shutdown.clone(),
        ));
        (assignments_tx, statuses_rx, shutdown, task)
    }

    #[tokio::test]
    async fn assigned_instances_run_at_once_and_unassigned_ones_are_forgotten() {
        let (assignments_tx, mut statuses_rx, shutdown, task) = run_hollow(None);

        assignments_tx.send_replace(Some(Arc::new(vec![
            Arc::new(pod("a", "1")),
            Arc::new(pod("b", "2")),
        ])));
        statuses_rx.changed().await.unwrap();
        let first = statuses_rx.borrow_and_update().clone();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|s| s.phase == "Running" && s.ready));

        assignments_tx.send_replace(Some(Arc::new(vec![Arc::new(pod("b", "2"))])));
        statuses_rx.changed().await.unwrap();
        let second = statuses_rx.borrow_and_update().clone();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].name, "b");
        // A still-assigned instance keeps its start time.
        assert_eq!(second[0].started_at, first[1].started_at);

        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn instances_that_do_not_restart_exit_zero_after_run_for() {
        let (assignments_tx, mut statuses_rx, shutdown, task) =
            run_hollow(Some(Duration::from_millis(200)));
        let with_policy = |name: &str, uid: &str, policy: Option<&str>| {
            let mut pod = pod(name, uid);
            pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
                restart_policy: policy.map(str::to_string),
                ..Default::default()
            });
            Arc::new(pod)
        };
        let assigned_at = tokio::time::Instant::now();
        assignments_tx.send_replace(Some(Arc::new(vec![
            with_policy("job", "1", Some("Never")),
            with_policy("retry", "2", Some("OnFailure")),
            with_policy("web", "3", None),
        ])));
        statuses_rx.changed().await.unwrap();
        let first = statuses_rx.borrow_and_update().clone();
        assert!(first.iter().all(|s| s.phase == "Running" && s.ready));

        statuses_rx.changed().await.unwrap();
        assert!(assigned_at.elapsed() >= Duration::from_millis(200));
        let exited = statuses_rx.borrow_and_update().clone();
        let phases: Vec<(&str, &str, Option<i32>)> = exited
            .iter()
            .map(|s| (s.name.as_str(), s.phase.as_str(), s.exit_code))
            .collect();
        assert_eq!(
            phases,
            [
                ("job", "Succeeded", Some(0)),
                ("retry", "Succeeded", Some(0)),
                ("web", "Running", None)
            ]
        );
        assert_eq!(exited[0].reason, "Completed");
        assert!(!exited[0].ready && exited[2].ready);
        // Nothing more happens: the one left runs on.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), statuses_rx.changed())
                .await
                .is_err()
        );

        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn nodes_are_numbered_from_zero() {
        let hollow = HollowAgents::new(HollowConfig {
            control_plane: "http://127.0.0.1:1".into(),
            token: None,
            count: 3,
            name_prefix: "hollow".into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            max_instances: 10,
            labels: BTreeMap::new(),
            address: IpAddr::from([127, 0, 0, 1]),
            run_for: None,
        })
        .unwrap();
        assert_eq!(hollow.node_names(), ["hollow-0", "hollow-1", "hollow-2"]);
    }
}
