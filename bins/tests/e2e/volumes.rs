//! Pod volumes through the real binaries and kubectl, in `oci`
//! containers: emptyDir on disk with an exact `sizeLimit` and in memory,
//! subPath and readOnly mounts, a container's ephemeral-storage limit, and
//! what the API and the drivers refuse, naming the field.

use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::oci::oci_cluster_with;
use crate::common::*;

/// A cluster with one `oci` node `vols` and the busybox image as `bb:1`.
fn oci_cluster() -> (Cluster, Kubectl) {
    let (cluster, kubectl) = oci_cluster_with("vols", &["--default-driver", "oci"]);
    cluster.offered_driver("oci");
    (cluster, kubectl)
}

/// `sh -c script` in container `container` of pod `pod`: exit code and
/// output (stdout then stderr).
fn exec(kubectl: &Kubectl, pod: &str, container: &str, script: &str) -> (i32, String) {
    let output = kubectl.run(&["exec", pod, "-c", container, "--", "sh", "-c", script]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

const SIZED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: sized}
spec:
  runtimeClassName: DRIVER
  volumes:
  - {name: disk, emptyDir: {sizeLimit: 16Mi}}
  - {name: memory, emptyDir: {medium: Memory, sizeLimit: 4Mi}}
  - {name: shared, emptyDir: {}}
  initContainers:
  - name: prepare
    image: bb:1
    command: [sh, -c, "mkdir -p /shared/logs && echo from-init > /shared/logs/hello"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: main
    image: bb:1
    command: [sleep, "3600"]
    resources: {limits: {ephemeral-storage: 16Mi}}
    volumeMounts:
    - {name: disk, mountPath: /disk}
    - {name: memory, mountPath: /memory}
    - {name: shared, mountPath: /logs, subPath: logs, readOnly: true}
  - name: writer
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
"#;

/// Every size is a hard limit: a write past an emptyDir's `sizeLimit` (on
/// disk or in memory) or past the container's ephemeral-storage limit
/// fails with ENOSPC and the pod keeps running, nothing evicted. A subPath
/// mounted read-only shows what another container wrote and refuses
/// writes. Deleting the pod leaves nothing mounted and no loop device.
#[test]
#[ignore = "needs root + runc + conmon + kubectl + loop devices"]
fn sizes_are_hard_limits_and_sub_paths_read_only() {
    let (cluster, kubectl) = oci_cluster();
    sizes_and_sub_paths(&cluster, &kubectl, "vols", "oci");
}

/// The same on the containerd driver (its snapshot's overlay writes on the
/// sized layer).
#[test]
#[ignore = "needs root + containerd + runc + kubectl + loop devices"]
fn sizes_are_hard_limits_and_sub_paths_read_only_on_containerd() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the containerd driver needs root (cgroups, containerd's socket)"
    );
    // Declared first so that it stops last, after the agent.
    let containerd_dir = tempfile::tempdir().unwrap();
    let containerd = c4m_testkit::Containerd::start(containerd_dir.path());
    let socket = containerd.socket().display().to_string();
    let mut cluster = Cluster::start();
    cluster.start_agent_with("ctd", "4", "4Gi", &["--containerd-socket", &socket]);
    cluster.offered_driver("containerd");
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    let kubectl = Kubectl::for_cluster(&cluster);
    sizes_and_sub_paths(&cluster, &kubectl, "ctd", "containerd");
}

fn sizes_and_sub_paths(cluster: &Cluster, kubectl: &Kubectl, node: &str, driver: &str) {
    kubectl.run_ready(cluster, "sized", &SIZED.replace("DRIVER", driver));

    for (place, megabytes) in [("/disk", 32), ("/memory", 8), ("/root-fill", 32)] {
        let target = if place == "/root-fill" {
            place.to_string()
        } else {
            format!("{place}/fill")
        };
        let (code, output) = exec(
            kubectl,
            "sized",
            "main",
            &format!("dd if=/dev/zero of={target} bs=1M count={megabytes}"),
        );
        assert_ne!(code, 0, "{place}: {megabytes} MiB fit: {output}");
        assert!(
            output.contains("No space left on device"),
            "{place}: {output}"
        );
    }
    let (code, output) = exec(kubectl, "sized", "main", "cat /logs/hello");
    assert_eq!((code, output.as_str()), (0, "from-init\n"));
    let (code, output) = exec(kubectl, "sized", "main", "echo x > /logs/new");
    assert_ne!(code, 0, "a read-only subPath took a write");
    assert!(output.contains("Read-only file system"), "{output}");
    exec(
        kubectl,
        "sized",
        "writer",
        "echo later > /shared/logs/later",
    );
    let (_, output) = exec(kubectl, "sized", "main", "cat /logs/later");
    assert_eq!(
        output, "later\n",
        "the subPath shows the other container's write"
    );

    let pod = kubectl.json(&["get", "pod", "sized"]);
    assert_eq!(pod["status"]["phase"], "Running", "nothing evicted: {pod}");
    assert_eq!(restarts(&pod), 0, "{pod}");

    kubectl.ok(&["delete", "pod", "sized", "--timeout=60s"]);
    all_torn_down(cluster, node);
}

/// The API refuses a hostPath volume for an unprivileged container and a
/// Bidirectional mount likewise; a pod naming the `process` driver with
/// volumeMounts, and one naming `docker` with an ephemeral-storage limit,
/// are refused naming the field and the drivers that can.
#[test]
#[ignore = "needs kubectl"]
fn what_cannot_be_honoured_is_refused_naming_the_field() {
    let mut cluster = Cluster::start();
    cluster.start_agent("plain", "2", "2Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let apply = |name: &str, manifest: &str| {
        let path = cluster.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        kubectl.fails(&["apply", "-f", path.to_str().unwrap()])
    };
    let host = apply(
        "host",
        r#"apiVersion: v1
kind: Pod
metadata: {name: host}
spec:
  volumes: [{name: logs, hostPath: {path: /var/log}}]
  containers:
  - {name: main, image: bb:1, volumeMounts: [{name: logs, mountPath: /logs}]}
"#,
    );
    assert!(
        host.contains("spec.volumes[0].hostPath")
            && host.contains("hostPath volumes are for privileged containers only"),
        "{host}"
    );
    let shared = apply(
        "shared",
        r#"apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - {name: main, image: bb:1, volumeMounts: [{name: d, mountPath: /d, mountPropagation: Bidirectional}]}
"#,
    );
    assert!(
        shared.contains("spec.containers[0].volumeMounts[0].mountPropagation"),
        "{shared}"
    );
    let process = apply(
        "process",
        r#"apiVersion: v1
kind: Pod
metadata: {name: process}
spec:
  runtimeClassName: process
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - {name: main, command: [sleep, "60"], volumeMounts: [{name: d, mountPath: /d}]}
"#,
    );
    assert!(
        process.contains("spec.containers[0].volumeMounts")
            && process.contains("(drivers that can: oci, containerd, docker, cri)"),
        "{process}"
    );
    let docker = apply(
        "docker",
        r#"apiVersion: v1
kind: Pod
metadata: {name: docker}
spec:
  runtimeClassName: docker
  containers:
  - {name: main, image: bb:1, resources: {limits: {ephemeral-storage: 1Gi}}}
"#,
    );
    assert!(
        docker.contains("spec.containers[0].resources.limits.ephemeral-storage")
            && docker.contains("(drivers that can: oci, containerd)"),
        "{docker}"
    );
}

const PROPAGATING: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: propagating}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: mounter
    image: bb:1
    securityContext: {privileged: true}
    command: [sh, -c, "mkdir -p /shared/inner && mount -t tmpfs tmpfs /shared/inner && echo propagated > /shared/inner/f && exec sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /shared, mountPropagation: Bidirectional}]
  - name: watcher
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts: [{name: shared, mountPath: /seen, mountPropagation: HostToContainer}]
  - name: private
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts: [{name: shared, mountPath: /own}]
"#;

/// mountPropagation as Kubernetes gives it: what a privileged container
/// mounts inside a `Bidirectional` volume reaches the node and, from
/// there, a running container's `HostToContainer` mount of it; a mount
/// without propagation does not see what is mounted after it started. The
/// propagated mounts go with the pod.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn mounts_propagate_as_asked() {
    let (cluster, kubectl) = oci_cluster();
    kubectl.run_ready(&cluster, "propagating", PROPAGATING);
    wait_for("the propagated mount", Duration::from_secs(30), || {
        let (code, output) = exec(&kubectl, "propagating", "watcher", "cat /seen/inner/f");
        (code == 0 && output == "propagated\n").then_some(())
    });
    // Mounted once every container runs: only propagation carries it.
    let (code, output) = exec(
        &kubectl,
        "propagating",
        "mounter",
        "mkdir -p /shared/later && mount -t tmpfs tmpfs /shared/later && echo later > /shared/later/f",
    );
    assert_eq!(code, 0, "{output}");
    wait_for(
        "the later mount propagated",
        Duration::from_secs(30),
        || {
            let (code, output) = exec(&kubectl, "propagating", "watcher", "cat /seen/later/f");
            (code == 0 && output == "later\n").then_some(())
        },
    );
    let (code, output) = exec(&kubectl, "propagating", "private", "ls -A /own/later");
    assert_eq!(
        (code, output.as_str()),
        (0, ""),
        "a mount without propagation saw a later mount"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains("/volumes/shared/inner ") && l.contains(" tmpfs ")),
        "the node has the container's mount"
    );
    kubectl.ok(&["delete", "pod", "propagating", "--timeout=60s"]);
    all_torn_down(&cluster, "vols");
}

