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

/// A table's row for `name`, split into cells.
fn table_row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no row {name} in {table}"))
}

/// The `kubernetes` object of `kind` in `default` (the API's Service, its
/// Endpoints or EndpointSlice), once the control plane has made it.
fn api_object(kubectl: &Kubectl, kind: &str) -> Value {
    wait_for(&format!("the kubernetes {kind}"), MINUTE, || {
        let output = kubectl.run(&["get", kind, "kubernetes", "-o", "json"]);
        output
            .status
            .success()
            .then(|| serde_json::from_slice::<Value>(&output.stdout).unwrap())
    })
}

/// The cluster IPs of every Service, by name.
fn cluster_ips(kubectl: &Kubectl) -> std::collections::BTreeMap<String, String> {
    kubectl.json(&["get", "services"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_string(),
                s["spec"]["clusterIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Cluster IPs, node ports and load balancers through the real kubectl:
/// the `kubernetes` Service points at the API; `kubectl expose --type
/// NodePort` gets an address and a node port, shown as kubectl shows them;
/// a taken node port and a changed cluster IP are refused in Kubernetes'
/// words; a LoadBalancer gets the node's address; after a restart every
/// Service keeps its address and a new one gets a fresh one.
#[test]
#[ignore = "needs kubectl"]
fn services_get_cluster_ips_node_ports_and_load_balancers() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    let kubectl = Kubectl::for_cluster(&cluster);

    // The API's own Service, its Endpoints and EndpointSlice.
    let present = |kind: &str| api_object(&kubectl, kind);
    let api = present("service");
    assert_eq!(api["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(
        api["spec"]["ports"],
        serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP",
            "targetPort": cluster.api}])
    );
    let endpoints = present("endpoints");
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], cluster.api);
    let slice = present("endpointslice");
    assert_eq!(
        slice["endpoints"][0]["addresses"],
        serde_json::json!(["127.0.0.1"])
    );

    // kubectl expose, NodePort.
    cluster.apply(&web(1));
    cluster.wait_ready("app=web", 1, MINUTE);
    kubectl.ok(&["delete", "service", "web"]);
    let exposed = kubectl.ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--type",
        "NodePort",
    ]);
    assert_eq!(exposed, "service/web exposed\n");
    let web = kubectl.json(&["get", "service", "web"]);
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96."), "{web}");
    let node_port = web["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{web}");
    let table = kubectl.ok(&["get", "services", "-o", "wide"]);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    let row = table_row(&table, "web");
    assert_eq!(
        row[1..5],
        [
            "NodePort".to_string(),
            ip.clone(),
            "<none>".into(),
            format!("80:{node_port}/TCP")
        ]
    );
    assert_eq!(row[6], "app=web");
    assert_eq!(
        table_row(&table, "kubernetes")[1..5],
        ["ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );

    // kubectl describe reads the Service and its EndpointSlices.
    let described = wait_for("described endpoints", MINUTE, || {
        let described = kubectl.ok(&["describe", "service", "web"]);
        described
            .lines()
            .any(|l| {
                l.starts_with("Endpoints:")
                    && l.contains(':'.to_string().as_str())
                    && !l.contains("<none>")
            })
            .then_some(described)
    });
    for expected in [
        format!("IP:                       {ip}"),
        format!("NodePort:                 <unset>  {node_port}/TCP"),
        "Type:                     NodePort".to_string(),
        "Endpoints:                127.0.0.1:".to_string(),
        "External Traffic Policy:  Cluster".to_string(),
    ] {
        assert!(described.contains(&expected), "{expected:?} in {described}");
    }

    // The same node port again, and a new cluster IP: refused.
    let taken = format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "taken"}},
            "spec": {{"type": "NodePort", "ports": [{{"port": 80, "nodePort": {node_port}}}]}}}}"#
    );
    let file = cluster.dir.path().join("taken.json");
    std::fs::write(&file, taken).unwrap();
    let refused = kubectl.fails(&["create", "-f", file.to_str().unwrap()]);
    assert!(
        refused.contains(&format!(
            "The Service \"taken\" is invalid: spec.ports[0].nodePort: Invalid value: {node_port}: provided port is already allocated"
        )),
        "{refused}"
    );
    let refused = kubectl.fails(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}"#,
    ]);
    assert!(refused.contains("may not change once set"), "{refused}");

    // Back to ClusterIP: the node port is given up, and another may take it.
    kubectl.ok(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    let web = kubectl.json(&["get", "service", "web"]);
    assert!(web["spec"]["ports"][0]["nodePort"].is_null(), "{web}");
    assert!(web["spec"]["externalTrafficPolicy"].is_null(), "{web}");
    assert_eq!(web["spec"]["clusterIP"], ip.as_str());
    kubectl.ok(&["create", "-f", file.to_str().unwrap()]);

    // A LoadBalancer through c4m expose: the node's address as ingress.
    let exposed = cluster.ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-lb",
        "--type",
        "LoadBalancer",
        "--port",
        "8081",
        "--target-port",
        "http",
    ]);
    assert_eq!(exposed, "service/web-lb exposed\n");
    let node = kubectl.json(&["get", "node", "node-a"]);
    let node_ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the load balancer's address", MINUTE, || {
        let table = kubectl.ok(&["get", "service", "web-lb"]);
        (table_row(&table, "web-lb")[3] == node_ip).then_some(())
    });
    let lb = kubectl.json(&["get", "service", "web-lb"]);
    assert!(
        lb["spec"]["ports"][0]["nodePort"].as_u64().is_some(),
        "{lb}"
    );
    let c4m_table = cluster.ok(&["get", "services"]);
    assert_eq!(table_row(&c4m_table, "web-lb")[3], node_ip, "{c4m_table}");

    // A restart keeps every address; a new Service gets another.
    let before = cluster_ips(&kubectl);
    cluster.kill_control();
    cluster.start_control();
    assert_eq!(cluster_ips(&kubectl), before);
    kubectl.ok(&["create", "service", "clusterip", "fresh", "--tcp=80:8080"]);
    let fresh = kubectl.json(&["get", "service", "fresh"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fresh.starts_with("10.96."), "{fresh}");
    assert!(
        !before.values().any(|ip| *ip == fresh),
        "{fresh} in {before:?}"
    );
}

