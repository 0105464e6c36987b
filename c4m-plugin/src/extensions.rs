//! What an embedder hands a control plane and a node's agent.

use std::fmt;
use std::sync::Arc;

use c4m_core::{ContainerRuntime, Prober};
use c4m_mesh::{Network, Overlay, ServiceLookup};
use c4m_sched::{Filter, Scorer};
use c4m_state::Store;

use crate::Admission;

/// The extension points of a control plane: where it keeps its state, and
/// what it adds to scheduling, admission and service discovery.
#[derive(Clone)]
pub struct ControlPlaneExtensions {
    /// The state store (`RedbStore`, or another [`Store`]).
    pub store: Arc<dyn Store>,
    /// Scheduler filters, after the built-in ones; every node an instance
    /// lands on passes each.
    pub filters: Vec<Arc<dyn Filter>>,
    /// Scheduler scorers with their weights, beside the built-in ones.
    pub scorers: Vec<(i64, Arc<dyn Scorer>)>,
    /// Admission hooks, in order.
    pub admission: Vec<Arc<dyn Admission>>,
    /// Answers cluster DNS for services the registry does not know (names
    /// outside c4m, say); the registry answers first.
    pub service_lookup: Option<Arc<dyn ServiceLookup>>,
}

impl ControlPlaneExtensions {
    /// A control plane over `store` with nothing added.
    pub fn new(store: Arc<dyn Store>) -> Self {
        ControlPlaneExtensions {
            store,
            filters: Vec::new(),
            scorers: Vec::new(),
            admission: Vec::new(),
            service_lookup: None,
        }
    }

    /// Adds a scheduler filter.
    pub fn with_filter(mut self, filter: impl Filter + 'static) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Adds a scheduler scorer counted `weight` times.
    pub fn with_scorer(mut self, weight: i64, scorer: impl Scorer + 'static) -> Self {
        self.scorers.push((weight, Arc::new(scorer)));
        self
    }

    /// Adds an admission hook after those already added.
    pub fn with_admission(mut self, hook: impl Admission) -> Self {
        self.admission.push(Arc::new(hook));
        self
    }

    /// Answers DNS for services the registry does not know.
    pub fn with_service_lookup(mut self, lookup: impl ServiceLookup) -> Self {
        self.service_lookup = Some(Arc::new(lookup));
        self
    }
}

impl fmt::Debug for ControlPlaneExtensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneExtensions")
            .field("filters", &self.filters)
            .field("scorers", &self.scorers)
            .field(
                "admission",
                &self
                    .admission
                    .iter()
                    .map(|hook| hook.name())
                    .collect::<Vec<_>>(),
            )
            .field("service_lookup", &self.service_lookup.is_some())
            .finish_non_exhaustive()
    }
}

/// The extension points of a node's agent: the drivers it runs instances
/// with, its instance network, and how it probes containers.
#[derive(Clone, Default)]
pub struct NodeExtensions {
    /// The container drivers; the node's default driver must be among them.
    pub runtimes: Vec<Arc<dyn ContainerRuntime>>,
    /// The instance network for drivers whose containers take a network
    /// namespace; None runs without VPCs.
    pub network: Option<Arc<dyn Network>>,
    /// What joins this node's VPC slices to the other nodes'.
    pub overlay: Option<Arc<dyn Overlay>>,
    /// Runs probe attempts; None: the agent's own (HTTP, TCP, exec, gRPC).
    pub prober: Option<Arc<dyn Prober>>,
}

impl NodeExtensions {
    /// No driver yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a container driver.
    pub fn with_runtime(mut self, runtime: impl ContainerRuntime) -> Self {
        self.runtimes.push(Arc::new(runtime));
        self
    }

    /// Instances join VPCs through `network`, which `overlay` (if any)
    /// joins to the other nodes'.
    pub fn with_network(
        mut self,
        network: Arc<dyn Network>,
        overlay: Option<Arc<dyn Overlay>>,
    ) -> Self {
        self.network = Some(network);
        self.overlay = overlay;
        self
    }

    /// Probes run through `prober`.
    pub fn with_prober(mut self, prober: impl Prober) -> Self {
        self.prober = Some(Arc::new(prober));
        self
    }
}

impl fmt::Debug for NodeExtensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeExtensions")
            .field(
                "runtimes",
                &self
                    .runtimes
                    .iter()
                    .map(|r| r.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("network", &self.network.is_some())
            .field("overlay", &self.overlay.is_some())
            .field("prober", &self.prober.is_some())
            .finish()
    }
}
