//! What the node's storage should be, read from the mirrored storage objects
//! (claims, classes, PersistentVolumes, snapshot contents): pure functions,
//! so the fast tier tests them with hand-written objects.

use std::collections::{BTreeMap, BTreeSet};

use c4m_core::volumes::{
    LOCAL_DRIVER, NFS_DRIVER, PROVISIONER_FINALIZER, SELECTED_NODE, snapshot_handle_for,
    volume_handle_for_claim,
};
use c4m_storage::{AccessMode, MIN_VOLUME_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::objects::ObjectSet;

/// The kinds the volume manager reads from the control plane.
pub(crate) const KINDS: [&str; 4] = [
    "persistentvolumeclaims",
    "storageclasses",
    "persistentvolumes",
    "volumesnapshotcontents",
];

/// The NFS port when a class or volume names none.
pub(crate) const DEFAULT_NFS_PORT: u16 = 2049;
/// The MOUNT port when a class or volume names none (the port Linux's
/// `rpc.mountd` is usually pinned to; c4m asks no portmapper).
pub(crate) const DEFAULT_MOUNT_PORT: u16 = 20048;

/// One NFS export, as a class's `parameters` or a volume's
/// `volumeAttributes` name it (`server`, `share`, `nfsPort`, `mountPort`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NfsTarget {
    pub server: String,
    pub share: String,
    pub nfs_port: u16,
    pub mount_port: u16,
}

impl NfsTarget {
    /// The export in `attributes`; the error names the missing or bad key.
    pub(crate) fn from_attributes(attributes: &BTreeMap<String, String>) -> Result<Self, String> {
        let required = |key: &str| {
            attributes
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| format!("the nfs parameter {key:?} is required"))
        };
        let port = |key: &str, default: u16| match attributes.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("the nfs parameter {key:?} is not a port: {text:?}")),
        };
        Ok(Self {
            server: required("server")?,
            share: required("share")?,
            nfs_port: port("nfsPort", DEFAULT_NFS_PORT)?,
            mount_port: port("mountPort", DEFAULT_MOUNT_PORT)?,
        })
    }
}

/// Where a volume is, for the backends: c4m's local pool, an NFS export, or
/// a registered CSI driver.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Place {
    Local,
    Nfs(NfsTarget),
    Csi(String),
}

impl Place {
    /// The CSI driver name reports use.
    pub(crate) fn driver(&self) -> &str {
        match self {
            Place::Local => LOCAL_DRIVER,
            Place::Nfs(_) => NFS_DRIVER,
            Place::Csi(name) => name,
        }
    }

    /// The place of a volume of `driver` with `attributes` (a class's
    /// parameters or a PV's `volumeAttributes`).
    pub(crate) fn of(driver: &str, attributes: &BTreeMap<String, String>) -> Result<Self, String> {
        match driver {
            LOCAL_DRIVER => Ok(Place::Local),
            NFS_DRIVER => NfsTarget::from_attributes(attributes).map(Place::Nfs),
            other => Ok(Place::Csi(other.to_string())),
        }
    }
}

/// A claim this node is to provision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Provision {
    /// `pvc-<claim uid>`.
    pub handle: String,
    /// `NAMESPACE/NAME`, for logs.
    pub claim: String,
    pub place: Place,
    pub size_bytes: u64,
    pub access_mode: AccessMode,
    pub parameters: BTreeMap<String, String>,
    /// `snapshot-<VolumeSnapshot uid>` when the claim's `dataSource` names
    /// a VolumeSnapshot.
    pub restore_from: Option<String>,
}

/// A snapshot to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TakeSnapshot {
    /// `snapshot-<VolumeSnapshot uid>`.
    pub handle: String,
    /// The volume's handle (`spec.source.volumeHandle`).
    pub volume: String,
}