/// A pod with a sized emptyDir of its own, writing `data` into it.
fn keeper(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes: [{{name: disk, emptyDir: {{sizeLimit: 16Mi}}}}]
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "echo kept-data > /disk/data; exec sleep 3600"]
    volumeMounts: [{{name: disk, mountPath: /disk}}]
"#
    )
}

/// The pod volume directories on node `node` of pods named `name`.
fn volume_dirs_of(cluster: &Cluster, node: &str, name: &str) -> Vec<String> {
    let root = cluster.agent_dir(node).join("pod-volumes");
    std::fs::read_dir(root)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|id| id.starts_with(&format!("default_{name}_")))
                .collect()
        })
        .unwrap_or_default()
}

/// An agent killed with -9 and started again adopts a running pod with its
/// volumes (the data and the mount kept), and removes the volumes of a pod
/// deleted while it was down; deleting the last pod leaves no mount and no
/// loop device.
#[test]
#[ignore = "needs root + runc + conmon + kubectl + loop devices"]
fn a_restarted_agent_keeps_adopted_pods_volumes_and_removes_orphans() {
    let (mut cluster, kubectl) = oci_cluster();
    kubectl.run_ready(&cluster, "kept", &keeper("kept"));
    kubectl.run_ready(&cluster, "dropped", &keeper("dropped"));
    assert_eq!(volume_dirs_of(&cluster, "vols", "dropped").len(), 1);

    cluster.kill_agent("vols");
    kubectl.ok(&[
        "delete",
        "pod",
        "dropped",
        "--force",
        "--grace-period=0",
        "--wait=false",
    ]);
    cluster.start_agent_with("vols", "4", "4Gi", &["--default-driver", "oci"]);

    wait_for(
        "the deleted pod's volumes removed",
        Duration::from_secs(60),
        || {
            volume_dirs_of(&cluster, "vols", "dropped")
                .is_empty()
                .then_some(())
        },
    );
    let (code, output) = exec(&kubectl, "kept", "main", "cat /disk/data");
    assert_eq!((code, output.as_str()), (0, "kept-data\n"));
    let (code, output) = exec(
        &kubectl,
        "kept",
        "main",
        "dd if=/dev/zero of=/disk/fill bs=1M count=32",
    );
    assert!(
        code != 0 && output.contains("No space left on device"),
        "the adopted pod's limit holds: {output}"
    );
    let pod = kubectl.json(&["get", "pod", "kept"]);
    assert_eq!(restarts(&pod), 0, "adopted, not restarted: {pod}");

    kubectl.ok(&["delete", "pod", "kept", "--timeout=60s"]);
    all_torn_down(&cluster, "vols");
}

