//! Pods as Kubernetes users write them, seen through the real kubectl: the
//! driver a pod naming none runs on, how an image that cannot be pulled
//! shows, and the kubelet's Events `kubectl describe pod` lists.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::{Containerd, Registry};

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

/// A cluster whose `boxed` node runs pods in `oci` containers, with the
/// busybox fixture imported as `bb:1`, and kubectl for it.
fn oci_node_with_busybox() -> (Cluster, Kubectl) {
    let cluster = oci_node();
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    let kubectl = Kubectl::for_cluster(&cluster);
    (cluster, kubectl)
}

/// `kubectl apply -f` of `yaml`, written to the cluster's directory as `name`.
fn kubectl_apply(cluster: &Cluster, kubectl: &Kubectl, name: &str, yaml: &str) {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
}

/// The first line `kubectl logs --timestamps` shows of a container, split
/// into its time and text, once it has one.
fn first_line(kubectl: &Kubectl, pod: &str, container: &str) -> (String, String) {
    wait_for(&format!("{container}'s first line"), MINUTE, || {
        let output = kubectl.run(&["logs", pod, "-c", container, "--timestamps"]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let line = text.lines().next()?;
        let (time, rest) = line.split_once(' ')?;
        Some((time.to_string(), rest.to_string()))
    })
}

/// RFC 3339 times with nanoseconds, as kubectl's `--timestamps` prints
/// them, in order.
fn at(time: &str) -> jiff::Timestamp {
    time.parse()
        .unwrap_or_else(|e| panic!("{time:?} is not an RFC 3339 time: {e}"))
}

/// A pod with an init container and a native sidecar: the init container
/// runs first and to completion, the sidecar is up (serving on the pod's
/// localhost) before the app starts, and once the app has ended the
/// sidecar is stopped and the pod succeeds.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn an_init_container_runs_first_and_a_sidecar_is_up_before_the_app() {
    let (cluster, kubectl) = oci_node_with_busybox();
    init_container_and_sidecar_come_first(&cluster, &kubectl, "oci");
}

/// The same pod on the `containerd` driver.
#[test]
#[ignore = "needs root + containerd + runc + kubectl"]
fn on_containerd_an_init_container_runs_first_and_a_sidecar_is_up_before_the_app() {
    let node = ContainerdNode::start();
    init_container_and_sidecar_come_first(&node.cluster, &node.kubectl, "containerd");
}

/// A cluster whose node `n1` offers the `containerd` driver of a
/// containerd of its own, with the busybox fixture imported as `bb:1`.
/// Fields drop in order: the agent stops before containerd.
struct ContainerdNode {
    kubectl: Kubectl,
    cluster: Cluster,
    /// The agent's flags, to start it again.
    flags: Vec<String>,
    _containerd: Containerd,
    _dir: tempfile::TempDir,
}

impl ContainerdNode {
    fn start() -> ContainerdNode {
        require_oci();
        let dir = tempfile::tempdir().unwrap();
        let containerd = Containerd::start(dir.path());
        let flags = vec![
            "--containerd-socket".to_string(),
            containerd.socket().display().to_string(),
        ];
        let mut cluster = Cluster::start();
        cluster.start_agent_with("n1", "4", "4Gi", &strs(&flags));
        cluster.offered_driver("containerd");
        let tar = busybox_image_tar(cluster.dir.path());
        cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
        let kubectl = Kubectl::for_cluster(&cluster);
        ContainerdNode {
            kubectl,
            cluster,
            flags,
            _containerd: containerd,
            _dir: dir,
        }
    }
}

fn strs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

