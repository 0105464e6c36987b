//! Instances on different nodes reach each other over the VXLAN overlay:
//! three agents, each in a network namespace of its own (a "host") on a
//! switched test subnet, the control plane in the root namespace on the
//! same subnet, `oci` instances spread over the three (root, runc/crun and
//! conmon).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::Hosts;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);
/// The hosts' subnet: the control plane at .1, hosts at .11, .12, .13.
const UNDERLAY: [u8; 3] = [10, 99, 250];
/// The default VPC's range in this test; node slices are /24s of it.
const DEFAULT_VPC: &str = "10.99.192.0/20";
/// Another VPC, which must stay apart across nodes too.
const OTHER_VPC: &str = "10.99.240.0/22";

/// Serves the instance's own name on port 8080.
const SERVE_NAME: &str =
    "mkdir -p /www && echo \"name=$POD\" > /www/index.html && exec httpd -f -p 8080 -h /www";

/// A shell line that fetches `/` from `$ip:8080` and prints `IP=BODY`.
const FETCH: &str =
    "echo \"$ip=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $ip 8080 2>/dev/null | tail -n1)\"";

/// `replicas` oci instances serving their name, spread evenly over the
/// nodes, in VPC `vpc` (the default if None), on `nodes` (any if empty),
/// and a headless Service selecting them (its name gives their addresses).
fn server(name: &str, replicas: usize, vpc: Option<&str>, nodes: &[&str]) -> String {
    let mut pod_spec = format!(
        "      topologySpreadConstraints:\n        - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: {name}}}}}}}\n"
    );
    if !nodes.is_empty() {
        pod_spec.push_str(&format!(
            "      affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{}]}}]}}]}}}}}}\n",
            nodes.join(", ")
        ));
    }
    format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: None\n  selector: {{app: {name}}}\n  ports: [{{port: 8080, targetPort: 8080}}]\n",
        deployment_of("oci", name, "bb:1", replicas, vpc, SERVE_NAME, &pod_spec)
    )
}

/// What an instance fetched from each address: `IP=BODY` lines.
fn fetched(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(ip, body)| (ip.to_string(), body.trim().to_string()))
        .collect()
}

