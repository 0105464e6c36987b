//! The cluster snapshot and placement through the filter/scorer pipeline.
//!
//! Nodes are grouped into *shape classes*: nodes with the same labels,
//! drivers, taints and allocatable resources. Class-scoped filters and
//! scorers run once per class, and inside a class every node's leftover
//! shares one denominator, so an ordered index by leftover numerator finds
//! the tightest (or loosest) node in O(log n) plus the nodes skipped for
//! failing a node-scoped check (a short dimension, a taken host port, an
//! embedder's node filter). Only an embedder's node-scoped scorer forces a
//! scan of every fitting node.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::filters::{
    DriverOffered, HostPorts, NodeSelector, RequiredNodeAffinity, ResourcesFit, TaintToleration,
};
use crate::fit::{Leftover, Scale};
use crate::model::{HostPort, InstanceRequest, NodeInfo, Resources, Strategy};
use crate::pipeline::{Filter, NodeView, Scope, Scorer};
use crate::scorers::{PreferNoScheduleTaints, PreferredNodeAffinity, fit_score};
use crate::taint::Taint;
use crate::unschedulable::{UnfitReason, Unschedulable};
use crate::wide::Wide;

/// Identifies a shape class for the lifetime of the snapshot.
type ClassId = u64;

/// Built-in filters whose verdict is the same for a whole class, in the
/// order their reasons are looked for.
const CLASS_FILTERS: [&dyn Filter; 4] = [
    &NodeSelector,
    &RequiredNodeAffinity,
    &TaintToleration,
    &DriverOffered,
];

/// Built-in filters checked per node. On the fast path the index does their
/// work unless the request needs more than CPU, memory and a slot.
const NODE_FILTERS: [&dyn Filter; 2] = [&ResourcesFit, &HostPorts];

/// Built-in scorers constant over a class (weight 1 each). The strategy's
/// fit scorer is the index order itself.
const CLASS_SCORERS: [&dyn Scorer; 2] = [&PreferredNodeAffinity, &PreferNoScheduleTaints];

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

