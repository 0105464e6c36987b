//! Recorded instances and preemption: which lower-priority instances to
//! evict, and where, so that a higher-priority one fits.
//!
//! The choice follows Kubernetes' `pickOneNodeForPreemption`, with the
//! victim set on each node minimal rather than greedy. Among nodes that pass
//! every non-resource filter, the winner has, in this order:
//! 1. the fewest victims;
//! 2. the lowest highest victim priority;
//! 3. the lowest sum of victim priorities;
//! 4. the smallest node name.
//!
//! On one node, equal costs go to the set met first when combining
//! victims in (priority, id) order.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use foldhash::HashMap;
use std::sync::Arc;

use super::rules::RequestRules;
use super::{ClassId, ClusterSnapshot, NodeState, PlacedAt, PlacedRecord, subtract_allocation};
use crate::model::{
    DisruptionBudget, HostPort, InstanceRequest, PlacedInstance, Preemption, Resources,
};
use crate::pipeline::{NodeView, Scope};
use crate::victims::{Evictable, NodeProblem, VictimCost, cheapest_victims};

/// A resource dimension a preemptor can be short of on a node.
#[derive(Clone, Copy, Debug)]
enum Dimension<'a> {
    Slot,
    Cpu,
    Memory,
    EphemeralStorage,
    Extended(&'a str),
}

impl Dimension<'_> {
    fn amount(self, resources: &Resources) -> u64 {
        match self {
            Self::Slot => resources.instances,
            Self::Cpu => resources.cpu_millis,
            Self::Memory => resources.memory_bytes,
            Self::EphemeralStorage => resources.ephemeral_storage_bytes,
            Self::Extended(name) => resources.extended(name),
        }
    }
}

/// The cheapest victims found so far and where.
struct Choice<'a> {
    cost: VictimCost,
    node: &'a Arc<str>,
    victims: Vec<Arc<str>>,
}

impl ClusterSnapshot {
    /// Like [`ClusterSnapshot::allocate`], and records the instance so that
    /// [`ClusterSnapshot::preempt`] may choose it as a victim and
    /// [`ClusterSnapshot::release_instance`] can give it back by id. An id
    /// already recorded is released first. Instances counted with plain
    /// `allocate` (or by `place`) are never victims.
    pub fn allocate_instance(
        &mut self,
        node: &str,
        req: &InstanceRequest,
        instance: PlacedInstance,
    ) -> bool {
        self.release_instance(&instance.id);
        let Some(node_name) = self
            .nodes
            .get_key_value(node)
            .map(|(name, _)| Arc::clone(name))
        else {
            return false;
        };
        let fits = self.allocate(node, req);
        let id: Arc<str> = Arc::from(instance.id);
        let record = PlacedRecord {
            resources: req.resources(),
            host_ports: req.host_ports.clone(),
            disruption_budget: instance.disruption_budget.map(Arc::from),
            namespace: req.namespace.clone(),
            labels: req.labels.clone(),
            anti_affinity: req.required_instance_anti_affinity.clone(),
        };
        if let Some(state) = self.nodes.get_mut(node) {
            state
                .placed
                .insert((instance.priority, Arc::clone(&id)), record);
        }
        self.placed_at.insert(
            id,
            PlacedAt {
                node: node_name,
                priority: instance.priority,
            },
        );
        *self.priority_counts.entry(instance.priority).or_default() += 1;
        fits
    }

    /// Gives back what the recorded instance `id` took and forgets it.
    /// Returns false for an unknown id.
    pub fn release_instance(&mut self, id: &str) -> bool {
        let Some((id, at)) = self.placed_at.remove_entry(id) else {
            return false;
        };
        self.forget_priority(at.priority);
        let record = self
            .nodes
            .get_mut(&at.node)
            .and_then(|node| node.placed.remove(&(at.priority, id)));
        if let Some(record) = record {
            self.instances.remove(&at.node, record.member());
            self.give_back(&at.node, &record.resources, &record.host_ports);
        }
        true
    }

