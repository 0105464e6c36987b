//! One manifest, four drivers: a cluster of four nodes whose agents default
//! to `oci`, `docker`, `containerd` and `cri` (the last three against a
//! dockerd and a containerd this test starts), and one Deployment naming no
//! driver, spread one instance per node. `c4m logs`, `exec`, `status` and
//! `metrics` answer the same way for each.

use std::time::Duration;

use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::{Containerd, ContainerdOptions, Dockerd, Registry};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root + runc + conmon + containerd + dockerd + docker-registry"]
fn one_manifest_runs_unchanged_on_every_container_driver() {
    require_oci();
    let mut cluster = Cluster::start();
    let registry = Registry::start(&cluster.dir.path().join("registry"));
    push_busybox_and_pause(cluster.dir.path(), &registry);
    let containerd = Containerd::start_with(
        &cluster.dir.path().join("containerd"),
        &ContainerdOptions {
            insecure_registries: vec![registry.host()],
            sandbox_image: Some(format!("{}/c4m/pause:1", registry.host())),
        },
    );
    let dockerd = Dockerd::start(&cluster.dir.path().join("dockerd"));
    let containerd_socket = containerd.socket().display().to_string();
    let docker_socket = dockerd.socket().display().to_string();
    let none = cluster
        .dir
        .path()
        .join("no-such.sock")
        .display()
        .to_string();
    // Each node is told only of its own runtime, and defaults to it.
    let nodes: [(&str, Vec<&str>); 4] = [
        ("n-oci", vec!["--default-driver", "oci"]),
        (
            "n-docker",
            vec![
                "--default-driver",
                "docker",
                "--docker-socket",
                &docker_socket,
            ],
        ),
        (
            "n-containerd",
            vec![
                "--default-driver",
                "containerd",
                "--containerd-socket",
                &containerd_socket,
            ],
        ),
        (
            "n-cri",
            vec![
                "--default-driver",
                "cri",
                "--cri-socket",
                &containerd_socket,
            ],
        ),
    ];
    for (name, flags) in &nodes {
        let mut flags = flags.clone();
        if !flags.contains(&"--docker-socket") {
            flags.extend(["--docker-socket", &none]);
        }
        if !flags.contains(&"--containerd-socket") {
            flags.extend(["--containerd-socket", &none]);
        }
        cluster.start_agent_with(name, "4", "4Gi", &flags);
    }
    let listed = cluster.ok(&["get", "nodes"]);
    for (name, _) in &nodes {
        let driver = name.trim_start_matches("n-");
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(name) && l.contains(&format!(" {driver}*="))),
            "{name} defaults to {driver}: {listed}"
        );
    }

    // No runtimeClassName: each node's default driver runs its instance.
    let image = format!("{}/c4m/busybox:1", registry.host());
    cluster.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: same}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: same}}}}
  template:
    metadata: {{labels: {{app: same}}}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {{matchLabels: {{app: same}}}}
              topologyKey: kubernetes.io/hostname
      terminationGracePeriodSeconds: 2
      containers:
        - name: main
          image: {image}
          command: ["sh", "-c", "echo hello from the image; cat /etc/marker; exec sleep 1000"]
          resources: {{limits: {{cpu: 500m, memory: 64Mi}}}}
"#
    ));
    let pods = cluster.wait_ready("app=same", 4, 3 * MINUTE);
    let mut seen: Vec<String> = Vec::new();
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
        assert!(pod["spec"]["runtimeClassName"].is_null(), "{pod}");
        seen.push(node.clone());

        let logs = wait_for(&format!("{name}'s output on {node}"), MINUTE, || {
            let text = cluster.ok(&["logs", &name]);
            text.contains("from-image").then_some(text)
        });
        assert_eq!(logs, "hello from the image\nfrom-image\n", "logs on {node}");

        let exec = cluster.c4m(&["exec", &name, "--", "sh", "-c", "cat /etc/marker; exit 3"]);
        assert_eq!(exec.status.code(), Some(3), "exec on {node}: {exec:?}");
        assert_eq!(
            String::from_utf8_lossy(&exec.stdout),
            "from-image\n",
            "exec on {node}"
        );

        let status = cluster.ok(&["status", &name]);
        let row = status.lines().nth(1).unwrap_or_default().to_string();
        assert!(
            row.contains("Running") && row.contains("1/1") && row.contains(&node),
            "status on {node}: {status}"
        );

        let metrics = wait_for(&format!("{name}'s metrics on {node}"), MINUTE, || {
            let out = cluster.c4m(&["metrics", &name]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let row: Vec<String> = text
                .lines()
                .nth(1)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
            (out.status.success() && row.len() == 3 && row[2] != "-" && row[2] != "0")
                .then_some(row)
        });
        assert_eq!(metrics[0], name, "metrics on {node}");
    }
    seen.sort();
    assert_eq!(
        seen,
        ["n-containerd", "n-cri", "n-docker", "n-oci"],
        "one per node"
    );

    // Behind the drivers: each runtime holds exactly its one instance.
    let docker_names = dockerd.docker(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(docker_names.lines().count(), 1, "{docker_names}");
    let tasks = containerd.ctr(&["-n", "c4m", "tasks", "ls", "-q"]);
    assert_eq!(tasks.lines().count(), 1, "containerd driver: {tasks}");

    cluster.ok(&["delete", "deployment", "same"]);
    cluster.wait_gone("app=same", 2 * MINUTE);
    // The agents remove containers after the instances are gone.
    wait_for("the docker container to be removed", MINUTE, || {
        dockerd
            .docker(&["ps", "-aq"])
            .trim()
            .is_empty()
            .then_some(())
    });
    wait_for("the containerd task to be removed", MINUTE, || {
        containerd
            .ctr(&["-n", "c4m", "tasks", "ls", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    });
}
