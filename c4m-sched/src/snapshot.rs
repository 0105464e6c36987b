//! The cluster snapshot and placement through the filter/scorer pipeline.
//!
//! Nodes are grouped into *shape classes*: nodes with the same labels
//! (but the per-node ones, such as the hostname, of which only the key
//! counts), drivers, taints and allocatable resources. Class-scoped filters
//! and scorers run once per class, and inside a class every node's leftover
//! shares one denominator, so an ordered index by leftover numerator finds
//! the tightest (or loosest) node in O(log n) plus the nodes skipped for
//! failing a node-scoped check (a short dimension, a taken host port, an
//! embedder's node filter).
//!
//! A request's label rules (node selector and affinity, inter-instance
//! affinity, topology spread) are counted once per placement
//! ([`rules::RequestRules`]); a class's generic node answers them for every
//! member except the few whose per-node label, name or topology domain the
//! request names, which are judged one by one. Only an embedder's
//! node-scoped scorer (or a numeric comparison on a per-node label) forces a
//! scan of every node.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use crate::filters::{DriverOffered, HostPorts, ResourcesFit, TaintToleration, VolumeBinding};
use crate::fit::{Leftover, Scale};
use crate::instance_affinity::{HOSTNAME_LABEL, InstanceAffinityTerm};
use crate::labels::NodeFacts;
use crate::model::{HostPort, InstanceRequest, NodeInfo, Resources, Strategy};
use crate::pipeline::{Filter, NodeView, Scope, Scorer};
use crate::policy::{Policy, filter_names, scorer_names};
use crate::scorers::{MAX_NODE_SCORE, PreferNoScheduleTaints, fit_score};
use crate::taint::Taint;
use crate::unschedulable::{UnfitReason, Unschedulable};
use crate::wide::Wide;
use instances::{InstanceBook, Member};
use rules::{RequestRules, RuleScores};

/// Identifies a shape class for the lifetime of the snapshot.
type ClassId = u64;

/// Built-in filters checked per node. On the fast path the index does their
/// work unless the request needs more than CPU, memory and a slot. Both are
/// mandatory.
const NODE_FILTERS: [&dyn Filter; 3] = [&ResourcesFit, &HostPorts, &VolumeBinding];

/// What a class-scoped view shows as allocated: nothing.
static NOTHING_USED: Resources = Resources {
    cpu_millis: 0,
    memory_bytes: 0,
    ephemeral_storage_bytes: 0,
    instances: 0,
    extended: BTreeMap::new(),
};

/// What a class-scoped view shows as taken host ports: none.
static NO_HOST_PORTS: BTreeMap<HostPort, usize> = BTreeMap::new();

/// The policy as placement reads it: switches and weights by plugin.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    node_selector: bool,
    node_affinity: bool,
    taint_toleration: bool,
    instance_affinity: bool,
    topology_spread: bool,
    fit_weight: i64,
    node_affinity_weight: i64,
    taint_toleration_weight: i64,
    instance_affinity_weight: i64,
    topology_spread_weight: i64,
    percentage_of_nodes_to_score: u8,
}

impl Knobs {
    fn of(policy: &Policy) -> Self {
        Self {
            node_selector: policy.filter_enabled(filter_names::NODE_SELECTOR),
            node_affinity: policy.filter_enabled(filter_names::NODE_AFFINITY),
            taint_toleration: policy.filter_enabled(filter_names::TAINT_TOLERATION),
            instance_affinity: policy.filter_enabled(filter_names::INTER_INSTANCE_AFFINITY),
            topology_spread: policy.filter_enabled(filter_names::TOPOLOGY_SPREAD),
            fit_weight: policy.weight(scorer_names::FIT),
            node_affinity_weight: policy.weight(scorer_names::NODE_AFFINITY),
            taint_toleration_weight: policy.weight(scorer_names::TAINT_TOLERATION),
            instance_affinity_weight: policy.weight(scorer_names::INTER_INSTANCE_AFFINITY),
            topology_spread_weight: policy.weight(scorer_names::TOPOLOGY_SPREAD),
            percentage_of_nodes_to_score: policy.percentage_of_nodes_to_score.clamp(1, 100),
        }
    }
}

/// What makes nodes interchangeable for class-scoped filters and scorers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    /// The labels but the per-node ones.
    labels: BTreeMap<String, String>,
    /// The per-node label keys the nodes carry (each with its own value).
    per_node_keys: BTreeSet<String>,
    drivers: BTreeSet<String>,
    taints: Vec<Taint>,
    allocatable: Resources,
}

