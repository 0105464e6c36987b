//! The DaemonSet controller (`apps/v1` DaemonSet): one pod on every node
//! the pod template fits, following nodes as they join and leave.
//!
//! A node fits when the template's `nodeSelector`, required node affinity
//! and tolerations (with the tolerations Kubernetes adds to daemon pods:
//! not-ready, unreachable, pressure, unschedulable) let it run there, judged
//! by the scheduler's own filters. Each daemon pod gets, as in Kubernetes,
//! a required node affinity on its node's name and is then bound by the
//! scheduler. Pods of an older template are replaced under
//! `RollingUpdate` (at most `maxUnavailable` unavailable at once, default
//! 1; with `maxSurge`, up to that many nodes at once get the new pod
//! beside the old one, which goes once the new one is ready) or left until
//! deleted under `OnDelete`. Failed pods are replaced.
//!
//! What it decides is a pure function of the DaemonSet, the nodes and its
//! pods ([`plan`]); [`reconcile`] carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use c4m_sched::{
    Filter, NODE_NAME_FIELD, NodeSelector, NodeView, RequiredNodeAffinity, Resources,
    TaintToleration,
};
use serde_json::{Value, json};

use super::latest;
use super::workload::template_hash;
use crate::Result;
use crate::cache::{Cache, Changes, ROOT};
use crate::objects::{Objects, kind, name_of, namespace_of, random_suffix};
use crate::pods::{is_ready, phase};
use crate::scheduler::request::{UNSCHEDULABLE_TAINT, node_info, request};

/// The label holding the hash of the template a daemon pod was made from.
const REVISION_HASH: &str = "controller-revision-hash";
/// The label holding the DaemonSet generation a pod was made at.
const TEMPLATE_GENERATION: &str = "pod-template-generation";
/// Who records the controller's Events.
const COMPONENT: &str = "daemonset-controller";

/// The tolerations Kubernetes adds to every daemon pod, so that daemons
/// stay on nodes that are unhealthy or cordoned.
fn daemon_tolerations() -> Vec<Value> {
    let exists =
        |key: &str, effect: &str| json!({"key": key, "operator": "Exists", "effect": effect});
    vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists(UNSCHEDULABLE_TAINT, "NoSchedule"),
    ]
}

/// The pod `daemon_set` runs on `node` (before it is named): the template
/// with the daemon tolerations and a required affinity on the node's name.
fn daemon_pod(daemon_set: &Value, node: &str, hash: &str) -> Value {
    let template = &daemon_set["spec"]["template"];
    let mut metadata = super::object_field(template, "metadata");
    let mut spec = super::object_field(template, "spec");
    for field in ["labels", "annotations"] {
        if !metadata[field].is_object() {
            metadata[field] = json!({});
        }
    }
    let generation = daemon_set["metadata"]["generation"].as_i64().unwrap_or(1);
    metadata["labels"][REVISION_HASH] = json!(hash);
    metadata["labels"][TEMPLATE_GENERATION] = json!(generation.to_string());
    metadata["name"] = json!(format!("{}-{}", name_of(daemon_set), random_suffix()));
    metadata["namespace"] = json!(namespace_of(daemon_set));
    metadata["ownerReferences"] = json!([{
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "name": name_of(daemon_set),
        "uid": daemon_set["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    let mut tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for toleration in daemon_tolerations() {
        if !tolerations.contains(&toleration) {
            tolerations.push(toleration);
        }
    }
    spec["tolerations"] = json!(tolerations);
    // Kubernetes replaces the node-name terms of the required affinity
    // with its own; every term must name the node.
    let name_term = json!({"key": NODE_NAME_FIELD, "operator": "In", "values": [node]});
    let required =
        &mut spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let mut terms: Vec<Value> = required["nodeSelectorTerms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if terms.is_empty() {
        terms.push(json!({}));
    }
    for term in &mut terms {
        term["matchFields"] = json!([name_term]);
    }
    *required = json!({"nodeSelectorTerms": terms});
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": "Pending"},
    })
}

/// Whether the daemon pod of `daemon_set` may run on `node`.
fn fits(daemon_set: &Value, node: &Value) -> bool {
    let pod = daemon_pod(daemon_set, name_of(node), "");
    let Ok(request) = request(&pod) else {
        return false;
    };
    let info = node_info(node);
    let view = NodeView {
        info: &info,
        used: &Resources::default(),
        host_ports_in_use: &BTreeMap::new(),
    };
    let filters: [&dyn Filter; 3] = [&NodeSelector, &RequiredNodeAffinity, &TaintToleration];
    filters
        .iter()
        .all(|filter| filter.unfit_reasons(&request, &view).is_empty())
}

/// The node a daemon pod is for: its binding, else its affinity.
fn target_node(pod: &Value) -> Option<&str> {
    if let Some(node) = crate::pods::node_name(pod) {
        return Some(node);
    }
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"]
        .as_array()?
        .iter()
        .find(|field| field["key"] == NODE_NAME_FIELD)?["values"][0]
        .as_str()
}

/// What one reconcile of a DaemonSet does.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DaemonPlan {
    /// Nodes to create a daemon pod for.
    pub(crate) create: Vec<String>,
    /// Names of pods to delete.
    pub(crate) delete: Vec<String>,
    /// The DaemonSet's new `status`.
    pub(crate) status: Value,
}

