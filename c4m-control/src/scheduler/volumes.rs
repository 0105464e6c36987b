//! The scheduler's volume rules, as Kubernetes' VolumeBinding plugin has
//! them, for the claims an instance uses (`persistentVolumeClaim` volumes,
//! and the `<pod>-<volume>` claim of each `ephemeral` one):
//!
//! - a claim that is missing or being deleted keeps the instance pending;
//! - a claim bound to a PersistentVolume with `nodeAffinity` limits the
//!   instance to the nodes it matches (`node(s) had volume node affinity
//!   conflict`);
//! - an unbound claim whose class binds `Immediate` (or that names no
//!   class) keeps it pending (`pod has unbound immediate
//!   PersistentVolumeClaims`): the volume controller provisions it first;
//! - an unbound `WaitForFirstConsumer` claim is provisioned where the
//!   instance goes: for c4m's local driver, only on a node whose last
//!   storage report has room for it after what other claims selected for
//!   it take (`node(s) did not have enough free storage`); once selected (annotation
//!   [`SELECTED_NODE`](c4m_core::volumes::SELECTED_NODE)), on that node only.
//!   The scheduler writes the annotation in the transaction that binds the
//!   instance ([`selecting`]).

use std::collections::{BTreeSet, HashMap};

use c4m_core::volumes::{LOCAL_DRIVER, SELECTED_NODE};
use c4m_sched::{NodeInfo, VolumeNodes};
use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use crate::cache::Cache;
use crate::objects::{kind, namespace_of};

/// What an instance's claims ask of its node.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct VolumeNeeds {
    /// Where the claims let it go.
    pub(crate) nodes: VolumeNodes,
    /// Unbound `WaitForFirstConsumer` claims (names, in its namespace) to
    /// provision on the node it is bound to.
    pub(crate) to_provision: Vec<String>,
    /// What those of them that are local take of that node's storage.
    pub(crate) local_bytes: u64,
}

/// The claims `pod` uses, by name, with whether each is an ephemeral
/// volume's ([`crate::controllers::volumes::claims_of_pod`]).
pub(crate) fn claims_of(pod: &Value) -> Vec<(String, bool)> {
    crate::controllers::volumes::claims_of_pod(pod)
        .into_iter()
        .map(|(_, claim, ephemeral)| (claim, ephemeral))
        .collect()
}

/// The nodes (of `nodes`) a PersistentVolume's required node affinity
/// matches; None when it has none.
fn affinity_nodes(volume: &Value, nodes: &[&NodeInfo]) -> Option<BTreeSet<String>> {
    let terms = &volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
    let terms: Vec<core::NodeSelectorTerm> = serde_json::from_value(terms.clone()).ok()?;
    let terms: Vec<c4m_sched::NodeSelectorTerm> = terms
        .iter()
        .filter_map(|term| super::request::node_selector_term(term).ok())
        .collect();
    Some(
        nodes
            .iter()
            .filter(|node| terms.iter().any(|t| t.matches(&node.name, &node.labels)))
            .map(|node| node.name.clone())
            .collect(),
    )
}

/// Keeps in `set` only what `other` has too (a first `other` is taken whole).
fn narrow(set: &mut Option<BTreeSet<String>>, other: BTreeSet<String>) {
    *set = Some(match set.take() {
        Some(current) => current.intersection(&other).cloned().collect(),
        None => other,
    });
}

/// What the claims of `pod` ask of its node, given `nodes` and each node's
/// local storage not yet reported used nor promised
/// ([`local_free_unpromised`](crate::controllers::volumes::local_free_unpromised));
/// Err with the message that keeps it pending. None when it uses no claim.
pub(crate) fn needs(
    pod: &Value,
    cache: &Cache,
    nodes: &[&NodeInfo],
    local_free: &HashMap<String, u64>,
) -> Result<Option<VolumeNeeds>, String> {
    let claims = claims_of(pod);
    if claims.is_empty() {
        return Ok(None);
    }
    let total = nodes.len();
    let namespace = namespace_of(pod);
    let mut needs = VolumeNeeds::default();
    // Local bytes to provision on a node not chosen yet.
    let mut local_bytes: Option<u64> = None;
    for (name, ephemeral) in claims {
        let Some(claim) = cache.get(kind("persistentvolumeclaims"), namespace, &name) else {
            return Err(if ephemeral {
                format!(
                    "waiting for ephemeral volume controller to create the persistentvolumeclaim {name:?}"
                )
            } else {
                format!("persistentvolumeclaim {name:?} not found")
            });
        };
        if crate::deletion::is_deleting(&claim) {
            return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
        }
        if let Some(volume_name) = claim["spec"]["volumeName"]
            .as_str()
            .filter(|v| !v.is_empty())
        {
            let Some(volume) = cache.get(kind("persistentvolumes"), "", volume_name) else {
                return Err(format!(
                    "0/{total} nodes are available: {total} node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)."
                ));
            };
            if let Some(allowed) = affinity_nodes(&volume, nodes) {
                narrow(&mut needs.nodes.affinity, allowed);
            }
            continue;
        }
        let class = claim["spec"]["storageClassName"]
            .as_str()
            .filter(|c| !c.is_empty())
            .and_then(|c| cache.get(kind("storageclasses"), "", c));
        let Some(class) = class.filter(|c| c["volumeBindingMode"] == "WaitForFirstConsumer") else {
            return Err(format!(
                "0/{total} nodes are available: pod has unbound immediate PersistentVolumeClaims."
            ));
        };
        let selected = claim["metadata"]["annotations"][SELECTED_NODE]
            .as_str()
            .map(str::to_string);
        if let Some(node) = &selected {
            narrow(&mut needs.nodes.storage, BTreeSet::from([node.clone()]));
        } else {
            needs.to_provision.push(name);
        }
        if class["provisioner"] == LOCAL_DRIVER && selected.is_none() {
            *local_bytes.get_or_insert(0) +=
                crate::controllers::volumes::requested_bytes(&claim).unwrap_or(0);
        }
    }
    if let Some(bytes) = local_bytes {
        let roomy: BTreeSet<String> = nodes
            .iter()
            .filter(|node| {
                local_free
                    .get(&node.name)
                    .is_some_and(|free| *free >= bytes)
            })
            .map(|node| node.name.clone())
            .collect();
        narrow(&mut needs.nodes.storage, roomy);
        needs.local_bytes = bytes;
    }
    Ok(Some(needs))
}

/// The claims `names` (of `namespace`) as cached, annotated with the node
/// chosen for them, for the bind's transaction; None when one changed
/// hands meanwhile (gone, bound, or selected for another node): the
/// instance waits for the next cycle.
pub(crate) fn selecting(
    cache: &Cache,
    namespace: &str,
    names: &[String],
    node: &str,
) -> Option<Vec<Value>> {
    names
        .iter()
        .map(|name| {
            let claim = cache.get(kind("persistentvolumeclaims"), namespace, name)?;
            let mut claim = std::sync::Arc::unwrap_or_clone(claim);
            if claim["spec"]["volumeName"]
                .as_str()
                .is_some_and(|v| !v.is_empty())
                || !claim["metadata"]["annotations"][SELECTED_NODE].is_null()
            {
                return None;
            }
            if !claim["metadata"]["annotations"].is_object() {
                claim["metadata"]["annotations"] = json!({});
            }
            claim["metadata"]["annotations"][SELECTED_NODE] = json!(node);
            Some(claim)
        })
        .collect()
}

#[cfg(test)]
mod tests;
