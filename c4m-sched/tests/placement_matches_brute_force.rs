//! Property test: placement on random clusters (taints, extended resources,
//! host ports, node affinity by zone, hostname and name, inter-instance
//! affinity and anti-affinity, topology spread, both strategies, random
//! policies, an embedder's node-scoped filter and scorer) equals a brute
//! force that runs every filter and scorer on every node, with Kubernetes'
//! inter-instance and spread semantics computed from the placed instances
//! directly, and never over-commits a node or breaks a required rule.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use c4m_sched::{
    ClusterSnapshot, DriverOffered, FILTERS, Filter, HOSTNAME_LABEL, HostPort, HostPorts,
    InstanceAffinityTerm, InstanceRequest, LabelSelector, LabelSelectorOperator,
    LabelSelectorRequirement, MANDATORY_FILTERS, MAX_NODE_SCORE, NODE_NAME_FIELD, NodeInfo,
    NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, NodeView,
    Policy, PreferNoScheduleTaints, PreferredNodeAffinity, PreferredSchedulingTerm, Protocol,
    RequiredNodeAffinity, Resources, ResourcesFit, SCORERS, Scorer, Strategy as PlacementStrategy,
    Taint, TaintEffect, TaintToleration, Toleration, TolerationOperator, TopologySpreadConstraint,
    UnfitReason, WeightedInstanceAffinityTerm, WhenUnsatisfiable, filter_names, scorer_names,
};
use proptest::prelude::*;

const GPU: &str = "nvidia.com/gpu";

/// One step applied to both the snapshot and the model.
#[derive(Clone, Debug)]
enum Step {
    Place(Box<InstanceRequest>),
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

    /// Whether the built-in node filters the policy runs, and the
    /// embedder's, pass.
    fn fits(&self, req: &InstanceRequest, policy: &Policy, with_embedder: bool) -> bool {
        let built_in: [(&str, &dyn Filter); 6] = [
            (filter_names::NODE_SELECTOR, &NodeSelector),
            (filter_names::NODE_AFFINITY, &RequiredNodeAffinity),
            (filter_names::TAINT_TOLERATION, &TaintToleration),
            (filter_names::DRIVER, &DriverOffered),
            (filter_names::NODE_RESOURCES_FIT, &ResourcesFit),
            (filter_names::NODE_PORTS, &HostPorts),
        ];
        let embedder: &[&dyn Filter] = if with_embedder {
            &[&NameNotEndingIn3]
        } else {
            &[]
        };
        self.info.ready
            && built_in
                .iter()
                .filter(|(name, _)| policy.filter_enabled(name))
                .map(|(_, filter)| *filter)
                .chain(embedder.iter().copied())
                .all(|filter| filter.unfit_reasons(req, &self.view()).is_empty())
    }

    /// The weighted built-in scores but the normalised ones, and the
    /// embedder's.
    fn total_score(&self, req: &InstanceRequest, policy: &Policy, with_embedder: bool) -> i64 {
        let built_in: [(&str, &dyn Scorer); 3] = [
            (scorer_names::FIT, req.strategy.scorer()),
            (scorer_names::NODE_AFFINITY, &PreferredNodeAffinity),
            (scorer_names::TAINT_TOLERATION, &PreferNoScheduleTaints),
        ];
        let embedder = if with_embedder {
            EMBEDDER_WEIGHT * InstancesUsed.score(req, &self.view())
        } else {
            0
        };
        built_in
            .iter()
            .map(|(name, scorer)| policy.weight(name) * scorer.score(req, &self.view()))
            .sum::<i64>()
            + embedder
    }

    fn label(&self, key: &str) -> Option<&String> {
        self.info.labels.get(key)
    }

