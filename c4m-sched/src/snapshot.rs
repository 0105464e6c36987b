//! The cluster snapshot and best-fit placement.
//!
//! Nodes are grouped into *shape classes*: nodes with the same labels, drivers
//! and allocatable resources. Selector and driver checks run once per class,
//! and inside a class every node's leftover shares one denominator, so an
//! ordered index by leftover numerator finds the tightest node in O(log n)
//! plus the nodes skipped for lacking one dimension.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::{InstanceRequest, NodeInfo, Resources};
use crate::unschedulable::{UnfitReason, Unschedulable};
use crate::wide::Wide;

/// Identifies a shape class for the lifetime of the snapshot.
type ClassId = u64;

/// What makes nodes interchangeable for filtering and scoring.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    labels: BTreeMap<String, String>,
    drivers: BTreeSet<String>,
    allocatable: Resources,
}

/// The denominators of the leftover fraction. A zero allocatable dimension
/// counts as 1: such a node has nothing free there, so only a zero request
/// fits and that dimension's leftover term is 0 either way.
#[derive(Clone, Copy, Debug)]
struct Scale {
    cpu: u64,
    memory: u64,
}

impl Scale {
    fn of(allocatable: Resources) -> Self {
        Self {
            cpu: allocatable.cpu_millis.max(1),
            memory: allocatable.memory_bytes.max(1),
        }
    }

    /// `cpu / self.cpu + memory / self.memory`, times `self.cpu * self.memory`.
    fn numerator(self, cpu: u64, memory: u64) -> Wide {
        Wide::product(cpu, self.memory).add(Wide::product(memory, self.cpu))
    }
}

/// A fitting node's leftover after placement, as an exact fraction.
struct Leftover {
    numerator: Wide,
    scale: Scale,
}

impl Leftover {
    /// Exact comparison by cross-multiplying denominators.
    fn cmp(&self, other: &Self) -> Ordering {
        let lhs = self
            .numerator
            .mul_u64(other.scale.cpu)
            .mul_u64(other.scale.memory);
        let rhs = other
            .numerator
            .mul_u64(self.scale.cpu)
            .mul_u64(self.scale.memory);
        lhs.cmp(&rhs)
    }
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
    scale: Scale,
    /// All nodes of this shape, schedulable or not; the class goes when it
    /// reaches zero.
    members: usize,
    /// Ready nodes with a free instance slot.
    index: BTreeSet<IndexEntry>,
}

impl ShapeClass {
    /// Why no node of this class can take `req` regardless of its resources.
    fn label_mismatch(&self, req: &InstanceRequest) -> Option<UnfitReason> {
        let selector_matches = req
            .node_selector
            .iter()
            .all(|(key, value)| self.shape.labels.get(key) == Some(value));
        if !selector_matches {
            Some(UnfitReason::SelectorMismatch)
        } else if !self.shape.drivers.contains(&req.driver) {
            Some(UnfitReason::MissingDriver(req.driver.clone()))
        } else {
            None
        }
    }

    /// The fitting node with the least leftover (then the smallest name).
    /// A node fits only if its free-capacity numerator reaches the request's,
    /// so the scan starts there; nodes short in one dimension are skipped.
    fn tightest_fit(&self, req: &InstanceRequest, lowest_name: &Arc<str>) -> Option<&IndexEntry> {
        let start = IndexEntry {
            free_numerator: self.scale.numerator(req.cpu_millis, req.memory_bytes),
            name: Arc::clone(lowest_name),
            free_cpu: 0,
            free_memory: 0,
        };
        self.index
            .range(start..)
            .find(|entry| entry.free_cpu >= req.cpu_millis && entry.free_memory >= req.memory_bytes)
    }
}

/// One node with what is allocated on it.
#[derive(Debug)]
struct NodeState {
    name: Arc<str>,
    info: NodeInfo,
    used: Resources,
    class: ClassId,
}

impl NodeState {
    fn free(&self) -> Resources {
        self.info.allocatable.saturating_sub(self.used)
    }

    /// The node's entry in its class index, if it can take any instance.
    fn index_entry(&self, scale: Scale) -> Option<IndexEntry> {
        let free = self.free();
        (self.info.ready && free.instances > 0).then(|| IndexEntry {
            free_numerator: scale.numerator(free.cpu_millis, free.memory_bytes),
            name: Arc::clone(&self.name),
            free_cpu: free.cpu_millis,
            free_memory: free.memory_bytes,
        })
    }
}

/// Resources `req` needs that `free` lacks, in reason order.
fn shortfalls(free: Resources, req: &InstanceRequest) -> impl Iterator<Item = UnfitReason> {
    [
        (free.instances == 0).then_some(UnfitReason::TooManyInstances),
        (free.cpu_millis < req.cpu_millis).then_some(UnfitReason::InsufficientCpu),
        (free.memory_bytes < req.memory_bytes).then_some(UnfitReason::InsufficientMemory),
    ]
    .into_iter()
    .flatten()
}

