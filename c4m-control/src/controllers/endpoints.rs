//! The endpoints controller: keeps one `Endpoints` object per service, the
//! registry that the HTTP API and DNS answer from.
//!
//! A service is a Kubernetes `Service` with a selector, or a `Microservice`
//! (each Microservice is also a service of its own name, unless a Service of
//! that name exists). An endpoint is a Running instance; ready ones go in
//! `addresses`, the rest in `notReadyAddresses`. Ports are where the
//! instance is reachable: the host port the agent bound for the target
//! container port, or the container port itself when none was bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::Result;
use crate::cache::{Cache, Changes, owner_key};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{is_ready, labels, phase, reported_ports, selects, string_map};

/// Label marking Endpoints this controller manages (and may delete).
const MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
const MANAGER: &str = "c4m-endpoints-controller";

/// A service port: name, protocol, and what it targets in the instance.
struct ServicePort {
    name: String,
    protocol: String,
    target: Value,
}

struct Service {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    /// A Microservice's own service (no Service of its name exists).
    microservice: bool,
}

/// A list of ports (a Service's `spec.ports`, a Microservice's
/// `spec.ports`); `target` picks what each port points at in the instance.
fn ports(list: &Value, target: impl Fn(&Value) -> Value) -> Vec<ServicePort> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|p| ServicePort {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
            target: target(p),
        })
        .collect()
}

/// The service `namespace/name` stands for now: a Service with a selector,
/// else a Microservice (unless a selector-less Service of that name, whose
/// Endpoints users write, shadows it); `None` when there is neither.
fn service(cache: &Cache, namespace: &str, name: &str) -> Option<Service> {
    if let Some(svc) = cache.get(kind("services"), namespace, name) {
        let selector = string_map(&svc["spec"]["selector"]);
        return (!selector.is_empty()).then(|| Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            selector,
            ports: ports(&svc["spec"]["ports"], |p| match &p["targetPort"] {
                Value::Null => p["port"].clone(),
                target => target.clone(),
            }),
            microservice: false,
        });
    }
    let ms = cache.get(kind("microservices"), namespace, name)?;
    Some(Service {
        selector: BTreeMap::from([(c4m_core::labels::MICROSERVICE.to_string(), name.to_string())]),
        namespace: namespace.to_string(),
        name: name.to_string(),
        ports: ports(&ms["spec"]["ports"], |p| p["containerPort"].clone()),
        microservice: true,
    })
}

/// The instances that may back `service`: a Microservice's own instances,
/// or every instance in a Service's namespace.
fn candidates(cache: &Cache, service: &Service) -> Vec<Arc<Value>> {
    if service.microservice {
        cache.pods_of_owner(&owner_key(
            "microservices",
            &service.namespace,
            &service.name,
        ))
    } else {
        cache.list(kind("pods"), Some(&service.namespace))
    }
}

/// The container port a service port targets in `pod` (by number or name).
fn container_port(pod: &Value, target: &Value) -> Option<u16> {
    if let Some(number) = target.as_u64() {
        return u16::try_from(number).ok();
    }
    let name = target.as_str()?;
    if let Ok(number) = name.parse() {
        return Some(number);
    }
    pod["spec"]["containers"].as_array()?.iter().find_map(|c| {
        c["ports"].as_array()?.iter().find(|p| p["name"] == name)?["containerPort"]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
    })
}

/// Addresses that share one set of ports.
#[derive(Default)]
struct Subset {
    ready: Vec<Value>,
    not_ready: Vec<Value>,
    ports: Vec<Value>,
}

