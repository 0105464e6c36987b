//! Deletion as Kubernetes users know it, with the real kubectl: `delete
//! --cascade=orphan|background|foreground` of a Deployment (its ReplicaSet
//! and instances kept, and adopted by the next Deployment of that selector,
//! or collected by the garbage collector), graceful pod
//! deletion (`Terminating` until the agent has stopped the containers,
//! `wait --for=delete`, `--grace-period=0 --force`), and `rollout
//! pause|resume|restart`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::kubectl::Kubectl;
use crate::common::{Cluster, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A Deployment `name` of `replicas` sleeping instances labelled `app: NAME`.
fn deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: main
          command: ["sleep", "infinity"]
"#
    )
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Applies `yaml` and waits for the rollout to finish.
fn rolled_out(kubectl: &Kubectl, cluster: &Cluster, name: &str, yaml: &str) {
    let path = cluster.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    let status = kubectl.ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=30s",
    ]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
}

fn replica_sets(kubectl: &Kubectl, app: &str) -> Vec<Value> {
    items(&kubectl.json(&["get", "rs", "-l", &format!("app={app}")]))
}

fn pods(kubectl: &Kubectl, app: &str) -> Vec<Value> {
    items(&kubectl.json(&["get", "pods", "-l", &format!("app={app}")]))
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_deletes_with_each_cascade() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("h", 2, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);

    // Orphan: the Deployment goes; its ReplicaSet and instances stay,
    // without their owner reference, and nothing collects them.
    rolled_out(&kubectl, &cluster, "kept", &deployment("kept", 2));
    let output = kubectl.run(&["delete", "deployment", "kept", "--cascade=orphan"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "deployment.apps \"kept\" deleted\n"
    );
    let missing = kubectl.fails(&["get", "deployment", "kept"]);
    assert!(missing.contains("not found"), "{missing}");
    std::thread::sleep(Duration::from_secs(2));
    let sets = replica_sets(&kubectl, "kept");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert!(sets[0]["metadata"]["ownerReferences"].is_null(), "{sets:?}");
    let orphans = pods(&kubectl, "kept");
    assert_eq!(orphans.len(), 2, "{orphans:?}");
    assert!(
        orphans
            .iter()
            .all(|p| p["metadata"]["ownerReferences"].is_null()
                && p["metadata"]["deletionTimestamp"].is_null()),
        "{orphans:?}"
    );

    // The same Deployment again adopts them, ReplicaSet and instances,
    // rather than starting others.
    rolled_out(&kubectl, &cluster, "kept", &deployment("kept", 2));
    let uid = kubectl.json(&["get", "deployment", "kept"])["metadata"]["uid"].clone();
    let names = |pods: &[Value]| {
        let mut names: Vec<String> = pods
            .iter()
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    };
    let adopted = wait_for("the orphans to be adopted", WAIT, || {
        let pods = pods(&kubectl, "kept");
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
            .then_some(pods)
    });
    assert_eq!(names(&adopted), names(&orphans));
    let sets = replica_sets(&kubectl, "kept");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0]["metadata"]["ownerReferences"][0]["uid"], uid);
    kubectl.ok(&["delete", "deployment", "kept"]);

    // Background (the default): the Deployment goes at once, the garbage
    // collector takes its ReplicaSet and instances after it.
    rolled_out(
        &kubectl,
        &cluster,
        "background",
        &deployment("background", 2),
    );
    assert_eq!(
        kubectl.ok(&["delete", "deployment", "background", "--cascade=background"]),
        "deployment.apps \"background\" deleted\n"
    );
    wait_for(
        "the background ReplicaSet and instances to go",
        WAIT,
        || {
            (replica_sets(&kubectl, "background").is_empty()
                && pods(&kubectl, "background").is_empty())
            .then_some(())
        },
    );

    // Foreground: kubectl waits for the Deployment, which goes last.
    rolled_out(
        &kubectl,
        &cluster,
        "foreground",
        &deployment("foreground", 2),
    );
    assert_eq!(
        kubectl.ok(&[
            "delete",
            "deployment",
            "foreground",
            "--cascade=foreground",
            "--timeout=30s"
        ]),
        "deployment.apps \"foreground\" deleted\n"
    );
    assert!(replica_sets(&kubectl, "foreground").is_empty());
    assert!(pods(&kubectl, "foreground").is_empty());

    // The orphans are ordinary objects: deleting them works as ever.
    kubectl.ok(&["delete", "rs", "-l", "app=kept"]);
    kubectl.ok(&["delete", "pods", "-l", "app=kept"]);
    wait_for("the orphans to go", WAIT, || {
        pods(&kubectl, "kept").is_empty().then_some(())
    });

    let bad = kubectl.fails(&["delete", "deployment", "nope", "--cascade=sideways"]);
    assert!(bad.contains("invalid cascade value (sideways)"), "{bad}");
}

/// A pod that takes about two seconds to stop after SIGTERM.
const SLOW_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: slow, labels: {app: slow}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
    - name: main
      command: ["sh", "-c", "trap 'sleep 2; exit 0' TERM; while true; do sleep 0.1; done"]
"#;

const QUICK_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: quick, labels: {app: quick}}
spec:
  containers:
    - name: main
      command: ["sleep", "3600"]
