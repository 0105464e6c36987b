//! c4m's networking layer: how instances reach each other and services.
//!
//! - **The seams**: [`Network`] (a node's instance network: VPCs, an
//!   address and a network namespace per instance), [`Overlay`] (what joins
//!   the nodes' slices of each VPC), [`ServiceLookup`] (what cluster DNS asks
//!   the service registry), with the data they exchange.
//! - **On a node** ([`InstanceNetwork`]): which VPC an instance joins, its
//!   attachment before its driver starts it, the DNS relay on each VPC
//!   gateway that takes instances' queries to the control plane, the
//!   `hostPort` proxies, and [`keep_overlay`].
//! - **Service virtual IPs** ([`ServiceTable`]): Services and their
//!   EndpointSlices as the plain data a node programs.
//! - With feature `linux`: `LinuxNetwork` (a bridge per VPC over netlink,
//!   nftables isolation), `CniNetwork` (a CNI plugin chain), `VxlanOverlay`,
//!   `ServiceRules` (Service virtual IPs in nftables, kube-proxy's way).
//! - With feature `dns`: `DnsServer`, the cluster DNS (`NAME.NAMESPACE.svc.<domain>`).
//! - With feature `routes`: `proxy::api`, the Gateway API kinds (GatewayClass,
//!   Gateway, HTTPRoute, GRPCRoute, ReferenceGrant) as serde types, and
//!   `proxy::routes`, those and `networking.k8s.io/v1` Ingresses validated
//!   and translated into route tables (no I/O).
//! - With feature `proxy`: `proxy`, the HTTP proxy core as tower layers over
//!   hyper 1, shared by the edge gateway and the mesh sidecar; and
//!   `gateway`, the edge gateway (listeners, TLS by SNI, reloads without
//!   dropping connections, graceful drain, an authenticated admin endpoint).
//!
//! ```
//! use c4m_mesh::{VpcNetwork, node_slice, search_domains};
//!
//! // The 4th node's slice of a /16 VPC, and its bridge.
//! let vpc = VpcNetwork { name: "blue".into(), subnet: node_slice("10.8.0.0/16".parse().unwrap(), 3).unwrap() };
//! assert_eq!(vpc.subnet.to_string(), "10.8.3.0/24");
//! assert_eq!(vpc.gateway().to_string(), "10.8.3.1");
//! assert_eq!(search_domains("shop", "c4m"), "shop.svc.c4m svc.c4m c4m");
//! ```

#[cfg(feature = "dns")]
mod dns;
mod error;
#[cfg(feature = "proxy")]
pub mod gateway;
#[cfg(feature = "linux")]
mod linux;
mod lookup;
mod network;
mod node;
mod overlay;
#[cfg(feature = "routes")]
pub mod proxy;
mod service_ips;
#[cfg(feature = "test-util")]
pub mod testing;

#[cfg(feature = "dns")]
pub use dns::{DNS_SCHEMA_VERSION, DnsError, DnsServer, RECORD_TTL_SECS, cluster_resolver};
pub use error::{Error, Result};
#[cfg(feature = "linux")]
pub use linux::{
    CniNetwork, LinuxNetwork, OVERLAY_DEVICE, SERVICE_TABLE, ServiceRules, SyncReport,
    VxlanOverlay, create_loopback_namespace, enter_network_namespace, remove_network_namespace,
};
pub use lookup::{DnsEndpoint, DnsName, DnsService, DnsServiceKind, FirstKnown, ServiceLookup};
pub use network::{
    Attachment, C4M_DOMAIN, DEFAULT_CLUSTER_DOMAIN, HostPort, Network, VpcNetwork, node_slice,
    search_domains,
};
pub use node::{CniConfig, DNS_PORT, InstanceNetwork, NetworkConfig, host_ports};
pub use overlay::{Overlay, OverlayPeer, OverlayVpc, changed_or_retry, keep_overlay};
pub use service_ips::{
    DEFAULT_AFFINITY_TIMEOUT_SECS, Protocol, SERVICE_NAME_LABEL, Selection, ServiceEndpoint,
    ServicePortName, ServicePortRules, ServiceTable,
};
