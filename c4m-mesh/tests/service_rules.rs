//! `ServiceRules` against the real kernel: Services' virtual IPs programmed
//! into nftables in a network namespace these tests make (a "node" with a
//! `c4b…` bridge of instances, and an outside host on a link of its own),
//! with real TCP connections. Needs root, `nft`, `ip` and `nsenter`; each
//! test uses its own subnets (10.77.T.0/24, 10.78.T.0/24) and cluster IPs
//! (10.96.T.0/24, inside its node namespace only), so they run in parallel.

mod service_lab;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use c4m_mesh::{ServiceRules, ServiceTable, enter_network_namespace};
use serde_json::{Value, json};
use service_lab::{Lab, TARGET_PORT};

/// A Service `name` in namespace `shop` with `spec`, and its slice of
/// `endpoints` (address, node, ready) on the lab's target port.
fn service(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec})
}

fn slice(name: &str, endpoints: &[(Ipv4Addr, &str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, node, ready)| {
            json!({"addresses": [address.to_string()], "nodeName": node,
                   "conditions": {"ready": ready, "serving": ready, "terminating": false}})
        })
        .collect();
    json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "", "port": TARGET_PORT, "protocol": "TCP"}]
    })
}

fn table(services: &[Value], slices: &[Value]) -> ServiceTable {
    let (table, problems) = ServiceTable::from_objects(services, slices);
    assert!(problems.is_empty(), "{problems:?}");
    table
}

