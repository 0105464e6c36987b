//! Persistent volumes end to end (issue 16's Done-when), with the real
//! kubectl and `c4m volume` against real `oci` containers and the node's
//! local volumes (loop + ext4): `kubectl get pv,pvc,sc,volumesnapshot`
//! show Kubernetes' columns; a claim deleted while a pod uses it stays
//! Terminating until the pod is gone; a snapshot restored into a new
//! volume gives the snapshot's contents, not what was written after;
//! expanding a volume grows the filesystem its pod sees.

use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::oci::oci_cluster_with;
use crate::common::*;

const MINUTE: Duration = Duration::from_secs(60);

/// A claim of the default class.
fn claim(name: &str, size: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
"#
    )
}

fn apply(cluster: &Cluster, kubectl: &Kubectl, name: &str, manifest: &str) {
    let path = cluster.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
}

/// An oci node `node`, the claim `data` (64Mi, default class) and the pod
/// `pod` running `script` with it at /data, Ready.
fn cluster_with_user(node: &str, pod: &str, script: &str) -> (Cluster, Kubectl) {
    let (cluster, kubectl) = oci_cluster_with(node, &["--default-driver", "oci"]);
    apply(&cluster, &kubectl, "data", &claim("data", "64Mi"));
    apply(
        &cluster,
        &kubectl,
        pod,
        &crate::storage::pod(pod, "data", script),
    );
    wait_ready(&kubectl, pod);
    (cluster, kubectl)
}

fn wait_ready(kubectl: &Kubectl, pod: &str) {
    let output = kubectl.run(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=90s",
    ]);
    if !output.status.success() {
        let describe = kubectl.run(&["describe", "pods,pvc"]);
        panic!(
            "pod {pod} not ready: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&describe.stdout)
        );
    }
}

/// The first line of `kubectl get KIND` with its header's columns, and
/// the row of `name`, split on runs of two or more spaces.
fn table_row(kubectl: &Kubectl, kind: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let table = kubectl.ok(&["get", kind]);
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = table.lines();
    let header = split(lines.next().unwrap_or_default());
    let row = lines
        .map(split)
        .find(|cells| {
            cells
                .first()
                .is_some_and(|c| c == name || c.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{table}"));
    (header, row)
}

/// The cell of `row` under `column` of `header`.
fn cell<'a>(header: &[String], row: &'a [String], column: &str) -> &'a str {
    let index = header
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column} in {header:?}"));
    row.get(index).map_or("", String::as_str)
}

fn exec(kubectl: &Kubectl, pod: &str, script: &str) -> String {
    kubectl.ok(&["exec", pod, "--", "sh", "-c", script])
}

