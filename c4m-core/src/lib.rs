//! The core of c4m: the resource model and the container runtime wrapper.
//!
//! - **Resource model**: Kubernetes-shaped objects. c4m's own kind is
//!   [`Microservice`] (`c4m.io/v1`); the unit the scheduler places is an
//!   *instance*, which is a Kubernetes `Pod` ([`Instance`]) so that a
//!   Kubernetes API view needs no translation. [`KINDS`] lists every kind c4m
//!   serves.
//! - **Manifests**: [`parse_documents`] and [`validate`] turn YAML or JSON
//!   (many documents per file) into checked objects, with warnings for fields
//!   c4m cannot honour and errors that name the file, document and field.
//! - **Quantities**: Kubernetes quantity syntax in integers
//!   ([`parse_cpu_millis`], [`parse_memory_bytes`]).
//! - **Runtime**: the [`ContainerRuntime`] trait and its `process` driver
//!   ([`ProcessRuntime`]), with cgroup limits (v1 or v2, detected).
//! - **Networking**: the [`Network`] seam and [`LinuxNetwork`]: a bridge
//!   per VPC, a network namespace, veth and address per instance; or
//!   [`CniNetwork`], a CNI plugin chain.
//! - **Health checks**: [`probe_once`] runs a Kubernetes probe (HTTP GET, TCP,
//!   exec, gRPC) against a container; [`ProbeTracker`] applies its thresholds.

mod cgroup;
mod error;
mod image;
mod manifest;
mod model;
mod network;
mod probe;
mod quantity;
mod runtime;
mod spdy;
mod time;

pub use error::{Error, Result};
pub use image::{
    GcReport, Image, ImageStore, Layer, Reference, RegistryCredentials, SHORT_ID_LEN,
    busybox_image_tar, pull, tar_directory, write_busybox_image, write_busybox_rootfs,
    write_oci_layout,
};
pub use manifest::{Document, ManifestError, Validated, parse_documents, validate, validate_value};
pub use model::kinds::{KINDS, ResourceKind};
pub use model::microservice::{Microservice, MicroserviceSpec, MicroserviceStatus};
pub use model::pod::{
    DEFAULT_DRIVER, Requests, instance_driver, pod_requests, pod_template_for_microservice,
};
pub use model::vpc::{DEFAULT_VPC, Vpc, VpcSpec, cidrs_overlap, parse_vpc_cidr};
pub use model::{Instance, annotations, labels};
pub use network::{
    Attachment, CniNetwork, HostPort, LinuxNetwork, Network, OVERLAY_DEVICE, OverlayPeer,
    OverlayVpc, VpcNetwork, VxlanOverlay, enter_network_namespace, node_slice, search_domains,
};
pub use probe::{ProbeTracker, probe_once};
pub use quantity::{format_cpu_millis, format_memory_bytes, parse_cpu_millis, parse_memory_bytes};
pub use runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus, ContainerdRuntime,
    CriRuntime, DockerRuntime, ExecOutput, ExecRequest, ExecSession, LogOptions, OciRuntime,
    PortBinding, PortSpec, ProcessRuntime, ResizeTerminal, ResourceLimits, ResourceUsage,
    TerminalSize, find_oci_binaries,
};
pub use spdy::{SpdyCodec, SpdyFrame};
pub use time::{format_rfc3339, now_rfc3339, seconds_since};
