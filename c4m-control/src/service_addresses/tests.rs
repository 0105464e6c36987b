use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{IP_RECORDS, PORT_RECORDS, ServiceRanges};
use crate::objects::{Objects, kind};

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec})
}

fn web(name: &str) -> Value {
    service(
        name,
        json!({"selector": {"app": name}, "ports": [{"port": 80}]}),
    )
}

fn ranges(cidr: &str) -> ServiceRanges {
    let (network, prefix) = ServiceRanges::parse_cidr(cidr).unwrap();
    ServiceRanges {
        network,
        prefix,
        ..ServiceRanges::default()
    }
}

/// Objects over a fresh store with the `default` namespace, taking Service
/// addresses from `ranges`.
async fn objects(ranges: ServiceRanges) -> (tempfile::TempDir, Objects) {
    let (dir, _, objects) = crate::test_support::store_with_default_namespace().await;
    (dir, objects.with_service_ranges(ranges))
}

async fn records(objects: &Objects, prefix: &str) -> BTreeSet<String> {
    let (kvs, _) = objects.store().range(prefix).await.unwrap();
    kvs.iter()
        .map(|kv| kv.key.strip_prefix(prefix).unwrap().to_string())
        .collect()
}

async fn create(objects: &Objects, value: Value) -> crate::Result<Value> {
    objects.create(kind("services"), "default", value).await
}

/// Replaces the Service `web` with `value`.
async fn replace(objects: &Objects, value: Value) -> crate::Result<Value> {
    objects
        .replace(
            kind("services"),
            "default",
            "web",
            value,
            crate::objects::Part::Main,
        )
        .await
}

