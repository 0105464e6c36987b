//! The StatefulSet controller (`apps/v1` StatefulSet): pods with stable
//! names (`<set>-<ordinal>`), stable storage (one claim per
//! `volumeClaimTemplates` entry and ordinal, `<template>-<set>-<ordinal>`)
//! and, under `OrderedReady`, one change at a time in ordinal order.
//!
//! As in Kubernetes:
//! - each pod gets `spec.hostname` = its name and `spec.subdomain` =
//!   `spec.serviceName`, the labels `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index` and `controller-revision-hash` (the name
//!   of the ControllerRevision it was made from), and a
//!   `persistentVolumeClaim` volume per claim template;
//! - a pod's missing claims are created before it (in the same
//!   transaction), and never deleted by the controller: their owner
//!   references follow `persistentVolumeClaimRetentionPolicy`
//!   (`whenDeleted: Delete` makes the set an owner, so the garbage collector
//!   deletes them with it; `whenScaled: Delete` makes a scaled-down pod the
//!   owner of its claims just before it is deleted);
//! - `OrderedReady` creates ordinal N only once 0..N are Running and Ready
//!   (and available for `minReadySeconds`), scales down from the highest
//!   ordinal one pod at a time, and waits while any pod is unhealthy;
//!   `Parallel` creates and deletes all at once;
//! - the template's versions are ControllerRevisions `<set>-<hash>`
//!   (`revisionHistoryLimit` unused ones kept); `RollingUpdate` deletes the
//!   pods of an older revision from the highest ordinal down to
//!   `partition`, one at a time, each once the ones above it are healthy;
//!   `OnDelete` waits for the user to delete them;
//! - failed pods are deleted and so recreated.
//!
//! What it decides is a pure function of the set, its pods, revisions and
//! claims, and the time ([`plan`]); [`StatefulSetController::reconcile`]
//! carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::latest;
use super::workload::template_hash;
use crate::Result;
use crate::cache::{Cache, ChangeFeed, Changes, ROOT};
use crate::deletion::is_deleting;
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{is_ready, is_terminal, phase, stable_hash};

/// The label naming the ControllerRevision a pod was made from.
pub(crate) const REVISION_LABEL: &str = "controller-revision-hash";
/// The label holding a pod's own name.
pub(crate) const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub(crate) const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Who records the controller's Events.
const COMPONENT: &str = "statefulset-controller";
/// Unused revisions kept when the set says nothing.
const DEFAULT_HISTORY_LIMIT: usize = 10;

/// Defaults a new StatefulSet as Kubernetes' API server does (what
/// `kubectl rollout status` and `kubectl describe` read): one replica,
/// `OrderedReady`, `RollingUpdate` from partition 0, ten revisions kept,
/// claims retained.
pub(crate) fn default_new_stateful_set(set: &mut Value) {
    let Some(spec) = set.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut default = |field: &str, value: Value| {
        if spec.get(field).is_none_or(Value::is_null) {
            spec.insert(field.into(), value);
        }
    };
    default("replicas", json!(1));
    default("podManagementPolicy", json!("OrderedReady"));
    default("revisionHistoryLimit", json!(DEFAULT_HISTORY_LIMIT));
    default("updateStrategy", json!({}));
    default("persistentVolumeClaimRetentionPolicy", json!({}));
    let strategy = &mut spec["updateStrategy"];
    if strategy["type"].is_null() {
        strategy["type"] = json!("RollingUpdate");
    }
    if strategy["type"] == "RollingUpdate" && strategy["rollingUpdate"]["partition"].is_null() {
        strategy["rollingUpdate"]["partition"] = json!(0);
    }
    let retention = &mut spec["persistentVolumeClaimRetentionPolicy"];
    for field in ["whenDeleted", "whenScaled"] {
        if retention[field].is_null() {
            retention[field] = json!("Retain");
        }
    }
}

