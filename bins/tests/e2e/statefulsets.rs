//! StatefulSets through the real kubectl, in real `oci` containers: pods
//! with stable names created in order (each once the one before it is
//! Ready), each answering DNS at `<pod>.<service>.<namespace>.svc.c4m`;
//! `kubectl rollout status` and `kubectl scale` (down from the highest
//! ordinal); a template change rolled out as a new ControllerRevision; a
//! deleted pod back under its name. And the storage of issue 16: a redis
//! StatefulSet of 2 whose data survives the set being deleted and
//! recreated, and a pod being deleted.

use std::time::Duration;

use serde_json::Value;

use crate::common::kubectl::Kubectl;
use crate::common::oci::oci_cluster_with;
use crate::common::*;
use crate::workloads::events_of;

const MINUTE: Duration = Duration::from_secs(60);

/// The instance network's range for this test (slice 0: 10.99.208.0/24).
const NETWORK_FLAGS: &[&str] = &[
    "--instance-network",
    "--default-vpc-cidr",
    "10.99.208.0/20",
    "--default-driver",
    "oci",
];

/// A headless Service `web`, a StatefulSet `web` of three busybox pods and
/// a client to look them up from.
const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: bb:1
        command: [sleep, "3600"]
        env: [{name: GEN, value: "1"}]
        readinessProbe:
          exec: {command: ["true"]}
          initialDelaySeconds: 2
          periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers:
  - {name: main, image: bb:1, command: [sleep, "3600"]}
"#;

/// `kubectl apply` of `manifest`, written to the cluster's dir as
/// `NAME.yaml`; its output.
pub(crate) fn apply(cluster: &Cluster, kubectl: &Kubectl, name: &str, manifest: &str) -> String {
    let path = cluster.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()])
}

