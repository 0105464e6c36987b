//! Real peers for c4m's tests and benchmarks, each started by the test
//! that needs it and stopped when its handle drops: Debian's
//! `docker-registry` on loopback ([`Registry`]), containerd with its CRI
//! service ([`Containerd`]) and dockerd ([`Dockerd`]), each on a socket and
//! under a directory of its own; and simulated hosts ([`Hosts`]): network
//! namespaces on a switch, for multi-node networking.
//!
//! Nothing here mocks: a missing program is a panic naming the package to
//! install, never a skipped test. The crate does not depend on c4m's own
//! crates, so `c4m-core`'s unit tests can use it without building
//! `c4m-core` twice.

mod containerd;
mod daemon;
mod dockerd;
mod hosts;
mod registry;
mod wait;

pub use containerd::{Containerd, ContainerdOptions};
pub use dockerd::Dockerd;
pub use hosts::Hosts;
pub use registry::Registry;
pub use wait::{free_port, require_commands, wait_for};
