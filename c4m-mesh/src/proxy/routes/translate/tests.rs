use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::proxy::api::{GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use crate::proxy::routes::{
    BackendTarget, ObjectRef, PathModifier, Problem, RouteProtocol, Scheme, ServicePort,
};

const CONTROLLER: &str = "c4m.io/gateway";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).unwrap())
        .collect()
}

fn secret(namespace: &str, name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(b"-----BEGIN PRIVATE KEY-----\n".to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

fn classes() -> Vec<GatewayClass> {
    yaml(&format!(
        "metadata: {{name: c4m}}\nspec: {{controllerName: {CONTROLLER}}}\n---\nmetadata: {{name: other}}\nspec: {{controllerName: example.com/else}}"
    ))
}

fn gateways() -> Vec<crate::proxy::api::Gateway> {
    yaml(
        r#"
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: c4m
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.example.com"
    tls: {certificateRefs: [{name: wildcard}]}
    allowedRoutes: {namespaces: {from: All}}
---
metadata: {name: theirs, namespace: infra}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 8080, protocol: HTTP}]
"#,
    )
}

/// The action (and its entry's path match) for a GET to `host` `path` on `port`.
fn route<'c>(
    config: &'c RouteConfig,
    port: u16,
    host: &str,
    path: &str,
) -> Option<&'c RouteAction> {
    let table = &config.listener(port)?.table;
    let entry = table.find_parts(Some(host), &Method::GET, path, None, &HeaderMap::new())?;
    Some(config.action(entry.action))
}

fn service(target: &BackendTarget) -> String {
    match target {
        BackendTarget::Service(s) => s.to_string(),
        BackendTarget::Invalid => "invalid".into(),
    }
}

#[test]
fn gateway_listeners_and_an_http_route_make_tables_per_port() {
    let routes: Vec<HttpRoute> = yaml(
        r#"
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 8080, weight: 90}, {name: api-canary, port: 8080, weight: 10}]
    timeouts: {request: 2s}
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}
---
metadata: {name: attached-elsewhere, namespace: shop}
spec:
  parentRefs: [{name: theirs, namespace: infra}]
  rules: [{backendRefs: [{name: x, port: 1}]}]
"#,
    );
    let secrets = [secret("infra", "wildcard")];
    let (classes, gateways) = (classes(), gateways());
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        http_routes: &routes,
        secrets: &secrets,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    let ports: Vec<u16> = t.config.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [80, 443], "the other class' Gateway is not served");
    let https = t.config.listener(443).unwrap();
    let certs = https.tls.as_ref().unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].hostname.to_string(), "*.example.com");
    assert_eq!(certs[0].secret.to_string(), "Secret infra/wildcard");
    assert!(t.config.listener(80).unwrap().tls.is_none());

    for port in [80, 443] {
        let api = route(&t.config, port, "shop.example.com", "/api/items").expect("api route");
        assert_eq!(api.route.to_string(), "HTTPRoute shop/shop");
        let backends: Vec<(String, u32)> = api
            .backends
            .iter()
            .map(|b| (service(&b.target), b.weight))
            .collect();
        assert_eq!(
            backends,
            [
                ("shop/api:8080".to_owned(), 90),
                ("shop/api-canary:8080".to_owned(), 10)
            ]
        );
        assert_eq!(api.timeouts.request, Some(Duration::from_secs(2)));
        let old = route(&t.config, port, "shop.example.com", "/old").unwrap();
        let redirect = old.redirect.as_ref().unwrap();
        assert_eq!(
            (redirect.scheme, redirect.status),
            (Some(Scheme::Https), StatusCode::MOVED_PERMANENTLY)
        );
        assert_eq!(redirect.path, Some(PathModifier::Full("/new".into())));
        assert!(route(&t.config, port, "other.example.com", "/api").is_none());
    }
}

#[test]
fn cross_namespace_backends_need_a_reference_grant() {
    let routes: Vec<HttpRoute> = yaml(
        r#"
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: payments, namespace: pay, port: 80}]}]
"#,
    );
    let (classes, gateways) = (classes(), gateways());
    let secrets = [secret("infra", "wildcard")];
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        http_routes: &routes,
        secrets: &secrets,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    let e = &t.errors[0];
    assert_eq!(e.field(), "spec.rules[0].backendRefs[0].namespace");
    assert!(matches!(e.problem(), Problem::NotPermitted { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("HTTPRoute shop/r: spec.rules[0].backendRefs[0].namespace: "),
        "{e}"
    );
    // The route stays, its backend answers 500.
    assert_eq!(
        route(&t.config, 80, "any.host", "/").unwrap().backends[0].target,
        BackendTarget::Invalid
    );

    let grants: Vec<ReferenceGrant> = yaml(
        r#"
metadata: {name: from-shop, namespace: pay}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: payments}]
"#,
    );
    let t = translate(&Inputs {
        reference_grants: &grants,
        ..inputs
    });
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(
        service(&route(&t.config, 80, "any.host", "/").unwrap().backends[0].target),
        "pay/payments:80"
    );
}

