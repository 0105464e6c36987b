//! `c4m volume` and `c4m run --volume --disk` as a user runs them: exit
//! codes and what they print. A volume is a PersistentVolumeClaim; one an
//! instance uses is not deleted (the command names who uses it), one
//! already gone counts as deleted; `--persistent` makes a Retain copy of
//! the class.

use std::process::Output;

use serde_json::Value;

use crate::common::*;

/// A class of c4m's local driver, bound on first use.
const FAST: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: c4m.io/local
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
"#;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The rows of `c4m volume list`, as cells.
fn volume_rows(cluster: &Cluster) -> Vec<Vec<String>> {
    cluster
        .ok(&["volume", "list"])
        .lines()
        .map(|line| {
            line.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The pods of the Microservice `name`.
fn pods_of(cluster: &Cluster, name: &str) -> Vec<Value> {
    let pods: Value = serde_json::from_str(&cluster.ok(&["get", "pods", "-o", "json"])).unwrap();
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["c4m.io/microservice"] == name)
        .cloned()
        .collect()
}

#[test]
fn volume_cli_creates_lists_and_refuses_to_delete_a_volume_in_use() {
    let cluster = Cluster::start();
    cluster.apply(FAST);

    let created = cluster.ok(&[
        "volume", "create", "--name", "data", "--size", "64Mi", "--class", "fast",
    ]);
    assert_eq!(created.trim(), "volume/data created (64Mi)");
    let bad = cluster.c4m(&["volume", "create", "--name", "bad", "--size", "lots"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--size \"lots\""), "{}", stderr(&bad));
    let rows = volume_rows(&cluster);
    assert_eq!(
        rows,
        [
            ["NAME", "ID", "SIZE", "CLASS", "STATUS", "NODE", "USED BY"],
            [
                "data", "<none>", "64Mi", "fast", "Pending", "<none>", "<none>"
            ],
        ]
    );

    // An instance that uses it, with a disk of its own.
    let missing = cluster.c4m(&["run", "--volume", "missing:/x", "--", "sleep", "1"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no volume \"missing\" in namespace default"),
        "{}",
        stderr(&missing)
    );
    let run = cluster.ok(&[
        "run",
        "--name",
        "app",
        "--volume",
        "data:/data",
        "--disk",
        "1Gi",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(run.trim(), "microservice/app created");
    let pod = wait_for("app's instance", std::time::Duration::from_secs(30), || {
        pods_of(&cluster, "app").pop()
    });
    let pod_name = name_of(&pod);
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data"
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/data");
    assert_eq!(container["resources"]["limits"]["ephemeral-storage"], "1Gi");
    let rows = volume_rows(&cluster);
    assert_eq!(rows[1][6], format!("pod/{pod_name}"), "{rows:?}");

    // In use: refused, and kept.
    let refused = cluster.c4m(&["volume", "delete", "data"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(&format!("volume/data is in use by pod/{pod_name}")),
        "{}",
        stderr(&refused)
    );
    assert_eq!(volume_rows(&cluster).len(), 2);

    // Its user gone, it goes; a name already gone is fine.
    cluster.ok(&["delete", "microservice", "app"]);
    wait_for(
        "app's instances gone",
        std::time::Duration::from_secs(30),
        || pods_of(&cluster, "app").is_empty().then_some(()),
    );
    let deleted = cluster.c4m(&["volume", "delete", "data", "never-was"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_eq!(
        stdout(&deleted),
        "volume/data deleted\nvolume/never-was already gone\n"
    );
}

#[test]
fn a_persistent_volume_gets_a_retaining_copy_of_its_class() {
    let cluster = Cluster::start();
    cluster.apply(FAST);
    for name in ["keep", "keep-too"] {
        let created = cluster.ok(&[
            "volume",
            "create",
            "--name",
            name,
            "--size",
            "1048576",
            "--class",
            "fast",
            "--persistent",
        ]);
        assert_eq!(created.trim(), format!("volume/{name} created (1048576)"));
    }
    let class: Value =
        serde_json::from_str(&cluster.ok(&["get", "storageclass", "fast-retain", "-o", "json"]))
            .unwrap();
    assert_eq!(class["reclaimPolicy"], "Retain");
    assert_eq!(class["provisioner"], "c4m.io/local");
    assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(class["allowVolumeExpansion"], true);
    let rows = volume_rows(&cluster);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows[1..].iter().all(|row| row[3] == "fast-retain"),
        "{rows:?}"
    );
}