/// A schedulable node in its class's index, ordered by free-capacity
/// numerator then name (names are unique, so the free amounts never decide).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct IndexEntry {
    free_numerator: Wide,
    name: Arc<str>,
    free_cpu: u64,
    free_memory: u64,
}

/// The nodes of one shape.
#[derive(Debug)]
struct ShapeClass {
    shape: Shape,
    /// The shape as a nameless, ready node without per-node labels, for
    /// class-scoped views.
    template: NodeInfo,
    scale: Scale,
    /// All nodes of this shape, schedulable or not; the class goes when it
    /// empties.
    members: BTreeSet<Arc<str>>,
    /// Ready nodes with a free instance slot.
    index: BTreeSet<IndexEntry>,
}

impl ShapeClass {
    /// Takes `node` out of the index (before its state changes).
    fn unindex(&mut self, node: &NodeState) {
        if let Some(entry) = node.index_entry(self.scale) {
            self.index.remove(&entry);
        }
    }

    /// Puts `node` in the index if it can take an instance.
    fn reindex(&mut self, node: &NodeState) {
        if let Some(entry) = node.index_entry(self.scale) {
            self.index.insert(entry);
        }
    }

    fn view(&self) -> NodeView<'_> {
        NodeView {
            info: &self.template,
            used: &NOTHING_USED,
            host_ports_in_use: &NO_HOST_PORTS,
        }
    }

    /// The node standing for every member whose per-node labels the
    /// request does not name.
    fn generic_facts(&self) -> NodeFacts<'_> {
        NodeFacts::generic(&self.template.labels, &self.shape.per_node_keys)
    }
}

/// What is allocated on a node; it moves with the node when its
/// description is replaced.
#[derive(Debug, Default)]
struct Allocations {
    used: Resources,
    host_ports: BTreeMap<HostPort, usize>,
    /// The recorded instances (see [`ClusterSnapshot::allocate_instance`]),
    /// by priority then id: the order victims are considered in.
    placed: BTreeMap<(i32, Arc<str>), PlacedRecord>,
}

/// What a recorded instance took, to give back and to weigh as a victim.
#[derive(Debug)]
struct PlacedRecord {
    resources: Resources,
    host_ports: Vec<HostPort>,
    disruption_budget: Option<Arc<str>>,
    /// What it put on the instance book.
    namespace: String,
    labels: BTreeMap<String, String>,
    anti_affinity: Vec<InstanceAffinityTerm>,
}

impl PlacedRecord {
    fn member(&self) -> Member<'_> {
        Member {
            namespace: &self.namespace,
            labels: &self.labels,
            anti_affinity: &self.anti_affinity,
        }
    }
}

/// What `req` puts on the instance book.
fn member_of(req: &InstanceRequest) -> Member<'_> {
    Member {
        namespace: &req.namespace,
        labels: &req.labels,
        anti_affinity: &req.required_instance_anti_affinity,
    }
}

/// Where a recorded instance is, to find it by id alone.
#[derive(Debug)]
struct PlacedAt {
    node: Arc<str>,
    priority: i32,
}

/// One node with what is allocated on it.
#[derive(Debug)]
struct NodeState {
    name: Arc<str>,
    info: NodeInfo,
    used: Resources,
    host_ports: BTreeMap<HostPort, usize>,
    placed: BTreeMap<(i32, Arc<str>), PlacedRecord>,
    class: ClassId,
}

impl NodeState {
    fn view(&self) -> NodeView<'_> {
        NodeView {
            info: &self.info,
            used: &self.used,
            host_ports_in_use: &self.host_ports,
        }
    }

    fn facts(&self) -> NodeFacts<'_> {
        NodeFacts::node(&self.name, &self.info.labels)
    }

    fn free(&self) -> Resources {
        self.info.allocatable.saturating_sub(&self.used)
    }

    /// Free CPU and memory, if the node is ready with a free instance slot.
    fn free_cpu_memory(&self) -> Option<(u64, u64)> {
        let (allocatable, used) = (&self.info.allocatable, &self.used);
        (self.info.ready && allocatable.instances > used.instances).then(|| {
            (
                allocatable.cpu_millis.saturating_sub(used.cpu_millis),
                allocatable.memory_bytes.saturating_sub(used.memory_bytes),
            )
        })
    }

    /// The node's entry in its class index, if it can take any instance.
    fn index_entry(&self, scale: Scale) -> Option<IndexEntry> {
        self.free_cpu_memory()
            .map(|(free_cpu, free_memory)| IndexEntry {
                free_numerator: scale.numerator(free_cpu, free_memory),
                name: Arc::clone(&self.name),
                free_cpu,
                free_memory,
            })
    }
}

