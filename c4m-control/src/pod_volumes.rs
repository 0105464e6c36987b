//! A pod's volumes resolved for its node, as the kubelet would read them:
//! the annotation [`RESOLVED_VOLUMES`] on the instance as it leaves (never
//! stored), from volume name to [`ResolvedVolume`].
//!
//! - `configMap`, `secret`, `projected` (configMap, secret and downwardAPI
//!   sources) and `downwardAPI` become the `Files` to write, with `items`,
//!   `defaultMode`, `mode` and `optional` applied; projected
//!   `serviceAccountToken` and `clusterTrustBundle` sources are left out
//!   (c4m issues no service account tokens; the manifest warns of them).
//! - `persistentVolumeClaim` and `ephemeral` (the claim `<pod>-<volume>`)
//!   become the `Claim` to stage, from the bound PersistentVolume.
//! - What cannot be set up yet (a claim not bound, a ConfigMap or Secret
//!   missing and not optional) is `Waiting`, in the kubelet's words.
//!
//! `emptyDir` and `hostPath` need nothing beyond the pod and are absent.
//! The assignment stream resolves again whenever a ConfigMap, Secret,
//! claim or PersistentVolume changes, and re-sends an instance whose
//! resolution changed: that is how projected files follow their sources.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use c4m_core::annotations::RESOLVED_VOLUMES;
use c4m_core::volumes::{ProjectedFile, ResolvedVolume, VolumeSource};
use serde_json::{Value, json};

use crate::cache::Cache;
use crate::objects::{kind, name_of, namespace_of};

/// The kubelet's default file mode of projected files (`0644`).
const DEFAULT_MODE: u32 = 0o644;

/// `pod` with its resolved volumes in [`RESOLVED_VOLUMES`] (the annotation
/// removed when none needs resolving).
pub(crate) fn with_resolved_volumes(cache: &Cache, mut pod: Value) -> Value {
    let resolved = resolve(cache, &pod);
    if resolved.is_empty() {
        if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
            annotations.remove(RESOLVED_VOLUMES);
        }
        return pod;
    }
    let text = serde_json::to_string(&resolved).unwrap_or_default();
    // A stored instance's annotations are an object (checked on write):
    // there is always room for this one.
    let _ = crate::json::set_path(
        &mut pod,
        &["metadata", "annotations", RESOLVED_VOLUMES],
        json!(text),
    );
    pod
}

/// Each volume of `pod` whose source lives in other objects, resolved.
pub(crate) fn resolve(cache: &Cache, pod: &Value) -> BTreeMap<String, ResolvedVolume> {
    let mut resolved = BTreeMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(name) = volume["name"].as_str() else {
            continue;
        };
        let outcome = if volume["persistentVolumeClaim"].is_object() {
            let claim = volume["persistentVolumeClaim"]["claimName"]
                .as_str()
                .unwrap_or_default();
            let read_only = volume["persistentVolumeClaim"]["readOnly"] == true;
            Some(claim_volume(cache, pod, claim, read_only, false))
        } else if volume["ephemeral"].is_object() {
            let claim = format!("{}-{name}", name_of(pod));
            Some(claim_volume(cache, pod, &claim, false, true))
        } else {
            ["configMap", "secret", "projected", "downwardAPI"]
                .into_iter()
                .find(|k| volume[*k].is_object())
                .map(|kind| {
                    files_volume(cache, pod, kind, &volume[kind]).map_or_else(
                        |message| ResolvedVolume::Waiting { message },
                        |files| ResolvedVolume::Files { files },
                    )
                })
        };
        if let Some(outcome) = outcome {
            resolved.insert(name.to_string(), outcome);
        }
    }
    resolved
}

fn mode_of(value: &Value, default: u32) -> u32 {
    value
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(default)
}

/// The files of a configMap, secret, projected or downwardAPI volume
/// (`source`), sorted by path; or why they cannot be made yet.
fn files_volume(
    cache: &Cache,
    pod: &Value,
    kind_name: &str,
    source: &Value,
) -> Result<Vec<ProjectedFile>, String> {
    let default_mode = mode_of(&source["defaultMode"], DEFAULT_MODE);
    let mut files = BTreeMap::new();
    match kind_name {
        "projected" => {
            for projection in source["sources"].as_array().into_iter().flatten() {
                if projection["configMap"].is_object() {
                    data_files(
                        cache,
                        pod,
                        "configmaps",
                        &projection["configMap"],
                        default_mode,
                        &mut files,
                    )?;
                } else if projection["secret"].is_object() {
                    data_files(
                        cache,
                        pod,
                        "secrets",
                        &projection["secret"],
                        default_mode,
                        &mut files,
                    )?;
                } else if projection["downwardAPI"].is_object() {
                    downward_files(
                        cache,
                        pod,
                        &projection["downwardAPI"],
                        default_mode,
                        &mut files,
                    )?;
                }
            }
        }
        "configMap" => data_files(cache, pod, "configmaps", source, default_mode, &mut files)?,
        "secret" => data_files(cache, pod, "secrets", source, default_mode, &mut files)?,
        _ => downward_files(cache, pod, source, default_mode, &mut files)?,
    }
    Ok(files
        .into_iter()
        .map(|(path, (base64, mode))| ProjectedFile { path, base64, mode })
        .collect())
}

