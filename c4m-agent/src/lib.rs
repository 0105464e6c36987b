//! The c4m node agent, as a library another Rust service can embed.
//!
//! An [`Agent`] registers its node with the control plane, receives the set
//! of instances bound to the node, and runs them through
//! [`c4m_core::ContainerRuntime`] drivers: it starts what is missing, stops
//! what is no longer assigned, restarts exited instances with exponential
//! backoff, runs liveness and readiness probes, and reports status and
//! resource usage back.
//!
//! Invariants:
//! - The agent never writes to the store; it only reports to the control plane.
//! - The agent acts only on an assignment set it has received: while the
//!   control plane is unreachable, instances keep running untouched.
//! - A restarted agent adopts the containers its drivers still run instead
//!   of starting duplicates.
//!
//! Its drivers, network and prober come in one
//! [`c4m_plugin::NodeExtensions`]: [`Agent::detect`] finds what the node
//! offers, or an embedder hands its own (see `examples/one_driver.rs`):
//!
//! ```no_run
//! # async fn demo(config: c4m_agent::AgentConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use c4m_agent::Agent;
//!
//! let images = Agent::image_store(&config)?;
//! let extensions = Agent::detect(&config, &images).await?;
//! let agent = Agent::bind(config, extensions, images).await?;
//! agent.run(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`HollowAgents`] simulates many nodes from one process for scale tests:
//! the same session as a real agent, with every assigned instance reported
//! Running and Ready and nothing started.

mod agent;
mod claims;
mod edge;
mod error;
mod holder;
mod hollow;
mod hooks;
mod node_usage;
mod objects;
mod pod_etc;
mod pod_volumes;
mod server;
mod service_rules;
mod session;
mod stream;
mod supervisor;
mod volumes;

pub use agent::{Agent, AgentConfig, StorageConfig};
pub use c4m_mesh::proxy::routes::IngressPorts;
pub use c4m_mesh::{CniConfig, DNS_PORT, NetworkConfig};
pub use edge::GatewayConfig;
pub use error::{Error, Result};
pub use holder::{HOLDER_NAME, run_pod_holder_if_asked};
pub use hollow::{HollowAgents, HollowConfig};
pub use objects::{NodeObjects, ObjectSet};
pub use supervisor::RestartBackoff;
pub use volumes::VolumeTimers;
