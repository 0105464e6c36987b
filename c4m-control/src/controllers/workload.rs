//! The workload controller: keeps each Microservice and Deployment at its
//! replica count of up-to-date instances.
//!
//! An instance records the hash of the pod template it was made from; after
//! a spec change, instances with another hash are replaced one surge at a
//! time, never taking ready instances below `replicas - maxUnavailable`
//! (Kubernetes' RollingUpdate defaults: 25% surge, 25% unavailable, at
//! least one surge). Terminal instances are deleted and so replaced.
//! Instances whose owner is gone are deleted (garbage collection).

use std::collections::BTreeSet;
use std::sync::Arc;

use c4m_core::{Microservice, annotations, pod_template_for_microservice};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::latest;
use super::replicasets::{self, DeploymentView, POD_TEMPLATE_HASH, ReplicaSetIndex};
use crate::Result;
use crate::cache::{Cache, Changes, ROOT, controller_key};
use crate::deletion::is_deleting;
use crate::objects::{Objects, kind, name_of, namespace_of, random_suffix};
use crate::pods::{is_ready, is_terminal, stable_hash};

/// The kinds whose objects own instances.
const OWNER_PLURALS: [&str; 2] = ["microservices", "deployments"];

/// What the controller needs to know of an owner.
struct Owner {
    kind: &'static str,
    api_version: &'static str,
    plural: &'static str,
    namespace: String,
    name: String,
    uid: String,
    generation: i64,
    replicas: usize,
    /// The pod template as JSON (`metadata` + `spec`).
    template: Value,
    object: Arc<Value>,
}

/// Reconciles the workloads `changes` touch: each changed Microservice or
/// Deployment, and the controller of each changed instance (before and
/// after the change); everything on a resync.
pub(crate) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    changes: &Changes,
) -> Result<Option<i64>> {
    let mut touched: BTreeSet<String> = BTreeSet::new();
    // Every ReplicaSet is decoded to index them: only on a resync, or when
    // the batch touches a Deployment (Microservices have none).
    let mut replica_sets = None;
    if changes.everything {
        for plural in OWNER_PLURALS {
            // An owner's key is its store key without the root.
            touched.extend(
                cache
                    .keys(kind(plural))
                    .iter()
                    .filter_map(|key| key.strip_prefix(ROOT).map(str::to_string)),
            );
        }
        touched.extend(cache.owners_of_pods());
        let index = ReplicaSetIndex::build(cache);
        touched.extend(index.deployment_keys().cloned());
        replica_sets = Some(index);
    } else {
        for (key, before) in &changes.changed {
            let Some(rest) = key.strip_prefix(ROOT) else {
                continue;
            };
            if rest.starts_with("pods/") || rest.starts_with("replicasets/") {
                let before = before.as_ref().and_then(|before| before.decode(key));
                let current = cache.get_key(key);
                touched.extend(
                    [before.as_deref(), current.as_deref()]
                        .into_iter()
                        .flatten()
                        .filter_map(controller_key),
                );
            } else {
                touched.insert(rest.to_string());
            }
        }
    }
    // Instances of other controllers' kinds (Jobs) are theirs.
    touched.retain(|owner| {
        OWNER_PLURALS.iter().any(|plural| {
            owner
                .strip_prefix(plural)
                .is_some_and(|r| r.starts_with('/'))
        })
    });
    let replica_sets = match replica_sets {
        Some(index) => index,
        None if touched
            .iter()
            .any(|owner| owner.starts_with("deployments/")) =>
        {
            ReplicaSetIndex::build(cache)
        }
        None => ReplicaSetIndex::default(),
    };
    let replica_sets = &replica_sets;
    super::reconcile_each("workloads", touched, |owner| async move {
        reconcile_workload(objects, cache, replica_sets, &owner)
            .await
            .inspect_err(|e| tracing::warn!(%owner, error = %e, "cannot reconcile"))
    })
    .await
}