fn ip_of(service: &Value) -> Ipv4Addr {
    service["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A new Service gets a free address of the range, in the upper band,
/// with Kubernetes' defaults; its record is written with it.
#[tokio::test]
async fn a_service_gets_a_cluster_ip_and_kubernetes_defaults() {
    let (_dir, objects) = objects(ServiceRanges::default()).await;
    let created = create(&objects, web("web")).await.unwrap();
    let ip = ip_of(&created);
    assert_eq!(ip.octets()[..2], [10, 96]);
    assert!(
        u32::from(ip) >= u32::from(Ipv4Addr::new(10, 96, 1, 0)),
        "{ip} is in the band kept for requests"
    );
    let spec = &created["spec"];
    assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert!(spec["externalTrafficPolicy"].is_null());
    assert_eq!(
        spec["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
    );
    assert_eq!(created["status"], json!({"loadBalancer": {}}));
    assert_eq!(
        records(&objects, IP_RECORDS).await,
        BTreeSet::from([ip.to_string()])
    );

    let affinity = service(
        "sticky",
        json!({"selector": {"app": "x"}, "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}),
    );
    let sticky = create(&objects, affinity).await.unwrap();
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    assert_ne!(ip_of(&sticky), ip);
}

/// A requested address is given if free and in range, refused in
/// Kubernetes' words otherwise; `None` is headless and ExternalName gets
/// nothing; neither holds a record.
#[tokio::test]
async fn requested_headless_and_external_name_addresses() {
    let (_dir, objects) = objects(ServiceRanges::default()).await;
    let mut asked = web("asked");
    asked["spec"]["clusterIP"] = json!("10.96.0.10");
    assert_eq!(
        create(&objects, asked).await.unwrap()["spec"]["clusterIPs"],
        json!(["10.96.0.10"])
    );
    let mut again = web("again");
    again["spec"]["clusterIP"] = json!("10.96.0.10");
    let error = create(&objects, again).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "Service \"again\" is invalid: spec.clusterIPs[0]: Invalid value: \"10.96.0.10\": failed to allocate IP 10.96.0.10: provided IP is already allocated"
    );
    let mut outside = web("outside");
    outside["spec"]["clusterIPs"] = json!(["10.0.0.1"]);
    let error = create(&objects, outside).await.unwrap_err();
    assert_eq!(error.http_status().0, 422);
    assert!(
        error.to_string().contains("spec.clusterIPs[0]: Invalid value: \"10.0.0.1\": failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16"),
        "{error}"
    );
    let mut headless = web("headless");
    headless["spec"]["clusterIP"] = json!("None");
    let headless = create(&objects, headless).await.unwrap();
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let external = create(
        &objects,
        service(
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
    )
    .await
    .unwrap();
    assert!(external["spec"]["clusterIP"].is_null(), "{external}");
    assert_eq!(
        records(&objects, IP_RECORDS).await,
        BTreeSet::from(["10.96.0.10".to_string()])
    );
    let mut headless_node_port = web("hnp");
    headless_node_port["spec"]["clusterIP"] = json!("None");
    headless_node_port["spec"]["type"] = json!("NodePort");
    let error = create(&objects, headless_node_port).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("may not be set to 'None' for NodePort services"),
        "{error}"
    );
}

/// Every address of a small range is handed out once, then the range is
/// full (500, kube-apiserver's message); a deleted Service's address is
/// free again.
#[tokio::test]
async fn a_range_runs_out_and_a_delete_releases() {
    // A /29: .1 is the `kubernetes` Service's, .2 to .6 are for others.
    let (_dir, objects) = objects(ranges("10.200.0.0/29")).await;
    let mut ips = BTreeSet::new();
    for i in 0..5 {
        ips.insert(ip_of(
            &create(&objects, web(&format!("s{i}"))).await.unwrap(),
        ));
    }
    let expected: BTreeSet<Ipv4Addr> = (2..=6).map(|d| Ipv4Addr::new(10, 200, 0, d)).collect();
    assert_eq!(ips, expected);
    let error = create(&objects, web("late")).await.unwrap_err();
    assert_eq!(error.http_status(), (500, "InternalError"));
    assert_eq!(
        error.to_string(),
        "failed to allocate a serviceIP: range is full (10.200.0.0/29)"
    );
    let gone = objects
        .delete(kind("services"), "default", "s3")
        .await
        .unwrap()
        .0;
    assert_eq!(records(&objects, IP_RECORDS).await.len(), 4);
    let late = create(&objects, web("late")).await.unwrap();
    assert_eq!(ip_of(&late), ip_of(&gone));
}

/// Concurrent creates never share an address.
#[tokio::test]
async fn concurrent_creates_get_distinct_addresses() {
    // 62 addresses for 60 Services: random picks collide often.
    let (_dir, objects) = objects(ranges("10.200.0.0/26")).await;
    let creates = (0..60).map(|i| {
        let objects = objects.clone();
        tokio::spawn(async move { create(&objects, web(&format!("s{i}"))).await })
    });
    let mut ips = BTreeSet::new();
    for created in futures::future::join_all(creates).await {
        assert!(ips.insert(ip_of(&created.unwrap().unwrap())));
    }
    assert_eq!(ips.len(), 60);
    assert_eq!(records(&objects, IP_RECORDS).await.len(), 60);
}

/// Allocations live in the store: a restarted control plane keeps them and
/// gives a new Service another address.
#[tokio::test]
async fn allocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let open = || {
        let store: Arc<dyn c4m_state::Store> = Arc::new(c4m_state::RedbStore::open(&path).unwrap());
        Objects::new(store).with_service_ranges(ranges("10.200.0.0/29"))
    };
    let objects = open();
    crate::test_support::create_default_namespace(&objects).await;
    let mut first = BTreeSet::new();
    for i in 0..4 {
        first.insert(ip_of(
            &create(&objects, web(&format!("s{i}"))).await.unwrap(),
        ));
    }
    drop(objects);
    let objects = open();
    let fresh = ip_of(&create(&objects, web("fresh")).await.unwrap());
    assert!(!first.contains(&fresh), "{fresh} was already given");
    for i in 0..4 {
        let kept = objects
            .get(kind("services"), "default", &format!("s{i}"))
            .await
            .unwrap();
        assert!(first.contains(&ip_of(&kept)));
    }
}

/// An update keeps the cluster IP (and node ports) it leaves unset, and
/// may not change them; a change of type gives up what the new type does
/// not use.
#[tokio::test]
async fn updates_keep_and_may_not_change_addresses() {
    let (_dir, objects) = objects(ServiceRanges::default()).await;
    let created = create(&objects, web("web")).await.unwrap();
    let ip = ip_of(&created);
    // A replacement without the address keeps it.
    let replaced = replace(&objects, web("web")).await.unwrap();
    assert_eq!(ip_of(&replaced), ip);
    let mut moved = web("web");
    moved["spec"]["clusterIP"] = json!("10.96.0.77");
    let error = replace(&objects, moved).await.unwrap_err();
    assert_eq!(error.http_status().0, 422);
    assert!(
        error.to_string().contains(
            "spec.clusterIPs[0]: Invalid value: [\"10.96.0.77\"]: may not change once set"
        ),
        "{error}"
    );

    // To NodePort: a node port in range; kept by an update without it.
    let mut node_port = web("web");
    node_port["spec"]["type"] = json!("NodePort");
    let exposed = replace(&objects, node_port.clone()).await.unwrap();
    let port = exposed["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");
    assert_eq!(exposed["spec"]["externalTrafficPolicy"], "Cluster");
    let again = replace(&objects, node_port).await.unwrap();
    assert_eq!(again["spec"]["ports"][0]["nodePort"], port);
    assert_eq!(
        records(&objects, PORT_RECORDS).await,
        BTreeSet::from([port.to_string()])
    );

    // Back to ClusterIP: the node port is released.
    let back = replace(&objects, web("web")).await.unwrap();
    assert!(back["spec"]["ports"][0]["nodePort"].is_null());
    assert!(records(&objects, PORT_RECORDS).await.is_empty());

    // To ExternalName: the address is released.
    let external = service(
        "web",
        json!({"type": "ExternalName", "externalName": "example.com"}),
    );
    replace(&objects, external).await.unwrap();
    assert!(records(&objects, IP_RECORDS).await.is_empty());
}

/// A requested node port is honoured if free and in range, else refused
/// as Kubernetes refuses it; ports of one Service may share one (TCP and
/// UDP); a LoadBalancer gets node ports too; a delete releases them.
#[tokio::test]
async fn node_ports_are_allocated_once() {
    let (_dir, objects) = objects(ServiceRanges::default()).await;
    let asked = service(
        "dns",
        json!({"type": "NodePort", "selector": {"app": "dns"}, "ports": [
            {"name": "udp", "port": 53, "protocol": "UDP", "nodePort": 30053},
            {"name": "tcp", "port": 53, "protocol": "TCP", "nodePort": 30053}]}),
    );
    let created = create(&objects, asked).await.unwrap();
    assert_eq!(created["spec"]["ports"][1]["nodePort"], 30053);
    let taken = service(
        "other",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30053}]}),
    );
    let error = create(&objects, taken).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Service \"other\" is invalid: spec.ports[0].nodePort: Invalid value: 30053: provided port is already allocated"
    );
    let outside = service(
        "outside",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
    );
    let error = create(&objects, outside).await.unwrap_err();
    assert!(
        error.to_string().contains("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{error}"
    );
    let lb = create(
        &objects,
        service(
            "lb",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        ),
    )
    .await
    .unwrap();
    assert!(
        lb["spec"]["ports"][0]["nodePort"].as_u64().is_some(),
        "{lb}"
    );
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(records(&objects, PORT_RECORDS).await.len(), 2);
    objects
        .delete(kind("services"), "default", "dns")
        .await
        .unwrap();
    assert_eq!(records(&objects, PORT_RECORDS).await.len(), 1);
}

