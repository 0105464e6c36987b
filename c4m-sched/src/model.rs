//! What the scheduler knows about nodes and what instances ask for.

use std::collections::{BTreeMap, BTreeSet};

/// An amount of each schedulable resource, in integers so that accounting
/// never drifts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Number of instances (the Kubernetes "max pods" of a node).
    pub instances: u64,
}

impl Resources {
    /// `self - other` per dimension, stopping at zero: an over-committed node
    /// has nothing free, not a negative amount.
    pub fn saturating_sub(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            instances: self.instances.saturating_sub(other.instances),
        }
    }

    /// `self + other` per dimension, stopping at `u64::MAX`.
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            instances: self.instances.saturating_add(other.instances),
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique node name; also the tie-break between equally good nodes.
    pub name: String,
    /// What instances may use in total on this node.
    pub allocatable: Resources,
    /// Labels matched against [`InstanceRequest::node_selector`].
    pub labels: BTreeMap<String, String>,
    /// Container runtime drivers the node's agent offers.
    pub drivers: BTreeSet<String>,
    /// Whether the node accepts new instances.
    pub ready: bool,
}

/// What one instance needs from the node it is placed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceRequest {
    /// Requested CPU in millicores.
    pub cpu_millis: u64,
    /// Requested memory in bytes.
    pub memory_bytes: u64,
    /// Labels the node must carry, each with exactly this value.
    pub node_selector: BTreeMap<String, String>,
    /// Runtime driver the node must offer.
    pub driver: String,
}

impl InstanceRequest {
    /// The resources this instance takes: its CPU, its memory and one
    /// instance slot (taken even when CPU and memory are zero).
    pub fn resources(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            instances: 1,
        }
    }
}
