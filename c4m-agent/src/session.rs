//! The agent's side of the gRPC protocol: register, then keep heartbeats,
//! the assignment stream and status reports going; reconnect with backoff
//! whenever the control plane goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use c4m_api::agent::agent_service_client::AgentServiceClient;
use c4m_api::agent::{
    HeartbeatRequest, InstanceStatus, RegisterRequest, StatusReport, WatchAssignmentsRequest,
};
use c4m_core::Instance;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Result};

/// How long one unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every status is sent, changed or not (with fresh usage).
const FULL_REPORT: Duration = Duration::from_secs(5);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

pub(crate) struct Session {
    pub endpoint: String,
    pub token: Option<String>,
    pub register: RegisterRequest,
    pub assignments: watch::Sender<Option<Arc<Vec<Instance>>>>,
    pub statuses: watch::Receiver<Arc<Vec<InstanceStatus>>>,
    /// The cluster DNS address, learnt at registration.
    pub dns_address: watch::Sender<String>,
}

/// Adds the cluster token to every call.
type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

type Client =
    AgentServiceClient<tonic::service::interceptor::InterceptedService<Channel, Interceptor>>;

impl Session {
    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::ControlPlane {
            endpoint: self.endpoint.clone(),
            message: message.to_string(),
        }
    }

    /// Runs until `shutdown`, reconnecting as needed.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.serve(&shutdown, &mut backoff).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "lost the control plane"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    async fn connect(&self) -> Result<Client> {
        let channel = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| self.error(format!("invalid endpoint: {e}")))?
            .connect_timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| self.error(format!("cannot connect: {e}")))?;
        let header = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {t}").parse::<tonic::metadata::MetadataValue<_>>())
            .transpose()
            .map_err(|_| {
                Error::Config("the cluster token has characters a header cannot carry".into())
            })?;
        let interceptor: Interceptor = Box::new(move |mut request: tonic::Request<()>| {
            if let Some(header) = &header {
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
            }
            Ok(request)
        });
        Ok(AgentServiceClient::with_interceptor(channel, interceptor))
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
        let mut client = self.connect().await?;
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
        let heartbeat_every =
            Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(100)));
        let mut assignments = self
            .call(
                "watch assignments",
                client.watch_assignments(WatchAssignmentsRequest {
                    node_name: node_name.clone(),
                }),
            )
            .await?;
        tracing::info!(node = %node_name, endpoint = %self.endpoint, "connected to the control plane");
        *backoff = Duration::from_millis(250);

        let mut heartbeat = tokio::time::interval(heartbeat_every);
        let mut full_report = tokio::time::interval(FULL_REPORT);
        let mut statuses = self.statuses.clone();
        let mut sent: HashMap<(String, String), InstanceStatus> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = assignments.message() => match message {
                    Ok(Some(message)) => {
                        let mut pods = Vec::with_capacity(message.instances.len());
                        for bytes in &message.instances {
                            match serde_json::from_slice::<Instance>(bytes) {
                                Ok(pod) => pods.push(pod),
                                Err(e) => tracing::error!(error = %e, "skipping an undecodable assigned instance"),
                            }
                        }
                        tracing::debug!(count = pods.len(), revision = message.revision, "assignments received");
                        self.assignments.send_replace(Some(Arc::new(pods)));
                    }
                    Ok(None) => return Err(self.error("the assignment stream ended")),
                    Err(status) => return Err(self.error(format!("assignment stream: {}", status.message()))),
                },
                _ = heartbeat.tick() => {
                    let reply = self.call("heartbeat", client.heartbeat(HeartbeatRequest { node_name: node_name.clone() })).await?;
                    if reply.register_again {
                        return Err(self.error("the control plane does not know this node; registering again"));
                    }
                }
                changed = statuses.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let current = statuses.borrow_and_update().clone();
                    let changed: Vec<InstanceStatus> = current
                        .iter()
                        .filter(|s| sent.get(&(s.namespace.clone(), s.name.clone())).is_none_or(|old| !same_state(old, s)))
                        .cloned()
                        .collect();
                    if !changed.is_empty() {
                        self.report(&mut client, &node_name, changed.clone(), false).await?;
                        for status in changed {
                            sent.insert((status.namespace.clone(), status.name.clone()), status);
                        }
                    }
                }
                _ = full_report.tick() => {
                    let current = statuses.borrow().clone();
                    self.report(&mut client, &node_name, current.to_vec(), true).await?;
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
