//! `networking.k8s.io/v1` Ingresses of this controller's IngressClasses.

use std::sync::Arc;

use http::StatusCode;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::super::action::{
    BackendTarget, ObjectRef, Redirect, RouteAction, Scheme, ServicePort, ServiceRef,
    WeightedBackend,
};
use super::super::error::{Problem, RouteError};
use super::super::host::HostPattern;
use super::super::matching::{PathMatch, RequestMatch};
use super::super::table::RouteOrder;
use super::refs::tls_secret;
use super::{ConfigBuilder, Inputs, SSL_REDIRECT_ANNOTATION, TlsCertificate, rate_limit};

/// The annotation marking the cluster's default IngressClass (`"true"`).
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation that predates `spec.ingressClassName`.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// One path of one rule, validated.
struct Entry {
    host: HostPattern,
    matcher: RequestMatch,
    backend: WeightedBackend,
    order: RouteOrder,
}

pub(super) fn translate(inputs: &Inputs<'_>, builder: &mut ConfigBuilder) {
    let ours: Vec<_> = inputs
        .ingress_classes
        .iter()
        .filter(|c| {
            c.spec.as_ref().and_then(|s| s.controller.as_deref())
                == Some(inputs.ingress_controller_name)
        })
        .collect();
    let is_ours = |name: &str| {
        ours.iter()
            .any(|c| c.metadata.name.as_deref() == Some(name))
    };
    let default_is_ours = ours.iter().any(|c| {
        c.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .map(String::as_str)
            == Some("true")
    });
    for ingress in inputs.ingresses {
        let spec = ingress.spec.as_ref();
        let class = spec
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        let served = match class {
            Some(class) => is_ours(class),
            None => default_is_ours,
        };
        if served {
            builder.ingresses.push(ObjectRef::new(
                "Ingress",
                ingress.metadata.namespace.as_deref().unwrap_or_default(),
                ingress.metadata.name.as_deref().unwrap_or_default(),
            ));
            translate_one(ingress, inputs, builder);
        }
    }
}