/// The nodes of a cluster and what is allocated on each; places instances
/// by best fit.
///
/// Best fit: among nodes that are ready, carry every label of the node
/// selector, offer the driver and have enough free CPU, memory and instance
/// slots, take the one with the least
/// `(free_cpu - cpu) / allocatable_cpu + (free_memory - memory) / allocatable_memory`
/// (compared exactly; a dimension with zero allocatable adds 0), ties going
/// to the smallest name.
#[derive(Debug)]
pub struct ClusterSnapshot {
    nodes: HashMap<Arc<str>, NodeState>,
    class_ids: BTreeMap<Shape, ClassId>,
    classes: HashMap<ClassId, ShapeClass>,
    next_class_id: ClassId,
    /// The smallest name, kept to build index range bounds without allocating.
    lowest_name: Arc<str>,
}

impl Default for ClusterSnapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterSnapshot {
    /// An empty cluster.
    pub fn new() -> Self {
        Self {
            nodes: HashMap::new(),
            class_ids: BTreeMap::new(),
            classes: HashMap::new(),
            next_class_id: 0,
            lowest_name: Arc::from(""),
        }
    }

    /// Adds a node or replaces its description, keeping what is already
    /// allocated on it (a node that shrank below that is over-committed:
    /// nothing is free in that dimension until enough is released).
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let used = self
            .detach(&node.name)
            .map(|old| old.used)
            .unwrap_or_default();
        self.attach(node, used);
    }

    /// Forgets a node and its allocations; unknown names are ignored.
    pub fn remove_node(&mut self, name: &str) {
        self.detach(name);
    }

    /// Accounts an instance already bound to `node`. Returns whether it fit;
    /// it is counted either way, because it runs there regardless. Returns
    /// false and counts nothing if the node is unknown.
    pub fn allocate(&mut self, node: &str, req: &InstanceRequest) -> bool {
        self.update_node(node, |state| {
            let fits = shortfalls(state.free(), req).next().is_none();
            state.used = state.used.saturating_add(req.resources());
            fits
        })
        .unwrap_or(false)
    }

    /// Gives back what `req` took on `node`; unknown names are ignored.
    pub fn release(&mut self, node: &str, req: &InstanceRequest) {
        self.update_node(node, |state| {
            state.used = state.used.saturating_sub(req.resources());
        });
    }

    /// Picks the best-fit node for `req`, allocates it there and returns the
    /// node's name; or explains why no node fits.
    pub fn place(&mut self, req: &InstanceRequest) -> Result<String, Unschedulable> {
        let mut best: Option<(Leftover, &Arc<str>)> = None;
        for class in self.classes.values() {
            if class.label_mismatch(req).is_some() {
                continue;
            }
            let Some(entry) = class.tightest_fit(req, &self.lowest_name) else {
                continue;
            };
            let leftover = Leftover {
                numerator: class.scale.numerator(
                    entry.free_cpu - req.cpu_millis,
                    entry.free_memory - req.memory_bytes,
                ),
                scale: class.scale,
            };
            let better = best.as_ref().is_none_or(|(best_leftover, best_name)| {
                leftover
                    .cmp(best_leftover)
                    .then_with(|| entry.name.cmp(best_name))
                    == Ordering::Less
            });
            if better {
                best = Some((leftover, &entry.name));
            }
        }
        let Some((_, name)) = best else {
            return Err(self.explain(req));
        };
        let name = Arc::clone(name);
        let fits = self.allocate(&name, req);
        debug_assert!(fits, "the chosen node must fit");
        Ok(name.to_string())
    }

    /// Number of nodes, ready or not.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// What is still free on `node` (zero where over-committed), if known.
    pub fn free(&self, node: &str) -> Option<Resources> {
        self.nodes.get(node).map(NodeState::free)
    }

    /// Counts, over all nodes, why none can take `req`.
    fn explain(&self, req: &InstanceRequest) -> Unschedulable {
        let mut counts: BTreeMap<UnfitReason, usize> = BTreeMap::new();
        for node in self.nodes.values() {
            let class = &self.classes[&node.class];
            let node_reasons: Vec<UnfitReason> = if !node.info.ready {
                vec![UnfitReason::NotReady]
            } else if let Some(reason) = class.label_mismatch(req) {
                vec![reason]
            } else {
                shortfalls(node.free(), req).collect()
            };
            debug_assert!(!node_reasons.is_empty(), "explained a node that fits");
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
        if let Some(entry) = node.index_entry(class.scale) {
            class.index.remove(&entry);
        }
        let result = change(node);
        if let Some(entry) = node.index_entry(class.scale) {
            class.index.insert(entry);
        }
        Some(result)
    }

    /// Adds a node (not yet present) to its class, creating the class if new.
    fn attach(&mut self, info: NodeInfo, used: Resources) {
        let shape = Shape {
            labels: info.labels.clone(),
            drivers: info.drivers.clone(),
            allocatable: info.allocatable,
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
                        scale: Scale::of(shape.allocatable),
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
            used,
            class: class_id,
        };
        class.members += 1;
        if let Some(entry) = node.index_entry(class.scale) {
            class.index.insert(entry);
        }
        self.nodes.insert(name, node);
    }

    /// Removes a node from the snapshot and its class, dropping the class
    /// when it empties.
    fn detach(&mut self, name: &str) -> Option<NodeState> {
        let node = self.nodes.remove(name)?;
        let class = self
            .classes
            .get_mut(&node.class)
            .expect("a node's class exists");
        if let Some(entry) = node.index_entry(class.scale) {
            class.index.remove(&entry);
        }
        class.members -= 1;
        if class.members == 0 {
            let class = self.classes.remove(&node.class).expect("class exists");
            self.class_ids.remove(&class.shape);
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests;