/// Answers per endpoint name (`e1`, ...); panics on a failed connection.
fn spread(answers: &[Result<String, std::io::ErrorKind>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        let answer = answer.as_ref().expect("every connection answered");
        let who = answer.split(' ').next().unwrap_or_default().to_string();
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn connections_spread_over_ready_endpoints_and_an_unready_one_gets_no_new_one() -> Result<()>
{
    let lab = Lab::new(1, 3);
    for i in 1..=3 {
        lab.serve(i)?;
    }
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    let cluster_ip = lab.cluster_ip(10);
    let spec = json!({"clusterIP": cluster_ip.to_string(), "ports": [{"port": 80}]});
    let all_ready = [
        (lab.endpoint(1), "n1", true),
        (lab.endpoint(2), "n2", true),
        (lab.endpoint(3), "n3", true),
    ];
    let report = rules
        .sync(&table(
            &[service("cart", spec.clone())],
            &[slice("cart", &all_ready)],
        ))
        .await?;
    assert!(report.full);
    let to = SocketAddr::from((cluster_ip, 80));

    let answers = lab.connect(lab.client_namespace(), to, 1000)?;
    let counts = spread(&answers);
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (who, count) in &counts {
        assert!(*count >= 1000 / 6, "{who} got {count} of 1000: {counts:?}");
    }
    // From an instance, the client's address is kept.
    assert!(
        answers[0]
            .as_ref()
            .unwrap()
            .ends_with(&lab.client().to_string())
    );

    // The node itself (the output hook): a process-driver instance's way.
    let from_node = lab.connect(lab.node(), to, 30)?;
    assert_eq!(spread(&from_node).values().sum::<usize>(), 30);

    let one_unready = [all_ready[0], all_ready[1], (lab.endpoint(3), "n3", false)];
    let started = Instant::now();
    let report = rules
        .sync(&table(
            &[service("cart", spec)],
            &[slice("cart", &one_unready)],
        ))
        .await?;
    assert!(!report.full);
    assert_eq!((report.changed, report.removed), (1, 0));
    eprintln!("one endpoint change programmed in {:?}", started.elapsed());
    let counts = spread(&lab.connect(lab.client_namespace(), to, 300)?);
    assert_eq!(counts.get("e3"), None, "{counts:?}");
    let listed = lab.list_table();
    assert_eq!(listed.matches("chain ep-shop/cart/").count(), 2, "{listed}");
    assert_eq!(counts.values().sum::<usize>(), 300);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn a_service_without_ready_endpoints_rejects_at_once() -> Result<()> {
    let lab = Lab::new(2, 1);
    lab.serve(1)?;
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    let spec = json!({"type": "NodePort", "clusterIP": lab.cluster_ip(10).to_string(),
                      "ports": [{"port": 80, "nodePort": 30080}]});
    let unready = [(lab.endpoint(1), "n1", false)];
    rules
        .sync(&table(&[service("cart", spec)], &[slice("cart", &unready)]))
        .await?;
    for (from, to) in [
        (
            lab.client_namespace(),
            SocketAddr::from((lab.cluster_ip(10), 80)),
        ),
        (lab.node(), SocketAddr::from((lab.cluster_ip(10), 80))),
        (
            lab.outside_namespace(),
            SocketAddr::from((lab.node_address(), 30080)),
        ),
    ] {
        let started = Instant::now();
        let answers = lab.connect(from.clone(), to, 1)?;
        assert_eq!(
            answers[0],
            Err(std::io::ErrorKind::ConnectionRefused),
            "{to} from {}",
            from.display()
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn client_ip_affinity_keeps_a_client_on_one_endpoint() -> Result<()> {
    let lab = Lab::new(3, 3);
    for i in 1..=3 {
        lab.serve(i)?;
    }
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    let spec = json!({"clusterIP": lab.cluster_ip(10).to_string(), "sessionAffinity": "ClientIP",
                      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                      "ports": [{"port": 80}]});
    let endpoints = [
        (lab.endpoint(1), "n1", true),
        (lab.endpoint(2), "n1", true),
        (lab.endpoint(3), "n1", true),
    ];
    rules
        .sync(&table(
            &[service("cart", spec)],
            &[slice("cart", &endpoints)],
        ))
        .await?;
    let to = SocketAddr::from((lab.cluster_ip(10), 80));
    let counts = spread(&lab.connect(lab.client_namespace(), to, 60)?);
    assert_eq!(counts.len(), 1, "one endpoint for one client: {counts:?}");
    assert!(lab.list_table().contains("timeout 1m"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn local_traffic_policies_keep_traffic_on_this_nodes_endpoints() -> Result<()> {
    let lab = Lab::new(4, 2);
    for i in 1..=2 {
        lab.serve(i)?;
    }
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    // e1 is this node's, e2 another's.
    let endpoints = [(lab.endpoint(1), "n1", true), (lab.endpoint(2), "n2", true)];
    let local_spec = json!({"type": "NodePort", "clusterIP": lab.cluster_ip(10).to_string(),
        "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
        "ports": [{"port": 80, "nodePort": 30081}]});
    let cluster_spec = json!({"type": "NodePort", "clusterIP": lab.cluster_ip(11).to_string(),
        "ports": [{"port": 80, "nodePort": 30082}]});
    let only_remote = json!({"clusterIP": lab.cluster_ip(12).to_string(),
        "internalTrafficPolicy": "Local", "ports": [{"port": 80}]});
    rules
        .sync(&table(
            &[
                service("local", local_spec),
                service("cluster", cluster_spec),
                service("remote", only_remote),
            ],
            &[
                slice("local", &endpoints),
                slice("cluster", &endpoints),
                slice("remote", &[endpoints[1]]),
            ],
        ))
        .await?;

    let internal = lab.connect(
        lab.client_namespace(),
        SocketAddr::from((lab.cluster_ip(10), 80)),
        50,
    )?;
    assert_eq!(spread(&internal).keys().collect::<Vec<_>>(), ["e1"]);

    // externalTrafficPolicy Local: this node's endpoint, the client's address kept.
    let outside = lab.outside().to_string();
    let external = lab.connect(
        lab.outside_namespace(),
        SocketAddr::from((lab.node_address(), 30081)),
        50,
    )?;
    assert_eq!(spread(&external).keys().collect::<Vec<_>>(), ["e1"]);
    assert!(
        external
            .iter()
            .all(|a| a.as_ref().unwrap().ends_with(&outside)),
        "{external:?}"
    );

    // Cluster: any endpoint, the client masqueraded (the answer comes back through the node).
    let external = lab.connect(
        lab.outside_namespace(),
        SocketAddr::from((lab.node_address(), 30082)),
        100,
    )?;
    assert_eq!(spread(&external).len(), 2);
    let gateway = lab.gateway().to_string();
    assert!(
        external
            .iter()
            .all(|a| a.as_ref().unwrap().ends_with(&gateway)),
        "{external:?}"
    );

    // internalTrafficPolicy Local without a local endpoint: dropped, as kube-proxy does.
    let dropped = lab.connect(
        lab.client_namespace(),
        SocketAddr::from((lab.cluster_ip(12), 80)),
        1,
    )?;
    assert_eq!(dropped[0], Err(std::io::ErrorKind::TimedOut));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn an_instance_reaches_itself_through_its_service() -> Result<()> {
    let lab = Lab::new(5, 1);
    lab.serve(1)?;
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    let spec = json!({"clusterIP": lab.cluster_ip(10).to_string(), "ports": [{"port": 80}]});
    rules
        .sync(&table(
            &[service("self", spec)],
            &[slice("self", &[(lab.endpoint(1), "n1", true)])],
        ))
        .await?;
    let answers = lab.connect(
        lab.endpoint_namespace(1),
        SocketAddr::from((lab.cluster_ip(10), 80)),
        20,
    )?;
    // Hairpin: masqueraded to the gateway, so the answer comes back through the node.
    let expected = format!("e1 {}", lab.gateway());
    assert!(
        answers
            .iter()
            .all(|a| a.as_deref() == Ok(expected.as_str())),
        "{answers:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn node_ports_and_load_balancer_addresses_answer_on_the_nodes_addresses() -> Result<()> {
    let lab = Lab::new(6, 2);
    for i in 1..=2 {
        lab.serve(i)?;
    }
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    let mut balanced = service(
        "front",
        json!({"type": "LoadBalancer", "clusterIP": lab.cluster_ip(10).to_string(),
               "ports": [{"port": 80, "nodePort": 30090}]}),
    );
    balanced["status"] =
        json!({"loadBalancer": {"ingress": [{"ip": lab.node_address().to_string()}]}});
    let endpoints = [(lab.endpoint(1), "n1", true), (lab.endpoint(2), "n2", true)];
    rules
        .sync(&table(&[balanced], &[slice("front", &endpoints)]))
        .await?;
    for (from, to) in [
        (
            lab.outside_namespace(),
            SocketAddr::from((lab.node_address(), 30090)),
        ),
        (
            lab.outside_namespace(),
            SocketAddr::from((lab.node_address(), 80)),
        ),
        (
            lab.client_namespace(),
            SocketAddr::from((lab.gateway(), 30090)),
        ),
        (
            lab.client_namespace(),
            SocketAddr::from((lab.node_address(), 80)),
        ),
    ] {
        let counts = spread(&lab.connect(from, to, 40)?);
        assert_eq!(counts.len(), 2, "{to}: {counts:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn a_new_process_adopts_the_table_and_drops_what_is_gone() -> Result<()> {
    let lab = Lab::new(7, 2);
    for i in 1..=2 {
        lab.serve(i)?;
    }
    let endpoints = [(lab.endpoint(1), "n1", true), (lab.endpoint(2), "n1", true)];
    let services = [
        service(
            "kept",
            json!({"clusterIP": lab.cluster_ip(10).to_string(), "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
        ),
        service(
            "gone",
            json!({"clusterIP": lab.cluster_ip(11).to_string(), "ports": [{"port": 80}]}),
        ),
    ];
    let slices = [slice("kept", &endpoints), slice("gone", &endpoints)];
    let mut first = ServiceRules::new("n1").in_namespace(&lab.node());
    first.sync(&table(&services, &slices)).await?;
    ensure!(lab.list_table().contains("svc-shop/gone/tcp/"));
    // Syncing the same again changes nothing.
    let again = first.sync(&table(&services, &slices)).await?;
    assert_eq!((again.full, again.changed, again.removed), (false, 0, 0));
    let to = SocketAddr::from((lab.cluster_ip(10), 80));
    let before = spread(&lab.connect(lab.client_namespace(), to, 5)?);

    // A restarted agent: a new ServiceRules, a smaller table.
    let mut second = ServiceRules::new("n1").in_namespace(&lab.node());
    let report = second
        .sync(&table(&services[..1], &slices[..1]))
        .await
        .context("adopting the table")?;
    assert!(report.full);
    let listed = lab.list_table();
    assert!(!listed.contains("shop/gone"), "{listed}");
    assert!(listed.contains("svc-shop/kept/tcp/"));
    // The affinity sets were kept: the client stays where it was.
    let after = spread(&lab.connect(lab.client_namespace(), to, 5)?);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let refused = lab.connect(
        lab.client_namespace(),
        SocketAddr::from((lab.cluster_ip(11), 80)),
        1,
    )?;
    assert!(refused[0].is_err());
    second.remove().await?;
    assert_eq!(lab.list_table(), "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn udp_datagrams_reach_the_endpoint_and_answer_from_the_cluster_ip() -> Result<()> {
    let lab = Lab::new(8, 1);
    let endpoint = lab.endpoint(1);
    let socket = enter_network_namespace(&lab.endpoint_namespace(1), move || {
        std::net::UdpSocket::bind((endpoint, 5353))
    })??;
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64];
        while let Ok((len, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(&buffer[..len], from);
        }
    });
    let mut rules = ServiceRules::new("n1").in_namespace(&lab.node());
    let spec = json!({"clusterIP": lab.cluster_ip(10).to_string(),
                      "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]});
    let slice = json!({
        "metadata": {"name": "dns-1", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "dns"}},
        "endpoints": [{"addresses": [endpoint.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]
    });
    rules
        .sync(&table(&[service("dns", spec)], &[slice]))
        .await?;
    let to = SocketAddr::from((lab.cluster_ip(10), 53));
    let (answer, from) = enter_network_namespace(&lab.client_namespace(), move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(b"ping", to)?;
        let mut buffer = [0u8; 64];
        let (len, from) = socket.recv_from(&mut buffer)?;
        Ok::<_, std::io::Error>((buffer[..len].to_vec(), from))
    })??;
    assert_eq!(answer, b"ping");
    // The answer comes from the address asked, as the client expects.
    assert_eq!(from, to);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables, iproute2, nsenter: network namespaces"]
async fn an_adopting_process_removes_the_chain_of_an_endpoint_gone_meanwhile() -> Result<()> {
    let lab = Lab::new(10, 2);
    let spec = json!({"clusterIP": lab.cluster_ip(10).to_string(), "ports": [{"port": 80}]});
    let both = [(lab.endpoint(1), "n1", true), (lab.endpoint(2), "n1", true)];
    let one = [both[0], (lab.endpoint(2), "n1", false)];
    let mut first = ServiceRules::new("n1").in_namespace(&lab.node());
    first
        .sync(&table(
            &[service("web", spec.clone())],
            &[slice("web", &both)],
        ))
        .await?;
    let mut second = ServiceRules::new("n1").in_namespace(&lab.node());
    second
        .sync(&table(&[service("web", spec)], &[slice("web", &one)]))
        .await?;
    let listed = lab.list_table();
    assert_eq!(listed.matches("chain ep-shop/web/").count(), 1, "{listed}");
    Ok(())
}