    /// Whether `other` is in this node's domain of `key` (both have it, equal).
    fn same_domain(&self, other: &ModelNode, key: &str) -> bool {
        self.label(key)
            .is_some_and(|value| other.label(key) == Some(value))
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

/// A placed instance: its node and request.
type Placed = (usize, InstanceRequest);

/// Kubernetes' InterPodAffinity filter, from the placed instances.
fn instance_affinity_refuses(
    nodes: &[ModelNode],
    placed: &[Placed],
    req: &InstanceRequest,
    node: &ModelNode,
) -> bool {
    let terms = &req.required_instance_affinity;
    let selected_by_all = |other: &InstanceRequest| {
        terms
            .iter()
            .all(|term| term.selects(&req.namespace, &other.namespace, &other.labels))
    };
    if !terms.is_empty() {
        if terms
            .iter()
            .any(|term| node.label(&term.topology_key).is_none())
        {
            return true;
        }
        let in_every_domain = terms.iter().all(|term| {
            placed.iter().any(|(at, other)| {
                selected_by_all(other) && nodes[*at].same_domain(node, &term.topology_key)
            })
        });
        let none_counted = !placed.iter().any(|(at, other)| {
            selected_by_all(other)
                && terms
                    .iter()
                    .any(|term| nodes[*at].label(&term.topology_key).is_some())
        });
        let self_selected = terms
            .iter()
            .all(|term| term.selects(&req.namespace, &req.namespace, &req.labels));
        if !(in_every_domain || (none_counted && self_selected)) {
            return true;
        }
    }
    let repelled = req.required_instance_anti_affinity.iter().any(|term| {
        placed.iter().any(|(at, other)| {
            term.selects(&req.namespace, &other.namespace, &other.labels)
                && nodes[*at].same_domain(node, &term.topology_key)
        })
    });
    let repelled_by_existing = placed.iter().any(|(at, other)| {
        other.required_instance_anti_affinity.iter().any(|term| {
            term.selects(&other.namespace, &req.namespace, &req.labels)
                && nodes[*at].same_domain(node, &term.topology_key)
        })
    });
    repelled || repelled_by_existing
}

/// The raw preferred inter-instance score of `node`.
fn instance_affinity_raw(
    nodes: &[ModelNode],
    placed: &[Placed],
    req: &InstanceRequest,
    node: &ModelNode,
) -> i64 {
    let attracting = req.preferred_instance_affinity.iter().map(|term| (1, term));
    let repelling = req
        .preferred_instance_anti_affinity
        .iter()
        .map(|term| (-1, term));
    attracting
        .chain(repelling)
        .map(|(sign, weighted)| {
            let count = placed
                .iter()
                .filter(|(at, other)| {
                    weighted
                        .term
                        .selects(&req.namespace, &other.namespace, &other.labels)
                        && nodes[*at].same_domain(node, &weighted.term.topology_key)
                })
                .count() as i64;
            sign * weighted.weight * count
        })
        .sum()
}

/// Per constraint of `kind`: (constraint, matching instances per domain of
/// the eligible nodes, the domains of the eligible nodes).
fn spread_counts<'a>(
    nodes: &[ModelNode],
    placed: &[Placed],
    req: &'a InstanceRequest,
    kind: WhenUnsatisfiable,
) -> Vec<(
    &'a TopologySpreadConstraint,
    BTreeMap<String, u64>,
    BTreeSet<String>,
)> {
    let constraints: Vec<&TopologySpreadConstraint> = req
        .topology_spread
        .iter()
        .filter(|constraint| constraint.when_unsatisfiable == kind)
        .collect();
    let eligible = |node: &ModelNode| {
        NodeSelector.unfit_reasons(req, &node.view()).is_empty()
            && RequiredNodeAffinity
                .unfit_reasons(req, &node.view())
                .is_empty()
            && constraints
                .iter()
                .all(|constraint| node.label(&constraint.topology_key).is_some())
    };
    constraints
        .iter()
        .map(|constraint| {
            let key = &constraint.topology_key;
            let mut counts = BTreeMap::new();
            let mut domains = BTreeSet::new();
            for node in nodes.iter().filter(|node| eligible(node)) {
                domains.insert(node.label(key).cloned().unwrap_or_default());
            }
            for (at, other) in placed {
                let node = &nodes[*at];
                let selected = other.namespace == req.namespace
                    && constraint
                        .label_selector
                        .as_ref()
                        .is_some_and(|selector| selector.matches(&other.labels));
                if selected && eligible(node) {
                    *counts
                        .entry(node.label(key).cloned().unwrap_or_default())
                        .or_default() += 1;
                }
            }
            (*constraint, counts, domains)
        })
        .collect()
}

/// Scans every node; returns the index of the best one, if any: highest
/// total score (with the normalised inter-instance and spread scores),
/// then the exactly smaller (best fit) or larger (spread) leftover, then
/// the smallest name.
fn brute_force(
    nodes: &[ModelNode],
    placed: &[Placed],
    req: &InstanceRequest,
    policy: &Policy,
    with_embedder: bool,
) -> Option<usize> {
    let hard = spread_counts(nodes, placed, req, WhenUnsatisfiable::DoNotSchedule);
    let soft = spread_counts(nodes, placed, req, WhenUnsatisfiable::ScheduleAnyway);
    let spread_refuses = |node: &ModelNode| {
        hard.iter().any(|(constraint, counts, domains)| {
            let Some(value) = node.label(&constraint.topology_key) else {
                return true;
            };
            let Some(fewest) = domains
                .iter()
                .map(|domain| counts.get(domain).copied().unwrap_or(0))
                .min()
            else {
                return false;
            };
            let selected = constraint
                .label_selector
                .as_ref()
                .is_some_and(|selector| selector.matches(&req.labels));
            let skew = (counts.get(value).copied().unwrap_or(0) + u64::from(selected))
                .saturating_sub(fewest);
            skew > u64::from(constraint.max_skew)
        })
    };
    let spread_raw = |node: &ModelNode| -> Option<i64> {
        soft.iter()
            .map(|(constraint, counts, _)| {
                let value = node.label(&constraint.topology_key)?;
                Some(counts.get(value).copied().unwrap_or(0) as i64)
            })
            .sum()
    };
    let feasible: Vec<usize> = (0..nodes.len())
        .filter(|&index| {
            let node = &nodes[index];
            node.fits(req, policy, with_embedder)
                && !(policy.filter_enabled(filter_names::INTER_INSTANCE_AFFINITY)
                    && instance_affinity_refuses(nodes, placed, req, node))
                && !(policy.filter_enabled(filter_names::TOPOLOGY_SPREAD) && spread_refuses(node))
        })
        .collect();
    let affinity: Vec<i64> = feasible
        .iter()
        .map(|&index| instance_affinity_raw(nodes, placed, req, &nodes[index]))
        .collect();
    let spread: Vec<Option<i64>> = feasible
        .iter()
        .map(|&index| spread_raw(&nodes[index]))
        .collect();
    let (affinity_low, affinity_high) = (
        affinity.iter().copied().min().unwrap_or(0),
        affinity.iter().copied().max().unwrap_or(0),
    );
    let scored_spread = spread.iter().flatten().copied();
    let (spread_low, spread_high) = (
        scored_spread.clone().min().unwrap_or(0),
        scored_spread.max().unwrap_or(0),
    );
    let total = |position: usize| {
        let index = feasible[position];
        let affinity = if affinity_high > affinity_low {
            MAX_NODE_SCORE * (affinity[position] - affinity_low) / (affinity_high - affinity_low)
        } else {
            0
        };
        let spread = match spread[position] {
            None => 0,
            Some(_) if spread_high == 0 => MAX_NODE_SCORE,
            Some(raw) => MAX_NODE_SCORE * (spread_high + spread_low - raw) / spread_high,
        };
        nodes[index].total_score(req, policy, with_embedder)
            + policy.weight(scorer_names::INTER_INSTANCE_AFFINITY) * affinity
            + policy.weight(scorer_names::TOPOLOGY_SPREAD) * spread
    };
    let mut best: Option<usize> = None;
    for position in 0..feasible.len() {
        let better = best.is_none_or(|best_position| {
            let (node, best_node) = (&nodes[feasible[position]], &nodes[feasible[best_position]]);
            let (numerator, denominator) = node.leftover(req);
            let (best_numerator, best_denominator) = best_node.leftover(req);
            let by_leftover = (numerator * best_denominator).cmp(&(best_numerator * denominator));
            let by_leftover = match req.strategy {
                PlacementStrategy::BestFit => by_leftover,
                PlacementStrategy::Spread => by_leftover.reverse(),
            };
            total(best_position)
                .cmp(&total(position))
                .then(by_leftover)
                .then_with(|| node.info.name.cmp(&best_node.info.name))
                == Ordering::Less
        });
        if better {
            best = Some(position);
        }
    }
    best.map(|position| feasible[position])
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

/// The name of the node at `index`: out of insertion order, to exercise
/// the tie-break.
fn node_name(index: usize) -> String {
    format!("node-{:02}", (index * 7) % 13)
}

/// A node's hostname label: its own name mostly, sometimes one shared with
/// other nodes, sometimes none.
#[derive(Clone, Copy, Debug)]
enum Hostname {
    Own,
    Shared,
    Missing,
}

fn hostname_strategy() -> impl Strategy<Value = Hostname> {
    prop_oneof![8 => Just(Hostname::Own), 1 => Just(Hostname::Shared), 1 => Just(Hostname::Missing)]
}

/// Up to 12 nodes drawn from up to 3 allocatable shapes, with random zone
/// and hostname labels, drivers, taints and readiness.
fn cluster_strategy() -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::vec(allocatable_strategy(), 1..=3).prop_flat_map(|shapes| {
        let shape_count = shapes.len();
        prop::collection::vec(
            (
                0..shape_count,
                zone_strategy(),
                hostname_strategy(),
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
                .map(|(index, (shape, zone, hostname, drivers, ready, taints))| {
                    let name = node_name(index);
                    let mut labels = BTreeMap::new();
                    if let Some(zone) = zone {
                        labels.insert("zone".to_owned(), zone);
                    }
                    match hostname {
                        Hostname::Own => {
                            labels.insert(HOSTNAME_LABEL.to_owned(), name.clone());
                        }
                        Hostname::Shared => {
                            labels.insert(HOSTNAME_LABEL.to_owned(), "shared".to_owned());
                        }
                        Hostname::Missing => {}
                    }
                    NodeInfo {
                        name,
                        allocatable: shapes[shape].clone(),
                        taints,
                        labels,
                        drivers: drivers.into_iter().collect::<BTreeSet<_>>(),
                        ready,
                    }
                })
                .collect()
        })
    })
}

/// A node name or hostname a request may pin: some exist, one is shared,
/// one is nobody's.
fn pinned_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..12usize).prop_map(node_name),
        Just("shared".to_owned()),
        Just("nobody".to_owned()),
    ]
}

