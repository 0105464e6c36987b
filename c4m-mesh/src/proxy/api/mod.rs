//! The subset of the Kubernetes Gateway API (`gateway.networking.k8s.io`)
//! that c4m's gateway and sidecar serve, as plain serde types.
//!
//! Written here rather than taken from a Gateway API crate: those pin their
//! own `k8s-openapi`, which would put a second copy of the Kubernetes types
//! in the build. Field names and defaults follow the v1 API (standard
//! channel, plus `timeouts` and the mirror `fraction`). Unknown fields are
//! ignored, as an API server that does not know an experimental field
//! would; enum values outside the standard set fail to decode, and
//! [`decode`] names the field.

mod gateway;
mod route;

pub use gateway::{
    AllowedRoutes, Gateway, GatewayClass, GatewayClassSpec, GatewaySpec, GatewayTlsConfig,
    Listener, ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
    RouteGroupKind, RouteNamespaces, SecretObjectReference,
};
pub use route::{
    BackendObjectReference, Fraction, GrpcBackendRef, GrpcHeaderMatch, GrpcMethodMatch,
    GrpcMethodMatchType, GrpcRoute, GrpcRouteFilter, GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec,
    HeaderMatchType, HttpBackendRef, HttpHeader, HttpHeaderFilter, HttpHeaderMatch, HttpPathMatch,
    HttpPathModifier, HttpQueryParamMatch, HttpRequestMirrorFilter, HttpRequestRedirectFilter,
    HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, HttpRouteTimeouts,
    HttpUrlRewriteFilter, ParentReference, PathMatchType, PathModifierType,
};

/// The API group of every kind in this module.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// Why a Gateway API object could not be decoded: the JSON path of the
/// field at fault and serde's reason.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: field {path}: {source}")]
pub struct DecodeError {
    /// The kind that was being decoded.
    pub kind: &'static str,
    /// Where in the object decoding failed, e.g. `spec.rules[0].matches[1].path.type`.
    pub path: String,
    /// serde's reason.
    #[source]
    pub source: serde_json::Error,
}

/// A Gateway API kind with its `kind` name, for [`decode`] and errors.
pub trait Kind: serde::de::DeserializeOwned {
    /// The object's `kind`, e.g. `HTTPRoute`.
    const KIND: &'static str;
}

/// Decodes one object from its JSON form, naming the field at fault on
/// failure (serde alone says only "invalid type" and a line/column).
pub fn decode<T: Kind>(value: &serde_json::Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| DecodeError {
        kind: T::KIND,
        path: e.path().to_string(),
        source: e.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_the_failing_field() {
        let value = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": [{"matches": [{"path": {"type": "Glob", "value": "/x"}}]}]}
        });
        let err = decode::<HttpRoute>(&value).unwrap_err();
        assert_eq!(err.path, "spec.rules[0].matches[0].path.type");
        assert!(err.to_string().contains("Glob"), "{err}");
    }

    #[test]
    fn http_route_defaults_as_the_api_does() {
        let route: HttpRoute = serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\n\
             spec:\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n",
        )
        .unwrap();
        let rule = &route.spec.rules[0];
        assert!(
            rule.matches.is_none(),
            "absent matches means one PathPrefix / match"
        );
        assert_eq!(rule.backend_refs[0].weight, None);
        assert_eq!(rule.backend_refs[0].backend.port, Some(80));
    }
}