/// Each key of a ConfigMap or Secret as base64 of the file's bytes.
fn object_data(object: &Value, plural: &str) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let text = |value: &Value| value.as_str().map(|s| STANDARD.encode(s.as_bytes()));
    let bytes = |value: &Value| {
        value
            .as_str()
            .and_then(|s| STANDARD.decode(s.trim()).ok())
            .map(|b| STANDARD.encode(b))
    };
    let (encoded, plain) = if plural == "secrets" {
        ("data", "stringData")
    } else {
        ("binaryData", "data")
    };
    for (field, read) in [
        (encoded, &bytes as &dyn Fn(&Value) -> Option<String>),
        (plain, &text),
    ] {
        for (key, value) in object[field].as_object().into_iter().flatten() {
            if let Some(content) = read(value) {
                data.insert(key.clone(), content);
            }
        }
    }
    data
}

/// A path in a volume: relative, without `..`.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(format!("invalid path {path:?} in volume items"));
    }
    Ok(())
}

/// The files of a configMap or secret source (`source`), into `files`.
fn data_files(
    cache: &Cache,
    pod: &Value,
    plural: &str,
    source: &Value,
    default_mode: u32,
    files: &mut BTreeMap<String, (String, u32)>,
) -> Result<(), String> {
    let name_field = if plural == "secrets" && source["secretName"].is_string() {
        "secretName"
    } else {
        "name"
    };
    let name = source[name_field].as_str().unwrap_or_default();
    let optional = source["optional"] == true;
    let singular = if plural == "secrets" {
        "secret"
    } else {
        "configmap"
    };
    let Some(object) = cache.get(kind(plural), namespace_of(pod), name) else {
        return if optional {
            Ok(())
        } else {
            Err(format!("{singular} \"{name}\" not found"))
        };
    };
    let default_mode = mode_of(&source["defaultMode"], default_mode);
    let data = object_data(&object, plural);
    match source["items"].as_array().filter(|items| !items.is_empty()) {
        None => {
            for (key, content) in data {
                files.insert(key, (content, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or_default();
                let path = item["path"].as_str().unwrap_or(key);
                check_path(path)?;
                match data.get(key) {
                    Some(content) => {
                        files.insert(
                            path.to_string(),
                            (content.clone(), mode_of(&item["mode"], default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "{singular} references non-existent config key: {key}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `key="value"` lines, sorted, as the kubelet writes labels and annotations.
fn pairs(map: &Value) -> String {
    let mut lines: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                Value::String(v.as_str().unwrap_or_default().into())
            )
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The files of a downwardAPI source, into `files`.
fn downward_files(
    cache: &Cache,
    pod: &Value,
    source: &Value,
    default_mode: u32,
    files: &mut BTreeMap<String, (String, u32)>,
) -> Result<(), String> {
    for item in source["items"].as_array().into_iter().flatten() {
        let path = item["path"].as_str().unwrap_or_default();
        check_path(path)?;
        let content = if let Some(field) = item["fieldRef"]["fieldPath"].as_str() {
            field_value(pod, field)?
        } else if item["resourceFieldRef"].is_object() {
            resource_value(cache, pod, &item["resourceFieldRef"])?
        } else {
            return Err(format!("downwardAPI item {path:?} names no field"));
        };
        files.insert(
            path.to_string(),
            (
                STANDARD.encode(content),
                mode_of(&item["mode"], default_mode),
            ),
        );
    }
    Ok(())
}

/// A pod field a downwardAPI volume may project.
fn field_value(pod: &Value, field: &str) -> Result<String, String> {
    let metadata = &pod["metadata"];
    let quoted = |prefix: &str| {
        field
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
    };
    Ok(match field {
        "metadata.name" | "metadata.namespace" | "metadata.uid" => metadata
            [&field["metadata.".len()..]]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        "metadata.labels" => pairs(&metadata["labels"]),
        "metadata.annotations" => {
            let mut annotations = metadata["annotations"].clone();
            if let Some(map) = annotations.as_object_mut() {
                map.retain(|k, _| !k.starts_with("c4m.io/"));
            }
            pairs(&annotations)
        }
        "spec.nodeName" | "spec.serviceAccountName" => pod["spec"][&field["spec.".len()..]]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        _ => {
            if let Some(label) = quoted("metadata.labels['") {
                metadata["labels"][label]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else if let Some(annotation) = quoted("metadata.annotations['") {
                metadata["annotations"][annotation]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else {
                return Err(format!("fieldRef {field:?} is not supported in a volume"));
            }
        }
    })
}

/// A container's limit or request (`limits.cpu`, `requests.memory`,
/// `limits.ephemeral-storage`, ...) over `divisor`, rounded up as the
/// kubelet does; a limit not set is the node's allocatable.
fn resource_value(cache: &Cache, pod: &Value, reference: &Value) -> Result<String, String> {
    let resource = reference["resource"].as_str().unwrap_or_default();
    let container_name = reference["containerName"].as_str().unwrap_or_default();
    let container = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == container_name)
        .ok_or_else(|| format!("resourceFieldRef: no container {container_name:?}"))?;
    let (section, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("resourceFieldRef: unsupported resource {resource:?}"))?;
    let node_allocatable = || {
        let node = crate::pods::node_name(pod).and_then(|n| cache.get(kind("nodes"), "", n))?;
        node["status"]["allocatable"][name]
            .as_str()
            .map(str::to_string)
    };
    let quantity = container["resources"][section][name]
        .as_str()
        .map(str::to_string)
        .or_else(|| match section {
            "limits" => node_allocatable(),
            _ => None,
        })
        .unwrap_or_else(|| "0".into());
    let divisor = reference["divisor"].as_str().unwrap_or("1");
    let parse = |text: &str| {
        if name == "cpu" {
            c4m_core::parse_cpu_millis(text)
        } else {
            c4m_core::parse_memory_bytes(text)
        }
    };
    let (value, divisor) = match (parse(&quantity), parse(divisor)) {
        (Ok(value), Ok(divisor)) if divisor > 0 => (value, divisor),
        _ => {
            return Err(format!(
                "resourceFieldRef: cannot divide {quantity:?} by {divisor:?}"
            ));
        }
    };
    Ok(value.div_ceil(divisor).to_string())
}

/// The claim `claim_name` of `pod` as its node mounts it.
fn claim_volume(
    cache: &Cache,
    pod: &Value,
    claim_name: &str,
    read_only: bool,
    ephemeral: bool,
) -> ResolvedVolume {
    let namespace = namespace_of(pod);
    let waiting = |message: String| ResolvedVolume::Waiting { message };
    let Some(claim) = cache.get(kind("persistentvolumeclaims"), namespace, claim_name) else {
        return waiting(format!("persistentvolumeclaim \"{claim_name}\" not found"));
    };
    if ephemeral && !crate::controllers::volumes::made_for(&claim, pod) {
        return waiting(format!(
            "PVC {namespace}/{claim_name} was not created for pod {namespace}/{} (pod is not owner)",
            name_of(pod)
        ));
    }
    if crate::deletion::is_deleting(&claim) {
        return waiting(format!(
            "persistentvolumeclaim \"{claim_name}\" is being deleted"
        ));
    }
    let volume_name = claim["spec"]["volumeName"].as_str().unwrap_or_default();
    if claim["status"]["phase"] != "Bound" || volume_name.is_empty() {
        return waiting(format!("persistentvolumeclaim \"{claim_name}\" not bound"));
    }
    let Some(pv) = cache.get(kind("persistentvolumes"), "", volume_name) else {
        return waiting(format!(
            "persistentvolume \"{volume_name}\" of claim \"{claim_name}\" not found"
        ));
    };
    let spec = &pv["spec"];
    let source = if spec["csi"].is_object() {
        let attributes = spec["csi"]["volumeAttributes"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        VolumeSource::Csi {
            driver: text(&spec["csi"]["driver"]),
            handle: text(&spec["csi"]["volumeHandle"]),
            fs_type: spec["csi"]["fsType"].as_str().map(str::to_string),
            attributes,
        }
    } else if spec["nfs"].is_object() {
        VolumeSource::Nfs {
            server: text(&spec["nfs"]["server"]),
            path: text(&spec["nfs"]["path"]),
        }
    } else if let Some(path) = spec["local"]["path"]
        .as_str()
        .or_else(|| spec["hostPath"]["path"].as_str())
    {
        VolumeSource::HostDir {
            path: path.to_string(),
        }
    } else {
        return waiting(format!(
            "persistentvolume \"{volume_name}\" has no source c4m can mount (csi, nfs, local, hostPath)"
        ));
    };
    let read_only_many = spec["accessModes"] == json!(["ReadOnlyMany"]);
    ResolvedVolume::Claim {
        claim: format!("{namespace}/{claim_name}"),
        source,
        read_only: read_only || read_only_many,
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn file(path: &str, content: &str, mode: u32) -> ProjectedFile {
        ProjectedFile {
            path: path.into(),
            base64: STANDARD.encode(content),
            mode,
        }
    }

    #[tokio::test]
    async fn every_source_resolves_to_files_a_claim_or_a_reason_to_wait() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let create = |plural: &'static str, value: Value| {
            let objects = objects.clone();
            async move {
                let namespace = value["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                objects
                    .create(kind(plural), &namespace, value)
                    .await
                    .unwrap()
            }
        };
        create(
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default"},
            "data": {"a.conf": "alpha", "b.conf": "beta"}, "binaryData": {"bin": "AAE="}}),
        )
        .await;
        create(
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "data": {"password": STANDARD.encode("hunter2")}}),
        )
        .await;
        create(
            "persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "unbound", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
        create(
            "persistentvolumes",
            json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                "csi": {"driver": "c4m.io/local", "volumeHandle": "pvc-1", "fsType": "ext4"}}}),
        )
        .await;
        create(
            "persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
        objects
            .update_with(kind("persistentvolumeclaims"), "default", "data", |c| {
                c["spec"]["volumeName"] = json!("pvc-1");
                c["status"]["phase"] = json!("Bound");
                true
            })
            .await
            .unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1",
            "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"memory": "64Mi"}}}],
            "volumes": [
                {"name": "config", "configMap": {"name": "cm", "defaultMode": 0o600,
                    "items": [{"key": "a.conf", "path": "conf/a"}, {"key": "bin", "path": "bin", "mode": 0o755}]}},
                {"name": "all", "configMap": {"name": "cm"}},
                {"name": "creds", "secret": {"secretName": "s"}},
                {"name": "missing", "configMap": {"name": "nope"}},
                {"name": "maybe", "secret": {"secretName": "nope", "optional": true}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "c",
                        "resource": "limits.memory", "divisor": "1Mi"}}]}},
                {"name": "mixed", "projected": {"sources": [
                    {"configMap": {"name": "cm", "items": [{"key": "b.conf", "path": "b"}]}},
                    {"secret": {"name": "s"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}},
                {"name": "pending", "persistentVolumeClaim": {"claimName": "unbound"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "tmp", "emptyDir": {}},
            ]}});
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        let resolved = resolve(&cache, &pod);
        let files = |name: &str| match &resolved[name] {
            ResolvedVolume::Files { files } => files.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            files("config"),
            [
                ProjectedFile {
                    path: "bin".into(),
                    base64: "AAE=".into(),
                    mode: 0o755
                },
                file("conf/a", "alpha", 0o600),
            ]
        );
        assert_eq!(files("all").len(), 3);
        assert_eq!(files("creds"), [file("password", "hunter2", 0o644)]);
        assert_eq!(
            resolved["missing"],
            ResolvedVolume::Waiting {
                message: "configmap \"nope\" not found".into()
            }
        );
        assert!(files("maybe").is_empty());
        assert_eq!(
            files("info"),
            [
                file("labels", "app=\"web\"\ntier=\"front\"", 0o644),
                file("mem", "64", 0o644),
                file("name", "web", 0o644),
            ]
        );
        assert_eq!(
            files("mixed"),
            [file("b", "beta", 0o644), file("password", "hunter2", 0o644)]
        );
        assert_eq!(
            resolved["data"],
            ResolvedVolume::Claim {
                claim: "default/data".into(),
                source: VolumeSource::Csi {
                    driver: "c4m.io/local".into(),
                    handle: "pvc-1".into(),
                    fs_type: Some("ext4".into()),
                    attributes: BTreeMap::new(),
                },
                read_only: true,
            }
        );
        assert_eq!(
            resolved["pending"],
            ResolvedVolume::Waiting {
                message: "persistentvolumeclaim \"unbound\" not bound".into()
            }
        );
        assert_eq!(
            resolved["scratch"],
            ResolvedVolume::Waiting {
                message: "persistentvolumeclaim \"web-scratch\" not found".into()
            }
        );
        assert!(!resolved.contains_key("tmp"));
        shutdown.cancel();
    }
}