/// The pods labelled `app=APP`, by name.
pub(crate) fn pods_of(kubectl: &Kubectl, app: &str) -> Vec<Value> {
    let mut pods: Vec<Value> = kubectl.json(&["get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    pods.sort_by_key(name_of);
    pods
}

/// Waits until the pods labelled `app=APP` are exactly `names`, ready and
/// not being deleted; returns them.
pub(crate) fn wait_pods(kubectl: &Kubectl, app: &str, names: &[&str]) -> Vec<Value> {
    wait_for(&format!("pods {names:?}"), 2 * MINUTE, || {
        let pods = pods_of(kubectl, app);
        let settled = pods.iter().map(name_of).collect::<Vec<_>>() == names
            && pods
                .iter()
                .all(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null());
        settled.then_some(pods)
    })
}

/// When the pod's Ready condition last turned.
fn ready_since(pod: &Value) -> String {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root + runc + conmon + nftables + kubectl"]
fn a_statefulset_runs_ordered_pods_with_stable_names_rolls_out_and_scales() {
    let (cluster, kubectl) = oci_cluster_with("stateful", NETWORK_FLAGS);
    let applied = apply(&cluster, &kubectl, "web", WEB);
    assert!(
        applied.contains("statefulset.apps/web created"),
        "{applied}"
    );
    let status = kubectl.ok(&["rollout", "status", "sts/web", "--timeout=120s"]);
    let set = kubectl.json(&["get", "sts", "web"]);
    let revision = set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(revision.starts_with("web-"), "{set}");
    // Kubernetes defaults partition 0, which kubectl reports so.
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{status}"
    );
    assert_eq!(set["status"]["readyReplicas"], 3, "{set}");
    assert_eq!(set["status"]["availableReplicas"], 3, "{set}");
    assert_eq!(set["status"]["currentRevision"], revision.as_str(), "{set}");

    // Stable names, each made once the one before it was Ready (2 s).
    let pods = wait_pods(&kubectl, "web", &["web-0", "web-1", "web-2"]);
    for (ordinal, pod) in pods.iter().enumerate() {
        assert_eq!(pod["spec"]["hostname"], format!("web-{ordinal}"));
        assert_eq!(pod["spec"]["subdomain"], "web");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["apps.kubernetes.io/pod-index"], ordinal.to_string());
        assert_eq!(labels["controller-revision-hash"], revision.as_str());
        if ordinal > 0 {
            let created = pod["metadata"]["creationTimestamp"].as_str().unwrap();
            let before = ready_since(&pods[ordinal - 1]);
            let previous = pods[ordinal - 1]["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap();
            assert!(
                created >= before.as_str() && created > previous,
                "web-{ordinal} created at {created}, before web-{} was ready at {before}",
                ordinal - 1
            );
        }
    }
    let events = events_of(&kubectl, "web");
    for ordinal in 0..3 {
        let created =
            format!("SuccessfulCreate: create Pod web-{ordinal} in StatefulSet web successful");
        assert!(events.contains(&created), "{events:?}");
    }

    // Each pod answers at <pod>.<service>.<namespace>.svc.c4m.
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    for pod in &pods {
        let name = format!("{}.web.default.svc.c4m", name_of(pod));
        let answer = wait_for(&format!("{name} resolves"), MINUTE, || {
            let output = kubectl.run(&["exec", "client", "--", "nslookup", &name]);
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            text.contains(&format!("Address: {}", ip_of(pod)))
                .then_some(text)
        });
        assert!(answer.contains(&name), "{answer}");
    }

    // A template change is a new revision, rolled out from web-2 down.
    let updated = kubectl.ok(&["set", "env", "sts/web", "GEN=2"]);
    assert_eq!(updated.trim(), "statefulset.apps/web env updated");
    let status = kubectl.ok(&["rollout", "status", "sts/web", "--timeout=120s"]);
    let set = kubectl.json(&["get", "sts", "web"]);
    let new_revision = set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_revision, revision);
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{status}"
    );
    assert_eq!(set["status"]["currentRevision"], new_revision.as_str());
    assert_eq!(set["status"]["updatedReplicas"], 3);
    let pods = wait_pods(&kubectl, "web", &["web-0", "web-1", "web-2"]);
    for pod in &pods {
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["value"], "2",
            "{pod}"
        );
    }
    // Each pod takes 2 s to be ready: the replacements' creation times
    // show the order, highest ordinal first.
    let created: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["creationTimestamp"].as_str().unwrap())
        .collect();
    assert!(
        created[2] < created[1] && created[1] < created[0],
        "{created:?}"
    );
    let events = events_of(&kubectl, "web");
    for ordinal in 0..3 {
        let deleted =
            format!("SuccessfulDelete: delete Pod web-{ordinal} in StatefulSet web successful");
        assert!(events.contains(&deleted), "{events:?}");
    }
    let revisions = kubectl.ok(&[
        "get",
        "controllerrevisions",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut revisions: Vec<&str> = revisions.split_whitespace().collect();
    revisions.sort();
    let mut expected = vec![revision.as_str(), new_revision.as_str()];
    expected.sort();
    assert_eq!(revisions, expected);

    // A deleted pod comes back under its name.
    let uid = pods[1]["metadata"]["uid"].clone();
    kubectl.ok(&["delete", "pod", "web-1", "--wait=false"]);
    let pods = wait_for("web-1 back", 2 * MINUTE, || {
        let pods = wait_pods(&kubectl, "web", &["web-0", "web-1", "web-2"]);
        (pods[1]["metadata"]["uid"] != uid).then_some(pods)
    });
    assert_eq!(name_of(&pods[1]), "web-1");

    // Scaling down removes the highest ordinals.
    let scaled = kubectl.ok(&["scale", "sts", "web", "--replicas=1"]);
    assert_eq!(scaled.trim(), "statefulset.apps/web scaled");
    wait_pods(&kubectl, "web", &["web-0"]);
    let status = kubectl.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{status}"
    );

    // kubectl rollout undo goes back to the first revision.
    let history = kubectl.ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains("REVISION"), "{history}");
    let undone = kubectl.ok(&["rollout", "undo", "sts/web"]);
    assert_eq!(undone.trim(), "statefulset.apps/web rolled back");
    kubectl.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    let pods = wait_for("web-0 back at GEN=1", 2 * MINUTE, || {
        let pods = wait_pods(&kubectl, "web", &["web-0"]);
        (pods[0]["spec"]["containers"][0]["env"][0]["value"] == "1").then_some(pods)
    });
    assert_eq!(
        pods[0]["metadata"]["labels"]["controller-revision-hash"],
        revision.as_str()
    );
}