/// Waits until node `node` has no pod volume directory left, then insists
/// nothing is mounted under its pod directories and no loop device is
/// backed by its pool.
fn all_torn_down(cluster: &Cluster, node: &str) {
    let volumes = cluster.agent_dir(node).join("pod-volumes");
    wait_for(
        "the pods' volumes torn down",
        Duration::from_secs(30),
        || {
            let left = std::fs::read_dir(&volumes).map(|d| d.count()).unwrap_or(0);
            (left == 0).then_some(())
        },
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let agent_dir = cluster.agent_dir(node).display().to_string();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            // Below the pods' directories (the root is bound onto itself).
            l.contains(&format!("{agent_dir}/pod-volumes/"))
                || l.contains(&format!("{agent_dir}/pod-scratch/"))
        })
        .collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    let pool = cluster.agent_dir(node).join("pod-scratch");
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(&pool.display().to_string()),
        "loop devices left: {loops}"
    );
}

const CONFIGURED: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {app.conf: "version-1"}
---
apiVersion: v1
kind: Pod
metadata: {name: configured}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes: [{name: config, configMap: {name: app-config}}]
  containers:
  - name: main
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts:
    - {name: config, mountPath: /etc/app}
    - {name: config, mountPath: /etc/single.conf, subPath: app.conf}