/// Reconciles one workload (`PLURAL/NAMESPACE/NAME`) and its instances
/// ([`super::owner_and_pods`]: those of an older object of that name go,
/// orphans its selector matches are adopted); a Deployment's ReplicaSets
/// of an older object go too.
async fn reconcile_workload(
    objects: &Objects,
    cache: &Cache,
    replica_sets: &ReplicaSetIndex,
    owner_key: &str,
) -> Result<Option<i64>> {
    let (object, mine, mut written) = super::owner_and_pods(objects, cache, owner_key).await;
    let plural = owner_key.split('/').next().unwrap_or_default();
    let owner = object.and_then(|object| {
        Owner::decode(plural, object)
            .map_err(|e| tracing::warn!(owner = owner_key, error = %e, "skipping an undecodable workload"))
            .ok()
    });
    let replica_sets = replica_sets.of(owner_key);
    written = latest(
        written,
        replicasets::collect_garbage(
            objects,
            replica_sets,
            owner.as_ref().map(|o| o.uid.as_str()),
        )
        .await,
    );
    // An owner being deleted (waiting for its finalizers) starts nothing
    // new, as in Kubernetes.
    if let Some(owner) = owner.as_ref().filter(|o| !is_deleting(&o.object)) {
        written = latest(
            written,
            reconcile_owner(objects, owner, &mine, replica_sets).await?,
        );
    }
    Ok(written)
}

impl Owner {
    /// The owner a Microservice or Deployment object describes.
    fn decode(plural: &str, object: Arc<Value>) -> serde_json::Result<Owner> {
        if plural == "microservices" {
            let ms = serde_json::from_value::<Microservice>((*object).clone())?;
            let template = serde_json::to_value(pod_template_for_microservice(&ms))?;
            Ok(Owner::new(
                "Microservice",
                "c4m.io/v1",
                "microservices",
                object,
                ms.spec.replicas,
                template,
            ))
        } else {
            let spec = serde_json::from_value::<Deployment>((*object).clone())?
                .spec
                .unwrap_or_default();
            let template = serde_json::to_value(spec.template)?;
            Ok(Owner::new(
                "Deployment",
                "apps/v1",
                "deployments",
                object,
                spec.replicas.unwrap_or(1),
                template,
            ))
        }
    }

    fn new(
        kind: &'static str,
        api_version: &'static str,
        plural: &'static str,
        object: Arc<Value>,
        replicas: i32,
        template: Value,
    ) -> Owner {
        Owner {
            kind,
            api_version,
            plural,
            namespace: namespace_of(&object).to_string(),
            name: name_of(&object).to_string(),
            uid: object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            generation: object["metadata"]["generation"].as_i64().unwrap_or(1),
            replicas: replicas.max(0) as usize,
            template,
            object,
        }
    }
}

async fn reconcile_owner(
    objects: &Objects,
    owner: &Owner,
    pods: &[Arc<Value>],
    replica_sets: &[Arc<Value>],
) -> Result<Option<i64>> {
    // A paused Deployment keeps to the template of its newest ReplicaSet
    // (still scaling it), and starts no rollout: none at all before its
    // first ReplicaSet, as in Kubernetes.
    let paused_at = if owner.kind == "Deployment" && owner.object["spec"]["paused"] == true {
        match replicasets::newest(replica_sets, &owner.uid) {
            Some(newest) => Some(newest),
            None => return update_status(objects, owner, &[], "", None).await,
        }
    } else {
        None
    };
    let (template, hash) = match &paused_at {
        Some((template, hash)) => (template, hash.clone()),
        None => (&owner.template, template_hash(&owner.template)),
    };
    let mut written = None;
    // Pods being deleted are on their way out: neither counted nor
    // deleted again (Kubernetes' active pods).
    let pods: Vec<Arc<Value>> = pods.iter().filter(|p| !is_deleting(p)).cloned().collect();
    let pods = pods.as_slice();
    let (terminal, mut active): (Vec<&Arc<Value>>, Vec<&Arc<Value>>) =
        pods.iter().partition(|p| is_terminal(p));
    for pod in terminal {
        written = latest(written, delete_pod(objects, pod).await);
    }
    let is_current =
        |pod: &Value| pod["metadata"]["annotations"][annotations::TEMPLATE_HASH] == hash.as_str();
    let (current, outdated): (Vec<_>, Vec<_>) = active.drain(..).partition(|p| is_current(p));
    let replicas = owner.replicas;
    let max_surge = (replicas / 4).max(1);
    let min_ready = replicas - replicas / 4;

    // Create up-to-date instances up to `replicas`, surging above it only
    // while outdated ones are being replaced.
    let allowed_total = if outdated.is_empty() {
        replicas
    } else {
        replicas + max_surge
    };
    let to_create = replicas
        .saturating_sub(current.len())
        .min(allowed_total.saturating_sub(current.len() + outdated.len()));
    if to_create > 0 {
        let new_pods = (0..to_create)
            .map(|_| (kind("pods"), new_pod(owner, template, &hash)))
            .collect();
        written = latest(written, Some(objects.create_many(new_pods).await?));
    }

    // Delete surplus up-to-date instances (not ready first, then newest), and
    // outdated ones as long as enough instances stay ready.
    let mut ready = current
        .iter()
        .chain(&outdated)
        .filter(|p| is_ready(p))
        .count();
    let mut doomed = Vec::new();
    let mut surplus_current: Vec<_> = current.iter().collect();
    surplus_current.sort_by_key(|p| (is_ready(p), std::cmp::Reverse(creation(p))));
    for pod in surplus_current
        .into_iter()
        .take(current.len().saturating_sub(replicas))
    {
        doomed.push(*pod);
    }
    let mut outdated_order: Vec<_> = outdated.iter().collect();
    outdated_order.sort_by_key(|p| (is_ready(p), creation(p)));
    for pod in outdated_order {
        if is_ready(pod) {
            if ready <= min_ready {
                continue;
            }
            ready -= 1;
        }
        doomed.push(*pod);
    }
    for pod in doomed {
        written = latest(written, delete_pod(objects, pod).await);
    }

    let mut revision = None;
    if owner.kind == "Deployment" {
        let view = DeploymentView {
            object: &owner.object,
            uid: &owner.uid,
            template,
            hash: &hash,
            replicas: owner.replicas,
        };
        let (synced, current) = replicasets::sync(objects, &view, pods, replica_sets).await?;
        written = latest(written, synced);
        revision = Some(current);
    }
    written = latest(
        written,
        update_status(objects, owner, pods, &hash, revision).await?,
    );
    Ok(written)
}