/// Node affinity on the hostname label or the name.
fn pin_term_strategy() -> impl Strategy<Value = NodeSelectorTerm> {
    (
        prop::bool::ANY,
        prop_oneof![
            3 => Just(NodeSelectorOperator::In),
            2 => Just(NodeSelectorOperator::NotIn),
            1 => Just(NodeSelectorOperator::Exists),
            1 => Just(NodeSelectorOperator::DoesNotExist),
        ],
        prop::collection::vec(pinned_strategy(), 1..=2),
    )
        .prop_map(|(by_field, operator, values)| {
            if by_field {
                let operator = if operator == NodeSelectorOperator::NotIn {
                    operator
                } else {
                    NodeSelectorOperator::In
                };
                NodeSelectorTerm {
                    match_fields: vec![NodeSelectorRequirement {
                        key: NODE_NAME_FIELD.to_owned(),
                        operator,
                        values,
                    }],
                    ..NodeSelectorTerm::default()
                }
            } else {
                NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: HOSTNAME_LABEL.to_owned(),
                        operator,
                        values,
                    }],
                    ..NodeSelectorTerm::default()
                }
            }
        })
}

fn app_strategy() -> impl Strategy<Value = String> {
    prop_oneof![Just("web".to_owned()), Just("db".to_owned())]
}

