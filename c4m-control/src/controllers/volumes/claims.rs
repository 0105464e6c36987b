//! Claims and PersistentVolumes: binding, provisioning through the nodes,
//! phases, reclaim, protection and expansion status.
//!
//! Provisioning, as Kubernetes' external-provisioner with topology: a claim
//! of a class whose provisioner is a node driver gets the annotation
//! `volume.kubernetes.io/selected-node` (from here for `Immediate` classes:
//! the ready node with the least free space that still fits, from the
//! nodes' last reports; from the scheduler for `WaitForFirstConsumer`).
//! That node's agent makes backend volume `pvc-<claim uid>` and reports it;
//! this controller then creates the PersistentVolume `pvc-<claim uid>` and
//! binds the two.
//!
//! Reclaim, as external-provisioner with `HonorPVReclaimPolicy`: a volume
//! whose node deletes its data (policy `Delete`) carries
//! [`PROVISIONER_FINALIZER`]; deleted, it goes once that node no longer
//! reports the volume, or once that Node is deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use c4m_core::labels::HOSTNAME;
use c4m_core::volumes::{
    LOCAL_DRIVER, NFS_DRIVER, NO_PROVISIONER, PROVISIONER_FINALIZER, SELECTED_NODE,
    volume_handle_for_claim,
};
use serde_json::{Value, json};

use super::admission::{PV_PROTECTION, PVC_PROTECTION};
use super::{BINDER, NodeStorage, PROVISIONER, all, capacity_bytes, requested_bytes, update};
use crate::Result;
use crate::cache::Cache;
use crate::controllers::{latest, reconcile_each};
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, kind, name_of, namespace_of, now_rfc3339};

/// Annotations Kubernetes' binder writes.
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a provisioned volume: the node that made it, which deletes its data.
/// A local volume's node affinity names it too; an NFS volume (an export
/// is shared, any node may mount it) has only this.
const PROVISIONED_ON: &str = "c4m.io/provisioned-on";

/// The kubelet's message while an expansion waits for the volume's users to
/// restart.
const RESIZE_PENDING: &str =
    "Waiting for user to (re-)start a pod to finish file system resize of volume on node.";

/// The StorageClass parameters of the NFS driver a volume carries as its
/// `volumeAttributes`.
const NFS_ATTRIBUTES: &[&str] = &["server", "share", "nfsPort", "mountPort"];

/// What a claim pass reads: every class and volume, once.
struct World<'a> {
    classes: BTreeMap<String, Arc<Value>>,
    volumes: Vec<Arc<Value>>,
    /// Each VolumeSnapshot's uid, by namespace and name.
    snapshots: BTreeMap<(String, String), String>,
    nodes: &'a NodeStorage<'a>,
    /// Bytes of each (driver, node) promised to claims selected for it that
    /// its report does not show yet: not free, whatever the report says.
    promised: Mutex<BTreeMap<(String, String), u64>>,
}

