//! The `cri` driver end to end: a real control plane and an agent given
//! `--cri-socket` of containerd 1.6 (its CRI service; CRI-O speaks the
//! same `runtime.v1`), and instances that pick the driver with
//! `runtimeClassName: cri`, their image pulled from a loopback registry.

use std::time::Duration;

use crate::common::*;
use c4m_testkit::{Containerd, ContainerdOptions, Registry};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root + containerd (CRI) + runc + docker-registry + skopeo"]
fn instances_run_through_a_cri_runtime_and_survive_an_agent_restart() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "containerd needs root (namespaces, overlayfs, cgroups)"
    );
    let mut cluster = Cluster::start();
    let registry = Registry::start(cluster.dir.path());
    push_busybox_and_pause(cluster.dir.path(), &registry);
    let containerd = Containerd::start_with(
        &cluster.dir.path().join("containerd"),
        &ContainerdOptions {
            insecure_registries: vec![registry.host()],
            sandbox_image: Some(format!("{}/c4m/pause:1", registry.host())),
        },
    );
    let socket = containerd.socket().display().to_string();
    cluster.start_agent_with("n1", "4", "4Gi", &["--cri-socket", &socket]);
    let offered = cluster.offered_driver("cri");
    assert!(offered.contains("containerd"), "{offered}");

    let image = format!("{}/c4m/busybox:1", registry.host());
    cluster.apply(&driver_deployment(
        "cri",
        "box",
        &image,
        "echo hello-from-cri; exec sleep 1000",
        None,
    ));
    let pods = cluster.wait_ready("app=box", 1, MINUTE);
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    wait_for("the instance's output", MINUTE, || {
        let text = cluster.ok(&["logs", &name]);
        (text == "hello-from-cri\n").then_some(())
    });
    // Exec goes through the runtime's streaming server: output, standard
    // input to its end, the exit code.
    let exec = cluster.c4m_with_stdin(
        &[
            "exec",
            "-i",
            &name,
            "--",
            "sh",
            "-c",
            "cat; echo done; exit 3",
        ],
        "typed\n",
    );
    assert_eq!(exec.status.code(), Some(3), "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "typed\ndone\n");
    let sandboxes = containerd.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);
    assert_eq!(
        sandboxes.lines().count(),
        2,
        "one sandbox and one container: {sandboxes}"
    );

    // A restarted agent adopts the container rather than starting another.
    cluster.kill_agent("n1");
    cluster.start_agent_with("n1", "4", "4Gi", &["--cri-socket", &socket]);
    cluster.wait_ready("app=box", 1, MINUTE);
    std::thread::sleep(Duration::from_secs(2));
    let pods = cluster.instances_of("app=box");
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0]["status"]["containerStatuses"][0]["restartCount"], 0,
        "{}",
        pods[0]
    );
    assert_eq!(
        containerd
            .ctr(&["-n", "k8s.io", "containers", "ls", "-q"])
            .lines()
            .count(),
        2,
        "nothing new was started"
    );

    cluster.ok(&["delete", "deployment", "box"]);
    cluster.wait_gone("app=box", MINUTE);
    wait_for("the sandbox to go", MINUTE, || {
        containerd
            .ctr(&["-n", "k8s.io", "containers", "ls", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    });
}