fn translate_one(ingress: &Ingress, inputs: &Inputs<'_>, builder: &mut ConfigBuilder) {
    let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
    let object = ObjectRef::new(
        "Ingress",
        namespace.clone(),
        ingress.metadata.name.clone().unwrap_or_default(),
    );
    let mut errors = Vec::new();
    let limit = rate_limit(&object, ingress.metadata.annotations.as_ref()).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let redirect_to_tls = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
        .map(String::as_str)
        != Some("false");
    let created = ingress
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    let name = format!("{}/{}", object.namespace, object.name);
    let order = |fallback, rule, index| RouteOrder {
        fallback,
        created,
        name: name.clone(),
        rule,
        index,
    };
    let Some(spec) = ingress.spec.as_ref() else {
        return;
    };

    let mut certificates = Vec::new();
    let mut tls_hosts = Vec::new();
    for (t, tls) in spec.tls.iter().flatten().enumerate() {
        let at = format!("spec.tls[{t}]");
        let mut hosts = Vec::new();
        for (h, host) in tls.hosts.iter().flatten().enumerate() {
            match HostPattern::ingress(host) {
                Ok(host) => hosts.push(host),
                Err(e) => errors.push(RouteError::new(
                    &object,
                    format!("{at}.hosts[{h}]"),
                    e.into(),
                )),
            }
        }
        if hosts.is_empty() {
            hosts.push(HostPattern::Any);
        }
        let Some(secret_name) = tls.secret_name.as_deref() else {
            errors.push(RouteError::new(
                &object,
                format!("{at}.secretName"),
                Problem::Unsupported("TLS without a secretName (no default certificate)".into()),
            ));
            continue;
        };
        match tls_secret(
            inputs.secrets,
            &namespace,
            secret_name,
            &object,
            &format!("{at}.secretName"),
        ) {
            Ok((secret, chain, key)) => {
                for host in &hosts {
                    certificates.push(TlsCertificate {
                        hostname: host.clone(),
                        secret: secret.clone(),
                        chain_pem: chain.to_vec(),
                        key_pem: key.to_vec(),
                    });
                }
                tls_hosts.extend(hosts);
            }
            // A certificate that cannot be had leaves out that host's HTTPS, not the routes.
            Err(e) => builder.error(e),
        }
    }

    let mut entries = Vec::new();
    if let Some(backend) = &spec.default_backend {
        let backend = ingress_backend(
            backend,
            &namespace,
            &object,
            "spec.defaultBackend",
            &mut errors,
        );
        entries.push(Entry {
            host: HostPattern::Any,
            matcher: RequestMatch::any(),
            backend,
            order: order(true, 0, 0),
        });
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{r}]");
        let host = match rule.host.as_deref() {
            None | Some("") => HostPattern::Any,
            Some(h) => match HostPattern::ingress(h) {
                Ok(host) => host,
                Err(e) => {
                    errors.push(RouteError::new(&object, format!("{at}.host"), e.into()));
                    continue;
                }
            },
        };
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let at = format!("{at}.http.paths[{p}]");
            let value = path.path.as_deref().unwrap_or("/");
            if !value.starts_with('/') {
                errors.push(RouteError::new(
                    &object,
                    format!("{at}.path"),
                    Problem::Invalid(format!("{value:?} must start with \"/\"")),
                ));
                continue;
            }
            let path_match = match path.path_type.as_str() {
                "Exact" => PathMatch::Exact(value.to_owned()),
                // ImplementationSpecific is served as Prefix.
                "Prefix" | "ImplementationSpecific" => PathMatch::prefix(value),
                other => {
                    errors.push(RouteError::new(
                        &object,
                        format!("{at}.pathType"),
                        Problem::Invalid(format!(
                            "{other:?} is not Exact, Prefix or ImplementationSpecific"
                        )),
                    ));
                    continue;
                }
            };
            let backend = ingress_backend(
                &path.backend,
                &namespace,
                &object,
                &format!("{at}.backend"),
                &mut errors,
            );
            let matcher = RequestMatch {
                path: path_match,
                ..RequestMatch::any()
            };
            entries.push(Entry {
                host: host.clone(),
                matcher,
                backend,
                order: order(false, r, p),
            });
        }
    }
    if !errors.is_empty() {
        builder.errors.extend(errors);
        return;
    }

    let ports = inputs.ingress_ports;
    let http_open = builder
        .open_port(ports.http, false, &object, "spec.rules")
        .map_err(|e| builder.error(e))
        .is_ok();
    let https_open = !certificates.is_empty()
        && builder
            .open_port(ports.https, true, &object, "spec.tls")
            .map_err(|e| builder.error(e))
            .is_ok();
    if https_open {
        builder.port(ports.https).certificates.extend(certificates);
    }
    let mut redirect = None;
    for entry in entries {
        let mut action = RouteAction::new(object.clone(), entry.order.rule);
        action.rate_limit = limit;
        action.backends.push(entry.backend);
        let id = builder.action(action);
        if https_open {
            builder.port(ports.https).table.add(
                &entry.host,
                entry.matcher.clone(),
                id,
                entry.order.clone(),
            );
        }
        if http_open {
            let covered = tls_hosts.iter().any(|t| {
                *t == entry.host || matches!(&entry.host, HostPattern::Exact(h) if t.matches(h))
            });
            let id = if https_open && redirect_to_tls && covered {
                *redirect.get_or_insert_with(|| {
                    let mut action = RouteAction::new(object.clone(), entry.order.rule);
                    action.redirect = Some(Redirect {
                        scheme: Some(Scheme::Https),
                        host: None,
                        port: Some(ports.https),
                        path: None,
                        status: StatusCode::PERMANENT_REDIRECT,
                    });
                    builder.action(action)
                })
            } else {
                id
            };
            builder
                .port(ports.http)
                .table
                .add(&entry.host, entry.matcher, id, entry.order);
        }
    }
}

fn ingress_backend(
    backend: &IngressBackend,
    namespace: &str,
    object: &ObjectRef,
    at: &str,
    errors: &mut Vec<RouteError>,
) -> WeightedBackend {
    let target = match (&backend.service, &backend.resource) {
        (Some(service), _) => {
            let port = service.port.as_ref();
            match (
                port.and_then(|p| p.number),
                port.and_then(|p| p.name.as_deref()),
            ) {
                (Some(n), _) if (1..=65535).contains(&n) => Some(ServicePort::Number(n as u16)),
                (None, Some(name)) if !name.is_empty() => Some(ServicePort::Name(Arc::from(name))),
                _ => {
                    errors.push(RouteError::new(
                        object,
                        format!("{at}.service.port"),
                        Problem::Invalid("a port number (1-65535) or name is required".into()),
                    ));
                    None
                }
            }
            .map(|port| {
                BackendTarget::Service(ServiceRef {
                    namespace: Arc::from(namespace),
                    name: Arc::from(service.name.as_str()),
                    port,
                })
            })
        }
        (None, Some(_)) => {
            errors.push(RouteError::new(
                object,
                format!("{at}.resource"),
                Problem::Unsupported("resource backends".into()),
            ));
            None
        }
        (None, None) => {
            errors.push(RouteError::new(
                object,
                at,
                Problem::Invalid("a service backend is required".into()),
            ));
            None
        }
    };
    WeightedBackend {
        target: target.unwrap_or(BackendTarget::Invalid),
        weight: 1,
    }
}
