//! The node's volume manager with the real binaries: crash safety of the
//! agent (`kill -9` at every c4m-storage fail point) and of the control
//! plane during provisioning, CSI drivers registered on a node, NFS
//! volumes across simulated hosts.
//!
//! Leaks are counted as the issue asks: loop devices by backing file
//! (`losetup -j` for each image, and `losetup --list` for deleted ones),
//! mounts under the agent's claims and pool, the volumes' and snapshots'
//! records, and the claims' pod records.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use c4m_storage::testing::{CleanupGuard, require_root_and};
use serde_json::Value;

use crate::common::kubectl::Kubectl;
use crate::common::oci::require_oci;
use crate::common::volumes::{
    agent_claims, agent_leaks, agent_pool, assert_agent_leaked_nothing, json_files, volume_record,
};
use crate::common::{C4M_AGENT, Cluster, busybox_image_tar, wait_for};

const NODE: &str = "n1";
const AGENT_FLAGS: &[&str] = &["--default-driver", "auto"];
const SLOW: Duration = Duration::from_secs(60);

const CLASS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: c4m.io/local
volumeBindingMode: Immediate
allowVolumeExpansion: true
reclaimPolicy: Delete
"#;

fn claim(name: &str, size: &str, from_snapshot: Option<&str>) -> String {
    let source = from_snapshot.map_or(String::new(), |snapshot| {
        format!(
            "  dataSource: {{name: {snapshot}, kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io}}\n"
        )
    });
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  storageClassName: fast\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n{source}"
    )
}

/// A busybox pod running `script` (no double quotes) with the claim
/// `claim` at /data.
pub(crate) fn pod(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "{script}"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

const SNAPSHOT: &str = r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap}
spec:
  source: {persistentVolumeClaimName: data}
"#;

