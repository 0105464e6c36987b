//! A service's `discovery.k8s.io/v1` EndpointSlices, from the same
//! [`Backend`]s as its Endpoints, as Kubernetes' EndpointSlice controller
//! writes them: labelled with the service's name and this controller, one
//! slice per set of ports with at most [`MAX_ENDPOINTS`] endpoints each
//! (instances sorted by name), `addressType: IPv4`, each endpoint with its
//! `ready`, `serving` and `terminating` conditions, `nodeName`,
//! `targetRef`, and `hostname` when the instance's `spec.subdomain` is the
//! service's name. A service with no endpoint keeps one empty slice.
//!
//! Slice names are `SERVICE-HASH` (and `-N` for the Nth slice beyond the
//! first of a set of ports), HASH standing for the ports: a reconcile
//! computes them again instead of remembering generated names.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{Backend, Service, target_ref};
use crate::Result;
use crate::cache::Cache;
use crate::objects::{Objects, kind, name_of, prefix};
use crate::pods::{labels, stable_hash};

/// The label naming the Service a slice belongs to.
pub(crate) const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub(crate) const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller, as [`MANAGED_BY`] names it.
pub(crate) const MANAGER: &str = "c4m-endpointslice-controller";
/// Endpoints per slice at most (kube-controller-manager's
/// `--max-endpoints-per-slice` default).
pub(crate) const MAX_ENDPOINTS: usize = 100;

/// The EndpointSlices `service` should have now, by name.
pub(super) fn desired(service: &Service, backends: &[Backend<'_>]) -> BTreeMap<String, Value> {
    let mut members: Vec<&Backend<'_>> = backends
        .iter()
        .filter(|backend| backend.ip.parse::<Ipv4Addr>().is_ok())
        .collect();
    members.sort_by(|a, b| name_of(a.pod).cmp(name_of(b.pod)));
    let endpoints = members
        .into_iter()
        .map(|backend| (backend.ports.clone(), endpoint(service, backend)));
    slices_of(&service.namespace, &service.name, &service.owner, endpoints)
}

/// The slices of a Service without selector whose Endpoints its users
/// write: those endpoints, ready or not as they are listed (Kubernetes'
/// EndpointSlice mirroring). IPv4 addresses only.
pub(super) fn mirrored(service: &Value, endpoints: &Value) -> BTreeMap<String, Value> {
    let mut listed = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<Value> = subset["ports"].as_array().cloned().unwrap_or_default();
        for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for address in subset[field].as_array().into_iter().flatten() {
                let Some(ip) = address["ip"]
                    .as_str()
                    .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
                else {
                    continue;
                };
                let mut endpoint = json!({
                    "addresses": [ip],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                });
                for field in ["nodeName", "hostname", "targetRef"] {
                    if !address[field].is_null() {
                        endpoint[field] = address[field].clone();
                    }
                }
                listed.push((ports.clone(), endpoint));
            }
        }
    }
    slices_of(
        crate::objects::namespace_of(service),
        name_of(service),
        &super::owner_reference(service, "v1", "Service"),
        listed.into_iter(),
    )
}

/// The slices of the service `namespace/name` (owned by `owner`) for
/// `endpoints`, each with the ports it is reached on: one slice per set of
/// ports, [`MAX_ENDPOINTS`] endpoints at most each, in the order given; one
/// empty slice when there is none.
fn slices_of(
    namespace: &str,
    name: &str,
    owner: &Value,
    endpoints: impl Iterator<Item = (Vec<Value>, Value)>,
) -> BTreeMap<String, Value> {
    let mut by_ports: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for (ports, endpoint) in endpoints {
        by_ports
            .entry(Value::Array(ports.clone()).to_string())
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    if by_ports.is_empty() {
        // No endpoint: one placeholder slice, as Kubernetes keeps.
        by_ports.insert("[]".into(), (Vec::new(), Vec::new()));
    }
    let mut slices = BTreeMap::new();
    for (key, (ports, members)) in by_ports {
        let base = format!("{name}-{}", &stable_hash(key.as_bytes())[..5]);
        let chunks: Vec<&[Value]> = if members.is_empty() {
            vec![&[]]
        } else {
            members.chunks(MAX_ENDPOINTS).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let slice_name = match i {
                0 => base.clone(),
                i => format!("{base}-{i}"),
            };
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": namespace,
                    "labels": {SERVICE_NAME: name, MANAGED_BY: MANAGER},
                    "ownerReferences": [owner],
                },
                "addressType": "IPv4",
                "endpoints": chunk,
                "ports": ports,
            });
            slices.insert(slice_name, slice);
        }
    }
    slices
}