/// The hash of a pod template, blind to nulls and empty objects and
/// lists, so a template that went through a client's typed round trip
/// (`creationTimestamp: null`, `resources: {}`, as `kubectl rollout undo`
/// sends it back) keeps its hash and its ReplicaSet.
pub(crate) fn template_hash(template: &Value) -> String {
    fn pruned(value: &Value) -> Option<Value> {
        match value {
            Value::Null => None,
            Value::Object(map) => {
                let map: serde_json::Map<String, Value> = map
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), pruned(v)?)))
                    .collect();
                (!map.is_empty()).then_some(Value::Object(map))
            }
            Value::Array(items) => {
                let items: Vec<Value> = items.iter().filter_map(pruned).collect();
                (!items.is_empty()).then_some(Value::Array(items))
            }
            other => Some(other.clone()),
        }
    }
    let canonical = pruned(template).unwrap_or(Value::Null);
    stable_hash(canonical.to_string().as_bytes())
}

/// Kubernetes' Progressing condition of a paused Deployment: status
/// Unknown (which [`crate::pods::set_condition`] cannot write), reason
/// DeploymentPaused. Left as it is once set, so it does not churn.
fn set_paused_condition(deployment: &mut Value) {
    let paused = |c: &Value| c["status"] == "Unknown" && c["reason"] == "DeploymentPaused";
    let conditions = deployment["status"]["conditions"].as_array();
    if conditions.is_some_and(|all| all.iter().any(|c| c["type"] == "Progressing" && paused(c))) {
        return;
    }
    crate::pods::set_condition(
        deployment,
        "Progressing",
        false,
        "DeploymentPaused",
        "Deployment is paused",
    );
    if let Some(condition) = deployment["status"]["conditions"]
        .as_array_mut()
        .and_then(|all| all.iter_mut().find(|c| c["type"] == "Progressing"))
    {
        condition["status"] = json!("Unknown");
    }
}

