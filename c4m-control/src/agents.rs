//! The gRPC service agents dial: registration, heartbeats, assignments and
//! status reports.
//!
//! Agents never write to the store: everything they say arrives here, and
//! only what changes an object is written (a heartbeat is memory only; a
//! status report is written when phase, readiness, restarts or ports change,
//! and resource usage stays in memory for the metrics API).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use c4m_api::agent::agent_service_server::AgentService;
use c4m_api::agent::{
    Assignments, HeartbeatRequest, HeartbeatResponse, InstanceStatus, RegisterRequest,
    RegisterResponse, StatusReport, StatusReportResponse, WatchAssignmentsRequest,
};
use dashmap::DashMap;
use futures::Stream;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cache::Cache;
use crate::controllers::nodes::NodeHealth;
use crate::objects::{Objects, kind, name_of, namespace_of, now_rfc3339};
use crate::pods::{is_terminal, node_name, set_condition};

/// Latest resource usage of an instance, as its agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// When it was reported.
    pub at: SystemTime,
}

/// Usage by (namespace, instance name).
pub type UsageMap = DashMap<(String, String), Usage>;

/// The agent-facing service.
pub(crate) struct Agents {
    pub objects: Objects,
    pub cache: Arc<Cache>,
    pub health: Arc<NodeHealth>,
    pub usage: Arc<UsageMap>,
    pub heartbeat_interval: Duration,
    pub dns_address: String,
    pub shutdown: CancellationToken,
}

fn internal(e: crate::Error) -> Status {
    tracing::warn!(error = %e, "agent request failed");
    Status::internal(e.to_string())
}

