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
//!
//! # Example: a route table from Gateway API objects
//!
//! ```
//! # #[cfg(feature = "routes")] {
//! use c4m_mesh::proxy::api::{Gateway, GatewayClass, HttpRoute, decode};
//! use c4m_mesh::proxy::routes::{BackendTarget, Inputs, translate};
//! use serde_json::json;
//!
//! let classes: Vec<GatewayClass> = vec![decode(&json!({
//!     "metadata": {"name": "c4m"}, "spec": {"controllerName": "c4m.io/gateway"}
//! })).unwrap()];
//! let gateways: Vec<Gateway> = vec![decode(&json!({
//!     "metadata": {"name": "edge", "namespace": "shop"},
//!     "spec": {"gatewayClassName": "c4m", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
//! })).unwrap()];
//! let routes: Vec<HttpRoute> = vec![decode(&json!({
//!     "metadata": {"name": "web", "namespace": "shop"},
//!     "spec": {
//!         "parentRefs": [{"name": "edge"}],
//!         "hostnames": ["shop.example.com"],
//!         "rules": [{"matches": [{"path": {"value": "/api"}}], "backendRefs": [{"name": "api", "port": 8080}]}]
//!     }
//! })).unwrap()];
//! let inputs = Inputs { gateway_classes: &classes, gateways: &gateways, http_routes: &routes, ..Inputs::new("c4m.io/gateway") };
//! let translation = translate(&inputs);
//! assert!(translation.errors.is_empty());
//!
//! let listener = translation.config.listener(80).unwrap();
//! let request = http::Request::get("http://shop.example.com/api/items").body(()).unwrap();
//! let entry = listener.table.find(&request).unwrap();
//! let action = translation.config.action(entry.action);
//! assert!(matches!(&action.backends[0].target, BackendTarget::Service(s) if &*s.name == "api"));
//! # }
//! ```

#[cfg(feature = "proxy")]
pub mod gateway;
#[cfg(feature = "routes")]
pub mod proxy;
