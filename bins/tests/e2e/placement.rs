//! End-to-end placement rules through the real control plane, on hollow
//! nodes: inter-instance anti-affinity and topology spread across zones.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// Two zones of two hollow nodes each.
fn two_zones() -> Cluster {
    let mut cluster = Cluster::start();
    for zone in ["a", "b"] {
        let label = format!("topology.kubernetes.io/zone=zone-{zone}");
        cluster.start_labelled_hollow_agents(&format!("zone-{zone}"), 2, "4", "4Gi", &[&label]);
    }
    cluster
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

/// Five replicas that must not share a node, on four nodes: four run on
/// four nodes, the fifth stays Pending and says why.
#[test]
fn required_anti_affinity_puts_one_replica_per_node() {
    let cluster = two_zones();
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {matchLabels: {app: web}}
              topologyKey: kubernetes.io/hostname
      containers:
        - {name: web, image: web, command: [sleep, "3600"], resources: {requests: {cpu: 100m, memory: 64Mi}}}
"#,
    );
    let running = wait_for("four replicas running", MINUTE, || {
        let ready: Vec<Value> = cluster
            .instances_of("app=web")
            .into_iter()
            .filter(is_ready)
            .collect();
        (ready.len() == 4).then_some(ready)
    });
    let nodes: BTreeSet<&str> = running.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 4, "one replica per node: {nodes:?}");
    let pending = wait_for("the fifth replica to be unschedulable", MINUTE, || {
        cluster.instances_of("app=web").into_iter().find(|pod| {
            pod["spec"]["nodeName"].is_null()
                && pod["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "Unschedulable"))
        })
    });
    let described = cluster.ok(&[
        "describe",
        "instance",
        pending["metadata"]["name"].as_str().unwrap(),
    ]);
    assert!(
        described.contains("4 node(s) didn't match pod anti-affinity rules"),
        "{described}"
    );
}

/// Best fit alone would pack four small replicas onto one node; a zone
/// spread constraint puts two in each zone.
#[test]
fn topology_spread_balances_replicas_across_zones() {
    let cluster = two_zones();
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 4
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
           labelSelector: {matchLabels: {app: api}}}
      containers:
        - {name: api, image: api, command: [sleep, "3600"], resources: {requests: {cpu: 100m, memory: 64Mi}}}
"#,
    );
    let running = cluster.wait_ready("app=api", 4, MINUTE);
    let mut per_zone: BTreeMap<char, usize> = BTreeMap::new();
    for pod in &running {
        // Nodes are named zone-a-N and zone-b-N.
        let zone = node_of(pod).chars().nth(5).unwrap();
        *per_zone.entry(zone).or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([('a', 2), ('b', 2)]));
}

/// Admits only nodes whose name ends in an odd digit: a rule none of the
/// built-in filters can express, so where instances land shows that an
/// embedder's filter reached the live scheduler.
#[derive(Debug)]
struct OddNodesOnly;

impl c4m_sched::Filter for OddNodesOnly {
    fn unfit_reasons(
        &self,
        _request: &c4m_sched::InstanceRequest,
        node: &c4m_sched::NodeView<'_>,
    ) -> Vec<c4m_sched::UnfitReason> {
        let odd = node
            .info
            .name
            .chars()
            .last()
            .and_then(|c| c.to_digit(10))
            .is_some_and(|digit| digit % 2 == 1);
        if odd {
            Vec::new()
        } else {
            vec![c4m_sched::UnfitReason::Custom("had an even name".into())]
        }
    }
}

/// A control plane embedded in the test with a custom filter places every
/// replica on the nodes the filter admits, and says so when none fits.
#[test]
fn an_embedded_control_plane_places_by_its_custom_filter() {
    let mut cluster = Cluster::start_embedded(|extensions| extensions.with_filter(OddNodesOnly));
    cluster.start_hollow_agents("pool", 4, "4", "4Gi");
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: odd}
spec:
  replicas: 4
  selector: {matchLabels: {app: odd}}
  template:
    metadata: {labels: {app: odd}}
    spec:
      containers:
        - {name: main, image: odd, command: [sleep, "3600"], resources: {requests: {cpu: 1500m, memory: 64Mi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: even}
spec:
  replicas: 1
  selector: {matchLabels: {app: even}}
  template:
    metadata: {labels: {app: even}}
    spec:
      nodeSelector: {kubernetes.io/hostname: pool-2}
      containers:
        - {name: main, image: even, command: [sleep, "3600"]}
"#,
    );
    // Two replicas of 1.5 CPUs fit on each 4-CPU node: four need both odd
    // nodes, and none may use the even ones.
    let running = wait_for("four replicas running", MINUTE, || {
        let ready: Vec<Value> = cluster
            .instances_of("app=odd")
            .into_iter()
            .filter(is_ready)
            .collect();
        (ready.len() == 4).then_some(ready)
    });
    let nodes: BTreeSet<&str> = running.iter().map(node_of).collect();
    assert_eq!(nodes, BTreeSet::from(["pool-1", "pool-3"]));
    // The only node the selector allows is one the filter refuses.
    let message = wait_for("the even replica explained", MINUTE, || {
        let pod = cluster.instances_of("app=even").pop()?;
        let condition = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "Unschedulable")?
            .clone();
        Some(condition["message"].as_str()?.to_string())
    });
    assert!(message.contains("1 node(s) had an even name"), "{message}");
}