/// The containers of a pod share one IPC namespace; with
/// `shareProcessNamespace: true` also one PID namespace, whose PID 1 is
/// the pod's holder (so an init container's exit takes nothing with it),
/// and without it each its own. A restarted agent adopts the holder: a
/// container restarted after it joins the same namespaces. Deleting the
/// pods stops their holders.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn a_pods_containers_share_ipc_and_with_share_process_namespace_processes() {
    let (mut cluster, kubectl) = oci_node_with_busybox();
    let restart = |cluster: &mut Cluster| {
        cluster.kill_agent("boxed");
        cluster.start_agent_with("boxed", "4", "4Gi", &["--default-driver", "auto"]);
    };
    pod_namespaces_are_shared(&mut cluster, &kubectl, "oci", restart);
}

/// The same on the `containerd` driver.
#[test]
#[ignore = "needs root + containerd + runc + kubectl"]
fn on_containerd_a_pods_containers_share_ipc_and_with_share_process_namespace_processes() {
    let mut node = ContainerdNode::start();
    let flags = node.flags.clone();
    let restart = |cluster: &mut Cluster| {
        cluster.kill_agent("n1");
        cluster.start_agent_with("n1", "4", "4Gi", &strs(&flags));
    };
    pod_namespaces_are_shared(&mut node.cluster, &node.kubectl, "containerd", restart);
}

/// The pod namespaces test above on `driver`; `restart` restarts the
/// node's agent.
fn pod_namespaces_are_shared(
    cluster: &mut Cluster,
    kubectl: &Kubectl,
    driver: &str,
    restart: impl Fn(&mut Cluster),
) {
    let pod = |name: &str, share: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: {driver}
  shareProcessNamespace: {share}
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: setup
    image: bb:1
    command: [sh, -c, "echo set-up"]
  containers:
  - name: a
    image: bb:1
    command: [sleep, "3600"]
  - name: b
    image: bb:1
    command: [sleep, "3601"]
"#
        )
    };
    kubectl_apply(
        cluster,
        kubectl,
        "namespaces.yaml",
        &format!("{}---{}", pod("together", true), pod("apart", false)),
    );
    for name in ["together", "apart"] {
        wait_for(&format!("{name}'s containers running"), MINUTE, || {
            let table = kubectl.ok(&["get", "pod", name]);
            table.lines().nth(1)?.contains(" 2/2 ").then_some(())
        });
    }
    let exec = |pod: &str, container: &str, command: &[&str]| {
        let mut args = vec!["exec", pod, "-c", container, "--"];
        args.extend_from_slice(command);
        kubectl.ok(&args)
    };
    // With shareProcessNamespace, a sees b's process, and PID 1 is the
    // pod's holder, which outlived the init container.
    let ps = exec("together", "a", &["ps", "-o", "pid,args"]);
    assert!(ps.contains("sleep 3601"), "{ps}");
    let first = ps.lines().nth(1).unwrap_or_default();
    assert!(
        first.trim_start().starts_with("1 ") && first.contains("c4m-pod-holder"),
        "{ps}"
    );
    // Without, each container is alone, its own process PID 1.
    let ps = exec("apart", "a", &["ps", "-o", "pid,args"]);
    assert!(!ps.contains("sleep 3601"), "{ps}");
    assert!(
        ps.lines()
            .nth(1)
            .is_some_and(|l| l.trim_start().starts_with("1 ") && l.contains("sleep 3600")),
        "{ps}"
    );
    // Both pods' containers share one IPC namespace, each pod its own.
    let ipc = |pod: &str, container: &str| exec(pod, container, &["readlink", "/proc/self/ns/ipc"]);
    assert!(ipc("together", "a").starts_with("ipc:["));
    assert_eq!(ipc("together", "a"), ipc("together", "b"));
    assert_eq!(ipc("apart", "a"), ipc("apart", "b"));
    assert_ne!(ipc("together", "a"), ipc("apart", "a"));
    let together_ipc = ipc("together", "a");
    // And one /dev/shm (POSIX shared memory), each pod its own.
    for pod in ["together", "apart"] {
        exec(
            pod,
            "a",
            &["sh", "-c", &format!("echo from-{pod} > /dev/shm/note")],
        );
        assert_eq!(
            exec(pod, "b", &["cat", "/dev/shm/note"]),
            format!("from-{pod}\n")
        );
    }

    // The agent restarts and adopts the holder: b, killed from a, comes
    // back in the same namespaces.
    restart(cluster);
    std::thread::sleep(Duration::from_secs(3));
    let kill_b = "kill $(ps -o pid,args | grep 'sleep 360[1]' | awk '{print $1}')";
    exec("together", "a", &["sh", "-c", kill_b]);
    wait_for("b to restart", MINUTE, || {
        let pod = kubectl.json(&["get", "pod", "together"]);
        let b = &pod["status"]["containerStatuses"][1];
        (b["restartCount"] == 1 && b["state"]["running"].is_object()).then_some(())
    });
    let ps = exec("together", "a", &["ps", "-o", "pid,args"]);
    assert!(ps.contains("sleep 3601"), "{ps}");
    assert_eq!(ipc("together", "b"), together_ipc);
    let pod = kubectl.json(&["get", "pod", "together"]);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "{pod:#}"
    );

    // Deleting the pods stops their holders.
    let pods_dir = cluster.dir.path().display().to_string();
    let holders = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|cmdline| {
                let text = String::from_utf8_lossy(cmdline);
                text.starts_with("c4m-pod-holder\0") && text.contains(&pods_dir)
            })
            .count()
    };
    assert_eq!(holders(), 2, "one holder per pod");
    let shm_mounts = || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts
            .lines()
            .filter(|l| l.contains(&pods_dir) && l.contains(".shm "))
            .count()
    };
    assert_eq!(shm_mounts(), 2, "one /dev/shm per pod");
    kubectl.ok(&["delete", "pod", "together", "apart"]);
    wait_for("the holders to stop", MINUTE, || {
        (holders() == 0).then_some(())
    });
    assert_eq!(shm_mounts(), 0, "unmounted with their holders");
}

