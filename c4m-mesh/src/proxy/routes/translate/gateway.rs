//! Gateways' listeners, and HTTPRoutes and GRPCRoutes attached to them.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::action::ObjectRef;
use super::super::action::RateLimit;
use super::super::error::{Problem, RouteError};
use super::super::host::HostPattern;
use super::super::table::RouteOrder;
use super::refs::{Grants, selector_matches, tls_secret};
use super::rules::{CompiledRule, compile_grpc_rules, compile_http_rules};
use super::{Attachment, ConfigBuilder, Inputs, ParentAttachment, TlsCertificate, rate_limit};
use crate::proxy::api::{
    AllowedRoutes, GROUP, Gateway, GrpcRoute, HttpRoute, Listener, ParentReference,
};

/// A listener that routes can attach to.
struct Attachable<'a> {
    gateway_namespace: &'a str,
    gateway_name: &'a str,
    name: &'a str,
    port: u16,
    hostname: HostPattern,
    allowed: Option<&'a AllowedRoutes>,
}

pub(super) fn translate(inputs: &Inputs<'_>, grants: &Grants<'_>, builder: &mut ConfigBuilder) {
    let classes: HashSet<&str> = inputs
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == inputs.controller_name)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    let mut gateways: Vec<&Gateway> = inputs
        .gateways
        .iter()
        .filter(|g| classes.contains(g.spec.gateway_class_name.as_str()))
        .collect();
    // The older Gateway keeps a contested port.
    gateways.sort_by_key(|g| (created(&g.metadata), qualified(&g.metadata)));
    let mut listeners = Vec::new();
    for gateway in &gateways {
        listeners.extend(gateway_listeners(gateway, inputs, grants, builder));
    }
    let owned = |namespace: &str, name: &str| {
        gateways.iter().any(|g| {
            g.metadata.namespace.as_deref() == Some(namespace)
                && g.metadata.name.as_deref() == Some(name)
        })
    };
    let may_refer_from = |kind: &'static str, from: String| {
        move |namespace: &str, name: &str| grants.permits(kind, &from, "Service", namespace, name)
    };
    let routes = inputs
        .http_routes
        .iter()
        .map(AnyRoute::Http)
        .chain(inputs.grpc_routes.iter().map(AnyRoute::Grpc));
    for route in routes {
        let (meta, hostnames, parents) = route.parts();
        let namespace = meta.namespace.clone().unwrap_or_default();
        if !parents.iter().any(|p| is_ours(p, &namespace, &owned)) {
            continue;
        }
        let object = ObjectRef::new(
            route.kind(),
            namespace.clone(),
            meta.name.clone().unwrap_or_default(),
        );
        let may_refer = may_refer_from(route.kind(), namespace);
        let rules = match route {
            AnyRoute::Http(r) => compile_http_rules(r, &may_refer, &mut builder.errors),
            AnyRoute::Grpc(r) => compile_grpc_rules(r, &may_refer, &mut builder.errors),
        };
        let limit = rules
            .map(|rules| (rules, rate_limit(&object, meta.annotations.as_ref())))
            .and_then(|(rules, limit)| match limit {
                Ok(limit) => Some((rules, limit)),
                Err(e) => {
                    builder.error(e);
                    None
                }
            });
        match limit {
            Some((rules, limit)) => attach(
                &object, meta, hostnames, parents, rules, limit, &listeners, inputs, &owned,
                builder,
            ),
            None => {
                for (index, parent) in parents.iter().enumerate() {
                    if is_ours(parent, &object.namespace, &owned) {
                        builder.parents.push(ParentAttachment {
                            route: object.clone(),
                            index,
                            attachment: Attachment::UnsupportedValue,
                        });
                    }
                }
            }
        }
    }
}

/// An HTTPRoute or a GRPCRoute: they attach the same way.
#[derive(Clone, Copy)]
enum AnyRoute<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
}

impl<'a> AnyRoute<'a> {
    fn kind(self) -> &'static str {
        match self {
            AnyRoute::Http(_) => "HTTPRoute",
            AnyRoute::Grpc(_) => "GRPCRoute",
        }
    }

    fn parts(self) -> (&'a ObjectMeta, &'a [String], &'a [ParentReference]) {
        match self {
            AnyRoute::Http(r) => (&r.metadata, &r.spec.hostnames, &r.spec.parent_refs),
            AnyRoute::Grpc(r) => (&r.metadata, &r.spec.hostnames, &r.spec.parent_refs),
        }
    }
}

fn created(meta: &ObjectMeta) -> (bool, i64) {
    match &meta.creation_timestamp {
        Some(t) => (false, t.0.as_second()),
        None => (true, 0),
    }
}

