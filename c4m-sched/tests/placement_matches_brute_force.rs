//! Property test: placement on random clusters (taints, extended resources,
//! host ports, node affinity, both strategies, an embedder's node-scoped
//! filter and scorer) equals a brute force that runs every filter
//! and scorer on every node, and never over-commits a node.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use c4m_sched::{
    ClusterSnapshot, DriverOffered, Filter, HostPort, HostPorts, InstanceRequest, NodeInfo,
    NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, NodeView,
    PreferNoScheduleTaints, PreferredNodeAffinity, PreferredSchedulingTerm, Protocol,
    RequiredNodeAffinity, Resources, ResourcesFit, Scorer, Strategy as PlacementStrategy, Taint,
    TaintEffect, TaintToleration, Toleration, TolerationOperator, UnfitReason,
};
use proptest::prelude::*;

const GPU: &str = "nvidia.com/gpu";

/// One step applied to both the snapshot and the model.
#[derive(Clone, Debug)]
enum Step {
    Place(InstanceRequest),
    /// Releases the placement at this index (modulo the number placed so far).
    Release(usize),
    /// Re-upserts the node at this index (modulo node count) with `ready` set.
    SetReady(usize, bool),
}

/// An embedder's node-scoped filter: refuses names ending in 3.
#[derive(Debug)]
struct NameNotEndingIn3;

impl Filter for NameNotEndingIn3 {
    fn unfit_reasons(&self, _: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        if node.info.name.ends_with('3') {
            vec![UnfitReason::Custom("ended in 3".to_owned())]
        } else {
            Vec::new()
        }
    }
}

/// An embedder's node-scoped scorer: prefers busy nodes (forces the scan).
#[derive(Debug)]
struct InstancesUsed;

impl Scorer for InstancesUsed {
    fn score(&self, _: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        i64::try_from(node.used.instances).unwrap_or(i64::MAX)
    }
}

const EMBEDDER_WEIGHT: i64 = 7;

/// The test's own view of a node: its description and what is placed on it.
struct ModelNode {
    info: NodeInfo,
    used: Resources,
    host_ports: BTreeMap<HostPort, usize>,
}

impl ModelNode {
    fn free(&self) -> Resources {
        self.info.allocatable.saturating_sub(&self.used)
    }

    fn view(&self) -> NodeView<'_> {
        NodeView {
            info: &self.info,
            used: &self.used,
            host_ports_in_use: &self.host_ports,
        }
    }

    fn fits(&self, req: &InstanceRequest, with_embedder: bool) -> bool {
        let built_in: [&dyn Filter; 6] = [
            &NodeSelector,
            &RequiredNodeAffinity,
            &TaintToleration,
            &DriverOffered,
            &ResourcesFit,
            &HostPorts,
        ];
        let embedder: &[&dyn Filter] = if with_embedder {
            &[&NameNotEndingIn3]
        } else {
            &[]
        };
        self.info.ready
            && built_in
                .iter()
                .chain(embedder)
                .all(|filter| filter.unfit_reasons(req, &self.view()).is_empty())
    }

    fn total_score(&self, req: &InstanceRequest, with_embedder: bool) -> i64 {
        let built_in: [&dyn Scorer; 3] = [
            req.strategy.scorer(),
            &PreferredNodeAffinity,
            &PreferNoScheduleTaints,
        ];
        let embedder = if with_embedder {
            EMBEDDER_WEIGHT * InstancesUsed.score(req, &self.view())
        } else {
            0
        };
        built_in
            .iter()
            .map(|scorer| scorer.score(req, &self.view()))
            .sum::<i64>()
            + embedder
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

    fn place(&mut self, req: &InstanceRequest) {
        self.used = self.used.saturating_add(&req.resources());
        for port in &req.host_ports {
            *self.host_ports.entry(*port).or_default() += 1;
        }
    }

    fn release(&mut self, req: &InstanceRequest) {
        self.used = self.used.saturating_sub(&req.resources());
        for port in &req.host_ports {
            if let Some(count) = self.host_ports.get_mut(port) {
                *count -= 1;
                if *count == 0 {
                    self.host_ports.remove(port);
                }
            }
        }
    }
}

