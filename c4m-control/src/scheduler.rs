//! The scheduling loop: binds pending instances to nodes with `c4m-sched`.
//!
//! Each cycle takes one consistent snapshot from the cache (nodes and the
//! instances already bound), places every pending instance in priority order,
//! and writes all the binds in one transaction, each guarded by the
//! instance's resourceVersion. An instance that fits nowhere keeps
//! `PodScheduled=False` with the scheduler's reason, which `c4m describe` shows.
//!
//! Priorities come from `spec.priority`. An instance that fits nowhere may
//! preempt bound instances of strictly lower priority: the scheduler deletes
//! the victims (their owners recreate them, and they are scheduled again
//! where they fit), sets `status.nominatedNodeName` and a `PodScheduled=False`
//! condition with reason `Preempting`, and a later cycle binds the preemptor
//! once the victims are gone from the store. While any of its victims is
//! still there, an instance does not preempt again.
//!
//! Disruption budgets, until the `PodDisruptionBudget` kind is served: an
//! instance annotated `c4m.io/max-unavailable: "N"` belongs to the budget
//! group of its controller (its own uid when it has none), which may have at
//! most N members unavailable; a preemption never takes more. Members count
//! as unavailable when not ready or missing from the owner's
//! `spec.replicas`. An unparsable N allows no disruption.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use c4m_sched::{
    ClusterSnapshot, DisruptionBudget, HostPort, InstanceRequest, NodeInfo, NodeSelectorOperator,
    NodeSelectorRequirement, NodeSelectorTerm, PlacedInstance, PreferredSchedulingTerm, Protocol,
    Resources, Strategy, Taint, TaintEffect, Toleration, TolerationOperator,
};
use k8s_openapi::api::core::v1::{self as core, PodSpec};
use serde_json::{Value, json};

use crate::Result;
use crate::cache::Cache;
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{controller_uid, is_ready, is_terminal, labels, node_name, set_condition};

/// Pod annotation choosing how to pick among fitting nodes: `bestfit`
/// (the default) or `spread`.
const PLACEMENT_STRATEGY: &str = "c4m.io/placement-strategy";

/// Pod annotation: how many members of the instance's disruption budget
/// group (its controller's instances) may be unavailable at once.
const MAX_UNAVAILABLE: &str = "c4m.io/max-unavailable";

/// Preemptor annotation: the uids of the victims evicted for it, comma
/// separated; it does not preempt again while one of them remains.
const PREEMPTION_VICTIMS: &str = "c4m.io/preemption-victims";

