//! The storage kinds through the real kubectl, control plane side: the
//! default class, static binding, Kubernetes' columns, admission's refusals
//! in kube-apiserver's words, the Events `describe` shows, and claim
//! protection (a claim in use stays Terminating until its instance is gone).
//! Instances run on hollow nodes; nothing here mounts a volume.

use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::{Cluster, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A table's rows, each split into its cells.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: nfs-a}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteMany]
  nfs: {server: 10.0.0.1, path: /exports/a}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared}
spec:
  storageClassName: ""
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap}
spec:
  source: {persistentVolumeClaimName: data}
"#;

const USER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  containers:
    - name: c
      command: ["sleep", "infinity"]
      volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
    - {name: shared, persistentVolumeClaim: {claimName: shared}}
"#;

#[test]
#[ignore = "needs kubectl"]
fn kubectl_storage_objects_behave_as_in_kubernetes() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("h", 1, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let objects = cluster.dir.path().join("storage.yaml");
    std::fs::write(&objects, OBJECTS).unwrap();
    let objects = objects.to_str().unwrap();
    assert_eq!(
        kubectl.ok(&["apply", "-f", objects]),
        "persistentvolume/nfs-a created\npersistentvolumeclaim/shared created\n\
         persistentvolumeclaim/data created\n\
         volumesnapshot.snapshot.storage.k8s.io/snap created\n"
    );
    wait_for("the static volume to bind", WAIT, || {
        (kubectl.ok(&["get", "pvc", "shared", "-o", "jsonpath={.status.phase}"]) == "Bound")
            .then_some(())
    });

    let classes = rows(&kubectl.ok(&["get", "sc"]));
    assert_eq!(
        classes[0],
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ]
    );
    assert_eq!(
        classes[1][..6],
        [
            "local",
            "(default)",
            "c4m.io/local",
            "Delete",
            "WaitForFirstConsumer",
            "true"
        ]
    );
    let volumes = rows(&kubectl.ok(&["get", "pv"]));
    assert_eq!(
        volumes[0],
        [
            "NAME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "RECLAIM",
            "POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(
        volumes[1][..7],
        [
            "nfs-a",
            "2Gi",
            "RWX",
            "Retain",
            "Bound",
            "default/shared",
            "<unset>"
        ]
    );
    let claims = rows(&kubectl.ok(&["get", "pvc"]));
    assert_eq!(
        claims[0],
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    assert_eq!(claims[1][..4], ["data", "Pending", "local", "<unset>"]);
    assert_eq!(
        claims[2][..6],
        ["shared", "Bound", "nfs-a", "2Gi", "RWX", "<unset>"]
    );
    assert_eq!(
        rows(&kubectl.ok(&["get", "volumesnapshot"]))[0],
        [
            "NAME",
            "READYTOUSE",
            "SOURCEPVC",
            "SOURCESNAPSHOTCONTENT",
            "RESTORESIZE",
            "SNAPSHOTCLASS",
            "SNAPSHOTCONTENT",
            "CREATIONTIME",
            "AGE"
        ]
    );

    // describe shows why a claim and a snapshot wait.
    wait_for("the claim's Event", WAIT, || {
        kubectl
            .ok(&["describe", "pvc", "data"])
            .contains("waiting for first consumer to be created before binding")
            .then_some(())
    });
    let described = kubectl.ok(&["describe", "pvc", "data"]);
    assert!(
        described.contains("Finalizers:    [kubernetes.io/pvc-protection]")
            && described.contains("StorageClass:  local"),
        "{described}"
    );
    wait_for("the snapshot's Event", WAIT, || {
        kubectl
            .ok(&["describe", "volumesnapshot", "snap"])
            .contains("the source persistentvolumeclaim \"data\" is not bound to a volume")
            .then_some(())
    });

    // Refused in kube-apiserver's words, changing nothing.
    let patch = |name: &str, patch: &str| kubectl.fails(&["patch", name, "-p", patch]);
    assert!(
        patch("pvc/shared", r#"{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}"#)
            .contains("persistentvolumeclaims \"shared\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize")
    );
    assert!(
        patch("pvc/shared", r#"{"spec":{"resources":{"requests":{"storage":"500Mi"}}}}"#)
            .contains("The PersistentVolumeClaim \"shared\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than previous value")
    );
    assert!(
        patch(
            "pvc/shared",
            r#"{"spec":{"accessModes":["ReadWriteOnce"]}}"#
        )
        .contains("spec: Forbidden: spec is immutable after creation except resources.requests")
    );
    assert!(
        patch("sc/local", r#"{"parameters":{"a":"b"}}"#).contains(
            "The StorageClass \"local\" is invalid: parameters: Forbidden: updates to parameters are forbidden."
        )
    );
    let bad_mount = cluster.dir.path().join("bad.yaml");
    std::fs::write(
        &bad_mount,
        USER.replace("{name: shared, mountPath", "{name: nope, mountPath"),
    )
    .unwrap();
    assert!(
        kubectl
            .fails(&["create", "-f", bad_mount.to_str().unwrap()])
            .contains("The Pod \"user\" is invalid: spec.containers[0].volumeMounts[0].name: Not found: \"nope\""),
    );

    // A claim in use stays Terminating until its instance is gone; then its
    // Retain volume is Released.
    let user = cluster.dir.path().join("user.yaml");
    std::fs::write(&user, USER).unwrap();
    kubectl.ok(&["apply", "-f", user.to_str().unwrap()]);
    kubectl.ok(&["delete", "pvc", "shared", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(500));
    let claims = rows(&kubectl.ok(&["get", "pvc", "shared"]));
    assert_eq!(claims[1][..3], ["shared", "Terminating", "nfs-a"]);
    kubectl.ok(&["delete", "pod", "user", "--wait=false"]);
    wait_for("the claim to go with its user", WAIT, || {
        let output = kubectl.run(&["get", "pvc", "shared"]);
        (!output.status.success()).then_some(())
    });
    wait_for("the volume to be Released", WAIT, || {
        (kubectl.ok(&["get", "pv", "nfs-a", "-o", "jsonpath={.status.phase}"]) == "Released")
            .then_some(())
    });
}
