//! The endpoints controller: keeps one `Endpoints` object per service, the
//! registry that the HTTP API and DNS answer from.
//!
//! A service is a Kubernetes `Service` with a selector, or a `Microservice`
//! (each Microservice is also a service of its own name, unless a Service of
//! that name exists). An endpoint is a Running instance; ready ones go in
//! `addresses`, the rest in `notReadyAddresses`. Ports are where the
//! instance is reachable: the host port the agent bound for the target
//! container port, or the container port itself when none was bound.
//!
//! The same computation ([`backends`]) gives each service its
//! `discovery.k8s.io/v1` EndpointSlices ([`slices`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::Result;
use crate::cache::{Cache, Changes, owner_key};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{is_ready, labels, phase, reported_ports, selects, string_map};

mod slices;
pub(crate) use slices::SERVICE_NAME;

/// Label marking Endpoints this controller manages (and may delete).
const MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
const MANAGER: &str = "c4m-endpoints-controller";

/// A service port: name, protocol, application protocol, and what it
/// targets in the instance.
struct ServicePort {
    name: String,
    protocol: String,
    app_protocol: Option<String>,
    target: Value,
}

struct Service {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    /// A Microservice's own service (no Service of its name exists).
    microservice: bool,
    /// `spec.publishNotReadyAddresses`: every endpoint counts as ready.
    publish_not_ready: bool,
    /// The owner reference the service's EndpointSlices carry.
    owner: Value,
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
            app_protocol: p["appProtocol"].as_str().map(str::to_string),
            target: target(p),
        })
        .collect()
}

/// A controller reference to `object` (of `api_version` and `kind`).
fn owner_reference(object: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(object),
        "uid": object["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
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
            publish_not_ready: svc["spec"]["publishNotReadyAddresses"] == true,
            owner: owner_reference(&svc, "v1", "Service"),
        });
    }
    let ms = cache.get(kind("microservices"), namespace, name)?;
    Some(Service {
        selector: BTreeMap::from([(c4m_core::labels::MICROSERVICE.to_string(), name.to_string())]),
        namespace: namespace.to_string(),
        name: name.to_string(),
        ports: ports(&ms["spec"]["ports"], |p| p["containerPort"].clone()),
        microservice: true,
        publish_not_ready: false,
        owner: owner_reference(&ms, "c4m.io/v1", "Microservice"),
    })
}

/// A Service's selector: the labels an instance must carry.
type Selector = BTreeMap<String, String>;

/// The instances of one namespace, decoded once per batch and indexed by
/// label, so that a pass over many Services costs about what their
/// instances do, not Services times instances.
#[derive(Default)]
struct NamespacePods {
    pods: Vec<Arc<Value>>,
    /// Positions in `pods` by `key=value` label.
    by_label: HashMap<(String, String), Vec<usize>>,
}

impl NamespacePods {
    fn new(pods: Vec<Arc<Value>>) -> Self {
        let mut by_label: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, pod) in pods.iter().enumerate() {
            for label in labels(pod) {
                by_label.entry(label).or_default().push(i);
            }
        }
        NamespacePods { pods, by_label }
    }

    /// The instances carrying every label of `selector` (none for an empty
    /// one): those of its rarest label, checked against the rest.
    fn selected(&self, selector: &BTreeMap<String, String>) -> Vec<Arc<Value>> {
        let rarest = selector
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(&(k.clone(), v.clone()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|positions| positions.len());
        rarest
            .into_iter()
            .flatten()
            .map(|i| &self.pods[*i])
            .filter(|pod| selects(selector, &labels(pod)))
            .cloned()
            .collect()
    }
}

/// [`NamespacePods`] of the namespaces a batch looks at, made on first use.
#[derive(Default)]
struct Pods(std::sync::Mutex<HashMap<String, Arc<NamespacePods>>>);

impl Pods {
    fn of(&self, cache: &Cache, namespace: &str) -> Arc<NamespacePods> {
        let mut namespaces = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(namespaces.entry(namespace.to_string()).or_insert_with(|| {
            Arc::new(NamespacePods::new(
                cache.list(kind("pods"), Some(namespace)),
            ))
        }))
    }
}