fn qualified(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Whether a parent reference names a Gateway this controller serves.
fn is_ours(
    parent: &ParentReference,
    route_namespace: &str,
    owned: &dyn Fn(&str, &str) -> bool,
) -> bool {
    parent.group.as_deref().unwrap_or(GROUP) == GROUP
        && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && owned(
            parent.namespace.as_deref().unwrap_or(route_namespace),
            &parent.name,
        )
}

fn gateway_listeners<'g>(
    gateway: &'g Gateway,
    inputs: &Inputs<'_>,
    grants: &Grants<'_>,
    builder: &mut ConfigBuilder,
) -> Vec<Attachable<'g>> {
    let namespace = gateway.metadata.namespace.as_deref().unwrap_or("");
    let name = gateway.metadata.name.as_deref().unwrap_or("");
    let object = ObjectRef::new("Gateway", namespace, name);
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        match listener_of(listener, &at, &object, &mut names, inputs, grants, builder) {
            Ok(Some((port, hostname))) => out.push(Attachable {
                gateway_namespace: namespace,
                gateway_name: name,
                name: &listener.name,
                port,
                hostname,
                allowed: listener.allowed_routes.as_ref(),
            }),
            Ok(None) => {}
            Err(e) => builder.error(e),
        }
    }
    out
}

/// Validates one listener, opens its port and registers its certificates.
fn listener_of(
    listener: &Listener,
    at: &str,
    object: &ObjectRef,
    names: &mut HashSet<String>,
    inputs: &Inputs<'_>,
    grants: &Grants<'_>,
    builder: &mut ConfigBuilder,
) -> Result<Option<(u16, HostPattern)>, RouteError> {
    let invalid = |field: &str, why: String| {
        RouteError::new(object, format!("{at}.{field}"), Problem::Invalid(why))
    };
    if !names.insert(listener.name.clone()) {
        return Err(invalid(
            "name",
            format!("{:?} is used by another listener", listener.name),
        ));
    }
    let port = u16::try_from(listener.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid("port", format!("{} is not a port", listener.port)))?;
    let hostname = match &listener.hostname {
        None => HostPattern::Any,
        Some(h) => HostPattern::gateway(h)
            .map_err(|e| RouteError::new(object, format!("{at}.hostname"), e.into()))?,
    };
    let tls = match listener.protocol.as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => {
            return Err(RouteError::new(
                object,
                format!("{at}.protocol"),
                Problem::Unsupported(format!("protocol {other:?}")),
            ));
        }
    };
    let mut certificates = Vec::new();
    if tls {
        let config = listener
            .tls
            .as_ref()
            .filter(|t| !t.certificate_refs.is_empty())
            .ok_or_else(|| {
                invalid(
                    "tls.certificateRefs",
                    "an HTTPS listener needs at least one certificate".into(),
                )
            })?;
        if let Some(mode) = config.mode.as_deref()
            && mode != "Terminate"
        {
            return Err(RouteError::new(
                object,
                format!("{at}.tls.mode"),
                Problem::Unsupported(format!("TLS mode {mode:?}")),
            ));
        }
        for (c, cert) in config.certificate_refs.iter().enumerate() {
            let field = format!("{at}.tls.certificateRefs[{c}]");
            let group = cert.group.as_deref().unwrap_or("");
            let kind = cert.kind.as_deref().unwrap_or("Secret");
            if !group.is_empty() || kind != "Secret" {
                builder.error(RouteError::new(
                    object,
                    field,
                    Problem::Unsupported(format!("certificate kind {kind:?} of group {group:?}")),
                ));
                continue;
            }
            let secret_namespace = cert.namespace.as_deref().unwrap_or(&object.namespace);
            if !grants.permits(
                "Gateway",
                &object.namespace,
                "Secret",
                secret_namespace,
                &cert.name,
            ) {
                builder.error(RouteError::new(
                    object,
                    field,
                    Problem::NotPermitted {
                        target: format!("Secret {secret_namespace}/{}", cert.name),
                        namespace: secret_namespace.to_owned(),
                    },
                ));
                continue;
            }
            match tls_secret(inputs.secrets, secret_namespace, &cert.name, object, &field) {
                Ok((secret, chain, key)) => certificates.push(TlsCertificate {
                    hostname: hostname.clone(),
                    secret,
                    chain_pem: chain.to_vec(),
                    key_pem: key.to_vec(),
                }),
                Err(e) => builder.error(e),
            }
        }
        if certificates.is_empty() {
            // Each reference's own error is reported above.
            return Err(RouteError::new(
                object,
                format!("{at}.tls.certificateRefs"),
                Problem::NotFound("a usable certificate".into()),
            ));
        }
    }
    builder.open_port(port, tls, object, &format!("{at}.port"))?;
    builder.port(port).certificates.extend(certificates);
    Ok(Some((port, hostname)))
}