/// A LoadBalancer keeping external traffic on local endpoints gets a
/// health check node port, kept by updates and released with the policy.
#[tokio::test]
async fn a_local_load_balancer_gets_a_health_check_node_port() {
    let (_dir, objects) = objects(ServiceRanges::default()).await;
    let local = || {
        service(
            "web",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "selector": {"app": "web"}, "ports": [{"port": 80}]}),
        )
    };
    let created = create(&objects, local()).await.unwrap();
    let health = created["spec"]["healthCheckNodePort"].as_u64().unwrap();
    let node_port = created["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert_ne!(health, node_port);
    assert_eq!(records(&objects, PORT_RECORDS).await.len(), 2);
    let kept = replace(&objects, local()).await.unwrap();
    assert_eq!(kept["spec"]["healthCheckNodePort"], health);
    let mut cluster = local();
    cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
    let cluster = replace(&objects, cluster).await.unwrap();
    assert!(
        cluster["spec"]["healthCheckNodePort"].is_null(),
        "{cluster}"
    );
    assert_eq!(
        records(&objects, PORT_RECORDS).await,
        BTreeSet::from([node_port.to_string()])
    );
    let mut taken = service(
        "other",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80}], "healthCheckNodePort": node_port}),
    );
    let error = create(&objects, taken.clone()).await.unwrap_err();
    assert!(
        error.to_string().contains(&format!(
            "spec.healthCheckNodePort: Invalid value: {node_port}: provided port is already allocated"
        )),
        "{error}"
    );
    taken["spec"]["healthCheckNodePort"] = json!(health);
    let other = create(&objects, taken).await.unwrap();
    assert_eq!(other["spec"]["healthCheckNodePort"], health);
}