/// `maxUnavailable` and `maxSurge` of a rolling update against `desired`
/// nodes (integers or percentages: unavailable rounded up, surge down, as
/// Kubernetes rounds them; defaults 1 and 0). At least one of them is at
/// least 1, as Kubernetes requires.
fn rolling_budget(daemon_set: &Value, desired: usize) -> (usize, usize) {
    let rolling = &daemon_set["spec"]["updateStrategy"]["rollingUpdate"];
    let amount = |value: &Value, default: usize, round_up: bool| match value {
        Value::Number(n) => n.as_u64().map_or(default, |n| n as usize),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<usize>().ok()) {
            Some(percent) if round_up => (desired * percent).div_ceil(100),
            Some(percent) => desired * percent / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    };
    let surge = amount(&rolling["maxSurge"], 0, false);
    let unavailable = amount(&rolling["maxUnavailable"], 1, true);
    match (unavailable, surge) {
        (0, 0) => (1, 0),
        budget => budget,
    }
}

/// Decides what `daemon_set` needs given every node and its pods.
pub(crate) fn plan(daemon_set: &Value, nodes: &[&Value], pods: &[&Value]) -> DaemonPlan {
    let hash = template_hash(&daemon_set["spec"]["template"]);
    let mut plan = DaemonPlan::default();
    let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for pod in pods {
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        if phase(pod) == "Failed" {
            plan.delete.push(name_of(pod).to_string());
            continue;
        }
        match target_node(pod) {
            Some(node) => by_node.entry(node).or_default().push(pod),
            None => plan.delete.push(name_of(pod).to_string()),
        }
    }
    let wanted: BTreeSet<&str> = nodes
        .iter()
        .filter(|node| fits(daemon_set, node))
        .map(|node| name_of(node))
        .collect();
    let is_current = |pod: &Value| pod["metadata"]["labels"][REVISION_HASH] == hash.as_str();
    let (mut scheduled, mut misscheduled, mut ready, mut updated) = (0, 0, 0, 0);
    let mut outdated: Vec<(&str, &Value)> = Vec::new();
    let mut unavailable = 0;
    // Nodes running a new pod beside the old one it is to replace.
    let mut surging = 0;
    let rolling = daemon_set["spec"]["updateStrategy"]["type"] != "OnDelete";
    let (unavailable_budget, surge_budget) = rolling_budget(daemon_set, wanted.len());
    for (node, node_pods) in &mut by_node {
        if !wanted.contains(node) {
            misscheduled += 1;
            plan.delete
                .extend(node_pods.iter().map(|p| name_of(p).to_string()));
            continue;
        }
        // One pod per node: the current, ready, oldest one stays.
        node_pods.sort_by_key(|p| {
            (
                !is_current(p),
                !is_ready(p),
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        });
        let (kept, mut extra) = node_pods.split_at(1);
        let pod = kept[0];
        let mut old_serves = false;
        // A surge in progress: the new pod not yet ready keeps the old,
        // ready one beside it; once it is ready the old one goes.
        if rolling
            && surge_budget > 0
            && is_current(pod)
            && !is_ready(pod)
            && let Some((old, rest)) = extra.split_first()
            && !is_current(old)
            && is_ready(old)
        {
            surging += 1;
            old_serves = true;
            extra = rest;
        }
        plan.delete
            .extend(extra.iter().map(|p| name_of(p).to_string()));
        scheduled += 1;
        if is_ready(pod) || old_serves {
            ready += 1;
        } else {
            unavailable += 1;
        }
        if is_current(pod) {
            updated += 1;
        } else {
            outdated.push((node, pod));
        }
    }
    for node in &wanted {
        if !by_node.contains_key(node) {
            plan.create.push(node.to_string());
            unavailable += 1;
        }
    }
    let desired = wanted.len();
    if rolling {
        // Not-ready outdated pods go first; a ready one gets its
        // replacement beside it while the surge allows, else goes while
        // the unavailable stay within maxUnavailable.
        outdated.sort_by_key(|(_, p)| is_ready(p));
        for (node, pod) in outdated {
            if is_ready(pod) {
                if surging < surge_budget {
                    surging += 1;
                    plan.create.push(node.to_string());
                    continue;
                }
                if unavailable >= unavailable_budget {
                    continue;
                }
                unavailable += 1;
            }
            plan.delete.push(name_of(pod).to_string());
        }
    }
    let mut status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": ready,
        "updatedNumberScheduled": updated,
        "observedGeneration": daemon_set["metadata"]["generation"].as_i64().unwrap_or(1),
    });
    let not_available = desired.saturating_sub(ready);
    if not_available > 0 {
        status["numberUnavailable"] = json!(not_available);
    }
    plan.status = status;
    plan
}