/// The node's storage as the objects want it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// Claims selected for this node (not being deleted).
    pub provisions: Vec<Provision>,
    /// Why a claim selected for this node cannot be provisioned, by
    /// handle, with its class's provisioner (empty when it has no class).
    pub refused: BTreeMap<String, (String, String)>,
    /// The size each volume's claim asks for now, by handle (expansion).
    pub sizes: BTreeMap<String, u64>,
    /// Snapshot contents to take.
    pub snapshots: Vec<TakeSnapshot>,
    /// Volume handles something still references: a PersistentVolume
    /// (its `volumeHandle` or its name) or a claim (`pvc-<uid>`); not a
    /// PersistentVolume being reclaimed (see `reclaimed`).
    pub kept_volumes: BTreeSet<String>,
    /// Volume handles (and names) any PersistentVolume references, being
    /// deleted or not: the node remembers that one did (`HeldVolumes`).
    pub pv_volumes: BTreeSet<String>,
    /// Volume handles (and names) of PersistentVolumes whose data is to be
    /// deleted now: being deleted, `Released`, reclaim policy `Delete`, and
    /// carrying [`PROVISIONER_FINALIZER`] (which keeps them until it is).
    pub reclaimed: BTreeSet<String>,
    /// Snapshot handles a VolumeSnapshotContent references.
    pub kept_snapshots: BTreeSet<String>,
    /// Every NFS export a class or a PersistentVolume names.
    pub nfs_exports: BTreeSet<NfsTarget>,
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fn map_at(value: &Value, path: &[&str]) -> BTreeMap<String, String> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn being_deleted(object: &Value) -> bool {
    str_at(object, &["metadata", "deletionTimestamp"]).is_some()
}

/// Whether the data of PersistentVolume `pv` is to be deleted: it is being
/// deleted, released by its claim, of reclaim policy `Delete`, and the
/// control plane waits for the data to go ([`PROVISIONER_FINALIZER`]). A
/// `Retain` volume, one still bound, or one whose finalizer was taken off
/// by hand keeps its data.
fn reclaimed(pv: &Value) -> bool {
    being_deleted(pv)
        && str_at(pv, &["status", "phase"]) == Some("Released")
        && str_at(pv, &["spec", "persistentVolumeReclaimPolicy"]) == Some("Delete")
        && pv
            .get("metadata")
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|f| f == PROVISIONER_FINALIZER))
}

fn access_mode(claim: &Value) -> AccessMode {
    let first = claim
        .get("spec")
        .and_then(|s| s.get("accessModes"))
        .and_then(Value::as_array)
        .and_then(|modes| modes.first())
        .and_then(Value::as_str);
    match first {
        Some("ReadWriteOncePod") => AccessMode::ReadWriteOncePod,
        Some("ReadOnlyMany") => AccessMode::ReadOnlyMany,
        Some("ReadWriteMany") => AccessMode::ReadWriteMany,
        _ => AccessMode::ReadWriteOnce,
    }
}

/// The bytes a claim asks for (`spec.resources.requests.storage`).
fn requested_bytes(claim: &Value) -> Result<u64, String> {
    let text = str_at(claim, &["spec", "resources", "requests", "storage"])
        .ok_or("spec.resources.requests.storage is required")?;
    c4m_core::parse_memory_bytes(text).map_err(|e| format!("spec.resources.requests.storage: {e}"))
}

/// The snapshot handle of the VolumeSnapshot a claim's `dataSource` (or
/// `dataSourceRef`) names, through its content's `volumeSnapshotRef`.
/// `Ok(None)`: no snapshot source; `Err`: one that is not there (yet).
fn restore_source(
    set: &ObjectSet,
    claim: &Value,
    namespace: &str,
) -> Result<Option<String>, String> {
    let spec = claim.get("spec");
    let source = ["dataSourceRef", "dataSource"]
        .iter()
        .find_map(|field| spec.and_then(|s| s.get(*field)))
        .filter(|s| str_at(s, &["kind"]) == Some("VolumeSnapshot"));
    let Some(source) = source else {
        return Ok(None);
    };
    let name = str_at(source, &["name"]).unwrap_or_default();
    set.of_kind("volumesnapshotcontents")
        .find(|content| {
            str_at(content, &["spec", "volumeSnapshotRef", "namespace"]) == Some(namespace)
                && str_at(content, &["spec", "volumeSnapshotRef", "name"]) == Some(name)
        })
        .and_then(|content| str_at(content, &["spec", "volumeSnapshotRef", "uid"]))
        .map(|uid| Some(snapshot_handle_for(uid)))
        .ok_or_else(|| format!("waiting for VolumeSnapshot {namespace}/{name} to have a content"))
}

