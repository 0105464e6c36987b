//! What the scheduler knows about nodes and what instances ask for.

use std::collections::{BTreeMap, BTreeSet};

use crate::affinity::{NodeSelectorTerm, PreferredSchedulingTerm};
use crate::instance_affinity::{
    InstanceAffinityTerm, TopologySpreadConstraint, WeightedInstanceAffinityTerm,
};
use crate::taint::{Taint, Toleration};

/// An amount of each schedulable resource, in integers so that accounting
/// never drifts.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Local ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
    /// Number of instances (the Kubernetes "max pods" of a node).
    pub instances: u64,
    /// Extended resources by name (`nvidia.com/gpu`), as integer counts; a
    /// missing name is zero.
    pub extended: BTreeMap<String, u64>,
}

impl Resources {
    /// `self - other` per dimension, stopping at zero: an over-committed node
    /// has nothing free, not a negative amount. Extended resources absent
    /// from `self` stay absent.
    pub fn saturating_sub(&self, other: &Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_sub(other.ephemeral_storage_bytes),
            instances: self.instances.saturating_sub(other.instances),
            extended: self
                .extended
                .iter()
                .map(|(name, amount)| (name.clone(), amount.saturating_sub(other.extended(name))))
                .collect(),
        }
    }

    /// `self + other` per dimension, stopping at `u64::MAX`.
    pub fn saturating_add(&self, other: &Self) -> Self {
        let mut extended = self.extended.clone();
        for (name, amount) in &other.extended {
            let total = extended.entry(name.clone()).or_default();
            *total = total.saturating_add(*amount);
        }
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_add(other.ephemeral_storage_bytes),
            instances: self.instances.saturating_add(other.instances),
            extended,
        }
    }

    /// The amount of the extended resource `name` (zero when absent).
    pub fn extended(&self, name: &str) -> u64 {
        self.extended.get(name).copied().unwrap_or(0)
    }
}

/// Transport protocol of a host port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP, the Kubernetes default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A port on the node's network that an instance binds. The host IP is not
/// modelled: every host port is taken on all addresses, which can only
/// refuse a placement Kubernetes would allow, never allow a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// Port number.
    pub port: u16,
    /// Protocol; the same number over another protocol does not conflict.
    pub protocol: Protocol,
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique node name; also the tie-break between equally good nodes.
    pub name: String,
    /// What instances may use in total on this node.
    pub allocatable: Resources,
    /// Labels matched against node selectors and node affinity.
    pub labels: BTreeMap<String, String>,
    /// Container runtime drivers the node's agent offers.
    pub drivers: BTreeSet<String>,
    /// Taints repelling instances that do not tolerate them.
    pub taints: Vec<Taint>,
    /// Whether the node accepts new instances.
    pub ready: bool,
}

/// How to choose among the nodes that can take an instance. Serialized
/// as `bestfit` or `spread`, the values of the placement annotation.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The node left with the least free CPU and memory: packs nodes tight.
    #[default]
    BestFit,
    /// The node left with the most free CPU and memory (least allocated):
    /// spreads instances out.
    Spread,
}

/// What one instance needs from the node it is placed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceRequest {
    /// Requested CPU in millicores.
    pub cpu_millis: u64,
    /// Requested memory in bytes.
    pub memory_bytes: u64,
    /// Requested local ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
    /// Requested extended resources by name, as integer counts.
    pub extended: BTreeMap<String, u64>,
    /// Labels the node must carry, each with exactly this value.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: the node must match at least one term. Empty
    /// means no constraint.
    pub required_affinity: Vec<NodeSelectorTerm>,
    /// Preferred node affinity: each matching term adds its weight to the
    /// node's score.
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    /// Taints this instance tolerates.
    pub tolerations: Vec<Toleration>,
    /// Host ports the instance binds; a node where one is taken does not fit.
    pub host_ports: Vec<HostPort>,
    /// Runtime driver the node must offer; `None`: any node, whose default
    /// driver runs it.
    pub driver: Option<String>,
    /// How to choose among fitting nodes. The caller fills it, with the
    /// policy's `default_strategy` when the instance does not choose.
    pub strategy: Strategy,
    /// The instance's namespace: what its affinity terms and spread
    /// constraints count by default, and what other instances' terms see.
    pub namespace: String,
    /// The instance's own labels, which other instances' selectors match.
    pub labels: BTreeMap<String, String>,
    /// Required inter-instance affinity: every term must hold on the node.
    pub required_instance_affinity: Vec<InstanceAffinityTerm>,
    /// Required inter-instance anti-affinity: no term may hold on the node.
    /// Accounted instances keep theirs: it also repels instances they select.
    pub required_instance_anti_affinity: Vec<InstanceAffinityTerm>,
    /// Preferred inter-instance affinity.
    pub preferred_instance_affinity: Vec<WeightedInstanceAffinityTerm>,
    /// Preferred inter-instance anti-affinity.
    pub preferred_instance_anti_affinity: Vec<WeightedInstanceAffinityTerm>,
    /// Topology spread constraints.
    pub topology_spread: Vec<TopologySpreadConstraint>,
    /// The nodes the instance's persistent volumes allow, as the embedder
    /// resolved them from its claims; `None`: no volume limits it.
    pub volume_nodes: Option<VolumeNodes>,
}

/// Where an instance's persistent volumes let it go, as Kubernetes'
/// VolumeBinding plugin decides: a bound volume's node affinity, and room
/// for the volumes still to provision on the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeNodes {
    /// The nodes every bound volume's node affinity matches; `None`: no
    /// bound volume is pinned.
    pub affinity: Option<std::collections::BTreeSet<String>>,
    /// The nodes with room for every volume to provision there; `None`:
    /// nothing to provision on the node.
    pub storage: Option<std::collections::BTreeSet<String>>,
}

impl InstanceRequest {
    /// The resources this instance takes: what it requests and one instance
    /// slot (taken even when everything else is zero).
    pub fn resources(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            ephemeral_storage_bytes: self.ephemeral_storage_bytes,
            instances: 1,
            extended: self.extended.clone(),
        }
    }
}

/// An instance bound to a node, as preemption sees it: who it is, how
/// important, and which disruption budget limits evicting it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacedInstance {
    /// Unique id (the control plane uses `namespace/name`); names victims.
    pub id: String,
    /// Only instances of strictly lower priority than a preemptor's can be
    /// its victims.
    pub priority: i32,
    /// The disruption budget group it belongs to, if any (a key of the
    /// budgets given to [`crate::ClusterSnapshot::preempt`]).
    pub disruption_budget: Option<String>,
}

/// How many members of a disruption budget group may be unavailable, and
/// how many are: a preemption may evict at most the difference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisruptionBudget {
    /// Members that may be unavailable at once.
    pub max_unavailable: u64,
    /// Members unavailable now (not ready, pending or being evicted).
    pub unavailable: u64,
}

impl DisruptionBudget {
    /// How many more members may be evicted now.
    pub fn allowed_disruptions(&self) -> u64 {
        self.max_unavailable.saturating_sub(self.unavailable)
    }
}

/// Where a preemptor goes and whom it evicts there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preemption {
    /// The node the preemptor fits on once the victims are gone.
    pub node: String,
    /// Ids of the instances to evict, by ascending priority then id; empty
    /// when the preemptor already fits.
    pub victims: Vec<String>,
}