/// The instances that may back `service`: a Microservice's own instances,
/// or those of a Service's namespace its selector selects.
fn candidates(cache: &Cache, pods: &Pods, service: &Service) -> Vec<Arc<Value>> {
    if service.microservice {
        cache.pods_of_owner(&owner_key(
            "microservices",
            &service.namespace,
            &service.name,
        ))
    } else {
        pods.of(cache, &service.namespace)
            .selected(&service.selector)
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

/// An instance backing a service, as both its Endpoints and its
/// EndpointSlices publish it: the one computation behind both.
struct Backend<'a> {
    pod: &'a Value,
    ip: &'a str,
    /// The instance's Ready condition.
    ready: bool,
    /// Being deleted: it takes no new traffic while it stops.
    terminating: bool,
    /// The service publishes endpoints whether ready or not.
    publish_not_ready: bool,
    /// The service's ports as resolved in this instance: `name`, `port`
    /// (the node port bound for the target, else the target itself),
    /// `protocol`, `appProtocol`.
    ports: Vec<Value>,
}

impl Backend<'_> {
    /// Whether new traffic may go to it (Endpoints' `addresses`,
    /// EndpointSlices' `ready`): ready and not terminating, or anyway when
    /// the service publishes endpoints that are not ready.
    fn takes_traffic(&self) -> bool {
        self.publish_not_ready || (self.ready && !self.terminating)
    }
}

/// The Running instances with an address among `pods` that `service`
/// selects, in the order given.
fn backends<'a>(service: &Service, pods: &'a [Arc<Value>]) -> Vec<Backend<'a>> {
    let mut out = Vec::new();
    for pod in pods {
        let pod: &Value = pod;
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
        let ports = service
            .ports
            .iter()
            .filter_map(|sp| {
                let container_port = container_port(pod, &sp.target)?;
                let port = bindings
                    .iter()
                    .find(|b| b.container_port == container_port)
                    .map_or(container_port, |b| b.host_port);
                let mut port = json!({"name": sp.name, "port": port, "protocol": sp.protocol});
                if let Some(app_protocol) = &sp.app_protocol {
                    port["appProtocol"] = json!(app_protocol);
                }
                Some(port)
            })
            .collect();
        out.push(Backend {
            pod,
            ip,
            ready: is_ready(pod),
            publish_not_ready: service.publish_not_ready,
            terminating: crate::deletion::is_deleting(pod),
            ports,
        });
    }
    out
}