/// Runs the pod of an init container, a sidecar and an app on `driver` and
/// checks their order, as the two tests above say.
fn init_container_and_sidecar_come_first(cluster: &Cluster, kubectl: &Kubectl, driver: &str) {
    kubectl_apply(
        cluster,
        kubectl,
        "ordered.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: ordered}}
spec:
  runtimeClassName: {driver}
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: setup
    image: bb:1
    command: [sh, -c, "if wget -q -O- http://127.0.0.1:8080/up 2>/dev/null; then echo sidecar-too-early; else echo setup-ran; fi"]
  - name: proxy
    image: bb:1
    restartPolicy: Always
    command: [sh, -c, "mkdir -p /tmp/www && echo sidecar-up > /tmp/www/up && echo serving && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]
  containers:
  - name: app
    image: bb:1
    command: [sh, -c, "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://127.0.0.1:8080/up 2>/dev/null && break; sleep 0.2; done; sleep 6"]
"#
        ),
    );
    let (setup_at, setup) = first_line(kubectl, "ordered", "setup");
    let (proxy_at, proxy) = first_line(kubectl, "ordered", "proxy");
    let (app_at, app) = first_line(kubectl, "ordered", "app");
    // (a) The init container ran first: nothing served yet, and it wrote
    // before the sidecar did.
    assert_eq!(setup, "setup-ran");
    assert_eq!(proxy, "serving");
    assert!(at(&setup_at) < at(&proxy_at), "{setup_at} then {proxy_at}");
    // (b) The sidecar was up before the app started: the app reached it on
    // localhost, and wrote after it.
    assert_eq!(app, "sidecar-up");
    assert!(at(&proxy_at) < at(&app_at), "{proxy_at} then {app_at}");
    let pod = kubectl.json(&["get", "pod", "ordered"]);
    let init = &pod["status"]["initContainerStatuses"];
    assert_eq!(init[0]["name"], "setup", "{pod:#}");
    assert_eq!(
        init[0]["state"]["terminated"]["reason"], "Completed",
        "{pod:#}"
    );
    assert_eq!(init[0]["state"]["terminated"]["exitCode"], 0, "{pod:#}");
    for container in [&init[0], &init[1], &pod["status"]["containerStatuses"][0]] {
        let id = container["containerID"].as_str().unwrap_or_default();
        assert!(id.starts_with(&format!("{driver}://")), "{pod:#}");
    }
    assert_eq!(init[1]["name"], "proxy", "{pod:#}");
    assert!(init[1]["state"]["running"].is_object(), "{pod:#}");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    let table = kubectl.ok(&["get", "pod", "ordered"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains(" 2/2 ") && row.contains("Running"), "{table}");

    // (c) The app ends: the sidecar is stopped after it, and the pod
    // succeeds.
    let pod = wait_for("the pod to succeed", MINUTE, || {
        let pod = kubectl.json(&["get", "pod", "ordered"]);
        matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
        .then_some(pod)
    });
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
    let proxy = &pod["status"]["initContainerStatuses"][1];
    assert!(proxy["state"]["terminated"].is_object(), "{pod:#}");
    assert_eq!(proxy["restartCount"], 0, "{pod:#}");
    let app = &pod["status"]["containerStatuses"][0];
    assert_eq!(app["state"]["terminated"]["reason"], "Completed", "{pod:#}");
    let described = kubectl.ok(&["describe", "pod", "ordered"]);
    for expected in [
        "Started container setup",
        "Started container proxy",
        "Started container app",
    ] {
        assert!(described.contains(expected), "{expected}: {described}");
    }
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=ordered",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.fieldPath} {.reason}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("spec.initContainers{proxy} Started"),
        "{events}"
    );
    assert!(events.contains("spec.containers{app} Started"), "{events}");
}

