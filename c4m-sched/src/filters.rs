//! The built-in filters, in the order the snapshot runs them.

use crate::labels::{LabelValue, NodeFacts};
use crate::model::InstanceRequest;
use crate::pipeline::{Filter, NodeView, Scope};
use crate::policy::filter_names;
use crate::taint::tolerated;
use crate::unschedulable::UnfitReason;

impl NodeView<'_> {
    /// The node as the label rules read it.
    pub(crate) fn facts(&self) -> NodeFacts<'_> {
        NodeFacts::node(&self.info.name, &self.info.labels)
    }
}

/// Whether `node` carries every label of `req`'s node selector.
pub(crate) fn node_selector_matches(req: &InstanceRequest, node: &NodeFacts<'_>) -> bool {
    req.node_selector
        .iter()
        .all(|(key, value)| node.label(key) == LabelValue::Is(value))
}

/// Whether `node` matches a term of `req`'s required node affinity (or it
/// has none).
pub(crate) fn required_node_affinity_matches(req: &InstanceRequest, node: &NodeFacts<'_>) -> bool {
    req.required_affinity.is_empty()
        || req
            .required_affinity
            .iter()
            .any(|term| term.matches_facts(node))
}

/// The node carries every label of the instance's node selector.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeSelector;

impl NodeSelector {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = filter_names::NODE_SELECTOR;
}

impl Filter for NodeSelector {
    /// [`Scope::Node`]: per-node labels (the hostname) may be selected. The
    /// snapshot still judges it once per class unless they are.
    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        reason_unless(node_selector_matches(req, &node.facts()), || {
            UnfitReason::NodeAffinityMismatch
        })
    }
}

/// The node matches at least one term of the instance's required node
/// affinity (when it has any), on its labels and its name.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequiredNodeAffinity;

impl RequiredNodeAffinity {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = filter_names::NODE_AFFINITY;
}

impl Filter for RequiredNodeAffinity {
    /// [`Scope::Node`]: terms may name per-node labels or the node's name.
    /// The snapshot still judges it once per class unless they do.
    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        reason_unless(required_node_affinity_matches(req, &node.facts()), || {
            UnfitReason::NodeAffinityMismatch
        })
    }
}

/// The instance tolerates every `NoSchedule` and `NoExecute` taint of the
/// node.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaintToleration;

impl TaintToleration {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = filter_names::TAINT_TOLERATION;
}

impl Filter for TaintToleration {
    fn scope(&self) -> Scope {
        Scope::Class
    }

    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        node.info
            .taints
            .iter()
            .find(|taint| taint.effect.forbids_placement() && !tolerated(&req.tolerations, taint))
            .map(|taint| UnfitReason::UntoleratedTaint {
                key: taint.key.clone(),
                value: taint.value.clone(),
            })
            .into_iter()
            .collect()
    }
}

/// The node offers the instance's runtime driver.
#[derive(Clone, Copy, Debug, Default)]
pub struct DriverOffered;

impl DriverOffered {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = filter_names::DRIVER;
}

impl Filter for DriverOffered {
    fn scope(&self) -> Scope {
        Scope::Class
    }

    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        let Some(driver) = &req.driver else {
            return Vec::new();
        };
        reason_unless(node.info.drivers.contains(driver), || {
            UnfitReason::MissingDriver(driver.clone())
        })
    }
}

/// The node has a free instance slot and enough free CPU, memory, ephemeral
/// storage and extended resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResourcesFit;

impl ResourcesFit {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = filter_names::NODE_RESOURCES_FIT;
}

impl Filter for ResourcesFit {
    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        let (allocatable, used) = (&node.info.allocatable, node.used);
        let short =
            |allocatable: u64, used: u64, wanted: u64| allocatable.saturating_sub(used) < wanted;
        let mut reasons = Vec::new();
        let dimensions = [
            (
                allocatable.instances,
                used.instances,
                1,
                UnfitReason::TooManyInstances,
            ),
            (
                allocatable.cpu_millis,
                used.cpu_millis,
                req.cpu_millis,
                UnfitReason::InsufficientCpu,
            ),
            (
                allocatable.memory_bytes,
                used.memory_bytes,
                req.memory_bytes,
                UnfitReason::InsufficientMemory,
            ),
            (
                allocatable.ephemeral_storage_bytes,
                used.ephemeral_storage_bytes,
                req.ephemeral_storage_bytes,
                UnfitReason::InsufficientEphemeralStorage,
            ),
        ];
        for (allocatable, used, wanted, reason) in dimensions {
            if short(allocatable, used, wanted) {
                reasons.push(reason);
            }
        }
        for (name, wanted) in &req.extended {
            if short(allocatable.extended(name), used.extended(name), *wanted) {
                reasons.push(UnfitReason::InsufficientExtended(name.clone()));
            }
        }
        reasons
    }
}

/// None of the instance's host ports is taken on the node.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostPorts;

impl HostPorts {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = filter_names::NODE_PORTS;
}

impl Filter for HostPorts {
    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        let free = req
            .host_ports
            .iter()
            .all(|port| !node.host_ports_in_use.contains_key(port));
        reason_unless(free, || UnfitReason::HostPortTaken)
    }
}

/// Keeps an instance to the nodes its persistent volumes allow
/// ([`crate::VolumeNodes`]), with Kubernetes' VolumeBinding reasons.
#[derive(Debug, Clone, Copy)]
pub struct VolumeBinding;

impl Filter for VolumeBinding {
    fn unfit_reasons(&self, req: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        let Some(volumes) = &req.volume_nodes else {
            return Vec::new();
        };
        let allows = |nodes: &Option<std::collections::BTreeSet<String>>| {
            nodes.as_ref().is_none_or(|n| n.contains(&node.info.name))
        };
        if !allows(&volumes.affinity) {
            return vec![UnfitReason::VolumeNodeAffinityConflict];
        }
        reason_unless(allows(&volumes.storage), || UnfitReason::NotEnoughStorage)
    }
}

/// No reason when `passes`, else the one `reason` makes.
fn reason_unless(passes: bool, reason: impl FnOnce() -> UnfitReason) -> Vec<UnfitReason> {
    if passes { Vec::new() } else { vec![reason()] }
}
