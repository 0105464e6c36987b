//! Validation of the storage kinds (PersistentVolume, PersistentVolumeClaim,
//! StorageClass and the CSI snapshotter's VolumeSnapshot,
//! VolumeSnapshotClass and VolumeSnapshotContent) and of a pod's volumes,
//! in kube-apiserver's words (`pkg/apis/core/validation`,
//! `pkg/apis/storage/validation`, and the snapshotter's CRD rules).
//!
//! What depends on other objects or on the object's previous version (the
//! default class, immutable fields, expansion) is the control plane's.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PodSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use super::{
    FieldError, check_label_selector, check_one_of, dns1123_label, dns1123_subdomain, field_error,
    join, typed,
};
use crate::quantity::parse_memory_bytes;

/// The access modes Kubernetes knows.
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// A PersistentVolume's sources (`spec.<source>`), every one Kubernetes
/// knows; [`HONOURED_PV_SOURCES`] are those c4m's nodes mount.
const PV_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// The PersistentVolume sources a node can mount.
const HONOURED_PV_SOURCES: &[&str] = &["csi", "hostPath", "local", "nfs"];

/// A pod volume's sources, every one Kubernetes knows.
const POD_VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

const PV_RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const DELETION_POLICIES: &[&str] = &["Delete", "Retain"];

fn check_access_modes(modes: Option<&[String]>, path: &str, claim: bool) -> Result<(), FieldError> {
    let modes = modes.unwrap_or_default();
    if modes.is_empty() {
        let detail = if claim {
            "Required value: at least 1 access mode is required"
        } else {
            "Required value"
        };
        return Err(field_error(path, detail));
    }
    for (i, mode) in modes.iter().enumerate() {
        check_one_of(Some(mode), ACCESS_MODES, &format!("{path}[{i}]"))?;
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        return Err(field_error(
            path,
            "Forbidden: may not use ReadWriteOncePod with other access modes",
        ));
    }
    Ok(())
}

/// A storage size: a quantity greater than zero, in bytes.
fn storage_bytes(text: &str, path: &str) -> Result<u64, FieldError> {
    match parse_memory_bytes(text) {
        Ok(0) => Err(field_error(path, "must be greater than zero")),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(field_error(path, e.to_string())),
    }
}

fn check_class_name(name: Option<&str>, path: &str) -> Result<(), FieldError> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => dns1123_subdomain(name)
            .map_err(|reason| field_error(path, format!("{name:?} {reason}"))),
        None => Ok(()),
    }
}

/// The sources set in `spec` among `known`.
fn sources_set<'a>(spec: &Value, known: &[&'a str]) -> Vec<&'a str> {
    known
        .iter()
        .copied()
        .filter(|source| spec.get(*source).is_some_and(|v| !v.is_null()))
        .collect()
}

/// Exactly one source among `known` in `spec` (at `path`).
fn exactly_one_source(spec: &Value, known: &[&str], path: &str) -> Result<(), FieldError> {
    match sources_set(spec, known)[..] {
        [] => Err(field_error(
            path,
            "Required value: must specify a volume type",
        )),
        [_] => Ok(()),
        [_, second, ..] => Err(field_error(
            join(path, second),
            "Forbidden: may not specify more than 1 volume type",
        )),
    }
}

