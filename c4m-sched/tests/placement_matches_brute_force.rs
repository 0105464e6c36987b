//! Property test: placement on random clusters equals a brute-force best fit
//! and never over-commits a node.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use c4m_sched::{ClusterSnapshot, InstanceRequest, NodeInfo, Resources};
use proptest::prelude::*;

/// One step applied to both the snapshot and the model.
#[derive(Clone, Debug)]
enum Step {
    Place(InstanceRequest),
    /// Releases the placement at this index (modulo the number placed so far).
    Release(usize),
    /// Re-upserts the node at this index (modulo node count) with `ready` set.
    SetReady(usize, bool),
}

/// The test's own view of a node: its description and what is placed on it.
struct ModelNode {
    info: NodeInfo,
    used: Resources,
}

impl ModelNode {
    fn free(&self) -> Resources {
        self.info.allocatable.saturating_sub(self.used)
    }

    fn fits(&self, req: &InstanceRequest) -> bool {
        let free = self.free();
        self.info.ready
            && req
                .node_selector
                .iter()
                .all(|(key, value)| self.info.labels.get(key) == Some(value))
            && self.info.drivers.contains(&req.driver)
            && free.instances >= 1
            && free.cpu_millis >= req.cpu_millis
            && free.memory_bytes >= req.memory_bytes
    }

    /// Leftover after placing `req` as (numerator, denominator); quantities in
    /// this test are small enough that u128 cross-multiplication is exact.
    fn leftover(&self, req: &InstanceRequest) -> (u128, u128) {
        let free = self.free();
        let cpu_scale = u128::from(self.info.allocatable.cpu_millis.max(1));
        let memory_scale = u128::from(self.info.allocatable.memory_bytes.max(1));
        let numerator = u128::from(free.cpu_millis - req.cpu_millis) * memory_scale
            + u128::from(free.memory_bytes - req.memory_bytes) * cpu_scale;
        (numerator, cpu_scale * memory_scale)
    }
}

/// Scans every node; returns the index of the best fit, if any.
fn brute_force_best_fit(nodes: &[ModelNode], req: &InstanceRequest) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, node) in nodes.iter().enumerate() {
        if !node.fits(req) {
            continue;
        }
        let better = best.is_none_or(|best_index| {
            let (numerator, denominator) = node.leftover(req);
            let (best_numerator, best_denominator) = nodes[best_index].leftover(req);
            (numerator * best_denominator)
                .cmp(&(best_numerator * denominator))
                .then_with(|| node.info.name.cmp(&nodes[best_index].info.name))
                == Ordering::Less
        });
        if better {
            best = Some(index);
        }
    }
    best
}

fn allocatable_strategy() -> impl Strategy<Value = Resources> {
    (
        prop_oneof![Just(0u64), 1..=4000u64],
        prop_oneof![Just(0u64), 1..=4096u64],
        0..=6u64,
    )
        .prop_map(|(cpu_millis, memory_bytes, instances)| Resources {
            cpu_millis,
            memory_bytes,
            instances,
        })
}

fn zone_strategy() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned())])
}

fn driver_strategy() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just("process".to_owned()), 1 => Just("wasm".to_owned())]
}

/// Up to 12 nodes drawn from up to 3 allocatable shapes, with random zone
/// labels, drivers and readiness.
fn cluster_strategy() -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::vec(allocatable_strategy(), 1..=3).prop_flat_map(|shapes| {
        let shape_count = shapes.len();
        prop::collection::vec(
            (
                0..shape_count,
                zone_strategy(),
                prop::collection::btree_set(driver_strategy(), 0..=2),
                prop::bool::weighted(0.85),
            ),
            1..=12,
        )
        .prop_map(move |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(index, (shape, zone, drivers, ready))| NodeInfo {
                    // Names out of insertion order, to exercise the tie-break.
                    name: format!("node-{:02}", (index * 7) % 13),
                    allocatable: shapes[shape],
                    labels: zone
                        .map(|zone| BTreeMap::from([("zone".to_owned(), zone)]))
                        .unwrap_or_default(),
                    drivers: drivers.into_iter().collect::<BTreeSet<_>>(),
                    ready,
                })
                .collect()
        })
    })
}

fn request_strategy() -> impl Strategy<Value = InstanceRequest> {
    (
        prop_oneof![Just(0u64), 1..=2000u64],
        prop_oneof![Just(0u64), 1..=2048u64],
        zone_strategy(),
        driver_strategy(),
    )
        .prop_map(|(cpu_millis, memory_bytes, zone, driver)| InstanceRequest {
            cpu_millis,
            memory_bytes,
            node_selector: zone
                .map(|zone| BTreeMap::from([("zone".to_owned(), zone)]))
                .unwrap_or_default(),
            driver,
        })
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => request_strategy().prop_map(Step::Place),
        2 => any::<usize>().prop_map(Step::Release),
        1 => (any::<usize>(), prop::bool::weighted(0.7)).prop_map(|(node, ready)| Step::SetReady(node, ready)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn placement_matches_brute_force_and_never_over_commits(
        cluster in cluster_strategy(),
        steps in prop::collection::vec(step_strategy(), 1..60),
    ) {
        let mut snapshot = ClusterSnapshot::new();
        let mut model: Vec<ModelNode> = Vec::new();
        for info in cluster {
            snapshot.upsert_node(info.clone());
            model.push(ModelNode { info, used: Resources::default() });
        }
        prop_assert_eq!(snapshot.node_count(), model.len());
        let mut placed: Vec<(usize, InstanceRequest)> = Vec::new();

        for step in steps {
            match step {
                Step::Place(req) => {
                    let expected = brute_force_best_fit(&model, &req);
                    match (snapshot.place(&req), expected) {
                        (Ok(name), Some(index)) => {
                            prop_assert_eq!(&name, &model[index].info.name);
                            model[index].used = model[index].used.saturating_add(req.resources());
                            placed.push((index, req));
                        }
                        (Err(unschedulable), None) => {
                            prop_assert_eq!(unschedulable.total_nodes, model.len());
                            prop_assert!(!unschedulable.reasons.is_empty());
                        }
                        (got, expected) => prop_assert!(
                            false,
                            "place gave {:?}, brute force {:?}",
                            got,
                            expected.map(|index| &model[index].info.name)
                        ),
                    }
                }
                Step::Release(which) if !placed.is_empty() => {
                    let (index, req) = placed.swap_remove(which % placed.len());
                    snapshot.release(&model[index].info.name, &req);
                    model[index].used = model[index].used.saturating_sub(req.resources());
                }
                Step::Release(_) => {}
                Step::SetReady(which, ready) => {
                    let node_count = model.len();
                    let node = &mut model[which % node_count];
                    node.info.ready = ready;
                    snapshot.upsert_node(node.info.clone());
                }
            }
            for node in &model {
                let used = node.used;
                let allocatable = node.info.allocatable;
                prop_assert!(
                    used.cpu_millis <= allocatable.cpu_millis
                        && used.memory_bytes <= allocatable.memory_bytes
                        && used.instances <= allocatable.instances,
                    "{} over-committed: {:?} of {:?}", node.info.name, used, allocatable
                );
                prop_assert_eq!(snapshot.free(&node.info.name), Some(node.free()));
            }
        }
    }
}
