//! The route model: Gateway API and Ingress objects, validated and
//! translated into one route table per listener port.
//!
//! [`translate`] reads the objects ([`Inputs`]) and gives a [`RouteConfig`]:
//! per port a [`RouteTable`] (virtual hosts of [`RouteEntry`]s in Gateway
//! API precedence order) and the [`RouteAction`]s the entries point at,
//! plus a [`RouteError`] for every object or field it refused, naming the
//! object and the field. Everything here is plain data with no I/O, so an
//! API server can validate routes with it; the proxy binds a
//! configuration to live backends, limiters and metrics.

mod action;
mod error;
mod host;
mod matching;
mod table;
mod translate;

pub use action::{
    BackendTarget, HeaderModifier, Mirror, ObjectRef, PathModifier, RateLimit, Redirect, Rewrite,
    RouteAction, RouteProtocol, Scheme, ServicePort, ServiceRef, Timeouts, WeightedBackend,
};
pub use error::{Problem, RouteError};
pub use host::{HostPattern, HostnameError};
pub use matching::{HeaderMatch, PathMatch, QueryMatch, RequestMatch, ValueMatch};
pub use table::{ActionId, RouteEntry, RouteOrder, RouteTable, RouteTableBuilder};
pub use translate::{
    Attachment, ClusterObjects, CompiledRule, DEFAULT_CLASS_ANNOTATION, Decoded,
    GATEWAY_CONTROLLER, INGRESS_CONTROLLER, IngressPorts, Inputs, ListenerRoutes, ParentAttachment,
    RATE_LIMIT_ANNOTATION, RATE_LIMIT_BURST_ANNOTATION, RouteConfig, SSL_REDIRECT_ANNOTATION,
    TRANSLATED_KINDS, TlsCertificate, Translation, compile_grpc_rules, compile_http_rules,
    parse_duration, translate, validate,
};