pub(super) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
) -> Result<Option<i64>> {
    let world = World {
        classes: all(cache, "storageclasses")
            .into_iter()
            .map(|c| (name_of(&c).to_string(), c))
            .collect(),
        volumes: all(cache, "persistentvolumes"),
        snapshots: all(cache, "volumesnapshots")
            .iter()
            .map(|s| {
                let uid = s["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ((namespace_of(s).to_string(), name_of(s).to_string()), uid)
            })
            .collect(),
        nodes,
        promised: Mutex::default(),
    };
    let claims = all(cache, "persistentvolumeclaims");
    *world
        .promised
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = super::promised(
        &claims,
        |class| {
            world
                .classes
                .get(class)
                .and_then(|c| c["provisioner"].as_str().map(str::to_string))
        },
        |driver, handle| world.nodes.volume(driver, handle).is_some(),
    );
    // Concurrently, so their writes share group commits; two claims after
    // one volume cannot both take it (`bind` never takes a volume another
    // claim holds).
    let world = &world;
    let claims_written = reconcile_each("claims", claims, |claim| async move {
        reconcile_claim(objects, cache, world, &claim)
            .await
            .inspect_err(|e| {
                tracing::warn!(claim = %name_of(&claim), error = %e, "cannot reconcile a claim");
            })
    })
    .await;
    let volumes_written = reconcile_each("volumes", world.volumes.clone(), |pv| async move {
        reconcile_volume(objects, cache, world.nodes, &pv)
            .await
            .inspect_err(|e| {
                tracing::warn!(volume = %name_of(&pv), error = %e, "cannot reconcile a volume");
            })
    })
    .await;
    Ok(latest(claims_written?, volumes_written?))
}

/// The class a claim names (`""` and absent: none).
fn class_name(claim: &Value) -> &str {
    claim["spec"]["storageClassName"]
        .as_str()
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn volume_mode(spec: &Value) -> &str {
    spec["volumeMode"].as_str().unwrap_or("Filesystem")
}

/// Whether the static volume `pv` may bind `claim`: free or pre-bound to
/// it, not being deleted, of its class and volume mode, with every access
/// mode it asks for, at least its size, and the labels its selector wants.
fn fits(claim: &Value, pv: &Value) -> bool {
    let claim_ref = &pv["spec"]["claimRef"];
    let free = claim_ref.is_null()
        || (claim_ref["name"] == claim["metadata"]["name"]
            && claim_ref["namespace"] == claim["metadata"]["namespace"]
            && (claim_ref["uid"].is_null() || claim_ref["uid"] == claim["metadata"]["uid"]));
    let phase = pv["status"]["phase"].as_str().unwrap_or("Pending");
    let named = claim["spec"]["volumeName"]
        .as_str()
        .filter(|n| !n.is_empty());
    if !free
        || matches!(phase, "Released" | "Failed")
        || crate::deletion::is_deleting(pv)
        || named.is_some_and(|n| n != name_of(pv))
        || pv["spec"]["storageClassName"].as_str().unwrap_or_default() != class_name(claim)
        || volume_mode(&pv["spec"]) != volume_mode(&claim["spec"])
    {
        return false;
    }
    let offered = strings(&pv["spec"]["accessModes"]);
    if !strings(&claim["spec"]["accessModes"])
        .iter()
        .all(|m| offered.contains(m))
    {
        return false;
    }
    if capacity_bytes(pv) < requested_bytes(claim) {
        return false;
    }
    match serde_json::from_value(claim["spec"]["selector"].clone()) {
        Ok(Some(selector)) => crate::selector::Selector::from_label_selector(&selector)
            .is_ok_and(|s| s.matches(&crate::pods::labels(pv))),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// The static volume for `claim`: one pre-bound to it first, else the
/// smallest that fits.
fn static_volume<'a>(claim: &Value, volumes: &'a [Arc<Value>]) -> Option<&'a Arc<Value>> {
    let fitting: Vec<&Arc<Value>> = volumes.iter().filter(|pv| fits(claim, pv)).collect();
    fitting
        .iter()
        .find(|pv| !pv["spec"]["claimRef"].is_null())
        .or_else(|| fitting.iter().min_by_key(|pv| capacity_bytes(pv)))
        .copied()
}

/// The node to provision `bytes` of `driver` on: the ready node whose
/// reported free space, less what is `promised` of it, is the least that
/// fits (best fit), which is then promised those bytes too; else why none
/// fits.
fn pick_node(
    nodes: &NodeStorage<'_>,
    promised: &Mutex<BTreeMap<(String, String), u64>>,
    driver: &str,
    bytes: u64,
) -> std::result::Result<String, String> {
    let mut promised = promised.lock().unwrap_or_else(PoisonError::into_inner);
    let free: BTreeMap<&str, u64> = nodes
        .free(driver)
        .into_iter()
        .map(|(node, free)| {
            let taken = promised
                .get(&(driver.to_string(), node.to_string()))
                .copied()
                .unwrap_or_default();
            (node, free.saturating_sub(taken))
        })
        .collect();
    if let Some((node, _)) = free
        .iter()
        .filter(|(_, free)| **free >= bytes)
        .min_by_key(|(node, free)| (**free, **node))
    {
        *promised
            .entry((driver.to_string(), node.to_string()))
            .or_default() += bytes;
        return Ok((*node).to_string());
    }
    if free.is_empty() {
        return Err(format!("no ready node reports storage for {driver}"));
    }
    let each: Vec<String> = free
        .iter()
        .map(|(node, free)| format!("{node}: {} free", c4m_core::format_memory_bytes(*free)))
        .collect();
    Err(format!(
        "no ready node has {} free for {driver} ({})",
        c4m_core::format_memory_bytes(bytes),
        each.join(", ")
    ))
}

async fn reconcile_claim(
    objects: &Objects,
    cache: &Cache,
    world: &World<'_>,
    claim: &Arc<Value>,
) -> Result<Option<i64>> {
    if crate::deletion::is_deleting(claim) {
        return release_protection(objects, cache, claim).await;
    }
    let volume_name = claim["spec"]["volumeName"].as_str().unwrap_or_default();
    let bound_to = world
        .volumes
        .iter()
        .find(|pv| !volume_name.is_empty() && name_of(pv) == volume_name);
    if claim["status"]["phase"] == "Bound"
        || claim["metadata"]["annotations"][BIND_COMPLETED] == "yes"
    {
        let held_by_another = |pv: &Value| {
            let holder = &pv["spec"]["claimRef"]["uid"];
            !holder.is_null() && *holder != claim["metadata"]["uid"]
        };
        return match bound_to {
            Some(pv) if !held_by_another(pv) => {
                let written = bind(objects, claim, pv).await?;
                Ok(latest(written, expansion(objects, world, claim, pv).await?))
            }
            _ => lose(objects, claim).await,
        };
    }
    if let Some(pv) = static_volume(claim, &world.volumes) {
        return bind(objects, claim, pv).await;
    }
    if !volume_name.is_empty() {
        // Pre-bound by its user to a volume that is missing or does not fit.
        let why = match bound_to {
            Some(_) => format!(
                "Cannot bind to requested volume \"{volume_name}\": it does not fit the claim (class, access modes, size, volume mode or claimRef)"
            ),
            None => format!("volume \"{volume_name}\" not found"),
        };
        world.nodes.note(
            objects,
            claim,
            EventType::Warning,
            "FailedBinding",
            why,
            BINDER,
        );
        return Ok(None);
    }
    // A volume this controller provisioned for it (the bind was cut short).
    let handle = volume_handle_for_claim(claim["metadata"]["uid"].as_str().unwrap_or_default());
    if let Some(pv) = world.volumes.iter().find(|pv| name_of(pv) == handle) {
        return bind(objects, claim, pv).await;
    }
    provision(objects, world, claim).await
}

/// Binds `claim` and `pv` both ways, as far as each is not yet: the
/// volume's `claimRef` and phase, then the claim's `volumeName`,
/// annotations and status.
async fn bind(objects: &Objects, claim: &Value, pv: &Value) -> Result<Option<i64>> {
    let settled = pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
        && pv["status"]["phase"] == "Bound"
        && claim["spec"]["volumeName"] == pv["metadata"]["name"]
        && claim["status"]["phase"] == "Bound"
        && claim["metadata"]["annotations"][BIND_COMPLETED] == "yes"
        && claim["status"]["accessModes"] == pv["spec"]["accessModes"]
        && !claim["status"]["capacity"].is_null();
    if settled {
        return Ok(None);
    }
    let claim_ref = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "namespace": namespace_of(claim), "name": name_of(claim),
        "uid": claim["metadata"]["uid"],
    });
    let mut held_by_another = false;
    let mut written = update(objects, "persistentvolumes", pv, |current| {
        held_by_another = !current["spec"]["claimRef"]["uid"].is_null()
            && current["spec"]["claimRef"]["uid"] != claim_ref["uid"];
        if held_by_another {
            return false;
        }
        let mut changed = false;
        if current["spec"]["claimRef"]["uid"] != claim_ref["uid"] {
            if current["spec"]["claimRef"].is_null() {
                annotate(current, BOUND_BY_CONTROLLER, "yes");
            }
            current["spec"]["claimRef"] = claim_ref.clone();
            changed = true;
        }
        changed |= set_phase(current, "Bound");
        changed
    })
    .await?;
    if held_by_another {
        // Taken meanwhile: the next pass looks for another.
        return Ok(written);
    }
    let claim_written = update(objects, "persistentvolumeclaims", claim, |current| {
        bind_claim(current, pv)
    })
    .await?;
    if claim["status"]["phase"] != "Bound" && claim_written.is_some() {
        record_bound(objects, claim, pv);
    }
    written = latest(written, claim_written);
    Ok(written)
}

