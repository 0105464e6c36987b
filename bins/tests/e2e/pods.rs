//! Pods as Kubernetes users write them, seen through the real kubectl: the
//! driver a pod naming none runs on, how an image that cannot be pulled
//! shows, and the kubelet's Events `kubectl describe pod` lists.

use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::Registry;

const MINUTE: Duration = Duration::from_secs(60);

/// A cluster with one node, `boxed`, that offers `oci` and keeps the agent's
/// own default driver.
fn oci_node() -> Cluster {
    require_oci();
    let mut cluster = Cluster::start();
    cluster.start_agent_with("boxed", "4", "4Gi", &["--default-driver", "auto"]);
    cluster
}

/// `kubectl run` with an image, on a node that offers `oci` and keeps the
/// agent's own default: the pod runs in a container from its image, not as
/// a host process.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn kubectl_run_with_an_image_runs_in_a_container_by_default() {
    let cluster = oci_node();
    let nodes = cluster.ok(&["get", "nodes"]);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("boxed") && l.contains(" oci*=")),
        "the node defaults to oci: {nodes}"
    );
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);

    let kubectl = Kubectl::for_cluster(&cluster);
    kubectl.ok(&[
        "run",
        "tmp",
        "--image=bb:1",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "cat /etc/marker; sleep 5",
    ]);
    // /etc/marker exists only in the image: a host process could not read
    // it. (Read while it runs: the agent removes a finished container, its
    // logs with it.)
    let logs = wait_for("tmp's output", MINUTE, || {
        let output = kubectl.run(&["logs", "tmp"]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs, "from-image\n");
    let phase = wait_for("tmp to succeed", MINUTE, || {
        let phase = kubectl.ok(&["get", "pod", "tmp", "-o", "jsonpath={.status.phase}"]);
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    });
    assert_eq!(phase, "Succeeded");
    let pod = kubectl.json(&["get", "pod", "tmp"]);
    assert!(pod["spec"]["runtimeClassName"].is_null(), "{pod:#}");

    // `kubectl describe` shows the kubelet's Events of a good pod and of a
    // crash loop.
    let described = kubectl.ok(&["describe", "pod", "tmp"]);
    for expected in [
        "Scheduled",
        "Created container: tmp",
        "Started container tmp",
        "kubelet",
    ] {
        assert!(described.contains(expected), "{expected}: {described}");
    }
    kubectl.ok(&["run", "crash", "--image=bb:1", "--", "sh", "-c", "exit 1"]);
    let described = wait_for("the crash loop's BackOff event", MINUTE, || {
        let text = kubectl.ok(&["describe", "pod", "crash"]);
        text.contains("Back-off restarting failed container crash in pod crash_default(")
            .then_some(text)
    });
    assert!(described.contains("Warning  BackOff"), "{described}");
    assert!(described.contains("Started container crash"), "{described}");
}

/// An image no registry has, from a registry on loopback: kubectl shows
/// `ErrImagePull`, then `ImagePullBackOff` (the waiting reason and the
/// `STATUS` column), as it does against Kubernetes.
#[test]
#[ignore = "needs root + runc + conmon + docker-registry + kubectl"]
fn an_unpullable_image_shows_err_image_pull_then_image_pull_back_off() {
    let cluster = oci_node();
    let registry = Registry::start(&cluster.dir.path().join("registry"));
    let image = format!("{}/nosuch:1", registry.host());
    let kubectl = Kubectl::for_cluster(&cluster);
    kubectl.ok(&["run", "ghost", &format!("--image={image}")]);
    let reason = || {
        kubectl.ok(&[
            "get",
            "pod",
            "ghost",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ])
    };
    wait_for("ErrImagePull", MINUTE, || {
        (reason() == "ErrImagePull").then_some(())
    });
    wait_for("ImagePullBackOff", MINUTE, || {
        (reason() == "ImagePullBackOff").then_some(())
    });
    let pod = kubectl.json(&["get", "pod", "ghost"]);
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        format!("Back-off pulling image {image:?}"),
        "{pod:#}"
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    let described = kubectl.ok(&["describe", "pod", "ghost"]);
    for expected in [
        format!("Failed to pull image {image:?}"),
        "Error: ErrImagePull".to_string(),
        format!("Back-off pulling image {image:?}"),
        "Error: ImagePullBackOff".to_string(),
    ] {
        assert!(described.contains(&expected), "{expected}: {described}");
    }
    let table = kubectl.ok(&["get", "pod", "ghost"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("ImagePullBackOff") || row.contains("ErrImagePull"),
        "{table}"
    );
    kubectl.ok(&["delete", "pod", "ghost", "--wait=false"]);
}
