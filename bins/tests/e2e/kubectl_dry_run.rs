//! Server-side dry runs with the real kubectl: `kubectl diff` and
//! `kubectl apply --dry-run=server` (client-side and server-side apply),
//! `kubectl delete --dry-run=server`: each answers as the write would, and
//! nothing changes in the cluster.

use std::process::Output;

use crate::common::Cluster;
use crate::common::kubectl::Kubectl;

fn manifest(value: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: "{value}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: main
          image: busybox:1.36
          command: ["sleep", "infinity"]
"#
    )
}

fn text(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_diff_and_server_dry_runs_change_nothing() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("d", 1, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let path = cluster.dir.path().join("app.yaml");
    let file = path.to_str().unwrap();
    std::fs::write(&path, manifest("blue", 2)).unwrap();

    // A dry run of a create: the answer, and nothing created.
    let out = kubectl.ok(&["apply", "--dry-run=server", "-f", file]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/settings created (server dry run)",
            "deployment.apps/web created (server dry run)"
        ]
    );
    let stderr = kubectl.fails(&["get", "configmap", "settings"]);
    assert!(stderr.contains("not found"), "{stderr}");

    // diff of objects that do not exist yet: exit 1, the whole objects.
    let (code, diff, stderr) = text(&kubectl.run(&["diff", "-f", file]));
    assert_eq!(code, 1, "{diff}{stderr}");
    assert!(diff.contains("+  color: blue"), "{diff}");
    assert!(diff.contains("+  replicas: 2"), "{diff}");
    let stderr = kubectl.fails(&["get", "deployment", "web"]);
    assert!(stderr.contains("not found"), "{stderr}");

    kubectl.ok(&["apply", "-f", file]);
    // The Deployment's status settles (so the live object and the dry
    // run's answer are read at rest).
    kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Nothing to change: exit 0 and no output.
    let (code, diff, stderr) = text(&kubectl.run(&["diff", "-f", file]));
    assert_eq!((code, diff.as_str()), (0, ""), "{stderr}");

    // A change shows as the lines it changes, and is not made.
    std::fs::write(&path, manifest("green", 3)).unwrap();
    let (code, diff, stderr) = text(&kubectl.run(&["diff", "-f", file]));
    assert_eq!(code, 1, "{diff}{stderr}");
    for line in [
        "-  color: blue",
        "+  color: green",
        "-  replicas: 2",
        "+  replicas: 3",
    ] {
        assert!(diff.contains(line), "no {line:?} in\n{diff}");
    }
    assert!(diff.contains("generation"), "{diff}");
    let out = kubectl.ok(&["apply", "--dry-run=server", "-f", file]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/settings configured (server dry run)",
            "deployment.apps/web configured (server dry run)"
        ]
    );
    let out = kubectl.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        file,
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/settings serverside-applied (server dry run)",
            "deployment.apps/web serverside-applied (server dry run)"
        ]
    );
    let color = kubectl.ok(&[
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.data.color}",
    ]);
    assert_eq!(color, "blue");
    let replicas = kubectl.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "2");

    // Delete.
    let out = kubectl.ok(&["delete", "configmap", "settings", "--dry-run=server"]);
    assert_eq!(
        out.trim(),
        "configmap \"settings\" deleted (server dry run)"
    );
    kubectl.ok(&["get", "configmap", "settings"]);

    // A dry run is still checked as the write would be.
    let stderr = kubectl.fails(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=a=1",
        "--dry-run=server",
    ]);
    assert!(stderr.contains("already exists"), "{stderr}");
}
