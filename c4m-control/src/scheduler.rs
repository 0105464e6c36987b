//! The scheduling loop: binds pending instances to nodes with `c4m-sched`.
//!
//! Each cycle takes one consistent snapshot from the cache (nodes and the
//! instances already bound), places every pending instance in priority order,
//! and writes all the binds in one transaction, each guarded by the
//! instance's resourceVersion. An instance that fits nowhere keeps
//! `PodScheduled=False` with the scheduler's reason, which `c4m describe` shows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use c4m_sched::{ClusterSnapshot, InstanceRequest, NodeInfo, Resources};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};

use crate::Result;
use crate::cache::Cache;
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{is_ready, is_terminal, labels, node_name, set_condition};

/// The scheduler's view of an instance's needs.
fn request(pod: &Value) -> std::result::Result<InstanceRequest, String> {
    let spec: PodSpec =
        serde_json::from_value(pod["spec"].clone()).map_err(|e| format!("spec: {e}"))?;
    let requests = c4m_core::pod_requests(&spec).map_err(|e| e.to_string())?;
    Ok(InstanceRequest {
        cpu_millis: requests.cpu_millis,
        memory_bytes: requests.memory_bytes,
        node_selector: spec.node_selector.unwrap_or_default(),
        driver: spec
            .runtime_class_name
            .unwrap_or_else(|| c4m_core::DEFAULT_DRIVER.to_string()),
    })
}

/// The scheduler's view of a node.
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
    NodeInfo {
        name: name_of(node).to_string(),
        allocatable: Resources {
            cpu_millis: quantity("cpu", c4m_core::parse_cpu_millis),
            memory_bytes: quantity("memory", c4m_core::parse_memory_bytes),
            instances: allocatable["pods"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .or_else(|| allocatable["pods"].as_u64())
                .unwrap_or(110),
        },
        labels: labels(node),
        drivers,
        ready: is_ready(node) && node["spec"]["unschedulable"] != true,
    }
}

fn priority(pod: &Value) -> i64 {
    pod["spec"]["priority"].as_i64().unwrap_or(0)
}

/// One scheduling cycle. Returns the revision of the binds, if any.
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
    for pod in pods.iter().filter(|p| !is_terminal(p)) {
        if let (Some(node), Ok(request)) = (node_name(pod), request(pod)) {
            snapshot.allocate(node, &request);
        }
    }
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
    for pod in pending {
        let placement = request(pod)
            .map_err(|e| format!("invalid instance: {e}"))
            .and_then(|request| {
                snapshot
                    .place(&request)
                    .map_err(|reason| reason.to_string())
            });
        match placement {
            Ok(node) => {
                let mut bound = (**pod).clone();
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
            Err(reason) => {
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
