//! Services as apps written for Kubernetes use them: a dozen services
//! calling each other by short name and port (`cart:80`) through cluster
//! IPs, on three simulated hosts with `oci` instances (root, runc/crun,
//! conmon, nftables).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::kubectl::Kubectl;
use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::Hosts;

const MINUTE: Duration = Duration::from_secs(60);
/// The hosts' subnets, one per test (apart from the other multi-host
/// tests'): the control plane at .1, hosts at .11, .12, .13.
const BOOKSHOP_UNDERLAY: [u8; 3] = [10, 99, 251];
const PROBE_UNDERLAY: [u8; 3] = [10, 99, 253];
const DEFAULT_VPC: &str = "10.99.208.0/20";
/// The control plane's default Service range.
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The image every bookshop service runs here: busybox and c4m-demo.
const IMAGE: &str = "bookshop:1";

/// A cluster of three hosts (`h1`..`h3`) running `oci` instances in the
/// default VPC, each with `image` built from busybox and c4m-demo.
struct HostCluster {
    cluster: Cluster,
    // Dropped after the cluster: its processes live in these namespaces.
    _hosts: Hosts,
}

fn start_hosts(underlay: [u8; 3], image: &str) -> HostCluster {
    require_oci();
    c4m_testkit::require_commands(&[
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),
    ]);
    let hosts = Hosts::create(underlay, 3);
    let mut cluster = Cluster::start_listening_on(&hosts.gateway().to_string());
    for index in 1..=3 {
        let node = format!("h{index}");
        let address = hosts.address(index).to_string();
        let listen = format!("{address}:0");
        cluster.start_agent_from(
            hosts.command(index, C4M_AGENT),
            &node,
            // Small nodes, so the scheduler (best fit) spreads the
            // bookshop's fifteen 50m instances over at least two.
            "400m",
            "4Gi",
            &[
                "--instance-network",
                "--default-driver",
                "oci",
                "--default-vpc-cidr",
                DEFAULT_VPC,
                "--address",
                &address,
                "--listen",
                &listen,
            ],
        );
        cluster.ok(&["image", "build", image, "--add", DEMO, "--node", &node]);
    }
    HostCluster {
        cluster,
        _hosts: hosts,
    }
}

/// The first Running pod of deployment `name` in `namespace`.
fn pod_of(kubectl: &Kubectl, namespace: &str, name: &str) -> String {
    let pods = kubectl.json(&[
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        &format!("app.kubernetes.io/name={name}"),
        "-o",
        "json",
    ]);
    pods["items"]
        .as_array()
        .and_then(|items| items.first())
        .and_then(|pod| pod["metadata"]["name"].as_str())
        .unwrap_or_else(|| panic!("no pod of {name}: {pods}"))
        .to_string()
}

/// The answer of `c4m-demo --call BACKEND` run in `pod`, once it answers.
fn call_from(kubectl: &Kubectl, namespace: &str, pod: &str, backend: &str) -> String {
    let mut last = String::new();
    wait_for(&format!("{pod} to reach {backend}"), MINUTE, || {
        let output = kubectl.run(&[
            "exec", "-n", namespace, pod, "--", "c4m-demo", "--call", backend,
        ]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success() && !last.contains("cannot reach")).then_some(())
    });
    last
}

/// Every `via http://HOST:PORT/` in an answer: where each call went.
fn called_addresses(answer: &str) -> Vec<std::net::Ipv4Addr> {
    answer
        .split("via http://")
        .skip(1)
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect()
}

