//! Services as Kubernetes users see them, through the real kubectl:
//! EndpointSlices of real instances (the `process` driver).

use std::time::Duration;

use serde_json::Value;

use crate::common::kubectl::Kubectl;
use crate::common::{Cluster, http_get, wait_for};

const MINUTE: Duration = Duration::from_secs(60);

/// `replicas` instances of `c4m-demo` answering on a port named `http`,
/// ready once it answers, behind the Service `web` with a named target
/// port (`http`), a numeric one (`metrics` to 8080) and a UDP one.
fn web(replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          command: ["c4m-demo", "--name", "web"]
          ports: [{{name: http, containerPort: 8080}}]
          resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports:
    - {{name: http, port: 80, targetPort: http}}
    - {{name: metrics, port: 9090, targetPort: 8080}}
    - {{name: syslog, port: 514, targetPort: 5514, protocol: UDP}}
"#
    )
}

/// The EndpointSlices of the Service `web`, as kubectl lists them.
fn slices(kubectl: &Kubectl) -> Vec<Value> {
    kubectl.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The ready endpoints of `slices` as `address:port` of their `http` port.
fn ready_http(slices: &[Value]) -> Vec<String> {
    let mut ready = Vec::new();
    for slice in slices {
        let Some(port) = slice["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "http"))
        else {
            continue;
        };
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            if endpoint["conditions"]["ready"] == true {
                ready.push(format!(
                    "{}:{}",
                    endpoint["addresses"][0].as_str().unwrap_or(""),
                    port["port"]
                ));
            }
        }
    }
    ready.sort();
    ready
}

/// The control plane keeps EndpointSlices of ready instances: labelled
/// with the Service and their manager, ports resolved from named and
/// numeric target ports (TCP and UDP), each endpoint answering; a scale
/// down deletes the slice no longer wanted, and the Service's deletion
/// takes its slices.
#[test]
#[ignore = "needs kubectl"]
fn endpoint_slices_follow_the_ready_instances() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    cluster.apply(&web(2));
    let pods = cluster.wait_ready("app=web", 2, MINUTE);

    let slices_now = wait_for("two ready endpoints in slices", MINUTE, || {
        let slices = slices(&kubectl);
        (ready_http(&slices).len() == 2).then_some(slices)
    });
    for slice in &slices_now {
        assert_eq!(slice["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "c4m-endpointslice-controller"
        );
        let ports = slice["ports"].as_array().unwrap();
        let port = |name: &str| ports.iter().find(|p| p["name"] == name).unwrap();
        // `metrics` targets 8080 by number, `http` by name: the same port.
        assert_eq!(port("http")["port"], port("metrics")["port"], "{slice}");
        assert_eq!(port("http")["protocol"], "TCP");
        assert_eq!(port("syslog")["protocol"], "UDP");
        assert_eq!(port("syslog")["port"], 5514);
        for endpoint in slice["endpoints"].as_array().unwrap() {
            let pod = pods
                .iter()
                .find(|p| p["metadata"]["name"] == endpoint["targetRef"]["name"])
                .unwrap_or_else(|| panic!("{endpoint} names an instance of web"));
            assert_eq!(endpoint["nodeName"], "node-a");
            assert_eq!(endpoint["addresses"][0], pod["status"]["podIP"]);
            assert_eq!(
                endpoint["conditions"],
                serde_json::json!({"ready": true, "serving": true, "terminating": false})
            );
        }
    }
    for address in ready_http(&slices_now) {
        let (code, body) = http_get(&address, "/").expect("an endpoint answers");
        assert_eq!(code, 200, "{address}: {body}");
    }

    // kubectl's table of slices.
    let table = kubectl.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]);
    for line in table.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(cells[0].starts_with("web-"), "{table}");
        assert_eq!(cells[1], "IPv4", "{table}");
    }

    // One replica: one ready endpoint left, and no slice without a reason.
    kubectl.ok(&["scale", "deployment", "web", "--replicas=1"]);
    wait_for("one endpoint in the slices", MINUTE, || {
        let slices = slices(&kubectl);
        let endpoints: usize = slices
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .sum();
        (endpoints == 1 && ready_http(&slices).len() == 1).then_some(())
    });

    kubectl.ok(&["delete", "service", "web"]);
    wait_for("the slices to go with their Service", MINUTE, || {
        slices(&kubectl).is_empty().then_some(())
    });
}