fn namespace_strategy() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just("a".to_owned()), 1 => Just("b".to_owned())]
}

fn selector_strategy() -> impl Strategy<Value = Option<LabelSelector>> {
    prop_oneof![
        4 => app_strategy().prop_map(|app| Some(LabelSelector {
            match_labels: BTreeMap::from([("app".to_owned(), app)]),
            ..LabelSelector::default()
        })),
        2 => (
            prop_oneof![
                Just(LabelSelectorOperator::In),
                Just(LabelSelectorOperator::NotIn),
                Just(LabelSelectorOperator::Exists),
                Just(LabelSelectorOperator::DoesNotExist),
            ],
            app_strategy(),
        )
            .prop_map(|(operator, app)| Some(LabelSelector {
                match_expressions: vec![LabelSelectorRequirement {
                    key: "app".to_owned(),
                    operator,
                    values: vec![app],
                }],
                ..LabelSelector::default()
            })),
        1 => Just(Some(LabelSelector::default())),
        1 => Just(None),
    ]
}

fn topology_key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![Just(HOSTNAME_LABEL.to_owned()), Just("zone".to_owned())]
}

fn instance_term_strategy() -> impl Strategy<Value = InstanceAffinityTerm> {
    (
        selector_strategy(),
        prop_oneof![
            4 => Just((Vec::new(), false)),
            1 => Just((vec!["b".to_owned()], false)),
            1 => Just((Vec::new(), true)),
        ],
        topology_key_strategy(),
    )
        .prop_map(
            |(label_selector, (namespaces, all_namespaces), topology_key)| InstanceAffinityTerm {
                label_selector,
                namespaces,
                all_namespaces,
                topology_key,
            },
        )
}