/// The spec fields of a StatefulSet an update may change (Kubernetes').
const UPDATABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// Refuses an update of a StatefulSet (both defaulted) that changes other
/// spec fields than [`UPDATABLE`], in Kubernetes' words.
pub(crate) fn check_update(current: &Value, updated: &Value) -> std::result::Result<(), String> {
    let fixed = |set: &Value| -> Vec<(String, Value)> {
        set["spec"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(field, value)| !UPDATABLE.contains(&field.as_str()) && !value.is_null())
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect()
    };
    if fixed(current) == fixed(updated) {
        return Ok(());
    }
    Err(
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', \
        'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', \
        'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
            .to_string(),
    )
}

/// The name of the claim of `template` for ordinal `ordinal` of `set`.
pub(crate) fn claim_name(template: &str, set: &str, ordinal: u64) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The ordinal of a pod of `set` named `pod`, if it is one of its names.
fn ordinal_of(set: &str, pod: &str) -> Option<u64> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// `spec.replicas` (default 1) and `spec.ordinals.start` (default 0).
fn ordinal_range(set: &Value) -> std::ops::Range<u64> {
    let replicas = set["spec"]["replicas"].as_u64().unwrap_or(1);
    let start = set["spec"]["ordinals"]["start"].as_u64().unwrap_or(0);
    start..start + replicas
}

