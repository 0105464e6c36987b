//! The agent's side of the gRPC protocol: register, then keep heartbeats,
//! the assignment stream and status reports going; reconnect with backoff
//! whenever the control plane goes away.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use c4m_api::agent::agent_service_client::AgentServiceClient;
use c4m_api::agent::{
    HeartbeatRequest, InstanceStatus, ObjectChanges, PeerChanges, RegisterRequest, StatusReport,
    VolumeReport, WatchAssignmentsRequest, WatchObjectsRequest, WatchPeersRequest,
};
use c4m_core::Instance;
use c4m_mesh::OverlayPeer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::objects::NodeObjects;
use crate::{Error, Result};

/// How long one unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every status is sent, changed or not (with fresh usage).
const FULL_REPORT: Duration = Duration::from_secs(5);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control window of a connection, in bytes.
const CONNECTION_WINDOW: u32 = 64 << 20;
/// HTTP/2 flow-control window of one stream, in bytes. The connection's
/// read buffer grows to what arrives in one burst and keeps that capacity:
/// with hyper's default (2 MiB) a whole assignment set (about 13 KiB an
/// instance) arrived at once, and 100 instances left 1.4 MiB behind.
const STREAM_WINDOW: u32 = 128 << 10;

/// One HTTP/2 connection to the control plane, dialled on first use and
/// again after it breaks; any number of sessions multiplex over one.
#[derive(Clone)]
pub(crate) struct ControlPlaneChannel {
    endpoint: String,
    channel: Channel,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl ControlPlaneChannel {
    /// Prepares the connection; must run inside a tokio runtime.
    pub(crate) fn new(endpoint: &str, token: Option<&str>) -> Result<Self> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::Endpoint {
                endpoint: endpoint.to_string(),
                source: e.into(),
            })?
            .connect_timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            // Many sessions may share the connection. h2 lets a connection
            // buffer small DATA frames (replies) worth half its window before
            // it gives up on the peer, and a few hundred concurrent replies
            // exceed the 64 KiB default.
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_stream_window_size(STREAM_WINDOW)
            .connect_lazy();
        let authorization = token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .map_err(|_| {
                Error::Config("the cluster token has characters a header cannot carry".into())
            })?;
        Ok(ControlPlaneChannel {
            endpoint: endpoint.to_string(),
            channel,
            authorization,
        })
    }

    fn client(&self) -> Client {
        let authorization = self.authorization.clone();
        let interceptor: Interceptor = Box::new(move |mut request: tonic::Request<()>| {
            if let Some(header) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
            }
            Ok(request)
        });
        AgentServiceClient::with_interceptor(self.channel.clone(), interceptor)
    }
}