    /// Where `req` (of `priority`) can run after evicting recorded instances
    /// of strictly lower priority, and the cheapest such victims (see the
    /// module documentation for the order); `None` if no eviction helps. If
    /// `req` already fits, the node `place` would choose and no victims.
    ///
    /// An instance whose `disruption_budget` names a group of `budgets`
    /// counts against that group's allowed disruptions; one naming a group
    /// absent from `budgets` is never a victim. A node must pass every
    /// filter but resources and host ports as it is (inter-instance
    /// affinity and topology spread included: the victims still count
    /// there, which can only refuse a node that would do); resources and host ports are judged
    /// with the victims gone, and so are the embedder's node-scoped filters,
    /// but only on the node's cheapest victim set: if that fails, the node is
    /// skipped. A node whose search exceeds a fixed step budget is skipped
    /// too.
    pub fn preempt(
        &self,
        req: &InstanceRequest,
        priority: i32,
        budgets: &BTreeMap<String, DisruptionBudget>,
    ) -> Option<Preemption> {
        let rules = RequestRules::new(self, req);
        if let Some(node) = self.best_node(&rules, req) {
            return Some(Preemption {
                node: node.to_string(),
                victims: Vec::new(),
            });
        }
        let lowest = *self.priority_counts.keys().next()?;
        if lowest >= priority {
            return None;
        }
        // Nothing fits without a victim, so one victim of the lowest
        // priority anywhere cannot be beaten by a later name.
        let floor = VictimCost {
            count: 1,
            max_priority: lowest,
            priority_sum: i64::from(lowest),
        };
        let mut admitted: HashMap<ClassId, bool> = HashMap::default();
        let mut best: Option<Choice<'_>> = None;
        for name in &self.names {
            let Some(node) = self.nodes.get(name) else {
                continue;
            };
            // Every set here has at least one victim of at least the node's
            // lowest priority: skip nodes that cannot beat the best so far.
            let Some(&(lowest_here, _)) = node.placed.keys().next() else {
                continue;
            };
            let cheapest_here = VictimCost {
                count: 1,
                max_priority: lowest_here,
                priority_sum: i64::from(lowest_here),
            };
            if lowest_here >= priority
                || best
                    .as_ref()
                    .is_some_and(|choice| cheapest_here >= choice.cost)
            {
                continue;
            }
            let admits = *admitted.entry(node.class).or_insert_with(|| {
                self.classes
                    .get(&node.class)
                    .is_some_and(|class| self.class_score(class, req).is_some())
            });
            if !node.info.ready || !admits || rules.admit(&node.facts()).is_none() {
                continue;
            }
            let Some((problem, ids)) = node_problem(node, req, priority, budgets) else {
                continue;
            };
            let bound = best.as_ref().map(|choice| choice.cost);
            let Some((cost, picks)) = cheapest_victims(&problem, bound) else {
                continue;
            };
            let victims: Vec<Arc<str>> = picks.iter().map(|&pick| Arc::clone(ids[pick])).collect();
            if !self.node_filters_pass_without(node, req, &victims) {
                continue;
            }
            best = Some(Choice {
                cost,
                node: name,
                victims,
            });
            if cost == floor {
                break;
            }
        }
        best.map(|choice| Preemption {
            node: choice.node.to_string(),
            victims: choice.victims.iter().map(ToString::to_string).collect(),
        })
    }