fn creation(pod: &Value) -> String {
    pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn delete_pod(objects: &Objects, pod: &Value) -> Option<i64> {
    super::delete_object(objects, "pods", pod).await
}

fn new_pod(owner: &Owner, template: &Value, hash: &str) -> Value {
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    // A Deployment's instances are named and labelled as the instances of
    // its ReplicaSet for this template are in Kubernetes.
    if owner.kind == "Deployment" {
        metadata["name"] = json!(format!("{}-{hash}-{}", owner.name, random_suffix()));
        if !metadata["labels"].is_object() {
            metadata["labels"] = json!({});
        }
        metadata["labels"][POD_TEMPLATE_HASH] = json!(hash);
    } else {
        metadata["name"] = json!(format!("{}-{}", owner.name, random_suffix()));
    }
    metadata["namespace"] = json!(owner.namespace);
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = json!({});
    }
    metadata["annotations"][annotations::TEMPLATE_HASH] = json!(hash);
    metadata["ownerReferences"] = json!([{
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    })
}

async fn update_status(
    objects: &Objects,
    owner: &Owner,
    pods: &[Arc<Value>],
    hash: &str,
    revision: Option<u64>,
) -> Result<Option<i64>> {
    let active: Vec<_> = pods.iter().filter(|p| !is_terminal(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let updated = active
        .iter()
        .filter(|p| p["metadata"]["annotations"][annotations::TEMPLATE_HASH] == hash)
        .count();
    let updated_ready = active
        .iter()
        .filter(|p| p["metadata"]["annotations"][annotations::TEMPLATE_HASH] == hash && is_ready(p))
        .count();
    let complete = updated_ready >= owner.replicas && active.len() == owner.replicas;
    let available = ready >= owner.replicas.saturating_sub(owner.replicas / 4);
    let mut status = json!({
        "observedGeneration": owner.generation,
        "replicas": active.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "updatedReplicas": updated,
    });
    let unavailable = owner.replicas.saturating_sub(ready);
    if unavailable > 0 {
        status["unavailableReplicas"] = json!(unavailable);
    }
    let mut desired = (*owner.object).clone();
    let previous_conditions = desired["status"]["conditions"].clone();
    desired["status"] = status;
    desired["status"]["conditions"] = previous_conditions;
    // Kubernetes' reasons, which `kubectl rollout status` and `describe`
    // read; a Deployment's messages name its ReplicaSet as Kubernetes' do.
    let (available_message, progressing_message) = if owner.kind == "Deployment" {
        let replica_set = format!("{}-{hash}", owner.name);
        (
            if available {
                "Deployment has minimum availability.".to_string()
            } else {
                "Deployment does not have minimum availability.".to_string()
            },
            if complete {
                format!("ReplicaSet {replica_set:?} has successfully progressed.")
            } else {
                format!("ReplicaSet {replica_set:?} is progressing.")
            },
        )
    } else {
        (
            format!("{ready} of {} replicas ready", owner.replicas),
            format!(
                "{updated_ready} of {} updated replicas ready",
                owner.replicas
            ),
        )
    };
    crate::pods::set_condition(
        &mut desired,
        "Available",
        available,
        if available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        &available_message,
    );
    if owner.object["spec"]["paused"] == true && owner.kind == "Deployment" {
        set_paused_condition(&mut desired);
    } else {
        crate::pods::set_condition(
            &mut desired,
            "Progressing",
            true,
            if complete {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
            &progressing_message,
        );
    }
    let revision = revision.map(|r| json!(r.to_string()));
    let revision_current = |object: &Value| {
        revision
            .as_ref()
            .is_none_or(|r| object["metadata"]["annotations"][replicasets::REVISION] == *r)
    };
    if desired["status"] == owner.object["status"] && revision_current(&owner.object) {
        return Ok(None);
    }
    let status = desired["status"].clone();
    objects
        .update_with(
            kind(owner.plural),
            &owner.namespace,
            &owner.name,
            |current| {
                if current["metadata"]["uid"] != owner.uid.as_str()
                    || (current["status"] == status && revision_current(current))
                {
                    return false;
                }
                current["status"] = status.clone();
                if let Some(revision) = &revision {
                    if !current["metadata"]["annotations"].is_object() {
                        current["metadata"]["annotations"] = json!({});
                    }
                    current["metadata"]["annotations"][replicasets::REVISION] = revision.clone();
                }
                true
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_deployment_progresses_unknown_and_the_condition_stays_put() {
        let mut deployment = json!({"status": {"conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": "done", "lastTransitionTime": "2026-12-07T00:00:00Z"}
        ]}});
        set_paused_condition(&mut deployment);
        let condition = deployment["status"]["conditions"][0].clone();
        assert_eq!(
            (
                &condition["status"],
                &condition["reason"],
                &condition["message"]
            ),
            (
                &json!("Unknown"),
                &json!("DeploymentPaused"),
                &json!("Deployment is paused")
            )
        );
        // Again: unchanged (no write on every reconcile).
        let before = deployment.clone();
        set_paused_condition(&mut deployment);
        assert_eq!(deployment, before);
    }
}
