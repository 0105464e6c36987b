//! What the control plane keeps of Services besides their endpoints:
//!
//! - the `kubernetes` Service in `default`, as kube-apiserver keeps it:
//!   the first address of the Service CIDR, port 443 named `https` whose
//!   target is the API's port, no selector, with an Endpoints and an
//!   EndpointSlice (both named `kubernetes`) at the API's advertised
//!   address; put back when deleted or changed;
//! - `status.loadBalancer` of LoadBalancer Services, the k3s servicelb
//!   way: one ingress per Ready node, its InternalIP (every node answers
//!   on the Service's port at its own address), kept current as nodes come
//!   and go; other Services have an empty one;
//! - the addresses of Services stored before c4m allocated them, given
//!   when the controller first sees them.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::Result;
use crate::cache::{Cache, Changes};
use crate::objects::{Objects, kind, name_of};

use super::latest;

/// Where in-cluster clients reach the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApiEndpoint {
    /// The `kubernetes` Service's cluster IP.
    pub service_ip: std::net::Ipv4Addr,
    /// The API's advertised address.
    pub address: IpAddr,
    /// The API's port.
    pub port: u16,
}

/// The name of the API's Service (and its Endpoints and EndpointSlice).
const API_SERVICE: &str = "kubernetes";

impl ApiEndpoint {
    fn service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": API_SERVICE,
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.service_ip.to_string(),
                "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                    "targetPort": self.port}],
                "sessionAffinity": "None",
            },
        })
    }

    fn endpoints(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": API_SERVICE,
                "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
            },
            "subsets": [{
                "addresses": [{"ip": self.address.to_string()}],
                "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
            }],
        })
    }

    fn slice(&self) -> Value {
        let address_type = match self.address {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(_) => "IPv6",
        };
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": API_SERVICE,
                "namespace": "default",
                "labels": {super::endpoints::SERVICE_NAME: API_SERVICE},
            },
            "addressType": address_type,
            "endpoints": [{
                "addresses": [self.address.to_string()],
                "conditions": {"ready": true},
            }],
            "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
        })
    }
}