/// A Job whose pod has a sidecar completes: the app container's success
/// stops the sidecar, and the pod succeeds.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn a_job_whose_pod_has_a_sidecar_completes_and_the_sidecar_stops() {
    let (cluster, kubectl) = oci_node_with_busybox();
    kubectl_apply(
        &cluster,
        &kubectl,
        "job.yaml",
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: report}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 2
      initContainers:
      - name: shipper
        image: bb:1
        restartPolicy: Always
        command: [sh, -c, "echo shipping; exec sleep 3600"]
      containers:
      - name: work
        image: bb:1
        command: [sh, -c, "echo working; sleep 2"]
"#,
    );
    kubectl.ok(&[
        "wait",
        "--for=condition=complete",
        "job/report",
        "--timeout=90s",
    ]);
    let pods = kubectl.json(&["get", "pods", "-l", "job-name=report"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pods:#}");
    let shipper = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(shipper["name"], "shipper", "{pod:#}");
    assert!(
        shipper["state"]["terminated"].is_object(),
        "the sidecar stopped: {pod:#}"
    );
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "{pod:#}"
    );
    let job = kubectl.json(&["get", "job", "report"]);
    assert_eq!(job["status"]["succeeded"], 1, "{job:#}");
}

/// Two containers of one pod share its network (each other's localhost);
/// `kubectl logs -c` and `kubectl exec -c` reach the container named, and
/// a name the pod lacks is refused.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn two_containers_share_localhost_and_logs_and_exec_take_a_container() {
    let (cluster, kubectl) = oci_node_with_busybox();
    kubectl_apply(
        &cluster,
        &kubectl,
        "shared.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  containers:
  - name: web
    image: bb:1
    command: [sh, -c, "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]
  - name: client
    image: bb:1
    command: [sh, -c, "while true; do wget -q -O- http://127.0.0.1:8080/ 2>/dev/null && exec sleep 3600; sleep 0.3; done"]
"#,
    );
    let logs = wait_for("the client's output", MINUTE, || {
        let output = kubectl.run(&["logs", "shared", "-c", "client"]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs, "hello-from-web\n");
    let table = wait_for("both containers ready", MINUTE, || {
        let table = kubectl.ok(&["get", "pod", "shared"]);
        table.lines().nth(1)?.contains(" 2/2 ").then_some(table)
    });
    assert!(table.contains("Running"), "{table}");
    assert_eq!(
        kubectl.ok(&[
            "exec",
            "shared",
            "-c",
            "web",
            "--",
            "cat",
            "/tmp/www/index.html"
        ]),
        "hello-from-web\n"
    );
    // Each container has its own file system: the client has no /tmp/www.
    let output = kubectl.run(&["exec", "shared", "-c", "client", "--", "ls", "/tmp/www"]);
    assert!(!output.status.success(), "{output:?}");
    let refused = kubectl.fails(&["logs", "shared", "-c", "nosuch"]);
    assert!(
        refused.contains("container nosuch is not valid for pod shared"),
        "{refused}"
    );
    let pod = kubectl.json(&["get", "pod", "shared"]);
    let names: Vec<&str> = pod["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "client"], "{pod:#}");
    for container in pod["status"]["containerStatuses"].as_array().unwrap() {
        assert!(container["state"]["running"].is_object(), "{pod:#}");
        assert!(
            container["containerID"]
                .as_str()
                .is_some_and(|id| id.starts_with("oci://")),
            "{pod:#}"
        );
    }
    kubectl.ok(&["delete", "pod", "shared", "--wait=false"]);
}

/// A container with a startupProbe is `started` only once it passed; what
/// it writes to /dev/termination-log before it fails is its terminated
/// state's message.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn a_startup_probe_gates_started_and_the_termination_message_is_kept() {
    let (cluster, kubectl) = oci_node_with_busybox();
    kubectl_apply(
        &cluster,
        &kubectl,
        "pod.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "sleep 6; touch /tmp/up; sleep 4; echo bye > /dev/termination-log; exit 3"]
    startupProbe:
      exec: {command: [test, -f, /tmp/up]}
      periodSeconds: 1
      failureThreshold: 60
"#,
    );
    let started = |kubectl: &Kubectl| {
        let pod = kubectl.json(&["get", "pod", "slow"]);
        let main = pod["status"]["containerStatuses"][0].clone();
        (
            main["state"]["running"].is_object(),
            main["started"] == true,
        )
    };
    wait_for("main to run", MINUTE, || {
        let (running, started) = started(&kubectl);
        assert!(!started || running, "started only while it runs");
        running.then_some(())
    });
    assert!(!started(&kubectl).1, "not started before /tmp/up exists");
    wait_for("the startup probe to pass", MINUTE, || {
        started(&kubectl).1.then_some(())
    });
    let pod = wait_for("the pod to fail", MINUTE, || {
        let pod = kubectl.json(&["get", "pod", "slow"]);
        (pod["status"]["phase"] == "Failed").then_some(pod)
    });
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod:#}");
    assert_eq!(terminated["message"], "bye\n", "{pod:#}");
}

/// Lifecycle hooks on `oci`, through the real kubectl: the postStart hook
/// (an exec in the container) writes the file the main command waits for;
/// the preStop hook (`sleep 2`) makes the deletion take its two seconds; a
/// failing postStart kills the container, and `kubectl describe` shows
/// FailedPostStartHook, a failing preStop FailedPreStopHook.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn lifecycle_hooks_run_around_the_container() {
    let (cluster, kubectl) = oci_node_with_busybox();
    lifecycle_hooks_on(&cluster, &kubectl, "oci");
}

/// The same hooks on the `containerd` driver.
#[test]
#[ignore = "needs root + containerd + runc + kubectl"]
fn on_containerd_lifecycle_hooks_run_around_the_container() {
    let node = ContainerdNode::start();
    lifecycle_hooks_on(&node.cluster, &node.kubectl, "containerd");
}

/// Runs the pods of the two tests above on `driver`.
fn lifecycle_hooks_on(cluster: &Cluster, kubectl: &Kubectl, driver: &str) {
    kubectl_apply(
        cluster,
        kubectl,
        "hooked.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  runtimeClassName: {driver}
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "trap 'exit 0' TERM; until test -f /tmp/ready; do sleep 0.1; done; echo ready: $(cat /tmp/ready); while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "echo from-post-start > /tmp/ready"]}}
      preStop:
        sleep: {{seconds: 2}}
"#
        ),
    );
    wait_for("the main command to see the hook's file", MINUTE, || {
        let output = kubectl.run(&["logs", "hooked"]);
        String::from_utf8_lossy(&output.stdout)
            .contains("ready: from-post-start")
            .then_some(())
    });
    let pod = kubectl.json(&["get", "pod", "hooked"]);
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "{pod:#}"
    );
    let began = std::time::Instant::now();
    kubectl.ok(&["delete", "pod", "hooked"]);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "the preStop sleep ran first: {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "then the container stopped on TERM: {took:?}"
    );

    kubectl_apply(
        cluster,
        kubectl,
        "broken.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: broken}}
spec:
  runtimeClassName: {driver}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "echo no setup >&2; exit 3"]}}
      preStop:
        exec: {{command: [sh, -c, "exit 7"]}}