/// The instance network of the redis test (slice 0: 10.99.224.0/24).
const REDIS_NETWORK_FLAGS: &[&str] = &[
    "--instance-network",
    "--default-vpc-cidr",
    "10.99.224.0/20",
    "--default-driver",
    "oci",
];

/// A StatefulSet of two redis servers, each keeping its append-only file
/// on its own claim of 64Mi.
const REDIS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: redis
        image: redis:1
        command: [redis-server, --dir, /data, --appendonly, "yes", --appendfsync, always,
          --save, "", --protected-mode, "no"]
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe:
          exec: {command: [redis-cli, ping]}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
"#;

/// `kubectl rollout status sts/NAME` within `timeout`; on failure, what
/// its pods and claims say.
pub(crate) fn rollout(kubectl: &Kubectl, name: &str, timeout: &str) -> String {
    let output = kubectl.run(&[
        "rollout",
        "status",
        &format!("sts/{name}"),
        &format!("--timeout={timeout}"),
    ]);
    if !output.status.success() {
        let describe = kubectl.run(&["describe", "pods,pvc"]);
        panic!(
            "sts/{name} did not roll out: {}\n{}{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&describe.stdout),
            String::from_utf8_lossy(&describe.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// `redis-cli ARGS` in pod `pod`, trimmed.
fn redis_cli(kubectl: &Kubectl, pod: &str, args: &[&str]) -> String {
    let mut command = vec!["exec", pod, "--", "redis-cli"];
    command.extend(args);
    kubectl.ok(&command).trim().to_string()
}

/// The claim `name` once Bound; its volume's name.
pub(crate) fn bound_volume(kubectl: &Kubectl, name: &str) -> String {
    wait_for(&format!("claim {name} bound"), 2 * MINUTE, || {
        let claim = kubectl.json(&["get", "pvc", name]);
        (claim["status"]["phase"] == "Bound")
            .then(|| claim["spec"]["volumeName"].as_str().map(str::to_string))
            .flatten()
    })
}

#[test]
#[ignore = "needs root + runc + conmon + nftables + kubectl + redis-server"]
fn a_redis_statefulset_keeps_its_data_when_deleted_and_recreated() {
    let (cluster, kubectl) = oci_cluster_with("redis", REDIS_NETWORK_FLAGS);
    let redis = [
        std::path::Path::new("/usr/bin/redis-server"),
        std::path::Path::new("/usr/bin/redis-cli"),
    ];
    for binary in redis {
        assert!(
            binary.is_file(),
            "{} is missing: apt-get install redis-server",
            binary.display()
        );
    }
    let tar = busybox_image_tar_with(cluster.dir.path(), "redis", &redis);
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "redis"]);
    apply(&cluster, &kubectl, "db", REDIS);
    rollout(&kubectl, "db", "60s");
    let volumes: Vec<String> = ["data-db-0", "data-db-1"]
        .iter()
        .map(|claim| bound_volume(&kubectl, claim))
        .collect();
    assert_ne!(volumes[0], volumes[1]);
    for (ordinal, volume) in volumes.iter().enumerate() {
        let pod = format!("db-{ordinal}");
        // /data is the claim's own filesystem, of about its 64Mi.
        let df = kubectl.ok(&["exec", &pod, "--", "df", "-k", "/data"]);
        let size: u64 = df
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{df}"));
        assert!((40_000..=70_000).contains(&size), "{pod} /data: {df}");
        let pv = kubectl.json(&["get", "pv", volume]);
        assert_eq!(
            pv["spec"]["claimRef"]["name"],
            format!("data-db-{ordinal}"),
            "{pv}"
        );
        assert_eq!(
            redis_cli(
                &kubectl,
                &pod,
                &["set", "greeting", &format!("hello from {pod}")]
            ),
            "OK"
        );
    }

    // The set goes; its claims stay (Retain); a new set finds its data.
    let deleted = kubectl.ok(&["delete", "sts", "db"]);
    assert_eq!(deleted.trim(), "statefulset.apps \"db\" deleted");
    wait_for("db pods gone", 2 * MINUTE, || {
        pods_of(&kubectl, "db").is_empty().then_some(())
    });
    for claim in ["data-db-0", "data-db-1"] {
        let claim = kubectl.json(&["get", "pvc", claim]);
        assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    }
    apply(&cluster, &kubectl, "db", REDIS);
    rollout(&kubectl, "db", "180s");
    for (ordinal, volume) in volumes.iter().enumerate() {
        let pod = format!("db-{ordinal}");
        assert_eq!(
            &bound_volume(&kubectl, &format!("data-db-{ordinal}")),
            volume
        );
        assert_eq!(
            redis_cli(&kubectl, &pod, &["get", "greeting"]),
            format!("hello from {pod}")
        );
    }

    // db-0 deleted comes back on its node with its volume.
    let node = node_of(&pods_of(&kubectl, "db")[0]);
    kubectl.ok(&["delete", "pod", "db-0"]);
    let pods = wait_pods(&kubectl, "db", &["db-0", "db-1"]);
    assert_eq!(node_of(&pods[0]), node);
    assert_eq!(
        redis_cli(&kubectl, "db-0", &["get", "greeting"]),
        "hello from db-0"
    );
}

/// A set whose claims go with it (`whenDeleted: Delete`) and with a
/// scaled-away pod (`whenScaled: Delete`). No node runs the pods: claims
/// are made and owned whatever the pods' state.
const RETAINING_NOTHING: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: scratch}
spec:
  serviceName: scratch
  replicas: 2
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  selector: {matchLabels: {app: scratch}}
  template:
    metadata: {labels: {app: scratch}}
    spec:
      containers: [{name: main, image: bb:1, volumeMounts: [{name: data, mountPath: /data}]}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
"#;

/// The names of the claims of the namespace, sorted.
fn claim_names(kubectl: &Kubectl) -> Vec<String> {
    let mut names: Vec<String> = kubectl.json(&["get", "pvc"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(name_of)
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs kubectl"]
fn claims_follow_the_retention_policy_when_scaled_and_deleted() {
    let cluster = Cluster::start();
    let kubectl = Kubectl::for_cluster(&cluster);
    apply(&cluster, &kubectl, "scratch", RETAINING_NOTHING);
    let set = kubectl.json(&["get", "sts", "scratch"]);
    wait_for("claims owned by the set", MINUTE, || {
        let claims = kubectl.json(&["get", "pvc"]);
        let owned = claims["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["metadata"]["ownerReferences"][0]["uid"] == set["metadata"]["uid"])
            .count();
        (owned == 2).then_some(())
    });
    assert_eq!(claim_names(&kubectl), ["data-scratch-0", "data-scratch-1"]);

    // Scaled down: scratch-1 goes, and its claim with it.
    kubectl.ok(&["scale", "sts", "scratch", "--replicas=1"]);
    wait_for("data-scratch-1 gone", MINUTE, || {
        (claim_names(&kubectl) == ["data-scratch-0"]).then_some(())
    });
    // Deleted: the last claim goes with the set.
    kubectl.ok(&["delete", "sts", "scratch"]);
    wait_for("every claim gone", MINUTE, || {
        claim_names(&kubectl).is_empty().then_some(())
    });
}