/// What `set` asks of node `node`.
pub(crate) fn wanted(set: &ObjectSet, node: &str) -> Wanted {
    let mut wanted = Wanted::default();
    let classes: BTreeMap<&str, &Value> = set
        .of_kind("storageclasses")
        .filter_map(|c| Some((str_at(c, &["metadata", "name"])?, c.as_ref())))
        .collect();
    for class in classes.values() {
        if str_at(class, &["provisioner"]) == Some(NFS_DRIVER)
            && let Ok(target) = NfsTarget::from_attributes(&map_at(class, &["parameters"]))
        {
            wanted.nfs_exports.insert(target);
        }
    }
    let mut claim_sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for claim in set.of_kind("persistentvolumeclaims") {
        let Some(uid) = str_at(claim, &["metadata", "uid"]) else {
            continue;
        };
        let handle = volume_handle_for_claim(uid);
        wanted.kept_volumes.insert(handle.clone());
        let size = requested_bytes(claim);
        if let Ok(size) = size {
            claim_sizes.insert(uid, size);
        }
        if str_at(claim, &["metadata", "annotations", SELECTED_NODE]) != Some(node)
            || being_deleted(claim)
            || str_at(claim, &["spec", "volumeName"]).is_some_and(|v| !v.is_empty())
        {
            // Another node's, going away, or bound already.
            continue;
        }
        let namespace = str_at(claim, &["metadata", "namespace"]).unwrap_or_default();
        let name = str_at(claim, &["metadata", "name"]).unwrap_or_default();
        let class_name = str_at(claim, &["spec", "storageClassName"]).unwrap_or_default();
        let Some(class) = classes.get(class_name) else {
            wanted.refused.insert(
                handle,
                (
                    String::new(),
                    format!("storageclass {class_name:?} not found"),
                ),
            );
            continue;
        };
        let provisioner = str_at(class, &["provisioner"]).unwrap_or_default();
        if provisioner != LOCAL_DRIVER && provisioner != NFS_DRIVER {
            // Static classes and other provisioners are not this node's.
            continue;
        }
        let parameters = map_at(class, &["parameters"]);
        let provision = Place::of(provisioner, &parameters).and_then(|place| {
            let mut size_bytes = size?;
            if place == Place::Local {
                size_bytes = size_bytes.max(MIN_VOLUME_BYTES);
            }
            Ok(Provision {
                handle: handle.clone(),
                claim: format!("{namespace}/{name}"),
                place,
                size_bytes,
                access_mode: access_mode(claim),
                parameters,
                restore_from: restore_source(set, claim, namespace)?,
            })
        });
        match provision {
            Ok(provision) => wanted.provisions.push(provision),
            Err(reason) => {
                wanted
                    .refused
                    .insert(handle, (provisioner.to_string(), reason));
            }
        }
    }
    for pv in set.of_kind("persistentvolumes") {
        let handle = str_at(pv, &["spec", "csi", "volumeHandle"]);
        let reclaimed = reclaimed(pv);
        for reference in [str_at(pv, &["metadata", "name"]), handle]
            .into_iter()
            .flatten()
        {
            wanted.pv_volumes.insert(reference.to_string());
            if reclaimed {
                wanted.reclaimed.insert(reference.to_string());
            } else {
                wanted.kept_volumes.insert(reference.to_string());
            }
        }
        let Some(handle) = handle else {
            continue;
        };
        let driver = str_at(pv, &["spec", "csi", "driver"]).unwrap_or_default();
        if driver == NFS_DRIVER
            && let Ok(target) =
                NfsTarget::from_attributes(&map_at(pv, &["spec", "csi", "volumeAttributes"]))
        {
            wanted.nfs_exports.insert(target);
        }
        if let Some(size) =
            str_at(pv, &["spec", "claimRef", "uid"]).and_then(|uid| claim_sizes.get(uid))
        {
            wanted.sizes.insert(handle.to_string(), *size);
        }
    }
    for content in set.of_kind("volumesnapshotcontents") {
        let Some(uid) = str_at(content, &["spec", "volumeSnapshotRef", "uid"]) else {
            continue;
        };
        let handle = snapshot_handle_for(uid);
        wanted.kept_snapshots.insert(handle.clone());
        if let Some(taken) = str_at(content, &["status", "snapshotHandle"]) {
            wanted.kept_snapshots.insert(taken.to_string());
        }
        if let Some(volume) = str_at(content, &["spec", "source", "volumeHandle"])
            && !being_deleted(content)
        {
            wanted.snapshots.push(TakeSnapshot {
                handle,
                volume: volume.to_string(),
            });
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, uid: &str, node: Option<&str>, size: &str) -> Value {
        let mut annotations = serde_json::Map::new();
        if let Some(node) = node {
            annotations.insert(SELECTED_NODE.into(), json!(node));
        }
        json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "annotations": annotations},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}
        })
    }

    fn classes() -> Vec<(String, Value)> {
        vec![
            (
                "storageclasses/local".into(),
                json!({"metadata": {"name": "local"}, "provisioner": LOCAL_DRIVER}),
            ),
            (
                "storageclasses/shared".into(),
                json!({"metadata": {"name": "shared"}, "provisioner": NFS_DRIVER,
                       "parameters": {"server": "10.0.0.1", "share": "/export", "nfsPort": "3049", "mountPort": "3050"}}),
            ),
            (
                "storageclasses/static".into(),
                json!({"metadata": {"name": "static"}, "provisioner": "kubernetes.io/no-provisioner"}),
            ),
        ]
    }

    #[test]
    fn claims_selected_for_this_node_are_provisioned_with_their_class() {
        let mut objects = classes();
        objects.push((
            "persistentvolumeclaims/shop/a".into(),
            claim("a", "u1", Some("n1"), "1Gi"),
        ));
        objects.push((
            "persistentvolumeclaims/shop/other".into(),
            claim("other", "u2", Some("n2"), "1Gi"),
        ));
        objects.push((
            "persistentvolumeclaims/shop/tiny".into(),
            claim("tiny", "u3", Some("n1"), "1Ki"),
        ));
        let mut nfs = claim("shared", "u4", Some("n1"), "5Gi");
        nfs["spec"]["storageClassName"] = json!("shared");
        nfs["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        objects.push(("persistentvolumeclaims/shop/shared".into(), nfs));
        objects.push((
            "persistentvolumeclaims/shop/bad".into(),
            claim("bad", "u5", Some("n1"), "lots"),
        ));
        let mut gone = claim("gone", "u6", Some("n1"), "1Gi");
        gone["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
        objects.push(("persistentvolumeclaims/shop/gone".into(), gone));
        let mut unknown = claim("unknown", "u7", Some("n1"), "1Gi");
        unknown["spec"]["storageClassName"] = json!("nope");
        objects.push(("persistentvolumeclaims/shop/unknown".into(), unknown));
        let mut manual = claim("manual", "u8", Some("n1"), "1Gi");
        manual["spec"]["storageClassName"] = json!("static");
        objects.push(("persistentvolumeclaims/shop/manual".into(), manual));

        let wanted = wanted(&ObjectSet::from_objects(objects), "n1");
        let handles: Vec<_> = wanted
            .provisions
            .iter()
            .map(|p| p.handle.as_str())
            .collect();
        assert_eq!(handles, ["pvc-u1", "pvc-u4", "pvc-u3"]);
        let a = &wanted.provisions[0];
        assert_eq!(
            (
                a.place.driver(),
                a.size_bytes,
                a.claim.as_str(),
                a.access_mode
            ),
            (LOCAL_DRIVER, 1 << 30, "shop/a", AccessMode::ReadWriteOnce)
        );
        let target = NfsTarget {
            server: "10.0.0.1".into(),
            share: "/export".into(),
            nfs_port: 3049,
            mount_port: 3050,
        };
        assert_eq!(wanted.provisions[1].place, Place::Nfs(target.clone()));
        assert_eq!(wanted.provisions[1].access_mode, AccessMode::ReadWriteMany);
        assert_eq!(
            wanted.provisions[2].size_bytes, MIN_VOLUME_BYTES,
            "a local volume is at least the smallest ext4 image"
        );
        let (driver, reason) = &wanted.refused["pvc-u5"];
        assert_eq!(driver, LOCAL_DRIVER);
        assert!(
            reason.contains("spec.resources.requests.storage"),
            "{reason}"
        );
        assert_eq!(wanted.refused["pvc-u7"].0, "", "no class, no provisioner");
        assert!(wanted.refused["pvc-u7"].1.contains("\"nope\" not found"));
        assert_eq!(wanted.refused.len(), 2);
        assert_eq!(wanted.nfs_exports, BTreeSet::from([target]));
        let kept: Vec<_> = wanted.kept_volumes.iter().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "pvc-u1", "pvc-u2", "pvc-u3", "pvc-u4", "pvc-u5", "pvc-u6", "pvc-u7", "pvc-u8"
            ]
        );
    }

    #[test]
    fn bound_volumes_get_their_claims_size_and_snapshots_their_contents() {
        let mut objects = classes();
        objects.push((
            "persistentvolumeclaims/shop/a".into(),
            claim("a", "u1", Some("n1"), "2Gi"),
        ));
        objects.push((
            "persistentvolumes/pvc-u1".into(),
            json!({"metadata": {"name": "pvc-u1"},
                   "spec": {"csi": {"driver": LOCAL_DRIVER, "volumeHandle": "pvc-u1"},
                            "claimRef": {"uid": "u1", "namespace": "shop", "name": "a"}}}),
        ));
        objects.push((
            "persistentvolumes/retained".into(),
            json!({"metadata": {"name": "retained"},
                   "spec": {"csi": {"driver": NFS_DRIVER, "volumeHandle": "pvc-old",
                                    "volumeAttributes": {"server": "10.0.0.2", "share": "/x"}}}}),
        ));
        objects.push((
            "persistentvolumes/pvc-gone".into(),
            json!({"metadata": {"name": "pvc-gone", "deletionTimestamp": "2026-12-08T00:00:00Z",
                                "finalizers": [PROVISIONER_FINALIZER]},
                   "spec": {"csi": {"driver": LOCAL_DRIVER, "volumeHandle": "pvc-gone"},
                            "persistentVolumeReclaimPolicy": "Delete"},
                   "status": {"phase": "Released"}}),
        ));
        objects.push((
            "volumesnapshotcontents/snapcontent-s1".into(),
            json!({"metadata": {"name": "snapcontent-s1"},
                   "spec": {"source": {"volumeHandle": "pvc-u1"},
                            "volumeSnapshotRef": {"namespace": "shop", "name": "snap", "uid": "s1"}}}),
        ));
        let mut restore = claim("copy", "u9", Some("n1"), "3Gi");
        restore["spec"]["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"});
        objects.push(("persistentvolumeclaims/shop/copy".into(), restore));
        let mut missing = claim("missing", "u10", Some("n1"), "3Gi");
        missing["spec"]["dataSource"] = json!({"kind": "VolumeSnapshot", "name": "nope"});
        objects.push(("persistentvolumeclaims/shop/missing".into(), missing));

        let wanted = wanted(&ObjectSet::from_objects(objects), "n1");
        assert_eq!(wanted.sizes, BTreeMap::from([("pvc-u1".into(), 2 << 30)]));
        assert_eq!(
            wanted.snapshots,
            [TakeSnapshot {
                handle: "snapshot-s1".into(),
                volume: "pvc-u1".into()
            }]
        );
        assert!(wanted.kept_snapshots.contains("snapshot-s1"));
        assert!(wanted.kept_volumes.contains("pvc-old"));
        assert!(wanted.kept_volumes.contains("retained"));
        assert!(!wanted.kept_volumes.contains("pvc-gone"));
        assert_eq!(wanted.reclaimed, BTreeSet::from(["pvc-gone".to_string()]));
        assert!(wanted.pv_volumes.contains("pvc-gone") && wanted.pv_volumes.contains("pvc-old"));
        assert_eq!(wanted.nfs_exports.len(), 2, "the class's and the PV's");
        let copy = wanted
            .provisions
            .iter()
            .find(|p| p.handle == "pvc-u9")
            .unwrap();
        assert_eq!(copy.restore_from.as_deref(), Some("snapshot-s1"));
        assert!(
            wanted.refused["pvc-u10"]
                .1
                .contains("VolumeSnapshot shop/nope")
        );
    }

    #[test]
    fn nfs_attributes_are_checked() {
        let attributes = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let target =
            NfsTarget::from_attributes(&attributes(&[("server", "h"), ("share", "/s")])).unwrap();
        assert_eq!(
            (target.nfs_port, target.mount_port),
            (DEFAULT_NFS_PORT, DEFAULT_MOUNT_PORT)
        );
        let err = NfsTarget::from_attributes(&attributes(&[("share", "/s")])).unwrap_err();
        assert_eq!(err, "the nfs parameter \"server\" is required");
        let err = NfsTarget::from_attributes(&attributes(&[
            ("server", "h"),
            ("share", "/s"),
            ("nfsPort", "99999"),
        ]))
        .unwrap_err();
        assert!(err.contains("\"nfsPort\" is not a port"), "{err}");
    }
}