/// Runs `script` in instance `name` with `c4m exec`; its output.
fn exec(cluster: &Cluster, name: &str, script: &str) -> String {
    let output = cluster.c4m(&["exec", name, "--", "sh", "-c", script]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Each host's overlay as the kernel has it, for a failure's message.
fn diagnose(hosts: &Hosts) -> String {
    let device = c4m_mesh::OVERLAY_DEVICE;
    let mut text = String::new();
    for index in 1..=hosts.count() {
        for (program, args) in [
            ("ip", &["-d", "link", "show", device][..]),
            ("ip", &["route"]),
            ("ip", &["neigh", "show", "dev", device]),
            ("bridge", &["fdb", "show", "dev", device]),
            ("nft", &["list", "ruleset"]),
        ] {
            let output = hosts.command(index, program).args(args).output().unwrap();
            text.push_str(&format!(
                "host {index} $ {program} {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    text
}

#[test]
#[ignore = "needs root + runc + conmon + nftables: simulated hosts"]
fn instances_on_different_nodes_reach_each_other_over_the_overlay() {
    require_oci();
    c4m_testkit::require_commands(&[
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),
    ]);
    // Declared first, dropped last: after the cluster's processes are gone.
    let hosts = Hosts::create(UNDERLAY, 3);
    let mut cluster = Cluster::start_listening_on(&hosts.gateway().to_string());
    let nodes = ["h1", "h2", "h3"];
    start_host_agents(&mut cluster, &hosts, "2", "2Gi", DEFAULT_VPC, &[]);
    // Each node got a slice of its own from the control plane.
    let slices: BTreeSet<String> = cluster
        .list("nodes")
        .iter()
        .map(|node| {
            node["metadata"]["annotations"][c4m_core::annotations::NODE_SLICE]
                .as_str()
                .unwrap_or_else(|| panic!("a node without a slice: {node}"))
                .to_string()
        })
        .collect();
    assert_eq!(slices.len(), 3, "{slices:?}");

    import_busybox(&cluster, "bb", &nodes);

    cluster.apply(&server("echo", 6, None, &[]));
    let pods = cluster.wait_ready("app=echo", 6, 2 * MINUTE);
    let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for pod in &pods {
        by_node.entry(node_of(pod)).or_default().push(pod);
    }
    assert_eq!(
        by_node.values().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2],
        "spread two per node: {by_node:?}"
    );
    let vpc: ipnet::Ipv4Net = DEFAULT_VPC.parse().unwrap();
    for pod in &pods {
        let ip: std::net::Ipv4Addr = ip_of(pod).parse().unwrap();
        assert!(vpc.contains(&ip), "an address of the VPC: {pod}");
    }
    let client = name_of(by_node["h1"][0]);
    let remote: BTreeMap<String, String> = pods
        .iter()
        .filter(|pod| node_of(pod) != "h1")
        .map(|pod| (ip_of(pod), format!("name={}", name_of(pod))))
        .collect();

    // By IP: from h1, every instance on h2 and h3 answers with its name.
    let ips: Vec<&str> = remote.keys().map(String::as_str).collect();
    let script = format!("for ip in {}; do {FETCH}; done", ips.join(" "));
    let mut last = BTreeMap::new();
    let deadline = std::time::Instant::now() + MINUTE;
    while last != remote {
        assert!(
            std::time::Instant::now() < deadline,
            "h1 did not reach h2's and h3's instances: got {last:?}, wanted {remote:?}\n{}",
            diagnose(&hosts)
        );
        last = fetched(&exec(&cluster, &client, &script));
    }

    // By name: c4m's DNS (through h1's relay) names all six, and each
    // answers from wherever it runs.
    let everyone: BTreeMap<String, String> = pods
        .iter()
        .map(|pod| (ip_of(pod), format!("name={}", name_of(pod))))
        .collect();
    let by_name = format!(
        "for ip in $(nslookup echo.default.svc.c4m 2>/dev/null | awk '/^Address: /{{print $2}}' | grep -v :); do {FETCH}; done"
    );
    wait_for("h1 to find and reach all six by name", MINUTE, || {
        (fetched(&exec(&cluster, &client, &by_name)) == everyone).then_some(())
    });

    // Another VPC across h2 and h3: its instances reach each other over
    // the same overlay, and none of the default VPC's.
    cluster.ok(&["vpc", "create", "--name", "other", "--cidr", OTHER_VPC]);
    cluster.apply(&server("stranger", 2, Some("other"), &["h2", "h3"]));
    let strangers = cluster.wait_ready("app=stranger", 2, 2 * MINUTE);
    let on = |node: &str| {
        strangers
            .iter()
            .find(|pod| node_of(pod) == node)
            .unwrap_or_else(|| panic!("no stranger on {node}: {strangers:?}"))
    };
    let (here, there) = (on("h2"), on("h3"));
    let script = format!("ip={}; {FETCH}", ip_of(there));
    wait_for("the other VPC to reach across nodes", MINUTE, || {
        let answers = fetched(&exec(&cluster, &name_of(here), &script));
        (answers.get(&ip_of(there)) == Some(&format!("name={}", name_of(there)))).then_some(())
    });
    // h3 serves both VPCs, so without the overlay's rules the default
    // VPC's instances there would answer (and their replies find the way back).
    let targets: Vec<String> = pods
        .iter()
        .filter(|pod| node_of(pod) != "h2")
        .map(ip_of)
        .collect();
    let script = format!("for ip in {}; do {FETCH}; done", targets.join(" "));
    for _ in 0..3 {
        let answers = fetched(&exec(&cluster, &name_of(here), &script));
        assert_eq!(answers.len(), targets.len(), "{answers:?}");
        assert!(
            answers.values().all(String::is_empty),
            "a VPC reached another across nodes: {answers:?}"
        );
    }

    // A node that leaves takes its route, neighbour and forwarding entries
    // from its peers.
    let overlay_of = |index: usize| {
        let mut text = String::new();
        for (program, args) in [
            ("ip", ["route", "show", "dev", c4m_mesh::OVERLAY_DEVICE]),
            ("ip", ["neigh", "show", "dev", c4m_mesh::OVERLAY_DEVICE]),
            ("bridge", ["fdb", "show", "dev", c4m_mesh::OVERLAY_DEVICE]),
        ] {
            let output = hosts.command(index, program).args(args).output().unwrap();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
        }
        text
    };
    let h3_address = hosts.address(3).to_string();
    let route_to = |index: usize, node_slice: &str| {
        let text = overlay_of(index);
        text.contains(node_slice) || text.contains(&h3_address)
    };
    let before = overlay_of(1);
    assert_eq!(
        before.matches(&hosts.address(2).to_string()).count(),
        3,
        "a route, a neighbour and a forwarding entry for h2: {before}"
    );
    let h3_pod = by_node["h3"][0];
    let h3_slice = {
        let ip: std::net::Ipv4Addr = ip_of(h3_pod).parse().unwrap();
        let [a, b, c, _] = ip.octets();
        format!("{a}.{b}.{c}.0/24")
    };
    assert!(
        route_to(1, &h3_slice),
        "h1 routes {h3_slice} over the overlay"
    );
    cluster.kill_agent("h3");
    cluster.ok(&["delete", "node", "h3"]);
    wait_for("h1 to forget h3", MINUTE, || {
        (!route_to(1, &h3_slice)).then_some(())
    });
}
