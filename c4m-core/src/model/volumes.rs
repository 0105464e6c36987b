//! What the control plane tells a node about a pod's volumes, and the names
//! storage shares between the control plane, the scheduler and the agents.
//!
//! An instance leaves for its node with the annotation
//! [`RESOLVED_VOLUMES`](crate::annotations::RESOLVED_VOLUMES): a JSON object
//! from volume name to [`ResolvedVolume`], for every volume whose source
//! lives in other objects (configMap, secret, projected, downwardAPI,
//! persistentVolumeClaim, ephemeral). `emptyDir` and `hostPath` need nothing
//! beyond the pod's own spec and are absent from it. The annotation is never
//! stored; it is recomputed whenever a source changes, and a changed value
//! re-sends the instance, which is how projected files update in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The CSI driver name of c4m's local backend (sparse ext4 image on a loop
/// device, on one node).
pub const LOCAL_DRIVER: &str = "c4m.io/local";
/// The CSI driver name of c4m's NFS backend (a directory per volume on an
/// export; class parameters `server`, `share`, `nfsPort`, `mountPort`).
pub const NFS_DRIVER: &str = "c4m.io/nfs";
/// The provisioner of statically made PersistentVolumes.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// The annotation on a claim naming the node its volume is provisioned on
/// (Kubernetes' own key): set by the volume controller (`Immediate`) or the
/// scheduler (`WaitForFirstConsumer`), read by that node's agent.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The annotation on a StorageClass that makes it the default.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The finalizer (Kubernetes' external-provisioner's own name) on a
/// PersistentVolume the control plane provisioned with reclaim policy
/// `Delete`: the object stays (Terminating) until the node holding the
/// volume has deleted its data, and a node deletes the data of a volume a
/// PersistentVolume referenced only for one being deleted that carries it.
pub const PROVISIONER_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// The volume handle (and backend volume id) of a dynamically provisioned
/// claim: `pvc-<claim uid>`, which is also its PersistentVolume's name.
pub fn volume_handle_for_claim(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

/// The snapshot handle (and backend snapshot id) of a VolumeSnapshot:
/// `snapshot-<VolumeSnapshot uid>`.
pub fn snapshot_handle_for(snapshot_uid: &str) -> String {
    format!("snapshot-{snapshot_uid}")
}

/// One volume of a pod, as its node must set it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ResolvedVolume {
    /// Files to write into the volume's directory (configMap, secret,
    /// projected, downwardAPI), with `items`, `defaultMode`, `mode` and
    /// `optional` already applied: the node writes exactly these, atomically.
    Files {
        /// Relative paths (no `..`, not absolute), sorted.
        files: Vec<ProjectedFile>,
    },
    /// A persistent volume to stage on the node and bind into the pod
    /// (`persistentVolumeClaim`, or the claim of an `ephemeral` volume).
    Claim {
        /// `NAMESPACE/NAME` of the claim, for messages and reports.
        claim: String,
        /// How to reach the volume.
        source: VolumeSource,
        /// Mount read-only (the pod's `readOnly`, or a ReadOnlyMany volume).
        #[serde(default)]
        read_only: bool,
    },
    /// The volume cannot be set up yet (a claim not bound, a missing
    /// ConfigMap that is not optional): the pod waits in
    /// `ContainerCreating` with this message, and the node gets the
    /// instance again once it resolves.
    Waiting {
        /// Kubernetes' wording, naming the object (`persistentvolumeclaim
        /// "data-web-0" not bound`).
        message: String,
    },
}

/// One file of a projected volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectedFile {
    /// Path relative to the volume's root.
    pub path: String,
    /// Contents, base64 (standard alphabet, padded).
    pub base64: String,
    /// Permission bits (`0o644` unless the pod says otherwise).
    pub mode: u32,
}

/// Where a persistent volume's data is, from its PersistentVolume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum VolumeSource {
    /// A CSI volume (`spec.csi`): c4m's own drivers ([`LOCAL_DRIVER`],
    /// [`NFS_DRIVER`]) or a registered third-party driver.
    Csi {
        /// `spec.csi.driver`.
        driver: String,
        /// `spec.csi.volumeHandle`.
        handle: String,
        /// `spec.csi.fsType`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fs_type: Option<String>,
        /// `spec.csi.volumeAttributes` (for NFS: `server`, `share`,
        /// `nfsPort`, `mountPort`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        attributes: BTreeMap<String, String>,
    },
    /// An in-tree NFS volume (`spec.nfs`).
    Nfs {
        /// NFS server host or address.
        server: String,
        /// Exported path.
        path: String,
    },
    /// A directory on the node (`spec.local` or `spec.hostPath`).
    HostDir {
        /// The directory.
        path: String,
    },
}