/// Checks a DNS-1123 label/subdomain-ish node name.
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Agents {
    fn node_object(request: &RegisterRequest) -> Value {
        let mut labels: BTreeMap<String, String> = request.labels.clone().into_iter().collect();
        labels.insert(c4m_core::labels::HOSTNAME.into(), request.node_name.clone());
        let drivers = request
            .drivers
            .iter()
            .map(|d| format!("{}={}", d.name, d.version))
            .collect::<Vec<_>>()
            .join(",");
        let capacity = json!({
            "cpu": c4m_core::format_cpu_millis(request.cpu_millis.max(0) as u64),
            "memory": c4m_core::format_memory_bytes(request.memory_bytes.max(0) as u64),
            "pods": request.max_instances.max(0).to_string(),
        });
        let now = now_rfc3339();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": request.node_name,
                "labels": labels,
                "annotations": {
                    c4m_core::annotations::DRIVERS: drivers,
                    c4m_core::annotations::DEFAULT_DRIVER: request.default_driver,
                    c4m_core::annotations::AGENT_URL: request.agent_url,
                },
            },
            "spec": {},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": request.address},
                    {"type": "Hostname", "address": request.node_name},
                ],
                "nodeInfo": {
                    "kubeletVersion": request.agent_version,
                    "operatingSystem": request.os,
                    "architecture": request.arch,
                    "containerRuntimeVersion": drivers,
                    "kernelVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": "",
                },
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "AgentReady",
                    "message": "the c4m agent is posting ready status",
                    "lastTransitionTime": now, "lastHeartbeatTime": now,
                }],
            },
        })
    }

    /// Resolves `valueFrom` and `envFrom` against ConfigMaps, Secrets and the
    /// instance's own fields, so the agent receives plain values.
    fn resolve_env(&self, pod: &Value) -> Result<Value, String> {
        let mut pod = pod.clone();
        let namespace = namespace_of(&pod).to_string();
        let containers = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut resolved = Vec::with_capacity(containers.len());
        for (index, mut container) in containers.into_iter().enumerate() {
            let mut env: Vec<Value> = Vec::new();
            for (from_index, source) in container["envFrom"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let prefix = source["prefix"].as_str().unwrap_or_default();
                let path = format!("spec.containers[{index}].envFrom[{from_index}]");
                let (data, optional) = if let Some(cm) = source["configMapRef"].as_object() {
                    (
                        self.config_data("configmaps", &namespace, cm.get("name")),
                        cm.get("optional") == Some(&json!(true)),
                    )
                } else if let Some(secret) = source["secretRef"].as_object() {
                    (
                        self.config_data("secrets", &namespace, secret.get("name")),
                        secret.get("optional") == Some(&json!(true)),
                    )
                } else {
                    continue;
                };
                match data {
                    Some(data) => env.extend(
                        data.into_iter()
                            .map(|(k, v)| json!({"name": format!("{prefix}{k}"), "value": v})),
                    ),
                    None if optional => {}
                    None => return Err(format!("{path}: referenced object not found")),
                }
            }
            for (env_index, var) in container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let name = var["name"].as_str().unwrap_or_default();
                let Some(from) = var.get("valueFrom").filter(|v| !v.is_null()) else {
                    env.push(var.clone());
                    continue;
                };
                let path = format!("spec.containers[{index}].env[{env_index}].valueFrom");
                let value = self
                    .value_from(&pod, &namespace, from)
                    .map_err(|e| format!("{path}: {e}"))?;
                if let Some(value) = value {
                    env.push(json!({"name": name, "value": value}));
                }
            }
            container["env"] = Value::Array(env);
            if let Some(object) = container.as_object_mut() {
                object.remove("envFrom");
            }
            resolved.push(container);
        }
        pod["spec"]["containers"] = Value::Array(resolved);
        Ok(pod)
    }

    fn config_data(
        &self,
        plural: &str,
        namespace: &str,
        name: Option<&Value>,
    ) -> Option<BTreeMap<String, String>> {
        let object = self.cache.get(kind(plural), namespace, name?.as_str()?)?;
        let mut data = crate::pods::string_map(&object["data"]);
        if plural == "secrets" {
            data = data
                .into_iter()
                .filter_map(|(k, v)| Some((k, String::from_utf8(decode_base64(&v)?).ok()?)))
                .collect();
            data.extend(crate::pods::string_map(&object["stringData"]));
        }
        Some(data)
    }

    fn value_from(
        &self,
        pod: &Value,
        namespace: &str,
        from: &Value,
    ) -> Result<Option<String>, String> {
        for (field, plural) in [
            ("configMapKeyRef", "configmaps"),
            ("secretKeyRef", "secrets"),
        ] {
            let Some(reference) = from.get(field).filter(|r| r.is_object()) else {
                continue;
            };
            let optional = reference["optional"] == true;
            let key = reference["key"].as_str().unwrap_or_default();
            let name = reference["name"].as_str().unwrap_or_default();
            return match self.config_data(plural, namespace, reference.get("name")) {
                Some(data) => match data.get(key) {
                    Some(value) => Ok(Some(value.clone())),
                    None if optional => Ok(None),
                    None => Err(format!("key {key:?} not found in {plural} {name:?}")),
                },
                None if optional => Ok(None),
                None => Err(format!("{plural} {name:?} not found")),
            };
        }
        if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            let value = match path {
                "metadata.name" => pod["metadata"]["name"].clone(),
                "metadata.namespace" => pod["metadata"]["namespace"].clone(),
                "metadata.uid" => pod["metadata"]["uid"].clone(),
                "spec.nodeName" => pod["spec"]["nodeName"].clone(),
                "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].clone(),
                "status.hostIP" | "status.podIP" => {
                    let node = node_name(pod).and_then(|n| self.cache.get(kind("nodes"), "", n));
                    node.map(|n| node_address(&n))
                        .map(Value::from)
                        .unwrap_or_default()
                }
                other => {
                    if let Some(label) = other
                        .strip_prefix("metadata.labels['")
                        .and_then(|l| l.strip_suffix("']"))
                    {
                        pod["metadata"]["labels"][label].clone()
                    } else {
                        return Err(format!("fieldRef {other:?} is not supported"));
                    }
                }
            };
            return Ok(Some(value.as_str().unwrap_or_default().to_string()));
        }
        if from["resourceFieldRef"].is_object() {
            return Err("resourceFieldRef is not supported".into());
        }
        Err("valueFrom names no source".into())
    }

    /// Adds the CIDR of the instance's VPC (annotation `c4m.io/vpc-cidr`),
    /// so its agent knows the range without a lookup. A named VPC must
    /// exist; without a `default` object the agent's default range applies.
    fn add_vpc_cidr(&self, mut pod: Value) -> Result<Value, String> {
        let annotations = &pod["metadata"]["annotations"];
        let name = annotations[c4m_core::annotations::VPC]
            .as_str()
            .unwrap_or(c4m_core::DEFAULT_VPC)
            .to_string();
        let cidr = self
            .cache
            .get(kind("vpcs"), "", &name)
            .and_then(|vpc| vpc["spec"]["cidr"].as_str().map(str::to_string));
        match cidr {
            Some(cidr) => {
                if !pod["metadata"]["annotations"].is_object() {
                    pod["metadata"]["annotations"] = json!({});
                }
                pod["metadata"]["annotations"][c4m_core::annotations::VPC_CIDR] = json!(cidr);
                Ok(pod)
            }
            None if name == c4m_core::DEFAULT_VPC => Ok(pod),
            None => Err(format!(
                "metadata.annotations[{}]: vpc {name} does not exist",
                c4m_core::annotations::VPC
            )),
        }
    }

    /// The instances bound to `node`, env resolved, as the agent receives
    /// them. An instance is decoded and resolved again only if it changed
    /// since `resolved` saw it, or its context did (a ConfigMap or Secret,
    /// the Node).
    fn assignments(&self, node: &str, resolved: &mut Resolved) -> Vec<Vec<u8>> {
        let context = (
            self.cache.env_generation(),
            self.cache
                .stored(&crate::objects::key(kind("nodes"), "", node))
                .map(|node| node.revision()),
        );
        if resolved.context != Some(context) {
            resolved.instances.clear();
            resolved.context = Some(context);
        }
        let mut out = Vec::new();
        let mut kept = HashMap::new();
        for (key, stored) in self.cache.pods_on_node_stored(node) {
            let known = resolved
                .instances
                .remove(&key)
                .filter(|(revision, _)| *revision == stored.revision());
            let assignment = match known {
                Some((_, assignment)) => assignment,
                None => {
                    let Some(pod) = stored.decode(&key) else {
                        continue;
                    };
                    if is_terminal(&pod) {
                        None
                    } else {
                        match self
                            .resolve_env(&pod)
                            .and_then(|resolved| self.add_vpc_cidr(resolved))
                        {
                            Ok(resolved) => Some(serde_json::to_vec(&resolved).unwrap_or_default()),
                            Err(message) => {
                                // Not remembered: resolved again on the next change.
                                self.record_config_error(&pod, message);
                                continue;
                            }
                        }
                    }
                }
            };
            out.extend(assignment.iter().cloned());
            kept.insert(key, (stored.revision(), assignment));
        }
        resolved.instances = kept;
        out
    }

    /// Marks `pod` as unable to start for `message` (an env source missing),
    /// in the background.
    fn record_config_error(&self, pod: &Value, message: String) {
        let objects = self.objects.clone();
        let (namespace, name) = (namespace_of(pod).to_string(), name_of(pod).to_string());
        tokio::spawn(async move {
            let result = objects
                    .update_with(kind("pods"), &namespace, &name, |pod| {
                        let waiting = json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
                        if pod["status"]["containerStatuses"][0]["state"] == waiting {
                            return false;
                        }
                        pod["status"]["containerStatuses"] = json!([{"name": pod["spec"]["containers"][0]["name"], "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting}]);
                        true
                    })
                    .await;
            if let Err(e) = result {
                tracing::warn!(instance = %name, error = %e, "cannot record a config error");
            }
        });
    }
}

/// What an assignment stream resolved: the context it was resolved in
/// (the env sources' generation, the Node's revision) and each instance's
/// revision with its assignment (`None`: terminal, not sent).
#[derive(Default)]
struct Resolved {
    context: Option<(u64, Option<i64>)>,
    instances: HashMap<String, (i64, Option<Vec<u8>>)>,
}

/// A digest of a node's assignments, to tell whether they changed since
/// the last message (64-bit SipHash: two different lists colliding is
/// as good as impossible).
fn digest(instances: &[Vec<u8>]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    instances.hash(&mut hasher);
    hasher.finish()
}

/// The InternalIP of a node.
pub(crate) fn node_address(node: &Value) -> String {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let value = ALPHABET.iter().position(|a| *a == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Applies an agent's report to an instance; returns whether it changed.
fn apply_report(pod: &mut Value, report: &InstanceStatus, address: &str) -> bool {
    let before = pod.clone();
    let status = &mut pod["status"];
    if !status.is_object() {
        *status = json!({});
    }
    status["phase"] = json!(report.phase);
    status["hostIP"] = json!(address);
    // An instance in a VPC has an address of its own; others share the node's.
    let pod_ip = if report.pod_ip.is_empty() {
        address
    } else {
        &report.pod_ip
    };
    status["podIP"] = json!(pod_ip);
    status["podIPs"] = json!([{"ip": pod_ip}]);
    if status["startTime"].is_null() && !report.started_at.is_empty() {
        status["startTime"] = json!(report.started_at);
    }
    for field in ["reason", "message"] {
        let value = if field == "reason" {
            &report.reason
        } else {
            &report.message
        };
        if report.phase == "Failed" && !value.is_empty() {
            status[field] = json!(value);
        } else if let Some(object) = status.as_object_mut() {
            object.remove(field);
        }
    }
    let running = report.phase == "Running";
    let state = if running && report.reason.is_empty() {
        json!({"running": {"startedAt": report.started_at}})
    } else if running || report.phase == "Pending" {
        json!({"waiting": {"reason": report.reason, "message": report.message}})
    } else {
        json!({"terminated": {"exitCode": report.exit_code.unwrap_or(-1), "reason": report.reason, "message": report.message, "startedAt": report.started_at}})
    };
    let mut container = json!({
        "name": pod["spec"]["containers"][0]["name"],
        "image": pod["spec"]["containers"][0]["image"].as_str().unwrap_or_default(),
        "imageID": "",
        "ready": report.ready,
        "started": running,
        "restartCount": report.restart_count,
        "state": state,
    });
    if running && !report.last_termination_reason.is_empty() {
        container["lastState"] = json!({"terminated": {"exitCode": report.exit_code.unwrap_or(-1), "reason": report.last_termination_reason}});
    }
    pod["status"]["containerStatuses"] = json!([container]);
    set_condition(pod, "Initialized", true, "", "");
    let (ready_reason, ready_message) = if report.ready {
        ("", "")
    } else {
        ("ContainersNotReady", "the instance is not ready")
    };
    set_condition(
        pod,
        "ContainersReady",
        report.ready,
        ready_reason,
        ready_message,
    );
    set_condition(pod, "Ready", report.ready, ready_reason, ready_message);
    let ports: Vec<Value> = report
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.container_port, "hostIP": p.host_ip, "hostPort": p.host_port, "protocol": p.protocol}))
        .collect();
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][c4m_core::annotations::PORTS] =
        json!(Value::Array(ports).to_string());
    *pod != before
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<Assignments, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Agents {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        if !valid_node_name(&request.node_name) {
            return Err(Status::invalid_argument(format!(
                "node name {:?} is invalid: use lowercase letters, digits, '-' and '.'",
                request.node_name
            )));
        }
        if request.cpu_millis < 0 || request.memory_bytes < 0 || request.max_instances < 0 {
            return Err(Status::invalid_argument(
                "node capacity must not be negative",
            ));
        }
        let desired = Self::node_object(&request);
        let nodes = kind("nodes");
        match self.objects.create(nodes, "", desired.clone()).await {
            Ok(_) => {}
            Err(crate::Error::AlreadyExists { .. }) => {
                self.objects
                    .update_with(nodes, "", &request.node_name, |node| {
                        // Labels the agent sets win; labels users added stay.
                        let mut labels = node["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        labels.extend(
                            desired["metadata"]["labels"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        );
                        node["metadata"]["labels"] = Value::Object(labels);
                        let mut annotations = node["metadata"]["annotations"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        annotations.extend(
                            desired["metadata"]["annotations"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        );
                        node["metadata"]["annotations"] = Value::Object(annotations);
                        let conditions = node["status"]["conditions"].clone();
                        node["status"] = desired["status"].clone();
                        node["status"]["conditions"] = conditions;
                        set_condition(
                            node,
                            "Ready",
                            true,
                            "AgentReady",
                            "the c4m agent is posting ready status",
                        );
                        true
                    })
                    .await
                    .map_err(internal)?;
            }
            Err(e) => return Err(internal(e)),
        }
        self.health.heartbeat(&request.node_name);
        tracing::info!(node = %request.node_name, address = %request.address, "node registered");
        Ok(Response::new(RegisterResponse {
            node_name: request.node_name,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u32,
            dns_address: self.dns_address.clone(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let node = request.into_inner().node_name;
        let Some(ready) = self.cache.node_ready(&node) else {
            // The cache may trail a fresh registration: ask the store.
            if self.objects.get(kind("nodes"), "", &node).await.is_err() {
                return Ok(Response::new(HeartbeatResponse {
                    register_again: true,
                }));
            }
            self.health.heartbeat(&node);
            return Ok(Response::new(HeartbeatResponse::default()));
        };
        self.health.heartbeat(&node);
        if !ready {
            tracing::info!(node = %node, "node is sending heartbeats again; marking it Ready");
            self.objects
                .update_with(kind("nodes"), "", &node, |node| {
                    set_condition(
                        node,
                        "Ready",
                        true,
                        "AgentReady",
                        "the c4m agent is posting ready status",
                    )
                })
                .await
                .map_err(internal)?;
        }
        Ok(Response::new(HeartbeatResponse::default()))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let node = request.into_inner().node_name;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let agents = Agents {
            objects: self.objects.clone(),
            cache: Arc::clone(&self.cache),
            health: Arc::clone(&self.health),
            usage: Arc::clone(&self.usage),
            heartbeat_interval: self.heartbeat_interval,
            dns_address: self.dns_address.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(async move {
            // Subscribed before the first read, so no change slips between them.
            let mut changed = agents.cache.watch_node(&node);
            // A digest of what was sent last, rather than a copy: with
            // thousands of instances, copies would double their memory.
            let mut last_sent: Option<u64> = None;
            let mut resolved = Resolved::default();
            loop {
                let revision = agents.cache.revision();
                let instances = agents.assignments(&node, &mut resolved);
                let digest = digest(&instances);
                if last_sent != Some(digest) {
                    let message = Assignments {
                        instances,
                        revision,
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        return; // The agent hung up.
                    }
                    last_sent = Some(digest);
                }
                tokio::select! {
                    _ = agents.shutdown.cancelled() => return,
                    _ = sender.closed() => return,
                    result = changed.changed() => if result.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn report_status(
        &self,
        request: Request<StatusReport>,
    ) -> Result<Response<StatusReportResponse>, Status> {
        let report = request.into_inner();
        let address = self
            .cache
            .get(kind("nodes"), "", &report.node_name)
            .map(|n| node_address(&n))
            .unwrap_or_default();
        let mut updates = Vec::new();
        for instance in &report.instances {
            if let Some(usage) = &instance.usage {
                self.usage.insert(
                    (instance.namespace.clone(), instance.name.clone()),
                    Usage {
                        cpu_millis: usage.cpu_millis,
                        memory_bytes: usage.memory_bytes,
                        at: SystemTime::now(),
                    },
                );
            }
            let Some(cached) = self
                .cache
                .get(kind("pods"), &instance.namespace, &instance.name)
            else {
                continue;
            };
            // Only the node an instance is bound to may report on it.
            if cached["metadata"]["uid"] != instance.uid.as_str()
                || node_name(&cached) != Some(report.node_name.as_str())
            {
                continue;
            }
            let mut preview = (*cached).clone();
            if !apply_report(&mut preview, instance, &address) {
                continue;
            }
            let address = &address;
            updates.push(self.objects.update_with(
                kind("pods"),
                &instance.namespace,
                &instance.name,
                move |pod| {
                    pod["metadata"]["uid"] == instance.uid.as_str()
                        && apply_report(pod, instance, address)
                },
            ));
        }
        // Concurrently, so the store commits a report's writes together
        // rather than one fsync after another.
        futures::future::try_join_all(updates)
            .await
            .map_err(internal)?;
        Ok(Response::new(StatusReportResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "env": [
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}}
            ]}]},
        })
    }

    /// (name, resolved GREETING) of each assignment.
    fn greetings(instances: &[Vec<u8>]) -> Vec<(String, String)> {
        instances
            .iter()
            .map(|bytes| {
                let pod: Value = serde_json::from_slice(bytes).unwrap();
                let greeting = &pod["spec"]["containers"][0]["env"][0]["value"];
                (
                    name_of(&pod).to_owned(),
                    greeting.as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn expected(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, greeting)| (name.to_string(), greeting.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn assignments_follow_their_instances_and_env_sources() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default"}, "data": {"greeting": "hello"}});
        objects
            .create(kind("configmaps"), "default", config)
            .await
            .unwrap();
        for name in ["a", "b"] {
            objects
                .create(kind("pods"), "default", pod(name))
                .await
                .unwrap();
        }
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        let agents = Agents {
            objects: objects.clone(),
            cache: Arc::clone(&cache),
            health: Arc::new(NodeHealth::new(
                Duration::from_secs(10),
                Duration::from_secs(10),
            )),
            usage: Arc::default(),
            heartbeat_interval: Duration::from_secs(1),
            dns_address: String::new(),
            shutdown: shutdown.clone(),
        };
        let mut resolved = Resolved::default();
        let assigned = agents.assignments("n1", &mut resolved);
        assert_eq!(
            greetings(&assigned),
            expected(&[("a", "hello"), ("b", "hello")])
        );
        assert_eq!(agents.assignments("n1", &mut resolved), assigned);

        // A ConfigMap change resolves every instance again.
        let revision = objects
            .update_with(kind("configmaps"), "default", "cm", |cm| {
                cm["data"]["greeting"] = json!("bonjour");
                true
            })
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(revision).await;
        assert_eq!(
            greetings(&agents.assignments("n1", &mut resolved)),
            expected(&[("a", "bonjour"), ("b", "bonjour")])
        );

        // A terminal instance leaves; a changed one is sent as it is now.
        objects
            .update_with(kind("pods"), "default", "a", |pod| {
                pod["status"]["phase"] = json!("Succeeded");
                true
            })
            .await
            .unwrap();
        let revision = objects
            .update_with(kind("pods"), "default", "b", |pod| {
                pod["metadata"]["labels"] = json!({"tier": "web"});
                true
            })
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(revision).await;
        let assigned = agents.assignments("n1", &mut resolved);
        assert_eq!(greetings(&assigned), expected(&[("b", "bonjour")]));
        let sent: Value = serde_json::from_slice(&assigned[0]).unwrap();
        assert_eq!(sent["metadata"]["labels"]["tier"], "web");
        shutdown.cancel();
    }
}
