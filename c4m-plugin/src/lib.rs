//! c4m's extension points: what an embedder hands a control plane
//! ([`ControlPlaneExtensions`]: the state store, scheduler filters and
//! scorers that reach the live scheduler, admission hooks, service lookup)
//! and a node's agent ([`NodeExtensions`]: container drivers, the instance
//! network and overlay, the prober).
//!
//! Each point is a trait of the layer that owns it (`c4m_core`'s
//! `ContainerRuntime` and `Prober`, `c4m_sched`'s `Filter` and `Scorer`,
//! `c4m_state`'s `Store`, `c4m_mesh`'s `Network`, `Overlay` and
//! `ServiceLookup`) or, for admission, of this crate ([`Admission`]).
//!
//! ```
//! use std::sync::Arc;
//!
//! use c4m_plugin::ControlPlaneExtensions;
//! use c4m_sched::{Filter, InstanceRequest, NodeView, UnfitReason};
//!
//! /// Keeps instances off nodes labelled `maintenance`.
//! #[derive(Debug)]
//! struct NotInMaintenance;
//!
//! impl Filter for NotInMaintenance {
//!     fn unfit_reasons(&self, _: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
//!         if node.info.labels.contains_key("maintenance") {
//!             vec![UnfitReason::Custom("node is in maintenance".into())]
//!         } else {
//!             Vec::new()
//!         }
//!     }
//! }
//!
//! # fn demo(store: Arc<dyn c4m_state::Store>) {
//! let extensions = ControlPlaneExtensions::new(store).with_filter(NotInMaintenance);
//! assert_eq!(extensions.filters.len(), 1);
//! # }
//! ```

mod admission;
mod extensions;

pub use admission::{Admission, AdmissionRequest, Denied, Operation};
pub use extensions::{ControlPlaneExtensions, NodeExtensions};
