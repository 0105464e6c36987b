//! GatewayClass, Gateway and ReferenceGrant.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::Kind;

/// `GatewayClass`: a class of Gateways served by one controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClass {
    /// Standard object metadata (cluster-scoped: no namespace).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The class' specification.
    pub spec: GatewayClassSpec,
}

impl Kind for GatewayClass {
    const KIND: &'static str = "GatewayClass";
}

/// `GatewayClass.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller that manages Gateways of this class, e.g. `c4m.io/gateway`.
    pub controller_name: String,
    /// A human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `Gateway`: a set of listeners (ports, protocols, hostnames, certificates).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The Gateway's specification.
    pub spec: GatewaySpec,
}

impl Kind for Gateway {
    const KIND: &'static str = "Gateway";
}

/// `Gateway.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The GatewayClass this Gateway belongs to.
    pub gateway_class_name: String,
    /// The Gateway's listeners (at least one).
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// One listener of a Gateway: where and how connections are accepted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The listener's name, unique in the Gateway; what `sectionName` refers to.
    pub name: String,
    /// The hostname (exact or `*.` wildcard) this listener serves; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The port (1 to 65535).
    pub port: i32,
    /// `HTTP` or `HTTPS` (`TLS`, `TCP` and `UDP` are refused as unsupported).
    pub protocol: String,
    /// TLS settings; required for `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsConfig>,
    /// Which routes may attach; routes of the Gateway's own namespace by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `Listener.tls`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTlsConfig {
    /// `Terminate` (the default) or `Passthrough` (unsupported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Secrets of type `kubernetes.io/tls` holding the certificates.
    #[serde(default)]
    pub certificate_refs: Vec<SecretObjectReference>,
}

/// A reference to a Secret (the only kind supported for certificates).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    /// The API group; `""` (core) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind; `Secret` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Secret's name.
    pub name: String,
    /// The Secret's namespace; the Gateway's by default. Another namespace
    /// needs a ReferenceGrant there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `Listener.allowedRoutes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// Which namespaces' routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Which route kinds may attach; by default those the protocol supports.
    #[serde(default)]
    pub kinds: Vec<RouteGroupKind>,
}

/// `AllowedRoutes.namespaces`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The namespace label selector, for `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A route kind, in `AllowedRoutes.kinds`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// The API group; `gateway.networking.k8s.io` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: String,
}

/// `ReferenceGrant`: lets objects of other namespaces refer to objects of
/// this one (routes to Services, Gateways to Secrets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    /// Standard object metadata; the namespace is the one granting access.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The grant.
    pub spec: ReferenceGrantSpec,
}

impl Kind for ReferenceGrant {
    const KIND: &'static str = "ReferenceGrant";
}

/// `ReferenceGrant.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may refer (group, kind, namespace).
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may refer to in this namespace (group, kind, optional name).
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// `ReferenceGrant.spec.from[]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    /// The referring object's group.
    pub group: String,
    /// The referring object's kind.
    pub kind: String,
    /// The referring object's namespace.
    pub namespace: String,
}

/// `ReferenceGrant.spec.to[]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    /// The referred object's group (`""` for core).
    pub group: String,
    /// The referred object's kind.
    pub kind: String,
    /// The one object granted; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
