//! The accounted instances as label selectors see them: who runs where,
//! and which required anti-affinity terms they hold.
//!
//! Replicas of one workload share their namespace and labels, so instances
//! are kept per distinct (namespace, labels) with a count per node: a
//! selector is matched once per workload, not once per instance, and only
//! against the namespaces it covers.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

use foldhash::HashMap;
use std::sync::Arc;

use crate::instance_affinity::InstanceAffinityTerm;

/// Instances per node.
pub(super) type NodeCounts = HashMap<Arc<str>, usize>;

/// A required anti-affinity term held by accounted instances, with the
/// namespace it was stated in when that matters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct HeldTerm {
    /// Empty when the term lists its namespaces (or covers all): equal terms
    /// from different namespaces are then kept once.
    pub(super) owner_namespace: String,
    pub(super) term: InstanceAffinityTerm,
}

impl HeldTerm {
    fn new(owner_namespace: &str, term: &InstanceAffinityTerm) -> Self {
        let owner_namespace = if term.names_its_namespaces() {
            String::new()
        } else {
            owner_namespace.to_owned()
        };
        Self {
            owner_namespace,
            term: term.clone(),
        }
    }
}

/// What an instance puts on the books.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member<'a> {
    pub(super) namespace: &'a str,
    pub(super) labels: &'a BTreeMap<String, String>,
    pub(super) anti_affinity: &'a [InstanceAffinityTerm],
}

/// The accounted instances of a snapshot.
#[derive(Debug, Default)]
pub(super) struct InstanceBook {
    /// By namespace, then labels: the nodes running such instances.
    by_namespace: HashMap<String, HashMap<BTreeMap<String, String>, NodeCounts>>,
    /// Required anti-affinity terms: the nodes of the instances holding them.
    anti_affinity: HashMap<HeldTerm, NodeCounts>,
}

/// Counts one more instance on `node`.
fn count_in(counts: &mut NodeCounts, node: &Arc<str>) {
    *counts.entry(Arc::clone(node)).or_default() += 1;
}

/// Counts one fewer instance on `node`; returns whether `counts` is empty.
fn count_out(counts: &mut NodeCounts, node: &str) -> bool {
    if let Some(count) = counts.get_mut(node) {
        *count -= 1;
        if *count == 0 {
            counts.remove(node);
        }
    }
    counts.is_empty()
}

impl InstanceBook {
    /// Records `member` on `node`.
    pub(super) fn add(&mut self, node: &Arc<str>, member: Member<'_>) {
        let namespace = match self.by_namespace.get_mut(member.namespace) {
            Some(namespace) => namespace,
            None => self
                .by_namespace
                .entry(member.namespace.to_owned())
                .or_default(),
        };
        match namespace.get_mut(member.labels) {
            Some(counts) => count_in(counts, node),
            None => count_in(namespace.entry(member.labels.clone()).or_default(), node),
        }
        for term in member.anti_affinity {
            let held = HeldTerm::new(member.namespace, term);
            count_in(self.anti_affinity.entry(held).or_default(), node);
        }
    }

    /// Forgets one `member` on `node` (one recorded with the same fields).
    pub(super) fn remove(&mut self, node: &str, member: Member<'_>) {
        if let Some(namespace) = self.by_namespace.get_mut(member.namespace) {
            if namespace
                .get_mut(member.labels)
                .is_some_and(|counts| count_out(counts, node))
            {
                namespace.remove(member.labels);
            }
            if namespace.is_empty() {
                self.by_namespace.remove(member.namespace);
            }
        }
        for term in member.anti_affinity {
            if let Entry::Occupied(mut held) = self
                .anti_affinity
                .entry(HeldTerm::new(member.namespace, term))
                && count_out(held.get_mut(), node)
            {
                held.remove();
            }
        }
    }

    /// Forgets every instance on `node`.
    pub(super) fn remove_node(&mut self, node: &str) {
        for namespace in self.by_namespace.values_mut() {
            for counts in namespace.values_mut() {
                counts.remove(node);
            }
            namespace.retain(|_, counts| !counts.is_empty());
        }
        self.by_namespace
            .retain(|_, namespace| !namespace.is_empty());
        for counts in self.anti_affinity.values_mut() {
            counts.remove(node);
        }
        self.anti_affinity.retain(|_, counts| !counts.is_empty());
    }

    /// The nodes of the instances whose namespace passes `in_namespace` and
    /// whose labels pass `selected`, one entry per distinct labels.
    pub(super) fn nodes_of<'a>(
        &'a self,
        in_namespace: impl Fn(&str) -> bool + Copy + 'a,
        selected: impl Fn(&str, &BTreeMap<String, String>) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = &'a NodeCounts> + 'a {
        self.by_namespace
            .iter()
            .filter(move |(namespace, _)| in_namespace(namespace))
            .flat_map(move |(namespace, by_labels)| {
                by_labels
                    .iter()
                    .filter(move |(labels, _)| selected(namespace, labels))
                    .map(|(_, counts)| counts)
            })
    }

    /// The nodes of the instances `term` (stated in `owner_namespace`)
    /// selects.
    pub(super) fn selected_by<'a>(
        &'a self,
        owner_namespace: &'a str,
        term: &'a InstanceAffinityTerm,
    ) -> impl Iterator<Item = &'a NodeCounts> + 'a {
        self.nodes_of(
            move |namespace| term.namespace_selected(owner_namespace, namespace),
            move |namespace, labels| term.selects(owner_namespace, namespace, labels),
        )
    }

    /// The required anti-affinity terms held, with their holders' nodes.
    pub(super) fn held_anti_affinity(&self) -> impl Iterator<Item = (&HeldTerm, &NodeCounts)> {
        self.anti_affinity.iter()
    }
}