/// `--service-cidr` and `--service-node-port-range` set where addresses
/// come from; a bad range stops `c4m control` with a clear error.
#[test]
#[ignore = "needs kubectl"]
fn service_ranges_follow_the_flags() {
    let cluster = Cluster::start_with_control_flags(&[
        "--service-cidr",
        "10.200.0.0/24",
        "--service-node-port-range",
        "31000-31002",
    ]);
    let kubectl = Kubectl::for_cluster(&cluster);
    let api = api_object(&kubectl, "service");
    assert_eq!(api["spec"]["clusterIP"], "10.200.0.1");
    let mut ports = std::collections::BTreeSet::new();
    for name in ["a", "b", "c"] {
        kubectl.ok(&["create", "service", "nodeport", name, "--tcp=80:8080"]);
        let service = kubectl.json(&["get", "service", name]);
        assert!(
            service["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.200.0."),
            "{service}"
        );
        ports.insert(service["spec"]["ports"][0]["nodePort"].as_u64().unwrap());
    }
    assert_eq!(
        ports,
        std::collections::BTreeSet::from([31000, 31001, 31002])
    );
    let full = kubectl.fails(&["create", "service", "nodeport", "d", "--tcp=80:8080"]);
    assert!(
        full.contains("failed to allocate a nodePort: range is full (31000-31002)"),
        "{full}"
    );

    // Server-side apply, twice: one address, kept; then a type change.
    let file = cluster.dir.path().join("ssa.yaml");
    let manifest = |type_: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ssa}}\nspec:\n  type: {type_}\n  selector: {{app: ssa}}\n  ports: [{{port: 80}}]\n"
        )
    };
    std::fs::write(&file, manifest("ClusterIP")).unwrap();
    let path = file.to_str().unwrap();
    kubectl.ok(&["apply", "--server-side", "-f", path]);
    let first = kubectl.json(&["get", "service", "ssa"]);
    kubectl.ok(&["apply", "--server-side", "-f", path]);
    let again = kubectl.json(&["get", "service", "ssa"]);
    assert_eq!(again["spec"]["clusterIP"], first["spec"]["clusterIP"]);
    assert_eq!(
        again["metadata"]["generation"],
        first["metadata"]["generation"]
    );
    kubectl.ok(&["delete", "service", "c"]);
    std::fs::write(&file, manifest("NodePort")).unwrap();
    kubectl.ok(&["apply", "--server-side", "-f", path]);
    let node_port = kubectl.json(&["get", "service", "ssa"]);
    assert_eq!(node_port["spec"]["clusterIP"], first["spec"]["clusterIP"]);
    assert!(node_port["spec"]["ports"][0]["nodePort"].as_u64().is_some());

    let output = std::process::Command::new(crate::common::C4M)
        .args(["control", "--service-cidr", "10.200.0.1/24"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("service CIDR \"10.200.0.1/24\": host bits are set"),
        "{stderr}"
    );
}