pub(super) fn check_persistent_volume(value: &Value) -> Result<ObjectMeta, FieldError> {
    let pv: PersistentVolume = typed(value)?;
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    check_access_modes(spec.access_modes.as_deref(), "spec.accessModes", false)?;
    let capacity = spec.capacity.as_ref().filter(|c| !c.is_empty());
    let Some(capacity) = capacity else {
        return Err(field_error("spec.capacity", "Required value"));
    };
    match capacity.get("storage") {
        Some(size) if capacity.len() == 1 => {
            storage_bytes(&size.0, "spec.capacity[storage]")?;
        }
        _ => {
            let keys: Vec<&str> = capacity.keys().map(String::as_str).collect();
            return Err(field_error(
                "spec.capacity",
                format!(
                    "Unsupported value: {:?}: supported values: \"storage\"",
                    keys.join(", ")
                ),
            ));
        }
    }
    exactly_one_source(&value["spec"], PV_SOURCES, "spec")?;
    check_one_of(
        spec.persistent_volume_reclaim_policy.as_deref(),
        PV_RECLAIM_POLICIES,
        "spec.persistentVolumeReclaimPolicy",
    )?;
    check_one_of(spec.volume_mode.as_deref(), VOLUME_MODES, "spec.volumeMode")?;
    check_class_name(spec.storage_class_name.as_deref(), "spec.storageClassName")?;
    if let Some(csi) = &spec.csi {
        if csi.driver.is_empty() {
            return Err(field_error("spec.csi.driver", "Required value"));
        }
        if csi.volume_handle.is_empty() {
            return Err(field_error("spec.csi.volumeHandle", "Required value"));
        }
    }
    if let Some(nfs) = &spec.nfs {
        if nfs.server.is_empty() {
            return Err(field_error("spec.nfs.server", "Required value"));
        }
        check_absolute(&nfs.path, "spec.nfs.path")?;
    }
    if let Some(host_path) = &spec.host_path {
        check_absolute(&host_path.path, "spec.hostPath.path")?;
    }
    if let Some(local) = &spec.local {
        check_absolute(&local.path, "spec.local.path")?;
        if spec.node_affinity.is_none() {
            return Err(field_error(
                "spec.nodeAffinity",
                "Required value: Local volume requires node affinity",
            ));
        }
    }
    Ok(pv.metadata)
}

fn check_absolute(path_value: &str, path: &str) -> Result<(), FieldError> {
    if path_value.is_empty() {
        return Err(field_error(path, "Required value"));
    }
    if !path_value.starts_with('/') {
        return Err(field_error(path, "must be an absolute path"));
    }
    if path_value.split('/').any(|part| part == "..") {
        return Err(field_error(path, "must not contain '..'"));
    }
    Ok(())
}

pub(super) fn check_persistent_volume_claim(value: &Value) -> Result<ObjectMeta, FieldError> {
    let claim: PersistentVolumeClaim = typed(value)?;
    let spec = claim
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    check_claim_spec(spec, "spec")?;
    Ok(claim.metadata)
}

/// Checks a claim's spec (also a StatefulSet's `volumeClaimTemplates` and
/// an ephemeral volume's template) at `path`.
///
/// # Errors
/// The first problem, as `(field path, message)` in Kubernetes' words.
pub fn check_claim_spec(
    spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
    path: &str,
) -> Result<(), FieldError> {
    check_access_modes(
        spec.access_modes.as_deref(),
        &join(path, "accessModes"),
        true,
    )?;
    let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let storage_path = join(path, "resources[storage]");
    match requests.and_then(|r| r.get("storage")) {
        None => return Err(field_error(storage_path, "Required value")),
        Some(size) => {
            storage_bytes(&size.0, &storage_path)?;
        }
    }
    if let Some(selector) = &spec.selector {
        check_label_selector(selector, &join(path, "selector"))?;
    }
    check_one_of(
        spec.volume_mode.as_deref(),
        VOLUME_MODES,
        &join(path, "volumeMode"),
    )?;
    check_class_name(
        spec.storage_class_name.as_deref(),
        &join(path, "storageClassName"),
    )?;
    // What a node can fill a new volume from: a VolumeSnapshot of its
    // namespace (no clone of a claim, no other populator).
    let sources = [
        (
            "dataSource",
            spec.data_source
                .as_ref()
                .map(|s| (&s.api_group, &s.kind, &s.name, &None)),
        ),
        (
            "dataSourceRef",
            spec.data_source_ref
                .as_ref()
                .map(|s| (&s.api_group, &s.kind, &s.name, &s.namespace)),
        ),
    ];
    for (field, source) in sources {
        let Some((group, kind, name, namespace)) = source else {
            continue;
        };
        let field = join(path, field);
        if name.is_empty() {
            return Err(field_error(join(&field, "name"), "Required value"));
        }
        if group.as_deref() != Some("snapshot.storage.k8s.io") || kind != "VolumeSnapshot" {
            return Err(field_error(
                field,
                format!(
                    "Unsupported value: {kind:?}: supported values: \"VolumeSnapshot\" (apiGroup snapshot.storage.k8s.io): c4m restores volumes from snapshots and does not clone claims"
                ),
            ));
        }
        if namespace.is_some() {
            return Err(field_error(
                join(&field, "namespace"),
                "Forbidden: a snapshot of another namespace cannot be restored here",
            ));
        }
    }
    Ok(())
}