"#;

/// A ConfigMap edited while its pod runs shows in the container's files
/// without a restart; a subPath mount of it keeps what it had, as
/// Kubernetes'; the files are read-only to the container.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn a_config_map_edit_shows_in_the_running_container() {
    let (cluster, kubectl) = oci_cluster();
    kubectl.run_ready(&cluster, "configured", CONFIGURED);
    let read = |path: &str| exec(&kubectl, "configured", "main", &format!("cat {path}"));
    assert_eq!(read("/etc/app/app.conf"), (0, "version-1".to_string()));
    assert_eq!(read("/etc/single.conf"), (0, "version-1".to_string()));
    let (code, output) = exec(&kubectl, "configured", "main", "echo x > /etc/app/new");
    assert!(
        code != 0 && output.contains("Read-only file system"),
        "a configMap volume took a write: {output}"
    );

    kubectl.ok(&[
        "patch",
        "configmap",
        "app-config",
        "-p",
        r#"{"data": {"app.conf": "version-2", "extra": "added"}}"#,
    ]);
    wait_for("the edit in the container", Duration::from_secs(30), || {
        (read("/etc/app/app.conf").1 == "version-2").then_some(())
    });
    assert_eq!(read("/etc/app/extra"), (0, "added".to_string()));
    assert_eq!(
        read("/etc/single.conf"),
        (0, "version-1".to_string()),
        "a subPath mount does not follow edits"
    );
    let pod = kubectl.json(&["get", "pod", "configured"]);
    assert_eq!(restarts(&pod), 0, "updated in place: {pod}");

    kubectl.ok(&["delete", "pod", "configured", "--timeout=60s"]);
    all_torn_down(&cluster, "vols");
}

const CLAIMED: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
  containers:
  - name: main
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts: [{name: data, mountPath: /data}]
"#;

/// A claim of the default class, mounted into a pod through the node's
/// volume manager: what one pod writes the next one reads; the volume's
/// size is a hard limit.
#[test]
#[ignore = "needs root + runc + conmon + kubectl + loop devices"]
fn a_claims_data_outlives_its_pod() {
    let (cluster, kubectl) = oci_cluster();
    kubectl.run_ready(&cluster, "first", &CLAIMED.replace("NAME", "first"));
    let (code, output) = exec(&kubectl, "first", "main", "echo kept > /data/file && sync");
    assert_eq!(code, 0, "{output}");
    let (code, output) = exec(
        &kubectl,
        "first",
        "main",
        "dd if=/dev/zero of=/data/fill bs=1M count=32",
    );
    assert!(
        code != 0 && output.contains("No space left on device"),
        "32 MiB into a 16 MiB claim: {output}"
    );
    kubectl.ok(&["delete", "pod", "first", "--timeout=60s"]);
    kubectl.run_ready(&cluster, "second", &CLAIMED.replace("NAME", "second"));
    assert_eq!(
        exec(&kubectl, "second", "main", "cat /data/file"),
        (0, "kept\n".to_string())
    );
    kubectl.ok(&["delete", "pod", "second", "--timeout=60s"]);
    kubectl.ok(&["delete", "pvc", "data", "--timeout=60s"]);
}

