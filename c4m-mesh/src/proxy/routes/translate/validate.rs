//! Admission: the checks an API server makes when a Gateway API object or
//! an Ingress is written, with the same code that translates them.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::super::action::ObjectRef;
use super::super::error::{Problem, RouteError};
use super::ingress::DEFAULT_CLASS_ANNOTATION;
use super::rules::{compile_grpc_rules, compile_http_rules};
use super::{Inputs, rate_limit, translate};
use crate::proxy::api::{
    Gateway, GatewayClass, GatewayClassSpec, GrpcRoute, HttpRoute, Kind, ReferenceGrant, decode,
};

/// The controller name the translation of one object is run under.
const VALIDATING: &str = "c4m.io/validate";

/// The problems that make `object` (an Ingress, GatewayClass, Gateway,
/// HTTPRoute, GRPCRoute or ReferenceGrant, as JSON with its `kind`)
/// invalid as written: a value outside what the API allows, a regular
/// expression or hostname that does not parse, a field that does not
/// decode. Empty when the object may be stored.
///
/// What depends on the rest of the cluster (a Secret or Service that does
/// not exist, a cross-namespace reference without a ReferenceGrant, a
/// listener protocol not served) is not checked: it goes into the
/// object's status ([`translate`]'s errors), as Gateway API controllers
/// report it. Other kinds give no error.
pub fn validate(object: &Value) -> Vec<RouteError> {
    let errors = match object["kind"].as_str().unwrap_or_default() {
        "HTTPRoute" => decoded::<HttpRoute>(object, |route, errors| {
            let _ = compile_http_rules(route, &|_, _| true, errors);
            route_annotations(HttpRoute::KIND, &route.metadata, errors);
        }),
        "GRPCRoute" => decoded::<GrpcRoute>(object, |route, errors| {
            let _ = compile_grpc_rules(route, &|_, _| true, errors);
            route_annotations(GrpcRoute::KIND, &route.metadata, errors);
        }),
        "Gateway" => decoded::<Gateway>(object, |gateway, errors| {
            let class = GatewayClass {
                metadata: named(&gateway.spec.gateway_class_name),
                spec: GatewayClassSpec {
                    controller_name: VALIDATING.into(),
                    description: None,
                },
            };
            let inputs = Inputs {
                gateway_classes: std::slice::from_ref(&class),
                gateways: std::slice::from_ref(gateway),
                ..Inputs::new(VALIDATING)
            };
            errors.extend(translate(&inputs).errors);
        }),
        "Ingress" => match serde_json::from_value::<Ingress>(object.clone()) {
            Ok(ingress) => {
                // Served by a class of its own name, so it is translated
                // whichever class it names.
                let class = IngressClass {
                    metadata: ObjectMeta {
                        annotations: Some(
                            [(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into(),
                        ),
                        ..named(
                            ingress
                                .spec
                                .as_ref()
                                .and_then(|s| s.ingress_class_name.as_deref())
                                .unwrap_or_default(),
                        )
                    },
                    spec: Some(IngressClassSpec {
                        controller: Some(VALIDATING.into()),
                        parameters: None,
                    }),
                };
                let inputs = Inputs {
                    ingress_classes: std::slice::from_ref(&class),
                    ingresses: std::slice::from_ref(&ingress),
                    ..Inputs::new(VALIDATING)
                };
                translate(&inputs).errors
            }
            Err(e) => vec![RouteError::new(
                &ObjectRef::new("Ingress", namespace(object), name(object)),
                "",
                Problem::Invalid(e.to_string()),
            )],
        },
        "GatewayClass" => decoded::<GatewayClass>(object, |_, _| {}),
        "ReferenceGrant" => decoded::<ReferenceGrant>(object, |_, _| {}),
        _ => Vec::new(),
    };
    errors
        .into_iter()
        .filter(|e| e.problem().invalidates_object())
        .collect()
}

/// Decodes `object` as `T` and runs `check` on it; a decoding error names
/// its field.
fn decoded<T: Kind>(
    object: &Value,
    check: impl FnOnce(&T, &mut Vec<RouteError>),
) -> Vec<RouteError> {
    let mut errors = Vec::new();
    match decode::<T>(object) {
        Ok(typed) => check(&typed, &mut errors),
        Err(e) => errors.push(RouteError::new(
            &ObjectRef::new(T::KIND, namespace(object), name(object)),
            e.path.clone(),
            Problem::Decode(e),
        )),
    }
    errors
}

fn route_annotations(kind: &'static str, meta: &ObjectMeta, errors: &mut Vec<RouteError>) {
    let object = ObjectRef::new(
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    if let Err(e) = rate_limit(&object, meta.annotations.as_ref()) {
        errors.push(e);
    }
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(object: Value) -> Vec<String> {
        validate(&object)
            .iter()
            .map(|e| format!("{}: {}", e.field(), e.problem()))
            .collect()
    }

    #[test]
    fn invalid_values_are_refused_and_unresolved_references_are_not() {
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop",
                "annotations": {"c4m.io/rate-limit": "fast"}},
            "spec": {"parentRefs": [{"name": "nowhere"}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}],
                    "backendRefs": [{"name": "api", "namespace": "other", "port": 80},
                        {"name": "x", "kind": "Bucket", "port": 80}]}]}});
        let errors = fields(route);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.rules[0].matches[0].path.value: "),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("metadata.annotations[\"c4m.io/rate-limit\"]: "),
            "{errors:?}"
        );

        let gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "infra"},
            "spec": {"gatewayClassName": "anything", "listeners": [
                {"name": "tls", "port": 443, "protocol": "HTTPS",
                    "tls": {"certificateRefs": [{"name": "missing"}]}},
                {"name": "tcp", "port": 9000, "protocol": "TCP"},
                {"name": "bad", "port": 80, "protocol": "HTTP", "hostname": "-x-.example.com"},
                {"name": "bare", "port": 8443, "protocol": "HTTPS"}]}});
        let errors = fields(gateway);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.listeners[2].hostname: "),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("spec.listeners[3].tls.certificateRefs: "),
            "{errors:?}"
        );

        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ingressClassName": "someone-elses",
                "tls": [{"hosts": ["a.test"], "secretName": "missing"}],
                "rules": [{"host": "a.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "x", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        assert_eq!(
            fields(ingress),
            ["spec.rules[0].http.paths[1].path: \"x\" must start with \"/\""]
        );

        let undecodable = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g"}, "spec": {"rules": [{"matches": [{"method": {"type": "Glob"}}]}]}});
        let errors = fields(undecodable);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("spec.rules[0].matches[0].method.type: "),
            "{errors:?}"
        );
        assert!(
            fields(json!({"kind": "ReferenceGrant", "metadata": {"name": "g"},
                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                    "namespace": "shop"}], "to": [{"group": "", "kind": "Service"}]}}))
            .is_empty()
        );
    }
}
