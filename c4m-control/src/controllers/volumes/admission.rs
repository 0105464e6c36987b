//! What kube-apiserver does to storage objects as they are written, beyond
//! `c4m_core::validate`: defaults (its `SetDefaults_*` and the
//! `DefaultStorageClass` admission plugin), the protection finalizers
//! (`StorageObjectInUseProtection`), the immutable fields of each kind, and
//! claim expansion (`PersistentVolumeClaimResize`); and the default classes
//! the control plane makes at its first start.

use c4m_state::Store;
use serde_json::{Value, json};

use crate::objects::{Objects, decode, kind, name_of, prefix};
use crate::{Error, Result};
use c4m_core::volumes::{DEFAULT_CLASS, LOCAL_DRIVER};

/// The finalizer that keeps a claim while a pod uses it.
pub(crate) const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a PersistentVolume while it is bound.
pub(crate) const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// The annotation making a VolumeSnapshotClass the default.
pub(crate) const DEFAULT_SNAPSHOT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// The default classes' name.
pub(crate) const DEFAULT_CLASS_NAME: &str = "local";

/// Kubernetes' refusal of an expansion its class does not allow.
const NOT_RESIZABLE: &str = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";

/// Adds `finalizer` to `object`'s unless there.
pub(super) fn add_finalizer(object: &mut Value, finalizer: &str) {
    let list = &mut object["metadata"]["finalizers"];
    match list.as_array_mut() {
        Some(list) if list.iter().any(|f| f == finalizer) => {}
        Some(list) => list.push(json!(finalizer)),
        None => *list = json!([finalizer]),
    }
}

/// Sets `object[field]` (an object's member) to `value` when unset.
fn default_field(object: &mut Value, field: &str, value: &str) {
    if let Some(map) = object.as_object_mut()
        && map.get(field).is_none_or(Value::is_null)
    {
        map.insert(field.to_string(), json!(value));
    }
}

/// The name of the default class of `plural` (see
/// [`crate::controllers::default_class`]).
async fn default_class_name(
    store: &dyn Store,
    plural: &str,
    annotation: &str,
) -> Result<Option<String>> {
    Ok(crate::controllers::default_class(store, plural, annotation)
        .await?
        .map(|class| name_of(&class).to_string()))
}

/// Defaults a new storage object of `kind_name` as kube-apiserver does.
pub(crate) async fn default_new(
    store: &dyn Store,
    kind_name: &str,
    value: &mut Value,
) -> Result<()> {
    match kind_name {
        "PersistentVolume" => {
            add_finalizer(value, PV_PROTECTION);
            if value["spec"].is_object() {
                default_field(
                    &mut value["spec"],
                    "persistentVolumeReclaimPolicy",
                    "Retain",
                );
                default_field(&mut value["spec"], "volumeMode", "Filesystem");
            }
            // The volume controller creates a provisioned volume Bound.
            if value["status"]["phase"].is_null() {
                value["status"] = json!({"phase": "Pending"});
            }
        }
        "PersistentVolumeClaim" => {
            add_finalizer(value, PVC_PROTECTION);
            if value["spec"].is_object() {
                default_field(&mut value["spec"], "volumeMode", "Filesystem");
                // Either names the source, and the other mirrors it.
                let spec = &mut value["spec"];
                if spec["dataSourceRef"].is_null() && spec["dataSource"].is_object() {
                    spec["dataSourceRef"] = spec["dataSource"].clone();
                } else if spec["dataSource"].is_null() && spec["dataSourceRef"].is_object() {
                    let mut source = spec["dataSourceRef"].clone();
                    if let Some(source) = source.as_object_mut() {
                        source.remove("namespace");
                    }
                    spec["dataSource"] = source;
                }
                // Absent (not "", which asks for no class): the default one.
                if value["spec"]["storageClassName"].is_null()
                    && let Some(class) =
                        default_class_name(store, "storageclasses", DEFAULT_CLASS).await?
                {
                    value["spec"]["storageClassName"] = json!(class);
                }
            }
            value["status"] = json!({"phase": "Pending"});
        }
        "StorageClass" => {
            default_field(value, "reclaimPolicy", "Delete");
            default_field(value, "volumeBindingMode", "Immediate");
        }
        "VolumeSnapshot" => {
            if value["spec"].is_object()
                && value["spec"]["volumeSnapshotClassName"].is_null()
                && value["spec"]["source"]["persistentVolumeClaimName"].is_string()
                && let Some(class) =
                    default_class_name(store, "volumesnapshotclasses", DEFAULT_SNAPSHOT_CLASS)
                        .await?
            {
                value["spec"]["volumeSnapshotClassName"] = json!(class);
            }
            if let Some(object) = value.as_object_mut() {
                object.remove("status");
            }
        }
        _ => {}
    }
    Ok(())
}

/// `field: Forbidden: ...`, as `Error::Invalid` carries it.
fn forbidden(field: &str, detail: &str) -> Error {
    Error::Invalid(format!("{field}: Forbidden: {detail}"))
}

/// `field: Invalid value: ...: field is immutable`.
fn immutable(field: &str, value: &Value) -> Error {
    Error::Invalid(format!(
        "{field}: Invalid value: {value}: field is immutable"
    ))
}

/// A PersistentVolume's spec fields that are not its source (where its
/// data is, which may not change).
const PV_OTHER_FIELDS: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
];