pub(super) fn check_storage_class(value: &Value) -> Result<ObjectMeta, FieldError> {
    if value.get("provisioner").is_none_or(Value::is_null) {
        return Err(field_error("provisioner", "Required value"));
    }
    let class: StorageClass = typed(value)?;
    if class.provisioner.is_empty() {
        return Err(field_error("provisioner", "Required value"));
    }
    check_qualified_name(&class.provisioner, "provisioner")?;
    check_one_of(
        class.reclaim_policy.as_deref(),
        CLASS_RECLAIM_POLICIES,
        "reclaimPolicy",
    )?;
    check_one_of(
        class.volume_binding_mode.as_deref(),
        BINDING_MODES,
        "volumeBindingMode",
    )?;
    check_parameters(class.parameters.as_ref(), "parameters")?;
    Ok(class.metadata)
}

/// A provisioner or driver name: a qualified name (`c4m.io/local`,
/// `kubernetes.io/no-provisioner`, `hostpath.csi.k8s.io`).
fn check_qualified_name(name: &str, path: &str) -> Result<(), FieldError> {
    let (prefix, last) = match name.rsplit_once('/') {
        Some((prefix, last)) => (Some(prefix), last),
        None => (None, name),
    };
    let last_ok = !last.is_empty()
        && last.len() <= 63
        && last
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && last.starts_with(|c: char| c.is_ascii_alphanumeric())
        && last.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| dns1123_subdomain(p).is_ok());
    if last_ok && prefix_ok {
        Ok(())
    } else {
        Err(field_error(
            path,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc'), with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        ))
    }
}

fn check_parameters(
    parameters: Option<&BTreeMap<String, String>>,
    path: &str,
) -> Result<(), FieldError> {
    const MAX_PARAMETERS: usize = 512;
    if parameters.is_some_and(|p| p.len() > MAX_PARAMETERS) {
        return Err(field_error(
            path,
            format!("Too many: must have at most {MAX_PARAMETERS} parameters"),
        ));
    }
    if parameters.is_some_and(|p| p.keys().any(String::is_empty)) {
        return Err(field_error(path, "Invalid value: \"\": must not be empty"));
    }
    Ok(())
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshot {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: VolumeSnapshotSpec,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshotSpec {
    source: VolumeSnapshotSource,
    volume_snapshot_class_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshotSource {
    persistent_volume_claim_name: Option<String>,
    volume_snapshot_content_name: Option<String>,
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotClass.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshotClass {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    driver: String,
    deletion_policy: String,
    parameters: Option<BTreeMap<String, String>>,
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotContent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshotContent {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: VolumeSnapshotContentSpec,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshotContentSpec {
    deletion_policy: String,
    driver: String,
    source: VolumeSnapshotContentSource,
    volume_snapshot_class_name: Option<String>,
    volume_snapshot_ref: k8s_openapi::api::core::v1::ObjectReference,
    source_volume_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeSnapshotContentSource {
    snapshot_handle: Option<String>,
    volume_handle: Option<String>,
}

fn present(value: Option<&String>) -> bool {
    value.is_some()
}

pub(super) fn check_volume_snapshot(value: &Value) -> Result<ObjectMeta, FieldError> {
    let snapshot: VolumeSnapshot = typed(value)?;
    let source = &snapshot.spec.source;
    if present(source.persistent_volume_claim_name.as_ref())
        == present(source.volume_snapshot_content_name.as_ref())
    {
        return Err(field_error(
            "spec.source",
            "Invalid value: \"object\": exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set",
        ));
    }
    if snapshot.spec.volume_snapshot_class_name.as_deref() == Some("") {
        return Err(field_error(
            "spec.volumeSnapshotClassName",
            "Invalid value: \"string\": volumeSnapshotClassName must not be the empty string when set",
        ));
    }
    Ok(snapshot.metadata)
}

pub(super) fn check_volume_snapshot_class(value: &Value) -> Result<ObjectMeta, FieldError> {
    let class: VolumeSnapshotClass = typed(value)?;
    check_qualified_name(&class.driver, "driver")?;
    check_one_of(
        Some(&class.deletion_policy),
        DELETION_POLICIES,
        "deletionPolicy",
    )?;
    check_parameters(class.parameters.as_ref(), "parameters")?;
    Ok(class.metadata)
}

pub(super) fn check_volume_snapshot_content(value: &Value) -> Result<ObjectMeta, FieldError> {
    let content: VolumeSnapshotContent = typed(value)?;
    let spec = &content.spec;
    check_qualified_name(&spec.driver, "spec.driver")?;
    check_one_of(
        Some(&spec.deletion_policy),
        DELETION_POLICIES,
        "spec.deletionPolicy",
    )?;
    if present(spec.source.snapshot_handle.as_ref()) == present(spec.source.volume_handle.as_ref())
    {
        return Err(field_error(
            "spec.source",
            "Invalid value: \"object\": exactly one of volumeHandle and snapshotHandle must be set",
        ));
    }
    let reference = &spec.volume_snapshot_ref;
    if reference.name.as_deref().is_none_or(str::is_empty)
        || reference.namespace.as_deref().is_none_or(str::is_empty)
    {
        return Err(field_error(
            "spec.volumeSnapshotRef",
            "Invalid value: \"object\": both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set",
        ));
    }
    check_one_of(
        spec.source_volume_mode.as_deref(),
        VOLUME_MODES,
        "spec.sourceVolumeMode",
    )?;
    if spec.volume_snapshot_class_name.as_deref() == Some("") {
        return Err(field_error(
            "spec.volumeSnapshotClassName",
            "Invalid value: \"string\": volumeSnapshotClassName must not be the empty string when set",
        ));
    }
    Ok(content.metadata)
}

/// A pod's volumes and mounts as the API server checks them: volume names
/// DNS labels and unique, at most one source each (none is an `emptyDir`),
/// claims named, and every container's `volumeMounts` naming a volume of the
/// pod, each at its own absolute-or-relative non-empty path.
pub(super) fn check_pod_volumes(spec: &PodSpec, path: &str) -> Result<(), FieldError> {
    let volumes_path = join(path, "volumes");
    let mut names = HashSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let volume_path = format!("{volumes_path}[{i}]");
        let name_path = join(&volume_path, "name");
        if volume.name.is_empty() {
            return Err(field_error(name_path, "Required value"));
        }
        dns1123_label(&volume.name)
            .map_err(|reason| field_error(&name_path, format!("{:?} {reason}", volume.name)))?;
        if !names.insert(volume.name.as_str()) {
            return Err(field_error(
                name_path,
                format!("Duplicate value: {:?}", volume.name),
            ));
        }
        let volume_value = serde_json::to_value(volume).unwrap_or_default();
        if sources_set(&volume_value, POD_VOLUME_SOURCES).len() > 1 {
            exactly_one_source(&volume_value, POD_VOLUME_SOURCES, &volume_path)?;
        }
        if let Some(claim) = &volume.persistent_volume_claim
            && claim.claim_name.is_empty()
        {
            return Err(field_error(
                join(&volume_path, "persistentVolumeClaim.claimName"),
                "Required value",
            ));
        }
        if let Some(ephemeral) = &volume.ephemeral {
            let template_path = join(&volume_path, "ephemeral.volumeClaimTemplate");
            let Some(template) = &ephemeral.volume_claim_template else {
                return Err(field_error(template_path, "Required value"));
            };
            check_claim_spec(&template.spec, &join(&template_path, "spec"))?;
        }
    }
    Ok(())
}

/// Warnings for storage fields c4m accepts but cannot honour: a
/// PersistentVolume source no node mounts.
pub(super) fn unhonoured(kind: &str, value: &Value) -> Vec<String> {
    if kind != "PersistentVolume" {
        return Vec::new();
    }
    sources_set(&value["spec"], PV_SOURCES)
        .into_iter()
        .filter(|source| !HONOURED_PV_SOURCES.contains(source))
        .map(|source| {
            format!("spec.{source} is not supported: claims bound to this volume cannot be mounted (c4m mounts csi, nfs, local and hostPath)")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::validate_value;

    fn error(value: serde_json::Value) -> (String, String) {
        validate_value(&value).unwrap_err()
    }

    fn pv(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv1"}, "spec": spec})
    }

    fn claim(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_persistent_volume_needs_modes_capacity_and_exactly_one_source() {
        let good = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "nfs": {"server": "10.0.0.1", "path": "/exports"}});
        assert!(validate_value(&pv(good.clone())).is_ok());
        let mut missing_modes = good.clone();
        missing_modes["accessModes"] = json!([]);
        assert_eq!(
            error(pv(missing_modes)),
            ("spec.accessModes".into(), "Required value".into())
        );
        let mut no_capacity = good.clone();
        no_capacity.as_object_mut().unwrap().remove("capacity");
        assert_eq!(
            error(pv(no_capacity)),
            ("spec.capacity".into(), "Required value".into())
        );
        let mut two = good.clone();
        two["hostPath"] = json!({"path": "/data"});
        assert_eq!(
            error(pv(two)),
            (
                "spec.nfs".into(),
                "Forbidden: may not specify more than 1 volume type".into()
            )
        );
        let mut none = good.clone();
        none.as_object_mut().unwrap().remove("nfs");
        assert_eq!(
            error(pv(none)),
            (
                "spec".into(),
                "Required value: must specify a volume type".into()
            )
        );
        let mut bad_mode = good.clone();
        bad_mode["accessModes"] = json!(["ReadWriteSometimes"]);
        assert_eq!(
            error(pv(bad_mode)).1,
            "Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""
        );
        let local = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "local": {"path": "/mnt/disk"}});
        assert_eq!(
            error(pv(local)),
            (
                "spec.nodeAffinity".into(),
                "Required value: Local volume requires node affinity".into()
            )
        );
        let mut iscsi = good;
        iscsi.as_object_mut().unwrap().remove("nfs");
        iscsi["iscsi"] = json!({"targetPortal": "10.0.0.1:3260", "iqn": "iqn.x", "lun": 0});
        let validated = validate_value(&pv(iscsi)).unwrap();
        assert!(
            validated.warnings[0].contains("spec.iscsi is not supported"),
            "{:?}",
            validated.warnings
        );
    }

    #[test]
    fn a_claim_needs_modes_and_a_positive_storage_request() {
        let good = json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}});
        assert!(validate_value(&claim(good.clone())).is_ok());
        let mut no_modes = good.clone();
        no_modes.as_object_mut().unwrap().remove("accessModes");
        assert_eq!(
            error(claim(no_modes)),
            (
                "spec.accessModes".into(),
                "Required value: at least 1 access mode is required".into()
            )
        );
        assert_eq!(
            error(claim(json!({"accessModes": ["ReadWriteOnce"]}))),
            ("spec.resources[storage]".into(), "Required value".into())
        );
        let mut zero = good.clone();
        zero["resources"]["requests"]["storage"] = json!("0");
        assert_eq!(
            error(claim(zero)),
            (
                "spec.resources[storage]".into(),
                "must be greater than zero".into()
            )
        );
        let mut source = good.clone();
        source["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "x"});
        assert_eq!(
            error(claim(source)),
            (
                "spec.dataSource".into(),
                "Unsupported value: \"PersistentVolumeClaim\": supported values: \"VolumeSnapshot\" (apiGroup snapshot.storage.k8s.io): c4m restores volumes from snapshots and does not clone claims".into()
            )
        );
        let mut restore = good;
        restore["dataSourceRef"] = json!({"apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot", "name": "snap"});
        assert!(validate_value(&claim(restore.clone())).is_ok());
        restore["dataSourceRef"]["namespace"] = json!("other");
        assert_eq!(error(claim(restore)).0, "spec.dataSourceRef.namespace");
    }

    #[test]
    fn a_storage_class_needs_a_provisioner_and_known_policies() {
        let class = |extra: serde_json::Value| {
            let mut class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "fast"}});
            for (k, v) in extra.as_object().unwrap() {
                class[k] = v.clone();
            }
            class
        };
        assert!(validate_value(&class(json!({"provisioner": "c4m.io/local"}))).is_ok());
        assert_eq!(
            error(class(json!({}))),
            ("provisioner".into(), "Required value".into())
        );
        assert_eq!(
            error(class(
                json!({"provisioner": "c4m.io/local", "volumeBindingMode": "Later"})
            )),
            (
                "volumeBindingMode".into(),
                "Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"".into()
            )
        );
        assert_eq!(
            error(class(
                json!({"provisioner": "c4m.io/local", "reclaimPolicy": "Recycle"})
            ))
            .0,
            "reclaimPolicy"
        );
    }

    #[test]
    fn a_snapshot_names_exactly_one_source() {
        let snapshot = |source: serde_json::Value| {
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "s", "namespace": "default"},
                "spec": {"source": source}})
        };
        assert!(validate_value(&snapshot(json!({"persistentVolumeClaimName": "data"}))).is_ok());
        for source in [
            json!({}),
            json!({"persistentVolumeClaimName": "data", "volumeSnapshotContentName": "c"}),
        ] {
            assert_eq!(
                error(snapshot(source)),
                (
                    "spec.source".into(),
                    "Invalid value: \"object\": exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set".into()
                )
            );
        }
        let content = json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent", "metadata": {"name": "c"},
            "spec": {"driver": "c4m.io/local", "deletionPolicy": "Delete",
                "source": {"volumeHandle": "pvc-1"},
                "volumeSnapshotRef": {"name": "s", "namespace": "default"}}});
        assert!(validate_value(&content).is_ok());
        let mut no_ref = content;
        no_ref["spec"]["volumeSnapshotRef"] = json!({"name": "s"});
        assert_eq!(error(no_ref).0, "spec.volumeSnapshotRef");
        let class = json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass", "metadata": {"name": "local"},
            "driver": "c4m.io/local", "deletionPolicy": "Keep"});
        assert_eq!(error(class).0, "deletionPolicy");
    }

    #[test]
    fn a_mount_names_a_volume_of_the_pod() {
        let pod = |volumes: serde_json::Value, mounts: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"volumes": volumes, "containers": [{"name": "c", "image": "busybox",
                    "volumeMounts": mounts}]}})
        };
        let ok = pod(
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "emptyDir": {}}]),
            json!([{"name": "data", "mountPath": "/data"}, {"name": "scratch", "mountPath": "/tmp"}]),
        );
        let validated = validate_value(&ok).unwrap();
        assert!(validated.warnings.is_empty(), "{:?}", validated.warnings);
        assert_eq!(
            error(pod(
                json!([]),
                json!([{"name": "data", "mountPath": "/data"}])
            )),
            (
                "spec.containers[0].volumeMounts[0].name".into(),
                "Not found: \"data\"".into()
            )
        );
        assert_eq!(
            error(pod(
                json!([{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]),
                json!([])
            )),
            (
                "spec.volumes[1].name".into(),
                "Duplicate value: \"a\"".into()
            )
        );
        assert_eq!(
            error(pod(
                json!([{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}]),
                json!([])
            )),
            (
                "spec.volumes[0].hostPath".into(),
                "Forbidden: may not specify more than 1 volume type".into()
            )
        );
        let iscsi = pod(
            json!([{"name": "a", "iscsi": {"targetPortal": "10.0.0.1:3260", "iqn": "iqn.x", "lun": 0}}]),
            json!([]),
        );
        assert_eq!(
            validate_value(&iscsi).unwrap().warnings,
            ["Pod p: spec.volumes[0].iscsi is not supported and will be ignored"]
        );
    }
}
