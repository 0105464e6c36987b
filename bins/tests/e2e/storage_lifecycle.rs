//! A local volume's life through the real binaries, kubectl to loop device:
//! the control plane selects the node of an `Immediate` claim, the node's
//! agent provisions it (sparse ext4 on a loop device), the control plane
//! makes and binds its PersistentVolume; a snapshot becomes ready, a claim
//! restored from it is made where it is, an expansion reaches the claim's
//! status; deleted, the objects go and the node removes every backend
//! volume and snapshot, leaving no image and no loop device.

use std::path::Path;
use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::{Cluster, wait_for};

const WAIT: Duration = Duration::from_secs(60);

const CLAIM: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: c4m.io/local
volumeBindingMode: Immediate
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: fast
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
"#;

const SNAPSHOT: &str = r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap}
spec:
  source: {persistentVolumeClaimName: data}
"#;

const RESTORED: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restored}
spec:
  storageClassName: fast
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}
"#;

/// The files under `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root + losetup + mkfs.ext4 + kubectl"]
fn a_local_volume_is_provisioned_snapshotted_expanded_and_collected() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "local volumes need root (loop devices)"
    );
    let mut cluster = Cluster::start();
    cluster.start_agent("a", "2", "2Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let apply = |name: &str, yaml: &str| {
        let path = cluster.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        kubectl.ok(&["apply", "-f", path.to_str().unwrap()])
    };
    let field =
        |what: &str, path: &str| kubectl.ok(&["get", what, "-o", &format!("jsonpath={path}")]);

    apply("claim.yaml", CLAIM);
    wait_for("the claim to be provisioned and bound", WAIT, || {
        (field("pvc/data", "{.status.phase}") == "Bound").then_some(())
    });
    let volume = field("pvc/data", "{.spec.volumeName}");
    let uid = field("pvc/data", "{.metadata.uid}");
    assert_eq!(volume, format!("pvc-{uid}"));
    assert_eq!(
        field(
            "pvc/data",
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        "a"
    );
    assert_eq!(
        field(&format!("pv/{volume}"), "{.spec.csi.volumeHandle}"),
        volume
    );
    assert_eq!(
        field(
            &format!("pv/{volume}"),
            "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        "a"
    );
    assert_eq!(field("pvc/data", "{.status.capacity.storage}"), "64Mi");
    let images = cluster.agent_dir("a").join("volumes/images");
    assert_eq!(files(&images), [format!("{volume}.img")]);

    apply("snapshot.yaml", SNAPSHOT);
    wait_for("the snapshot to be ready", WAIT, || {
        (field("volumesnapshot/snap", "{.status.readyToUse}") == "true").then_some(())
    });
    assert_eq!(
        field("volumesnapshot/snap", "{.status.restoreSize}"),
        "64Mi"
    );
    apply("restored.yaml", RESTORED);
    wait_for("the restored claim to be bound", WAIT, || {
        (field("pvc/restored", "{.status.phase}") == "Bound").then_some(())
    });

    kubectl.ok(&[
        "patch",
        "pvc",
        "data",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}"#,
    ]);
    wait_for("the expansion to reach the claim", WAIT, || {
        (field("pvc/data", "{.status.capacity.storage}") == "128Mi").then_some(())
    });
    assert_eq!(
        field(&format!("pv/{volume}"), "{.spec.capacity.storage}"),
        "128Mi"
    );
    assert!(
        kubectl
            .ok(&["describe", "pvc", "data"])
            .contains("expanded to 128Mi"),
        "the expansion is an Event"
    );

    kubectl.ok(&["delete", "volumesnapshot", "snap"]);
    kubectl.ok(&["delete", "pvc", "data", "restored"]);
    wait_for("the volumes' objects to go", WAIT, || {
        field("pv", "{.items[*].metadata.name}")
            .is_empty()
            .then_some(())
    });
    assert_eq!(
        field("volumesnapshotcontents", "{.items[*].metadata.name}"),
        ""
    );
    let snapshots = cluster.agent_dir("a").join("volumes/snapshots");
    wait_for("the node to delete the backend volumes", WAIT, || {
        (files(&images).is_empty() && files(&snapshots).is_empty()).then_some(())
    });
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    let agent_dir = cluster.agent_dir("a").display().to_string();
    assert!(
        !String::from_utf8_lossy(&loops.stdout).contains(&agent_dir),
        "no loop device left: {}",
        String::from_utf8_lossy(&loops.stdout)
    );
}