/// One endpoint of a slice.
fn endpoint(service: &Service, backend: &Backend<'_>) -> Value {
    let mut endpoint = json!({
        "addresses": [backend.ip],
        "conditions": {
            "ready": backend.takes_traffic(),
            "serving": backend.ready,
            "terminating": backend.terminating,
        },
        "targetRef": target_ref(backend),
    });
    if let Some(node) = backend.pod["spec"]["nodeName"].as_str() {
        endpoint["nodeName"] = json!(node);
    }
    let spec = &backend.pod["spec"];
    if let Some(hostname) = spec["hostname"].as_str()
        && spec["subdomain"].as_str() == Some(service.name.as_str())
    {
        endpoint["hostname"] = json!(hostname);
    }
    endpoint
}

/// The fields a slice's controller owns: compared to tell whether a
/// stored slice is as wanted, and copied into it when not.
const OWNED: [&str; 3] = ["addressType", "endpoints", "ports"];

fn is_current(current: &Value, desired: &Value) -> bool {
    OWNED.iter().all(|field| current[*field] == desired[*field])
        && current["metadata"]["ownerReferences"] == desired["metadata"]["ownerReferences"]
        && labels(current) == labels(desired)
}

/// The slices of `namespace` this controller wrote for the service `name`.
pub(super) fn managed(cache: &Cache, namespace: &str, name: &str) -> Vec<std::sync::Arc<Value>> {
    let prefix = format!("{}{name}-", prefix(kind("endpointslices"), Some(namespace)));
    let mut slices = Vec::new();
    cache.for_each_stored(&prefix, |key, stored| {
        slices.push((key.to_string(), stored.clone()));
    });
    slices
        .into_iter()
        .filter_map(|(key, stored)| stored.decode(&key))
        .filter(|slice| {
            let labels = labels(slice);
            labels.get(SERVICE_NAME).map(String::as_str) == Some(name)
                && labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
        })
        .collect()
}

/// Brings the managed slices of the service `namespace/name` to `desired`:
/// missing ones created, changed ones updated, the rest deleted. Returns
/// the revision of the last write.
pub(super) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    namespace: &str,
    name: &str,
    mut desired: BTreeMap<String, Value>,
) -> Result<Option<i64>> {
    let slices = kind("endpointslices");
    let mut written = None;
    for current in managed(cache, namespace, name) {
        let slice_name = name_of(&current).to_string();
        let revision = match desired.remove(&slice_name) {
            Some(want) if is_current(&current, &want) => None,
            Some(want) => {
                objects
                    .update_with(slices, namespace, &slice_name, |stored| {
                        if is_current(stored, &want) {
                            return false;
                        }
                        for field in OWNED {
                            stored[field] = want[field].clone();
                        }
                        stored["metadata"]["labels"] = want["metadata"]["labels"].clone();
                        stored["metadata"]["ownerReferences"] =
                            want["metadata"]["ownerReferences"].clone();
                        true
                    })
                    .await?
            }
            None => super::super::delete_object(objects, "endpointslices", &current).await,
        };
        written = super::super::latest(written, revision);
    }
    for (_, slice) in desired {
        match objects.create(slices, namespace, slice).await {
            Ok(created) => {
                let revision = crate::objects::revision_of(&created);
                written = super::super::latest(written, revision);
            }
            Err(crate::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