/// Takes `resources` and `ports` off what a node uses.
fn subtract_allocation(
    used: &mut Resources,
    host_ports_in_use: &mut BTreeMap<HostPort, usize>,
    resources: &Resources,
    ports: &[HostPort],
) {
    *used = used.saturating_sub(resources);
    for port in ports {
        if let Entry::Occupied(mut taken) = host_ports_in_use.entry(*port) {
            *taken.get_mut() -= 1;
            if *taken.get() == 0 {
                taken.remove();
            }
        }
    }
}

/// A feasible node and its scores, before the normalised ones are known.
#[derive(Debug)]
struct Candidate<'a> {
    name: &'a Arc<str>,
    leftover: Leftover,
    /// Every weighted score but fit and the normalised ones.
    weighted: i64,
    /// Raw preferred inter-instance affinity.
    instance_affinity: i64,
    /// Raw `ScheduleAnyway` spread count; `None` for a node lacking a key.
    spread: Option<i64>,
}

/// `MAX_NODE_SCORE * numerator / denominator`, rounded down, without
/// overflow (the quotient is within 0..=MAX_NODE_SCORE).
fn scaled(numerator: i128, denominator: i128) -> i64 {
    i64::try_from(i128::from(MAX_NODE_SCORE) * numerator / denominator).unwrap_or(0)
}

/// Normalises the raw scores of the candidates as kube-scheduler does,
/// then picks the best: the highest total, then the exactly tighter (best
/// fit) or looser (spread) leftover, then the smallest name.
///
/// Inter-instance affinity: `MAX * (raw - min) / (max - min)` (0 when all
/// are equal). Spread: `MAX * (max + min - raw) / max` (`MAX` when `max`
/// is 0), 0 for a node lacking a key.
fn pick<'a>(
    candidates: &[Candidate<'a>],
    req: &InstanceRequest,
    knobs: &Knobs,
) -> Option<&'a Arc<str>> {
    let bounds = |values: &mut dyn Iterator<Item = i64>| {
        values.fold(None, |bounds: Option<(i64, i64)>, value| {
            Some(bounds.map_or((value, value), |(low, high)| {
                (low.min(value), high.max(value))
            }))
        })
    };
    let affinity = bounds(&mut candidates.iter().map(|c| c.instance_affinity));
    let spread = bounds(&mut candidates.iter().filter_map(|c| c.spread));
    let total = |candidate: &Candidate<'_>| {
        let affinity = match affinity {
            Some((low, high)) if high > low => scaled(
                i128::from(candidate.instance_affinity) - i128::from(low),
                i128::from(high) - i128::from(low),
            ),
            _ => 0,
        };
        let spread = match (candidate.spread, spread) {
            (Some(_), Some((_, 0))) => MAX_NODE_SCORE,
            (Some(raw), Some((low, high))) => scaled(
                i128::from(high) + i128::from(low) - i128::from(raw),
                i128::from(high),
            ),
            _ => 0,
        };
        candidate
            .weighted
            .saturating_add(
                knobs
                    .fit_weight
                    .saturating_mul(fit_score(req.strategy, &candidate.leftover)),
            )
            .saturating_add(knobs.instance_affinity_weight.saturating_mul(affinity))
            .saturating_add(knobs.topology_spread_weight.saturating_mul(spread))
    };
    let ranked = candidates
        .iter()
        .map(|candidate| (total(candidate), candidate));
    let best = ranked.reduce(|best, next| {
        let by_leftover = match req.strategy {
            Strategy::BestFit => next.1.leftover.cmp(&best.1.leftover),
            Strategy::Spread => best.1.leftover.cmp(&next.1.leftover),
        };
        let next_first = best
            .0
            .cmp(&next.0)
            .then(by_leftover)
            .then_with(|| next.1.name.cmp(best.1.name))
            == Ordering::Less;
        if next_first { next } else { best }
    });
    best.map(|(_, candidate)| candidate.name)
}

/// An embedder's filter or scorer with its scope, read once at registration.
#[derive(Debug)]
struct Scoped<T: ?Sized> {
    scope: Scope,
    weight: i64,
    extension: Box<T>,
}