"#
        ),
    );
    let (described, line) = crate::events::described_with(kubectl, "broken", "FailedPostStartHook");
    assert!(line.starts_with("Warning"), "{line}");
    assert!(
        described.contains(r#"Exec lifecycle hook (["sh", "-c", "echo no setup >&2; exit 3"]) for Container "main""#),
        "{described}"
    );
    let (_, line) = crate::events::described_with(kubectl, "broken", "FailedPreStopHook");
    assert!(line.starts_with("Warning"), "{line}");
    wait_for("the killed container to restart", MINUTE, || {
        let pod = kubectl.json(&["get", "pod", "broken"]);
        let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_i64();
        (restarts >= Some(1)).then_some(())
    });
    crate::events::described_with(kubectl, "broken", "BackOff");
    kubectl.ok(&["delete", "pod", "broken", "--wait=false"]);
}

/// A crash-looping container on `oci`, through the real kubectl: `kubectl
/// logs --previous` shows the run before the current one (and only it),
/// and with `terminationMessagePolicy: FallbackToLogsOnError` the end of
/// the failed run's log is its termination message.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn logs_of_the_previous_run_and_the_log_as_termination_message() {
    let (cluster, kubectl) = oci_node_with_busybox();
    previous_logs_on(&cluster, &kubectl, "oci");
}

