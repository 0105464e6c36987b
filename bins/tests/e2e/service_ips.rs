//! Services' virtual IPs programmed on every node (nftables): three agents
//! on simulated hosts, a LoadBalancer Service over three `oci` instances,
//! one per host (root, runc/crun, conmon, nftables). From inside an
//! instance the cluster IP spreads connections over the endpoints on all
//! nodes; an endpoint made unready gets no new connection once its
//! EndpointSlice change is programmed; the NodePort and the load
//! balancer's port answer on every node's address.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::oci::require_oci;
use crate::common::*;
use c4m_testkit::Hosts;

const MINUTE: Duration = Duration::from_secs(60);
/// The hosts' subnet (apart from the other multi-host tests'): the control
/// plane at .1, hosts at .11, .12, .13.
const UNDERLAY: [u8; 3] = [10, 99, 252];
const DEFAULT_VPC: &str = "10.99.224.0/20";

/// Three instances serving their name on 8080, one per node, ready while
/// /tmp/unready is absent; a LoadBalancer Service over them.
const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      runtimeClassName: oci
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
        - name: main
          image: bb:1
          command: ["sh", "-c", "mkdir -p /www && echo \"name=$POD\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
          env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
          ports: [{containerPort: 8080}]
          readinessProbe: {exec: {command: ["sh", "-c", "test ! -f /tmp/unready"]}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: 8080}]
"#;

/// A shell loop that fetches `/` from `$to:8080` `$n` times, one line of
/// the answer's body each (`name=POD`, or nothing when it failed).
const FETCH_N: &str = "i=0; while [ $i -lt $n ]; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $to 8080 2>/dev/null | tail -n1; echo; i=$((i+1)); done";