/// A VPC may not overlap the Service CIDR, naming `spec.cidr`.
#[tokio::test]
async fn a_vpc_may_not_overlap_the_service_cidr() {
    let (_dir, objects) = objects(ServiceRanges::default()).await;
    let vpc = json!({"apiVersion": "c4m.io/v1", "kind": "Vpc", "metadata": {"name": "v"},
        "spec": {"cidr": "10.96.128.0/24"}});
    let error = objects.create(kind("vpcs"), "", vpc).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "spec.cidr: 10.96.128.0/24 overlaps the Service CIDR (10.96.0.0/16)"
    );
}

/// A control plane whose Service CIDR overlaps a stored VPC does not start.
#[tokio::test]
async fn a_service_cidr_over_a_vpc_is_refused_at_start() {
    let (_dir, objects) = objects(ranges("10.200.0.0/16")).await;
    let vpc = json!({"apiVersion": "c4m.io/v1", "kind": "Vpc", "metadata": {"name": "v"},
        "spec": {"cidr": "10.96.128.0/24"}});
    objects.create(kind("vpcs"), "", vpc).await.unwrap();
    objects.check_service_cidr().await.unwrap();
    let clashing = objects.with_service_ranges(ServiceRanges::default());
    let error = clashing.check_service_cidr().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the Service CIDR 10.96.0.0/16 overlaps vpc v (10.96.128.0/24): choose another --service-cidr"
    );
}

/// A batch apply allocates in its one transaction (two Services, two
/// addresses), and applying the same again changes nothing.
#[tokio::test]
async fn a_batch_apply_allocates_once() {
    let (_dir, objects) = objects(ranges("10.200.0.0/29")).await;
    let request = || c4m_api::ApplyRequest {
        objects: ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, name)| c4m_api::ApplyObject {
                source: "test".into(),
                document: i + 1,
                object: web(name),
            })
            .collect(),
        default_namespace: None,
    };
    let actions = |response: c4m_api::ApplyResponse| -> Vec<c4m_api::ApplyAction> {
        response.results.iter().map(|r| r.action).collect()
    };
    let first = objects.apply(request()).await.unwrap();
    assert_eq!(actions(first), [c4m_api::ApplyAction::Created; 2]);
    let mut ips = BTreeSet::new();
    for name in ["a", "b"] {
        let service = objects.get(kind("services"), "default", name).await;
        ips.insert(ip_of(&service.unwrap()));
    }
    assert_eq!(ips.len(), 2);
    assert_eq!(records(&objects, IP_RECORDS).await.len(), 2);
    let again = objects.apply(request()).await.unwrap();
    assert_eq!(actions(again), [c4m_api::ApplyAction::Unchanged; 2]);
}

/// Ranges set by hand beyond what the flags take give no address, without
/// a panic.
#[tokio::test]
async fn a_range_without_addresses_is_full() {
    for prefix in [31, 32] {
        let ranges = ServiceRanges {
            network: Ipv4Addr::new(10, 200, 0, 0),
            prefix,
            node_ports: 30000..=30000,
        };
        let (_dir, objects) = objects(ranges).await;
        let error = create(&objects, web("web")).await.unwrap_err();
        assert_eq!(error.http_status().0, 500, "/{prefix}: {error}");
    }
}

#[test]
fn ranges_parse_with_reasons() {
    assert_eq!(
        ServiceRanges::parse_cidr("10.96.0.0/12").unwrap(),
        (Ipv4Addr::new(10, 96, 0, 0), 12)
    );
    for bad in ["10.96.0.1/16", "10.96.0.0", "fd00::/108", "10.0.0.0/31"] {
        assert!(ServiceRanges::parse_cidr(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ServiceRanges::parse_node_ports("30000-32767").unwrap(),
        30000..=32767
    );
    assert!(ServiceRanges::parse_node_ports("32767-30000").is_err());
    assert_eq!(
        ServiceRanges::default().api_service_ip(),
        Ipv4Addr::new(10, 96, 0, 1)
    );
}
