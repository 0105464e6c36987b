//! The edge gateway's objects: the default IngressClass and GatewayClass
//! `c4m`, and the status of what c4m's gateway serves, computed with the
//! translation the nodes' gateways run (c4m-mesh's
//! `proxy::routes::translate`), in Gateway API's and Kubernetes' words:
//! - GatewayClasses of `c4m.io/gateway`: `Accepted`;
//! - their Gateways: `addresses` (the InternalIPs of the ready nodes that
//!   run the gateway, label [`EDGE_GATEWAY`]), `Accepted` and `Programmed`,
//!   and per listener `supportedKinds`, `attachedRoutes`, `Accepted`,
//!   `ResolvedRefs`, `Conflicted` and `Programmed`;
//! - HTTPRoutes and GRPCRoutes: one `status.parents[]` entry per parentRef
//!   naming such a Gateway, with `Accepted` (`NotAllowedByListeners`,
//!   `NoMatchingListenerHostname`, `NoMatchingParent`) and `ResolvedRefs`
//!   (`RefNotPermitted`, `InvalidKind`, `BackendNotFound`); entries of
//!   other controllers are kept;
//! - Ingresses of `c4m.io/ingress` classes: `status.loadBalancer.ingress`.
//!
//! Validation at admission is [`check`], called where `c4m_core::validate`
//! is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use c4m_core::labels::EDGE_GATEWAY;
use c4m_mesh::proxy::api::{BackendObjectReference, GROUP, Gateway, GrpcRoute, HttpRoute, Kind};
use c4m_mesh::proxy::routes::{
    Attachment, ClusterObjects, DEFAULT_CLASS_ANNOTATION, GATEWAY_CONTROLLER, INGRESS_CONTROLLER,
    IngressPorts, ObjectRef, Problem, RouteError, TRANSLATED_KINDS, Translation, translate,
};
use serde_json::{Value, json};

use super::{latest, write_status};
use crate::cache::Cache;
use crate::objects::{Objects, kind};
use crate::{Error, Result};

/// The name of the default IngressClass and GatewayClass.
pub(crate) const CLASS: &str = "c4m";

/// The kinds whose changes change a status here: what the translation
/// reads, Services (`BackendNotFound`) and Nodes (addresses).
pub(crate) fn follows() -> Vec<&'static str> {
    let mut kinds = TRANSLATED_KINDS.to_vec();
    kinds.extend(["services", "nodes"]);
    kinds
}