/// The controller reference a set puts on its pods and revisions.
fn controller_reference(set: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": name_of(set),
        "uid": set["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The `data` of a ControllerRevision holding `template`: the patch that
/// restores it, as Kubernetes writes it.
fn revision_data(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The pod template a ControllerRevision holds.
fn revision_template(revision: &Value) -> Value {
    let mut template = revision["data"]["spec"]["template"].clone();
    if let Some(map) = template.as_object_mut() {
        map.remove("$patch");
    }
    template
}

/// The revision name of `template` after `collisions` name collisions.
fn revision_name(set: &str, template: &Value, collisions: u64) -> String {
    let hash = template_hash(template);
    let hash = match collisions {
        0 => hash,
        n => stable_hash(format!("{hash}/{n}").as_bytes()),
    };
    format!("{set}-{hash}")
}

/// The `persistentVolumeClaimRetentionPolicy` field `field` deletes.
fn retention_deletes(set: &Value, field: &str) -> bool {
    set["spec"]["persistentVolumeClaimRetentionPolicy"][field] == "Delete"
}

/// The claim templates' names, in order.
fn claim_templates(set: &Value) -> Vec<&Value> {
    set["spec"]["volumeClaimTemplates"]
        .as_array()
        .map(|all| all.iter().filter(|t| !name_of(t).is_empty()).collect())
        .unwrap_or_default()
}

/// The claim of `template` for `ordinal` of `set`, as it is created.
fn new_claim(set: &Value, template: &Value, ordinal: u64) -> Value {
    let mut metadata = super::object_field(template, "metadata");
    if !metadata["labels"].is_object() {
        metadata["labels"] = json!({});
    }
    for (key, value) in set["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        metadata["labels"][key] = value.clone();
    }
    metadata["name"] = json!(claim_name(name_of(template), name_of(set), ordinal));
    metadata["namespace"] = json!(namespace_of(set));
    for generated in ["uid", "resourceVersion", "creationTimestamp"] {
        if let Some(m) = metadata.as_object_mut() {
            m.remove(generated);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": template["spec"],
    })
}

/// The pod of `set` for `ordinal`, made from `template` of revision
/// `revision`.
pub(crate) fn new_pod(set: &Value, template: &Value, revision: &str, ordinal: u64) -> Value {
    let set_name = name_of(set);
    let name = format!("{set_name}-{ordinal}");
    let mut metadata = super::object_field(template, "metadata");
    let mut spec = super::object_field(template, "spec");
    if !metadata["labels"].is_object() {
        metadata["labels"] = json!({});
    }
    metadata["labels"][POD_NAME_LABEL] = json!(name);
    metadata["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
    metadata["labels"][REVISION_LABEL] = json!(revision);
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(namespace_of(set));
    metadata["ownerReferences"] = json!([controller_reference(set)]);
    spec["hostname"] = json!(name);
    if let Some(service) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(service);
    }
    let mut volumes: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
    for claim_template in claim_templates(set) {
        let volume = name_of(claim_template);
        let claim = json!({"name": volume, "persistentVolumeClaim": {
            "claimName": claim_name(volume, set_name, ordinal)}});
        match volumes.iter_mut().find(|v| v["name"] == volume) {
            Some(existing) => *existing = claim,
            None => volumes.push(claim),
        }
    }
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": "Pending"},
    })
}

/// Running with its Ready condition True.
fn running_and_ready(pod: &Value) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

/// When `pod` has been ready for `min_ready`: None when it is not ready
/// (or its Ready condition has no time, in which case it counts from now).
fn available_at(pod: &Value, min_ready: Duration, now: SystemTime) -> Option<SystemTime> {
    if !running_and_ready(pod) {
        return None;
    }
    if min_ready.is_zero() {
        return Some(now);
    }
    let since = crate::pods::condition(pod, "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(c4m_core::parse_rfc3339)
        .unwrap_or(now);
    Some(since + min_ready)
}

fn revision_of_pod(pod: &Value) -> &str {
    pod["metadata"]["labels"][REVISION_LABEL]
        .as_str()
        .unwrap_or_default()
}

/// What one reconcile of a StatefulSet does, in this order.
#[derive(Debug, Default)]
pub(crate) struct SetPlan {
    /// A ControllerRevision to create (the update revision, new).
    pub(crate) revision: Option<Value>,
    /// Claims to create, each before the pod that needs it.
    pub(crate) claims: Vec<Value>,
    /// New owner references for existing claims (by name).
    pub(crate) claim_owners: Vec<(String, Value)>,
    /// Pods to create.
    pub(crate) create: Vec<Value>,
    /// Names of pods to delete.
    pub(crate) delete: Vec<String>,
    /// Names of unused ControllerRevisions beyond the history limit.
    pub(crate) prune: Vec<String>,
    /// The set's new `status`.
    pub(crate) status: Value,
    /// When to look again although nothing changes (`minReadySeconds`).
    pub(crate) wake_at: Option<SystemTime>,
}

/// What [`plan`] decides from.
pub(crate) struct SetView<'a> {
    pub(crate) set: &'a Value,
    /// The pods the set controls.
    pub(crate) pods: Vec<&'a Value>,
    /// The ControllerRevisions the set controls.
    pub(crate) revisions: Vec<&'a Value>,
    /// The claims of the set's namespace, by name.
    pub(crate) claims: BTreeMap<&'a str, &'a Value>,
    pub(crate) now: SystemTime,
}

/// The set's revisions: (current name, update name, the update revision to
/// create if new, the collision count).
fn revisions(view: &SetView) -> (String, String, Option<Value>, u64) {
    let set = view.set;
    let template = &set["spec"]["template"];
    let hash = template_hash(template);
    let mut collisions = set["status"]["collisionCount"].as_u64().unwrap_or(0);
    let by_name: BTreeMap<&str, &Value> = view.revisions.iter().map(|r| (name_of(r), *r)).collect();
    // A name taken by another template is a collision: the next name.
    let update = loop {
        let name = revision_name(name_of(set), template, collisions);
        match by_name.get(name.as_str()) {
            Some(existing) if template_hash(&revision_template(existing)) != hash => {
                collisions += 1;
            }
            _ => break name,
        }
    };
    let created = (!by_name.contains_key(update.as_str())).then(|| {
        let number = view
            .revisions
            .iter()
            .filter_map(|r| r["revision"].as_i64())
            .max()
            .unwrap_or(0)
            + 1;
        let labels = template["metadata"]["labels"].clone();
        json!({
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": update,
                "namespace": namespace_of(set),
                "labels": if labels.is_object() { labels } else { json!({}) },
                "ownerReferences": [controller_reference(set)],
            },
            "data": revision_data(template),
            "revision": number,
        })
    });
    let current = set["status"]["currentRevision"]
        .as_str()
        .filter(|c| *c == update || by_name.contains_key(c))
        .unwrap_or(&update)
        .to_string();
    (current, update, created, collisions)
}

