//! The resource metrics API and the HorizontalPodAutoscaler with the real
//! kubectl: `kubectl top pods|nodes` on a real agent's usage, and `kubectl
//! autoscale` scaling a CPU-bound Deployment up under real load and back
//! down once the load stops (with a 10 s scale-down window patched in).

use std::time::Duration;

use serde_json::Value;

use crate::common::kubectl::Kubectl;
use crate::common::{Cluster, wait_for};

/// A Deployment whose pod burns CPU while `load` exists (capped by its
/// limit at 100m against a request of 50m, so a busy pod is at 200%).
fn burner(load: &str) -> String {
    let script = format!("while :; do while [ -e {load} ]; do :; done; sleep 0.2; done");
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata:
      labels: {{app: burn}}
    spec:
      containers:
        - name: main
          image: busybox
          command: ["sh", "-c", {script:?}]
          resources: {{requests: {{cpu: 50m, memory: 16Mi}}, limits: {{cpu: 100m, memory: 64Mi}}}}
"#
    )
}

/// The rows of a kubectl table, split on whitespace (header first).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Millicores of a `kubectl top` CPU cell (`73m`, `1`).
fn millicores(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => cell.parse::<u64>().unwrap() * 1000,
    }
}

fn replicas(kubectl: &Kubectl) -> i64 {
    kubectl.json(&["get", "deployment", "burn"])["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

/// The reasons and messages of the Events about the autoscaler.
fn autoscaler_events(kubectl: &Kubectl) -> Vec<String> {
    kubectl.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=burn",
    ])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == "HorizontalPodAutoscaler")
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root + kubectl"]
fn kubectl_top_and_autoscale_follow_real_load() {
    let mut cluster =
        Cluster::start_with_control_flags(&["--horizontal-pod-autoscaler-sync-period", "2s"]);
    cluster.start_agent("a", "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let load = cluster.dir.path().join("load");
    std::fs::write(&load, "").unwrap();
    let manifest = cluster.dir.path().join("burn.yaml");
    std::fs::write(&manifest, burner(load.to_str().unwrap())).unwrap();
    let applied = kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(applied.trim(), "deployment.apps/burn created");

    // kubectl top pods: the one pod, busy at about its 100m limit.
    let top = wait_for(
        "the pod's usage in kubectl top",
        Duration::from_secs(60),
        || {
            let output = kubectl.run(&["top", "pods"]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let table = rows(&text);
            (output.status.success()
                && table.len() == 2
                && table[1][0].starts_with("burn-")
                && millicores(&table[1][1]) >= 50)
                .then_some(table)
        },
    );
    assert_eq!(top[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    assert!(
        millicores(&top[1][1]) <= 150,
        "the 100m limit holds: {top:?}"
    );
    assert!(top[1][2].ends_with("Mi"), "{top:?}");
    let pod = top[1][0].clone();
    let containers = rows(&kubectl.ok(&["top", "pods", "--containers"]));
    assert_eq!(
        containers[0],
        ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    assert_eq!(containers[1][..2], [pod.clone(), "main".to_string()]);
    let all = rows(&kubectl.ok(&["top", "pods", "-A"]));
    assert_eq!(all[0], ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]);
    assert!(
        all.iter()
            .any(|r| r[..2] == ["default".to_string(), pod.clone()]),
        "{all:?}"
    );
    // The PodMetrics as metrics-server writes them.
    let raw: Value = serde_json::from_str(&kubectl.ok(&[
        "get",
        "--raw",
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}"),
    ]))
    .unwrap();
    assert_eq!(raw["kind"], "PodMetrics");
    assert!(
        raw["containers"][0]["usage"]["cpu"]
            .as_str()
            .unwrap()
            .ends_with('n'),
        "{raw}"
    );
    assert!(
        raw["containers"][0]["usage"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki"),
        "{raw}"
    );
    assert!(raw["window"].as_str().unwrap().ends_with('s'), "{raw}");
    assert_eq!(raw["metadata"]["labels"]["app"], "burn");

    // kubectl top nodes: the node with the machine's usage against its 4 CPUs.
    let nodes = wait_for(
        "the node's usage in kubectl top",
        Duration::from_secs(30),
        || {
            let output = kubectl.run(&["top", "nodes"]);
            let table = rows(&String::from_utf8_lossy(&output.stdout));
            (output.status.success() && table.len() == 2 && table[1][1] != "<unknown>")
                .then_some(table)
        },
    );
    assert_eq!(
        nodes[0],
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    );
    assert_eq!(nodes[1][0], "a");
    assert!(
        millicores(&nodes[1][1]) >= 50,
        "the burner runs on it: {nodes:?}"
    );
    assert!(
        nodes[1][2].ends_with('%') && nodes[1][4].ends_with('%'),
        "{nodes:?}"
    );

    // kubectl autoscale (autoscaling/v1 from kubectl 1.32), then the
    // scale-down window shortened with a patch of the autoscaling/v2 object.
    let autoscaled = kubectl.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=4",
    ]);
    assert_eq!(
        autoscaled.trim(),
        "horizontalpodautoscaler.autoscaling/burn autoscaled"
    );
    let patched = kubectl.ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":10}}}}"#,
    ]);
    assert_eq!(
        patched.trim(),
        "horizontalpodautoscaler.autoscaling/burn patched"
    );
    let v1: Value = serde_json::from_str(&kubectl.ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/burn",
    ]))
    .unwrap();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);

    // Under load each pod is at about 200% of its request: up to the max.
    wait_for(
        "the autoscaler to scale up to 4",
        Duration::from_secs(90),
        || (replicas(&kubectl) == 4).then_some(()),
    );
    let hpa = wait_for("the autoscaler's status", Duration::from_secs(30), || {
        let table = rows(&kubectl.ok(&["get", "hpa"]));
        (table.len() == 2 && !table[1][2].contains("<unknown>")).then_some(table)
    });
    assert_eq!(
        hpa[0],
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(
        hpa[1][..2],
        ["burn".to_string(), "Deployment/burn".to_string()]
    );
    assert_eq!(hpa[1][2], "cpu:", "{hpa:?}");
    assert!(hpa[1][3].ends_with("%/50%"), "{hpa:?}");
    assert_eq!(hpa[1][4..6], ["1".to_string(), "4".to_string()]);
    let described = kubectl.ok(&["describe", "hpa", "burn"]);
    for expected in [
        "Reference:",
        "Deployment/burn",
        "Min replicas:",
        "Max replicas:",
        "AbleToScale",
        "ScalingActive",
        "SuccessfulRescale",
        "above target",
    ] {
        assert!(
            described.contains(expected),
            "{expected} missing:\n{described}"
        );
    }

    // The load stops: after the 10 s window, back to the minimum.
    std::fs::remove_file(&load).unwrap();
    wait_for(
        "the autoscaler to scale down to 1",
        Duration::from_secs(120),
        || (replicas(&kubectl) == 1).then_some(()),
    );
    let events = autoscaler_events(&kubectl);
    assert!(
        events.iter().any(|e| e.starts_with("SuccessfulRescale: New size: 4; reason: cpu resource utilization (percentage of request) above target")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e == "SuccessfulRescale: New size: 1; reason: All metrics below target"),
        "{events:?}"
    );
    let status = kubectl.json(&["get", "hpa", "burn"])["status"].clone();
    assert!(status["lastScaleTime"].is_string(), "{status}");
    assert_eq!(status["desiredReplicas"], 1, "{status}");
}
