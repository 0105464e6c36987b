//! Scale through hollow nodes: one `c4m agent --hollow` process simulates
//! many nodes, so the whole control plane (registration, heartbeats,
//! scheduling, assignment streams, status reports) runs at a size real
//! agents could not reach on one machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{Cluster, is_ready, node_is_ready, wait_for};

const NODES: usize = 200;
const REPLICAS: usize = 1_000;
/// 4 CPUs per node / 100m per instance.
const MOST_PER_NODE: usize = 40;

#[test]
fn a_thousand_instances_run_on_two_hundred_hollow_nodes() {
    let mut cluster = Cluster::start();
    let started = Instant::now();
    cluster.start_hollow_agents("hollow", NODES, "4", "8Gi");
    eprintln!("{NODES} hollow nodes Ready in {:?}", started.elapsed());

    let applied = Instant::now();
    cluster.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: many}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: many}}}}
  template:
    metadata: {{labels: {{app: many}}}}
    spec:
      containers:
        - name: many
          command: ["sleep", "infinity"]
          resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"#
    ));
    let ready = cluster.wait_ready("app=many", REPLICAS, Duration::from_secs(60));
    eprintln!(
        "{REPLICAS} instances Running and Ready {:?} after apply",
        applied.elapsed()
    );

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &ready {
        assert!(is_ready(pod));
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        assert!(node.starts_with("hollow-"), "bound to {node:?}");
        *per_node.entry(node.to_string()).or_default() += 1;
    }
    let busiest = per_node.values().copied().max().unwrap_or_default();
    assert!(
        busiest <= MOST_PER_NODE,
        "a node holds {busiest} instances of 100m on 4 CPUs"
    );
    // 1,000 instances need at least 25 nodes at 40 each.
    assert!(per_node.len() >= REPLICAS.div_ceil(MOST_PER_NODE));
    eprintln!(
        "spread over {} nodes, at most {busiest} on one",
        per_node.len()
    );

    cluster.kill_agent("hollow");
    let killed = Instant::now();
    wait_for(
        "every hollow node NotReady",
        Duration::from_secs(20),
        || {
            let nodes = cluster.list("nodes");
            let hollow: Vec<_> = nodes
                .iter()
                .filter(|n| {
                    n["metadata"]["name"]
                        .as_str()
                        .is_some_and(|name| name.starts_with("hollow-"))
                })
                .collect();
            (hollow.len() == NODES && hollow.iter().all(|n| !node_is_ready(n))).then_some(())
        },
    );
    eprintln!(
        "{NODES} nodes NotReady {:?} after the kill",
        killed.elapsed()
    );
}