/// Writes `desired` (of `plural`, in `default`) unless the stored one has
/// the same `fields`; creates it when missing.
async fn keep(
    objects: &Objects,
    cache: &Cache,
    plural: &str,
    desired: Value,
    fields: &[&str],
) -> Result<Option<i64>> {
    let kind = kind(plural);
    let same = |current: &Value| {
        fields.iter().all(|field| {
            let pointer = format!("/{}", field.replace('.', "/"));
            current.pointer(&pointer) == desired.pointer(&pointer)
        })
    };
    match cache.get(kind, "default", API_SERVICE) {
        None => match objects.create(kind, "default", desired.clone()).await {
            Ok(created) => Ok(crate::objects::revision_of(&created)),
            Err(crate::Error::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        Some(current) if same(&current) => Ok(None),
        Some(_) => {
            objects
                .update_with(kind, "default", API_SERVICE, |current| {
                    if same(current) {
                        return false;
                    }
                    for field in fields {
                        let pointer = format!("/{}", field.replace('.', "/"));
                        if let (Some(want), Some(slot)) =
                            (desired.pointer(&pointer), current.pointer_mut(&pointer))
                        {
                            *slot = want.clone();
                        } else if let Some(want) = desired.pointer(&pointer) {
                            let (parent, last) = field.rsplit_once('.').unwrap_or(("", field));
                            let parent = format!("/{}", parent.replace('.', "/"));
                            if let Some(Value::Object(parent)) = current.pointer_mut(&parent) {
                                parent.insert(last.to_string(), want.clone());
                            }
                        }
                    }
                    true
                })
                .await
        }
    }
}

/// Keeps the `kubernetes` Service, its Endpoints and its EndpointSlice.
pub(crate) async fn reconcile_api_service(
    objects: &Objects,
    cache: &Cache,
    api: &ApiEndpoint,
) -> Result<Option<i64>> {
    // The Service's spec.ports as a whole: its target is the API's port.
    let service = keep(objects, cache, "services", api.service(), &["spec.ports"]).await?;
    let endpoints = keep(objects, cache, "endpoints", api.endpoints(), &["subsets"]).await?;
    let slice = keep(
        objects,
        cache,
        "endpointslices",
        api.slice(),
        &["addressType", "endpoints", "ports"],
    )
    .await?;
    Ok(latest(latest(service, endpoints), slice))
}

/// The `status.loadBalancer` a Service should have: for a LoadBalancer,
/// the InternalIP of each Ready node.
fn load_balancer_status(service: &Value, nodes: &[(String, String)]) -> Value {
    if service["spec"]["type"] != "LoadBalancer" {
        return json!({});
    }
    let ingress: Vec<Value> = nodes
        .iter()
        .map(|(_, ip)| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    if ingress.is_empty() {
        json!({})
    } else {
        json!({"ingress": ingress})
    }
}

/// Keeps `status.loadBalancer` of every Service `changes` touch (of every
/// one when a node changed, or on a resync).
pub(crate) async fn reconcile_load_balancers(
    objects: &Objects,
    cache: &Cache,
    changes: &Changes,
) -> Result<Option<i64>> {
    let mut nodes: Vec<(String, String)> = cache
        .node_readiness()
        .into_iter()
        .filter(|(_, ready)| *ready)
        .filter_map(|(name, _)| {
            let node = cache.get(kind("nodes"), "", &name)?;
            let address = crate::agents::node_address(&node);
            (!address.is_empty()).then_some((name, address))
        })
        .collect();
    nodes.sort();
    let all = changes.everything
        || changes
            .changed
            .keys()
            .any(|key| key.starts_with("/registry/nodes/"));
    let services: Vec<std::sync::Arc<Value>> = if all {
        cache.list(kind("services"), None)
    } else {
        changes
            .changed
            .keys()
            .filter(|key| key.starts_with("/registry/services/"))
            .filter_map(|key| cache.get_key(key))
            .collect()
    };
    super::reconcile_each("load balancer statuses", services, |service| {
        let nodes = &nodes;
        async move {
            // Tried again on the next resync (a full range stays full).
            let addressed = give_addresses(objects, &service).await.unwrap_or_else(|e| {
                tracing::warn!(service = %name_of(&service), error = %e,
                        "cannot give the Service its addresses");
                None
            });
            let mut status = service["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            let wanted = load_balancer_status(&service, nodes);
            if status["loadBalancer"] == wanted {
                return Ok(addressed);
            }
            status["loadBalancer"] = wanted;
            let written = super::write_status(objects, "services", &service, &status)
                .await
                .inspect_err(|e| {
                    tracing::warn!(service = %name_of(&service), error = %e,
                        "cannot write the load balancer status");
                })?;
            Ok(latest(addressed, written))
        }
    })
    .await
}

/// Gives a Service stored without the addresses its type needs (one
/// written before c4m allocated them) its cluster IP and node ports: the
/// Service is written again as it is, and the write allocates them.
async fn give_addresses(objects: &Objects, service: &Value) -> Result<Option<i64>> {
    if !crate::service_addresses::lacks_addresses(service) {
        return Ok(None);
    }
    let written = objects
        .modify(
            kind("services"),
            crate::objects::namespace_of(service),
            name_of(service),
            crate::objects::Part::Main,
            |current| Ok(current.clone()),
        )
        .await?;
    Ok(crate::objects::revision_of(&written))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;

    fn everything() -> Changes {
        Changes {
            everything: true,
            changed: BTreeMap::new(),
        }
    }

    async fn setup() -> (tempfile::TempDir, Objects, Arc<Cache>, CancellationToken) {
        let (dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let shutdown = CancellationToken::new();
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        (dir, objects, cache, shutdown)
    }

    fn node(name: &str, address: &str, ready: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": address}],
                "conditions": [{"type": "Ready", "status": ready}]}})
    }

    /// A LoadBalancer's ingress follows the Ready nodes: one goes NotReady,
    /// its address goes; the Service's other fields stay.
    #[tokio::test]
    async fn load_balancer_ingress_follows_the_ready_nodes() {
        let (_dir, objects, cache, shutdown) = setup().await;
        for (name, address) in [("a", "192.168.1.10"), ("b", "192.168.1.11")] {
            objects
                .create(kind("nodes"), "", node(name, address, "True"))
                .await
                .unwrap();
        }
        let lb = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        let created = objects
            .create(kind("services"), "default", lb)
            .await
            .unwrap();
        cache
            .wait_for(crate::objects::revision_of(&created).unwrap())
            .await;
        let ingress = |cache: &Cache| {
            cache.get(kind("services"), "default", "lb").unwrap()["status"]["loadBalancer"].clone()
        };
        let written = reconcile_load_balancers(&objects, &cache, &everything())
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(written).await;
        assert_eq!(
            ingress(&cache),
            json!({"ingress": [{"ip": "192.168.1.10", "ipMode": "VIP"},
                {"ip": "192.168.1.11", "ipMode": "VIP"}]})
        );
        let revision = objects
            .update_with(kind("nodes"), "", "b", |node| {
                node["status"]["conditions"][0]["status"] = json!("Unknown");
                true
            })
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(revision).await;
        let changes = Changes {
            everything: false,
            changed: BTreeMap::from([("/registry/nodes/b".to_string(), None)]),
        };
        let written = reconcile_load_balancers(&objects, &cache, &changes)
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(written).await;
        assert_eq!(
            ingress(&cache),
            json!({"ingress": [{"ip": "192.168.1.10", "ipMode": "VIP"}]})
        );
        let service = cache.get(kind("services"), "default", "lb").unwrap();
        assert_eq!(service["spec"]["clusterIP"], created["spec"]["clusterIP"]);
        shutdown.cancel();
    }

    /// A Service stored by a release that gave no addresses gets them.
    #[tokio::test]
    async fn a_service_stored_without_addresses_gets_them() {
        let (_dir, objects, cache, shutdown) = setup().await;
        let old = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "old", "namespace": "default", "uid": "u-old"},
            "spec": {"type": "NodePort", "selector": {"app": "old"},
                "ports": [{"port": 80, "protocol": "TCP"}]}});
        let revision = objects
            .store()
            .txn(vec![c4m_state::Op::put(
                "/registry/services/default/old",
                bytes::Bytes::from(old.to_string()),
                c4m_state::Precondition::Absent,
            )])
            .await
            .unwrap();
        cache.wait_for(revision).await;
        let written = reconcile_load_balancers(&objects, &cache, &everything())
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(written).await;
        let service = cache.get(kind("services"), "default", "old").unwrap();
        assert!(
            service["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.96."),
            "{service}"
        );
        assert!(service["spec"]["ports"][0]["nodePort"].as_u64().is_some());
        assert_eq!(
            reconcile_load_balancers(&objects, &cache, &everything())
                .await
                .unwrap(),
            None
        );
        shutdown.cancel();
    }

    /// The `kubernetes` Service, Endpoints and EndpointSlice are made, left
    /// alone while right, and put back when deleted.
    #[tokio::test]
    async fn the_api_service_is_kept() {
        let (_dir, objects, cache, shutdown) = setup().await;
        let api = ApiEndpoint {
            service_ip: std::net::Ipv4Addr::new(10, 96, 0, 1),
            address: IpAddr::from([192, 168, 1, 5]),
            port: 6443,
        };
        let written = reconcile_api_service(&objects, &cache, &api)
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(written).await;
        let service = cache.get(kind("services"), "default", API_SERVICE).unwrap();
        assert_eq!(service["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 6443);
        let slice = cache
            .get(kind("endpointslices"), "default", API_SERVICE)
            .unwrap();
        assert_eq!(slice["endpoints"][0]["addresses"], json!(["192.168.1.5"]));
        assert_eq!(slice["ports"][0]["port"], 6443);
        let endpoints = cache
            .get(kind("endpoints"), "default", API_SERVICE)
            .unwrap();
        assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "192.168.1.5");
        assert_eq!(
            reconcile_api_service(&objects, &cache, &api).await.unwrap(),
            None
        );
        let (_, revision) = objects
            .delete(kind("services"), "default", API_SERVICE)
            .await
            .unwrap();
        cache.wait_for(revision).await;
        let written = reconcile_api_service(&objects, &cache, &api)
            .await
            .unwrap()
            .unwrap();
        cache.wait_for(written).await;
        let again = cache.get(kind("services"), "default", API_SERVICE).unwrap();
        assert_eq!(again["spec"]["clusterIP"], "10.96.0.1");
        shutdown.cancel();
    }

    #[test]
    fn a_load_balancer_gets_the_ready_nodes_addresses() {
        let nodes = vec![
            ("a".to_string(), "192.168.1.10".to_string()),
            ("b".to_string(), "192.168.1.11".to_string()),
        ];
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(
            load_balancer_status(&lb, &nodes),
            json!({"ingress": [{"ip": "192.168.1.10", "ipMode": "VIP"},
                {"ip": "192.168.1.11", "ipMode": "VIP"}]})
        );
        assert_eq!(load_balancer_status(&lb, &[]), json!({}));
        let node_port = json!({"spec": {"type": "NodePort"}});
        assert_eq!(load_balancer_status(&node_port, &nodes), json!({}));
    }
}