/// Records on `claim` its binding to `pv`, as Kubernetes' binder does:
/// `volumeName` (set once), the bind annotations, status `Bound` with the
/// volume's access modes and capacity; whether anything changed.
fn bind_claim(claim: &mut Value, pv: &Value) -> bool {
    let before = claim.clone();
    if claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        claim["spec"]["volumeName"] = pv["metadata"]["name"].clone();
        annotate(claim, BOUND_BY_CONTROLLER, "yes");
    }
    annotate(claim, BIND_COMPLETED, "yes");
    if !claim["status"].is_object() {
        claim["status"] = json!({});
    }
    claim["status"]["phase"] = json!("Bound");
    claim["status"]["accessModes"] = pv["spec"]["accessModes"].clone();
    // Capacity follows the volume, except while an expansion is under way
    // (its status says the size it has).
    if claim["status"]["capacity"].is_null() {
        claim["status"]["capacity"] = pv["spec"]["capacity"].clone();
    }
    *claim != before
}

fn record_bound(objects: &Objects, claim: &Value, pv: &Value) {
    objects.events().record(
        Regarding::of(claim),
        EventType::Normal,
        "Bound",
        format!("Bound to volume {}", name_of(pv)),
        BINDER,
    );
}

/// Sets annotation `key`; an object whose `metadata` is not an object
/// (never stored so) is left as it is.
fn annotate(object: &mut Value, key: &str, value: &str) {
    if let Ok(annotations) = crate::json::object_at(object, &["metadata", "annotations"]) {
        annotations.insert(key.to_string(), json!(value));
    }
}