/// How many answers came from each instance (`name=POD` lines).
fn answers_by_pod(text: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        if let Some(pod) = line.trim().strip_prefix("name=") {
            *counts.entry(pod.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// `n` fetches of `to` from inside instance `pod`.
fn fetch_from(cluster: &Cluster, pod: &str, to: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!("to={to}; n={n}; {FETCH_N}");
    let output = cluster.c4m(&["exec", pod, "--", "sh", "-c", &script]);
    answers_by_pod(&String::from_utf8_lossy(&output.stdout))
}

/// The body of `GET /` at `address` from the test (the hosts' switch), or
/// None.
fn fetch_here(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .last()
        .and_then(|l| l.trim().strip_prefix("name="))
        .map(str::to_string)
}

/// Who answers 60 connections to `to` from host `index`'s own network.
fn reached_from_host(hosts: &Hosts, index: usize, to: SocketAddr) -> BTreeSet<String> {
    c4m_mesh::enter_network_namespace(&hosts.namespace_path(index), move || {
        (0..60).filter_map(|_| fetch_here(to)).collect()
    })
    .unwrap()
}

/// Host `index`'s service table as nft lists it.
fn service_table(hosts: &Hosts, index: usize) -> String {
    let output = hosts
        .command(index, "nft")
        .args(["list", "table", "ip", c4m_mesh::SERVICE_TABLE])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every host's service table and routes, for a failure's message.
fn diagnose(hosts: &Hosts) -> String {
    let mut text = String::new();
    for index in 1..=hosts.count() {
        let routes = hosts.command(index, "ip").arg("route").output().unwrap();
        text.push_str(&format!(
            "host {index}:\n{}{}",
            service_table(hosts, index),
            String::from_utf8_lossy(&routes.stdout)
        ));
    }
    text
}

#[test]
#[ignore = "needs root + runc + conmon + nftables: simulated hosts"]
fn cluster_ips_spread_over_nodes_and_node_ports_answer_on_every_node() {
    require_oci();
    c4m_testkit::require_commands(&[
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),
    ]);
    // Declared first, dropped last: after the cluster's processes are gone.
    let hosts = Hosts::create(UNDERLAY, 3);
    let mut cluster = Cluster::start_listening_on(&hosts.gateway().to_string());
    start_host_agents(&mut cluster, &hosts, "2", "2Gi", DEFAULT_VPC, &[]);
    import_busybox(&cluster, "bb", &["h1", "h2", "h3"]);
    cluster.apply(ECHO);
    let pods = cluster.wait_ready("app=echo", 3, 2 * MINUTE);
    let on: BTreeMap<String, String> = pods.iter().map(|p| (node_of(p), name_of(p))).collect();
    assert_eq!(on.len(), 3, "one instance per node: {on:?}");

    let service = cluster
        .list("services")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "echo")
        .expect("the echo Service");
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_string();
    let node_port = service["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a node port");

    // From inside the instance on h1: the cluster IP balances over all
    // three, its own included (hairpin), each at least 1/(2n) of 1,000.
    let client = &on["h1"];
    let mut counts = BTreeMap::new();
    let deadline = std::time::Instant::now() + MINUTE;
    while counts.len() != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "h1 reached {counts:?} through {cluster_ip}:8080, not all of {on:?}\n{}",
            diagnose(&hosts)
        );
        counts = fetch_from(&cluster, client, &cluster_ip, 30);
    }
    let everyone: BTreeSet<String> = on.values().cloned().collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), everyone);
    let counts = fetch_from(&cluster, client, &cluster_ip, 1000);
    eprintln!("1,000 connections to {cluster_ip}:8080 from {client}: {counts:?}");
    assert_eq!(
        counts.values().sum::<usize>(),
        1000,
        "every connection answered: {counts:?}"
    );
    for (pod, count) in &counts {
        assert!(*count >= 1000 / 6, "{pod} got {count} of 1000: {counts:?}");
    }
    // By name, as apps written for Kubernetes call it.
    let by_name = fetch_from(&cluster, client, "echo.default.svc.cluster.local", 30);
    assert_eq!(by_name.values().sum::<usize>(), 30, "{by_name:?}");

    // From h1's own network (a process-driver instance's): through the
    // output hook, to the endpoints of all three nodes. A node routes
    // cluster IPs (by its default route); the simulated hosts have none,
    // so h1 gets a route for the Service range on its link (on-link: what
    // no rule translates is asked for by ARP, answered by nobody).
    let routed = hosts
        .command(1, "ip")
        .args(["route", "add", "10.96.0.0/16", "dev", "eth0"])
        .status()
        .unwrap();
    assert!(routed.success());
    let to = SocketAddr::from((cluster_ip.parse::<std::net::Ipv4Addr>().unwrap(), 8080));
    assert_eq!(
        reached_from_host(&hosts, 1, to),
        everyone,
        "from h1's host network"
    );

    // The instance on h3 turns unready: once h1 programmed its slice
    // change, it gets no new connection.
    let leaving = &on["h3"];
    let leaving_ip = pods
        .iter()
        .find(|p| name_of(p) == *leaving)
        .map(ip_of)
        .unwrap();
    cluster.ok(&["exec", leaving, "--", "touch", "/tmp/unready"]);
    wait_for(
        "h1 to drop the unready endpoint from its rules",
        MINUTE,
        || {
            let table = service_table(&hosts, 1);
            (table.contains("svc-default/echo/tcp/http")
                && !table.contains(&format!("dnat to {leaving_ip}:")))
            .then_some(())
        },
    );
    let counts = fetch_from(&cluster, client, &cluster_ip, 300);
    assert_eq!(counts.values().sum::<usize>(), 300, "{counts:?}");
    assert_eq!(
        counts.get(leaving),
        None,
        "an unready endpoint got connections: {counts:?}"
    );
    cluster.ok(&["exec", leaving, "--", "rm", "/tmp/unready"]);
    wait_for("h1 to take the endpoint back", MINUTE, || {
        service_table(&hosts, 1)
            .contains(&format!("dnat to {leaving_ip}:"))
            .then_some(())
    });

    // The NodePort and the load balancer (every node's address, port 8080)
    // from outside the nodes: any node reaches every endpoint.
    let ingress: Vec<String> = wait_for("the load balancer's addresses", MINUTE, || {
        let service = cluster
            .list("services")
            .into_iter()
            .find(|s| s["metadata"]["name"] == "echo")?;
        let ips: Vec<String> = service["status"]["loadBalancer"]["ingress"]
            .as_array()?
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect();
        (ips.len() == 3).then_some(ips)
    });
    for index in 1..=3 {
        let address = hosts.address(index);
        assert!(ingress.contains(&address.to_string()), "{ingress:?}");
        for port in [node_port as u16, 8080] {
            let to = SocketAddr::from((address, port));
            let answered = wait_for(
                &format!("{to} to answer from every endpoint"),
                MINUTE,
                || {
                    let mut seen = BTreeSet::new();
                    for _ in 0..30 {
                        seen.extend(fetch_here(to));
                    }
                    (seen.len() == 3).then_some(seen)
                },
            );
            assert_eq!(answered.len(), 3);
        }
    }

    // Instances outlive their agent, and so do their Services' rules: with
    // h1's agent gone, h1 still reaches every endpoint.
    cluster.kill_agent("h1");
    assert_eq!(
        reached_from_host(&hosts, 1, to),
        everyone,
        "h1 without its agent"
    );
    // While it is away h3's instance turns unready; the agent that comes
    // back adopts its table and its first sync drops that endpoint.
    cluster.ok(&["exec", leaving, "--", "touch", "/tmp/unready"]);
    wait_for("h3's instance to be unready", MINUTE, || {
        let pods = cluster.instances_of("app=echo");
        pods.iter()
            .any(|p| name_of(p) == *leaving && !is_ready(p))
            .then_some(())
    });
    start_host_agent(&mut cluster, &hosts, 1, ["2", "2Gi"], DEFAULT_VPC, &[]);
    // Its chain goes too (flushed, then deleted by a second transaction);
    // the two others stay (h1's own, once its adopted instance is ready
    // again for the new agent).
    wait_for(
        "the restarted agent on h1 to drop the unready endpoint",
        MINUTE,
        || {
            let table = service_table(&hosts, 1);
            (!table.contains(&format!("__{leaving_ip}/"))
                && table.matches("chain ep-default/echo/").count() == 2)
                .then_some(())
        },
    );
    let mut others = everyone.clone();
    others.remove(leaving);
    assert_eq!(
        reached_from_host(&hosts, 1, to),
        others,
        "h1's adopted table"
    );
}
