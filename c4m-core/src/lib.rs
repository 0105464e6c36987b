//! The core of c4m: the resource model, manifests, and the seams the other
//! layers implement, with the data types they exchange. No I/O.
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
//! - **The runtime seam**: [`ContainerRuntime`], what a node's agent asks of
//!   a container driver, with [`ContainerSpec`] (derived from a Pod by
//!   [`ContainerSpec::from_pod`]) and [`ContainerStatus`]. The drivers live
//!   in `c4m-runtime`.
//! - **Health checks**: [`ProbeTracker`] applies a probe's timing and
//!   thresholds; a [`Prober`] runs its attempts.
//! - **Image references** ([`Reference`]), normalized as Docker does.
//! - With feature `spdy`, [`SpdyCodec`]: the SPDY/3.1 framing Kubernetes'
//!   exec and port-forward streams use. With `test-util`, fakes of the seams.
//!
//! ```
//! let documents = c4m_core::parse_documents(
//!     "shop.yaml",
//!     r#"
//! apiVersion: c4m.io/v1
//! kind: Microservice
//! metadata: {name: catalog}
//! spec:
//!   image: shop:1
//!   replicas: 2
//!   resources: {requests: {cpu: 250m, memory: 64Mi}}
//! "#,
//! )
//! .unwrap();
//! let validated = c4m_core::validate(&documents[0]).unwrap();
//! assert_eq!(validated.kind.kind, "Microservice");
//! assert_eq!(c4m_core::parse_memory_bytes("64Mi").unwrap(), 64 << 20);
//! ```

mod error;
mod image;
mod manifest;
mod model;
mod probe;
mod quantity;
mod reference;
mod runtime;
#[cfg(feature = "spdy")]
mod spdy;
#[cfg(feature = "test-util")]
pub mod testing;
mod time;

pub use error::{BoxError, Error, Result};
pub use image::{GcReport, Image, Layer};
pub use manifest::{
    Document, ManifestError, Validated, check_claim_spec, dns1123_label, parse_documents, validate,
    validate_value,
};
pub use model::kinds::{KINDS, ResourceKind};
pub use model::microservice::{Microservice, MicroserviceSpec, MicroserviceStatus};
pub use model::pod::{
    AUTO_DRIVER, CONTAINER_DRIVERS, DEFAULT_DRIVER, ONE_CONTAINER_DRIVERS, Requests,
    instance_driver, one_container_per_pod, pod_requests, pod_template_for_microservice,
    resolve_default_driver,
};
pub use model::pod_etc;
pub use model::pull_secrets::{registry_login, registry_of_config_key};
pub use model::volumes;
pub use model::vpc::{DEFAULT_VPC, Vpc, VpcSpec, cidrs_overlap, parse_vpc_cidr};
pub use model::{Instance, annotations, labels};
pub use probe::{ProbeFailure, ProbeTracker, Prober, probe_timeout};
pub use quantity::{format_cpu_millis, format_memory_bytes, parse_cpu_millis, parse_memory_bytes};
pub use reference::{InvalidReference, Reference, SHA256_PREFIX, sha256_hex};
pub use runtime::mounts;
pub use runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus, ExecOutput, ExecRequest,
    ExecSession, LogOptions, Mount, MountPropagation, PodContainer, PortBinding, PortSpec,
    PullPolicy, RegistryLogin, ResizeTerminal, ResourceLimits, ResourceUsage, TerminalSize,
};
#[cfg(feature = "spdy")]
pub use spdy::{SpdyCodec, SpdyError, SpdyFrame};
pub use time::{format_rfc3339, format_rfc3339_nanos, now_rfc3339, parse_rfc3339, seconds_since};