/// The same crash loop on the `containerd` driver.
#[test]
#[ignore = "needs root + containerd + runc + kubectl"]
fn on_containerd_logs_of_the_previous_run_and_the_log_as_termination_message() {
    let node = ContainerdNode::start();
    previous_logs_on(&node.cluster, &node.kubectl, "containerd");
}

/// Runs the crash loop of the two tests above on `driver`.
fn previous_logs_on(cluster: &Cluster, kubectl: &Kubectl, driver: &str) {
    kubectl_apply(
        cluster,
        kubectl,
        "crasher.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: crasher}}
spec:
  runtimeClassName: {driver}
  containers:
  - name: main
    image: bb:1
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, "echo run $(cat /proc/uptime); echo failing; exit 2"]
"#
        ),
    );
    let pod = wait_for("a restart", MINUTE, || {
        let pod = kubectl.json(&["get", "pod", "crasher"]);
        let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_i64();
        (restarts >= Some(1)).then_some(pod)
    });
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 2, "{pod:#}");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("run ") && message.ends_with("\nfailing\n"),
        "the log's end is the message: {pod:#}"
    );
    let previous = kubectl.ok(&["logs", "crasher", "--previous"]);
    let lines: Vec<&str> = previous.lines().collect();
    assert_eq!(lines.len(), 2, "one run: {previous:?}");
    assert!(
        lines[0].starts_with("run ") && lines[1] == "failing",
        "{previous:?}"
    );
    let current = wait_for("the current run's output", MINUTE, || {
        let output = kubectl.run(&["logs", "crasher"]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        text.starts_with("run ").then_some(text)
    });
    assert_ne!(
        current.lines().next(),
        Some(lines[0]),
        "the previous run is not the current one"
    );
    assert_eq!(
        kubectl.ok(&["logs", "crasher", "--previous", "--tail=1"]),
        "failing\n"
    );
    let stamped = kubectl.ok(&["logs", "crasher", "--previous", "--timestamps"]);
    for line in stamped.lines() {
        let (time, _) = line.split_once(' ').unwrap();
        time.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    kubectl.ok(&["delete", "pod", "crasher", "--wait=false"]);
}

/// On the `process` driver exec hooks run as host processes in the
/// instance's environment (its variables): the postStart hook writes what
/// the command waits for, the preStop hook runs on deletion.
#[test]
#[ignore = "needs root + kubectl: cgroups"]
fn on_the_process_driver_exec_hooks_run_in_the_instances_environment() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let (mark, stopped) = (
        cluster.dir.path().join("mark"),
        cluster.dir.path().join("stopped"),
    );
    kubectl_apply(
        &cluster,
        &kubectl,
        "hooked.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  containers:
  - name: main
    env: [{{name: MARK, value: from-env}}]
    command: [sh, -c, "until [ -e {mark} ]; do sleep 0.05; done; echo saw $(cat {mark}); exec sleep 3600"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "echo $MARK > {mark}"]}}
      preStop:
        exec: {{command: [sh, -c, "echo $MARK stopping > {stopped}"]}}