/// What a node offers, as it registers; the caller adds its drivers and
/// HTTP server.
pub(crate) fn register_request(
    node_name: &str,
    cpu_millis: u64,
    memory_bytes: u64,
    max_instances: u64,
    labels: &BTreeMap<String, String>,
    address: IpAddr,
) -> RegisterRequest {
    let to_wire = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    RegisterRequest {
        node_name: node_name.to_string(),
        cpu_millis: to_wire(cpu_millis),
        memory_bytes: to_wire(memory_bytes),
        max_instances: to_wire(max_instances),
        labels: labels.clone().into_iter().collect(),
        drivers: Vec::new(),
        default_driver: String::new(),
        address: address.to_string(),
        agent_url: String::new(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        instance_network: false,
    }
}

/// The instances assigned to a node. Each is shared (`Arc`) with whatever
/// keeps it, so the supervisor holds no second copy of each Pod.
pub(crate) type AssignmentSet = Arc<Vec<Arc<Instance>>>;

/// The other nodes of the instance network, by name.
pub(crate) type Peers = BTreeMap<String, OverlayPeer>;

/// What a node of the instance network learns from the control plane
/// besides its assignments: its slice of every VPC and its peers.
pub(crate) struct NetworkFeeds {
    pub node_slice: watch::Sender<Option<u32>>,
    pub peers: watch::Sender<Arc<Peers>>,
}

/// One node's conversation with the control plane. It hands received
/// assignment sets to whatever runs the node (`assignments`) and reports
/// the statuses that publishes (`statuses`), so a real supervisor and a
/// hollow one share it.
pub(crate) struct Session {
    pub channel: ControlPlaneChannel,
    pub register: RegisterRequest,
    pub assignments: watch::Sender<Option<AssignmentSet>>,
    pub statuses: watch::Receiver<Arc<Vec<InstanceStatus>>>,
    /// The cluster DNS address, learnt at registration.
    pub dns_address: watch::Sender<String>,
    /// For a node of the instance network (`register.instance_network`).
    pub network: Option<NetworkFeeds>,
    /// The objects the node's own controllers read (no stream when none
    /// subscribed).
    pub objects: NodeObjects,
    /// Whether heartbeats carry the machine's usage (not for hollow nodes,
    /// which share one machine).
    pub measure_node: bool,
    /// The node's storage reports (None: no volume manager, as on hollow
    /// nodes): sent at connect, on every change and every
    /// `volume_report_every`.
    pub volume_reports: Option<watch::Receiver<Option<Arc<VolumeReport>>>>,
    pub volume_report_every: Duration,
}

/// Adds the cluster token to every call.
type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

type Client =
    AgentServiceClient<tonic::service::interceptor::InterceptedService<Channel, Interceptor>>;

impl Session {
    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::ControlPlane {
            endpoint: self.channel.endpoint.clone(),
            message: message.to_string(),
        }
    }

    /// Runs until `shutdown`, reconnecting as needed.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.serve(&shutdown, &mut backoff).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(node = %self.register.node_name, error = %e, retry_in = ?backoff, "lost the control plane")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.error(format!("{what}: {}", status.message()))),
            Err(_) => Err(self.error(format!("{what}: timed out"))),
        }
    }

    async fn serve(&self, shutdown: &CancellationToken, backoff: &mut Duration) -> Result<()> {
        let mut client = self.channel.client();
        let registered = self
            .call("register", client.register(self.register.clone()))
            .await?;
        let node_name = registered.node_name;
        self.dns_address.send_if_modified(|current| {
            let changed = *current != registered.dns_address;
            if changed {
                current.clone_from(&registered.dns_address);
            }
            changed
        });
        if let Some(feeds) = &self.network {
            let Some(slice) = registered.node_slice else {
                return Err(self.error("the control plane assigned this node no slice of the VPCs"));
            };
            feeds.node_slice.send_if_modified(|current| {
                let changed = *current != Some(slice);
                if changed {
                    tracing::info!(node = %node_name, slice, "this node's slice of every VPC");
                    *current = Some(slice);
                }
                changed
            });
        }
        let heartbeat_every =
            Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(100)));
        let assignments = self
            .call(
                "watch assignments",
                client.watch_assignments(WatchAssignmentsRequest {
                    node_name: node_name.clone(),
                }),
            )
            .await?;
        let peers = match &self.network {
            Some(_) => Some(
                self.call(
                    "watch peers",
                    client.watch_peers(WatchPeersRequest {
                        node_name: node_name.clone(),
                    }),
                )
                .await?,
            ),
            None => None,
        };
        let objects = if self.objects.kinds().is_empty() {
            None
        } else {
            Some(
                self.call(
                    "watch objects",
                    client.watch_objects(WatchObjectsRequest {
                        node_name: node_name.clone(),
                        kinds: self.objects.kinds().to_vec(),
                    }),
                )
                .await?,
            )
        };
        tracing::info!(node = %node_name, endpoint = %self.channel.endpoint, "connected to the control plane");
        *backoff = Duration::from_millis(250);

        // Three independent loops, so a slow report neither delays heartbeats
        // nor leaves the assignment stream unread: unread stream data holds
        // HTTP/2 flow-control window that replies on a shared connection need.
        tokio::select! {
            _ = shutdown.cancelled() => Ok(()),
            result = self.forward_assignments(assignments) => result,
            result = self.send_heartbeats(&node_name, heartbeat_every) => result,
            result = self.send_reports(&node_name) => result,
            result = self.forward_peers(peers) => result,
            result = self.forward_objects(objects) => result,
            result = self.send_volume_reports(&node_name) => result,
        }
    }

    /// Sends the node's storage report at once, on every change and every
    /// `volume_report_every`; never returns on a node without one, or when
    /// the control plane does not know the call (an older version).
    async fn send_volume_reports(&self, node_name: &str) -> Result<()> {
        let Some(reports) = &self.volume_reports else {
            return std::future::pending().await;
        };
        let mut reports = reports.clone();
        let mut client = self.channel.client();
        let every = self.volume_report_every;
        let mut resend = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let report = reports.borrow_and_update().clone();
            if let Some(report) = report {
                let report = VolumeReport {
                    node_name: node_name.to_string(),
                    ..(*report).clone()
                };
                match tokio::time::timeout(CALL_TIMEOUT, client.report_volumes(report)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                        tracing::warn!(
                            "the control plane takes no volume reports: not sending them"
                        );
                        return std::future::pending().await;
                    }
                    Ok(Err(status)) => {
                        return Err(self.error(format!("report volumes: {}", status.message())));
                    }
                    Err(_) => return Err(self.error("report volumes: timed out")),
                }
            }
            tokio::select! {
                changed = reports.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                _ = resend.tick() => {}
            }
        }
    }

    /// Keeps the node's object mirror in step; ends with the stream (never,
    /// when no controller asked for objects).
    async fn forward_objects(&self, stream: Option<tonic::Streaming<ObjectChanges>>) -> Result<()> {
        let Some(mut stream) = stream else {
            return std::future::pending().await;
        };
        let mut pending = None;
        loop {
            match stream.message().await {
                Ok(Some(changes)) => self.objects.receive(&mut pending, &changes),
                Ok(None) => return Err(self.error("the object stream ended")),
                Err(status) => {
                    return Err(self.error(format!("object stream: {}", status.message())));
                }
            }
        }
    }

    /// Keeps the peer list in step with the control plane's changes; ends
    /// with the stream (never, for a node without instance networking).
    async fn forward_peers(&self, peers: Option<tonic::Streaming<PeerChanges>>) -> Result<()> {
        let (Some(mut stream), Some(feeds)) = (peers, &self.network) else {
            return std::future::pending().await;
        };
        loop {
            let changes = match stream.message().await {
                Ok(Some(changes)) => changes,
                Ok(None) => return Err(self.error("the peer stream ended")),
                Err(status) => {
                    return Err(self.error(format!("peer stream: {}", status.message())));
                }
            };
            feeds.peers.send_modify(|peers| {
                let peers = Arc::make_mut(peers);
                if changes.full {
                    peers.clear();
                }
                for name in &changes.removed {
                    peers.remove(name);
                }
                for peer in &changes.peers {
                    match peer.address.parse() {
                        Ok(underlay) => {
                            peers.insert(
                                peer.node_name.clone(),
                                OverlayPeer {
                                    underlay,
                                    slice: peer.node_slice,
                                },
                            );
                        }
                        Err(_) => {
                            tracing::warn!(peer = %peer.node_name, address = %peer.address, "skipping a peer without an IPv4 address");
                            peers.remove(&peer.node_name);
                        }
                    }
                }
            });
            tracing::debug!(
                peers = feeds.peers.borrow().len(),
                "instance network peers changed"
            );
        }
    }

    /// Hands every received assignment set on; ends with the stream.
    async fn forward_assignments(
        &self,
        mut assignments: tonic::Streaming<c4m_api::agent::Assignments>,
    ) -> Result<()> {
        loop {
            let message = match assignments.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return Err(self.error("the assignment stream ended")),
                Err(status) => {
                    return Err(self.error(format!("assignment stream: {}", status.message())));
                }
            };
            let mut pods = Vec::with_capacity(message.instances.len());
            for bytes in &message.instances {
                match serde_json::from_slice::<Instance>(bytes) {
                    Ok(mut pod) => {
                        keep_what_nodes_read(&mut pod);
                        pods.push(Arc::new(pod));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "skipping an undecodable assigned instance");
                    }
                }
            }
            tracing::debug!(
                count = pods.len(),
                revision = message.revision,
                "assignments received"
            );
            self.assignments.send_replace(Some(Arc::new(pods)));
        }
    }

    async fn send_heartbeats(&self, node_name: &str, every: Duration) -> Result<()> {
        let mut client = self.channel.client();
        let mut heartbeat = tokio::time::interval(every);
        let mut usage = crate::node_usage::NodeUsage::default();
        loop {
            heartbeat.tick().await;
            let request = HeartbeatRequest {
                node_name: node_name.to_string(),
                usage: self.measure_node.then(|| usage.sample()).flatten(),
            };
            let reply = self.call("heartbeat", client.heartbeat(request)).await?;
            if reply.register_again {
                return Err(
                    self.error("the control plane does not know this node; registering again")
                );
            }
        }
    }

    /// Reports statuses as they change, and all of them every [`FULL_REPORT`].
    async fn send_reports(&self, node_name: &str) -> Result<()> {
        let mut client = self.channel.client();
        let mut full_report = tokio::time::interval(FULL_REPORT);
        let mut statuses = self.statuses.clone();
        let mut sent: HashMap<(String, String), InstanceStatus> = HashMap::new();
        loop {
            tokio::select! {
                changed = statuses.changed() => {
                    if changed.is_err() {
                        // The supervisor is gone: the agent is stopping.
                        return Ok(());
                    }
                    let current = statuses.borrow_and_update().clone();
                    // An instance gone (stopped) is news only a complete
                    // report carries: send one at once, so the control
                    // plane removes a deleted pod without waiting.
                    let vanished = sent
                        .keys()
                        .any(|(ns, name)| !current.iter().any(|s| &s.namespace == ns && &s.name == name));
                    if vanished {
                        self.report(&mut client, node_name, current.to_vec(), true).await?;
                        sent = current.iter().map(|s| ((s.namespace.clone(), s.name.clone()), s.clone())).collect();
                        continue;
                    }
                    let changed: Vec<InstanceStatus> = current
                        .iter()
                        .filter(|s| sent.get(&(s.namespace.clone(), s.name.clone())).is_none_or(|old| !same_state(old, s)))
                        .cloned()
                        .collect();
                    if !changed.is_empty() {
                        self.report(&mut client, node_name, changed.clone(), false).await?;
                        for status in changed {
                            sent.insert((status.namespace.clone(), status.name.clone()), status);
                        }
                    }
                }
                _ = full_report.tick() => {
                    let current = statuses.borrow().clone();
                    self.report(&mut client, node_name, current.to_vec(), true).await?;
                    sent = current.iter().map(|s| ((s.namespace.clone(), s.name.clone()), s.clone())).collect();
                }
            }
        }
    }

    async fn report(
        &self,
        client: &mut Client,
        node: &str,
        instances: Vec<InstanceStatus>,
        complete: bool,
    ) -> Result<()> {
        let report = StatusReport {
            node_name: node.to_string(),
            instances,
            complete,
        };
        self.call("report status", client.report_status(report))
            .await
            .map(|_| ())
    }
}