/// Whether a listener's `allowedRoutes` admits a route of `kind` from `namespace`.
fn admits(
    listener: &Attachable<'_>,
    kind: &str,
    namespace: &str,
    inputs: &Inputs<'_>,
) -> Result<bool, String> {
    let Some(allowed) = listener.allowed else {
        return Ok(namespace == listener.gateway_namespace);
    };
    if !allowed.kinds.is_empty()
        && !allowed
            .kinds
            .iter()
            .any(|k| k.group.as_deref().unwrap_or(GROUP) == GROUP && k.kind == kind)
    {
        return Ok(false);
    }
    let from = allowed.namespaces.as_ref();
    match from.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "Same" => Ok(namespace == listener.gateway_namespace),
        "All" => Ok(true),
        "Selector" => {
            let selector = from
                .and_then(|n| n.selector.as_ref())
                .ok_or("from: Selector needs a selector")?;
            let ns = inputs
                .namespaces
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(namespace));
            let mut labels: BTreeMap<String, String> = ns
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| namespace.to_owned());
            selector_matches(selector, Some(&labels))
        }
        other => Err(format!("unknown allowedRoutes.namespaces.from {other:?}")),
    }
}

#[allow(clippy::too_many_arguments)]
fn attach(
    object: &ObjectRef,
    meta: &ObjectMeta,
    hostnames: &[String],
    parents: &[ParentReference],
    rules: Vec<CompiledRule>,
    limit: Option<RateLimit>,
    listeners: &[Attachable<'_>],
    inputs: &Inputs<'_>,
    owned: &dyn Fn(&str, &str) -> bool,
    builder: &mut ConfigBuilder,
) {
    let route_hosts: Vec<HostPattern> = if hostnames.is_empty() {
        vec![HostPattern::Any]
    } else {
        // Validated when the rules were compiled.
        hostnames
            .iter()
            .filter_map(|h| HostPattern::gateway(h).ok())
            .collect()
    };
    let mut targets: BTreeSet<(u16, HostPattern)> = BTreeSet::new();
    for (p, parent) in parents.iter().enumerate() {
        if !is_ours(parent, &object.namespace, owned) {
            continue;
        }
        let at = format!("spec.parentRefs[{p}]");
        let parent_namespace = parent.namespace.as_deref().unwrap_or(&object.namespace);
        let candidates: Vec<&Attachable<'_>> = listeners
            .iter()
            .filter(|l| l.gateway_namespace == parent_namespace && l.gateway_name == parent.name)
            .filter(|l| parent.section_name.as_deref().is_none_or(|s| s == l.name))
            .filter(|l| parent.port.is_none_or(|port| port == i32::from(l.port)))
            .collect();
        let outcome = |attachment| ParentAttachment {
            route: object.clone(),
            index: p,
            attachment,
        };
        if candidates.is_empty() {
            builder.parents.push(outcome(Attachment::NoMatchingParent));
            builder.error(RouteError::new(
                object,
                at,
                Problem::NotFound(format!(
                    "a usable listener of Gateway {parent_namespace}/{}",
                    parent.name
                )),
            ));
            continue;
        }
        let mut admitted = false;
        let mut common_host = false;
        for listener in candidates {
            match admits(listener, object.kind, &object.namespace, inputs) {
                Ok(true) => admitted = true,
                Ok(false) => continue,
                Err(why) => {
                    builder.error(RouteError::new(
                        object,
                        at.clone(),
                        Problem::Invalid(format!("listener {}: {why}", listener.name)),
                    ));
                    continue;
                }
            }
            let mut attached = false;
            for host in &route_hosts {
                if let Some(common) = host.intersect(&listener.hostname) {
                    attached = true;
                    targets.insert((listener.port, common));
                }
            }
            if attached {
                common_host = true;
                let gateway =
                    ObjectRef::new("Gateway", listener.gateway_namespace, listener.gateway_name);
                *builder
                    .attached_routes
                    .entry((gateway, listener.name.to_owned()))
                    .or_default() += 1;
            }
        }
        builder.parents.push(outcome(match (admitted, common_host) {
            (false, _) => Attachment::NotAllowedByListeners,
            (true, false) => Attachment::NoMatchingListenerHostname,
            (true, true) => Attachment::Accepted,
        }));
        if !admitted {
            builder.error(RouteError::new(
                object,
                at,
                Problem::NotPermitted {
                    target: format!(
                        "Gateway {parent_namespace}/{} (its allowedRoutes)",
                        parent.name
                    ),
                    namespace: parent_namespace.to_owned(),
                },
            ));
        } else if !common_host {
            builder.error(RouteError::new(
                object,
                "spec.hostnames",
                Problem::Invalid(format!(
                    "no hostname in common with the listeners of Gateway {parent_namespace}/{}",
                    parent.name
                )),
            ));
        }
    }
    if targets.is_empty() {
        return;
    }
    let created = meta.creation_timestamp.as_ref().map(|t| t.0.as_second());
    let name = format!("{}/{}", object.namespace, object.name);
    for (r, rule) in rules.into_iter().enumerate() {
        let mut action = rule.action;
        action.rate_limit = limit;
        let id = builder.action(action);
        for (port, host) in &targets {
            let table = &mut builder.port(*port).table;
            for (m, matcher) in rule.matches.iter().enumerate() {
                let order = RouteOrder {
                    fallback: false,
                    created,
                    name: name.clone(),
                    rule: r,
                    index: m,
                };
                table.add(host, matcher.clone(), id, order);
            }
        }
    }
}