const WAITING: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: waiting}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: config, configMap: {name: late-config}}
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: 16Mi}}
  containers:
  - name: main
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts:
    - {name: config, mountPath: /etc/late}
    - {name: scratch, mountPath: /scratch}
"#;

/// A pod whose ConfigMap does not exist yet waits in ContainerCreating
/// with the kubelet's words and a FailedMount Event, and starts once the
/// ConfigMap is made; its generic ephemeral volume is a claim of its own,
/// sized, gone with the pod.
#[test]
#[ignore = "needs root + runc + conmon + kubectl + loop devices"]
fn a_pod_waits_for_its_volumes_then_runs() {
    let (cluster, kubectl) = oci_cluster();
    let path = cluster.dir.path().join("waiting.yaml");
    std::fs::write(&path, WAITING).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    wait_for("ContainerCreating", Duration::from_secs(60), || {
        let pod = kubectl.json(&["get", "pod", "waiting"]);
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        (waiting["reason"] == "ContainerCreating"
            && waiting["message"]
                .as_str()
                .is_some_and(|m| m.contains("late-config")))
        .then_some(())
    });
    wait_for("the FailedMount Event", Duration::from_secs(30), || {
        let events = kubectl.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=waiting",
        ]);
        (events.contains("FailedMount") && events.contains("late-config")).then_some(())
    });
    kubectl.ok(&[
        "create",
        "configmap",
        "late-config",
        "--from-literal=key=value",
    ]);
    let ready = kubectl.run(&[
        "wait",
        "--for=condition=Ready",
        "pod/waiting",
        "--timeout=60s",
    ]);
    assert!(
        ready.status.success(),
        "{}",
        kubectl.ok(&["describe", "pod", "waiting"])
    );
    assert_eq!(
        exec(&kubectl, "waiting", "main", "cat /etc/late/key"),
        (0, "value".to_string())
    );
    let (code, output) = exec(
        &kubectl,
        "waiting",
        "main",
        "dd if=/dev/zero of=/scratch/fill bs=1M count=32",
    );
    assert!(
        code != 0 && output.contains("No space left on device"),
        "32 MiB into a 16 MiB ephemeral volume: {output}"
    );
    kubectl.ok(&["get", "pvc", "waiting-scratch"]);
    kubectl.ok(&["delete", "pod", "waiting", "--timeout=60s"]);
    wait_for("the ephemeral claim gone", Duration::from_secs(60), || {
        (!kubectl
            .run(&["get", "pvc", "waiting-scratch"])
            .status
            .success())
        .then_some(())
    });
    all_torn_down(&cluster, "vols");
}

/// `c4m run --volume NAME:PATH --disk SIZE` on the oci driver: the volume
/// is mounted where asked, and both the volume's size and the instance's
/// own disk stop writes with ENOSPC, nothing evicted.
#[test]
#[ignore = "needs root + runc + conmon + kubectl + loop devices"]
fn c4m_run_volume_and_disk_are_hard_limits() {
    let (cluster, kubectl) = oci_cluster();
    cluster.ok(&["volume", "create", "--size", "16Mi", "--name", "data"]);
    cluster.ok(&[
        "run",
        "--name",
        "app",
        "--driver",
        "oci",
        "--image",
        "bb:1",
        "--volume",
        "data:/data",
        "--disk",
        "16Mi",
        "--",
        "sleep",
        "3600",
    ]);
    let pods = cluster.wait_ready("c4m.io/microservice=app", 1, Duration::from_secs(60));
    let pod = name_of(&pods[0]);
    for (target, what) in [("/data/fill", "the volume"), ("/fill", "--disk")] {
        let (code, output) = exec(
            &kubectl,
            &pod,
            "app",
            &format!("dd if=/dev/zero of={target} bs=1M count=32"),
        );
        assert!(
            code != 0 && output.contains("No space left on device"),
            "32 MiB into 16 MiB of {what}: {output}"
        );
    }
    let pod = kubectl.json(&["get", "pod", &pod]);
    assert_eq!(pod["status"]["phase"], "Running", "nothing evicted: {pod}");
    assert_eq!(restarts(&pod), 0, "{pod}");
    kubectl.ok(&["delete", "microservice", "app", "--timeout=60s"]);
    cluster.wait_gone("c4m.io/microservice=app", Duration::from_secs(60));
    all_torn_down(&cluster, "vols");
    cluster.ok(&["volume", "delete", "data"]);
}

