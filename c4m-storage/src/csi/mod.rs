//! CSI (Container Storage Interface, spec v1.3.0): a [`VolumeBackend`] served
//! as a CSI driver on a unix socket ([`serve_driver`]), and a client that
//! drives any CSI driver in the order the spec gives ([`CsiClient`]).
//!
//! [`VolumeBackend`]: crate::VolumeBackend

mod backend;
mod client;
mod driver;

/// The CSI v1 messages and services, generated from the vendored `csi.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

pub use backend::CsiBackend;
pub use client::{ClientError, CsiClient, DriverInfo};
pub use driver::{CsiDriver, serve_driver};
