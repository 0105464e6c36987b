//! The c4m scheduler: places instances on nodes through a pipeline of
//! filters and scorers.
//!
//! Pure bookkeeping, no I/O and no async. The control plane keeps a
//! [`ClusterSnapshot`] of nodes ([`NodeInfo`]) and of the instances bound to
//! them, then places pending instances ([`InstanceRequest`]) one after the
//! other with [`ClusterSnapshot::place`]; each placement updates the snapshot
//! so the next one sees the resources and host ports taken. Quantities are
//! integers ([`Resources`]: millicores, bytes, instance slots, extended
//! resource counts) so accounting never drifts. When nothing fits,
//! [`Unschedulable`] says why, Kubernetes style.
//!
//! A node must pass every [`Filter`] (node selector, required node affinity
//! on labels and on the name (`matchFields`), taints, driver, resources,
//! host ports, inter-instance affinity and anti-affinity, `DoNotSchedule`
//! topology spread, and any the embedder adds); the fitting node with the
//! highest weighted total of [`Scorer`] scores wins (best fit or spread per
//! [`Strategy`], preferred node affinity, `PreferNoSchedule` taints,
//! preferred inter-instance affinity, `ScheduleAnyway` topology spread, and
//! any the embedder adds). A [`Policy`] ([`ClusterSnapshot::set_policy`])
//! switches built-in plugins off and weighs their scores.
//!
//! Nodes are grouped into classes of equal labels, drivers, taints and
//! allocatable, with an ordered index per class, so a placement costs
//! O(classes × log nodes) rather than a scan of every node. Labels whose
//! value is unique per node ([`HOSTNAME_LABEL`] by default,
//! [`ClusterSnapshot::set_per_node_label_keys`]) are left out of the
//! classes; a request that names such a value, or whose inter-instance
//! rules or spread count instances in such a domain, has the few nodes
//! concerned judged one by one, found through an index from value to nodes.
//! The instances accounted are kept per namespace and labels, so a
//! selector is matched once per workload rather than once per instance.
//! [`Scope`] says which extensions keep the fast path.
//!
//! When an instance fits nowhere, [`ClusterSnapshot::preempt`] finds the
//! node and the cheapest set of lower-priority instances (recorded with
//! [`ClusterSnapshot::allocate_instance`]) whose eviction makes it fit,
//! within their [`DisruptionBudget`]s.
//!
//! ```
//! use std::collections::BTreeSet;
//!
//! use c4m_sched::{ClusterSnapshot, InstanceRequest, NodeInfo, Resources};
//!
//! let mut cluster = ClusterSnapshot::new();
//! for (name, cpu_millis) in [("small", 1_000), ("large", 8_000)] {
//!     cluster.upsert_node(NodeInfo {
//!         name: name.into(),
//!         allocatable: Resources { cpu_millis, memory_bytes: 4 << 30, instances: 110, ..Resources::default() },
//!         drivers: BTreeSet::from(["process".into()]),
//!         ready: true,
//!         ..NodeInfo::default()
//!     });
//! }
//! let request = InstanceRequest { cpu_millis: 2_000, memory_bytes: 1 << 30, ..InstanceRequest::default() };
//! assert_eq!(cluster.place(&request).unwrap(), "large");
//! // Kubernetes' explanation when nothing fits.
//! let huge = InstanceRequest { cpu_millis: 16_000, ..InstanceRequest::default() };
//! assert!(cluster.place(&huge).unwrap_err().to_string().contains("2 node(s) had insufficient cpu"));
//! ```

mod affinity;
mod filters;
mod fit;
mod instance_affinity;
mod labels;
mod model;
mod pipeline;
mod policy;
mod scorers;
mod snapshot;
mod taint;
mod unschedulable;
mod victims;
mod wide;

pub use affinity::{
    NODE_NAME_FIELD, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    PreferredSchedulingTerm,
};
pub use filters::{
    DriverOffered, HostPorts, NodeSelector, RequiredNodeAffinity, ResourcesFit, TaintToleration,
    VolumeBinding,
};
pub use instance_affinity::{
    HOSTNAME_LABEL, InstanceAffinityTerm, TopologySpreadConstraint, WeightedInstanceAffinityTerm,
    WhenUnsatisfiable,
};
pub use labels::{LabelSelector, LabelSelectorOperator, LabelSelectorRequirement};
pub use model::{
    DisruptionBudget, HostPort, InstanceRequest, NodeInfo, PlacedInstance, Preemption, Protocol,
    Resources, Strategy, VolumeNodes,
};
pub use pipeline::{Filter, NodeView, Scope, Scorer};
pub use policy::{
    FILTERS, MANDATORY_FILTERS, MAX_WEIGHT, Policy, PolicyError, SCORERS, filter_names,
    scorer_names,
};
pub use scorers::{BestFit, MAX_NODE_SCORE, PreferNoScheduleTaints, PreferredNodeAffinity, Spread};
pub use snapshot::ClusterSnapshot;
pub use taint::{Taint, TaintEffect, Toleration, TolerationOperator};
pub use unschedulable::{UnfitReason, Unschedulable};
