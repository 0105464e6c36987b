//! c4m's networking layer.
//!
//! This crate holds, so far, the HTTP side of it:
//! - [`proxy::api`]: the Gateway API kinds (GatewayClass, Gateway,
//!   HTTPRoute, GRPCRoute, ReferenceGrant) as serde types;
//! - [`proxy::routes`]: those and `networking.k8s.io/v1` Ingresses
//!   validated and translated into route tables (feature `routes`);
//! - [`proxy`]: the proxy core as tower layers over hyper 1, shared by the
//!   edge gateway and the mesh sidecar (feature `proxy`);
//! - [`gateway`]: the edge gateway: listeners, TLS by SNI, reloads without
//!   dropping connections, graceful drain, an authenticated admin endpoint
//!   (feature `proxy`).

#[cfg(feature = "routes")]
pub mod proxy;

#[cfg(feature = "proxy")]
pub mod gateway;
