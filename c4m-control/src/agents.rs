//! The gRPC service agents dial: registration, heartbeats, assignments and
//! status reports.
//!
//! Agents never write to the store: everything they say arrives here, and
//! only what changes an object is written (a heartbeat is memory only; a
//! status report is written when phase, readiness, restarts or ports change,
//! and resource usage stays in memory for the metrics API).
//!
//! Nodes that give instances addresses of their own get a slice of every
//! VPC at registration (annotation `c4m.io/node-slice`, kept while the
//! node exists), and a stream of their peers: the other such nodes, with
//! their underlay address and slice, which their overlay routes to.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use c4m_api::agent::agent_service_server::AgentService;
use c4m_api::agent::{
    Assignments, ContainerReport, ContainerTerminated, HeartbeatRequest, HeartbeatResponse,
    InstanceStatus, Peer, PeerChanges, RegisterRequest, RegisterResponse, StatusReport,
    StatusReportResponse, VolumeReport, VolumeReportResponse, WatchAssignmentsRequest,
    WatchObjectsRequest, WatchPeersRequest,
};
use futures::Stream;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cache::Cache;
use crate::controllers::nodes::NodeHealth;
use crate::metrics::Sample;
use crate::objects::{Objects, kind, name_of, namespace_of, now_rfc3339, prefix};
use crate::pods::{is_terminal, node_name, set_condition};

/// The agent-facing service.
#[derive(Clone)]
pub(crate) struct Agents {
    pub objects: Objects,
    pub cache: Arc<Cache>,
    pub health: Arc<NodeHealth>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub heartbeat_interval: Duration,
    pub dns_address: String,
    /// Held while a node's slice is chosen and written, so two nodes
    /// registering at once never get the same one.
    pub slices: Arc<tokio::sync::Mutex<()>>,
    /// What each node last reported of each instance, so a report that
    /// repeats it decodes nothing.
    pub reported: Arc<ReportMemo>,
    /// The Events agents reported as such that were recorded.
    pub reported_events: Arc<crate::container_events::ReportedEvents>,
    /// Each Service's variables, made once per revision.
    pub service_envs: Arc<crate::service_env::ServiceEnvs>,
    /// Each node's last storage report.
    pub volume_reports: Arc<crate::volume_reports::VolumeReports>,
    pub shutdown: CancellationToken,
}

/// Per node, per instance uid: a digest of the last report applied (usage
/// aside) and the revision of the instance it was applied to. A report
/// equal to it, about an instance still at that revision, would change
/// nothing: every agent repeats all its instances every few seconds, and
/// decoding each of them was most of the control plane's work at rest.
#[derive(Default)]
pub(crate) struct ReportMemo(std::sync::Mutex<Memos>);

/// By node, by instance uid: the digest of its last applied report and the
/// revision it was applied to.
type Memos = HashMap<String, HashMap<String, (u64, i64)>>;

impl ReportMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memos> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `node` already reported `digest` of `uid` at `revision`.
    fn repeats(&self, node: &str, uid: &str, digest: u64, revision: i64) -> bool {
        self.lock()
            .get(node)
            .and_then(|instances| instances.get(uid))
            .is_some_and(|&seen| seen == (digest, revision))
    }

    fn remember(&self, node: &str, uid: &str, digest: u64, revision: i64) {
        self.lock()
            .entry(node.to_string())
            .or_default()
            .insert(uid.to_string(), (digest, revision));
    }

    /// Forgets the instances of `node` a complete report no longer lists.
    fn keep_only(&self, node: &str, uids: &HashSet<&str>) {
        if let Some(instances) = self.lock().get_mut(node) {
            instances.retain(|uid, _| uids.contains(uid.as_str()));
        }
    }
}