/// `kubectl get KIND NAME -o json` in the default namespace, if it exists.
fn get(kubectl: &Kubectl, kind: &str, name: &str) -> Option<Value> {
    let output = kubectl.run(&["get", kind, name, "-o", "json"]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

fn bound(kubectl: &Kubectl, claim: &str) -> Option<Value> {
    get(kubectl, "persistentvolumeclaims", claim).filter(|c| c["status"]["phase"] == "Bound")
}

fn running(kubectl: &Kubectl, pod: &str) -> bool {
    get(kubectl, "pods", pod).is_some_and(|p| p["status"]["phase"] == "Running")
}

/// The agent's local pool and its claims' directory.
fn pool(cluster: &Cluster) -> PathBuf {
    agent_pool(cluster, NODE)
}

fn claims_dir(cluster: &Cluster) -> PathBuf {
    agent_claims(cluster, NODE)
}

/// Where the agent stages the local volume `handle`.
fn staging(cluster: &Cluster, handle: &str) -> PathBuf {
    claims_dir(cluster)
        .join("staging")
        .join("c4m.io_local")
        .join(handle)
}

/// The agent started with `fail_point` armed (it SIGKILLs itself there).
fn start_agent_failing_at(cluster: &mut Cluster, fail_point: &str) {
    let mut command = Command::new(C4M_AGENT);
    command
        .env(c4m_storage::FAIL_POINT_ENV, fail_point)
        .env(c4m_storage::FAIL_ACTION_ENV, "kill");
    cluster.start_agent_from(command, NODE, "4", "4Gi", AGENT_FLAGS);
}

/// Waits for `check`, starting the agent again (fail point disarmed) if it
/// killed itself meanwhile; `crashed` records that it did.
fn wait_through_crash<T>(
    cluster: &mut Cluster,
    crashed: &mut bool,
    what: &str,
    mut check: impl FnMut(&Cluster) -> Option<T>,
) -> T {
    wait_for(what, SLOW, || {
        if !*crashed && cluster.agent_exited(NODE) {
            *crashed = true;
            cluster.start_agent_with(NODE, "4", "4Gi", AGENT_FLAGS);
        }
        check(cluster)
    })
}

/// Provisions, mounts (writing and fsyncing a file), snapshots, restores,
/// unmounts, expands offline and deletes, going through every fail point;
/// the agent crashes at `fail_point` and is started again. Then the data
/// must be intact and nothing leaked.
fn crash_workload(cluster: &mut Cluster, k: &Kubectl, fail_point: &str) {
    let mut crashed = false;
    let c = &mut crashed;
    cluster.apply(&claim("data", "32Mi", None));
    let data = wait_through_crash(cluster, c, "claim data bound", |_| bound(k, "data"));
    let handle = data["spec"]["volumeName"].as_str().unwrap().to_string();
    cluster.apply(&pod(
        "writer",
        "data",
        "echo fsynced > /data/f && sync /data/f && sleep 3600",
    ));
    let file = staging(cluster, &handle).join("f");
    wait_through_crash(cluster, c, "the writer's fsynced file", |_| {
        (running(k, "writer") && std::fs::read_to_string(&file).is_ok_and(|t| t == "fsynced\n"))
            .then_some(())
    });
    cluster.apply(SNAPSHOT);
    wait_through_crash(cluster, c, "snapshot ready", |_| {
        get(k, "volumesnapshots", "snap")
            .filter(|s| s["status"]["readyToUse"] == true)
            .map(drop)
    });
    cluster.apply(&claim("copy", "32Mi", Some("snap")));
    wait_through_crash(cluster, c, "claim copy bound", |_| bound(k, "copy"));
    k.ok(&["delete", "pod", "writer", "--wait=false"]);
    wait_through_crash(
        cluster,
        c,
        "the writer gone and its volume unstaged",
        |cl| {
            (get(k, "pods", "writer").is_none() && !staging(cl, &handle).join("f").exists())
                .then_some(())
        },
    );
    k.ok(&[
        "patch",
        "persistentvolumeclaim",
        "data",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}"#,
    ]);
    wait_through_crash(cluster, c, "claim data grown to 64Mi", |_| {
        bound(k, "data")
            .filter(|d| d["status"]["capacity"]["storage"] == "64Mi")
            .map(drop)
    });
    // What was fsynced before the crash is there after it.
    cluster.apply(&pod("reader", "data", "cat /data/f && sleep 3600"));
    wait_through_crash(cluster, c, "the reader sees the data", |_| {
        (running(k, "reader") && std::fs::read_to_string(&file).is_ok_and(|t| t == "fsynced\n"))
            .then_some(())
    });
    k.ok(&["delete", "pod", "reader", "--wait=false"]);
    wait_through_crash(cluster, c, "the reader gone", |_| {
        get(k, "pods", "reader").is_none().then_some(())
    });
    k.ok(&["delete", "volumesnapshot", "snap", "--wait=false"]);
    k.ok(&[
        "delete",
        "persistentvolumeclaim",
        "data",
        "copy",
        "--wait=false",
    ]);
    let pool = pool(cluster);
    wait_through_crash(
        cluster,
        c,
        "every claim, volume and snapshot deleted",
        |cl| {
            (cl.list("persistentvolumeclaims").is_empty()
                && cl.list("persistentvolumes").is_empty()
                && cl.list("volumesnapshotcontents").is_empty()
                && json_files(&pool.join("records/volumes")).is_empty()
                && json_files(&pool.join("records/snapshots")).is_empty())
            .then_some(())
        },
    );
    assert!(
        crashed,
        "the agent never reached fail point {fail_point}: the workload does not cover it"
    );
    assert!(
        cluster
            .log_text(&format!("agent-{NODE}"))
            .contains(&format!(
                "{}{fail_point} reached",
                c4m_storage::REACHED_PREFIX
            )),
        "the agent's log does not say it reached {fail_point}"
    );
    assert_agent_leaked_nothing(cluster, NODE, &format!("after a crash at {fail_point}"));
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + e2fsprogs: kills the agent at every storage fail point"]
fn an_agent_killed_at_every_storage_fail_point_leaks_nothing_and_keeps_fsynced_data() {
    require_oci();
    require_root_and(c4m_storage::testing::LOCAL_PROGRAMS).unwrap();
    let mut cluster = Cluster::start();
    let _cleanup = CleanupGuard::new([cluster.dir.path().to_path_buf()]);
    start_agent_failing_at(&mut cluster, c4m_storage::FAIL_POINTS[0]);
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    cluster.apply(CLASS);
    let kubectl = Kubectl::for_cluster(&cluster);
    for (i, fail_point) in c4m_storage::FAIL_POINTS.iter().enumerate() {
        eprintln!("--- kill -9 at {fail_point}");
        if i > 0 {
            cluster.kill_agent(NODE);
            start_agent_failing_at(&mut cluster, fail_point);
        }
        crash_workload(&mut cluster, &kubectl, fail_point);
    }
}

#[test]
#[ignore = "needs root + losetup + e2fsprogs: kills the control plane while claims provision"]
fn a_control_plane_killed_while_claims_provision_leaves_one_volume_per_claim() {
    require_root_and(c4m_storage::testing::LOCAL_PROGRAMS).unwrap();
    let mut cluster = Cluster::start();
    let _cleanup = CleanupGuard::new([cluster.dir.path().to_path_buf()]);
    cluster.start_agent(NODE, "4", "4Gi");
    cluster.apply(CLASS);
    let kubectl = Kubectl::for_cluster(&cluster);
    const CLAIMS: usize = 20;
    let claims: Vec<String> = (0..CLAIMS)
        .map(|i| claim(&format!("c{i}"), "16Mi", None))
        .collect();
    cluster.apply(&claims.join("---\n"));
    // Killed while the first are being provisioned and bound.
    wait_for("a first volume provisioned", SLOW, || {
        (!json_files(&pool(&cluster).join("records/volumes")).is_empty()).then_some(())
    });
    cluster.kill_control();
    cluster.start_control();
    let volumes = wait_for("every claim bound", SLOW, || {
        let bound: Vec<Value> = (0..CLAIMS)
            .filter_map(|i| bound(&kubectl, &format!("c{i}")))
            .collect();
        (bound.len() == CLAIMS).then_some(bound)
    });
    let mut handles: Vec<String> = volumes
        .iter()
        .map(|c| c["spec"]["volumeName"].as_str().unwrap().to_string())
        .collect();
    handles.sort();
    handles.dedup();
    assert_eq!(handles.len(), CLAIMS, "one volume per claim");
    let mut records = json_files(&pool(&cluster).join("records/volumes"));
    records.sort();
    let expected: Vec<String> = handles.iter().map(|h| format!("{h}.json")).collect();
    assert_eq!(records, expected, "exactly the bound volumes on the node");
    let names: Vec<String> = (0..CLAIMS).map(|i| format!("c{i}")).collect();
    let mut args = vec!["delete", "persistentvolumeclaim", "--wait=false"];
    args.extend(names.iter().map(String::as_str));
    kubectl.ok(&args);
    wait_for("every volume deleted", SLOW, || {
        (cluster.list("persistentvolumes").is_empty()
            && json_files(&pool(&cluster).join("records/volumes")).is_empty())
        .then_some(())
    });
    assert_agent_leaked_nothing(&cluster, NODE, "after the control plane's crash");
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + e2fsprogs: a pod's volume through a registered CSI driver"]
fn a_pods_volume_is_staged_and_published_through_a_registered_csi_driver() {
    use c4m_storage::csi::CsiClient;

    require_oci();
    require_root_and(c4m_storage::testing::LOCAL_PROGRAMS).unwrap();
    let mut cluster = Cluster::start();
    let _cleanup = CleanupGuard::new([cluster.dir.path().to_path_buf()]);
    // n1 serves its local volumes as the CSI driver c4m.io/local; n2 has
    // that name registered: its volumes of c4m.io/local go through n1.
    let socket = cluster.dir.path().join("csi.sock");
    let socket_text = socket.display().to_string();
    cluster.start_agent_with(
        "n1",
        "4",
        "4Gi",
        &["--default-driver", "auto", "--csi-socket", &socket_text],
    );
    let registered = format!("c4m.io/local={socket_text}");
    cluster.start_agent_with(
        "n2",
        "4",
        "4Gi",
        &["--default-driver", "auto", "--csi-driver", &registered],
    );
    let tar = busybox_image_tar(cluster.dir.path());
    for node in ["n1", "n2"] {
        cluster.ok(&[
            "image",
            "import",
            tar.to_str().unwrap(),
            "--name",
            "bb",
            "--node",
            node,
        ]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    wait_for("the csi socket", SLOW, || socket.exists().then_some(()));
    let mut client = runtime.block_on(CsiClient::connect(&socket)).unwrap();
    let info = runtime.block_on(client.discover()).unwrap();
    assert_eq!(info.name, "c4m.io/local");
    runtime
        .block_on(client.create_volume("ext-1", 32 << 20, Default::default(), None))
        .unwrap();

    cluster.apply(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: ext-1}
spec:
  capacity: {storage: 32Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  csi: {driver: c4m.io/local, volumeHandle: ext-1, fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ext}
spec:
  storageClassName: ""
  volumeName: ext-1
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: through-csi}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: n2}
  containers:
  - name: main
    image: bb:1
    command: [sh, -c, "echo via csi > /data/f && sync /data/f && sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: ext}
"#,
    );
    let kubectl = Kubectl::for_cluster(&cluster);
    wait_for("the pod running on n2", SLOW, || {
        running(&kubectl, "through-csi").then_some(())
    });
    // n1's driver staged it where n2 asked, and it holds the data.
    let n2_staging = cluster
        .agent_dir("n2")
        .join("claims/staging/c4m.io_local/ext-1");
    let record = wait_for("n1's record of the staged volume", SLOW, || {
        volume_record(&cluster, "n1", "ext-1").filter(|r| {
            r["staged"].is_string() && r["published"].as_array().is_some_and(|p| !p.is_empty())
        })
    });
    assert_eq!(
        record["staged"].as_str().map(Path::new),
        Some(n2_staging.as_path()),
        "staged by n1's driver at n2's staging path"
    );
    wait_for("the data written through the csi mount", SLOW, || {
        std::fs::read_to_string(n2_staging.join("f"))
            .is_ok_and(|t| t == "via csi\n")
            .then_some(())
    });
    assert!(
        volume_record(&cluster, "n2", "ext-1").is_none(),
        "n2's own pool never had it"
    );

    kubectl.ok(&["delete", "pod", "through-csi", "--wait=false"]);
    wait_for("the volume unstaged through the driver", SLOW, || {
        volume_record(&cluster, "n1", "ext-1")
            .filter(|r| {
                r["staged"].is_null() && r["published"].as_array().is_some_and(Vec::is_empty)
            })
            .map(drop)
    });
    kubectl.ok(&["delete", "persistentvolumeclaim", "ext", "--wait=false"]);
    kubectl.ok(&["delete", "persistentvolume", "ext-1", "--wait=false"]);
    runtime.block_on(client.delete_volume("ext-1")).unwrap();
    assert!(volume_record(&cluster, "n1", "ext-1").is_none());
    for node in ["n1", "n2"] {
        let leaked = agent_leaks(&cluster, node);
        assert!(leaked.is_empty(), "{node} leaked {leaked:?}");
    }
}

#[test]
#[ignore = "needs root + runc + conmon + FUSE + nfs-ganesha + rpcbind + nsenter: simulated hosts"]
fn what_an_instance_on_one_host_writes_to_an_nfs_volume_one_on_another_host_reads() {
    use c4m_storage::testing::Ganesha;

    use crate::common::{import_busybox, start_host_agent, start_host_agents};

    require_oci();
    require_root_and(&["ganesha.nfsd", "rpcbind", "unshare", "nsenter"]).unwrap();
    // Declared first, dropped last: after the agents serving its mounts.
    let hosts = c4m_testkit::Hosts::create([10, 99, 254], 2);
    let nfs_dir = tempfile::tempdir().unwrap();
    let ganesha = Ganesha::start(nfs_dir.path(), hosts.gateway());
    let mut cluster = Cluster::start_listening_on(&hosts.gateway().to_string());
    let _cleanup = CleanupGuard::new([cluster.dir.path().to_path_buf()]);
    start_host_agents(
        &mut cluster,
        &hosts,
        "2",
        "2Gi",
        "10.91.0.0/16",
        &["--default-driver", "auto"],
    );
    import_busybox(&cluster, "bb", &["h1", "h2"]);
    let export = &ganesha.export;
    cluster.apply(&format!(
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: shared}}
provisioner: c4m.io/nfs
volumeBindingMode: Immediate
reclaimPolicy: Delete
parameters: {{server: "{}", share: "{}", nfsPort: "{}", mountPort: "{}"}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: shared}}
spec:
  storageClassName: shared
  accessModes: [ReadWriteMany]
  resources: {{requests: {{storage: 64Mi}}}}
"#,
        export.host, export.path, export.nfs_port, export.mount_port
    ));
    let kubectl = Kubectl::for_cluster(&cluster);
    let claim = wait_for("the nfs claim bound", SLOW, || bound(&kubectl, "shared"));
    let handle = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let on = |host: &str, name: &str, script: &str| {
        pod(name, "shared", script).replace(
            "  containers:",
            &format!("  nodeSelector: {{kubernetes.io/hostname: {host}}}\n  containers:"),
        )
    };
    cluster.apply(&on(
        "h1",
        "writer",
        "echo written on h1 > /data/f && sync /data/f && sleep 3600",
    ));
    let on_server = ganesha.export_dir.join(&handle).join("f");
    wait_for("the file on the nfs server", SLOW, || {
        std::fs::read_to_string(&on_server)
            .is_ok_and(|t| t == "written on h1\n")
            .then_some(())
    });
    cluster.apply(&on("h2", "reader", "cat /data/f && sleep 3600"));
    wait_for("h2 reads what h1 wrote", SLOW, || {
        let output = kubectl.run(&["logs", "reader"]);
        String::from_utf8_lossy(&output.stdout)
            .contains("written on h1")
            .then_some(())
    });
    let pods = kubectl.json(&["get", "pods"]);
    let nodes: Vec<(&str, &str)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap(),
                p["spec"]["nodeName"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(nodes, [("reader", "h2"), ("writer", "h1")]);

    // kill -9 of h2's agent ends the FUSE mount it served: the next agent
    // mounts the volume again and restarts the reader, which reads what h1
    // wrote meanwhile.
    cluster.kill_agent("h2");
    kubectl.ok(&[
        "exec",
        "writer",
        "--",
        "sh",
        "-c",
        "echo and more while h2 was down >> /data/f && sync /data/f",
    ]);
    start_host_agent(
        &mut cluster,
        &hosts,
        2,
        ["2", "2Gi"],
        "10.91.0.0/16",
        &["--default-driver", "auto"],
    );
    let mut logs = String::new();
    let restarted = (0..600).any(|_| {
        let output = kubectl.run(&["logs", "reader"]);
        logs = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let done = logs.contains("and more while h2 was down");
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(
        restarted,
        "the reader restarted on a live mount reads what h1 wrote meanwhile: {logs}"
    );
    wait_for("the reader's FailedMount Event", SLOW, || {
        let events = kubectl.json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=reader",
        ]);
        events["items"]
            .as_array()?
            .iter()
            .any(|e| {
                e["reason"] == "FailedMount"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("ended with the previous agent"))
            })
            .then_some(())
    });

    kubectl.ok(&["delete", "pod", "writer", "reader", "--wait=false"]);
    wait_for("the pods gone", SLOW, || {
        (get(&kubectl, "pods", "writer").is_none() && get(&kubectl, "pods", "reader").is_none())
            .then_some(())
    });
    kubectl.ok(&["delete", "persistentvolumeclaim", "shared", "--wait=false"]);
    wait_for(
        "the volume's directory removed from the export",
        SLOW,
        || (!ganesha.export_dir.join(&handle).exists()).then_some(()),
    );
    for host in ["h1", "h2"] {
        let leaked = agent_leaks(&cluster, host);
        assert!(leaked.is_empty(), "{host} leaked {leaked:?}");
    }
}

/// A control plane and the agent `NODE` with the busybox image, the class
/// `CLASS` and a bound 32Mi claim `data`; the claim's volume handle.
fn one_node_with_a_bound_claim() -> (Cluster, CleanupGuard, Kubectl, String) {
    let mut cluster = Cluster::start();
    let cleanup = CleanupGuard::new([cluster.dir.path().to_path_buf()]);
    cluster.start_agent_with(NODE, "4", "4Gi", AGENT_FLAGS);
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    cluster.apply(CLASS);
    cluster.apply(&claim("data", "32Mi", None));
    let kubectl = Kubectl::for_cluster(&cluster);
    let data = wait_for("claim data bound", SLOW, || bound(&kubectl, "data"));
    let handle = data["spec"]["volumeName"].as_str().unwrap().to_string();
    (cluster, cleanup, kubectl, handle)
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + e2fsprogs: offline expansion restarts the pod"]
fn a_mounted_volume_grows_offline_by_restarting_its_pod() {
    require_oci();
    require_root_and(c4m_storage::testing::LOCAL_PROGRAMS).unwrap();
    let (cluster, _cleanup, kubectl, handle) = one_node_with_a_bound_claim();
    cluster.apply(&pod(
        "writer",
        "data",
        "[ -f /data/f ] || echo kept > /data/f; sync /data/f; sleep 3600",
    ));
    let staged = staging(&cluster, &handle);
    wait_for("the writer running with its file", SLOW, || {
        (running(&kubectl, "writer")
            && std::fs::read_to_string(staged.join("f")).is_ok_and(|t| t == "kept\n"))
        .then_some(())
    });
    let size = |path: &Path| {
        nix::sys::statvfs::statvfs(path)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or_default()
    };
    assert!(size(&staged) < 40 << 20, "a 32Mi file system");

    kubectl.ok(&[
        "patch",
        "persistentvolumeclaim",
        "data",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"96Mi"}}}}"#,
    ]);
    // The host refuses to grow it mounted: the pod restarts, and it grows
    // between its unmount and the next mount.
    wait_for("claim data grown to 96Mi", SLOW, || {
        bound(&kubectl, "data")
            .filter(|d| d["status"]["capacity"]["storage"] == "96Mi")
            .map(drop)
    });
    // The file too: the staging directory unmounted (between the two runs)
    // has the size of the node's own file system.
    wait_for(
        "the writer running again on the grown volume, with its data",
        SLOW,
        || {
            (running(&kubectl, "writer")
                && size(&staged) > 80 << 20
                && std::fs::read_to_string(staged.join("f")).is_ok_and(|t| t == "kept\n"))
            .then_some(())
        },
    );
    // The pod's Events say why it restarted (recorded from its report).
    wait_for("the pod's FileSystemResizeRequired Event", SLOW, || {
        let events = kubectl.json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=writer",
        ]);
        events["items"]
            .as_array()?
            .iter()
            .any(|e| e["reason"] == "FileSystemResizeRequired")
            .then_some(())
    });

    kubectl.ok(&["delete", "pod", "writer", "--wait=false"]);
    wait_for("the writer gone", SLOW, || {
        get(&kubectl, "pods", "writer").is_none().then_some(())
    });
    kubectl.ok(&["delete", "persistentvolumeclaim", "data", "--wait=false"]);
    wait_for("the volume deleted", SLOW, || {
        json_files(&pool(&cluster).join("records/volumes"))
            .is_empty()
            .then_some(())
    });
    assert_agent_leaked_nothing(&cluster, NODE, "after the offline expansion");
}