/// Creates the IngressClass `c4m` (the default class) and the
/// GatewayClass `c4m` unless they exist (a user may have changed them).
pub(crate) async fn ensure_default_classes(objects: &Objects) -> Result<()> {
    let ingress_class = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": INGRESS_CONTROLLER},
    });
    let gateway_class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": CLASS},
        "spec": {"controllerName": GATEWAY_CONTROLLER,
            "description": "c4m's edge gateway, run by the agents started with --gateway"},
    });
    for (plural, object) in [
        ("ingressclasses", ingress_class),
        ("gatewayclasses", gateway_class),
    ] {
        match objects.create(kind(plural), "", object).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Gives a new Ingress naming no class (neither `spec.ingressClassName`
/// nor the older annotation) the default IngressClass, as Kubernetes'
/// `DefaultIngressClass` admission does: the class annotated
/// `ingressclass.kubernetes.io/is-default-class: "true"`, the newest if
/// several are.
pub(crate) async fn default_ingress_class(
    store: &dyn c4m_state::Store,
    ingress: &mut Value,
) -> Result<()> {
    let named = ingress["spec"]["ingressClassName"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        || ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"].is_string();
    if named {
        return Ok(());
    }
    let default = super::default_class(store, "ingressclasses", DEFAULT_CLASS_ANNOTATION).await?;
    if let (Some(class), Some(spec)) = (
        default,
        ingress.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        spec.insert("ingressClassName".into(), class["metadata"]["name"].clone());
    }
    Ok(())
}

/// The admission check of an object of the edge kinds (others pass): its
/// first invalid field and why, as `(field, message)`.
pub(crate) fn check(object: &Value) -> std::result::Result<(), (String, String)> {
    match c4m_mesh::proxy::routes::validate(object).first() {
        None => Ok(()),
        Some(e) => Err((e.field().to_owned(), e.problem().to_string())),
    }
}

/// One pass: every status recomputed, written where it changed.
pub(crate) async fn reconcile(objects: &Objects, cache: &Cache) -> Result<Option<i64>> {
    let world = World::read(cache);
    let translation = world.translate();
    let addresses = gateway_addresses(cache);
    let service_exists =
        |namespace: &str, name: &str| cache.get(kind("services"), namespace, name).is_some();
    let mut written = None;
    for (plural, object, status) in world.statuses(&translation, &addresses, &service_exists) {
        written = latest(
            written,
            write_status(objects, plural, &object, &status).await?,
        );
    }
    Ok(written)
}

/// The InternalIPs of the ready nodes whose agent runs the gateway, sorted.
fn gateway_addresses(cache: &Cache) -> Vec<String> {
    let mut addresses: Vec<String> = cache
        .list(kind("nodes"), None)
        .iter()
        .filter(|n| n["metadata"]["labels"][EDGE_GATEWAY] == "true")
        .filter(|n| c4m_api::table::condition(n, "Ready").is_some_and(|c| c["status"] == "True"))
        .map(|n| crate::agents::node_address(n))
        .filter(|a| !a.is_empty())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// What the translation reads, as the cache holds it now.
struct World(ClusterObjects);

impl World {
    fn read(cache: &Cache) -> Self {
        // Only TLS Secrets can be a certificate: the others are not decoded
        // on every pass (a pass follows every Secret and Service write).
        World::new(&|plural| match plural {
            "secrets" => crate::node_objects::tls_secrets(cache),
            _ => cache.list(kind(plural), None),
        })
    }

    /// From `list`, which gives every object of a kind by its plural.
    fn new(list: &dyn Fn(&str) -> Vec<Arc<Value>>) -> Self {
        World(ClusterObjects::read(list))
    }

    fn translate(&self) -> Translation {
        // The ports only place Ingresses in the configuration, not in status.
        translate(&self.0.inputs(IngressPorts::default()))
    }

    /// Every status this controller owns, with the object it belongs to.
    fn statuses(
        &self,
        translation: &Translation,
        addresses: &[String],
        service_exists: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<(&'static str, Arc<Value>, Value)> {
        let errors = Errors::of(translation);
        let mut out = Vec::new();
        let ours: BTreeSet<&str> = self
            .0
            .gateway_classes
            .objects
            .iter()
            .filter(|c| c.spec.controller_name == GATEWAY_CONTROLLER)
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        for (stored, class) in self.0.gateway_classes.iter() {
            if class.spec.controller_name == GATEWAY_CONTROLLER {
                let conditions = vec![condition(
                    stored,
                    "Accepted",
                    true,
                    "Accepted",
                    "handled by c4m's edge gateway",
                )];
                let status = json!({"conditions": conditions});
                out.push(("gatewayclasses", Arc::clone(stored), status));
            }
        }
        for (stored, gateway) in self.0.gateways.iter() {
            if ours.contains(gateway.spec.gateway_class_name.as_str()) {
                let status = gateway_status(stored, gateway, translation, &errors, addresses);
                out.push(("gateways", Arc::clone(stored), status));
            }
        }
        let http = self.0.http_routes.iter().map(|(stored, r)| {
            let refs = r.spec.rules.iter().flat_map(|r| &r.backend_refs);
            (stored, HttpRoute::KIND, services(refs.map(|b| &b.backend)))
        });
        let grpc = self.0.grpc_routes.iter().map(|(stored, r)| {
            let refs = r.spec.rules.iter().flat_map(|r| &r.backend_refs);
            (stored, GrpcRoute::KIND, services(refs.map(|b| &b.backend)))
        });
        for (stored, route_kind, backends) in http.chain(grpc) {
            let route = object_ref(route_kind, stored);
            let attachments: Vec<_> = translation
                .parents
                .iter()
                .filter(|p| p.route == route)
                .collect();
            let plural = match route_kind {
                HttpRoute::KIND => "httproutes",
                _ => "grpcroutes",
            };
            let had_ours = stored["status"]["parents"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["controllerName"] == GATEWAY_CONTROLLER));
            if attachments.is_empty() && !had_ours {
                continue;
            }
            let resolved = resolved_refs(&route, &errors, &backends, service_exists);
            let status = route_status(stored, &route, &attachments, &errors, &resolved);
            out.push((plural, Arc::clone(stored), status));
        }
        let load_balancer: Vec<Value> = addresses.iter().map(|a| json!({"ip": a})).collect();
        for stored in &self.0.ingresses.sources {
            if translation
                .ingresses
                .contains(&object_ref("Ingress", stored))
            {
                let status = json!({"loadBalancer": {"ingress": load_balancer}});
                out.push(("ingresses", Arc::clone(stored), status));
            }
        }
        out
    }
}

fn object_ref(kind: &'static str, object: &Value) -> ObjectRef {
    ObjectRef::new(
        kind,
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// The translation's errors by object.
struct Errors<'t>(BTreeMap<&'t ObjectRef, Vec<&'t RouteError>>);

impl<'t> Errors<'t> {
    fn of(translation: &'t Translation) -> Self {
        let mut by_object: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for error in &translation.errors {
            by_object.entry(error.object()).or_default().push(error);
        }
        Errors(by_object)
    }

    /// The errors of `object` on `field` or a field under it.
    fn under<'a>(
        &'a self,
        object: &ObjectRef,
        field: &'a str,
    ) -> impl Iterator<Item = &'t RouteError> + 'a {
        self.0
            .get(object)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |e| {
                e.field()
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
    }

    fn all(&self, object: &ObjectRef) -> impl Iterator<Item = &'t RouteError> + '_ {
        self.0.get(object).into_iter().flatten().copied()
    }
}

/// Errors as one condition message.
fn message<'a>(errors: impl Iterator<Item = &'a RouteError>) -> String {
    errors
        .map(|e| format!("{}: {}", e.field(), e.problem()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A `metav1.Condition` of `object`'s generation, keeping the
/// `lastTransitionTime` of the same condition in `previous` (its stored
/// conditions) while its status stays.
fn condition_since(
    previous: &Value,
    generation: &Value,
    condition_type: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let since = previous
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == condition_type && c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| json!(crate::objects::now_rfc3339()));
    json!({
        "type": condition_type, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": since,
    })
}

/// [`condition_since`] for a condition of `object`'s own `status.conditions`.
fn condition(
    object: &Value,
    condition_type: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Value {
    condition_since(
        &object["status"]["conditions"],
        &object["metadata"]["generation"],
        condition_type,
        status,
        reason,
        message,
    )
}

fn gateway_status(
    stored: &Value,
    gateway: &Gateway,
    translation: &Translation,
    errors: &Errors<'_>,
    addresses: &[String],
) -> Value {
    let object = object_ref("Gateway", stored);
    let generation = &stored["metadata"]["generation"];
    let previous = &stored["status"]["listeners"];
    let mut listeners = Vec::new();
    let mut valid = 0;
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let before = previous
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == listener.name.as_str())
            .map(|l| &l["conditions"])
            .unwrap_or(&Value::Null);
        let condition = |t: &str, ok: bool, reason: &str, message: &str| {
            condition_since(before, generation, t, ok, reason, message)
        };
        let all: Vec<&RouteError> = errors.under(&object, &at).collect();
        let on = |suffix: &str| {
            let field = format!("{at}.{suffix}");
            all.iter()
                .copied()
                .filter(move |e| e.field().starts_with(&field))
                .collect::<Vec<_>>()
        };
        let unsupported: Vec<_> = [on("protocol"), on("tls.mode")].concat();
        let conflicts = on("port");
        let certificates = on("tls.certificateRefs");
        let supported = unsupported.is_empty();
        let accepted = match (supported, conflicts.is_empty()) {
            (false, _) => condition(
                "Accepted",
                false,
                "UnsupportedProtocol",
                &message(unsupported.iter().copied()),
            ),
            (true, false) => condition(
                "Accepted",
                false,
                "PortUnavailable",
                &message(conflicts.iter().copied()),
            ),
            (true, true) => condition("Accepted", true, "Accepted", "the listener is served"),
        };
        let resolved = match certificates
            .iter()
            .find(|e| matches!(e.problem(), Problem::NotPermitted { .. }))
        {
            Some(_) => condition(
                "ResolvedRefs",
                false,
                "RefNotPermitted",
                &message(certificates.iter().copied()),
            ),
            None if certificates.is_empty() => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every reference resolved",
            ),
            None => condition(
                "ResolvedRefs",
                false,
                "InvalidCertificateRef",
                &message(certificates.iter().copied()),
            ),
        };
        let conflicted = match conflicts.is_empty() {
            true => condition("Conflicted", false, "NoConflicts", "no conflict"),
            false => condition(
                "Conflicted",
                true,
                "ProtocolConflict",
                &message(conflicts.iter().copied()),
            ),
        };
        // A listener is left out when an error is on it (not only on one
        // of several certificates).
        let served = all
            .iter()
            .all(|e| e.field().starts_with(&format!("{at}.tls.certificateRefs[")));
        let programmed = match (served, addresses.is_empty()) {
            (false, _) => condition(
                "Programmed",
                false,
                "Invalid",
                &message(all.iter().copied()),
            ),
            (true, true) => condition(
                "Programmed",
                false,
                "Pending",
                "no ready node runs the gateway",
            ),
            (true, false) => condition(
                "Programmed",
                true,
                "Programmed",
                "served on the gateway nodes",
            ),
        };
        if served {
            valid += 1;
        }
        let kinds = if supported {
            json!([{"group": GROUP, "kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}])
        } else {
            json!([])
        };
        let attached = translation
            .attached_routes
            .get(&(object.clone(), listener.name.clone()))
            .copied()
            .unwrap_or(0);
        listeners.push(json!({
            "name": listener.name, "supportedKinds": kinds, "attachedRoutes": attached,
            "conditions": [accepted, programmed, resolved, conflicted],
        }));
    }
    let problems = message(errors.all(&object));
    let accepted = match (valid, gateway.spec.listeners.len()) {
        (v, n) if v == n => condition(
            stored,
            "Accepted",
            true,
            "Accepted",
            "the Gateway is served",
        ),
        (0, _) => condition(stored, "Accepted", false, "Invalid", &problems),
        _ => condition(stored, "Accepted", true, "ListenersNotValid", &problems),
    };
    let programmed = match (valid, addresses.is_empty()) {
        (0, _) => condition(
            stored,
            "Programmed",
            false,
            "Invalid",
            "no listener is valid",
        ),
        (_, true) => condition(
            stored,
            "Programmed",
            false,
            "AddressNotAssigned",
            "no ready node runs the gateway (c4m agent --gateway)",
        ),
        _ => condition(
            stored,
            "Programmed",
            true,
            "Programmed",
            "served on the gateway nodes",
        ),
    };
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"type": "IPAddress", "value": a}))
        .collect();
    json!({
        "addresses": addresses,
        "conditions": [accepted, programmed],
        "listeners": listeners,
    })
}

/// The Services a route's rules send to: `(namespace, name)` of each
/// backendRef of the core group's Service kind (`None`: the route's
/// namespace).
type Backends = Vec<(Option<String>, String)>;

fn services<'a>(refs: impl Iterator<Item = &'a BackendObjectReference>) -> Backends {
    refs.filter(|b| is_service(b.group.as_deref(), b.kind.as_deref()))
        .map(|b| (b.namespace.clone(), b.name.clone()))
        .collect()
}

fn is_service(group: Option<&str>, kind: Option<&str>) -> bool {
    group.unwrap_or("").is_empty() && kind.unwrap_or("Service") == "Service"
}

/// A route's `ResolvedRefs`: `(status, reason, message)`.
fn resolved_refs(
    route: &ObjectRef,
    errors: &Errors<'_>,
    backends: &Backends,
    service_exists: &dyn Fn(&str, &str) -> bool,
) -> (bool, &'static str, String) {
    let refs: Vec<&RouteError> = errors
        .all(route)
        .filter(|e| e.field().contains(".backendRefs["))
        .collect();
    if refs
        .iter()
        .any(|e| matches!(e.problem(), Problem::NotPermitted { .. }))
    {
        return (false, "RefNotPermitted", message(refs.into_iter()));
    }
    if refs
        .iter()
        .any(|e| matches!(e.problem(), Problem::Unsupported(_)))
    {
        return (false, "InvalidKind", message(refs.into_iter()));
    }
    let missing: Vec<String> = backends
        .iter()
        .map(|(namespace, name)| (namespace.as_deref().unwrap_or(&route.namespace), name))
        .filter(|(namespace, name)| !service_exists(namespace, name))
        .map(|(namespace, name)| format!("Service {namespace}/{name} not found"))
        .collect();
    if !missing.is_empty() {
        return (false, "BackendNotFound", missing.join("; "));
    }
    (true, "ResolvedRefs", "every reference resolved".into())
}

fn route_status(
    stored: &Value,
    route: &ObjectRef,
    attachments: &[&c4m_mesh::proxy::routes::ParentAttachment],
    errors: &Errors<'_>,
    resolved: &(bool, &'static str, String),
) -> Value {
    let generation = &stored["metadata"]["generation"];
    let previous = stored["status"]["parents"].as_array();
    // Other controllers' entries stay as they are.
    let mut parents: Vec<Value> = previous
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] != GATEWAY_CONTROLLER)
        .cloned()
        .collect();
    for attachment in attachments {
        let parent_ref = stored["spec"]["parentRefs"][attachment.index].clone();
        let before = previous
            .into_iter()
            .flatten()
            .find(|p| p["controllerName"] == GATEWAY_CONTROLLER && p["parentRef"] == parent_ref)
            .map(|p| &p["conditions"])
            .unwrap_or(&Value::Null);
        let accepted = attachment.attachment == Attachment::Accepted;
        let why = match attachment.attachment {
            Attachment::Accepted => "attached to the Gateway".to_string(),
            Attachment::UnsupportedValue => message(errors.all(route)),
            _ => message(
                errors
                    .under(route, &format!("spec.parentRefs[{}]", attachment.index))
                    .chain(errors.under(route, "spec.hostnames")),
            ),
        };
        let conditions = [
            condition_since(
                before,
                generation,
                "Accepted",
                accepted,
                attachment.attachment.reason(),
                &why,
            ),
            condition_since(
                before,
                generation,
                "ResolvedRefs",
                resolved.0,
                resolved.1,
                &resolved.2,
            ),
        ];
        parents.push(json!({
            "parentRef": parent_ref,
            "controllerName": GATEWAY_CONTROLLER,
            "conditions": conditions,
        }));
    }
    json!({"parents": parents})
}

#[cfg(test)]
mod tests;