/// A reference to the instance behind `backend`.
fn target_ref(backend: &Backend<'_>) -> Value {
    json!({
        "kind": "Pod",
        "namespace": namespace_of(backend.pod),
        "name": name_of(backend.pod),
        "uid": backend.pod["metadata"]["uid"],
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
fn desired_endpoints(service: &Service, backends: &[Backend<'_>]) -> Value {
    // Instances with the same port numbers share a subset, as in Kubernetes.
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    for backend in backends {
        let address = json!({
            "ip": backend.ip,
            "nodeName": backend.pod["spec"]["nodeName"],
            "hostname": name_of(backend.pod),
            "targetRef": target_ref(backend),
        });
        let entry = subsets
            .entry(Value::Array(backend.ports.clone()).to_string())
            .or_insert_with(|| Subset {
                ports: backend.ports.clone(),
                ..Subset::default()
            });
        if backend.takes_traffic() {
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
        touched.extend(
            cache
                .list(kind("endpointslices"), None)
                .iter()
                .filter_map(|slice| slice_service(slice)),
        );
    } else {
        let mut selectors: HashMap<String, Vec<(String, Selector)>> = HashMap::new();
        for (key, before) in &changes.changed {
            let before = before.as_ref().and_then(|before| before.decode(key));
            if key.starts_with("/registry/endpointslices/") {
                let current = cache.get_key(key);
                touched.extend(
                    [before, current]
                        .into_iter()
                        .flatten()
                        .filter_map(|o| slice_service(&o)),
                );
                continue;
            }
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
                // The selectors of a namespace's Services, read once a batch.
                let selectors = selectors.entry(namespace.to_string()).or_insert_with(|| {
                    cache
                        .list(kind("services"), Some(namespace))
                        .iter()
                        .map(|svc| {
                            (
                                name_of(svc).to_string(),
                                string_map(&svc["spec"]["selector"]),
                            )
                        })
                        .filter(|(_, selector)| !selector.is_empty())
                        .collect::<Vec<_>>()
                });
                for (name, selector) in selectors.iter() {
                    if selects(selector, &pod_labels) {
                        touched.insert((namespace.to_string(), name.clone()));
                    }
                }
            }
        }
    }
    let pods = Pods::default();
    let pods = &pods;
    super::reconcile_each("services' endpoints", touched, |(namespace, name)| async move {
            reconcile_service(objects, cache, pods, &namespace, &name)
                .await
                .inspect_err(
                    |e| tracing::warn!(service = %name, %namespace, error = %e, "cannot write endpoints"),
                )
        })
        .await
}

/// The service a slice this controller manages belongs to.
fn slice_service(slice: &Value) -> Option<(String, String)> {
    let labels = labels(slice);
    (labels.get(slices::MANAGED_BY).map(String::as_str) == Some(slices::MANAGER)).then_some(())?;
    Some((
        namespace_of(slice).to_string(),
        labels.get(slices::SERVICE_NAME)?.clone(),
    ))
}

/// Brings the Endpoints and EndpointSlices of `namespace/name` in line
/// with its service: created, updated, or (when managed here and the
/// service is gone) deleted.
async fn reconcile_service(
    objects: &Objects,
    cache: &Cache,
    pods: &Pods,
    namespace: &str,
    name: &str,
) -> Result<Option<i64>> {
    let service = service(cache, namespace, name);
    let pods = service
        .as_ref()
        .map(|service| candidates(cache, pods, service))
        .unwrap_or_default();
    let backends = service
        .as_ref()
        .map(|service| backends(service, &pods))
        .unwrap_or_default();
    let desired_slices = match &service {
        Some(service) => slices::desired(service, &backends),
        None => mirrored(cache, namespace, name),
    };
    let desired = service
        .as_ref()
        .map(|service| desired_endpoints(service, &backends));
    let written = reconcile_endpoints(objects, cache, namespace, name, desired).await?;
    let sliced = slices::reconcile(objects, cache, namespace, name, desired_slices).await?;
    Ok(super::latest(written, sliced))
}

/// Label by which Endpoints opt out of mirroring into EndpointSlices.
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// The slices mirroring the Endpoints users write for the Service
/// `namespace/name` when it has no selector (none when it has one, or
/// there is no such Service, or its Endpoints are managed here or opt out).
fn mirrored(cache: &Cache, namespace: &str, name: &str) -> BTreeMap<String, Value> {
    let Some(svc) = cache.get(kind("services"), namespace, name) else {
        return BTreeMap::new();
    };
    let Some(endpoints) = cache.get(kind("endpoints"), namespace, name) else {
        return BTreeMap::new();
    };
    let endpoint_labels = labels(&endpoints);
    if !string_map(&svc["spec"]["selector"]).is_empty()
        || endpoint_labels.contains_key(MANAGED_BY)
        || endpoint_labels.get(SKIP_MIRROR).map(String::as_str) == Some("true")
    {
        return BTreeMap::new();
    }
    slices::mirrored(&svc, &endpoints)
}

/// Brings the Endpoints of `namespace/name` to `desired`: created,
/// updated, or (when managed here and the service is gone) deleted.
async fn reconcile_endpoints(
    objects: &Objects,
    cache: &Cache,
    namespace: &str,
    name: &str,
    desired: Option<Value>,
) -> Result<Option<i64>> {
    let endpoints_kind = kind("endpoints");
    let current = cache.get(endpoints_kind, namespace, name);
    match (desired, current) {
        (Some(desired), None) => match objects.create(endpoints_kind, namespace, desired).await {
            Ok(created) => Ok(crate::objects::revision_of(&created)),
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

#[cfg(test)]
mod tests;