/// Scans every node; returns the index of the best one, if any: highest
/// total score, then the exactly smaller (best fit) or larger (spread)
/// leftover, then the smallest name.
fn brute_force(nodes: &[ModelNode], req: &InstanceRequest, with_embedder: bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, node) in nodes.iter().enumerate() {
        if !node.fits(req, with_embedder) {
            continue;
        }
        let better = best.is_none_or(|best_index| {
            let best_node = &nodes[best_index];
            let (numerator, denominator) = node.leftover(req);
            let (best_numerator, best_denominator) = best_node.leftover(req);
            let by_leftover = (numerator * best_denominator).cmp(&(best_numerator * denominator));
            let by_leftover = match req.strategy {
                PlacementStrategy::BestFit => by_leftover,
                PlacementStrategy::Spread => by_leftover.reverse(),
            };
            best_node
                .total_score(req, with_embedder)
                .cmp(&node.total_score(req, with_embedder))
                .then(by_leftover)
                .then_with(|| node.info.name.cmp(&best_node.info.name))
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
        prop_oneof![Just(0u64), 1..=100u64],
        prop::option::of(0..=3u64),
    )
        .prop_map(
            |(cpu_millis, memory_bytes, instances, ephemeral_storage_bytes, gpus)| Resources {
                cpu_millis,
                memory_bytes,
                ephemeral_storage_bytes,
                instances,
                extended: gpus
                    .map(|gpus| BTreeMap::from([(GPU.to_owned(), gpus)]))
                    .unwrap_or_default(),
            },
        )
}

fn zone_strategy() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned())])
}

fn taint_strategy() -> impl Strategy<Value = Taint> {
    (
        prop_oneof![Just("dedicated"), Just("spot")],
        prop_oneof![Just("db"), Just("")],
        prop_oneof![
            Just(TaintEffect::NoSchedule),
            Just(TaintEffect::PreferNoSchedule),
            Just(TaintEffect::NoExecute),
        ],
    )
        .prop_map(|(key, value, effect)| Taint {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        })
}

fn toleration_strategy() -> impl Strategy<Value = Toleration> {
    (
        prop_oneof![Just(""), Just("dedicated"), Just("spot")],
        prop_oneof![
            Just(TolerationOperator::Equal),
            Just(TolerationOperator::Exists)
        ],
        prop_oneof![Just("db"), Just("")],
        prop::option::of(prop_oneof![
            Just(TaintEffect::NoSchedule),
            Just(TaintEffect::PreferNoSchedule),
            Just(TaintEffect::NoExecute),
        ]),
    )
        .prop_map(|(key, operator, value, effect)| Toleration {
            key: key.to_owned(),
            operator,
            value: value.to_owned(),
            effect,
        })
}

fn zone_term_strategy() -> impl Strategy<Value = NodeSelectorTerm> {
    prop_oneof![
        Just(NodeSelectorOperator::In),
        Just(NodeSelectorOperator::NotIn),
        Just(NodeSelectorOperator::Exists),
        Just(NodeSelectorOperator::DoesNotExist),
    ]
    .prop_map(|operator| NodeSelectorTerm {
        match_expressions: vec![NodeSelectorRequirement {
            key: "zone".to_owned(),
            operator,
            values: vec!["a".to_owned()],
        }],
        ..NodeSelectorTerm::default()
    })
}

fn driver_strategy() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just("process".to_owned()), 1 => Just("wasm".to_owned())]
}