/// The owner references `claim` (of `ordinal`) should have, as
/// Kubernetes sets them: its others, and its pod's when `whenScaled:
/// Delete` and the ordinal is scaled away, else the set's when
/// `whenDeleted: Delete`.
fn claim_references(
    set: &Value,
    claim: &Value,
    ordinal: u64,
    pod: Option<&Value>,
    condemned: bool,
) -> Value {
    let set_uid = &set["metadata"]["uid"];
    let pod_name = format!("{}-{ordinal}", name_of(set));
    let mut references: Vec<Value> = claim["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["uid"] != *set_uid && !(r["kind"] == "Pod" && r["name"] == pod_name.as_str()))
        .cloned()
        .collect();
    // A scaled-away pod alone owns its claims (the set would keep them
    // alive, the collector deleting only what has no owner left).
    match pod.filter(|_| condemned && retention_deletes(set, "whenScaled")) {
        Some(pod) => references.push(json!({"apiVersion": "v1", "kind": "Pod",
            "name": pod_name, "uid": pod["metadata"]["uid"]})),
        None if retention_deletes(set, "whenDeleted") => {
            references.push(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "name": name_of(set), "uid": set_uid}));
        }
        None => {}
    }
    json!(references)
}

/// Decides what the set needs.
pub(crate) fn plan(view: &SetView) -> SetPlan {
    let set = view.set;
    let set_name = name_of(set);
    let now = view.now;
    let mut plan = SetPlan::default();
    let (current, update, created, collisions) = revisions(view);
    let range = ordinal_range(set);
    let monotonic = set["spec"]["podManagementPolicy"] != "Parallel";
    let rolling = set["spec"]["updateStrategy"]["type"] != "OnDelete";
    let partition = set["spec"]["updateStrategy"]["rollingUpdate"]["partition"].as_u64();
    let min_ready = Duration::from_secs(set["spec"]["minReadySeconds"].as_u64().unwrap_or(0));
    let mut pods: BTreeMap<u64, &Value> = BTreeMap::new();
    for pod in &view.pods {
        if let Some(ordinal) = ordinal_of(set_name, name_of(pod)) {
            pods.insert(ordinal, pod);
        }
    }
    let healthy =
        |pod: &Value, wake_at: &mut Option<SystemTime>| match available_at(pod, min_ready, now) {
            Some(at) if at <= now => true,
            Some(at) => {
                *wake_at = Some(wake_at.map_or(at, |w: SystemTime| w.min(at)));
                false
            }
            None => false,
        };
    // The revision a new pod of `ordinal` gets (Kubernetes': below the
    // partition, or below the current replicas without one, the current).
    let current_replicas = set["status"]["currentReplicas"].as_u64().unwrap_or(0);
    let revision_for = |ordinal: u64| {
        let index = ordinal - range.start;
        let keeps_current = rolling
            && match partition {
                Some(p) => index < p,
                None => index < current_replicas,
            };
        if keeps_current { &current } else { &update }
    };
    let template_of = |revision: &str| {
        if revision == update {
            return set["spec"]["template"].clone();
        }
        view.revisions
            .iter()
            .find(|r| name_of(r) == revision)
            .map_or_else(|| set["spec"]["template"].clone(), |r| revision_template(r))
    };
    let templates = claim_templates(set);
    // Claims first: their owners as the retention policy says; those a
    // pod of the range lacks are created.
    for ordinal in range.start..range.end.max(pods.keys().next_back().map_or(0, |o| o + 1)) {
        let pod = pods.get(&ordinal).copied();
        let condemned = !range.contains(&ordinal);
        // A scaled-away ordinal's claims are left as its pod left them
        // (owned by it, the collector deletes them; else kept).
        if condemned && pod.is_none() {
            continue;
        }
        for template in &templates {
            let name = claim_name(name_of(template), set_name, ordinal);
            let Some(claim) = view.claims.get(name.as_str()) else {
                continue;
            };
            let references = claim_references(set, claim, ordinal, pod, condemned);
            let current_refs = &claim["metadata"]["ownerReferences"];
            let unchanged =
                references == *current_refs || (references == json!([]) && current_refs.is_null());
            if !unchanged && !is_deleting(claim) {
                plan.claim_owners.push((name, references));
            }
        }
    }
    let mut blocked = false;
    for ordinal in range.clone() {
        match pods.get(&ordinal) {
            None => {
                let before = plan.claims.len();
                if add_missing_claims(view, &templates, ordinal, &mut plan.claims) {
                    plan.claims.truncate(before);
                    blocked = monotonic;
                } else {
                    let revision = revision_for(ordinal);
                    plan.create
                        .push(new_pod(set, &template_of(revision), revision, ordinal));
                    blocked = monotonic;
                }
            }
            Some(pod) if is_terminal(pod) && !is_deleting(pod) => {
                plan.delete.push(name_of(pod).to_string());
                blocked = monotonic;
            }
            Some(pod) => {
                add_missing_claims(view, &templates, ordinal, &mut plan.claims);
                if is_deleting(pod) || !healthy(pod, &mut plan.wake_at) {
                    blocked = monotonic;
                }
            }
        }
        if blocked {
            break;
        }
    }
    if !blocked {
        let condemned: Vec<&Value> = pods
            .iter()
            .filter(|(ordinal, _)| !range.contains(ordinal))
            .map(|(_, pod)| *pod)
            .collect();
        let first_unhealthy = condemned
            .iter()
            .find(|p| is_deleting(p) || !running_and_ready(p))
            .map(|p| name_of(p));
        for pod in condemned.iter().rev() {
            if is_deleting(pod) {
                if monotonic {
                    blocked = true;
                    break;
                }
                continue;
            }
            if monotonic && first_unhealthy.is_some_and(|first| first != name_of(pod)) {
                blocked = true;
                break;
            }
            plan.delete.push(name_of(pod).to_string());
            if monotonic {
                blocked = true;
                break;
            }
        }
    }
    if !blocked && rolling {
        let lowest = range.start + partition.unwrap_or(0);
        for ordinal in range.clone().rev().filter(|o| *o >= lowest) {
            let Some(pod) = pods.get(&ordinal) else {
                break;
            };
            if revision_of_pod(pod) != update && !is_deleting(pod) {
                plan.delete.push(name_of(pod).to_string());
                break;
            }
            if !healthy(pod, &mut plan.wake_at) {
                break;
            }
        }
    }
    plan.status = status(view, &pods, &plan, &current, &update, collisions, rolling);
    let current = plan.status["currentRevision"].as_str().unwrap_or(&current);
    plan.prune = prunable(view, &pods, current, &update);
    plan.revision = created;
    plan
}

