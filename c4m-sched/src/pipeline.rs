//! The extension points: filters decide whether a node can take an
//! instance, scorers rank the nodes that can.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{HostPort, InstanceRequest, NodeInfo, Resources};
use crate::unschedulable::UnfitReason;

/// What a filter's verdict or a scorer's score depends on. The snapshot
/// groups nodes into classes of equal labels, drivers, taints and
/// allocatable resources and keeps an index per class; the scope says how
/// much of that fast path a filter or scorer keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only the node's labels, drivers, taints and allocatable resources:
    /// evaluated once per class, on a view whose name is empty, whose node
    /// has nothing allocated and which lacks the per-node labels (see
    /// [`crate::ClusterSnapshot::set_per_node_label_keys`]). Keeps the fast
    /// path.
    Class,
    /// Anything about the node, including its name and allocations. A
    /// filter is evaluated on each candidate while walking a class index
    /// (cheap: usually the first candidate passes); a scorer makes every
    /// placement scan all fitting nodes (slow path).
    Node,
}

/// A node as filters and scorers see it.
#[derive(Clone, Copy, Debug)]
pub struct NodeView<'a> {
    /// The node's description.
    pub info: &'a NodeInfo,
    /// What the instances on the node take (may exceed allocatable).
    pub used: &'a Resources,
    /// Host ports taken on the node, with how many instances took each.
    pub host_ports_in_use: &'a BTreeMap<HostPort, usize>,
}

/// Decides whether a node can take an instance.
pub trait Filter: fmt::Debug + Send + Sync {
    /// What the verdict depends on; [`Scope::Node`] unless overridden.
    fn scope(&self) -> Scope {
        Scope::Node
    }

    /// Why `node` cannot take `req`; empty when it can. The reasons are
    /// counted in [`crate::Unschedulable`] when no node fits.
    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason>;
}

/// Ranks a node that passed every filter; the node with the highest total
/// of weight × score wins.
pub trait Scorer: fmt::Debug + Send + Sync {
    /// What the score depends on; [`Scope::Node`] unless overridden.
    fn scope(&self) -> Scope {
        Scope::Node
    }

    /// The node's score for `req`: higher is better.
    fn score(&self, req: &InstanceRequest, node: &NodeView<'_>) -> i64;
}

/// A shared filter (an embedder's, handed to every cycle's snapshot).
impl<F: Filter + ?Sized> Filter for std::sync::Arc<F> {
    fn scope(&self) -> Scope {
        (**self).scope()
    }

    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        (**self).unfit_reasons(req, node)
    }
}

/// A shared scorer (an embedder's, handed to every cycle's snapshot).
impl<S: Scorer + ?Sized> Scorer for std::sync::Arc<S> {
    fn scope(&self) -> Scope {
        (**self).scope()
    }

    fn score(&self, req: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        (**self).score(req, node)
    }
}