/// Up to 12 nodes drawn from up to 3 allocatable shapes, with random zone
/// labels, drivers, taints and readiness.
fn cluster_strategy() -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::vec(allocatable_strategy(), 1..=3).prop_flat_map(|shapes| {
        let shape_count = shapes.len();
        prop::collection::vec(
            (
                0..shape_count,
                zone_strategy(),
                prop::collection::btree_set(driver_strategy(), 0..=2),
                prop::bool::weighted(0.85),
                prop::collection::vec(taint_strategy(), 0..=2),
            ),
            1..=12,
        )
        .prop_map(move |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(index, (shape, zone, drivers, ready, taints))| NodeInfo {
                    // Names out of insertion order, to exercise the tie-break.
                    name: format!("node-{:02}", (index * 7) % 13),
                    allocatable: shapes[shape].clone(),
                    taints,
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
        (
            prop_oneof![3 => Just(0u64), 1 => 1..=60u64],
            prop_oneof![3 => Just(0u64), 1 => 1..=2u64],
            prop::collection::vec(toleration_strategy(), 0..=2),
            prop::option::of(prop_oneof![Just(80u16), Just(443u16)]),
            prop_oneof![
                Just(PlacementStrategy::BestFit),
                Just(PlacementStrategy::Spread)
            ],
            prop::collection::vec(zone_term_strategy(), 0..=2),
            prop::collection::vec((1..=100i64, zone_term_strategy()), 0..=2),
        ),
    )
        .prop_map(
            |(
                cpu_millis,
                memory_bytes,
                zone,
                driver,
                (ephemeral_storage_bytes, gpus, tolerations, port, strategy, required, preferred),
            )| InstanceRequest {
                cpu_millis,
                memory_bytes,
                ephemeral_storage_bytes,
                extended: if gpus > 0 {
                    BTreeMap::from([(GPU.to_owned(), gpus)])
                } else {
                    BTreeMap::new()
                },
                node_selector: zone
                    .map(|zone| BTreeMap::from([("zone".to_owned(), zone)]))
                    .unwrap_or_default(),
                required_affinity: required,
                preferred_affinity: preferred
                    .into_iter()
                    .map(|(weight, preference)| PreferredSchedulingTerm { weight, preference })
                    .collect(),
                tolerations,
                host_ports: port
                    .map(|port| {
                        vec![HostPort {
                            port,
                            protocol: Protocol::Tcp,
                        }]
                    })
                    .unwrap_or_default(),
                driver,
                strategy,
                ..InstanceRequest::default()
            },
        )
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
        with_embedder in prop::bool::weighted(0.25),
    ) {
        let mut snapshot = ClusterSnapshot::new();
        if with_embedder {
            snapshot.add_filter(NameNotEndingIn3);
            snapshot.add_scorer(EMBEDDER_WEIGHT, InstancesUsed);
        }
        let mut model: Vec<ModelNode> = Vec::new();
        for info in cluster {
            snapshot.upsert_node(info.clone());
            model.push(ModelNode {
                info,
                used: Resources::default(),
                host_ports: BTreeMap::new(),
            });
        }
        prop_assert_eq!(snapshot.node_count(), model.len());
        let mut placed: Vec<(usize, InstanceRequest)> = Vec::new();

        for step in steps {
            match step {
                Step::Place(req) => {
                    let expected = brute_force(&model, &req, with_embedder);
                    match (snapshot.place(&req), expected) {
                        (Ok(name), Some(index)) => {
                            prop_assert_eq!(&name, &model[index].info.name);
                            model[index].place(&req);
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
                    model[index].release(&req);
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
                let (used, allocatable) = (&node.used, &node.info.allocatable);
                prop_assert!(
                    used.cpu_millis <= allocatable.cpu_millis
                        && used.memory_bytes <= allocatable.memory_bytes
                        && used.ephemeral_storage_bytes <= allocatable.ephemeral_storage_bytes
                        && used.instances <= allocatable.instances
                        && used.extended.iter().all(|(name, amount)| *amount <= allocatable.extended(name)),
                    "{} over-committed: {:?} of {:?}", node.info.name, used, allocatable
                );
                prop_assert!(
                    node.host_ports.values().all(|count| *count == 1),
                    "{} has a host port taken twice: {:?}", node.info.name, node.host_ports
                );
                prop_assert_eq!(snapshot.free(&node.info.name), Some(node.free()));
            }
        }
    }
}