/// The Endpoints object a service should have now.
fn desired_endpoints(service: &Service, pods: &[Arc<Value>]) -> Value {
    // Instances with the same port numbers share a subset, as in Kubernetes.
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    for pod in pods {
        if namespace_of(pod) != service.namespace
            || phase(pod) != "Running"
            || !selects(&service.selector, &labels(pod))
        {
            continue;
        }
        let Some(ip) = pod["status"]["podIP"].as_str() else {
            continue;
        };
        let bindings = reported_ports(pod);
        let ports: Vec<Value> = service
            .ports
            .iter()
            .filter_map(|sp| {
                let container_port = container_port(pod, &sp.target)?;
                let port = bindings
                    .iter()
                    .find(|b| b.container_port == container_port)
                    .map_or(container_port, |b| b.host_port);
                Some(json!({"name": sp.name, "port": port, "protocol": sp.protocol}))
            })
            .collect();
        let address = json!({
            "ip": ip,
            "nodeName": pod["spec"]["nodeName"],
            "hostname": name_of(pod),
            "targetRef": {
                "kind": "Pod",
                "namespace": namespace_of(pod),
                "name": name_of(pod),
                "uid": pod["metadata"]["uid"],
            },
        });
        let entry = subsets
            .entry(Value::Array(ports.clone()).to_string())
            .or_insert_with(|| Subset {
                ports,
                ..Subset::default()
            });
        // A pod being deleted takes no new traffic while it stops.
        if is_ready(pod) && !crate::deletion::is_deleting(pod) {
            entry.ready.push(address);
        } else {
            entry.not_ready.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(
            |Subset {
                 ready,
                 not_ready,
                 ports,
             }| {
                let mut subset = json!({"ports": ports});
                if !ready.is_empty() {
                    subset["addresses"] = Value::Array(ready);
                }
                if !not_ready.is_empty() {
                    subset["notReadyAddresses"] = Value::Array(not_ready);
                }
                subset
            },
        )
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": service.name,
            "namespace": service.namespace,
            "labels": {MANAGED_BY: MANAGER},
        },
        "subsets": subsets,
    })
}

/// Reconciles the services `changes` touch: changed Services,
/// Microservices and Endpoints, and for each changed instance (before and
/// after) its Microservice and the Services in its namespace selecting it;
/// every service and managed Endpoints on a resync.
pub(crate) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    changes: &Changes,
) -> Result<Option<i64>> {
    let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
    let named = |object: &Value| {
        (
            namespace_of(object).to_string(),
            name_of(object).to_string(),
        )
    };
    if changes.everything {
        for plural in ["services", "microservices", "endpoints"] {
            let prefix = format!("{}{plural}/", crate::cache::ROOT);
            touched.extend(cache.keys(kind(plural)).iter().filter_map(|key| {
                let (namespace, name) = key.strip_prefix(&prefix)?.split_once('/')?;
                Some((namespace.to_string(), name.to_string()))
            }));
        }
    } else {
        for (key, before) in &changes.changed {
            let before = before.as_ref().and_then(|before| before.decode(key));
            if !key.starts_with("/registry/pods/") {
                let current = cache.get_key(key);
                touched.extend([before, current].into_iter().flatten().map(|o| named(&o)));
                continue;
            }
            for pod in [before, cache.get_key(key)].into_iter().flatten() {
                let pod_labels = labels(&pod);
                let namespace = namespace_of(&pod);
                if let Some(ms) = pod_labels.get(c4m_core::labels::MICROSERVICE) {
                    touched.insert((namespace.to_string(), ms.clone()));
                }
                for svc in cache.list(kind("services"), Some(namespace)) {
                    let selector = string_map(&svc["spec"]["selector"]);
                    if !selector.is_empty() && selects(&selector, &pod_labels) {
                        touched.insert(named(&svc));
                    }
                }
            }
        }
    }
    super::reconcile_each("services' endpoints", touched, |(namespace, name)| async move {
            reconcile_service(objects, cache, &namespace, &name)
                .await
                .inspect_err(
                    |e| tracing::warn!(service = %name, %namespace, error = %e, "cannot write endpoints"),
                )
        })
        .await
}

/// Brings the Endpoints of `namespace/name` in line with its service:
/// created, updated, or (when managed here and the service is gone) deleted.
async fn reconcile_service(
    objects: &Objects,
    cache: &Cache,
    namespace: &str,
    name: &str,
) -> Result<Option<i64>> {
    let endpoints_kind = kind("endpoints");
    let desired = service(cache, namespace, name)
        .map(|service| desired_endpoints(&service, &candidates(cache, &service)));
    let current = cache.get(endpoints_kind, namespace, name);
    match (desired, current) {
        (Some(desired), None) => match objects.create(endpoints_kind, namespace, desired).await {
            Ok(created) => Ok(created["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())),
            Err(crate::Error::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        (Some(desired), Some(current)) => {
            if current["subsets"] == desired["subsets"] && labels(&current).contains_key(MANAGED_BY)
            {
                return Ok(None);
            }
            objects
                .update_with(endpoints_kind, namespace, name, |current| {
                    current["subsets"] = desired["subsets"].clone();
                    current["metadata"]["labels"][MANAGED_BY] = json!(MANAGER);
                    true
                })
                .await
        }
        (None, Some(current))
            if labels(&current).get(MANAGED_BY).map(String::as_str) == Some(MANAGER) =>
        {
            match objects.delete(endpoints_kind, namespace, name).await {
                Ok((_, revision)) => Ok(Some(revision)),
                Err(crate::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
        (None, _) => Ok(None),
    }
}
