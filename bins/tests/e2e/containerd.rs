//! The `containerd` driver end to end: a real control plane and agent (as
//! root) beside a containerd the test starts, an image imported with
//! `c4m image import`, an instance that picks the driver with
//! `runtimeClassName: containerd` and runs as a containerd task.

use std::time::Duration;

use crate::common::*;
use c4m_testkit::Containerd;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root + containerd + runc"]
fn instances_run_in_containerd_when_their_pod_asks_for_it() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the containerd driver needs root (cgroups, containerd's socket)"
    );
    // Declared first so that it stops last, after the agent.
    let containerd_dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(containerd_dir.path());
    let socket = containerd.socket().display().to_string();
    let mut cluster = Cluster::start();
    cluster.start_agent_with("n1", "4", "4Gi", &["--containerd-socket", &socket]);
    cluster.offered_driver("containerd");

    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: box}
spec:
  replicas: 1
  selector: {matchLabels: {app: box}}
  template:
    metadata:
      labels: {app: box}
    spec:
      runtimeClassName: containerd
      hostAliases: [{ip: 127.0.0.3, hostnames: [peer.local]}]
      containers:
        - name: main
          image: bb:1
          command: ["sh", "-c", "echo hello-from-containerd; exec sleep 1000"]
          resources: {limits: {cpu: 500m, memory: 64Mi}}
"#,
    );
    let pods = cluster.wait_ready("app=box", 1, MINUTE);
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    wait_for("the instance's output", MINUTE, || {
        cluster
            .ok(&["logs", &name])
            .contains("hello-from-containerd")
            .then_some(())
    });
    let exec = cluster.ok(&["exec", &name, "--", "sh", "-c", "echo $((6 * 7))"]);
    assert_eq!(exec, "42\n");
    // The kubelet's pod files: its host name, hosts with its aliases.
    let hostname = cluster.ok(&["exec", &name, "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname, format!("{name}\n"));
    let hosts = cluster.ok(&["exec", &name, "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n")
            && hosts.ends_with("# Entries added by HostAliases.\n127.0.0.3\tpeer.local\n"),
        "{hosts}"
    );
    // The driver really runs it as a containerd task, in namespace c4m.
    let tasks = containerd.ctr(&["-n", "c4m", "tasks", "ls"]);
    assert!(
        tasks.lines().any(|line| line.contains("RUNNING")),
        "{tasks}"
    );
    let images = containerd.ctr(&["-n", "c4m", "images", "ls", "-q"]);
    assert!(images.contains("docker.io/library/bb:1"), "{images}");

    cluster.ok(&["delete", "deployment", "box"]);
    cluster.wait_gone("app=box", MINUTE);
    wait_for("containerd to forget the container", MINUTE, || {
        containerd
            .ctr(&["-n", "c4m", "containers", "ls", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    });
}