#[test]
fn an_invalid_route_is_left_out_and_the_field_named() {
    let routes: Vec<HttpRoute> = yaml(
        r#"
metadata: {name: bad, namespace: infra}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/(unclosed"}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: "no-slash"}, method: BREW}]
    filters: [{type: CORS}]
    backendRefs: [{name: a, port: 80, weight: -1}]
---
metadata: {name: good, namespace: infra}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
"#,
    );
    let (classes, gateways) = (classes(), gateways());
    let secrets = [secret("infra", "wildcard")];
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        http_routes: &routes,
        secrets: &secrets,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    let fields: Vec<&str> = t.errors.iter().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].matches[0].path.value",
            "spec.rules[1].matches[0].path.value",
            "spec.rules[1].matches[0].method",
            "spec.rules[1].filters[0].type",
            "spec.rules[1].backendRefs[0].weight",
        ]
    );
    assert!(t.errors.iter().all(|e| e.object().name == "bad"));
    assert!(matches!(t.errors[0].problem(), Problem::Regex(_)));
    // Only the good route is served.
    let names: Vec<String> = t
        .config
        .actions
        .iter()
        .map(|a| a.route.name.clone())
        .collect();
    assert_eq!(names, ["good"]);
}

#[test]
fn listeners_admit_routes_of_their_own_namespace_by_default_and_by_hostname() {
    let gateways: Vec<crate::proxy::api::Gateway> = yaml(
        r#"
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: c4m
  listeners:
  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}
  - name: sel
    port: 81
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: shop}}}}
"#,
    );
    let routes: Vec<HttpRoute> = yaml(
        r#"
metadata: {name: foreign, namespace: shop}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: a}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
---
metadata: {name: other-host, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: a}]
  hostnames: [b.example.com]
  rules: [{backendRefs: [{name: s, port: 80}]}]
---
metadata: {name: selected, namespace: shop}
spec:
  parentRefs: [{name: gw, namespace: infra, port: 81}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
---
metadata: {name: no-such-listener, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: nope}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
"#,
    );
    let namespaces: Vec<k8s_openapi::api::core::v1::Namespace> =
        yaml("metadata: {name: shop, labels: {team: shop}}");
    let classes = classes();
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        http_routes: &routes,
        namespaces: &namespaces,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    let errors: Vec<String> = t
        .errors
        .iter()
        .map(|e| format!("{} {}", e.object().name, e.field()))
        .collect();
    assert_eq!(
        errors,
        [
            "foreign spec.parentRefs[0]",
            "other-host spec.hostnames",
            "no-such-listener spec.parentRefs[0]"
        ]
    );
    assert!(route(&t.config, 80, "a.example.com", "/").is_none());
    assert_eq!(
        route(&t.config, 81, "x", "/").unwrap().route.name,
        "selected"
    );
    // What each route's status.parents[] says, and the listeners' counts.
    let parents: Vec<(&str, usize, &str)> = t
        .parents
        .iter()
        .map(|p| (p.route.name.as_str(), p.index, p.attachment.reason()))
        .collect();
    assert_eq!(
        parents,
        [
            ("foreign", 0, "NotAllowedByListeners"),
            ("other-host", 0, "NoMatchingListenerHostname"),
            ("selected", 0, "Accepted"),
            ("no-such-listener", 0, "NoMatchingParent"),
        ]
    );
    let gw = ObjectRef::new("Gateway", "infra", "gw");
    assert_eq!(
        t.attached_routes,
        BTreeMap::from([((gw, "sel".to_owned()), 1)])
    );
}

#[test]
fn grpc_routes_match_service_and_method_and_send_http2() {
    let routes: Vec<GrpcRoute> = yaml(
        r#"
metadata: {name: echo, namespace: infra}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  rules:
  - matches: [{method: {service: echo.v1.Echo, method: Say}}]
    backendRefs: [{name: echo-say, port: 50051}]
  - matches: [{method: {service: echo.v1.Echo}}]
    backendRefs: [{name: echo, port: 50051}]
"#,
    );
    let (classes, gateways) = (classes(), gateways());
    let secrets = [secret("infra", "wildcard")];
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        grpc_routes: &routes,
        secrets: &secrets,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    let say = route(&t.config, 80, "h", "/echo.v1.Echo/Say").unwrap();
    assert_eq!(say.protocol, RouteProtocol::Grpc);
    assert_eq!(service(&say.backends[0].target), "infra/echo-say:50051");
    assert_eq!(
        service(
            &route(&t.config, 80, "h", "/echo.v1.Echo/Stream")
                .unwrap()
                .backends[0]
                .target
        ),
        "infra/echo:50051"
    );
    assert!(route(&t.config, 80, "h", "/echo.v1.EchoX/Say").is_none());
    assert!(
        route(&t.config, 443, "h.example.com", "/echo.v1.Echo/Say").is_none(),
        "attached to the http listener only"
    );
}