/// A privileged container's hostPath volume is the node's directory
/// itself (made with `DirectoryOrCreate`); one whose `type` does not match
/// what is there keeps its pod in ContainerCreating, naming the volume.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn host_paths_are_the_nodes_own_for_privileged_containers() {
    let (cluster, kubectl) = oci_cluster();
    let host_dir = cluster.dir.path().join("host/made");
    let manifest = |name: &str, path: &std::path::Path, kind: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes: [{{name: host, hostPath: {{path: {}, type: {kind}}}}}]
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "echo from-container > /host/file; exec sleep 3600"]
    securityContext: {{privileged: true}}
    volumeMounts: [{{name: host, mountPath: /host}}]
"#,
            path.display()
        )
    };
    kubectl.run_ready(
        &cluster,
        "hosted",
        &manifest("hosted", &host_dir, "DirectoryOrCreate"),
    );
    wait_for(
        "the container's write on the node",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(host_dir.join("file"))
                .ok()
                .filter(|text| text == "from-container\n")
        },
    );
    let path = cluster.dir.path().join("wrong.yaml");
    std::fs::write(
        &path,
        manifest("wrong", &host_dir.join("file"), "Directory"),
    )
    .unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    wait_for(
        "ContainerCreating naming the volume",
        Duration::from_secs(30),
        || {
            let pod = kubectl.json(&["get", "pod", "wrong"]);
            let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            let message = waiting["message"].as_str().unwrap_or_default();
            (waiting["reason"] == "ContainerCreating"
                && message.starts_with("MountVolume.SetUp failed for volume \"host\"")
                && message.contains("is not a directory"))
            .then_some(())
        },
    );
    kubectl.ok(&["delete", "pod", "hosted", "wrong", "--timeout=60s"]);
    all_torn_down(&cluster, "vols");
    assert!(host_dir.join("file").exists(), "the node's files stay");
}

const PROJECTED: &str = r#"apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: Pod
metadata: {name: projected, labels: {tier: web}}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: secret, secret: {secretName: creds, defaultMode: 0400}}
  - name: info
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
  - name: all
    projected:
      sources:
      - configMap: {name: settings, items: [{key: mode, path: conf/mode}]}
      - secret: {name: creds}
  containers:
  - name: main
    image: bb:1
    command: [sleep, "3600"]
    volumeMounts:
    - {name: secret, mountPath: /secret}
    - {name: info, mountPath: /info}
    - {name: all, mountPath: /all}
"#;

/// Secret, downwardAPI and projected volumes show the files the control
/// plane resolved, with their modes.
#[test]
#[ignore = "needs root + runc + conmon + kubectl"]
fn secret_downward_api_and_projected_volumes_show_their_files() {
    let (cluster, kubectl) = oci_cluster();
    kubectl.run_ready(&cluster, "projected", PROJECTED);
    let run = |script: &str| exec(&kubectl, "projected", "main", script);
    assert_eq!(
        run("cat /secret/password; stat -L -c %a /secret/password"),
        (0, "s3cret400\n".to_string())
    );
    assert_eq!(run("cat /info/labels"), (0, "tier=\"web\"".to_string()));
    assert_eq!(
        run("cat /all/conf/mode; echo; cat /all/password"),
        (0, "fast\ns3cret".to_string())
    );
    kubectl.ok(&["delete", "pod", "projected", "--timeout=60s"]);
    all_torn_down(&cluster, "vols");
}