"#;

#[test]
#[ignore = "needs root + kubectl: cgroups"]
fn kubectl_waits_for_a_pod_to_stop() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    cluster.apply(SLOW_POD);
    assert_eq!(
        kubectl.ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            "pod/slow",
            "--timeout=30s"
        ]),
        "pod/slow condition met\n"
    );

    // Deleted: the object stays, marked, until the agent has stopped it.
    assert_eq!(
        kubectl.ok(&["delete", "pod", "slow", "--wait=false"]),
        "pod \"slow\" deleted\n"
    );
    let deleted_at = Instant::now();
    let marked = kubectl.json(&["get", "pod", "slow"]);
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 20);
    let table = kubectl.ok(&["get", "pod", "slow"]);
    assert!(table.contains("Terminating"), "{table}");
    assert_eq!(
        kubectl.ok(&["wait", "--for=delete", "pod/slow", "--timeout=30s"]),
        "pod/slow condition met\n"
    );
    // The trap took two seconds: the object waited for it.
    let took = deleted_at.elapsed();
    assert!(took >= Duration::from_millis(1500), "gone after {took:?}");
    assert!(kubectl.fails(&["get", "pod", "slow"]).contains("not found"));

    // --grace-period=0 --force removes the object at once.
    cluster.apply(QUICK_POD);
    cluster.wait_ready("app=quick", 1, WAIT);
    let forced = kubectl.run(&["delete", "pod", "quick", "--grace-period=0", "--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_eq!(
        String::from_utf8_lossy(&forced.stdout),
        "pod \"quick\" force deleted\n"
    );
    assert!(
        String::from_utf8_lossy(&forced.stderr).contains("Immediate deletion does not wait"),
        "{forced:?}"
    );
    assert!(
        kubectl
            .fails(&["get", "pod", "quick"])
            .contains("not found")
    );
    // Waiting for a pod already gone succeeds at once.
    let gone = kubectl.run(&["wait", "--for=delete", "pod/quick", "--timeout=5s"]);
    assert!(gone.status.success(), "{gone:?}");
}

fn template_hashes(kubectl: &Kubectl, app: &str) -> Vec<String> {
    let mut hashes: Vec<String> = pods(kubectl, app)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            p["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    hashes.sort();
    hashes.dedup();
    hashes
}

fn progressing(kubectl: &Kubectl) -> Value {
    kubectl.json(&["get", "deployment", "web"])["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == "Progressing").cloned())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_pauses_resumes_and_restarts_a_rollout() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("h", 2, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    rolled_out(&kubectl, &cluster, "web", &deployment("web", 2));
    let first = template_hashes(&kubectl, "web");
    assert_eq!(first.len(), 1, "{first:?}");

    // Paused: a template change starts no rollout; scaling still works.
    let paused = kubectl.run(&["rollout", "pause", "deployment/web"]);
    assert!(paused.status.success(), "{paused:?}");
    assert_eq!(
        String::from_utf8_lossy(&paused.stdout),
        "deployment.apps/web paused\n"
    );
    assert!(paused.stderr.is_empty(), "{paused:?}");
    assert_eq!(
        kubectl.ok(&["set", "env", "deployment/web", "GREETING=v2"]),
        "deployment.apps/web env updated\n"
    );
    assert_eq!(
        kubectl.ok(&["scale", "deployment/web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    wait_for("three instances of the paused template", WAIT, || {
        (pods(&kubectl, "web").len() == 3).then_some(())
    });
    wait_for("the DeploymentPaused condition", WAIT, || {
        let condition = progressing(&kubectl);
        (condition["reason"] == "DeploymentPaused").then_some(condition)
    });
    let condition = progressing(&kubectl);
    assert_eq!(condition["status"], "Unknown", "{condition}");
    assert_eq!(condition["message"], "Deployment is paused", "{condition}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(template_hashes(&kubectl, "web"), first);
    assert_eq!(replica_sets(&kubectl, "web").len(), 1);
    let again = kubectl.fails(&["rollout", "pause", "deployment/web"]);
    assert!(again.contains("is already paused"), "{again}");

    // Resumed: the change rolls out.
    assert_eq!(
        kubectl.ok(&["rollout", "resume", "deployment/web"]),
        "deployment.apps/web resumed\n"
    );
    let status = kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
    let second = wait_for("one template again", WAIT, || {
        let hashes = template_hashes(&kubectl, "web");
        (hashes.len() == 1 && hashes != first).then_some(hashes)
    });
    assert_eq!(replica_sets(&kubectl, "web").len(), 2);

    // Restart: a new template annotation, so a new rollout.
    assert_eq!(
        kubectl.ok(&["rollout", "restart", "deployment/web"]),
        "deployment.apps/web restarted\n"
    );
    let restarted = kubectl.json(&["get", "deployment", "web"]);
    assert!(
        restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{restarted}"
    );
    let status = kubectl.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
    wait_for("the restarted template only", WAIT, || {
        let hashes = template_hashes(&kubectl, "web");
        (hashes.len() == 1 && hashes != second && pods(&kubectl, "web").len() == 3).then_some(())
    });
    assert_eq!(replica_sets(&kubectl, "web").len(), 3);
}