#[test]
#[ignore = "needs root + runc + conmon + nftables: simulated hosts"]
fn a_dozen_services_call_each_other_by_short_name_and_port_across_nodes_and_namespaces() {
    let HostCluster { cluster, _hosts } = start_hosts(BOOKSHOP_UNDERLAY, IMAGE);
    let kubectl = Kubectl::for_cluster(&cluster);
    // The example as written for Kubernetes; only its images are the one
    // built here (no registry).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s-realistic");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut manifests = String::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .map(|line| match line.split_once("image: ghcr.io/example/") {
                Some((indent, _)) => format!("{indent}image: {IMAGE}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        manifests.push_str(&text);
        manifests.push_str("---\n");
    }
    let applied = std::env::temp_dir().join(format!("bookshop-{}.yaml", std::process::id()));
    std::fs::write(&applied, &manifests).unwrap();
    kubectl.ok(&["apply", "-f", applied.to_str().unwrap()]);
    let _ = std::fs::remove_file(&applied);
    for service in BOOKSHOP {
        let status = kubectl.ok(&[
            "rollout",
            "status",
            &format!("deployment/{service}"),
            "-n",
            "bookshop",
            "--timeout=120s",
        ]);
        assert!(status.contains("successfully rolled out"), "{status}");
    }
    let pods = kubectl.json(&["get", "pods", "-n", "bookshop", "-o", "json"]);
    let nodes: BTreeSet<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pod| pod["spec"]["nodeName"].as_str())
        .collect();
    assert!(
        nodes.len() >= 2,
        "the bookshop spreads over nodes: {nodes:?}"
    );

    // Within the namespace: frontend's tree reaches all twelve, every call
    // by short name and port, through cluster IPs.
    let service_range: ipnet::Ipv4Net = SERVICE_CIDR.parse().unwrap();
    let cart = pod_of(&kubectl, "bookshop", "cart");
    let answer = call_from(&kubectl, "bookshop", &cart, "frontend:80");
    for service in BOOKSHOP {
        assert!(
            answer.contains(&format!("{service} (")),
            "{service} answered: {answer}"
        );
    }
    let called = called_addresses(&answer);
    assert_eq!(
        called.len(),
        15,
        "one call per edge of the tree and the first: {answer}"
    );
    assert!(
        called.iter().all(|ip| service_range.contains(ip)),
        "every call went to a cluster IP: {answer}"
    );

    // Across namespaces: NAME.NAMESPACE:PORT, from a pod of another one.
    kubectl.ok(&["create", "namespace", "storefront"]);
    cluster.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: kiosk, namespace: storefront}}
spec:
  selector: {{matchLabels: {{app.kubernetes.io/name: kiosk}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: kiosk}}}}
    spec:
      containers:
        - name: kiosk
          image: {IMAGE}
          command: ["c4m-demo", "--name", "kiosk", "--address", "0.0.0.0", "--backend", "frontend.bookshop:80"]
"#
    ));
    kubectl.ok(&[
        "rollout",
        "status",
        "deployment/kiosk",
        "-n",
        "storefront",
        "--timeout=120s",
    ]);
    let kiosk = pod_of(&kubectl, "storefront", "kiosk");
    let answer = call_from(&kubectl, "storefront", &kiosk, "frontend.bookshop:80");
    for service in BOOKSHOP {
        assert!(
            answer.contains(&format!("{service} (")),
            "{service} answered: {answer}"
        );
    }
    let answer = call_from(
        &kubectl,
        "storefront",
        &kiosk,
        "accounts.bookshop.svc.cluster.local:80",
    );
    assert!(answer.starts_with("accounts ("), "{answer}");
}

#[test]
#[ignore = "needs root + runc + conmon + nftables: simulated hosts"]
fn the_kubernetes_service_reaches_the_api_from_inside_an_instance() {
    let HostCluster { cluster, _hosts } = start_hosts(PROBE_UNDERLAY, "probe:1");
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probe, labels: {app: probe}}
spec:
  containers:
    - name: probe
      image: probe:1
      command: ["sleep", "3600"]
"#,
    );
    cluster.wait_ready("app=probe", 1, MINUTE);
    let kubernetes = cluster.ok(&["get", "service", "kubernetes", "-o", "json"]);
    let kubernetes: serde_json::Value = serde_json::from_str(&kubernetes).unwrap();
    let cluster_ip = kubernetes["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // The name resolves to the cluster IP, which reaches the API's /healthz.
    let script = "ip=$(nslookup kubernetes.default.svc.cluster.local 2>/dev/null | awk '/^Address: /{print $2}' | grep -v : | head -n1); echo \"ip=$ip\"; printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"$ip\" 443 | head -n1";
    let mut last = String::new();
    wait_for("the API through the kubernetes Service", MINUTE, || {
        let output = cluster.c4m(&["exec", "probe", "--", "sh", "-c", script]);
        last = String::from_utf8_lossy(&output.stdout).into_owned();
        last.contains(" 200 ").then_some(())
    });
    assert!(last.contains(&format!("ip={cluster_ip}")), "{last}");
}