/// Equal but for resource usage, which alone does not warrant a report.
fn same_state(a: &InstanceStatus, b: &InstanceStatus) -> bool {
    InstanceStatus {
        usage: None,
        ..a.clone()
    } == InstanceStatus {
        usage: None,
        ..b.clone()
    }
}

/// Drops what a node never reads of an assigned instance: of its status,
/// all but the restart count it continues from (the first container's).
/// Conditions and container states are about half of a decoded instance,
/// and a node keeps every instance it runs.
fn keep_what_nodes_read(pod: &mut Instance) {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
    let first = pod
        .status
        .take()
        .and_then(|status| status.container_statuses)
        .and_then(|statuses| statuses.into_iter().next());
    pod.status = first.map(|first| PodStatus {
        container_statuses: Some(vec![ContainerStatus {
            name: first.name,
            restart_count: first.restart_count,
            ..ContainerStatus::default()
        }]),
        ..PodStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_instance_keeps_spec_metadata_and_restart_count_only() {
        let mut pod: Instance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "main", "image": "bb:1"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "main", "restartCount": 4, "ready": true, "image": "bb:1", "imageID": "x",
                     "state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}}},
                    {"name": "side", "restartCount": 1, "ready": true, "image": "bb:1", "imageID": "y"}
                ]
            }
        }))
        .unwrap();
        let (metadata, spec) = (pod.metadata.clone(), pod.spec.clone());
        keep_what_nodes_read(&mut pod);
        assert_eq!((pod.metadata, pod.spec), (metadata, spec));
        let status = pod.status.unwrap();
        assert_eq!(status.phase, None);
        assert_eq!(status.conditions, None);
        let statuses = status.container_statuses.unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(
            (statuses[0].name.as_str(), statuses[0].restart_count),
            ("main", 4)
        );
        assert_eq!(statuses[0].state, None);

        let mut fresh = Instance::default();
        keep_what_nodes_read(&mut fresh);
        assert_eq!(fresh.status, None);
    }
}