/// Size of the filesystem at /data in `pod`, in KiB (`df -k`).
fn data_size_kib(kubectl: &Kubectl, pod: &str) -> u64 {
    let df = exec(kubectl, pod, "df -k /data");
    df.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{df}"))
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + kubectl"]
fn kubectl_shows_storage_columns_and_a_claim_in_use_stays_terminating() {
    let (_cluster, kubectl) = cluster_with_user("claims", "user", "sleep 3600");
    let pvc = kubectl.json(&["get", "pvc", "data"]);
    let volume = pvc["spec"]["volumeName"].as_str().unwrap().to_string();

    let (header, row) = table_row(&kubectl, "sc", "local");
    for column in [
        "NAME",
        "PROVISIONER",
        "RECLAIMPOLICY",
        "VOLUMEBINDINGMODE",
        "ALLOWVOLUMEEXPANSION",
        "AGE",
    ] {
        assert!(header.iter().any(|h| h == column), "{column}: {header:?}");
    }
    assert_eq!(row[0], "local (default)");
    assert_eq!(cell(&header, &row, "PROVISIONER"), "c4m.io/local");
    assert_eq!(
        cell(&header, &row, "VOLUMEBINDINGMODE"),
        "WaitForFirstConsumer"
    );
    let (header, row) = table_row(&kubectl, "pvc", "data");
    assert_eq!(cell(&header, &row, "STATUS"), "Bound");
    assert_eq!(cell(&header, &row, "VOLUME"), volume);
    assert_eq!(cell(&header, &row, "ACCESS MODES"), "RWO");
    assert_eq!(cell(&header, &row, "STORAGECLASS"), "local");
    let (header, row) = table_row(&kubectl, "pv", &volume);
    assert_eq!(cell(&header, &row, "STATUS"), "Bound");
    assert_eq!(cell(&header, &row, "CLAIM"), "default/data");
    assert_eq!(cell(&header, &row, "RECLAIM POLICY"), "Delete");
    assert_eq!(cell(&header, &row, "STORAGECLASS"), "local");
    // kubectl get of several kinds at once, as the issue asks.
    let all = kubectl.ok(&["get", "pv,pvc,sc,volumesnapshot"]);
    for name in [
        format!("persistentvolume/{volume}"),
        "persistentvolumeclaim/data".to_string(),
        "storageclass.storage.k8s.io/local".to_string(),
    ] {
        assert!(all.contains(&name), "{name}: {all}");
    }

    // Deleted while in use: Terminating until its pod goes.
    kubectl.ok(&["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    let (header, row) = table_row(&kubectl, "pvc", "data");
    assert_eq!(cell(&header, &row, "STATUS"), "Terminating");
    assert_eq!(
        exec(&kubectl, "user", "echo still > /data/x && cat /data/x").trim(),
        "still"
    );
    kubectl.ok(&["delete", "pod", "user"]);
    wait_for("claim data gone", MINUTE, || {
        let output = kubectl.run(&["get", "pvc", "data"]);
        (!output.status.success()).then_some(())
    });
    // Delete reclaim: its volume goes with it.
    wait_for("volume gone", MINUTE, || {
        let output = kubectl.run(&["get", "pv", &volume]);
        (!output.status.success()).then_some(())
    });
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + kubectl"]
fn a_snapshot_restores_its_contents_into_a_new_volume() {
    let (cluster, kubectl) =
        cluster_with_user("snaps", "writer", "echo before > /data/note; sleep 3600");
    assert_eq!(
        exec(&kubectl, "writer", "sync; cat /data/note").trim(),
        "before"
    );

    let taken = cluster.ok(&[
        "volume", "snapshot", "data", "--name", "snap", "--wait", "60s",
    ]);
    assert!(
        taken.starts_with("snapshot/snap of volume/data created\nsnapshot/snap ready ("),
        "{taken}"
    );
    let (header, row) = table_row(&kubectl, "volumesnapshot", "snap");
    assert_eq!(cell(&header, &row, "READYTOUSE"), "true");
    assert_eq!(cell(&header, &row, "SOURCEPVC"), "data");
    // Written after the snapshot: not in the restored volume.
    exec(&kubectl, "writer", "echo after > /data/note; sync");

    let restored = cluster.ok(&["volume", "restore", "snap", "--name", "copy"]);
    assert!(
        restored.starts_with("volume/copy created from snapshot/snap"),
        "{restored}"
    );
    apply(
        &cluster,
        &kubectl,
        "reader",
        &crate::storage::pod("reader", "copy", "sleep 3600"),
    );
    wait_ready(&kubectl, "reader");
    assert_eq!(exec(&kubectl, "reader", "cat /data/note").trim(), "before");
    assert_eq!(exec(&kubectl, "writer", "cat /data/note").trim(), "after");
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + kubectl"]
fn expanding_a_volume_grows_the_filesystem_its_pod_sees() {
    let (cluster, kubectl) =
        cluster_with_user("grow", "user", "echo kept > /data/kept; sleep 3600");
    let before = data_size_kib(&kubectl, "user");
    assert!((40_000..=70_000).contains(&before), "{before} KiB");

    // Shrinking is refused as Kubernetes words it.
    let shrink = cluster.c4m(&["volume", "expand", "data", "--size", "32Mi"]);
    assert!(!shrink.status.success());
    let said = String::from_utf8_lossy(&shrink.stderr);
    assert!(
        said.contains("field can not be less than previous value"),
        "{said}"
    );

    let grown = cluster.ok(&[
        "volume", "expand", "data", "--size", "128Mi", "--wait", "60s",
    ]);
    assert!(
        grown.starts_with("volume/data: expansion to 128Mi requested\n"),
        "{grown}"
    );
    let pending = grown.contains("when its users restart");
    if pending {
        kubectl.ok(&["delete", "pod", "user"]);
        apply(
            &cluster,
            &kubectl,
            "user",
            &crate::storage::pod("user", "data", "sleep 3600"),
        );
        wait_ready(&kubectl, "user");
    } else {
        assert!(grown.contains("volume/data expanded to 128Mi"), "{grown}");
    }
    let after = wait_for("the filesystem grown", MINUTE, || {
        let size = data_size_kib(&kubectl, "user");
        (size > 100_000).then_some(size)
    });
    assert!(after <= 140_000, "{after} KiB");
    assert_eq!(exec(&kubectl, "user", "cat /data/kept").trim(), "kept");
    let pvc = kubectl.json(&["get", "pvc", "data"]);
    assert_eq!(pvc["status"]["capacity"]["storage"], "128Mi", "{pvc}");
}