/// What makes nodes interchangeable for class-scoped filters and scorers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    labels: BTreeMap<String, String>,
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
    /// The shape as a nameless, ready node, for class-scoped views.
    template: NodeInfo,
    scale: Scale,
    /// All nodes of this shape, schedulable or not; the class goes when it
    /// reaches zero.
    members: usize,
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

    fn free(&self) -> Resources {
        self.info.allocatable.saturating_sub(&self.used)
    }

    /// The node's entry in its class index, if it can take any instance.
    fn index_entry(&self, scale: Scale) -> Option<IndexEntry> {
        let (allocatable, used) = (&self.info.allocatable, &self.used);
        (self.info.ready && allocatable.instances > used.instances).then(|| {
            let free_cpu = allocatable.cpu_millis.saturating_sub(used.cpu_millis);
            let free_memory = allocatable.memory_bytes.saturating_sub(used.memory_bytes);
            IndexEntry {
                free_numerator: scale.numerator(free_cpu, free_memory),
                name: Arc::clone(&self.name),
                free_cpu,
                free_memory,
            }
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

/// A fitting node and how good it is.
struct Candidate<'a> {
    total: i64,
    leftover: Leftover,
    name: &'a Arc<str>,
}

impl<'a> Candidate<'a> {
    /// `entry` with the fit score of `req`'s strategy added to `total`.
    fn new(entry: &'a IndexEntry, leftover: Leftover, total: i64, req: &InstanceRequest) -> Self {
        Self {
            total: total.saturating_add(fit_score(req.strategy, &leftover)),
            leftover,
            name: &entry.name,
        }
    }

    /// Whether `self` ranks before `other`: the higher total, then the
    /// exactly tighter (best fit) or looser (spread) node, then the smaller name.
    fn beats(&self, other: &Self, strategy: Strategy) -> bool {
        let by_leftover = match strategy {
            Strategy::BestFit => self.leftover.cmp(&other.leftover),
            Strategy::Spread => other.leftover.cmp(&self.leftover),
        };
        other
            .total
            .cmp(&self.total)
            .then(by_leftover)
            .then_with(|| self.name.cmp(other.name))
            == Ordering::Less
    }
}

/// Keeps `candidate` in `best` if it ranks before what is there.
fn keep_better<'a>(best: &mut Option<Candidate<'a>>, candidate: Candidate<'a>, strategy: Strategy) {
    if best
        .as_ref()
        .is_none_or(|best| candidate.beats(best, strategy))
    {
        *best = Some(candidate);
    }
}

/// An embedder's filter or scorer with its scope, read once at registration.
#[derive(Debug)]
struct Scoped<T: ?Sized> {
    scope: Scope,
    weight: i64,
    extension: Box<T>,
}

/// The nodes of a cluster and what is allocated on each; places instances
/// through a pipeline of filters and scorers.
///
/// A node can take an instance if it is ready and passes every filter: the
/// built-in [`NodeSelector`], [`RequiredNodeAffinity`], [`TaintToleration`],
/// [`DriverOffered`], [`ResourcesFit`] and [`HostPorts`], then those added
/// with [`ClusterSnapshot::add_filter`]. Among those, the highest total of
/// weight × score wins: the request's strategy scorer
/// ([`crate::BestFit`] or [`crate::Spread`]), [`PreferredNodeAffinity`],
/// [`PreferNoScheduleTaints`] (weight 1 each), then those added with
/// [`ClusterSnapshot::add_scorer`]. Equal totals go to the node with the
/// exactly smaller (best fit) or larger (spread) leftover
/// `(free_cpu - cpu) / allocatable_cpu + (free_memory - memory) / allocatable_memory`
/// (a dimension with zero allocatable adds 0), then to the smallest name.
#[derive(Debug)]
pub struct ClusterSnapshot {
    nodes: HashMap<Arc<str>, NodeState>,
    class_ids: BTreeMap<Shape, ClassId>,
    classes: HashMap<ClassId, ShapeClass>,
    next_class_id: ClassId,
    /// The smallest name, kept to build index range bounds without allocating.
    lowest_name: Arc<str>,
    /// Every node name in order: preemption visits nodes by name.
    names: BTreeSet<Arc<str>>,
    /// The recorded instances by id.
    placed_at: HashMap<Arc<str>, PlacedAt>,
    /// How many recorded instances have each priority: the lowest one bounds
    /// how cheap a preemption can be.
    priority_counts: BTreeMap<i32, usize>,
    filters: Vec<Scoped<dyn Filter>>,
    scorers: Vec<Scoped<dyn Scorer>>,
}

impl Default for ClusterSnapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterSnapshot {
    /// An empty cluster with the built-in pipeline.
    pub fn new() -> Self {
        Self {
            nodes: HashMap::new(),
            class_ids: BTreeMap::new(),
            classes: HashMap::new(),
            next_class_id: 0,
            lowest_name: Arc::from(""),
            names: BTreeSet::new(),
            placed_at: HashMap::new(),
            priority_counts: BTreeMap::new(),
            filters: Vec::new(),
            scorers: Vec::new(),
        }
    }

    /// Adds a filter after the built-in ones. A [`Scope::Node`] filter is
    /// checked on each candidate while walking the class indexes.
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
            for (priority, id) in node.placed.keys() {
                self.placed_at.remove(id);
                self.forget_priority(*priority);
            }
        }
    }

    /// Accounts an instance already bound to `node`, with its resources and
    /// host ports. Returns whether it fit (resources and host ports); it is
    /// counted either way, because it runs there regardless. Returns false
    /// and counts nothing if the node is unknown.
    pub fn allocate(&mut self, node: &str, req: &InstanceRequest) -> bool {
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

    /// Gives back what `req` took on `node`; unknown names are ignored.
    pub fn release(&mut self, node: &str, req: &InstanceRequest) {
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
    pub fn place(&mut self, req: &InstanceRequest) -> Result<String, Unschedulable> {
        let Some(name) = self.best_node(req) else {
            return Err(self.explain(req));
        };
        let fits = self.allocate(&name, req);
        debug_assert!(fits, "the chosen node must fit");
        Ok(name.to_string())
    }

    /// The node [`ClusterSnapshot::place`] would choose for `req`, if any.
    fn best_node(&self, req: &InstanceRequest) -> Option<Arc<str>> {
        let scan_all = self
            .scorers
            .iter()
            .any(|scorer| scorer.scope == Scope::Node);
        let mut best: Option<Candidate<'_>> = None;
        for class in self.classes.values() {
            let Some(class_total) = self.class_total(class, req) else {
                continue;
            };
            if scan_all {
                let start = class.scale.numerator(req.cpu_millis, req.memory_bytes);
                for (entry, leftover) in self.fitting(class, req, start) {
                    let node_total = self.nodes.get(&entry.name).map_or(0, |node| {
                        self.weighted_total(Scope::Node, req, &node.view())
                    });
                    let total = class_total.saturating_add(node_total);
                    keep_better(
                        &mut best,
                        Candidate::new(entry, leftover, total, req),
                        req.strategy,
                    );
                }
            } else if let Some((entry, leftover)) = self.best_indexed(class, req) {
                let candidate = Candidate::new(entry, leftover, class_total, req);
                keep_better(&mut best, candidate, req.strategy);
            }
        }
        best.map(|best| Arc::clone(best.name))
    }

    /// Number of nodes, ready or not.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// What is still free on `node` (zero where over-committed), if known.
    pub fn free(&self, node: &str) -> Option<Resources> {
        self.nodes.get(node).map(NodeState::free)
    }

    /// The class-scoped part of the score of `class`'s nodes, or `None` if a
    /// class-scoped filter refuses them.
    fn class_total(&self, class: &ShapeClass, req: &InstanceRequest) -> Option<i64> {
        let view = class.view();
        let passes = self.class_admits(class, req);
        let built_in = CLASS_SCORERS.iter().fold(0, |total: i64, scorer| {
            total.saturating_add(scorer.score(req, &view))
        });
        passes.then(|| built_in.saturating_add(self.weighted_total(Scope::Class, req, &view)))
    }

    /// Whether every class-scoped filter, built-in or not, lets `class`'s
    /// nodes take `req`.
    fn class_admits(&self, class: &ShapeClass, req: &InstanceRequest) -> bool {
        self.filters_pass(Scope::Class, &CLASS_FILTERS, req, &class.view())
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

    /// Nodes of `class` from `from_numerator` on that pass the node-scoped
    /// filters, in index order (ascending leftover), with their leftover
    /// after `req`. A node fits only if its free-capacity numerator reaches
    /// the request's, so walks start there at the lowest.
    fn fitting<'a>(
        &'a self,
        class: &'a ShapeClass,
        req: &'a InstanceRequest,
        from_numerator: Wide,
    ) -> impl DoubleEndedIterator<Item = (&'a IndexEntry, Leftover)> + 'a {
        // Without these the index entry alone decides resources and ports.
        let check_node = req.ephemeral_storage_bytes > 0
            || !req.extended.is_empty()
            || !req.host_ports.is_empty()
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
            let leftover = Leftover::after(entry.free_cpu, entry.free_memory, req, class.scale)?;
            let node_fits = !check_node
                || self
                    .nodes
                    .get(&entry.name)
                    .is_some_and(|node| self.node_filters_pass(req, &node.view()));
            node_fits.then_some((entry, leftover))
        })
    }

    /// The best node of `class` for the strategy alone (every other score is
    /// the same across the class).
    fn best_indexed<'a>(
        &'a self,
        class: &'a ShapeClass,
        req: &'a InstanceRequest,
    ) -> Option<(&'a IndexEntry, Leftover)> {
        let request_numerator = class.scale.numerator(req.cpu_millis, req.memory_bytes);
        match req.strategy {
            Strategy::BestFit => self.fitting(class, req, request_numerator).next(),
            Strategy::Spread => {
                let (loosest, _) = self.fitting(class, req, request_numerator).next_back()?;
                // Equal leftovers go to the smallest name, which the reverse
                // walk meets last: walk forward from the loosest numerator.
                self.fitting(class, req, loosest.free_numerator).next()
            }
        }
    }

    /// Whether every node-scoped filter, built-in or not, passes.
    fn node_filters_pass(&self, req: &InstanceRequest, view: &NodeView<'_>) -> bool {
        self.filters_pass(Scope::Node, &NODE_FILTERS, req, view)
    }

    /// Counts, over all nodes, why none can take `req`: for each node the
    /// reasons of the first filter that refuses it.
    fn explain(&self, req: &InstanceRequest) -> Unschedulable {
        let mut counts: BTreeMap<UnfitReason, usize> = BTreeMap::new();
        for node in self.nodes.values() {
            let node_reasons = if node.info.ready {
                let view = node.view();
                let custom = self.filters.iter().map(|filter| &*filter.extension);
                CLASS_FILTERS
                    .into_iter()
                    .chain(NODE_FILTERS)
                    .chain(custom)
                    .map(|filter| filter.unfit_reasons(req, &view))
                    .find(|reasons| !reasons.is_empty())
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
        let shape = Shape {
            labels: info.labels.clone(),
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
                        members: 0,
                        index: BTreeSet::new(),
                    },
                );
                id
            }
        };
        let class = self.classes.get_mut(&class_id).expect("class just ensured");
        let name: Arc<str> = Arc::from(info.name.as_str());
        let node = NodeState {
            name: Arc::clone(&name),
            info,
            used: allocations.used,
            host_ports: allocations.host_ports,
            placed: allocations.placed,
            class: class_id,
        };
        class.members += 1;
        class.reindex(&node);
        self.names.insert(Arc::clone(&name));
        self.nodes.insert(name, node);
    }

    /// Removes a node from the snapshot and its class, dropping the class
    /// when it empties.
    fn detach(&mut self, name: &str) -> Option<NodeState> {
        let node = self.nodes.remove(name)?;
        self.names.remove(name);
        let class = self
            .classes
            .get_mut(&node.class)
            .expect("a node's class exists");
        class.unindex(&node);
        class.members -= 1;
        if class.members == 0 {
            let class = self.classes.remove(&node.class).expect("class exists");
            self.class_ids.remove(&class.shape);
        }
        Some(node)
    }
}

mod preemption;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pipeline_tests;