"#,
            mark = mark.display(),
            stopped = stopped.display()
        ),
    );
    wait_for("the command to see the hook's file", MINUTE, || {
        let output = kubectl.run(&["logs", "hooked"]);
        String::from_utf8_lossy(&output.stdout)
            .contains("saw from-env")
            .then_some(())
    });
    assert!(!stopped.exists(), "no preStop before the deletion");
    kubectl.ok(&["delete", "pod", "hooked"]);
    assert_eq!(
        std::fs::read_to_string(&stopped).unwrap(),
        "from-env stopping\n"
    );
}

/// `kubectl debug --target`: the API adds an ephemeral container (through
/// the `ephemeralcontainers` subresource, refusing a target the pod lacks),
/// the agent runs it once in the pod's network and IPC namespace and in its
/// target's PID namespace, and it is reported in
/// `ephemeralContainerStatuses`; `kubectl logs` and `exec` take it with
/// `-c`.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn kubectl_debug_runs_an_ephemeral_container_that_sees_its_target() {
    let (cluster, kubectl) = oci_node_with_busybox();
    ephemeral_debugger(&cluster, &kubectl, "oci");
}

/// The same on the `containerd` driver.
#[test]
#[ignore = "needs root + containerd + runc + kubectl"]
fn on_containerd_kubectl_debug_runs_an_ephemeral_container_that_sees_its_target() {
    let node = ContainerdNode::start();
    ephemeral_debugger(&node.cluster, &node.kubectl, "containerd");
}

