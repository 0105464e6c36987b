//! The objects [`translate`](super::translate) reads, decoded from the JSON
//! a store or a watch holds: what the control plane (for status) and each
//! node's gateway (for routes) both start from.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{GATEWAY_CONTROLLER, INGRESS_CONTROLLER, IngressPorts, Inputs};
use crate::proxy::api::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute, Kind, ReferenceGrant, decode,
};

/// Objects of one kind: each decoded, beside the JSON it came from (an
/// object that does not decode is logged and left out).
#[derive(Debug)]
pub struct Decoded<T> {
    /// The objects as given.
    pub sources: Vec<Arc<Value>>,
    /// The same objects decoded, in the same order.
    pub objects: Vec<T>,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            sources: Vec::new(),
            objects: Vec::new(),
        }
    }
}

impl<T> Decoded<T> {
    fn read(
        list: &dyn Fn(&str) -> Vec<Arc<Value>>,
        plural: &str,
        decode: fn(&Value) -> Result<T, String>,
    ) -> Self {
        let mut out = Decoded::default();
        for source in list(plural) {
            match decode(&source) {
                Ok(object) => {
                    out.sources.push(source);
                    out.objects.push(object);
                }
                Err(error) => tracing::warn!(
                    kind = plural,
                    name = %source["metadata"]["name"],
                    %error,
                    "skipping an undecodable object"
                ),
            }
        }
        out
    }

    /// Each object beside its JSON.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Value>, &T)> {
        self.sources.iter().zip(&self.objects)
    }
}

fn gateway_api<T: Kind>(value: &Value) -> Result<T, String> {
    decode(value).map_err(|e| e.to_string())
}

fn kubernetes<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| e.to_string())
}

/// Every object the translation reads, by kind.
#[derive(Debug, Default)]
pub struct ClusterObjects {
    /// GatewayClasses.
    pub gateway_classes: Decoded<GatewayClass>,
    /// Gateways.
    pub gateways: Decoded<Gateway>,
    /// HTTPRoutes.
    pub http_routes: Decoded<HttpRoute>,
    /// GRPCRoutes.
    pub grpc_routes: Decoded<GrpcRoute>,
    /// ReferenceGrants.
    pub reference_grants: Decoded<ReferenceGrant>,
    /// IngressClasses.
    pub ingress_classes: Decoded<IngressClass>,
    /// Ingresses.
    pub ingresses: Decoded<Ingress>,
    /// Secrets of type `kubernetes.io/tls`.
    pub secrets: Vec<Secret>,
    /// Namespaces (for `allowedRoutes` selectors).
    pub namespaces: Vec<Namespace>,
}

/// The kinds [`ClusterObjects::read`] asks for, by plural.
pub const TRANSLATED_KINDS: &[&str] = &[
    "gatewayclasses",
    "gateways",
    "httproutes",
    "grpcroutes",
    "referencegrants",
    "ingressclasses",
    "ingresses",
    "secrets",
    "namespaces",
];

impl ClusterObjects {
    /// Reads every kind of [`TRANSLATED_KINDS`] from `list` (all objects of
    /// a kind, by plural; nothing for a kind it does not hold).
    pub fn read(list: &dyn Fn(&str) -> Vec<Arc<Value>>) -> Self {
        ClusterObjects {
            gateway_classes: Decoded::read(list, "gatewayclasses", gateway_api),
            gateways: Decoded::read(list, "gateways", gateway_api),
            http_routes: Decoded::read(list, "httproutes", gateway_api),
            grpc_routes: Decoded::read(list, "grpcroutes", gateway_api),
            reference_grants: Decoded::read(list, "referencegrants", gateway_api),
            ingress_classes: Decoded::read(list, "ingressclasses", kubernetes),
            ingresses: Decoded::read(list, "ingresses", kubernetes),
            secrets: list("secrets")
                .iter()
                .filter(|s| s["type"] == "kubernetes.io/tls")
                .filter_map(|s| kubernetes(s).ok())
                .collect(),
            namespaces: Decoded::read(list, "namespaces", kubernetes).objects,
        }
    }

    /// The translation's inputs for c4m's controllers
    /// ([`GATEWAY_CONTROLLER`], [`INGRESS_CONTROLLER`]), Ingresses served
    /// on `ingress_ports`.
    pub fn inputs(&self, ingress_ports: IngressPorts) -> Inputs<'_> {
        Inputs {
            gateway_classes: &self.gateway_classes.objects,
            gateways: &self.gateways.objects,
            http_routes: &self.http_routes.objects,
            grpc_routes: &self.grpc_routes.objects,
            reference_grants: &self.reference_grants.objects,
            ingress_classes: &self.ingress_classes.objects,
            ingresses: &self.ingresses.objects,
            secrets: &self.secrets,
            namespaces: &self.namespaces,
            ingress_controller_name: INGRESS_CONTROLLER,
            ingress_ports,
            ..Inputs::new(GATEWAY_CONTROLLER)
        }
    }
}