#[test]
fn ingresses_of_this_class_route_and_redirect_their_tls_hosts() {
    let classes: Vec<IngressClass> = yaml(&format!(
        "metadata: {{name: c4m, annotations: {{ingressclass.kubernetes.io/is-default-class: \"true\"}}}}\nspec: {{controller: {CONTROLLER}}}"
    ));
    let ingresses: Vec<Ingress> = yaml(
        r#"
metadata: {name: web, namespace: shop, annotations: {c4m.io/rate-limit: 100/s, c4m.io/rate-limit-burst: "20"}}
spec:
  tls: [{hosts: [secure.example.com], secretName: web-tls}]
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - host: secure.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
  - host: "*.plain.example.com"
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: exact, port: {number: 8080}}}}
---
metadata: {name: other, namespace: shop}
spec:
  ingressClassName: nginx
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: x, port: {number: 1}}}}]}}]
"#,
    );
    let secrets = [secret("shop", "web-tls")];
    let inputs = Inputs {
        ingress_classes: &classes,
        ingresses: &ingresses,
        secrets: &secrets,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    let served: Vec<&str> = t.ingresses.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(served, ["web"], "not the nginx one");
    let api = route(&t.config, 443, "secure.example.com", "/api/x").unwrap();
    assert_eq!(
        api.backends[0].target,
        BackendTarget::Service(crate::proxy::routes::ServiceRef {
            namespace: "shop".into(),
            name: "api".into(),
            port: ServicePort::Name("http".into()),
        })
    );
    let limit = api.rate_limit.unwrap();
    assert_eq!(
        (limit.requests, limit.per, limit.burst),
        (100, Duration::from_secs(1), 20)
    );
    let redirect = route(&t.config, 80, "secure.example.com", "/api/x")
        .unwrap()
        .redirect
        .clone()
        .unwrap();
    assert_eq!(
        (redirect.scheme, redirect.port, redirect.status),
        (
            Some(Scheme::Https),
            Some(443),
            StatusCode::PERMANENT_REDIRECT
        )
    );
    // Not a TLS host: served on plain HTTP; a one-label wildcard.
    assert_eq!(
        service(
            &route(&t.config, 80, "a.plain.example.com", "/exact")
                .unwrap()
                .backends[0]
                .target
        ),
        "shop/exact:8080"
    );
    assert_eq!(
        service(
            &route(&t.config, 80, "a.b.plain.example.com", "/exact")
                .unwrap()
                .backends[0]
                .target
        ),
        "shop/fallback:80"
    );
    assert_eq!(
        service(
            &route(&t.config, 80, "a.plain.example.com", "/exact/no")
                .unwrap()
                .backends[0]
                .target
        ),
        "shop/fallback:80"
    );
    // The nginx-class Ingress is not served.
    assert!(t.config.actions.iter().all(|a| a.route.name == "web"));
}

#[test]
fn a_bad_rate_limit_refuses_the_object() {
    let classes: Vec<IngressClass> = yaml(&format!(
        "metadata: {{name: c4m}}\nspec: {{controller: {CONTROLLER}}}"
    ));
    let ingresses: Vec<Ingress> = yaml(
        r#"
metadata: {name: web, namespace: shop, annotations: {c4m.io/rate-limit: lots}}
spec:
  ingressClassName: c4m
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: x, port: {number: 1}}}}]}}]
"#,
    );
    let inputs = Inputs {
        ingress_classes: &classes,
        ingresses: &ingresses,
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    assert_eq!(t.errors.len(), 1);
    assert_eq!(
        t.errors[0].field(),
        "metadata.annotations[\"c4m.io/rate-limit\"]"
    );
    assert!(t.config.actions.is_empty());
}

#[test]
fn a_port_taken_with_the_other_protocol_is_refused() {
    let classes_in: Vec<IngressClass> = yaml(&format!(
        "metadata: {{name: c4m}}\nspec: {{controller: {CONTROLLER}}}"
    ));
    let ingresses: Vec<Ingress> = yaml(
        r#"
metadata: {name: web, namespace: shop}
spec:
  ingressClassName: c4m
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: x, port: {number: 1}}}}]}}]
"#,
    );
    let (classes, gateways) = (classes(), gateways());
    let secrets = [secret("infra", "wildcard")];
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        ingress_classes: &classes_in,
        ingresses: &ingresses,
        secrets: &secrets,
        ingress_ports: IngressPorts {
            http: 443,
            https: 8443,
        },
        ..Inputs::new(CONTROLLER)
    };
    let t = translate(&inputs);
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert!(
        t.errors[0]
            .to_string()
            .contains("port 443 is already served as HTTPS by Gateway infra/edge"),
        "{}",
        t.errors[0]
    );
}

#[test]
fn gateway_api_durations() {
    assert_eq!(parse_duration("10s"), Ok(Some(Duration::from_secs(10))));
    assert_eq!(parse_duration("1m30s"), Ok(Some(Duration::from_secs(90))));
    assert_eq!(
        parse_duration("1h2m3s4ms"),
        Ok(Some(Duration::from_millis(3_723_004)))
    );
    assert_eq!(
        parse_duration("500ms"),
        Ok(Some(Duration::from_millis(500)))
    );
    assert_eq!(parse_duration("0s"), Ok(None));
    for bad in ["", "10", "s", "1.5s", "123456s", "1h1h1h1h1h", "-1s", "10d"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