/// Adds to `claims` those of `ordinal` that do not exist; true when one is
/// being deleted (it is not reused: its pod waits for it to go).
fn add_missing_claims(
    view: &SetView,
    templates: &[&Value],
    ordinal: u64,
    claims: &mut Vec<Value>,
) -> bool {
    let mut waiting = false;
    for template in templates {
        let name = claim_name(name_of(template), name_of(view.set), ordinal);
        match view.claims.get(name.as_str()) {
            None => claims.push(new_claim(view.set, template, ordinal)),
            Some(claim) if is_deleting(claim) => waiting = true,
            Some(_) => {}
        }
    }
    waiting
}

/// The set's `status` from its pods as they are, with the pods `plan`
/// creates and deletes counted as Kubernetes counts them (a pod deleted
/// leaves the revision counts at once; a pod created joins them), so that
/// a replacement made before the next status sees the right revision.
fn status(
    view: &SetView,
    pods: &BTreeMap<u64, &Value>,
    plan: &SetPlan,
    current: &str,
    update: &str,
    collisions: u64,
    rolling: bool,
) -> Value {
    let set = view.set;
    let min_ready = Duration::from_secs(set["spec"]["minReadySeconds"].as_u64().unwrap_or(0));
    let (mut ready, mut available, mut on_current, mut on_update) = (0, 0, 0, 0);
    for pod in pods.values() {
        if running_and_ready(pod) {
            ready += 1;
        }
        if available_at(pod, min_ready, view.now).is_some_and(|at| at <= view.now) {
            available += 1;
        }
        if !is_deleting(pod) {
            on_current += usize::from(revision_of_pod(pod) == current);
            on_update += usize::from(revision_of_pod(pod) == update);
        }
    }
    let mut replicas = pods.len();
    for pod in pods.values() {
        if plan.delete.iter().any(|d| d == name_of(pod)) && !is_deleting(pod) {
            on_current -= usize::from(revision_of_pod(pod) == current);
            on_update -= usize::from(revision_of_pod(pod) == update);
        }
    }
    for pod in &plan.create {
        replicas += 1;
        on_current += usize::from(revision_of_pod(pod) == current);
        on_update += usize::from(revision_of_pod(pod) == update);
    }
    // A rolling update is complete once every pod is updated and ready.
    let (current, on_current) = if rolling && on_update == replicas && ready == replicas {
        (update, on_update)
    } else {
        (current, on_current)
    };
    json!({
        "observedGeneration": set["metadata"]["generation"].as_i64().unwrap_or(1),
        "replicas": replicas,
        "readyReplicas": ready,
        "currentReplicas": on_current,
        "updatedReplicas": on_update,
        "availableReplicas": available,
        "currentRevision": current,
        "updateRevision": update,
        "collisionCount": collisions,
    })
}

