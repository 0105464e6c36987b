//! The `docker` driver end to end: a real control plane and an agent told
//! about a dockerd of the test's own (`--docker-socket`), a busybox image
//! in a loopback registry, a Deployment that picks the driver with
//! `runtimeClassName: docker`, then `c4m logs` and `c4m exec` through the
//! control plane.

use std::time::Duration;

use crate::common::*;
use c4m_testkit::{Dockerd, Registry};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root + dockerd + docker-registry + skopeo"]
fn a_deployment_runs_on_docker_and_answers_logs_and_exec() {
    let mut cluster = Cluster::start();
    let daemon = Dockerd::start(&cluster.dir.path().join("dockerd"));
    let registry = Registry::start(cluster.dir.path());
    let layout = busybox_layout(cluster.dir.path(), "layout", &["/bin/sh"]);
    registry.push_oci_layout(&layout, "1", "team/bb:1");
    let socket = daemon.socket().display().to_string();
    cluster.start_agent_with("n1", "4", "4Gi", &["--docker-socket", &socket]);
    cluster.offered_driver("docker");

    cluster.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: boxed}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: boxed}}}}
  template:
    metadata:
      labels: {{app: boxed}}
    spec:
      runtimeClassName: docker
      containers:
        - name: main
          image: {}/team/bb:1
          command: ["sh", "-c", "echo hello-from-docker; exec sleep 1000"]
          env: [{{name: GREETING, value: hi-there}}]
          resources: {{limits: {{cpu: 500m, memory: 64Mi}}}}
"#,
        registry.host()
    ));
    let pods = cluster.wait_ready("app=boxed", 1, MINUTE);
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    let logs = wait_for("the instance's output", MINUTE, || {
        let text = cluster.ok(&["logs", &name]);
        text.contains("hello-from-docker").then_some(text)
    });
    assert_eq!(logs, "hello-from-docker\n");
    let exec = cluster.ok(&["exec", &name, "--", "sh", "-c", "echo $GREETING $((6*7))"]);
    assert_eq!(exec, "hi-there 42\n");

    // Behind the driver: the engine runs it, labelled with the node, with
    // the limit the manifest gave.
    let running = daemon.docker(&[
        "ps",
        "--filter",
        "label=io.c4m.node=n1",
        "--format",
        "{{.Names}}",
    ]);
    let container = running.trim().to_string();
    assert!(container.starts_with("c4m-default_boxed-"), "{running:?}");
    let memory = daemon.docker(&["inspect", "--format", "{{.HostConfig.Memory}}", &container]);
    assert_eq!(memory.trim(), (64u64 << 20).to_string());

    cluster.ok(&["delete", "deployment", "boxed"]);
    cluster.wait_gone("app=boxed", MINUTE);
    wait_for("the container to be removed", MINUTE, || {
        let left = daemon.docker(&["ps", "-a", "--filter", "label=io.c4m.node=n1", "-q"]);
        left.trim().is_empty().then_some(())
    });
}
