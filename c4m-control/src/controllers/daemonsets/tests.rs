use serde_json::{Value, json};

use super::*;

fn daemon_set(spec: Value) -> Value {
    let mut ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}},
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        ds["spec"][key] = value.clone();
    }
    ds
}

fn node(name: &str, labels: Value, taints: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}}})
}

/// A daemon pod of `ds` on `node`, ready or not.
fn pod_on(ds: &Value, node: &str, ready: bool) -> Value {
    let hash = template_hash(&ds["spec"]["template"]);
    let mut pod = daemon_pod(ds, node, &hash);
    pod["metadata"]["name"] = json!(format!("agent-{node}"));
    pod["spec"]["nodeName"] = json!(node);
    let status = if ready { "True" } else { "False" };
    pod["status"] =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": status}]});
    pod
}

fn run(ds: &Value, nodes: &[Value], pods: &[Value]) -> DaemonPlan {
    let nodes: Vec<&Value> = nodes.iter().collect();
    let pods: Vec<&Value> = pods.iter().collect();
    plan(ds, &nodes, &pods)
}

#[test]
fn one_pod_per_fitting_node() {
    let ds = daemon_set(
        json!({"template": {"metadata": {"labels": {"app": "agent"}},
        "spec": {"nodeSelector": {"disk": "ssd"},
            "containers": [{"name": "main", "image": "busybox"}]}}}),
    );
    let nodes = [
        node("a", json!({"disk": "ssd"}), json!([])),
        node("b", json!({"disk": "hdd"}), json!([])),
        node(
            "c",
            json!({"disk": "ssd"}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        ),
        node(
            "d",
            json!({"disk": "ssd"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        ),
    ];
    let plan = run(&ds, &nodes, &[]);
    assert_eq!(
        plan.create,
        ["a", "d"],
        "c's taint is not tolerated; b is not selected"
    );
    assert_eq!(plan.status["desiredNumberScheduled"], 2);
    assert_eq!(plan.status["currentNumberScheduled"], 0);
    assert_eq!(plan.status["numberUnavailable"], 2);

    // Tolerating the taint adds c.
    let mut tolerant = ds.clone();
    tolerant["spec"]["template"]["spec"]["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
    assert_eq!(run(&tolerant, &nodes, &[]).create, ["a", "c", "d"]);
}

#[test]
fn node_affinity_chooses_nodes() {
    let ds = daemon_set(
        json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]}}},
        "containers": [{"name": "main", "image": "busybox"}]}}}),
    );
    let nodes = [
        node("a", json!({"zone": "z1"}), json!([])),
        node("b", json!({"zone": "z2"}), json!([])),
    ];
    assert_eq!(run(&ds, &nodes, &[]).create, ["a"]);
}

#[test]
fn a_daemon_pod_is_pinned_to_its_node_and_tolerates_node_trouble() {
    let ds = daemon_set(json!({}));
    let pod = daemon_pod(&ds, "a", "h1");
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(
        terms,
        &json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}])
    );
    assert_eq!(target_node(&pod), Some("a"));
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable")
    );
    assert_eq!(pod["metadata"]["labels"][REVISION_HASH], "h1");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
}

#[test]
fn nodes_joining_and_leaving_are_followed() {
    let ds = daemon_set(json!({}));
    let a = node("a", json!({}), json!([]));
    let b = node("b", json!({}), json!([]));
    let pods = [pod_on(&ds, "a", true)];
    let plan = run(&ds, &[a.clone(), b], &pods);
    assert_eq!(plan.create, ["b"]);
    assert!(plan.delete.is_empty());
    // b left: its pod goes.
    let pods = [pod_on(&ds, "a", true), pod_on(&ds, "b", true)];
    let plan = run(&ds, &[a], &pods);
    assert_eq!(plan.delete, ["agent-b"]);
    assert_eq!(plan.status["numberMisscheduled"], 1);
    assert_eq!(plan.status["numberReady"], 1);
}

#[test]
fn a_rolling_update_replaces_within_max_unavailable() {
    let old = daemon_set(json!({}));
    let nodes: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|n| node(n, json!({}), json!([])))
        .collect();
    let pods: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|n| pod_on(&old, n, true))
        .collect();
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
    let plan = run(&new, &nodes, &pods);
    assert_eq!(plan.delete.len(), 1, "maxUnavailable 1: {:?}", plan.delete);
    assert_eq!(plan.status["updatedNumberScheduled"], 0);

    new["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}});
    assert_eq!(run(&new, &nodes, &pods).delete.len(), 3);

    new["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    assert!(run(&new, &nodes, &pods).delete.is_empty());
}

/// With maxSurge (and no unavailability), a node gets its new pod beside
/// the old one, which goes once the new one is ready; at most maxSurge
/// nodes at once.
#[test]
fn a_rolling_update_with_surge_replaces_each_pod_once_its_successor_is_ready() {
    let old = daemon_set(json!({}));
    let nodes: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|n| node(n, json!({}), json!([])))
        .collect();
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
    new["spec"]["updateStrategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let old_pods: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|n| pod_on(&old, n, true))
        .collect();
    let plan = run(&new, &nodes, &old_pods);
    assert_eq!(plan.create, ["a"], "one node surges");
    assert!(plan.delete.is_empty(), "nothing goes unavailable");

    // a's new pod is not ready yet: both stay, no other node surges.
    let mut successor = pod_on(&new, "a", false);
    successor["metadata"]["name"] = json!("agent-a-new");
    let mut pods = old_pods.clone();
    pods.push(successor.clone());
    let plan = run(&new, &nodes, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    assert_eq!(plan.status["numberReady"], 3, "a's old pod still serves");

    // Ready: a's old pod goes, and b surges.
    successor["status"]["conditions"][0]["status"] = json!("True");
    pods[3] = successor;
    let plan = run(&new, &nodes, &pods);
    assert_eq!(plan.delete, ["agent-a"]);
    assert_eq!(plan.create, ["b"]);

    // A percentage of surge rounds down, but is never less than one node
    // when no unavailability is allowed either.
    new["spec"]["updateStrategy"]["rollingUpdate"] =
        json!({"maxSurge": "10%", "maxUnavailable": 0});
    assert_eq!(run(&new, &nodes, &old_pods).delete.len(), 1);
}

#[test]
fn failed_and_duplicate_pods_are_replaced() {
    let ds = daemon_set(json!({}));
    let a = node("a", json!({}), json!([]));
    let mut failed = pod_on(&ds, "a", false);
    failed["status"]["phase"] = json!("Failed");
    let plan = run(&ds, std::slice::from_ref(&a), &[failed]);
    assert_eq!(plan.delete, ["agent-a"]);
    assert_eq!(plan.create, ["a"]);

    let mut second = pod_on(&ds, "a", false);
    second["metadata"]["name"] = json!("agent-a2");
    let plan = run(&ds, &[a], &[pod_on(&ds, "a", true), second]);
    assert_eq!(plan.delete, ["agent-a2"]);
}