/// Checks an update of a storage object (`current` becoming `merged`)
/// against the fields Kubernetes keeps immutable and its expansion rules.
pub(crate) async fn check_update(
    store: &dyn Store,
    kind_name: &str,
    current: &Value,
    merged: &Value,
) -> Result<()> {
    match kind_name {
        "PersistentVolumeClaim" => check_claim_update(store, current, merged).await,
        "PersistentVolume" => {
            let (old, new) = (&current["spec"], &merged["spec"]);
            let sources = |spec: &Value| -> Vec<(String, Value)> {
                spec.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(field, _)| !PV_OTHER_FIELDS.contains(&field.as_str()))
                    .map(|(field, value)| (field.clone(), value.clone()))
                    .collect()
            };
            if sources(old) != sources(new) {
                return Err(forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                ));
            }
            if old["volumeMode"] != new["volumeMode"] {
                return Err(immutable("spec.volumeMode", &new["volumeMode"]));
            }
            if !old["nodeAffinity"].is_null() && old["nodeAffinity"] != new["nodeAffinity"] {
                return Err(immutable("spec.nodeAffinity", &new["nodeAffinity"]));
            }
            Ok(())
        }
        "StorageClass" => {
            for (field, message) in [
                ("parameters", "updates to parameters are forbidden."),
                ("provisioner", "updates to provisioner are forbidden."),
                ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
            ] {
                if current[field] != merged[field] {
                    return Err(forbidden(field, message));
                }
            }
            if current["volumeBindingMode"] != merged["volumeBindingMode"] {
                return Err(immutable("volumeBindingMode", &merged["volumeBindingMode"]));
            }
            Ok(())
        }
        "VolumeSnapshot" | "VolumeSnapshotContent" => {
            let fields = match kind_name {
                "VolumeSnapshot" => ["persistentVolumeClaimName", "volumeSnapshotContentName"],
                _ => ["volumeHandle", "snapshotHandle"],
            };
            for field in fields {
                if current["spec"]["source"][field] != merged["spec"]["source"][field] {
                    return Err(Error::Invalid(format!(
                        "spec.source.{field}: Invalid value: \"string\": {field} is immutable"
                    )));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A claim's spec is immutable but for a `volumeName` set once and, once
/// bound, a larger `resources.requests.storage` when its class allows
/// expansion; it never shrinks.
async fn check_claim_update(store: &dyn Store, current: &Value, merged: &Value) -> Result<()> {
    let storage = |claim: &Value| {
        claim["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(|s| c4m_core::parse_memory_bytes(s).ok())
    };
    let (old_size, new_size) = (storage(current), storage(merged));
    let bound = current["status"]["phase"] == "Bound";
    let mut old_spec = current["spec"].clone();
    let mut new_spec = merged["spec"].clone();
    if old_spec["volumeName"].as_str().is_none_or(str::is_empty) {
        old_spec["volumeName"] = new_spec["volumeName"].clone();
    }
    if bound {
        for spec in [&mut old_spec, &mut new_spec] {
            if let Some(resources) = spec["resources"].as_object_mut() {
                resources.remove("requests");
            }
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("volumeAttributesClassName");
            }
        }
    }
    let null_to_empty = |spec: &mut Value| {
        if let Some(map) = spec.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
    };
    null_to_empty(&mut old_spec);
    null_to_empty(&mut new_spec);
    if old_spec != new_spec {
        return Err(forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    match (old_size, new_size) {
        (Some(old), Some(new)) if new < old => Err(forbidden(
            "spec.resources.requests.storage",
            "field can not be less than previous value",
        )),
        (Some(old), Some(new)) if new > old => {
            let class = current["spec"]["storageClassName"]
                .as_str()
                .unwrap_or_default();
            let resizable = match store
                .get(&crate::objects::key(kind("storageclasses"), "", class))
                .await?
            {
                Some(kv) => decode(&kv)?["allowVolumeExpansion"] == true,
                None => false,
            };
            if resizable
                && !current["spec"]["volumeName"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
            {
                Ok(())
            } else {
                Err(Error::ForbiddenObject {
                    plural: "persistentvolumeclaims".into(),
                    name: name_of(current).to_string(),
                    reason: NOT_RESIZABLE.into(),
                })
            }
        }
        _ => Ok(()),
    }
}

/// The StorageClass `local` (c4m's local disks, made where the first pod
/// lands, deleted with its claim, expandable) and the VolumeSnapshotClass
/// `local`, both the default, made at first start: each only when no class
/// of its kind exists, so a cluster that has its own keeps them alone.
pub(crate) async fn ensure_default_classes(objects: &Objects) -> Result<()> {
    let storage_class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": DEFAULT_CLASS_NAME, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_DRIVER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    });
    let snapshot_class = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": DEFAULT_CLASS_NAME,
            "annotations": {DEFAULT_SNAPSHOT_CLASS: "true"}},
        "driver": LOCAL_DRIVER,
        "deletionPolicy": "Delete",
    });
    for (plural, class) in [
        ("storageclasses", storage_class),
        ("volumesnapshotclasses", snapshot_class),
    ] {
        let (existing, _) = objects.store().range(&prefix(kind(plural), None)).await?;
        if !existing.is_empty() {
            continue;
        }
        match objects.create(kind(plural), "", class).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
