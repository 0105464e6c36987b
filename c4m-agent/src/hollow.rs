//! Hollow nodes: many simulated nodes in one process, like kubemark or
//! KWOK, to measure the control plane at thousands of nodes on one machine.
//!
//! Each hollow node runs the agent's own [`Session`] (register, heartbeats,
//! assignment stream, status reports), so the control plane cannot tell it
//! from a real node; in place of a supervisor, it reports every assigned
//! instance Running and Ready at once and forgets it when unassigned. No
//! driver, cgroup, port or process is involved. Nodes share HTTP/2
//! connections, [`NODES_PER_CONNECTION`] to each.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use c4m_api::agent::{Driver, InstanceStatus};
use c4m_core::{DEFAULT_DRIVER, format_rfc3339};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
            measure_node: false,
        };
        nodes.spawn(session.run(shutdown.clone()));
        nodes.spawn(report_running(
            assignments_rx,
            statuses_tx,
            shutdown.clone(),
        ));
    }
}

/// The hollow supervisor: every assigned instance is Running and Ready since
/// it was first assigned; an unassigned one is forgotten.
async fn report_running(
    mut assignments: watch::Receiver<Option<AssignmentSet>>,
    statuses: watch::Sender<Arc<Vec<InstanceStatus>>>,
    shutdown: CancellationToken,
) {
    let mut started_at: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = assignments.changed() => if changed.is_err() { return },
        }
        let Some(assigned) = assignments.borrow_and_update().clone() else {
            continue;
        };
        let now = format_rfc3339(SystemTime::now());
        let mut running = HashMap::with_capacity(assigned.len());
        // A deleted pod stops at once on a hollow node.
        let reports = assigned
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .map(|pod| {
                let meta = &pod.metadata;
                let uid = meta.uid.clone().unwrap_or_default();
                let since = started_at.remove(&uid).unwrap_or_else(|| now.clone());
                running.insert(uid.clone(), since.clone());
                InstanceStatus {
                    namespace: meta.namespace.clone().unwrap_or_default(),
                    name: meta.name.clone().unwrap_or_default(),
                    uid,
                    phase: "Running".into(),
                    ready: true,
                    started_at: since,
                    ..InstanceStatus::default()
                }
            })
            .collect();
        started_at = running;
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

    #[tokio::test]
    async fn assigned_instances_run_at_once_and_unassigned_ones_are_forgotten() {
        let (assignments_tx, assignments_rx) = watch::channel(None);
        let (statuses_tx, mut statuses_rx) = watch::channel(Arc::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(report_running(
            assignments_rx,
            statuses_tx,
            shutdown.clone(),
        ));

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
        })
        .unwrap();
        assert_eq!(hollow.node_names(), ["hollow-0", "hollow-1", "hollow-2"]);
    }
}
