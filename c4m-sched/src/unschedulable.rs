//! Why an instance fits on no node, summarised Kubernetes style.

use std::fmt;

/// Why one node cannot take an instance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnfitReason {
    /// The node is not ready.
    NotReady,
    /// The node's labels fail the node selector or the required node
    /// affinity (one reason, as in Kubernetes).
    NodeAffinityMismatch,
    /// The node has a `NoSchedule` or `NoExecute` taint the instance does not
    /// tolerate (the first such taint).
    UntoleratedTaint {
        /// Taint key.
        key: String,
        /// Taint value.
        value: String,
    },
    /// The node does not offer the requested driver.
    MissingDriver(String),
    /// A requested host port is already taken on the node.
    HostPortTaken,
    /// Every instance slot of the node is taken.
    TooManyInstances,
    /// Not enough free CPU.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
    /// Not enough free ephemeral storage.
    InsufficientEphemeralStorage,
    /// Not enough of this extended resource.
    InsufficientExtended(String),
    /// Placing the instance would break one of its required inter-instance
    /// affinity terms.
    InstanceAffinityMismatch,
    /// The node's domain runs an instance that the incoming one's required
    /// anti-affinity selects.
    InstanceAntiAffinityMismatch,
    /// An instance in the node's domain has a required anti-affinity term
    /// that selects the incoming one.
    ExistingAntiAffinityMismatch,
    /// The node lacks the topology key of a `DoNotSchedule` spread constraint.
    TopologySpreadMissingLabel,
    /// Placing the instance would exceed the `max_skew` of a `DoNotSchedule`
    /// spread constraint.
    TopologySpreadMismatch,
    /// A bound persistent volume's node affinity excludes the node.
    VolumeNodeAffinityConflict,
    /// The node has no room for a volume to provision there.
    NotEnoughStorage,
    /// An embedder's filter refused the node; the text follows "N node(s)".
    Custom(String),
}

impl fmt::Display for UnfitReason {
    /// The predicate that follows "N node(s)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady => f.write_str("were not ready"),
            Self::NodeAffinityMismatch => f.write_str("didn't match Pod's node affinity/selector"),
            Self::UntoleratedTaint { key, value } => {
                write!(f, "had untolerated taint {{{key}: {value}}}")
            }
            Self::MissingDriver(driver) => write!(f, "lacked driver {driver:?}"),
            Self::HostPortTaken => {
                f.write_str("didn't have free ports for the requested pod ports")
            }
            Self::TooManyInstances => f.write_str("had too many instances"),
            Self::InsufficientCpu => f.write_str("had insufficient cpu"),
            Self::InsufficientMemory => f.write_str("had insufficient memory"),
            Self::InsufficientEphemeralStorage => f.write_str("had insufficient ephemeral-storage"),
            Self::InsufficientExtended(name) => write!(f, "had insufficient {name}"),
            Self::InstanceAffinityMismatch => f.write_str("didn't match pod affinity rules"),
            Self::InstanceAntiAffinityMismatch => {
                f.write_str("didn't match pod anti-affinity rules")
            }
            Self::ExistingAntiAffinityMismatch => {
                f.write_str("didn't satisfy existing pods anti-affinity rules")
            }
            Self::TopologySpreadMissingLabel => {
                f.write_str("didn't match pod topology spread constraints (missing required label)")
            }
            Self::TopologySpreadMismatch => {
                f.write_str("didn't match pod topology spread constraints")
            }
            Self::VolumeNodeAffinityConflict => f.write_str("had volume node affinity conflict"),
            Self::NotEnoughStorage => f.write_str("did not have enough free storage"),
            Self::Custom(text) => f.write_str(text),
        }
    }
}

/// No node can take an instance. Displays like Kubernetes:
/// `0/3 nodes are available: 1 node(s) were not ready, 2 node(s) had insufficient cpu.`
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("0/{total_nodes} nodes are available{}", summary(.reasons))]
pub struct Unschedulable {
    /// Number of nodes considered (all nodes of the snapshot).
    pub total_nodes: usize,
    /// Each reason with the number of nodes it applies to, by ascending count
    /// then reason. A node short of several resources counts once for each,
    /// so the counts may add up to more than `total_nodes`.
    pub reasons: Vec<(UnfitReason, usize)>,
}

/// `": 1 node(s) were not ready, 2 node(s) had insufficient cpu."`, or `"."`
/// when there is no node at all.
fn summary(reasons: &[(UnfitReason, usize)]) -> String {
    let parts: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} node(s) {reason}"))
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        format!(": {}.", parts.join(", "))
    }
}
