//! The c4m control plane, as a library another Rust service can embed.
//!
//! [`ControlPlane`] binds and runs every part over one [`c4m_state::Store`]:
//!
//! - the **HTTP/JSON API** (Kubernetes paths and list/watch semantics for
//!   every kind, batch apply, the service registry, instance metrics and logs);
//! - the **agent service** (gRPC): node registration, heartbeats, streams of
//!   assigned instances, status reports;
//! - **controllers**: workloads (Microservice, Deployment → instances, with
//!   rolling replacement and garbage collection), node lifecycle (NotReady,
//!   eviction), endpoints (the service registry), disruption budgets
//!   (PodDisruptionBudget status);
//! - **admission** of instances (priority from their PriorityClass);
//! - the **scheduler** loop around `c4m-sched`, with its policy served and
//!   audited over HTTP;
//! - a **DNS** server answering `NAME.NAMESPACE.svc.<cluster domain>` and
//!   `NAME.NAMESPACE.svc.c4m` per Kubernetes' DNS specification.
//!
//! Everything reads from one in-memory mirror of the store and writes
//! through compare-and-swap; nothing but this crate writes to the store.
//!
//! What an embedder adds (the store, scheduler filters and scorers,
//! admission hooks, a service lookup) comes in one
//! [`c4m_plugin::ControlPlaneExtensions`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use c4m_control::{ControlPlane, ControlPlaneConfig};
//! use c4m_plugin::ControlPlaneExtensions;
//!
//! let store = c4m_state::RedbStore::open("/var/lib/c4m/store.redb".as_ref())?;
//! let control = ControlPlane::bind(
//!     ControlPlaneConfig::default(),
//!     ControlPlaneExtensions::new(Arc::new(store)),
//! )
//! .await?;
//! println!("API on {}", control.api_addr());
//! control.run(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```

mod admission;
mod agents;
mod api;
mod autoscaling_v1;
mod bookmarks;
mod cache;
mod connections;
mod container_events;
mod controllers;
mod deletion;
mod discovery;
mod disruption;
mod dry_run;
mod ephemeral;
mod error;
mod events;
mod events_view;
mod invalid;
mod json;
mod metrics;
mod node_objects;
mod objects;
mod openapi_schemas;
mod pagination;
mod panics;
mod patch;
mod pod_volumes;
mod pods;
mod protobuf;
mod pull_secrets;
mod registry;
mod scheduler;
mod scheduler_policy;
mod selector;
mod server;
mod server_side_apply;
mod service_addresses;
mod service_env;
mod status;
mod streams;
mod tables;
#[cfg(test)]
mod test_support;
mod tls;
mod version_view;
mod volume_reports;

pub use connections::ConnectionLimits;
pub use error::{Error, FieldCause, Result};
pub use objects::Objects;
pub use protobuf::ProtobufError;
pub use server::{ControlPlane, ControlPlaneConfig};
pub use service_addresses::{RangeError, ServiceRanges};
pub use tls::TlsIdentity;
