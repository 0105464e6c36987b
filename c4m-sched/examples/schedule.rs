//! The scheduler alone: a cluster of nodes in memory, a custom filter, and
//! placements explained when nothing fits. No I/O, no async.
//!
//! ```sh
//! cargo run -p c4m-sched --example schedule
//! ```

use std::collections::{BTreeMap, BTreeSet};

use c4m_sched::{
    ClusterSnapshot, Filter, InstanceRequest, NodeInfo, NodeView, Resources, UnfitReason,
};

/// Keeps instances off nodes whose `disk` label is `hdd`.
#[derive(Debug)]
struct NoSpinningDisks;

impl Filter for NoSpinningDisks {
    fn unfit_reasons(&self, _request: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        if node.info.labels.get("disk").map(String::as_str) == Some("hdd") {
            vec![UnfitReason::Custom("had spinning disks".into())]
        } else {
            Vec::new()
        }
    }
}

fn main() {
    let mut cluster = ClusterSnapshot::new();
    for (name, disk, cpu_millis) in [
        ("a", "ssd", 2_000),
        ("b", "hdd", 8_000),
        ("c", "ssd", 4_000),
    ] {
        cluster.upsert_node(NodeInfo {
            name: name.into(),
            allocatable: Resources {
                cpu_millis,
                memory_bytes: 8 << 30,
                instances: 110,
                ..Resources::default()
            },
            labels: BTreeMap::from([("disk".into(), disk.into())]),
            drivers: BTreeSet::from(["process".into()]),
            ready: true,
            ..NodeInfo::default()
        });
    }
    cluster.add_filter(NoSpinningDisks);

    let request = InstanceRequest {
        cpu_millis: 1_500,
        memory_bytes: 256 << 20,
        ..InstanceRequest::default()
    };
    for attempt in 1..=5 {
        match cluster.place(&request) {
            Ok(node) => println!("instance {attempt}: placed on node {node}"),
            // Kubernetes' wording: "0/3 nodes are available: ...".
            Err(unschedulable) => println!("instance {attempt}: {unschedulable}"),
        }
    }
}