/// The `kubectl debug` test above on `driver`.
fn ephemeral_debugger(cluster: &Cluster, kubectl: &Kubectl, driver: &str) {
    kubectl_apply(
        cluster,
        kubectl,
        "target.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: target}}
spec:
  runtimeClassName: {driver}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: bb:1
    command: [sleep, "3600"]
  - name: other
    image: bb:1
    command: [sleep, "3601"]
"#
        ),
    );
    wait_for("the pod running", MINUTE, || {
        let table = kubectl.ok(&["get", "pod", "target"]);
        table.lines().nth(1)?.contains(" 2/2 ").then_some(())
    });
    let refused = kubectl.run(&[
        "debug",
        "target",
        "--image=bb:1",
        "--target=nosuch",
        "--",
        "true",
    ]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("spec.ephemeralContainers[0].targetContainerName: Not found: \"nosuch\""),
        "{stderr}"
    );
    let script = "ps -o pid,args; readlink /proc/self/ns/ipc; sleep 4";
    let output = kubectl.run(&[
        "debug",
        "target",
        "--image=bb:1",
        "--target=app",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let name = stdout
        .split("Defaulting debug container name to ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_else(|| panic!("no debug container name in {stdout:?}"))
        .to_string();
    assert!(name.starts_with("debugger-"), "{stdout}");
    let logs = wait_for("the debugger's output", MINUTE, || {
        let output = kubectl.run(&["logs", "target", "-c", &name]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        text.contains("ipc:[").then_some(text)
    });
    // It sees its target's process (PID 1 there), not the other
    // container's, and shares the pod's IPC namespace.
    assert!(logs.contains("sleep 3600"), "{logs}");
    assert!(!logs.contains("sleep 3601"), "{logs}");
    let app_ipc = kubectl.ok(&[
        "exec",
        "target",
        "-c",
        "app",
        "--",
        "readlink",
        "/proc/self/ns/ipc",
    ]);
    assert!(logs.contains(app_ipc.trim()), "{logs} / {app_ipc}");
    assert_eq!(
        kubectl.ok(&["exec", "target", "-c", &name, "--", "echo", "inside"]),
        "inside\n"
    );
    let pod = kubectl.json(&["get", "pod", "target"]);
    let status = &pod["status"]["ephemeralContainerStatuses"][0];
    assert_eq!(status["name"], name.as_str(), "{pod:#}");
    assert!(status["state"]["running"].is_object(), "{pod:#}");
    assert_eq!(
        pod["spec"]["ephemeralContainers"][0]["targetContainerName"],
        "app"
    );
    // It runs once: it ends, and stays ended; the pod runs on.
    let pod = wait_for("the debugger to end", MINUTE, || {
        let pod = kubectl.json(&["get", "pod", "target"]);
        let state = &pod["status"]["ephemeralContainerStatuses"][0]["state"];
        state["terminated"].is_object().then_some(pod)
    });
    std::thread::sleep(Duration::from_secs(2));
    let pod = {
        let later = kubectl.json(&["get", "pod", "target"]);
        assert_eq!(
            later["status"]["ephemeralContainerStatuses"],
            pod["status"]["ephemeralContainerStatuses"],
            "not restarted"
        );
        later
    };
    let status = &pod["status"]["ephemeralContainerStatuses"][0];
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{pod:#}");
    assert_eq!(status["restartCount"], 0, "{pod:#}");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    let described = kubectl.ok(&["describe", "pod", "target"]);
    assert!(described.contains("Ephemeral Containers:"), "{described}");
    assert!(
        described.contains(&format!("Started container {name}")),
        "{described}"
    );
    // The pod itself still takes updates, which keep its ephemeral
    // containers.
    kubectl.ok(&["label", "pod", "target", "debugged=yes"]);
    let pod = kubectl.json(&["get", "pod", "target"]);
    assert_eq!(pod["spec"]["ephemeralContainers"][0]["name"], name.as_str());
    // Interactive: kubectl waits for it to run and attaches (attach is
    // oci's alone); a terminal is refused, naming the field.
    if driver == "oci" {
        let mut debug = kubectl
            .command(&[
                "debug",
                "-i",
                "target",
                "--image=bb:1",
                "--target=app",
                "--",
                "sh",
                "-c",
                "read line; echo got-$line",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = debug.stdin.take().unwrap();
        input.write_all(b"hello\n").unwrap();
        drop(input);
        let debug = debug.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&debug.stdout);
        assert!(debug.status.success(), "{debug:?}");
        assert!(stdout.contains("got-hello"), "{debug:?}");
    }
    let refused = kubectl.run(&["debug", "-it", "target", "--image=bb:1", "--", "sh"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        stderr.contains(".tty: Invalid value: true: is not supported"),
        "{stderr}"
    );
    kubectl.ok(&["delete", "pod", "target", "--wait=false"]);
}