/// A digest of what a report says of an instance, resource usage aside
/// (it goes to the metrics, never to the store).
fn report_digest(instance: &InstanceStatus) -> u64 {
    use prost::Message;
    let bytes = InstanceStatus {
        usage: None,
        ..instance.clone()
    }
    .encode_to_vec();
    digest(std::slice::from_ref(&bytes))
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

    /// Resolves `valueFrom` and `envFrom` of every container (init ones
    /// too) against ConfigMaps, Secrets and the instance's own fields, so the
    /// agent receives plain values, and adds the Service variables
    /// (`service_env.rs`) a container does not set.
    fn resolve_env(&self, pod: &Value) -> Result<Value, String> {
        let mut pod = pod.clone();
        let namespace = namespace_of(&pod).to_string();
        let service_env = self.service_envs.for_instance(
            &self.cache,
            &namespace,
            crate::service_env::links_enabled(&pod),
        );
        for list in ["initContainers", "containers"] {
            let Some(containers) = pod["spec"][list].as_array().cloned() else {
                continue;
            };
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
                    let path = format!("spec.{list}[{index}].envFrom[{from_index}]");
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
                    let path = format!("spec.{list}[{index}].env[{env_index}].valueFrom");
                    let value = self
                        .value_from(&pod, &namespace, from)
                        .map_err(|e| format!("{path}: {e}"))?;
                    if let Some(value) = value {
                        env.push(json!({"name": name, "value": value}));
                    }
                }
                let own: HashSet<&str> =
                    env.iter().filter_map(|var| var["name"].as_str()).collect();
                let mut with_services: Vec<Value> = service_env
                    .iter()
                    .filter(|(name, _)| !own.contains(name.as_str()))
                    .map(|(name, value)| json!({"name": name, "value": value}))
                    .collect();
                with_services.extend(env);
                container["env"] = Value::Array(with_services);
                if let Some(object) = container.as_object_mut() {
                    object.remove("envFrom");
                }
                resolved.push(container);
            }
            crate::json::set_path(&mut pod, &["spec", list], Value::Array(resolved))
                .map_err(|e| e.to_string())?;
        }
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
                    } else if let Some(annotation) = other
                        .strip_prefix("metadata.annotations['")
                        .and_then(|a| a.strip_suffix("']"))
                    {
                        pod["metadata"]["annotations"][annotation].clone()
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
                crate::json::set_path(
                    &mut pod,
                    &["metadata", "annotations", c4m_core::annotations::VPC_CIDR],
                    json!(cidr),
                )
                .map_err(|e| e.to_string())?;
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
    /// since `resolved` saw it, or its context did (a ConfigMap, Secret or
    /// Vpc, the Node).
    fn assignments(&self, node: &str, resolved: &mut Resolved) -> Vec<Vec<u8>> {
        let context = (
            self.cache.sources_generation(),
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
                            .map(|resolved| {
                                crate::pull_secrets::with_registry_logins(&self.cache, resolved)
                            })
                            .map(|resolved| {
                                crate::pod_volumes::with_resolved_volumes(&self.cache, resolved)
                            }) {
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

    /// Removes the pods being deleted on the reporting node that a
    /// complete report no longer lists: their containers have stopped.
    async fn remove_stopped(&self, report: &StatusReport) -> crate::Result<()> {
        let deleting = self
            .cache
            .pods_on_node_stored(&report.node_name)
            .into_iter()
            .filter(|(_, stored)| stored.contains(b"\"deletionTimestamp\""))
            .filter_map(|(key, stored)| stored.decode(&key));
        for pod in deleting {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            if !crate::deletion::is_deleting(&pod) || report.instances.iter().any(|i| i.uid == uid)
            {
                continue;
            }
            let options = crate::deletion::DeleteOptions {
                grace_period_seconds: Some(0),
                uid: Some(uid.to_string()),
                ..Default::default()
            };
            match self
                .objects
                .delete_with(kind("pods"), namespace_of(&pod), name_of(&pod), &options)
                .await
            {
                Ok(_) | Err(crate::Error::NotFound { .. } | crate::Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The slice of every VPC for node `name`: the one its Node (`existing`)
    /// holds, else the lowest no other Node holds. Called with `slices` held.
    fn choose_slice(&self, name: &str, existing: Option<&Value>) -> u32 {
        if let Some(slice) = existing.and_then(node_slice_of) {
            return slice;
        }
        let own = crate::objects::key(kind("nodes"), "", name);
        let needle = c4m_core::annotations::NODE_SLICE.as_bytes();
        let mut holders = Vec::new();
        self.cache
            .for_each_stored(&prefix(kind("nodes"), None), |key, stored| {
                if *key != own && stored.contains(needle) {
                    holders.push((key.to_string(), stored.clone()));
                }
            });
        let taken: BTreeSet<u32> = holders
            .iter()
            .filter_map(|(key, stored)| stored.decode(key))
            .filter_map(|node| node_slice_of(&node))
            .collect();
        (0..=u32::MAX)
            .find(|slice| !taken.contains(slice))
            .unwrap_or_default()
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
                        let statuses = json!([{"name": pod["spec"]["containers"][0]["name"], "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting}]);
                        crate::json::owned_object(pod, "status")
                            .map(|status| status.insert("containerStatuses".into(), statuses))
                            .is_some()
                    })
                    .await;
            if let Err(e) = result {
                tracing::warn!(instance = %name, error = %e, "cannot record a config error");
            }
        });
    }
}

/// What an assignment stream resolved: the context it was resolved in
/// (the assignment sources' generation, the Node's revision) and each instance's
/// revision with its assignment (`None`: terminal, not sent).
#[derive(Default)]
struct Resolved {
    context: Option<(u64, Option<i64>)>,
    instances: HashMap<String, (i64, Option<Vec<u8>>)>,
}

/// A digest of encoded messages (a node's assignments, one report), to
/// tell whether they changed since the last one (64-bit SipHash: two
/// different lists colliding is as good as impossible).
fn digest(messages: &[Vec<u8>]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    messages.hash(&mut hasher);
    hasher.finish()
}

/// The slice a Node holds (annotation `c4m.io/node-slice`), if any.
fn node_slice_of(node: &Value) -> Option<u32> {
    node["metadata"]["annotations"][c4m_core::annotations::NODE_SLICE]
        .as_str()?
        .parse()
        .ok()
}

/// The cluster DNS address as an agent that dialled `local` (the control
/// plane's end of its connection) reaches it: a DNS server bound to every
/// address is reached where the agent reached the control plane.
fn advertised_dns(dns: &str, local: Option<SocketAddr>) -> String {
    match (dns.parse::<SocketAddr>(), local) {
        (Ok(dns), Some(local)) if dns.ip().is_unspecified() => {
            SocketAddr::new(local.ip(), dns.port()).to_string()
        }
        _ => dns.to_string(),
    }
}

/// What a peer stream derived from each Node (by key): the revision it
/// read and the peer it is, if it is one.
#[derive(Default)]
struct PeerBook {
    nodes: HashMap<String, (i64, Option<Peer>)>,
}

impl PeerBook {
    /// The peers of node `own` now, by node name: every other Node with a
    /// slice and an address. Only Nodes whose revision moved are decoded.
    fn peers(&mut self, cache: &Cache, own: &str) -> BTreeMap<String, Peer> {
        let mut changed = Vec::new();
        let mut present = HashMap::with_capacity(self.nodes.len());
        cache.for_each_stored(&prefix(kind("nodes"), None), |key, stored| {
            match self.nodes.remove(key) {
                Some(known) if known.0 == stored.revision() => {
                    present.insert(key.to_string(), known);
                }
                _ => changed.push((key.to_string(), stored.clone())),
            }
        });
        for (key, stored) in changed {
            let peer = stored.decode(&key).and_then(|node| {
                Some(Peer {
                    node_name: name_of(&node).to_string(),
                    address: Some(node_address(&node)).filter(|a| !a.is_empty())?,
                    node_slice: node_slice_of(&node)?,
                })
            });
            present.insert(key, (stored.revision(), peer));
        }
        self.nodes = present;
        self.nodes
            .values()
            .filter_map(|(_, peer)| peer.clone())
            .filter(|peer| peer.node_name != own)
            .map(|peer| (peer.node_name.clone(), peer))
            .collect()
    }
}

/// What changed from `before` to `now` (everything, when `full`).
fn peer_changes(
    before: &BTreeMap<String, Peer>,
    now: &BTreeMap<String, Peer>,
    full: bool,
) -> PeerChanges {
    PeerChanges {
        full,
        peers: now
            .iter()
            .filter(|(name, peer)| full || before.get(*name) != Some(peer))
            .map(|(_, peer)| peer.clone())
            .collect(),
        removed: if full {
            Vec::new()
        } else {
            before
                .keys()
                .filter(|name| !now.contains_key(*name))
                .cloned()
                .collect()
        },
    }
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
    if report.containers.is_empty() {
        apply_single_container(pod, report);
    } else {
        apply_containers(pod, report);
    }
    let ports: Vec<Value> = report
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.container_port, "hostIP": p.host_ip, "hostPort": p.host_port, "protocol": p.protocol}))
        .collect();
    // A stored instance's metadata is an object (the object layer makes
    // it one); annotations that are not are replaced.
    if let Some(metadata) = crate::json::owned_object(pod, "metadata")
        && let Some(annotations) = crate::json::owned_member(metadata, "annotations")
    {
        annotations.insert(
            c4m_core::annotations::PORTS.into(),
            json!(Value::Array(ports).to_string()),
        );
    }
    *pod != before
}

/// The status of an agent that reports only the pod's first container.
fn apply_single_container(pod: &mut Value, report: &InstanceStatus) {
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
    if let Some(status) = crate::json::owned_object(pod, "status") {
        status.insert("containerStatuses".into(), json!([container]));
    }
    set_pod_conditions(pod, true, report.ready);
}

/// Each container's status as the kubelet writes it
/// (`status.containerStatuses`, `status.initContainerStatuses`), and the
/// pod's conditions: Initialized once every init container succeeded,
/// Ready when every app container is.
fn apply_containers(pod: &mut Value, report: &InstanceStatus) {
    let image = |pod: &Value, report: &ContainerReport| {
        let list = match (report.init, report.ephemeral) {
            (true, _) => "initContainers",
            (_, true) => "ephemeralContainers",
            _ => "containers",
        };
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == report.name.as_str())
            .and_then(|c| c["image"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let terminated = |t: &ContainerTerminated| {
        let mut state = json!({"exitCode": t.exit_code, "reason": t.reason, "startedAt": t.started_at, "finishedAt": t.finished_at});
        if t.signal != 0 {
            state["signal"] = json!(t.signal);
        }
        if !t.message.is_empty() {
            state["message"] = json!(t.message);
        }
        state
    };
    let (mut init, mut app, mut ephemeral) = (Vec::new(), Vec::new(), Vec::new());
    for container in &report.containers {
        let state = match (
            &container.running,
            &container.waiting,
            &container.terminated,
        ) {
            (Some(running), _, _) => json!({"running": {"startedAt": running.started_at}}),
            (_, _, Some(t)) => json!({"terminated": terminated(t)}),
            (_, Some(waiting), _) if waiting.message.is_empty() => {
                json!({"waiting": {"reason": waiting.reason}})
            }
            (_, Some(waiting), _) => {
                json!({"waiting": {"reason": waiting.reason, "message": waiting.message}})
            }
            (None, None, None) => json!({"waiting": {}}),
        };
        let mut status = json!({
            "name": container.name,
            "image": image(pod, container),
            "imageID": "",
            "ready": container.ready,
            "started": container.started,
            "restartCount": container.restart_count,
            "state": state,
            "lastState": {},
        });
        if !container.container_id.is_empty() {
            status["containerID"] = json!(container.container_id);
        }
        if let Some(last) = &container.last_terminated {
            status["lastState"] = json!({"terminated": terminated(last)});
        }
        if container.init {
            init.push(status);
        } else if container.ephemeral {
            ephemeral.push(status);
        } else {
            app.push(status);
        }
    }
    let Some(status) = crate::json::owned_object(pod, "status") else {
        return;
    };
    status.insert("containerStatuses".into(), Value::Array(app));
    for (field, list) in [
        ("initContainerStatuses", init),
        ("ephemeralContainerStatuses", ephemeral),
    ] {
        if list.is_empty() {
            status.remove(field);
        } else {
            status.insert(field.into(), Value::Array(list));
        }
    }
    set_pod_conditions(pod, report.initialized, report.ready);
}

/// The pod's Initialized, ContainersReady and Ready conditions.
fn set_pod_conditions(pod: &mut Value, initialized: bool, ready: bool) {
    let (reason, message) = if initialized {
        ("", "")
    } else {
        (
            "ContainersNotInitialized",
            "containers with incomplete status: init containers",
        )
    };
    set_condition(pod, "Initialized", initialized, reason, message);
    let (ready_reason, ready_message) = if ready {
        ("", "")
    } else {
        ("ContainersNotReady", "the instance is not ready")
    };
    set_condition(pod, "ContainersReady", ready, ready_reason, ready_message);
    set_condition(pod, "Ready", ready, ready_reason, ready_message);
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<Assignments, Status>> + Send>>;
type PeerStream = Pin<Box<dyn Stream<Item = Result<PeerChanges, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Agents {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let dns_address = advertised_dns(&self.dns_address, request.local_addr());
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
        let mut desired = Self::node_object(&request);
        let nodes = kind("nodes");
        // Held until the cache shows the slice written, so the next
        // registration sees it taken.
        let slices = if request.instance_network {
            Some(self.slices.lock().await)
        } else {
            None
        };
        let node_slice = if slices.is_some() {
            let existing = self.objects.get(nodes, "", &request.node_name).await.ok();
            let slice = self.choose_slice(&request.node_name, existing.as_ref());
            crate::json::set_path(
                &mut desired,
                &["metadata", "annotations", c4m_core::annotations::NODE_SLICE],
                json!(slice.to_string()),
            )
            .map_err(|e| internal(e.into()))?;
            Some(slice)
        } else {
            None
        };
        let written = match self.objects.create(nodes, "", desired.clone()).await {
            Ok(created) => crate::objects::revision_of(&created),
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
                        let Some(metadata) = crate::json::owned_object(node, "metadata") else {
                            return false;
                        };
                        metadata.insert("labels".into(), Value::Object(labels));
                        metadata.insert("annotations".into(), Value::Object(annotations));
                        let conditions = node["status"]["conditions"].clone();
                        let mut status = desired["status"].clone();
                        if crate::json::set_path(&mut status, &["conditions"], conditions).is_err()
                        {
                            return false;
                        }
                        if let Some(node) = node.as_object_mut() {
                            node.insert("status".into(), status);
                        }
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
                    .map_err(internal)?
            }
            Err(e) => return Err(internal(e)),
        };
        if let (Some(_), Some(revision)) = (&slices, written) {
            self.cache.wait_for(revision).await;
        }
        drop(slices);
        self.health.heartbeat(&request.node_name);
        tracing::info!(node = %request.node_name, address = %request.address, "node registered");
        Ok(Response::new(RegisterResponse {
            node_name: request.node_name,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u32,
            dns_address,
            node_slice,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let node = request.node_name;
        if let Some(sample) = request
            .usage
            .as_ref()
            .and_then(|usage| Sample::from_report(usage, SystemTime::now()))
        {
            self.metrics.record_node(&node, sample);
        }
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
        let agents = self.clone();
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

    type WatchPeersStream = PeerStream;

    async fn watch_peers(
        &self,
        request: Request<WatchPeersRequest>,
    ) -> Result<Response<Self::WatchPeersStream>, Status> {
        let node = request.into_inner().node_name;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let cache = Arc::clone(&self.cache);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Subscribed before the first read, so no change slips between them.
            let mut changed = cache.watch_nodes();
            let mut book = PeerBook::default();
            let mut sent: Option<BTreeMap<String, Peer>> = None;
            loop {
                let now = book.peers(&cache, &node);
                let changes = match &sent {
                    None => peer_changes(&BTreeMap::new(), &now, true),
                    Some(before) => peer_changes(before, &now, false),
                };
                let worth_sending =
                    changes.full || !changes.peers.is_empty() || !changes.removed.is_empty();
                if worth_sending && sender.send(Ok(changes)).await.is_err() {
                    return; // The agent hung up.
                }
                sent = Some(now);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sender.closed() => return,
                    result = changed.changed() => if result.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type WatchObjectsStream = crate::node_objects::ObjectStream;

    async fn watch_objects(
        &self,
        request: Request<WatchObjectsRequest>,
    ) -> Result<Response<Self::WatchObjectsStream>, Status> {
        let request = request.into_inner();
        crate::node_objects::watch_objects(
            Arc::clone(&self.cache),
            request.node_name,
            request.kinds,
            self.shutdown.clone(),
        )
        .map(Response::new)
    }

    async fn report_volumes(
        &self,
        request: Request<VolumeReport>,
    ) -> Result<Response<VolumeReportResponse>, Status> {
        let report = request.into_inner();
        if self
            .cache
            .get(kind("nodes"), "", &report.node_name)
            .is_none()
        {
            return Err(Status::not_found(format!(
                "node {:?} is not registered",
                report.node_name
            )));
        }
        self.volume_reports.record(report);
        Ok(Response::new(VolumeReportResponse {}))
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
        // (as stored, as reported) of each instance the report changes.
        let mut moves = Vec::new();
        for instance in &report.instances {
            if let Some(sample) = instance
                .usage
                .as_ref()
                .and_then(|usage| Sample::from_report(usage, SystemTime::now()))
            {
                self.metrics
                    .record_pod(&instance.namespace, &instance.name, &instance.uid, sample);
            }
            let key = crate::objects::key(kind("pods"), &instance.namespace, &instance.name);
            let Some(stored) = self.cache.stored(&key) else {
                continue;
            };
            let digest = report_digest(instance);
            let node = report.node_name.as_str();
            if self
                .reported
                .repeats(node, &instance.uid, digest, stored.revision())
            {
                continue;
            }
            let Some(cached) = stored.decode(&key) else {
                continue;
            };
            // Only the node an instance is bound to may report on it.
            if cached["metadata"]["uid"] != instance.uid.as_str()
                || node_name(&cached) != Some(node)
            {
                continue;
            }
            self.reported_events
                .record(self.objects.events(), &cached, instance);
            let mut preview = (*cached).clone();
            if !apply_report(&mut preview, instance, &address) {
                self.reported
                    .remember(node, &instance.uid, digest, stored.revision());
                continue;
            }
            moves.push((cached, preview, instance, digest));
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
        let written = futures::future::try_join_all(updates)
            .await
            .map_err(internal)?;
        for ((stored, reported, instance, digest), revision) in moves.iter().zip(written) {
            crate::container_events::record(self.objects.events(), stored, reported);
            if let Some(revision) = revision {
                self.reported
                    .remember(&report.node_name, &instance.uid, *digest, revision);
            }
        }
        if report.complete {
            let uids = report.instances.iter().map(|i| i.uid.as_str()).collect();
            self.reported.keep_only(&report.node_name, &uids);
            self.remove_stopped(&report).await.map_err(internal)?;
        }
        Ok(Response::new(StatusReportResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of each container becomes the kubelet's status lists and
    /// conditions: init containers apart, Initialized once they are done,
    /// Ready only when every app container is.
    #[test]
    fn container_reports_become_container_and_init_container_statuses() {
        use c4m_api::agent::{ContainerRunning, ContainerWaiting};
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "initContainers": [{"name": "setup", "image": "bb:1"}],
                "containers": [{"name": "web", "image": "web:2"}, {"name": "metrics", "image": "m:3"}],
                "ephemeralContainers": [{"name": "debugger-x", "image": "bb:1", "targetContainerName": "web"}],
            },
        });
        let report = InstanceStatus {
            phase: "Running".into(),
            ready: false,
            initialized: true,
            containers: vec![
                ContainerReport {
                    name: "setup".into(),
                    init: true,
                    terminated: Some(ContainerTerminated {
                        exit_code: 0,
                        reason: "Completed".into(),
                        ..ContainerTerminated::default()
                    }),
                    container_id: "oci://x_setup".into(),
                    ..ContainerReport::default()
                },
                ContainerReport {
                    name: "web".into(),
                    ready: true,
                    started: true,
                    running: Some(ContainerRunning {
                        started_at: "2026-12-07T00:00:00Z".into(),
                    }),
                    ..ContainerReport::default()
                },
                ContainerReport {
                    name: "metrics".into(),
                    restart_count: 2,
                    waiting: Some(ContainerWaiting {
                        reason: "CrashLoopBackOff".into(),
                        message: "back-off".into(),
                    }),
                    last_terminated: Some(ContainerTerminated {
                        exit_code: 2,
                        reason: "Error".into(),
                        ..ContainerTerminated::default()
                    }),
                    ..ContainerReport::default()
                },
                ContainerReport {
                    name: "debugger-x".into(),
                    ephemeral: true,
                    running: Some(ContainerRunning {
                        started_at: "2026-12-07T00:00:01Z".into(),
                    }),
                    ..ContainerReport::default()
                },
            ],
            ..InstanceStatus::default()
        };
        assert!(apply_report(&mut pod, &report, "10.0.0.1"));
        let status = &pod["status"];
        assert_eq!(status["initContainerStatuses"][0]["name"], "setup");
        assert_eq!(status["initContainerStatuses"][0]["image"], "bb:1");
        assert_eq!(
            status["initContainerStatuses"][0]["containerID"],
            "oci://x_setup"
        );
        assert_eq!(
            status["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(status["containerStatuses"][0]["name"], "web");
        assert_eq!(status["containerStatuses"][0]["image"], "web:2");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        let metrics = &status["containerStatuses"][1];
        assert_eq!(metrics["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(metrics["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(metrics["restartCount"], 2);
        assert_eq!(status["containerStatuses"].as_array().unwrap().len(), 2);
        let debugger = &status["ephemeralContainerStatuses"][0];
        assert_eq!(debugger["name"], "debugger-x");
        assert_eq!(debugger["image"], "bb:1");
        assert!(debugger["state"]["running"].is_object(), "{debugger}");
        let condition = |name: &str| {
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == name)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(condition("Initialized"), "True");
        assert_eq!(condition("ContainersReady"), "False");
        assert_eq!(condition("Ready"), "False");
        // The same report again changes nothing.
        assert!(!apply_report(&mut pod, &report, "10.0.0.1"));
    }

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

    /// Agents over a fresh store, with the cluster DNS at `dns`.
    async fn agents_over(
        store: Arc<dyn c4m_state::Store>,
        objects: Objects,
        dns: &str,
        shutdown: &CancellationToken,
    ) -> Agents {
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        Agents {
            objects,
            cache,
            health: Arc::new(NodeHealth::new(
                Duration::from_secs(10),
                Duration::from_secs(10),
            )),
            metrics: Arc::default(),
            heartbeat_interval: Duration::from_secs(1),
            dns_address: dns.to_string(),
            slices: Arc::default(),
            reported: Arc::default(),
            reported_events: Arc::default(),
            service_envs: Arc::default(),
            volume_reports: Arc::default(),
            shutdown: shutdown.clone(),
        }
    }

    fn registration(name: &str, address: &str, instance_network: bool) -> RegisterRequest {
        RegisterRequest {
            node_name: name.to_string(),
            address: address.to_string(),
            instance_network,
            ..RegisterRequest::default()
        }
    }

    #[tokio::test]
    async fn nodes_get_distinct_stable_slices_and_see_each_other_as_peers() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let shutdown = CancellationToken::new();
        let agents = agents_over(store, objects.clone(), "0.0.0.0:8153", &shutdown).await;
        let register = |name: &str, address: &str, network: bool| {
            agents.register(Request::new(registration(name, address, network)))
        };
        // Registered at once, they still get different slices.
        let (a, b) = tokio::join!(
            register("a", "10.0.0.1", true),
            register("b", "10.0.0.2", true)
        );
        let mut slices = [
            a.unwrap().into_inner().node_slice,
            b.unwrap().into_inner().node_slice,
        ];
        slices.sort();
        assert_eq!(slices, [Some(0), Some(1)]);
        let hollow = register("hollow", "10.0.0.9", false).await.unwrap();
        assert_eq!(hollow.into_inner().node_slice, None);

        // A re-registration keeps its slice, and the slice is on the Node.
        let a_slice = agents
            .register(Request::new(registration("a", "10.0.0.1", true)))
            .await
            .unwrap()
            .into_inner()
            .node_slice
            .unwrap();
        let node = objects.get(kind("nodes"), "", "a").await.unwrap();
        assert_eq!(node_slice_of(&node), Some(a_slice));

        // Peers: the others with a slice, then only what changes.
        let mut book = PeerBook::default();
        let peers = book.peers(&agents.cache, "a");
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(peers["b"].address, "10.0.0.2");
        let first = peer_changes(&BTreeMap::new(), &peers, true);
        assert!(first.full && first.peers.len() == 1 && first.removed.is_empty());

        let (_, revision) = objects.delete(kind("nodes"), "", "b").await.unwrap();
        agents.cache.wait_for(revision).await;
        let c = register("c", "10.0.0.3", true).await.unwrap().into_inner();
        // b's slice is free once b is gone.
        assert_eq!(c.node_slice, Some(1 - a_slice));
        let now = book.peers(&agents.cache, "a");
        let changes = peer_changes(&peers, &now, false);
        assert!(!changes.full);
        assert_eq!(changes.removed, ["b"]);
        assert_eq!(changes.peers.len(), 1);
        assert_eq!(changes.peers[0].node_name, "c");
        assert_eq!(changes.peers[0].node_slice, 1 - a_slice);
        assert!(
            peer_changes(&now, &book.peers(&agents.cache, "a"), false)
                .peers
                .is_empty()
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_node_watches_objects_whole_then_changes_and_sees_only_tls_secrets() {
        use futures::StreamExt;

        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let shutdown = CancellationToken::new();
        let agents = agents_over(store, objects.clone(), "0.0.0.0:8153", &shutdown).await;
        let watch = |kinds: &[&str]| {
            agents.watch_objects(Request::new(WatchObjectsRequest {
                node_name: "a".into(),
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
            }))
        };
        let refused = watch(&["services", "pods"]).await.err().unwrap();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("\"pods\""),
            "{}",
            refused.message()
        );

        let service = |port: u16| {
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]}})
        };
        objects
            .create(kind("services"), "default", service(80))
            .await
            .unwrap();
        for (name, kind_of) in [("cert", "kubernetes.io/tls"), ("password", "Opaque")] {
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": kind_of,
                "metadata": {"name": name, "namespace": "default"}, "data": {"tls.crt": "eA==", "tls.key": "eA=="}});
            let created = objects
                .create(kind("secrets"), "default", secret)
                .await
                .unwrap();
            let revision = crate::objects::revision_of(&created).unwrap();
            agents.cache.wait_for(revision).await;
        }

        let mut stream = watch(&["services", "secrets", "services"])
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.full && !first.more);
        let keys: Vec<_> = first.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["secrets/default/cert", "services/default/web"]);

        let revision = objects
            .update_with(kind("services"), "default", "web", |svc| {
                svc["spec"]["ports"][0]["port"] = json!(8080);
                true
            })
            .await
            .unwrap()
            .unwrap();
        let changed = stream.next().await.unwrap().unwrap();
        assert!(!changed.full);
        assert_eq!(changed.objects.len(), 1);
        assert_eq!(changed.objects[0].revision, revision);
        let json: Value = serde_json::from_slice(&changed.objects[0].json).unwrap();
        assert_eq!(json["spec"]["ports"][0]["port"], 8080);

        objects
            .delete(kind("services"), "default", "web")
            .await
            .unwrap();
        let removed = stream.next().await.unwrap().unwrap();
        assert_eq!(removed.removed, ["services/default/web"]);
        shutdown.cancel();
    }

    #[test]
    fn a_dns_server_on_every_address_is_advertised_where_the_agent_dialled() {
        let local: SocketAddr = "10.99.250.1:8141".parse().unwrap();
        assert_eq!(
            advertised_dns("0.0.0.0:8153", Some(local)),
            "10.99.250.1:8153"
        );
        assert_eq!(
            advertised_dns("127.0.0.1:8153", Some(local)),
            "127.0.0.1:8153"
        );
        assert_eq!(advertised_dns("0.0.0.0:8153", None), "0.0.0.0:8153");
        assert_eq!(advertised_dns("", Some(local)), "");
    }

    #[tokio::test]
    async fn instances_get_the_service_variables_their_own_env_does_not_set() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let shutdown = CancellationToken::new();
        let agents = agents_over(store, objects.clone(), "", &shutdown).await;
        let service = |namespace: &str, name: &str, spec: Value| {
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": namespace}, "spec": spec})
        };
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
        objects
            .create(kind("namespaces"), "", namespace)
            .await
            .unwrap();
        let port = |port: u16| json!([{"name": "https", "port": port}]);
        let mut revision = 0;
        for (namespace, name, spec) in [
            (
                "default",
                "kubernetes",
                json!({"clusterIP": "10.96.0.1", "ports": port(443)}),
            ),
            (
                "default",
                "elsewhere",
                json!({"clusterIP": "10.96.0.9", "ports": port(80)}),
            ),
            (
                "shop",
                "db",
                json!({"clusterIP": "10.96.0.5", "ports": [{"port": 5432}]}),
            ),
            (
                "shop",
                "pets",
                json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
            ),
            (
                "shop",
                "web",
                json!({"clusterIP": "10.96.0.6", "ports": port(8443)}),
            ),
        ] {
            let created = objects
                .create(kind("services"), namespace, service(namespace, name, spec))
                .await
                .unwrap();
            revision = crate::objects::revision_of(&created).unwrap();
        }
        agents.cache.wait_for(revision).await;
        let env_of = |links: Option<bool>| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": {"initContainers": [{"name": "i", "image": "x"}],
                         "containers": [{"name": "c", "image": "x", "env": [
                    {"name": "WEB_SERVICE_HOST", "value": "mine"}]}]}});
            if let Some(links) = links {
                pod["spec"]["enableServiceLinks"] = json!(links);
            }
            let resolved = agents.resolve_env(&pod).unwrap();
            let env_of = |list: &str| -> Vec<(String, String)> {
                resolved["spec"][list][0]["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| (text(&v["name"]), text(&v["value"])))
                    .collect()
            };
            // Init containers get them too.
            let init = env_of("initContainers");
            let master = ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into());
            assert!(init.contains(&master), "{init:?}");
            env_of("containers")
        };
        fn text(value: &Value) -> String {
            value.as_str().unwrap().to_string()
        }
        let value = |env: &[(String, String)], name: &str| {
            let values: Vec<&str> = env
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            values.join(",")
        };

        let env = env_of(None);
        assert_eq!(value(&env, "KUBERNETES_SERVICE_HOST"), "10.96.0.1");
        assert_eq!(value(&env, "KUBERNETES_SERVICE_PORT"), "443");
        assert_eq!(value(&env, "KUBERNETES_SERVICE_PORT_HTTPS"), "443");
        assert_eq!(value(&env, "DB_SERVICE_HOST"), "10.96.0.5");
        assert_eq!(value(&env, "DB_PORT"), "tcp://10.96.0.5:5432");
        assert_eq!(value(&env, "DB_PORT_5432_TCP_ADDR"), "10.96.0.5");
        // The container's own variable wins, once; headless Services and
        // other namespaces' give none.
        assert_eq!(value(&env, "WEB_SERVICE_HOST"), "mine");
        assert_eq!(value(&env, "WEB_SERVICE_PORT"), "8443");
        assert_eq!(value(&env, "PETS_SERVICE_HOST"), "");
        assert_eq!(value(&env, "ELSEWHERE_SERVICE_HOST"), "");

        // Without links, only the master Service's.
        let env = env_of(Some(false));
        assert_eq!(value(&env, "KUBERNETES_SERVICE_HOST"), "10.96.0.1");
        assert_eq!(value(&env, "DB_SERVICE_HOST"), "");
        assert_eq!(value(&env, "WEB_SERVICE_HOST"), "mine");

        // Services changed since are seen: a port changed, one gone.
        objects
            .update_with(kind("services"), "shop", "web", |service| {
                service["spec"]["ports"][0]["port"] = json!(9443);
                true
            })
            .await
            .unwrap();
        let (_, revision) = objects
            .delete(kind("services"), "shop", "db")
            .await
            .unwrap();
        agents.cache.wait_for(revision).await;
        let env = env_of(None);
        assert_eq!(value(&env, "WEB_SERVICE_PORT"), "9443");
        assert_eq!(value(&env, "DB_SERVICE_HOST"), "");
        assert_eq!(value(&env, "KUBERNETES_SERVICE_HOST"), "10.96.0.1");
        shutdown.cancel();
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
        let agents = agents_over(Arc::clone(&store), objects.clone(), "", &shutdown).await;
        let cache = Arc::clone(&agents.cache);
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

    /// The files of an instance's configMap volume follow the ConfigMap: an
    /// edit re-sends the instance with the new content; a claim it waits
    /// for, once bound, re-sends it with the volume to stage.
    #[tokio::test]
    async fn assignments_follow_their_volume_sources() {
        use c4m_core::volumes::ResolvedVolume;
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default"}, "data": {"greeting": "hello"}});
        objects
            .create(kind("configmaps"), "default", config)
            .await
            .unwrap();
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}});
        objects
            .create(kind("persistentvolumeclaims"), "default", claim)
            .await
            .unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}],
                "volumes": [{"name": "config", "configMap": {"name": "cm"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}});
        objects.create(kind("pods"), "default", pod).await.unwrap();
        let shutdown = CancellationToken::new();
        let agents = agents_over(Arc::clone(&store), objects.clone(), "", &shutdown).await;
        let cache = Arc::clone(&agents.cache);
        let mut wake = cache.watch_node("n1");
        wake.mark_unchanged();
        let volumes = |assigned: &[Vec<u8>]| {
            let pod: Value = serde_json::from_slice(&assigned[0]).unwrap();
            let text = pod["metadata"]["annotations"][c4m_core::annotations::RESOLVED_VOLUMES]
                .as_str()
                .unwrap()
                .to_string();
            serde_json::from_str::<BTreeMap<String, ResolvedVolume>>(&text).unwrap()
        };
        let greeting = |volumes: &BTreeMap<String, ResolvedVolume>| match &volumes["config"] {
            ResolvedVolume::Files { files } => {
                String::from_utf8(decode_base64(&files[0].base64).unwrap()).unwrap()
            }
            other => panic!("{other:?}"),
        };
        let mut resolved = Resolved::default();
        let first = agents.assignments("n1", &mut resolved);
        let sent = volumes(&first);
        assert_eq!(greeting(&sent), "hello");
        assert_eq!(
            sent["data"],
            ResolvedVolume::Waiting {
                message: "persistentvolumeclaim \"data\" not bound".into()
            }
        );

        let revision = objects
            .update_with(kind("configmaps"), "default", "cm", |cm| {
                cm["data"]["greeting"] = json!("bonjour");
                true
            })
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(revision).await;
        assert!(
            wake.has_changed().unwrap(),
            "the edit wakes the node's stream"
        );
        wake.mark_unchanged();
        let second = agents.assignments("n1", &mut resolved);
        assert_ne!(digest(&second), digest(&first), "so it is sent again");
        assert_eq!(greeting(&volumes(&second)), "bonjour");

        let volume = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                "nfs": {"server": "10.0.0.1", "path": "/exports/a"}}});
        objects
            .create(kind("persistentvolumes"), "", volume)
            .await
            .unwrap();
        let revision = objects
            .update_with(kind("persistentvolumeclaims"), "default", "data", |claim| {
                claim["spec"]["volumeName"] = json!("pv-1");
                claim["status"]["phase"] = json!("Bound");
                true
            })
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(revision).await;
        assert!(
            wake.has_changed().unwrap(),
            "the bind wakes the node's stream"
        );
        let third = agents.assignments("n1", &mut resolved);
        assert_eq!(
            volumes(&third)["data"],
            ResolvedVolume::Claim {
                claim: "default/data".into(),
                source: c4m_core::volumes::VolumeSource::Nfs {
                    server: "10.0.0.1".into(),
                    path: "/exports/a".into(),
                },
                read_only: false,
            }
        );
        shutdown.cancel();
    }

    /// An instance naming a VPC that does not exist yet is held back; the
    /// VPC's creation wakes its node and sends it with the CIDR. One in the
    /// default VPC gets the CIDR of a `default` Vpc created later.
    #[tokio::test]
    async fn assignments_follow_vpcs() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let in_vpc = |name: &str, vpc: Option<&str>| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}});
            if let Some(vpc) = vpc {
                pod["metadata"]["annotations"] = json!({c4m_core::annotations::VPC: vpc});
            }
            pod
        };
        for pod in [in_vpc("shop-a", Some("shop")), in_vpc("plain", None)] {
            objects.create(kind("pods"), "default", pod).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let agents = agents_over(Arc::clone(&store), objects.clone(), "", &shutdown).await;
        let cache = Arc::clone(&agents.cache);
        let cidrs = |assigned: &[Vec<u8>]| -> Vec<(String, Value)> {
            assigned
                .iter()
                .map(|bytes| {
                    let pod: Value = serde_json::from_slice(bytes).unwrap();
                    (
                        pod["metadata"]["name"].as_str().unwrap().to_string(),
                        pod["metadata"]["annotations"][c4m_core::annotations::VPC_CIDR].clone(),
                    )
                })
                .collect()
        };
        let mut resolved = Resolved::default();
        assert_eq!(
            cidrs(&agents.assignments("n1", &mut resolved)),
            [("plain".to_string(), Value::Null)]
        );
        // The held-back instance is marked; then the node is quiet.
        let mut waited = 0;
        while cache.get(kind("pods"), "default", "shop-a").unwrap()["status"]["containerStatuses"]
            [0]["state"]["waiting"]["reason"]
            != "CreateContainerConfigError"
        {
            waited += 1;
            assert!(waited < 500, "the config error is recorded");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut changed = cache.watch_node("n1");
        changed.borrow_and_update();

        for (name, cidr) in [("shop", "10.77.0.0/16"), ("default", "10.66.0.0/16")] {
            let vpc = json!({"apiVersion": "c4m.io/v1", "kind": "Vpc",
                "metadata": {"name": name}, "spec": {"cidr": cidr}});
            let created = objects.create(kind("vpcs"), "", vpc).await.unwrap();
            let revision = crate::objects::revision_of(&created).unwrap();
            cache.wait_for(revision).await;
            assert!(changed.has_changed().unwrap(), "vpc {name} wakes the node");
            changed.borrow_and_update();
        }
        assert_eq!(
            cidrs(&agents.assignments("n1", &mut resolved)),
            [
                ("plain".to_string(), json!("10.66.0.0/16")),
                ("shop-a".to_string(), json!("10.77.0.0/16")),
            ]
        );
        shutdown.cancel();
    }

    /// A report that repeats the last one about an unchanged instance is
    /// skipped; once anything else writes the instance, the same report is
    /// applied again; a complete report forgets instances it no longer lists.
    #[tokio::test]
    async fn a_repeated_report_is_applied_again_only_after_the_instance_changed() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let created = objects
            .create(kind("pods"), "default", pod("a"))
            .await
            .unwrap();
        let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let agents = agents_over(Arc::clone(&store), objects.clone(), "", &shutdown).await;
        let running = InstanceStatus {
            namespace: "default".into(),
            name: "a".into(),
            uid: uid.clone(),
            phase: "Running".into(),
            ready: true,
            ..Default::default()
        };
        let report = |complete| StatusReport {
            node_name: "n1".into(),
            instances: vec![running.clone()],
            complete,
        };
        let phase = || async {
            let pod = objects.get(kind("pods"), "default", "a").await.unwrap();
            pod["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let sync = || async {
            let revision = objects.get(kind("pods"), "default", "a").await.unwrap()["metadata"]
                ["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            agents.cache.wait_for(revision).await;
        };

        sync().await;
        agents
            .report_status(Request::new(report(false)))
            .await
            .unwrap();
        assert_eq!(phase().await, "Running");
        sync().await;
        let memo = |uid: &str| agents.reported.lock()["n1"].get(uid).copied();
        let remembered = memo(&uid).expect("the applied report is remembered");
        agents
            .report_status(Request::new(report(false)))
            .await
            .unwrap();
        assert_eq!(memo(&uid), Some(remembered));

        // Another writer changes the instance: the same report applies again.
        objects
            .update_with(kind("pods"), "default", "a", |pod| {
                pod["status"]["phase"] = json!("Pending");
                true
            })
            .await
            .unwrap();
        sync().await;
        agents
            .report_status(Request::new(report(false)))
            .await
            .unwrap();
        assert_eq!(phase().await, "Running");
        assert_ne!(memo(&uid), Some(remembered));

        let mut empty = report(true);
        empty.instances.clear();
        agents.report_status(Request::new(empty)).await.unwrap();
        assert_eq!(memo(&uid), None);
        shutdown.cancel();
    }
}