/// The unused revisions beyond `revisionHistoryLimit`, oldest first.
fn prunable(
    view: &SetView,
    pods: &BTreeMap<u64, &Value>,
    current: &str,
    update: &str,
) -> Vec<String> {
    let limit = view.set["spec"]["revisionHistoryLimit"]
        .as_u64()
        .map_or(DEFAULT_HISTORY_LIMIT, |l| l as usize);
    let used: BTreeSet<&str> = pods.values().map(|p| revision_of_pod(p)).collect();
    let mut unused: Vec<&Value> = view
        .revisions
        .iter()
        .copied()
        .filter(|r| {
            let name = name_of(r);
            name != current && name != update && !used.contains(name)
        })
        .collect();
    unused.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    let excess = unused.len().saturating_sub(limit);
    unused[..excess]
        .iter()
        .map(|r| name_of(r).to_string())
        .collect()
}

/// Runs StatefulSets, with the time from `clock` (`minReadySeconds`).
#[derive(Debug)]
pub(crate) struct StatefulSetController {
    clock: Arc<dyn Clock>,
    wakeups: super::Wakeups,
}

impl StatefulSetController {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> StatefulSetController {
        StatefulSetController {
            clock,
            wakeups: super::Wakeups::default(),
        }
    }

    /// Reconciles the StatefulSets `changes` touch: each changed set, the
    /// controller of each changed pod, every set on a resync.
    pub(crate) async fn reconcile(
        &self,
        objects: &Objects,
        cache: &Cache,
        changes: &Changes,
    ) -> Result<Option<i64>> {
        let touched =
            super::touched_owners(cache, changes, "statefulsets", "pods", changes.everything);
        super::reconcile_each("statefulsets", touched, |key| async move {
            self.reconcile_set(objects, cache, &key)
                .await
                .inspect_err(|e| tracing::warn!(statefulset = %key, error = %e, "cannot reconcile"))
        })
        .await
    }

