//! The endpoints controller: keeps one `Endpoints` object per service, the
//! registry that the HTTP API and DNS answer from.
//!
//! A service is a Kubernetes `Service` with a selector, or a `Microservice`
//! (each Microservice is also a service of its own name, unless a Service of
//! that name exists). An endpoint is a Running instance; ready ones go in
//! `addresses`, the rest in `notReadyAddresses`. Ports are where the
//! instance is reachable: the host port the agent bound for the target
//! container port, or the container port itself when none was bound.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::latest;
use crate::Result;
use crate::cache::Cache;
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

fn services(cache: &Cache) -> Vec<Service> {
    let mut services = Vec::new();
    let mut named = HashSet::new();
    for svc in cache.list(kind("services"), None) {
        let selector = string_map(&svc["spec"]["selector"]);
        named.insert((namespace_of(&svc).to_string(), name_of(&svc).to_string()));
        if selector.is_empty() {
            continue; // Endpoints of a selector-less Service are written by users.
        }
        services.push(Service {
            namespace: namespace_of(&svc).to_string(),
            name: name_of(&svc).to_string(),
            selector,
            ports: ports(&svc["spec"]["ports"], |p| match &p["targetPort"] {
                Value::Null => p["port"].clone(),
                target => target.clone(),
            }),
        });
    }
    for ms in cache.list(kind("microservices"), None) {
        let key = (namespace_of(&ms).to_string(), name_of(&ms).to_string());
        if named.contains(&key) {
            continue;
        }
        services.push(Service {
            selector: BTreeMap::from([(c4m_core::labels::MICROSERVICE.to_string(), key.1.clone())]),
            namespace: key.0,
            name: key.1,
            ports: ports(&ms["spec"]["ports"], |p| p["containerPort"].clone()),
        });
    }
    services
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
        if is_ready(pod) {
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

/// One pass over every service.
pub(crate) async fn reconcile(objects: &Objects, cache: &Cache) -> Result<Option<i64>> {
    let pods = cache.list(kind("pods"), None);
    let services = services(cache);
    let mut written = None;
    let mut wanted = HashSet::new();
    let endpoints_kind = kind("endpoints");
    for service in &services {
        wanted.insert((service.namespace.clone(), service.name.clone()));
        let desired = desired_endpoints(service, &pods);
        match cache.get(endpoints_kind, &service.namespace, &service.name) {
            None => match objects
                .create(endpoints_kind, &service.namespace, desired)
                .await
            {
                Ok(created) => {
                    written = latest(
                        written,
                        created["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|rv| rv.parse().ok()),
                    );
                }
                Err(crate::Error::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::warn!(service = %service.name, error = %e, "cannot create endpoints")
                }
            },
            Some(current) => {
                if current["subsets"] == desired["subsets"]
                    && labels(&current).contains_key(MANAGED_BY)
                {
                    continue;
                }
                let revision = objects
                    .update_with(
                        endpoints_kind,
                        &service.namespace,
                        &service.name,
                        |current| {
                            current["subsets"] = desired["subsets"].clone();
                            current["metadata"]["labels"][MANAGED_BY] = json!(MANAGER);
                            true
                        },
                    )
                    .await?;
                written = latest(written, revision);
            }
        }
    }
    for endpoints in cache.list(endpoints_kind, None) {
        let key = (
            namespace_of(&endpoints).to_string(),
            name_of(&endpoints).to_string(),
        );
        if labels(&endpoints).get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
            && !wanted.contains(&key)
            && let Ok((_, revision)) = objects.delete(endpoints_kind, &key.0, &key.1).await
        {
            written = latest(written, Some(revision));
        }
    }
    Ok(written)
}