/// The resource name of local ephemeral storage.
const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// The scheduler's view of an instance's needs.
fn request(pod: &Value) -> std::result::Result<InstanceRequest, String> {
    let spec: PodSpec =
        serde_json::from_value(pod["spec"].clone()).map_err(|e| format!("spec: {e}"))?;
    let requests = c4m_core::pod_requests(&spec).map_err(|e| e.to_string())?;
    let (ephemeral_storage_bytes, extended) = other_requests(&spec)?;
    let node_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref());
    let required_affinity = node_affinity
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|required| {
            required
                .node_selector_terms
                .iter()
                .map(node_selector_term)
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let preferred_affinity = node_affinity
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
        .iter()
        .map(|term| {
            Ok(PreferredSchedulingTerm {
                weight: i64::from(term.weight),
                preference: node_selector_term(&term.preference)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let tolerations = spec
        .tolerations
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(toleration)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(InstanceRequest {
        cpu_millis: requests.cpu_millis,
        memory_bytes: requests.memory_bytes,
        ephemeral_storage_bytes,
        extended,
        required_affinity,
        preferred_affinity,
        tolerations,
        host_ports: host_ports(&spec)?,
        strategy: strategy(pod)?,
        node_selector: spec.node_selector.unwrap_or_default(),
        driver: spec
            .runtime_class_name
            .unwrap_or_else(|| c4m_core::DEFAULT_DRIVER.to_string()),
        ..Default::default()
    })
}

/// Ephemeral storage (bytes) and extended resources (names with a domain,
/// like `nvidia.com/gpu`: integer counts) summed over the containers, each
/// container's request falling back to its limit.
fn other_requests(spec: &PodSpec) -> std::result::Result<(u64, BTreeMap<String, u64>), String> {
    let mut ephemeral_storage_bytes = 0u64;
    let mut extended: BTreeMap<String, u64> = BTreeMap::new();
    for (index, container) in spec.containers.iter().enumerate() {
        let Some(resources) = &container.resources else {
            continue;
        };
        // Limits first so that requests overwrite them.
        let mut effective: BTreeMap<&str, &str> = BTreeMap::new();
        for amounts in [&resources.limits, &resources.requests]
            .into_iter()
            .flatten()
        {
            for (name, quantity) in amounts {
                effective.insert(name, &quantity.0);
            }
        }
        for (name, quantity) in effective {
            let invalid = |e: &dyn std::fmt::Display| {
                format!("containers[{index}].resources.requests.{name}: {e}")
            };
            let total = if name == EPHEMERAL_STORAGE {
                &mut ephemeral_storage_bytes
            } else if name.contains('/') {
                extended.entry(name.to_owned()).or_default()
            } else {
                continue;
            };
            let amount = if name == EPHEMERAL_STORAGE {
                c4m_core::parse_memory_bytes(quantity).map_err(|e| invalid(&e))?
            } else {
                quantity.parse::<u64>().map_err(|e| invalid(&e))?
            };
            *total = total
                .checked_add(amount)
                .ok_or_else(|| invalid(&"total overflows"))?;
        }
    }
    Ok((ephemeral_storage_bytes, extended))
}

/// A node selector term; `matchFields` is not supported and is refused
/// rather than ignored (an ignored field would widen or empty the term).
fn node_selector_term(
    term: &core::NodeSelectorTerm,
) -> std::result::Result<NodeSelectorTerm, String> {
    if term
        .match_fields
        .as_ref()
        .is_some_and(|fields| !fields.is_empty())
    {
        return Err("affinity.nodeAffinity: matchFields is not supported".to_owned());
    }
    let match_expressions = term
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|requirement| {
            let operator = match requirement.operator.as_str() {
                "In" => NodeSelectorOperator::In,
                "NotIn" => NodeSelectorOperator::NotIn,
                "Exists" => NodeSelectorOperator::Exists,
                "DoesNotExist" => NodeSelectorOperator::DoesNotExist,
                "Gt" => NodeSelectorOperator::Gt,
                "Lt" => NodeSelectorOperator::Lt,
                other => {
                    return Err(format!(
                        "affinity.nodeAffinity: unknown operator {other:?} for key {:?}",
                        requirement.key
                    ));
                }
            };
            Ok(NodeSelectorRequirement {
                key: requirement.key.clone(),
                operator,
                values: requirement.values.clone().unwrap_or_default(),
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(NodeSelectorTerm {
        match_expressions,
        ..Default::default()
    })
}

fn taint_effect(effect: &str) -> std::result::Result<TaintEffect, String> {
    match effect {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        other => Err(format!("unknown taint effect {other:?}")),
    }
}

fn toleration(toleration: &core::Toleration) -> std::result::Result<Toleration, String> {
    let invalid = |e: String| format!("tolerations: {e}");
    let operator = match toleration.operator.as_deref() {
        None | Some("") | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => return Err(invalid(format!("unknown operator {other:?}"))),
    };
    let effect = match toleration.effect.as_deref() {
        None | Some("") => None,
        Some(effect) => Some(taint_effect(effect).map_err(invalid)?),
    };
    Ok(Toleration {
        key: toleration.key.clone().unwrap_or_default(),
        operator,
        value: toleration.value.clone().unwrap_or_default(),
        effect,
    })
}

/// The host ports the containers bind (ports without `hostPort` bind none).
fn host_ports(spec: &PodSpec) -> std::result::Result<Vec<HostPort>, String> {
    let mut ports = Vec::new();
    for container in &spec.containers {
        for port in container.ports.as_deref().unwrap_or_default() {
            let Some(host_port) = port.host_port.filter(|p| *p != 0) else {
                continue;
            };
            let invalid = |what: &str| format!("containers[{}].ports: {what}", container.name);
            let protocol = match port.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(other) => return Err(invalid(&format!("unknown protocol {other:?}"))),
            };
            let port = u16::try_from(host_port)
                .map_err(|_| invalid(&format!("hostPort {host_port} is out of range")))?;
            ports.push(HostPort { port, protocol });
        }
    }
    Ok(ports)
}

/// The pod's placement strategy annotation (best fit when absent).
fn strategy(pod: &Value) -> std::result::Result<Strategy, String> {
    match pod["metadata"]["annotations"][PLACEMENT_STRATEGY].as_str() {
        None | Some("bestfit") => Ok(Strategy::BestFit),
        Some("spread") => Ok(Strategy::Spread),
        Some(other) => Err(format!(
            "annotation {PLACEMENT_STRATEGY}: unknown strategy {other:?} (bestfit or spread)"
        )),
    }
}

/// The scheduler's view of a node. Unparsable quantities count as zero (an
/// absent ephemeral storage as unlimited) and
/// malformed taints are skipped: a node's status comes from its agent, and
/// one bad field must not stop scheduling elsewhere.
pub(crate) fn node_info(node: &Value) -> NodeInfo {
    let allocatable = &node["status"]["allocatable"];
    let quantity = |field: &str, parse: fn(&str) -> c4m_core::Result<u64>| {
        allocatable[field]
            .as_str()
            .and_then(|q| parse(q).ok())
            .unwrap_or(0)
    };
    let drivers: BTreeSet<String> = node["metadata"]["annotations"][c4m_core::annotations::DRIVERS]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|d| d.split('=').next())
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    let extended = allocatable
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.contains('/'))
        .filter_map(|(name, amount)| {
            let amount = amount
                .as_str()
                .and_then(|a| a.parse().ok())
                .or_else(|| amount.as_u64())?;
            Some((name.clone(), amount))
        })
        .collect();
    let taints = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|taint| {
            Some(Taint {
                key: taint["key"].as_str()?.to_owned(),
                value: taint["value"].as_str().unwrap_or_default().to_owned(),
                effect: taint_effect(taint["effect"].as_str()?).ok()?,
            })
        })
        .collect();
    NodeInfo {
        name: name_of(node).to_string(),
        allocatable: Resources {
            cpu_millis: quantity("cpu", c4m_core::parse_cpu_millis),
            memory_bytes: quantity("memory", c4m_core::parse_memory_bytes),
            // Agents do not report ephemeral storage yet: a node that does not
            // say is not limited, rather than refusing every request for it.
            ephemeral_storage_bytes: if allocatable[EPHEMERAL_STORAGE].is_null() {
                u64::MAX
            } else {
                quantity(EPHEMERAL_STORAGE, c4m_core::parse_memory_bytes)
            },
            instances: allocatable["pods"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .or_else(|| allocatable["pods"].as_u64())
                .unwrap_or(110),
            extended,
        },
        labels: labels(node),
        drivers,
        taints,
        ready: is_ready(node) && node["spec"]["unschedulable"] != true,
    }
}

/// `spec.priority`, 0 when absent, clamped to the `i32` Kubernetes allows.
fn priority(pod: &Value) -> i32 {
    pod["spec"]["priority"].as_i64().map_or(0, |priority| {
        i32::try_from(priority).unwrap_or(if priority < 0 { i32::MIN } else { i32::MAX })
    })
}

fn uid(pod: &Value) -> &str {
    pod["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The id preemption knows an instance by: `namespace/name`.
fn instance_id(pod: &Value) -> String {
    format!("{}/{}", namespace_of(pod), name_of(pod))
}

/// The disruption budget group of an annotated instance: its controller's
/// uid, or its own.
fn budget_group(pod: &Value) -> Option<&str> {
    pod["metadata"]["annotations"][MAX_UNAVAILABLE].as_str()?;
    Some(controller_uid(pod).unwrap_or_else(|| uid(pod)))
}

/// A bound instance as a possible victim.
fn placed_instance(pod: &Value) -> PlacedInstance {
    PlacedInstance {
        id: instance_id(pod),
        priority: priority(pod),
        disruption_budget: budget_group(pod).map(str::to_owned),
    }
}

/// The budget of every group among `pods` (non-terminal ones): the smallest
/// `max-unavailable` its members state, and as unavailable its members that
/// are not ready plus those missing from the owner's replicas
/// (`owner_replicas`, by uid).
fn disruption_budgets(
    pods: &[&Arc<Value>],
    owner_replicas: &HashMap<&str, u64>,
) -> BTreeMap<String, DisruptionBudget> {
    let mut members: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for pod in pods {
        let Some(group) = budget_group(pod) else {
            continue;
        };
        let stated = pod["metadata"]["annotations"][MAX_UNAVAILABLE]
            .as_str()
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let (max_unavailable, count, not_ready) = members.entry(group).or_insert((u64::MAX, 0, 0));
        *max_unavailable = (*max_unavailable).min(stated);
        *count += 1;
        *not_ready += u64::from(!is_ready(pod));
    }
    members
        .into_iter()
        .map(|(group, (max_unavailable, count, not_ready))| {
            let missing = owner_replicas
                .get(group)
                .map_or(0, |replicas| replicas.saturating_sub(count));
            let budget = DisruptionBudget {
                max_unavailable,
                unavailable: not_ready.saturating_add(missing),
            };
            (group.to_owned(), budget)
        })
        .collect()
}

/// Whether `pod` already preempted and one of its victims (by uid) is
/// still among `live_uids`.
fn awaiting_victims(pod: &Value, live_uids: &HashSet<&str>) -> bool {
    pod["status"]["nominatedNodeName"].as_str().is_some()
        && pod["metadata"]["annotations"][PREEMPTION_VICTIMS]
            .as_str()
            .is_some_and(|victims| victims.split(',').any(|victim| live_uids.contains(victim)))
}

/// The message of the `Preempting` condition.
fn preempting_message(victims: usize, node: &str) -> String {
    format!("preempting {victims} instance(s) on {node}")
}

/// Marks `pod` as waiting on `node` for `victim_uids` to go; false if it
/// got bound meanwhile.
fn nominate(pod: &mut Value, node: &str, victim_uids: &[&str]) -> bool {
    if node_name(pod).is_some() {
        return false;
    }
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][PREEMPTION_VICTIMS] = json!(victim_uids.join(","));
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    pod["status"]["nominatedNodeName"] = json!(node);
    let message = preempting_message(victim_uids.len(), node);
    set_condition(pod, "PodScheduled", false, "Preempting", &message);
    true
}

/// Clears what [`nominate`] set, when the instance is bound.
fn clear_nomination(pod: &mut Value) {
    if let Some(status) = pod["status"].as_object_mut() {
        status.remove("nominatedNodeName");
    }
    if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
        annotations.remove(PREEMPTION_VICTIMS);
    }
}

/// `spec.replicas` of every workload that owns instances, by uid.
fn owner_replicas(owners: &[Arc<Value>]) -> HashMap<&str, u64> {
    owners
        .iter()
        .map(|owner| (uid(owner), owner["spec"]["replicas"].as_u64().unwrap_or(1)))
        .collect()
}

/// Victims to delete for one preemptor, then the preemptor to nominate.
struct Preempting {
    namespace: String,
    name: String,
    node: String,
    /// (namespace, name, uid) of each victim.
    victims: Vec<(String, String, String)>,
}

/// One scheduling cycle. Returns the revision of the binds, if any.
/// Asks the snapshot for a preemption that would make room for `pod`, and
/// books it: later instances of this cycle see the victims gone, their
/// budgets spent and the room taken.
fn plan_preemption(
    snapshot: &mut ClusterSnapshot,
    budgets: &mut BTreeMap<String, DisruptionBudget>,
    bound_by_id: &HashMap<String, &Arc<Value>>,
    pod: &Value,
    request: &InstanceRequest,
) -> Option<Preempting> {
    let preemption = snapshot.preempt(request, priority(pod), budgets)?;
    let victims: Vec<&Arc<Value>> = preemption
        .victims
        .iter()
        .filter_map(|id| bound_by_id.get(id).copied())
        .collect();
    if victims.is_empty() || victims.len() != preemption.victims.len() {
        return None;
    }
    for victim in &victims {
        snapshot.release_instance(&instance_id(victim));
        if let Some(budget) = budget_group(victim).and_then(|group| budgets.get_mut(group)) {
            budget.unavailable = budget.unavailable.saturating_add(1);
        }
    }
    snapshot.allocate(&preemption.node, request);
    Some(Preempting {
        namespace: namespace_of(pod).to_owned(),
        name: name_of(pod).to_owned(),
        node: preemption.node,
        victims: victims
            .iter()
            .map(|victim| {
                (
                    namespace_of(victim).to_owned(),
                    name_of(victim).to_owned(),
                    uid(victim).to_owned(),
                )
            })
            .collect(),
    })
}

pub(crate) async fn reconcile(objects: &Objects, cache: &Cache) -> Result<Option<i64>> {
    let pods = cache.list(kind("pods"), None);
    let mut pending: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| node_name(p).is_none() && !is_terminal(p))
        .collect();
    if pending.is_empty() {
        return Ok(None);
    }
    let mut snapshot = ClusterSnapshot::new();
    for node in cache.list(kind("nodes"), None) {
        snapshot.upsert_node(node_info(&node));
    }
    let live: Vec<&Arc<Value>> = pods.iter().filter(|p| !is_terminal(p)).collect();
    let mut bound_by_id: HashMap<String, &Arc<Value>> = HashMap::new();
    for pod in &live {
        if let (Some(node), Ok(request)) = (node_name(pod), request(pod)) {
            let instance = placed_instance(pod);
            bound_by_id.insert(instance.id.clone(), pod);
            snapshot.allocate_instance(node, &request, instance);
        }
    }
    let live_uids: HashSet<&str> = live.iter().map(|pod| uid(pod)).collect();
    let owners: Vec<Arc<Value>> = ["microservices", "deployments"]
        .into_iter()
        .flat_map(|plural| cache.list(kind(plural), None))
        .collect();
    let mut budgets = disruption_budgets(&live, &owner_replicas(&owners));
    pending.sort_by(|a, b| {
        priority(b)
            .cmp(&priority(a))
            .then_with(|| {
                a["metadata"]["creationTimestamp"]
                    .as_str()
                    .cmp(&b["metadata"]["creationTimestamp"].as_str())
            })
            .then_with(|| name_of(a).cmp(name_of(b)))
    });
    let mut binds = Vec::new();
    let mut unschedulable: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut preemptions = Vec::new();
    for pod in pending {
        let request = request(pod).map_err(|e| format!("invalid instance: {e}"));
        let placement = request
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|request| snapshot.place(request).map_err(|reason| reason.to_string()));
        match placement {
            Ok(node) => {
                let mut bound = (**pod).clone();
                clear_nomination(&mut bound);
                bound["spec"]["nodeName"] = json!(node);
                set_condition(
                    &mut bound,
                    "PodScheduled",
                    true,
                    "Scheduled",
                    &format!("assigned to {node}"),
                );
                binds.push((kind("pods"), bound));
            }
            Err(_) if awaiting_victims(pod, &live_uids) => {}
            Err(reason) => {
                let preemption = request.as_ref().ok().and_then(|request| {
                    plan_preemption(&mut snapshot, &mut budgets, &bound_by_id, pod, request)
                });
                if let Some(preemption) = preemption {
                    preemptions.push(preemption);
                    continue;
                }
                let current = crate::pods::condition(pod, "PodScheduled");
                if current.is_none_or(|c| c["message"] != reason.as_str()) {
                    unschedulable.insert(
                        (namespace_of(pod).to_string(), name_of(pod).to_string()),
                        reason,
                    );
                }
            }
        }
    }
    let mut written = None;
    if !binds.is_empty() {
        let count = binds.len();
        match objects.write_many(binds).await {
            Ok(revision) => {
                tracing::debug!(count, revision, "bound instances");
                written = Some(revision);
            }
            // Another writer moved an instance on: the next cycle sees it.
            Err(crate::Error::Conflict(e)) => {
                tracing::debug!(error = %e, "bind conflicted; rescheduling")
            }
            Err(e) => return Err(e),
        }
    }
    for preemption in preemptions {
        written = written.max(preempt(objects, &preemption).await?);
    }
    for ((namespace, name), reason) in unschedulable {
        let revision = objects
            .update_with(kind("pods"), &namespace, &name, |pod| {
                node_name(pod).is_none()
                    && set_condition(pod, "PodScheduled", false, "Unschedulable", &reason)
            })
            .await?;
        written = written.max(revision);
    }
    Ok(written)
}

/// Deletes the victims, then nominates the preemptor: in this order, a
/// failure in between leaves no nomination waiting on victims that stay.
async fn preempt(objects: &Objects, preemption: &Preempting) -> Result<Option<i64>> {
    let mut written = None;
    for (namespace, name, _) in &preemption.victims {
        match objects.delete(kind("pods"), namespace, name).await {
            Ok((_, revision)) => written = written.max(Some(revision)),
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let uids: Vec<&str> = preemption
        .victims
        .iter()
        .map(|(_, _, uid)| uid.as_str())
        .collect();
    tracing::info!(
        instance = %preemption.name,
        node = %preemption.node,
        victims = uids.len(),
        "preempting"
    );
    let revision = objects
        .update_with(
            kind("pods"),
            &preemption.namespace,
            &preemption.name,
            |pod| nominate(pod, &preemption.node, &uids),
        )
        .await?;
    Ok(written.max(revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_fields_map_to_the_request() {
        let pod = json!({
            "metadata": {"name": "train", "annotations": {PLACEMENT_STRATEGY: "spread"}},
            "spec": {
                "containers": [
                    {
                        "name": "a",
                        "ports": [
                            {"containerPort": 8080, "hostPort": 80},
                            {"containerPort": 53, "hostPort": 53, "protocol": "UDP"},
                            {"containerPort": 9000}
                        ],
                        "resources": {
                            "requests": {"cpu": "500m", "ephemeral-storage": "1Gi", "nvidia.com/gpu": "1"},
                            "limits": {"nvidia.com/gpu": "1", "example.com/fpga": "2"}
                        }
                    },
                    {"name": "b", "resources": {"limits": {"ephemeral-storage": "512Mi", "nvidia.com/gpu": "2"}}}
                ],
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                    {"operator": "Exists"}
                ],
                "affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["32"]}]}
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 20, "preference": {"matchExpressions": [
                            {"key": "zone", "operator": "In", "values": ["a"]}
                        ]}}
                    ]
                }}
            }
        });
        let request = request(&pod).unwrap();
        assert_eq!(request.cpu_millis, 500);
        assert_eq!(request.ephemeral_storage_bytes, (1 << 30) + (512 << 20));
        assert_eq!(
            request.extended,
            BTreeMap::from([
                ("example.com/fpga".to_owned(), 2),
                ("nvidia.com/gpu".to_owned(), 3)
            ])
        );
        assert_eq!(
            request.host_ports,
            [
                HostPort {
                    port: 80,
                    protocol: Protocol::Tcp
                },
                HostPort {
                    port: 53,
                    protocol: Protocol::Udp
                }
            ]
        );
        assert_eq!(request.strategy, Strategy::Spread);
        assert_eq!(request.tolerations.len(), 2);
        assert_eq!(request.tolerations[0].effect, Some(TaintEffect::NoSchedule));
        assert_eq!(request.tolerations[1].operator, TolerationOperator::Exists);
        assert!(request.tolerations[1].key.is_empty());
        assert_eq!(request.required_affinity.len(), 2);
        assert_eq!(
            request.required_affinity[1].match_expressions[0].operator,
            NodeSelectorOperator::Gt
        );
        assert_eq!(request.preferred_affinity[0].weight, 20);
    }

    #[test]
    fn invalid_pod_fields_are_reasons_not_panics() {
        let with =
            |metadata: Value, spec: Value| request(&json!({"metadata": metadata, "spec": spec}));
        let container = json!([{"name": "a"}]);
        let error = with(
            json!({"annotations": {PLACEMENT_STRATEGY: "random"}}),
            json!({"containers": container}),
        )
        .unwrap_err();
        assert!(error.contains("unknown strategy \"random\""), "{error}");
        let error = with(
            json!({}),
            json!({"containers": [{"name": "a", "resources": {"requests": {"nvidia.com/gpu": "1.5"}}}]}),
        )
        .unwrap_err();
        assert!(error.contains("nvidia.com/gpu"), "{error}");
        let error = with(
            json!({}),
            json!({"containers": container, "tolerations": [{"key": "k", "operator": "Maybe"}]}),
        )
        .unwrap_err();
        assert!(error.contains("unknown operator \"Maybe\""), "{error}");
        assert!(
            with(json!({}), json!({"containers": container}))
                .unwrap()
                .strategy
                == Strategy::BestFit
        );
    }

    #[test]
    fn node_fields_map_to_node_info() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"gpu": "true"}},
            "spec": {"taints": [
                {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                {"key": "spot", "effect": "PreferNoSchedule"},
                {"key": "broken", "effect": "Sometimes"}
            ]},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10",
                                "ephemeral-storage": "20Gi", "nvidia.com/gpu": "2"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        let info = node_info(&node);
        assert_eq!(info.allocatable.ephemeral_storage_bytes, 20 << 30);
        assert_eq!(info.allocatable.extended("nvidia.com/gpu"), 2);
        assert_eq!(
            info.taints,
            [
                Taint {
                    key: "dedicated".to_owned(),
                    value: "ml".to_owned(),
                    effect: TaintEffect::NoSchedule
                },
                Taint {
                    key: "spot".to_owned(),
                    value: String::new(),
                    effect: TaintEffect::PreferNoSchedule
                },
            ]
        );
        let unreported =
            node_info(&json!({"metadata": {"name": "n2"}, "status": {"allocatable": {}}}));
        assert_eq!(unreported.allocatable.ephemeral_storage_bytes, u64::MAX);
        assert!(unreported.allocatable.extended.is_empty());
    }

    fn pod(name: &str, owner: Option<&str>, annotations: Value, ready: bool) -> Arc<Value> {
        let owners = owner.map_or(json!([]), |uid| json!([{"uid": uid, "controller": true}]));
        Arc::new(json!({
            "metadata": {
                "name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "annotations": annotations, "ownerReferences": owners
            },
            "spec": {"priority": 3, "containers": [{"name": "a"}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
    }

    #[test]
    fn annotated_instances_form_budget_groups_by_owner() {
        let budget = json!({MAX_UNAVAILABLE: "1"});
        let pods = [
            pod("web-1", Some("web"), budget.clone(), true),
            pod("web-2", Some("web"), budget.clone(), false),
            pod("db-1", Some("db"), json!({MAX_UNAVAILABLE: "2"}), true),
            pod("bare", None, json!({MAX_UNAVAILABLE: "many"}), true),
            pod("plain", Some("web"), json!({}), false),
        ];
        let refs: Vec<&Arc<Value>> = pods.iter().collect();
        // db wants 3 replicas and has one: two missing count as unavailable.
        let budgets = disruption_budgets(&refs, &HashMap::from([("db", 3), ("web", 2)]));
        let expected = |max_unavailable, unavailable| DisruptionBudget {
            max_unavailable,
            unavailable,
        };
        assert_eq!(
            budgets,
            BTreeMap::from([
                ("web".to_owned(), expected(1, 1)),
                ("db".to_owned(), expected(2, 2)),
                ("uid-bare".to_owned(), expected(0, 0)),
            ])
        );
        let instance = placed_instance(&pods[0]);
        assert_eq!(instance.id, "default/web-1");
        assert_eq!(instance.priority, 3);
        assert_eq!(instance.disruption_budget.as_deref(), Some("web"));
        assert_eq!(placed_instance(&pods[4]).disruption_budget, None);
    }

    #[test]
    fn priorities_are_clamped_to_i32() {
        assert_eq!(priority(&json!({"spec": {"priority": -5}})), -5);
        assert_eq!(
            priority(&json!({"spec": {"priority": 1i64 << 40}})),
            i32::MAX
        );
        assert_eq!(
            priority(&json!({"spec": {"priority": -(1i64 << 40)}})),
            i32::MIN
        );
        assert_eq!(priority(&json!({"spec": {}})), 0);
    }

    #[test]
    fn a_nominated_preemptor_waits_while_its_victims_remain() {
        let mut preemptor = (*pod("urgent", None, json!({}), false)).clone();
        assert!(nominate(&mut preemptor, "n1", &["uid-a", "uid-b"]));
        assert_eq!(preemptor["status"]["nominatedNodeName"], "n1");
        let scheduled = crate::pods::condition(&preemptor, "PodScheduled").unwrap();
        assert_eq!(scheduled["reason"], "Preempting");
        assert_eq!(scheduled["message"], "preempting 2 instance(s) on n1");
        assert!(awaiting_victims(
            &preemptor,
            &HashSet::from(["uid-b", "uid-x"])
        ));
        assert!(!awaiting_victims(&preemptor, &HashSet::from(["uid-x"])));
        clear_nomination(&mut preemptor);
        assert!(preemptor["status"]["nominatedNodeName"].is_null());
        assert!(!awaiting_victims(&preemptor, &HashSet::from(["uid-a"])));
        preemptor["spec"]["nodeName"] = json!("n2");
        assert!(
            !nominate(&mut preemptor, "n1", &["uid-a"]),
            "bound meanwhile"
        );
    }
}