/// The nodes of a cluster, what is allocated on each and which instances
/// run there; places instances through a pipeline of filters and scorers.
///
/// A node can take an instance if it is ready and passes every filter: the
/// built-in [`crate::NodeSelector`], [`crate::RequiredNodeAffinity`],
/// [`TaintToleration`], [`DriverOffered`], [`ResourcesFit`], [`HostPorts`],
/// inter-instance affinity and anti-affinity (the request's required terms,
/// and the required anti-affinity terms of the instances in the node's
/// domains), `DoNotSchedule` topology spread, then those added with
/// [`ClusterSnapshot::add_filter`]. Among those, the highest total of
/// weight × score wins: the request's strategy scorer ([`crate::BestFit`]
/// or [`crate::Spread`]), [`crate::PreferredNodeAffinity`],
/// [`PreferNoScheduleTaints`], preferred inter-instance affinity and
/// `ScheduleAnyway` topology spread (both normalised over the feasible
/// nodes to 0..=[`MAX_NODE_SCORE`] as kube-scheduler does; only the
/// incoming instance's preferred terms count, not those of the instances
/// already placed), weighted by the [`Policy`] (1 each by default), then
/// those added with [`ClusterSnapshot::add_scorer`]. Equal totals go to
/// the node with the exactly smaller (best fit) or larger (spread) leftover
/// `(free_cpu - cpu) / allocatable_cpu + (free_memory - memory) / allocatable_memory`
/// (a dimension with zero allocatable adds 0), then to the smallest name.
///
/// Every instance accounted ([`ClusterSnapshot::allocate`],
/// [`ClusterSnapshot::allocate_instance`], [`ClusterSnapshot::place`]) is
/// counted with its namespace, labels and required anti-affinity terms
/// until released.
#[derive(Debug)]
pub struct ClusterSnapshot {
    nodes: HashMap<Arc<str>, NodeState>,
    class_ids: BTreeMap<Shape, ClassId>,
    classes: HashMap<ClassId, ShapeClass>,
    next_class_id: ClassId,
    /// The smallest name, kept to build index range bounds without allocating.
    lowest_name: Arc<str>,
    /// Every node name in order: preemption and the full scan visit nodes
    /// by name.
    names: BTreeSet<Arc<str>>,
    /// Label keys whose values are per node: left out of class shapes.
    per_node_label_keys: BTreeSet<String>,
    /// For each per-node label key, the nodes by value.
    per_node_values: HashMap<String, HashMap<String, BTreeSet<Arc<str>>>>,
    /// The accounted instances, for inter-instance rules.
    instances: InstanceBook,
    /// The recorded instances by id.
    placed_at: HashMap<Arc<str>, PlacedAt>,
    /// How many recorded instances have each priority: the lowest one bounds
    /// how cheap a preemption can be.
    priority_counts: BTreeMap<i32, usize>,
    filters: Vec<Scoped<dyn Filter>>,
    scorers: Vec<Scoped<dyn Scorer>>,
    policy: Policy,
    knobs: Knobs,
}

impl Default for ClusterSnapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterSnapshot {
    /// An empty cluster with the built-in pipeline, the default [`Policy`]
    /// and [`HOSTNAME_LABEL`] as the per-node label key.
    pub fn new() -> Self {
        let policy = Policy::default();
        Self {
            nodes: HashMap::default(),
            class_ids: BTreeMap::new(),
            classes: HashMap::default(),
            next_class_id: 0,
            lowest_name: Arc::from(""),
            names: BTreeSet::new(),
            per_node_label_keys: BTreeSet::from([HOSTNAME_LABEL.to_owned()]),
            per_node_values: HashMap::default(),
            instances: InstanceBook::default(),
            placed_at: HashMap::default(),
            priority_counts: BTreeMap::new(),
            filters: Vec::new(),
            scorers: Vec::new(),
            knobs: Knobs::of(&policy),
            policy,
        }
    }