    /// Counts one fewer recorded instance of `priority`.
    pub(super) fn forget_priority(&mut self, priority: i32) {
        if let Entry::Occupied(mut count) = self.priority_counts.entry(priority) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    /// Whether the embedder's node-scoped filters pass on `node` once
    /// `victims` are gone (the built-in ones pass by construction).
    fn node_filters_pass_without(
        &self,
        node: &NodeState,
        req: &InstanceRequest,
        victims: &[Arc<str>],
    ) -> bool {
        let mut custom = self
            .filters
            .iter()
            .filter(|filter| filter.scope == Scope::Node)
            .peekable();
        if custom.peek().is_none() {
            return true;
        }
        let (mut used, mut host_ports) = (node.used.clone(), node.host_ports.clone());
        for record in node
            .placed
            .iter()
            .filter(|((_, id), _)| victims.contains(id))
            .map(|(_, record)| record)
        {
            subtract_allocation(
                &mut used,
                &mut host_ports,
                &record.resources,
                &record.host_ports,
            );
        }
        let view = NodeView {
            info: &node.info,
            used: &used,
            host_ports_in_use: &host_ports,
        };
        custom.all(|filter| filter.extension.unfit_reasons(req, &view).is_empty())
    }
}

/// What `node` must free for `req` and whom it may evict (recorded
/// instances below `priority` within their budgets), with the victims' ids
/// in the same order; `None` when no eviction can make it fit.
fn node_problem<'a>(
    node: &'a NodeState,
    req: &'a InstanceRequest,
    priority: i32,
    budgets: &BTreeMap<String, DisruptionBudget>,
) -> Option<(NodeProblem, Vec<&'a Arc<str>>)> {
    let (allocatable, used) = (&node.info.allocatable, &node.used);
    let wanted = req.resources();
    let fixed = [
        Dimension::Slot,
        Dimension::Cpu,
        Dimension::Memory,
        Dimension::EphemeralStorage,
    ];
    let extended = req.extended.keys().map(|name| Dimension::Extended(name));
    let mut dimensions = Vec::new();
    let mut deficits = Vec::new();
    for dimension in fixed.into_iter().chain(extended) {
        let (allocatable, used, wanted) = (
            dimension.amount(allocatable),
            dimension.amount(used),
            dimension.amount(&wanted),
        );
        if wanted > allocatable {
            return None;
        }
        // Asking for none of a dimension fits even an over-committed node.
        if wanted == 0 {
            continue;
        }
        let deficit = (u128::from(used) + u128::from(wanted)).saturating_sub(allocatable.into());
        if deficit > 0 {
            dimensions.push(dimension);
            deficits.push(deficit);
        }
    }
    let taken_ports: Vec<(HostPort, usize)> = req
        .host_ports
        .iter()
        .filter_map(|port| Some((*port, *node.host_ports.get(port)?)))
        .collect();
    let mut budget_index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut allowances = Vec::new();
    let mut evictable = Vec::new();
    let mut ids = Vec::new();
    let mut port_holders = vec![0usize; taken_ports.len()];
    for ((victim_priority, id), record) in node
        .placed
        .iter()
        .take_while(|((victim_priority, _), _)| *victim_priority < priority)
    {
        let budget = match record.disruption_budget.as_deref() {
            None => None,
            // Outside any known budget: never a victim.
            Some(group) if !budgets.contains_key(group) => continue,
            Some(group) => {
                let next = budget_index.len();
                let index = *budget_index.entry(group).or_insert_with(|| {
                    allowances.push(
                        budgets
                            .get(group)
                            .map_or(0, DisruptionBudget::allowed_disruptions),
                    );
                    next
                });
                Some(index)
            }
        };
        let mut mandatory = false;
        for ((port, _), holders) in taken_ports.iter().zip(&mut port_holders) {
            if record.host_ports.contains(port) {
                mandatory = true;
                *holders += 1;
            }
        }
        evictable.push(Evictable {
            priority: *victim_priority,
            freed: dimensions
                .iter()
                .map(|dimension| u128::from(dimension.amount(&record.resources)))
                .collect(),
            budget,
            mandatory,
        });
        ids.push(id);
    }
    // A port also held by an instance that cannot be evicted stays taken.
    let ports_freeable = taken_ports
        .iter()
        .zip(&port_holders)
        .all(|((_, taken), holders)| holders >= taken);
    ports_freeable.then_some((
        NodeProblem {
            deficits,
            evictable,
            allowances,
        },
        ids,
    ))
}

#[cfg(test)]
mod tests;