    async fn reconcile_set(
        &self,
        objects: &Objects,
        cache: &Cache,
        key: &str,
    ) -> Result<Option<i64>> {
        let (set, mine, mut written) = super::owner_and_pods(objects, cache, key).await;
        let store_key = format!("{ROOT}{key}");
        let Some(set) = set.filter(|s| !is_deleting(s)) else {
            self.wakeups.set(&store_key, None);
            return Ok(written);
        };
        let namespace = namespace_of(&set);
        let uid = set["metadata"]["uid"].as_str();
        let revisions = cache.list(kind("controllerrevisions"), Some(namespace));
        let revisions: Vec<&Value> = revisions
            .iter()
            .map(|r| r.as_ref())
            .filter(|r| uid.is_some() && crate::pods::controller_uid(r) == uid)
            .collect();
        let claims = cache.list(kind("persistentvolumeclaims"), Some(namespace));
        let view = SetView {
            set: &set,
            pods: mine.iter().map(|p| p.as_ref()).collect(),
            revisions,
            claims: claims.iter().map(|c| (name_of(c), c.as_ref())).collect(),
            now: self.clock.now(),
        };
        let plan = plan(&view);
        self.wakeups.set(&store_key, plan.wake_at);
        written = latest(written, carry_out(objects, &set, plan).await?);
        Ok(written)
    }

    /// Puts the sets whose pods become available into `feed` when they do.
    pub(crate) async fn run_wakeups(
        self: Arc<Self>,
        feed: Arc<ChangeFeed>,
        tick: Duration,
        shutdown: CancellationToken,
    ) {
        self.wakeups
            .run(self.clock.as_ref(), &feed, tick, shutdown)
            .await;
    }
}

/// Writes what `plan` decided for `set`.
async fn carry_out(objects: &Objects, set: &Value, plan: SetPlan) -> Result<Option<i64>> {
    let set_name = name_of(set);
    let namespace = namespace_of(set);
    let mut written = None;
    if let Some(revision) = plan.revision {
        written = Some(
            objects
                .create_many(vec![(kind("controllerrevisions"), revision)])
                .await?,
        );
    }
    for (name, references) in &plan.claim_owners {
        let revision = objects
            .update_with(kind("persistentvolumeclaims"), namespace, name, |claim| {
                if claim["metadata"]["ownerReferences"] == *references {
                    return false;
                }
                claim["metadata"]["ownerReferences"] = references.clone();
                true
            })
            .await;
        match revision {
            Ok(revision) => written = latest(written, revision),
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // Each pod's claims come first, in the same transaction.
    if !plan.claims.is_empty() || !plan.create.is_empty() {
        let claim_names: Vec<String> = plan.claims.iter().map(|c| name_of(c).to_string()).collect();
        let pod_names: Vec<String> = plan.create.iter().map(|p| name_of(p).to_string()).collect();
        let mut batch: Vec<_> = plan
            .claims
            .into_iter()
            .map(|c| (kind("persistentvolumeclaims"), c))
            .collect();
        batch.extend(plan.create.into_iter().map(|p| (kind("pods"), p)));
        written = latest(written, Some(objects.create_many(batch).await?));
        for claim in claim_names {
            let pod = pod_names
                .iter()
                .find(|p| claim.ends_with(&format!("-{p}")))
                .map_or(String::new(), |p| format!(" Pod {p}"));
            objects.events().record(
                Regarding::of(set),
                EventType::Normal,
                "SuccessfulCreate",
                format!("create Claim {claim}{pod} in StatefulSet {set_name} success"),
                COMPONENT,
            );
        }
        for pod in pod_names {
            objects.events().record(
                Regarding::of(set),
                EventType::Normal,
                "SuccessfulCreate",
                format!("create Pod {pod} in StatefulSet {set_name} successful"),
                COMPONENT,
            );
        }
    }
    written = latest(
        written,
        super::delete_pods_saying(objects, set, &plan.delete, COMPONENT, |pod| {
            format!("delete Pod {pod} in StatefulSet {set_name} successful")
        })
        .await?,
    );
    for name in &plan.prune {
        let revision = json!({"metadata": {"name": name, "namespace": namespace}});
        written = latest(
            written,
            super::delete_object(objects, "controllerrevisions", &revision).await,
        );
    }
    written = latest(
        written,
        super::write_status(objects, "statefulsets", set, &plan.status).await?,
    );
    Ok(written)
}

#[cfg(test)]
mod tests;
