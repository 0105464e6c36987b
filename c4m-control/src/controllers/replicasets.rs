//! The ReplicaSets of Deployments, kept as Kubernetes keeps them: one per
//! pod template (named `DEPLOYMENT-HASH`, labelled `pod-template-hash`),
//! each with its revision (`deployment.kubernetes.io/revision`) and the
//! number of instances running its template, controlled by the Deployment.
//! They are what `kubectl rollout history|undo` and `kubectl describe
//! deployment` read: the undo patches a ReplicaSet's template back into the
//! Deployment, and the ReplicaSet that already holds that template becomes
//! the newest revision again, as in Kubernetes.
//!
//! The rolling replacement itself stays with the workload controller, which
//! creates and deletes a Deployment's instances directly (they are
//! controlled by the Deployment); a ReplicaSet records, it does not act.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use c4m_core::annotations;
use serde_json::{Value, json};

use super::latest;
use crate::Result;
use crate::cache::{Cache, controller_key};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{controller_uid, is_ready, is_terminal};

/// The annotation holding a ReplicaSet's (and its Deployment's) revision.
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label that tells the instances of one template apart.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revisions kept when `spec.revisionHistoryLimit` is not set.
const DEFAULT_HISTORY_LIMIT: usize = 10;
/// Deployment annotations a ReplicaSet does not copy (Kubernetes' list):
/// `kubectl rollout undo` copies the rest back into the Deployment.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The ReplicaSets in the cache by the key of the Deployment controlling
/// them (`deployments/NS/NAME`), built once per reconcile batch.
#[derive(Default)]
pub(crate) struct ReplicaSetIndex(HashMap<String, Vec<Arc<Value>>>);

impl ReplicaSetIndex {
    /// Indexes every ReplicaSet of the cache.
    pub(crate) fn build(cache: &Cache) -> ReplicaSetIndex {
        let mut index: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for replica_set in cache.list(kind("replicasets"), None) {
            if let Some(key) = controller_key(&replica_set) {
                index.entry(key).or_default().push(replica_set);
            }
        }
        ReplicaSetIndex(index)
    }

    /// The keys of every Deployment that controls a ReplicaSet (some may
    /// be gone: their ReplicaSets are garbage).
    pub(crate) fn deployment_keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// The ReplicaSets controlled by the Deployment `key` names (any uid).
    pub(crate) fn of(&self, key: &str) -> &[Arc<Value>] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }
}

/// A ReplicaSet's revision (0 when it has none).
fn revision_of(replica_set: &Value) -> u64 {
    replica_set["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn hash_of(replica_set: &Value) -> &str {
    replica_set["metadata"]["labels"][POD_TEMPLATE_HASH]
        .as_str()
        .unwrap_or_default()
}

/// Deletes the ReplicaSets of `replica_sets` not controlled by
/// `deployment_uid` (the Deployment is gone, or was recreated).
pub(crate) async fn collect_garbage(
    objects: &Objects,
    replica_sets: &[Arc<Value>],
    deployment_uid: Option<&str>,
) -> Option<i64> {
    let mut written = None;
    for replica_set in replica_sets {
        if deployment_uid.is_some() && controller_uid(replica_set) == deployment_uid {
            continue;
        }
        written = latest(written, delete(objects, replica_set).await);
    }
    written
}

async fn delete(objects: &Objects, replica_set: &Value) -> Option<i64> {
    super::delete_object(objects, "replicasets", replica_set).await
}

/// The pod template and template hash of the newest ReplicaSet (highest
/// revision) the Deployment `uid` controls: what a paused Deployment runs.
pub(crate) fn newest(replica_sets: &[Arc<Value>], uid: &str) -> Option<(Value, String)> {
    let newest = replica_sets
        .iter()
        .filter(|rs| controller_uid(rs) == Some(uid))
        .max_by_key(|rs| revision_of(rs))?;
    Some((
        newest["spec"]["template"].clone(),
        hash_of(newest).to_string(),
    ))
}

/// What [`sync`] needs of a Deployment.
pub(crate) struct DeploymentView<'a> {
    /// The Deployment as stored.
    pub object: &'a Value,
    /// Its uid.
    pub uid: &'a str,
    /// Its pod template (`metadata` + `spec`).
    pub template: &'a Value,
    /// The hash of that template.
    pub hash: &'a str,
    /// `spec.replicas`.
    pub replicas: usize,
}

/// Instances of one template: active and ready.
#[derive(Default, Clone, Copy)]
struct Counts {
    active: usize,
    ready: usize,
}