fn weighted_term_strategy() -> impl Strategy<Value = WeightedInstanceAffinityTerm> {
    (1..=100i64, instance_term_strategy())
        .prop_map(|(weight, term)| WeightedInstanceAffinityTerm { weight, term })
}

fn spread_strategy() -> impl Strategy<Value = TopologySpreadConstraint> {
    (
        1..=2u32,
        topology_key_strategy(),
        prop_oneof![
            Just(WhenUnsatisfiable::DoNotSchedule),
            Just(WhenUnsatisfiable::ScheduleAnyway)
        ],
        selector_strategy(),
    )
        .prop_map(
            |(max_skew, topology_key, when_unsatisfiable, label_selector)| {
                TopologySpreadConstraint {
                    max_skew,
                    topology_key,
                    when_unsatisfiable,
                    label_selector,
                }
            },
        )
}

/// What an instance says about other instances: its namespace and labels,
/// (anti-)affinity terms and spread constraints, each mostly absent.
#[derive(Clone, Debug, Default)]
struct InstanceRules {
    namespace: String,
    app: Option<String>,
    required_affinity: Vec<InstanceAffinityTerm>,
    required_anti_affinity: Vec<InstanceAffinityTerm>,
    preferred_affinity: Vec<WeightedInstanceAffinityTerm>,
    preferred_anti_affinity: Vec<WeightedInstanceAffinityTerm>,
    spread: Vec<TopologySpreadConstraint>,
}

fn instance_rules_strategy() -> impl Strategy<Value = InstanceRules> {
    let sometimes =
        |strategy: BoxedStrategy<InstanceAffinityTerm>| prop::collection::vec(strategy, 0..=1);
    (
        namespace_strategy(),
        prop::option::weighted(0.8, app_strategy()),
        prop_oneof![3 => Just(0usize), 1 => 1..=2usize],
        sometimes(instance_term_strategy().boxed()),
        prop::collection::vec(weighted_term_strategy(), 0..=1),
        prop::collection::vec(weighted_term_strategy(), 0..=1),
        prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(spread_strategy(), 1..=2)],
        instance_term_strategy(),
    )
        .prop_map(
            |(
                namespace,
                app,
                affinity_terms,
                required_anti_affinity,
                preferred_affinity,
                preferred_anti_affinity,
                spread,
                affinity_term,
            )| {
                // Required affinity on the instance's own app half the time,
                // so groups that attract themselves get placed.
                let required_affinity = (0..affinity_terms)
                    .map(|index| match (&app, index) {
                        (Some(app), 0) => InstanceAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: BTreeMap::from([("app".to_owned(), app.clone())]),
                                ..LabelSelector::default()
                            }),
                            ..affinity_term.clone()
                        },
                        _ => affinity_term.clone(),
                    })
                    .collect();
                InstanceRules {
                    namespace,
                    app,
                    required_affinity,
                    required_anti_affinity,
                    preferred_affinity,
                    preferred_anti_affinity,
                    spread,
                }
            },
        )
}