    /// Applies `policy` (assumed valid, see [`Policy::validate`]) to later
    /// placements: disabled filters and scorers are skipped, the built-in
    /// scorers weigh [`Policy::weight`], and
    /// [`Policy::percentage_of_nodes_to_score`] bounds the full scan (see
    /// [`ClusterSnapshot::place`]). The default strategy is the caller's to
    /// apply when it fills [`InstanceRequest::strategy`].
    pub fn set_policy(&mut self, policy: &Policy) {
        self.knobs = Knobs::of(policy);
        self.policy = policy.clone();
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Sets the label keys whose values differ from node to node (default:
    /// [`HOSTNAME_LABEL`]). They are left out of the class shapes, so that
    /// nodes differing only there share a class; requests naming them are
    /// still judged exactly, per node. Regroups every node.
    pub fn set_per_node_label_keys<K: Into<String>>(&mut self, keys: impl IntoIterator<Item = K>) {
        let names: Vec<Arc<str>> = self.names.iter().cloned().collect();
        let detached: Vec<NodeState> = names.iter().filter_map(|name| self.detach(name)).collect();
        self.per_node_label_keys = keys.into_iter().map(Into::into).collect();
        for node in detached {
            self.attach(
                node.info,
                Allocations {
                    used: node.used,
                    host_ports: node.host_ports,
                    placed: node.placed,
                },
            );
        }
    }

    /// The per-node label keys (see [`ClusterSnapshot::set_per_node_label_keys`]).
    pub fn per_node_label_keys(&self) -> &BTreeSet<String> {
        &self.per_node_label_keys
    }

    /// Number of node classes: nodes sharing their labels (per-node ones
    /// aside), drivers, taints and allocatable share one.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// Adds a filter after the built-in ones. A [`Scope::Node`] filter is
    /// checked on each candidate while walking the class indexes. A
    /// [`Scope::Class`] filter sees a class's shared labels only (no
    /// per-node labels, no name).
    pub fn add_filter(&mut self, filter: impl Filter + 'static) {
        self.filters.push(Scoped {
            scope: filter.scope(),
            weight: 1,
            extension: Box::new(filter),
        });
    }

    /// Adds a scorer whose score counts `weight` times. A [`Scope::Node`]
    /// scorer makes every placement scan all fitting nodes.
    pub fn add_scorer(&mut self, weight: i64, scorer: impl Scorer + 'static) {
        self.scorers.push(Scoped {
            scope: scorer.scope(),
            weight,
            extension: Box::new(scorer),
        });
    }

    /// Adds a node or replaces its description, keeping what is already
    /// allocated on it (a node that shrank below that is over-committed:
    /// nothing is free in that dimension until enough is released).
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let allocations = self
            .detach(&node.name)
            .map(|old| Allocations {
                used: old.used,
                host_ports: old.host_ports,
                placed: old.placed,
            })
            .unwrap_or_default();
        self.attach(node, allocations);
    }

    /// Forgets a node and its allocations, recorded instances included;
    /// unknown names are ignored.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(node) = self.detach(name) {
            self.instances.remove_node(name);
            for (priority, id) in node.placed.keys() {
                self.placed_at.remove(id);
                self.forget_priority(*priority);
            }
        }
    }

    /// Accounts an instance already bound to `node`, with its resources,
    /// host ports, namespace, labels and required anti-affinity. Returns
    /// whether it fit (resources and host ports); it is counted either way,
    /// because it runs there regardless. Returns false and counts nothing
    /// if the node is unknown.
    pub fn allocate(&mut self, node: &str, req: &InstanceRequest) -> bool {
        let Some(name) = self
            .nodes
            .get_key_value(node)
            .map(|(name, _)| Arc::clone(name))
        else {
            return false;
        };
        self.instances.add(&name, member_of(req));
        self.update_node(node, |state| {
            let view = state.view();
            let fits = NODE_FILTERS
                .iter()
                .all(|filter| filter.unfit_reasons(req, &view).is_empty());
            state.used = state.used.saturating_add(&req.resources());
            for port in &req.host_ports {
                *state.host_ports.entry(*port).or_default() += 1;
            }
            fits
        })
        .unwrap_or(false)
    }

    /// Gives back what `req` took on `node` and forgets it there; unknown
    /// names are ignored.
    pub fn release(&mut self, node: &str, req: &InstanceRequest) {
        if self.nodes.contains_key(node) {
            self.instances.remove(node, member_of(req));
        }
        self.give_back(node, &req.resources(), &req.host_ports);
    }

    /// Subtracts `resources` and `host_ports` from what `node` uses.
    fn give_back(&mut self, node: &str, resources: &Resources, host_ports: &[HostPort]) {
        self.update_node(node, |state| {
            subtract_allocation(
                &mut state.used,
                &mut state.host_ports,
                resources,
                host_ports,
            );
        });
    }

    /// Picks the best node for `req`, allocates it there and returns the
    /// node's name; or explains why no node fits.
    ///
    /// When every node must be scored on its own (an embedder's node-scoped
    /// scorer, or a `Gt`/`Lt` on a per-node label), nodes are visited by
    /// name and the search stops once
    /// [`Policy::percentage_of_nodes_to_score`] percent of the nodes (at
    /// least one) were found feasible, as kube-scheduler does; the class
    /// indexes find the best node exactly without that bound.
    pub fn place(&mut self, req: &InstanceRequest) -> Result<String, Unschedulable> {
        let rules = RequestRules::new(self, req);
        let Some(name) = self.best_node(&rules, req).map(Arc::clone) else {
            return Err(self.explain(&rules, req));
        };
        let fits = self.allocate(&name, req);
        debug_assert!(fits, "the chosen node must fit");
        Ok(name.to_string())
    }

    /// The node [`ClusterSnapshot::place`] would choose for `req`, if any.
    fn best_node<'a>(
        &'a self,
        rules: &RequestRules<'a>,
        req: &InstanceRequest,
    ) -> Option<&'a Arc<str>> {
        let judge_every_node = rules.judge_every_node
            || self
                .scorers
                .iter()
                .any(|scorer| scorer.scope == Scope::Node);
        let mut class_scores = HashMap::default();
        let mut candidates = Vec::new();
        if judge_every_node {
            let nodes = self.nodes.len();
            let percentage = usize::from(self.knobs.percentage_of_nodes_to_score);
            let enough = (nodes * percentage / 100).max(1);
            for name in &self.names {
                let Some(node) = self.nodes.get(name) else {
                    continue;
                };
                candidates.extend(self.judge(node, rules, req, &mut class_scores));
                if candidates.len() >= enough {
                    break;
                }
            }
        } else {
            for class in self.classes.values() {
                let Some(class_score) = self.class_score(class, req) else {
                    continue;
                };
                let Some(scores) = rules.admit(&class.generic_facts()) else {
                    continue;
                };
                if let Some((entry, leftover)) = self.best_indexed(class, req, &rules.exceptions) {
                    candidates.push(Candidate {
                        name: &entry.name,
                        leftover,
                        weighted: class_score.saturating_add(scores.weighted),
                        instance_affinity: scores.instance_affinity,
                        spread: scores.spread,
                    });
                }
            }
            for name in &rules.exceptions {
                if let Some(node) = self.nodes.get(*name) {
                    candidates.extend(self.judge(node, rules, req, &mut class_scores));
                }
            }
        }
        pick(&candidates, req, &self.knobs)
    }

    /// `node` as a candidate for `req`, if it is feasible.
    fn judge<'a>(
        &'a self,
        node: &'a NodeState,
        rules: &RequestRules<'_>,
        req: &InstanceRequest,
        class_scores: &mut HashMap<ClassId, Option<i64>>,
    ) -> Option<Candidate<'a>> {
        let class = self.classes.get(&node.class)?;
        let (free_cpu, free_memory) = node.free_cpu_memory()?;
        let leftover = Leftover::after(free_cpu, free_memory, req, class.scale)?;
        let class_score = (*class_scores
            .entry(node.class)
            .or_insert_with(|| self.class_score(class, req)))?;
        let RuleScores {
            weighted,
            instance_affinity,
            spread,
        } = rules.admit(&node.facts())?;
        let view = node.view();
        if !self.node_filters_pass(req, &view) {
            return None;
        }
        let node_score = self.weighted_total(Scope::Node, req, &view);
        Some(Candidate {
            name: &node.name,
            leftover,
            weighted: class_score
                .saturating_add(weighted)
                .saturating_add(node_score),
            instance_affinity,
            spread,
        })
    }

    /// Number of nodes, ready or not.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// What is still free on `node` (zero where over-committed), if known.
    pub fn free(&self, node: &str) -> Option<Resources> {
        self.nodes.get(node).map(NodeState::free)
    }

    /// The weighted class-scoped scores of `class`'s nodes, or `None` if a
    /// class-scoped filter (taints, driver, the embedder's) refuses them.
    fn class_score(&self, class: &ShapeClass, req: &InstanceRequest) -> Option<i64> {
        let view = class.view();
        let passes = self.filters_pass(Scope::Class, self.class_filters(), req, &view);
        let taints = self
            .knobs
            .taint_toleration_weight
            .saturating_mul(PreferNoScheduleTaints.score(req, &view));
        passes.then(|| taints.saturating_add(self.weighted_total(Scope::Class, req, &view)))
    }

    /// The built-in filters judged once per class, as the policy has them.
    fn class_filters(&self) -> &'static [&'static dyn Filter] {
        const WITH_TAINTS: [&dyn Filter; 2] = [&TaintToleration, &DriverOffered];
        if self.knobs.taint_toleration {
            &WITH_TAINTS
        } else {
            &WITH_TAINTS[1..]
        }
    }

    /// Whether the built-in filters of `scope` and the embedder's filters of
    /// that scope all pass.
    fn filters_pass(
        &self,
        scope: Scope,
        built_in: &[&dyn Filter],
        req: &InstanceRequest,
        view: &NodeView<'_>,
    ) -> bool {
        let custom = self
            .filters
            .iter()
            .filter(|filter| filter.scope == scope)
            .map(|filter| &*filter.extension);
        built_in
            .iter()
            .copied()
            .chain(custom)
            .all(|filter| filter.unfit_reasons(req, view).is_empty())
    }

    /// The weighted sum of the embedder's scorers of `scope` on `view`.
    fn weighted_total(&self, scope: Scope, req: &InstanceRequest, view: &NodeView<'_>) -> i64 {
        self.scorers
            .iter()
            .filter(|scorer| scorer.scope == scope)
            .fold(0, |total: i64, scorer| {
                total.saturating_add(
                    scorer
                        .weight
                        .saturating_mul(scorer.extension.score(req, view)),
                )
            })
    }

    /// Nodes of `class` from `from_numerator` on, but those in `skip`, that
    /// pass the node-scoped filters, in index order (ascending leftover),
    /// with their leftover after `req`. A node fits only if its
    /// free-capacity numerator reaches the request's, so walks start there
    /// at the lowest.
    fn fitting<'a: 'b, 'b>(
        &'a self,
        class: &'a ShapeClass,
        req: &'b InstanceRequest,
        from_numerator: Wide,
        skip: &'b HashSet<&str>,
    ) -> impl DoubleEndedIterator<Item = (&'a IndexEntry, Leftover)> + 'b {
        // Without these the index entry alone decides resources and ports.
        let check_node = req.ephemeral_storage_bytes > 0
            || !req.extended.is_empty()
            || !req.host_ports.is_empty()
            || req.volume_nodes.is_some()
            || self
                .filters
                .iter()
                .any(|filter| filter.scope == Scope::Node);
        let start = IndexEntry {
            free_numerator: from_numerator,
            name: Arc::clone(&self.lowest_name),
            free_cpu: 0,
            free_memory: 0,
        };
        class.index.range(start..).filter_map(move |entry| {
            if !skip.is_empty() && skip.contains(&*entry.name) {
                return None;
            }
            let leftover = Leftover::after(entry.free_cpu, entry.free_memory, req, class.scale)?;
            let node_fits = !check_node
                || self
                    .nodes
                    .get(&entry.name)
                    .is_some_and(|node| self.node_filters_pass(req, &node.view()));
            node_fits.then_some((entry, leftover))
        })
    }

    /// The best node of `class` but those in `skip` for the strategy alone
    /// (every other score is the same across them).
    fn best_indexed<'a>(
        &'a self,
        class: &'a ShapeClass,
        req: &InstanceRequest,
        skip: &HashSet<&str>,
    ) -> Option<(&'a IndexEntry, Leftover)> {
        let request_numerator = class.scale.numerator(req.cpu_millis, req.memory_bytes);
        match req.strategy {
            Strategy::BestFit => self.fitting(class, req, request_numerator, skip).next(),
            Strategy::Spread => {
                let (loosest, _) = self
                    .fitting(class, req, request_numerator, skip)
                    .next_back()?;
                // Equal leftovers go to the smallest name, which the reverse
                // walk meets last: walk forward from the loosest numerator.
                self.fitting(class, req, loosest.free_numerator, skip)
                    .next()
            }
        }
    }

    /// Whether every node-scoped filter, built-in or not, passes.
    fn node_filters_pass(&self, req: &InstanceRequest, view: &NodeView<'_>) -> bool {
        self.filters_pass(Scope::Node, &NODE_FILTERS, req, view)
    }

    /// Counts, over all nodes, why none can take `req`: for each node the
    /// reasons of the first filter that refuses it, in the order node
    /// selector and affinity, taints, driver, resources, host ports,
    /// inter-instance affinity, topology spread, the embedder's.
    fn explain(&self, rules: &RequestRules<'_>, req: &InstanceRequest) -> Unschedulable {
        let mut counts: BTreeMap<UnfitReason, usize> = BTreeMap::new();
        let class_filters = self.class_filters();
        for node in self.nodes.values() {
            let node_reasons = if node.info.ready {
                let (view, facts) = (node.view(), node.facts());
                let custom = self.filters.iter().map(|filter| &*filter.extension);
                let filter_reasons = class_filters
                    .iter()
                    .copied()
                    .chain(NODE_FILTERS)
                    .map(|filter| filter.unfit_reasons(req, &view));
                let instance_reasons = [rules.instance_refusal(&facts).into_iter().collect()];
                let custom_reasons = custom.map(|filter| filter.unfit_reasons(req, &view));
                [rules.label_refusal(&facts).into_iter().collect()]
                    .into_iter()
                    .chain(filter_reasons)
                    .chain(instance_reasons)
                    .chain(custom_reasons)
                    .find(|reasons: &Vec<UnfitReason>| !reasons.is_empty())
                    .unwrap_or_default()
            } else {
                vec![UnfitReason::NotReady]
            };
            for reason in node_reasons {
                *counts.entry(reason).or_default() += 1;
            }
        }
        let mut reasons: Vec<(UnfitReason, usize)> = counts.into_iter().collect();
        reasons.sort_by(|(reason_a, count_a), (reason_b, count_b)| {
            count_a.cmp(count_b).then_with(|| reason_a.cmp(reason_b))
        });
        Unschedulable {
            total_nodes: self.nodes.len(),
            reasons,
        }
    }

    /// Applies `change` to a node, keeping its class index entry in step.
    fn update_node<R>(
        &mut self,
        name: &str,
        change: impl FnOnce(&mut NodeState) -> R,
    ) -> Option<R> {
        let node = self.nodes.get_mut(name)?;
        let class = self
            .classes
            .get_mut(&node.class)
            .expect("a node's class exists");
        class.unindex(node);
        let result = change(node);
        class.reindex(node);
        Some(result)
    }

    /// Adds a node (not yet present) to its class, creating the class if new.
    fn attach(&mut self, info: NodeInfo, allocations: Allocations) {
        let name: Arc<str> = Arc::from(info.name.as_str());
        let (mut labels, mut per_node_keys) = (BTreeMap::new(), BTreeSet::new());
        for (key, value) in &info.labels {
            if self.per_node_label_keys.contains(key) {
                per_node_keys.insert(key.clone());
                self.per_node_values
                    .entry(key.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .insert(Arc::clone(&name));
            } else {
                labels.insert(key.clone(), value.clone());
            }
        }
        let shape = Shape {
            labels,
            per_node_keys,
            drivers: info.drivers.clone(),
            taints: info.taints.clone(),
            allocatable: info.allocatable.clone(),
        };
        let class_id = match self.class_ids.entry(shape) {
            Entry::Occupied(existing) => *existing.get(),
            Entry::Vacant(vacant) => {
                let id = self.next_class_id;
                self.next_class_id += 1;
                let shape = vacant.key().clone();
                vacant.insert(id);
                self.classes.insert(
                    id,
                    ShapeClass {
                        scale: Scale::of(&shape.allocatable),
                        template: NodeInfo {
                            name: String::new(),
                            allocatable: shape.allocatable.clone(),
                            labels: shape.labels.clone(),
                            drivers: shape.drivers.clone(),
                            taints: shape.taints.clone(),
                            ready: true,
                        },
                        shape,
                        members: BTreeSet::new(),
                        index: BTreeSet::new(),
                    },
                );
                id
            }
        };
        let class = self.classes.get_mut(&class_id).expect("class just ensured");
        let node = NodeState {
            name: Arc::clone(&name),
            info,
            used: allocations.used,
            host_ports: allocations.host_ports,
            placed: allocations.placed,
            class: class_id,
        };
        class.members.insert(Arc::clone(&name));
        class.reindex(&node);
        self.names.insert(Arc::clone(&name));
        self.nodes.insert(name, node);
    }

    /// Removes a node from the snapshot and its class, dropping the class
    /// when it empties.
    fn detach(&mut self, name: &str) -> Option<NodeState> {
        let node = self.nodes.remove(name)?;
        self.names.remove(name);
        for (key, value) in &node.info.labels {
            let Some(values) = self.per_node_values.get_mut(key) else {
                continue;
            };
            if let Some(nodes) = values.get_mut(value) {
                nodes.remove(name);
                if nodes.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.per_node_values.remove(key);
            }
        }
        let class = self
            .classes
            .get_mut(&node.class)
            .expect("a node's class exists");
        class.unindex(&node);
        class.members.remove(name);
        if class.members.is_empty() {
            let class = self.classes.remove(&node.class).expect("class exists");
            self.class_ids.remove(&class.shape);
        }
        Some(node)
    }
}

mod instances;
mod preemption;
mod rules;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pipeline_tests;

#[cfg(test)]
mod rules_tests;

#[cfg(test)]
mod policy_tests;