/// Reconciles the DaemonSets `changes` touch: each changed DaemonSet, the
/// controller of each changed pod, and every DaemonSet when a node changed
/// or on a resync.
pub(crate) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    changes: &Changes,
) -> Result<Option<i64>> {
    let nodes_changed = changes.changed.keys().any(|key| {
        key.strip_prefix(ROOT)
            .is_some_and(|k| k.starts_with("nodes/"))
    });
    let touched = super::touched_owners(
        cache,
        changes,
        "daemonsets",
        "pods",
        changes.everything || nodes_changed,
    );
    if touched.is_empty() {
        return Ok(None);
    }
    let nodes = cache.list(kind("nodes"), None);
    let nodes = &nodes;
    super::reconcile_each("daemonsets", touched, |key| async move {
        reconcile_daemon_set(objects, cache, nodes, &key)
            .await
            .inspect_err(|e| tracing::warn!(daemonset = %key, error = %e, "cannot reconcile"))
    })
    .await
}

async fn reconcile_daemon_set(
    objects: &Objects,
    cache: &Cache,
    nodes: &[Arc<Value>],
    key: &str,
) -> Result<Option<i64>> {
    let (daemon_set, mine, mut written) = super::owner_and_pods(objects, cache, key).await;
    let Some(daemon_set) = daemon_set else {
        return Ok(written);
    };
    let nodes: Vec<&Value> = nodes.iter().map(|n| n.as_ref()).collect();
    let mine: Vec<&Value> = mine.iter().map(|p| p.as_ref()).collect();
    let plan = plan(&daemon_set, &nodes, &mine);
    let hash = template_hash(&daemon_set["spec"]["template"]);
    let pods = plan
        .create
        .iter()
        .map(|node| daemon_pod(&daemon_set, node, &hash))
        .collect();
    written = latest(
        written,
        super::create_pods(objects, &daemon_set, pods, COMPONENT).await?,
    );
    written = latest(
        written,
        super::delete_pods(objects, &daemon_set, &plan.delete, COMPONENT).await?,
    );
    written = latest(
        written,
        super::write_status(objects, "daemonsets", &daemon_set, &plan.status).await?,
    );
    Ok(written)
}

#[cfg(test)]
mod tests;