/// Sets `status.phase` (with `lastPhaseTransitionTime` when it changes);
/// whether it changed.
fn set_phase(object: &mut Value, phase: &str) -> bool {
    if object["status"]["phase"] == phase {
        return false;
    }
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    object["status"]["phase"] = json!(phase);
    object["status"]["lastPhaseTransitionTime"] = json!(now_rfc3339());
    true
}

/// A bound claim whose volume is gone: `Lost`, as Kubernetes marks it.
async fn lose(objects: &Objects, claim: &Value) -> Result<Option<i64>> {
    if claim["status"]["phase"] == "Lost" {
        return Ok(None);
    }
    let written = update(objects, "persistentvolumeclaims", claim, |current| {
        set_phase(current, "Lost")
    })
    .await?;
    objects.events().record(
        Regarding::of(claim),
        EventType::Warning,
        "ClaimLost",
        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
        BINDER,
    );
    Ok(written)
}

/// A claim no volume fits: have one provisioned if its class has a
/// provisioner, and make the PersistentVolume once its node reports it.
async fn provision(objects: &Objects, world: &World<'_>, claim: &Value) -> Result<Option<i64>> {
    let warn = |reason: &str, message: String| {
        objects.events().record(
            Regarding::of(claim),
            EventType::Warning,
            reason,
            message,
            BINDER,
        );
    };
    let class_name = class_name(claim);
    if class_name.is_empty() {
        warn(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        );
        return Ok(None);
    }
    let Some(class) = world.classes.get(class_name) else {
        warn(
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        );
        return Ok(None);
    };
    let provisioner = class["provisioner"].as_str().unwrap_or_default();
    if provisioner == NO_PROVISIONER || !claim["spec"]["selector"].is_null() {
        warn(
            "FailedBinding",
            "no persistent volumes available for this claim".into(),
        );
        return Ok(None);
    }
    let bytes = requested_bytes(claim).unwrap_or_default();
    let uid = claim["metadata"]["uid"].as_str().unwrap_or_default();
    let handle = volume_handle_for_claim(uid);
    let Some(node) = claim["metadata"]["annotations"][SELECTED_NODE].as_str() else {
        return select_node(objects, world, claim, class, provisioner, bytes).await;
    };
    let provisioning_failed = |message: String| {
        world.nodes.note(
            objects,
            claim,
            EventType::Warning,
            "ProvisioningFailed",
            format!("failed to provision volume with StorageClass \"{class_name}\": {message}"),
            PROVISIONER,
        );
    };
    match world.nodes.volume(provisioner, &handle) {
        Some((_, state)) if !state.error.is_empty() => {
            provisioning_failed(state.error.clone());
            Ok(None)
        }
        Some((holder, state)) => {
            // The volume and its claim's binding in one transaction.
            let mut pv = volume_for(claim, class, provisioner, holder, state.size_bytes);
            pv["status"] = json!({"phase": "Bound"});
            let mut bound = claim.clone();
            bind_claim(&mut bound, &pv);
            let written = objects
                .create_and_replace(
                    (kind("persistentvolumes"), pv.clone()),
                    (kind("persistentvolumeclaims"), bound),
                )
                .await;
            match written {
                Ok(revision) => {
                    objects.events().record(
                        Regarding::of(claim),
                        EventType::Normal,
                        "ProvisioningSucceeded",
                        format!("Successfully provisioned volume {handle} on node {holder}"),
                        PROVISIONER,
                    );
                    record_bound(objects, claim, &pv);
                    Ok(Some(revision))
                }
                // The claim changed, or its volume exists: the next pass sees which.
                Err(crate::Error::Conflict(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
        None if !world.nodes.known.contains(node) => {
            // Its node is gone: let another be chosen, as external-provisioner
            // gives a claim back to the scheduler.
            provisioning_failed(format!("node {node} does not exist; choosing another"));
            update(objects, "persistentvolumeclaims", claim, |current| {
                let annotations = current["metadata"]["annotations"].as_object_mut();
                annotations.is_some_and(|a| a.remove(SELECTED_NODE).is_some())
            })
            .await
        }
        None => {
            if !world.nodes.ready.contains(node) {
                provisioning_failed(format!("node {node} is not ready"));
            }
            Ok(None)
        }
    }
}

/// Selects the node of an `Immediate` claim (or of one restored from a
/// snapshot, which must be made where the snapshot is); a
/// `WaitForFirstConsumer` claim waits for the scheduler.
async fn select_node(
    objects: &Objects,
    world: &World<'_>,
    claim: &Value,
    class: &Value,
    provisioner: &str,
    bytes: u64,
) -> Result<Option<i64>> {
    let source = &claim["spec"]["dataSource"];
    let from_snapshot = source["kind"] == "VolumeSnapshot";
    let immediate = class["volumeBindingMode"].as_str().unwrap_or("Immediate") == "Immediate";
    let chosen = if from_snapshot {
        snapshot_node(world, claim, source)
    } else if immediate {
        pick_node(world.nodes, &world.promised, provisioner, bytes)
    } else {
        world.nodes.note(
            objects,
            claim,
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
            BINDER,
        );
        return Ok(None);
    };
    let node = match chosen {
        Ok(node) => node,
        Err(message) => {
            world.nodes.note(
                objects,
                claim,
                EventType::Warning,
                "ProvisioningFailed",
                format!(
                    "failed to provision volume with StorageClass \"{}\": {message}",
                    name_of(class)
                ),
                PROVISIONER,
            );
            return Ok(None);
        }
    };
    let written = update(objects, "persistentvolumeclaims", claim, |current| {
        if current["metadata"]["annotations"][SELECTED_NODE].is_string() {
            return false;
        }
        annotate(current, SELECTED_NODE, &node);
        true
    })
    .await?;
    objects.events().record(
        Regarding::of(claim),
        EventType::Normal,
        "Provisioning",
        format!(
            "External provisioner is provisioning volume for claim \"{}/{}\" on node {node}",
            namespace_of(claim),
            name_of(claim)
        ),
        PROVISIONER,
    );
    Ok(written)
}

/// The node holding the ready snapshot a claim is restored from.
fn snapshot_node(
    world: &World<'_>,
    claim: &Value,
    source: &Value,
) -> std::result::Result<String, String> {
    let name = source["name"].as_str().unwrap_or_default();
    let handle = world
        .snapshots
        .get(&(namespace_of(claim).to_string(), name.to_string()))
        .map(|uid| c4m_core::volumes::snapshot_handle_for(uid));
    match handle.and_then(|h| world.nodes.snapshot(&h)) {
        Some((node, state)) if state.ready && state.error.is_empty() => Ok(node.to_string()),
        _ => Err(format!(
            "volumesnapshot \"{name}\" is not ready to use on any node"
        )),
    }
}

/// The PersistentVolume of backend volume `pvc-<claim uid>` that `node`
/// reports with `size_bytes`.
fn volume_for(claim: &Value, class: &Value, driver: &str, node: &str, size_bytes: u64) -> Value {
    let handle = volume_handle_for_claim(claim["metadata"]["uid"].as_str().unwrap_or_default());
    let mut csi = json!({"driver": driver, "volumeHandle": handle});
    if driver == LOCAL_DRIVER {
        csi["fsType"] = json!("ext4");
    }
    if driver == NFS_DRIVER {
        let attributes: serde_json::Map<String, Value> = NFS_ATTRIBUTES
            .iter()
            .filter_map(|key| Some((key.to_string(), class["parameters"].get(*key)?.clone())))
            .collect();
        csi["volumeAttributes"] = Value::Object(attributes);
    }
    let mut pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": handle, "annotations": {PROVISIONED_BY: driver, PROVISIONED_ON: node}},
        "spec": {
            "accessModes": claim["spec"]["accessModes"],
            "capacity": {"storage": c4m_core::format_memory_bytes(size_bytes)},
            "csi": csi,
            "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
            "storageClassName": name_of(class),
            "volumeMode": volume_mode(&claim["spec"]),
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": namespace_of(claim), "name": name_of(claim),
                "uid": claim["metadata"]["uid"],
            },
        },
    });
    if class["mountOptions"].is_array() {
        pv["spec"]["mountOptions"] = class["mountOptions"].clone();
    }
    if driver == LOCAL_DRIVER {
        pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": HOSTNAME, "operator": "In",
                "values": [node]}]}]}});
    }
    if reclaimed_by_node(&pv) {
        super::admission::add_finalizer(&mut pv, PROVISIONER_FINALIZER);
    }
    pv
}

