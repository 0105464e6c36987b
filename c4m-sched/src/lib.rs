//! The c4m scheduler: best-fit placement of instances on nodes.
//!
//! Pure bookkeeping, no I/O and no async. The control plane keeps a
//! [`ClusterSnapshot`] of nodes ([`NodeInfo`]) and of the instances bound to
//! them, then places pending instances ([`InstanceRequest`]) one after the
//! other with [`ClusterSnapshot::place`]; each placement updates the snapshot
//! so the next one sees the resources taken. Quantities are integers
//! ([`Resources`]: millicores, bytes, instance slots) so accounting never
//! drifts. When nothing fits, [`Unschedulable`] says why, Kubernetes style.
//!
//! Placement is best fit: the fitting node left with the least free CPU and
//! memory (each relative to the node's allocatable) wins, ties going to the
//! smallest node name. Nodes are grouped by shape (labels, drivers,
//! allocatable) with an ordered index per shape, so a placement costs
//! O(shapes × log nodes) rather than a scan of every node.

mod model;
mod snapshot;
mod unschedulable;
mod wide;

pub use model::{InstanceRequest, NodeInfo, Resources};
pub use snapshot::ClusterSnapshot;
pub use unschedulable::{UnfitReason, Unschedulable};