fn request_strategy() -> impl Strategy<Value = InstanceRequest> {
    (
        prop_oneof![Just(0u64), 1..=2000u64],
        prop_oneof![Just(0u64), 1..=2048u64],
        zone_strategy(),
        prop::option::weighted(0.8, driver_strategy()),
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
        (
            prop::option::weighted(0.1, pinned_strategy()),
            prop::collection::vec(pin_term_strategy(), 0..=1),
            prop::collection::vec((1..=100i64, pin_term_strategy()), 0..=1),
            prop_oneof![1 => Just(InstanceRules::default()), 3 => instance_rules_strategy()],
        ),
    )
        .prop_map(
            |(
                cpu_millis,
                memory_bytes,
                zone,
                driver,
                (ephemeral_storage_bytes, gpus, tolerations, port, strategy, required, preferred),
                (pinned_host, required_pins, preferred_pins, rules),
            )| {
                let mut node_selector: BTreeMap<String, String> = zone
                    .map(|zone| BTreeMap::from([("zone".to_owned(), zone)]))
                    .unwrap_or_default();
                if let Some(host) = pinned_host {
                    node_selector.insert(HOSTNAME_LABEL.to_owned(), host);
                }
                // Terms are ORed: a pin joins the zone terms as one more.
                let mut required_affinity = required;
                required_affinity.extend(required_pins);
                let preferred_affinity = preferred
                    .into_iter()
                    .chain(preferred_pins)
                    .map(|(weight, preference)| PreferredSchedulingTerm { weight, preference })
                    .collect();
                InstanceRequest {
                    cpu_millis,
                    memory_bytes,
                    ephemeral_storage_bytes,
                    extended: if gpus > 0 {
                        BTreeMap::from([(GPU.to_owned(), gpus)])
                    } else {
                        BTreeMap::new()
                    },
                    node_selector,
                    required_affinity,
                    preferred_affinity,
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
                    namespace: rules.namespace,
                    labels: rules
                        .app
                        .map(|app| BTreeMap::from([("app".to_owned(), app)]))
                        .unwrap_or_default(),
                    required_instance_affinity: rules.required_affinity,
                    required_instance_anti_affinity: rules.required_anti_affinity,
                    preferred_instance_affinity: rules.preferred_affinity,
                    preferred_instance_anti_affinity: rules.preferred_anti_affinity,
                    topology_spread: rules.spread,
                    volume_nodes: None,
                }
            },
        )
}

/// The default policy mostly; else random weights (0 to 3) and disabled
/// non-mandatory filters and scorers.
fn policy_strategy() -> impl Strategy<Value = Policy> {
    let optional_filters: Vec<&str> = FILTERS
        .into_iter()
        .filter(|name| !MANDATORY_FILTERS.contains(name))
        .collect();
    prop_oneof![
        2 => Just(Policy::default()),
        1 => (
            prop::collection::vec(0..=3i64, SCORERS.len()),
            prop::collection::vec(prop::bool::weighted(0.2), optional_filters.len()),
            prop::collection::vec(prop::bool::weighted(0.1), SCORERS.len()),
        )
            .prop_map(move |(weights, disable_filters, disable_scorers)| Policy {
                weights: SCORERS
                    .iter()
                    .map(|name| (*name).to_owned())
                    .zip(weights)
                    .collect(),
                disabled_filters: optional_filters
                    .iter()
                    .zip(disable_filters)
                    .filter(|(_, disabled)| *disabled)
                    .map(|(name, _)| (*name).to_owned())
                    .collect(),
                disabled_scorers: SCORERS
                    .iter()
                    .zip(disable_scorers)
                    .filter(|(_, disabled)| *disabled)
                    .map(|(name, _)| (*name).to_owned())
                    .collect(),
                ..Policy::default()
            }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => request_strategy().prop_map(|req| Step::Place(Box::new(req))),
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
        zone_per_node in prop::bool::weighted(0.25),
        policy in policy_strategy(),
    ) {
        let mut snapshot = ClusterSnapshot::new();
        if zone_per_node {
            snapshot.set_per_node_label_keys([HOSTNAME_LABEL, "zone"]);
        }
        snapshot.set_policy(&policy);
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
        let mut placed: Vec<Placed> = Vec::new();

        for step in steps {
            match step {
                Step::Place(req) => {
                    let req = *req;
                    let expected = brute_force(&model, &placed, &req, &policy, with_embedder);
                    match (snapshot.place(&req), expected) {
                        (Ok(name), Some(index)) => {
                            prop_assert_eq!(&name, &model[index].info.name);
                            if policy == Policy::default() {
                                prop_assert!(
                                    !instance_affinity_refuses(&model, &placed, &req, &model[index]),
                                    "a required inter-instance rule is broken"
                                );
                            }
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