/// The node holding the data of a volume of c4m's drivers: the one its node
/// affinity names (as [`volume_for`] writes it), else the one that
/// provisioned it ([`PROVISIONED_ON`]).
fn holder(pv: &Value) -> Option<&str> {
    fn only(list: &Value) -> Option<&Value> {
        match list.as_array()?.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
    only(&pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"])
        .and_then(|term| only(&term["matchExpressions"]))
        .filter(|e| e["key"] == HOSTNAME && e["operator"] == "In")
        .and_then(|e| only(&e["values"]))
        .and_then(Value::as_str)
        .or_else(|| pv["metadata"]["annotations"][PROVISIONED_ON].as_str())
}

/// Whether deleting `pv` deletes its data, which its node does: a volume of
/// c4m's drivers, of reclaim policy `Delete`, whose node is known. Such a
/// volume carries [`PROVISIONER_FINALIZER`] until the data is gone.
fn reclaimed_by_node(pv: &Value) -> bool {
    matches!(
        pv["spec"]["csi"]["driver"].as_str(),
        Some(LOCAL_DRIVER | NFS_DRIVER)
    ) && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        && holder(pv).is_some()
}

/// Whether nothing is left to wait for before a deleted `pv` goes: it is
/// not reclaimed by its node, or that node's last report no longer has its
/// volume (a node that has not reported since this control plane started
/// is waited for), or that node was deleted.
fn data_gone(nodes: &NodeStorage<'_>, pv: &Value) -> bool {
    let (Some(driver), Some(handle), Some(node)) = (
        pv["spec"]["csi"]["driver"].as_str(),
        pv["spec"]["csi"]["volumeHandle"].as_str(),
        holder(pv),
    ) else {
        return true;
    };
    if !reclaimed_by_node(pv) {
        return true;
    }
    if !nodes.known.contains(node) {
        // Waiting would keep the object Terminating for ever; should the
        // node come back, it keeps the data (orphaned), it never deletes it.
        tracing::warn!(
            volume = %name_of(pv),
            node,
            "the node holding the volume was deleted: the persistent volume goes without its data being deleted"
        );
        return true;
    }
    nodes.reports.get(node).is_some_and(|report| {
        !report
            .volumes
            .iter()
            .any(|v| v.driver == driver && v.handle == handle)
    })
}

/// A bound claim asking for more than it has: the status of the expansion
/// the volume's node carries out (`FileSystemResizePending` while the host
/// waits for the users to restart; the new size once reported).
async fn expansion(
    objects: &Objects,
    world: &World<'_>,
    claim: &Value,
    pv: &Value,
) -> Result<Option<i64>> {
    let (Some(wanted), Some(driver), Some(handle)) = (
        requested_bytes(claim),
        pv["spec"]["csi"]["driver"].as_str(),
        pv["spec"]["csi"]["volumeHandle"].as_str(),
    ) else {
        return Ok(None);
    };
    let has = claim["status"]["capacity"]["storage"]
        .as_str()
        .and_then(|s| c4m_core::parse_memory_bytes(s).ok());
    if has.is_none_or(|has| has >= wanted) {
        return Ok(None);
    }
    let Some((_, state)) = world.nodes.volume(driver, handle) else {
        return Ok(None);
    };
    if state.size_bytes >= wanted {
        let size = c4m_core::format_memory_bytes(state.size_bytes);
        let pv_written = update(objects, "persistentvolumes", pv, |current| {
            if current["spec"]["capacity"]["storage"] == size {
                return false;
            }
            current["spec"]["capacity"]["storage"] = json!(size);
            true
        })
        .await?;
        let claim_written = update(objects, "persistentvolumeclaims", claim, |current| {
            current["status"]["capacity"]["storage"] = json!(size);
            if let Some(conditions) = current["status"]["conditions"].as_array_mut() {
                conditions
                    .retain(|c| c["type"] != "FileSystemResizePending" && c["type"] != "Resizing");
            }
            true
        })
        .await?;
        objects.events().record(
            Regarding::of(claim),
            EventType::Normal,
            "FileSystemResizeSuccessful",
            format!("volume {} expanded to {size}", name_of(pv)),
            PROVISIONER,
        );
        return Ok(latest(pv_written, claim_written));
    }
    if !state.error.is_empty() {
        world.nodes.note(
            objects,
            claim,
            EventType::Warning,
            "VolumeResizeFailed",
            format!("resize volume {} failed: {}", name_of(pv), state.error),
            PROVISIONER,
        );
    }
    let (condition, reason, message) = if state.expansion_pending {
        ("FileSystemResizePending", "", RESIZE_PENDING.to_string())
    } else {
        (
            "Resizing",
            "",
            format!(
                "expanding volume {} to {}",
                name_of(pv),
                c4m_core::format_memory_bytes(wanted)
            ),
        )
    };
    update(objects, "persistentvolumeclaims", claim, |current| {
        let other = if condition == "Resizing" {
            "FileSystemResizePending"
        } else {
            "Resizing"
        };
        let mut changed = false;
        if let Some(conditions) = current["status"]["conditions"].as_array_mut() {
            let before = conditions.len();
            conditions.retain(|c| c["type"] != other);
            changed = conditions.len() != before;
        }
        changed | crate::pods::set_condition(current, condition, true, reason, &message)
    })
    .await
}

/// A claim being deleted keeps `kubernetes.io/pvc-protection` while a pod
/// that is not finished uses it, as Kubernetes' pvc-protection controller.
async fn release_protection(
    objects: &Objects,
    cache: &Cache,
    claim: &Value,
) -> Result<Option<i64>> {
    if !crate::deletion::finalizers(claim)
        .iter()
        .any(|f| f == PVC_PROTECTION)
    {
        return Ok(None);
    }
    if !users(cache, namespace_of(claim), name_of(claim)).is_empty() {
        return Ok(None);
    }
    crate::controllers::garbage_collector::remove_finalizer(
        objects,
        kind("persistentvolumeclaims"),
        claim,
        PVC_PROTECTION,
    )
    .await
}

/// The pods of `namespace` that are not finished and use the claim `name`.
pub(crate) fn users(cache: &Cache, namespace: &str, name: &str) -> Vec<String> {
    let mut users = Vec::new();
    let needle = name.as_bytes();
    cache.for_each_stored(
        &crate::objects::prefix(kind("pods"), Some(namespace)),
        |key, stored| {
            if stored.contains(needle) || stored.contains(b"\"ephemeral\"") {
                users.push((key.to_string(), stored.clone()));
            }
        },
    );
    users
        .into_iter()
        .filter_map(|(key, stored)| stored.decode(&key))
        .filter(|pod| !crate::pods::is_terminal(pod))
        .filter(|pod| {
            super::claims_of_pod(pod)
                .iter()
                .any(|(_, claim, _)| claim == name)
        })
        .map(|pod| name_of(&pod).to_string())
        .collect()
}

/// A volume's phase from its claim: `Available` unclaimed, `Bound` to a
/// claim that exists, `Released` once that claim is gone (also while it is
/// being deleted: its node deletes the data of a released one only); a
/// released volume whose policy is `Delete` is deleted; `pv-protection` is
/// taken off a volume being deleted that is not bound, and
/// [`PROVISIONER_FINALIZER`] (on a volume whose node deletes its data) once
/// its node no longer has it.
async fn reconcile_volume(
    objects: &Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
    pv: &Value,
) -> Result<Option<i64>> {
    let claim_ref = &pv["spec"]["claimRef"];
    let claim = claim_ref["name"].as_str().and_then(|name| {
        cache.get(
            kind("persistentvolumeclaims"),
            claim_ref["namespace"].as_str().unwrap_or_default(),
            name,
        )
    });
    let phase = if claim_ref.is_null() {
        "Available"
    } else {
        match &claim {
            Some(claim)
                if claim_ref["uid"].is_null() || claim["metadata"]["uid"] == claim_ref["uid"] =>
            {
                if claim["spec"]["volumeName"] == pv["metadata"]["name"] {
                    "Bound"
                } else {
                    pv["status"]["phase"].as_str().unwrap_or("Available")
                }
            }
            _ if claim_ref["uid"].is_null() => "Available",
            _ => "Released",
        }
    };
    let mut written = if pv["status"]["phase"] == phase {
        None
    } else {
        update(objects, "persistentvolumes", pv, |current| {
            set_phase(current, phase)
        })
        .await?
    };
    let finalizers = crate::deletion::finalizers(pv);
    let has = |finalizer: &str| finalizers.iter().any(|f| f == finalizer);
    let remove = |finalizer| {
        crate::controllers::garbage_collector::remove_finalizer(
            objects,
            kind("persistentvolumes"),
            pv,
            finalizer,
        )
    };
    if crate::deletion::is_deleting(pv) {
        if phase != "Bound" && has(PV_PROTECTION) {
            written = latest(written, remove(PV_PROTECTION).await?);
        }
        if has(PROVISIONER_FINALIZER) && data_gone(nodes, pv) {
            written = latest(written, remove(PROVISIONER_FINALIZER).await?);
        }
        return Ok(written);
    }
    // Also on volumes made before it existed, and off one turned `Retain`.
    let reclaimed = reclaimed_by_node(pv);
    if reclaimed != has(PROVISIONER_FINALIZER) {
        let finalized = update(objects, "persistentvolumes", pv, |current| {
            if crate::deletion::is_deleting(current) {
                return false;
            }
            if reclaimed {
                super::admission::add_finalizer(current, PROVISIONER_FINALIZER);
                return true;
            }
            let Some(list) = current["metadata"]["finalizers"].as_array_mut() else {
                return false;
            };
            let before = list.len();
            list.retain(|f| f != PROVISIONER_FINALIZER);
            list.len() != before
        })
        .await?;
        written = latest(written, finalized);
    }
    if phase == "Released" && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
        return Ok(latest(
            written,
            crate::controllers::delete_object(objects, "persistentvolumes", pv).await,
        ));
    }
    Ok(written)
}