/// Brings the ReplicaSets of a Deployment in line with its instances: the
/// current template's ReplicaSet exists and holds the highest revision, each
/// counts the instances of its template, and revisions beyond
/// `spec.revisionHistoryLimit` that run nothing are deleted. Returns the
/// last revision written and the Deployment's revision.
pub(crate) async fn sync(
    objects: &Objects,
    deployment: &DeploymentView<'_>,
    pods: &[Arc<Value>],
    replica_sets: &[Arc<Value>],
) -> Result<(Option<i64>, u64)> {
    let mine: Vec<&Arc<Value>> = replica_sets
        .iter()
        .filter(|rs| controller_uid(rs) == Some(deployment.uid))
        .collect();
    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !is_terminal(p)) {
        let hash = pod["metadata"]["annotations"][annotations::TEMPLATE_HASH]
            .as_str()
            .unwrap_or_default();
        let entry = counts.entry(hash).or_default();
        entry.active += 1;
        entry.ready += usize::from(is_ready(pod));
    }
    let count = |hash: &str| counts.get(hash).copied().unwrap_or_default();
    let current = mine.iter().find(|rs| hash_of(rs) == deployment.hash);
    let highest_other = mine
        .iter()
        .filter(|rs| hash_of(rs) != deployment.hash)
        .map(|rs| revision_of(rs))
        .max()
        .unwrap_or(0);
    let revision = match current {
        Some(rs) if revision_of(rs) > highest_other => revision_of(rs),
        _ => highest_other + 1,
    };
    let mut written = None;
    if current.is_none() {
        let created = new_replica_set(deployment, revision, count(deployment.hash));
        let existing = objects
            .get(
                kind("replicasets"),
                namespace_of(&created),
                name_of(&created),
            )
            .await;
        let write = match existing {
            // Orphaned by an earlier Deployment of this name and template
            // (`delete --cascade=orphan`): adopted, as Kubernetes does.
            Ok(_) => adopt(objects, &created).await?,
            Err(crate::Error::NotFound { .. }) => Some(
                objects
                    .create_many(vec![(kind("replicasets"), created)])
                    .await?,
            ),
            Err(e) => return Err(e),
        };
        written = latest(written, write);
    }
    for rs in &mine {
        let hash = hash_of(rs);
        let desired = if hash == deployment.hash {
            deployment.replicas
        } else {
            0
        };
        let current = (hash == deployment.hash).then_some((deployment.object, revision));
        written = latest(
            written,
            update_counts(objects, rs, desired, count(hash), current).await?,
        );
    }

    let limit = deployment.object["spec"]["revisionHistoryLimit"]
        .as_u64()
        .map_or(DEFAULT_HISTORY_LIMIT, |l| l as usize);
    let mut idle_old: Vec<&&Arc<Value>> = mine
        .iter()
        .filter(|rs| hash_of(rs) != deployment.hash && count(hash_of(rs)).active == 0)
        .collect();
    idle_old.sort_by_key(|rs| revision_of(rs));
    let surplus = idle_old.len().saturating_sub(limit);
    for rs in idle_old.into_iter().take(surplus) {
        written = latest(written, delete(objects, rs).await);
    }
    Ok((written, revision))
}

/// Makes the ReplicaSet named as `wanted` (made for a Deployment) that
/// exists without a controller the Deployment's: its owner reference and
/// revision. One another owner controls is left alone.
async fn adopt(objects: &Objects, wanted: &Value) -> Result<Option<i64>> {
    let metadata = &wanted["metadata"];
    super::adopt(
        objects,
        "replicasets",
        wanted,
        &metadata["ownerReferences"][0],
        |replica_set| {
            replica_set["metadata"]["annotations"][REVISION] =
                metadata["annotations"][REVISION].clone();
        },
    )
    .await
}

/// The ReplicaSet of the Deployment's current template.
fn new_replica_set(deployment: &DeploymentView<'_>, revision: u64, counts: Counts) -> Value {
    let object = deployment.object;
    let mut template = deployment.template.clone();
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(deployment.hash);
    let mut selector = object["spec"]["selector"].clone();
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(deployment.hash);
    let annotations = annotations_for(object, revision);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{}", name_of(object), deployment.hash),
            "namespace": namespace_of(object),
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name_of(object),
                "uid": deployment.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": deployment.replicas,
            "selector": selector,
            "template": template,
        },
        "status": status(counts, 1),
    })
}

/// The annotations of the current template's ReplicaSet: the Deployment's
/// (but those Kubernetes does not copy) and the revision.
fn annotations_for(deployment: &Value, revision: u64) -> Value {
    let mut annotations: serde_json::Map<String, Value> = deployment["metadata"]["annotations"]
        .as_object()
        .map(|all| {
            all.iter()
                .filter(|(key, _)| !NOT_COPIED.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    Value::Object(annotations)
}

fn status(counts: Counts, generation: i64) -> Value {
    json!({
        "replicas": counts.active,
        "fullyLabeledReplicas": counts.active,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.ready,
        "observedGeneration": generation,
    })
}

/// Sets a ReplicaSet's desired and counted replicas; for the current
/// template's (`revision` given), also its revision and the Deployment's
/// annotations, as Kubernetes keeps them in step. Writes only what changed.
async fn update_counts(
    objects: &Objects,
    replica_set: &Value,
    desired: usize,
    counts: Counts,
    current: Option<(&Value, u64)>,
) -> Result<Option<i64>> {
    let generation = replica_set["metadata"]["generation"].as_i64().unwrap_or(1);
    let status = status(counts, generation);
    let uid = replica_set["metadata"]["uid"].clone();
    let annotations = current.map(|(deployment, revision)| annotations_for(deployment, revision));
    let unchanged = |rs: &Value| {
        rs["spec"]["replicas"] == desired
            && rs["status"] == status
            && annotations
                .as_ref()
                .is_none_or(|a| rs["metadata"]["annotations"] == *a)
    };
    if unchanged(replica_set) {
        return Ok(None);
    }
    objects
        .update_with(
            kind("replicasets"),
            namespace_of(replica_set),
            name_of(replica_set),
            |current| {
                if current["metadata"]["uid"] != uid || unchanged(current) {
                    return false;
                }
                current["spec"]["replicas"] = json!(desired);
                current["status"] = status.clone();
                if let Some(annotations) = &annotations {
                    current["metadata"]["annotations"] = annotations.clone();
                }
                true
            },
        )
        .await
}