/// What `debugfs` reads of `file` in the ext4 image `image`, unmounted
/// (no loop device).
fn read_in_image(image: &Path, file: &str) -> String {
    let output = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(image)
        .output()
        .unwrap();
    // debugfs says what it could not read on stderr, with status 0.
    assert!(
        output.status.success() && !output.stdout.is_empty(),
        "debugfs {}: {}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The loop devices backed by `image`.
fn loops_of(image: &Path) -> String {
    let output = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + e2fsprogs: a control plane started on an empty store"]
fn a_wiped_store_never_deletes_a_nodes_data_and_reclaimed_volumes_still_go() {
    require_oci();
    require_root_and(c4m_storage::testing::LOCAL_PROGRAMS).unwrap();
    require_root_and(&["debugfs"]).unwrap();
    let (mut cluster, _cleanup, kubectl, handle) = one_node_with_a_bound_claim();
    cluster.apply(&pod(
        "writer",
        "data",
        "echo kept > /data/f && sync /data/f && sleep 3600",
    ));
    let staged = staging(&cluster, &handle).join("f");
    wait_for("the writer's fsynced file", SLOW, || {
        (running(&kubectl, "writer")
            && std::fs::read_to_string(&staged).is_ok_and(|t| t == "kept\n"))
        .then_some(())
    });

    // The control plane comes back on a new, empty data dir (same token);
    // the agent keeps its own and registers again.
    cluster.signal_control(nix::sys::signal::Signal::SIGTERM);
    let control = cluster.dir.path().join("control");
    std::fs::rename(&control, cluster.dir.path().join("control-before")).unwrap();
    cluster.start_control();
    // Its certificate is new too: kubectl needs the new kubeconfig.
    let kubectl = Kubectl::for_cluster(&cluster);
    wait_for("the agent registered again", SLOW, || {
        cluster.node_ready(NODE).then_some(())
    });
    assert!(
        cluster.list("persistentvolumes").is_empty(),
        "a store that knows no volume"
    );
    // No pod, claim or PV wants it: the writer stops, the volume is
    // unmounted (its file system released: no loop device left on it), and
    // kept: a PV referenced it.
    let image = pool(&cluster).join("images").join(format!("{handle}.img"));
    wait_for(
        "the volume unmounted and its loop device gone",
        SLOW,
        || (!staged.exists() && loops_of(&image).is_empty()).then_some(()),
    );
    wait_for("the volume listed as orphaned", SLOW, || {
        cluster
            .ok(&["volume", "list"])
            .lines()
            .any(|l| l.contains(&handle) && l.contains("Orphaned") && l.contains(NODE))
            .then_some(())
    });
    assert_eq!(read_in_image(&image, "/f"), "kept\n", "the data is there");
    let warning = format!("volume {handle} is referenced by no object");
    assert_eq!(
        cluster
            .log_text(&format!("agent-{NODE}"))
            .matches(&warning)
            .count(),
        1,
        "kept with one warning"
    );

    // The deletion path of the new store: a deleted claim's volume stays
    // Terminating while its node (down) has it, and goes with its data.
    cluster.apply(CLASS);
    cluster.apply(&claim("fresh", "32Mi", None));
    let fresh = wait_for("claim fresh bound", SLOW, || bound(&kubectl, "fresh"));
    let fresh = fresh["spec"]["volumeName"].as_str().unwrap().to_string();
    let fresh_image = pool(&cluster).join("images").join(format!("{fresh}.img"));
    assert!(fresh_image.exists());
    cluster.kill_agent(NODE);
    kubectl.ok(&["delete", "persistentvolumeclaim", "fresh", "--wait=false"]);
    wait_for("the volume Terminating", SLOW, || {
        kubectl
            .ok(&["get", "persistentvolume", &fresh])
            .contains("Terminating")
            .then_some(())
    });
    assert!(fresh_image.exists(), "its node is down: its data is there");
    cluster.start_agent_with(NODE, "4", "4Gi", AGENT_FLAGS);
    wait_for("the volume gone", SLOW, || {
        get(&kubectl, "persistentvolumes", &fresh)
            .is_none()
            .then_some(())
    });
    assert!(
        !fresh_image.exists(),
        "its data deleted before the object went"
    );
    assert_eq!(
        read_in_image(&image, "/f"),
        "kept\n",
        "the orphaned volume survived the agent's restart and its passes"
    );

    // The orphan deleted the way docs/storage.md says: a PersistentVolume
    // naming it, policy Delete, released by a claim that does not exist.
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: orphan}}
spec:
  capacity: {{storage: 32Mi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  claimRef: {{namespace: default, name: gone, uid: gone}}
  csi: {{driver: c4m.io/local, volumeHandle: {handle}}}
  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{NODE}]}}]}}]}}}}
"#
    ));
    wait_for("the orphan's volume and image gone", SLOW, || {
        (get(&kubectl, "persistentvolumes", "orphan").is_none() && !image.exists()).then_some(())
    });
    wait_for("the orphan no longer listed", SLOW, || {
        (!cluster.ok(&["volume", "list"]).contains(&handle)).then_some(())
    });
    assert_agent_leaked_nothing(&cluster, NODE, "after the wiped store's volumes went");
}
