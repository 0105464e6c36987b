//! The service registry as clients see it: ready endpoints by service name,
//! read from the Endpoints objects the endpoints controller keeps, and, for
//! DNS, what each Service's own name answers (its cluster IP, its ready
//! endpoints from its EndpointSlices when headless, or the CNAME of an
//! ExternalName).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use c4m_api::{EndpointInfo, ServiceEndpoints};
use serde_json::Value;

use crate::cache::Cache;
use crate::controllers::endpoints::SERVICE_NAME;
use crate::objects::{kind, prefix};
use c4m_mesh::{DnsEndpoint, DnsName, DnsService, DnsServiceKind, ServiceLookup};

/// Reads the registry from the cache.
#[derive(Clone)]
pub(crate) struct Registry {
    cache: Arc<Cache>,
}

impl Registry {
    /// A registry over `cache`.
    pub(crate) fn new(cache: Arc<Cache>) -> Self {
        Registry { cache }
    }

    /// Ready endpoints of a service; None when no such service exists.
    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<ServiceEndpoints> {
        let endpoints = self.cache.get(kind("endpoints"), namespace, name)?;
        let mut endpoints: Vec<EndpointInfo> = ready_addresses(&endpoints)
            .map(|address| EndpointInfo {
                instance: address.instance,
                node: address.node,
                ip: address.ip,
                ports: address
                    .ports
                    .into_iter()
                    .map(|(name, _, port)| match name.is_empty() {
                        true => (port.to_string(), port),
                        false => (name, port),
                    })
                    .collect(),
            })
            .collect();
        endpoints.sort_by(|a, b| a.instance.cmp(&b.instance));
        Some(ServiceEndpoints {
            namespace: namespace.to_string(),
            service: name.to_string(),
            endpoints,
        })
    }
}

/// One ready address of an Endpoints object, with its subset's ports.
struct ReadyAddress {
    instance: String,
    node: String,
    ip: String,
    hostname: Option<String>,
    /// `(name, protocol lowercase, port)`.
    ports: Vec<(String, String, u16)>,
}

/// The ready addresses of an Endpoints object, each with its subset's ports.
fn ready_addresses(endpoints: &Value) -> impl Iterator<Item = ReadyAddress> + '_ {
    endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|subset| {
            let ports = dns_ports(&subset["ports"]);
            subset["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |address| ReadyAddress {
                    instance: text(&address["targetRef"]["name"]),
                    node: text(&address["nodeName"]),
                    ip: text(&address["ip"]),
                    hostname: address["hostname"]
                        .as_str()
                        .filter(|h| !h.is_empty())
                        .map(str::to_string),
                    ports: ports.clone(),
                })
        })
}

/// A list of ports (an Endpoints subset's, a Service's) as
/// `(name, protocol lowercase, port)`.
fn dns_ports(list: &Value) -> Vec<(String, String, u16)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                text(&p["name"]),
                p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase(),
                u16::try_from(p["port"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// What a Service's own name answers in DNS: the CNAME of an ExternalName,
/// else its cluster IPs, else (headless, or no cluster IP yet) its endpoints.
fn service_kind(service: &Value) -> DnsServiceKind {
    let spec = &service["spec"];
    if spec["type"] == "ExternalName" {
        return DnsServiceKind::ExternalName(text(&spec["externalName"]));
    }
    let mut ips: Vec<IpAddr> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain([&spec["clusterIP"]])
        .filter_map(|ip| ip.as_str()?.parse().ok())
        .collect();
    ips.dedup();
    if ips.is_empty() {
        return DnsServiceKind::Endpoints;
    }
    DnsServiceKind::ClusterIp {
        ips,
        ports: dns_ports(&spec["ports"]),
    }
}

/// The ready endpoints of an EndpointSlice, as DNS answers them: each
/// address of each endpoint whose `ready` condition is not false
/// (Kubernetes reads an absent one as ready).
fn slice_endpoints(slice: &Value) -> impl Iterator<Item = DnsEndpoint> + '_ {
    let ports = dns_ports(&slice["ports"]);
    slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|endpoint| endpoint["conditions"]["ready"] != false)
        .flat_map(move |endpoint| {
            let ports = ports.clone();
            endpoint["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |address| {
                    Some(DnsEndpoint {
                        instance: text(&endpoint["targetRef"]["name"]),
                        hostname: endpoint["hostname"]
                            .as_str()
                            .filter(|h| !h.is_empty())
                            .map(str::to_string),
                        ip: address.as_str()?.parse().ok()?,
                        ports: ports.clone(),
                    })
                })
        })
}

impl Registry {
    /// The EndpointSlices of service `namespace/name`: those labelled with
    /// its name among those named after it (`NAME-...`, as Kubernetes'
    /// controllers and c4m's name them), so a query reads only its own.
    fn slices(&self, namespace: &str, name: &str) -> Vec<Arc<Value>> {
        let under = format!("{}{name}-", prefix(kind("endpointslices"), Some(namespace)));
        let mut found = Vec::new();
        self.cache.for_each_stored(&under, |key, stored| {
            found.push((key.to_string(), stored.clone()));
        });
        found
            .into_iter()
            .filter_map(|(key, stored)| stored.decode(&key))
            .filter(|slice| slice_service(slice) == Some(name))
            .collect()
    }

    /// The ready endpoints of service `namespace/name`: from its
    /// EndpointSlices, or its Endpoints while it has no slice.
    fn dns_endpoints(&self, namespace: &str, name: &str) -> Option<Vec<DnsEndpoint>> {
        let slices = self.slices(namespace, name);
        if !slices.is_empty() {
            let mut endpoints: Vec<DnsEndpoint> = slices
                .iter()
                .flat_map(|slice| slice_endpoints(slice).collect::<Vec<_>>())
                .collect();
            endpoints.sort_by(|a, b| (&a.instance, a.ip).cmp(&(&b.instance, b.ip)));
            return Some(endpoints);
        }
        let endpoints = self.cache.get(kind("endpoints"), namespace, name)?;
        Some(
            ready_addresses(&endpoints)
                .filter_map(|address| {
                    Some(DnsEndpoint {
                        ip: address.ip.parse().ok()?,
                        instance: address.instance,
                        hostname: address.hostname,
                        ports: address.ports,
                    })
                })
                .collect(),
        )
    }
}

/// The service an EndpointSlice belongs to (its `kubernetes.io/service-name`).
fn slice_service(slice: &Value) -> Option<&str> {
    slice["metadata"]["labels"][SERVICE_NAME].as_str()
}

impl ServiceLookup for Registry {
    fn service(&self, namespace: &str, name: &str) -> Option<DnsService> {
        let service = self.cache.get(kind("services"), namespace, name);
        let kind = service.as_deref().map(service_kind).unwrap_or_default();
        // Only a service answering its endpoints needs them read.
        let endpoints = match kind {
            DnsServiceKind::Endpoints => self.dns_endpoints(namespace, name),
            _ => None,
        };
        // A Microservice's own service has endpoints and no Service object.
        if service.is_none() && endpoints.is_none() {
            return None;
        }
        Some(DnsService {
            kind,
            endpoints: endpoints.unwrap_or_default(),
        })
    }

    /// Scans the Services, EndpointSlices and Endpoints that mention `ip` (a
    /// byte search of the stored JSON, decoding only those), for the rare
    /// PTR query.
    fn names_of(&self, ip: IpAddr) -> Vec<DnsName> {
        let needle = format!("\"{ip}\"");
        let mut candidates: BTreeSet<(String, String)> = BTreeSet::new();
        for plural in ["services", "endpointslices", "endpoints"] {
            let under = prefix(kind(plural), None);
            let mut slices = Vec::new();
            self.cache.for_each_stored(&under, |key, stored| {
                if !stored.contains(needle.as_bytes()) {
                    return;
                }
                let Some((namespace, name)) = key[under.len()..].split_once('/') else {
                    return;
                };
                match plural {
                    "endpointslices" => slices.push((key.to_string(), stored.clone())),
                    _ => {
                        candidates.insert((namespace.to_string(), name.to_string()));
                    }
                }
            });
            for (key, stored) in slices {
                let Some(slice) = stored.decode(&key) else {
                    continue;
                };
                if let Some(service) = slice_service(&slice) {
                    let namespace = crate::objects::namespace_of(&slice);
                    candidates.insert((namespace.to_string(), service.to_string()));
                }
            }
        }
        candidates
            .into_iter()
            .filter_map(|(namespace, name)| {
                let service = ServiceLookup::service(self, &namespace, &name)?;
                Some(service.names_at(&namespace, &name, ip))
            })
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_answers_by_its_type_and_cluster_ip() {
        let ports = json!([{"name": "https", "port": 443}, {"port": 53, "protocol": "UDP"}]);
        let normal = json!({"spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "ports": ports}});
        assert_eq!(
            service_kind(&normal),
            DnsServiceKind::ClusterIp {
                ips: vec!["10.96.0.1".parse().unwrap()],
                ports: vec![
                    ("https".into(), "tcp".into(), 443),
                    (String::new(), "udp".into(), 53)
                ],
            }
        );
        for headless in [
            json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}}),
            json!({"spec": {"ports": ports}}),
            json!({"spec": {"clusterIP": ""}}),
        ] {
            assert_eq!(
                service_kind(&headless),
                DnsServiceKind::Endpoints,
                "{headless}"
            );
        }
        let external = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(
            service_kind(&external),
            DnsServiceKind::ExternalName("db.example.com".into())
        );
    }

    #[tokio::test]
    async fn dns_reads_services_and_endpoints_from_the_cache() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let object = |kind: &str, name: &str, body: Value| {
            let mut object = json!({"apiVersion": "v1", "kind": kind,
                                    "metadata": {"name": name, "namespace": "default"}});
            object
                .as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            object
        };
        let endpoints = |ip: &str| {
            json!({"subsets": [{"ports": [{"name": "pg", "port": 5432}],
                   "addresses": [{"ip": ip, "hostname": "db-0", "targetRef": {"name": "db-abc"}}]}]})
        };
        for (plural, value) in [
            (
                "services",
                object(
                    "Service",
                    "api",
                    json!({"spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}}),
                ),
            ),
            (
                "endpoints",
                object("Endpoints", "api", endpoints("10.88.0.2")),
            ),
            (
                "services",
                object(
                    "Service",
                    "db",
                    json!({"spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
                ),
            ),
            (
                "endpoints",
                object("Endpoints", "db", endpoints("10.88.0.3")),
            ),
            (
                "endpoints",
                object("Endpoints", "legacy", endpoints("10.88.0.4")),
            ),
            (
                "services",
                object(
                    "Service",
                    "mail",
                    json!({"spec": {"type": "ExternalName", "externalName": "smtp.example.com"}}),
                ),
            ),
        ] {
            objects
                .create(kind(plural), "default", value)
                .await
                .unwrap();
        }
        // A headless Service's slices: its own (by label), not another's
        // whose name it prefixes.
        let slice = |name: &str, service: &str, endpoints: Value| {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": name, "namespace": "default",
                                "labels": {SERVICE_NAME: service}},
                   "addressType": "IPv4",
                   "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                   "endpoints": endpoints})
        };
        let pet = |ip: &str, pod: &str, ready: Value| {
            json!({"addresses": [ip], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": pod}})
        };
        let mut hosted = pet("10.88.1.1", "pets-a", json!(true));
        hosted["hostname"] = json!("pet-0");
        let mut unknown = pet("10.88.1.3", "pets-c", json!(null));
        unknown["conditions"] = json!({});
        for value in [
            object("Service", "pets", json!({"spec": {"clusterIP": "None"}})),
            slice(
                "pets-x1",
                "pets",
                json!([hosted, pet("10.88.1.2", "pets-b", json!(false))]),
            ),
            slice("pets-x2", "pets", json!([unknown])),
            slice(
                "pets-extra-x1",
                "pets-extra",
                json!([pet("10.88.1.9", "e", json!(true))]),
            ),
        ] {
            let plural = match value["kind"].as_str() {
                Some("Service") => "services",
                _ => "endpointslices",
            };
            objects
                .create(kind(plural), "default", value)
                .await
                .unwrap();
        }
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        let registry = Registry::new(cache);
        let pets = ServiceLookup::service(&registry, "default", "pets").unwrap();
        let found: Vec<(String, Option<String>, String)> = pets
            .endpoints
            .iter()
            .map(|e| (e.instance.clone(), e.hostname.clone(), e.ip.to_string()))
            .collect();
        // pets-b is not ready; an absent condition counts as ready.
        assert_eq!(
            found,
            [
                ("pets-a".into(), Some("pet-0".into()), "10.88.1.1".into()),
                ("pets-c".into(), None, "10.88.1.3".into()),
            ]
        );
        assert_eq!(pets.endpoints[0].ports, [("pg".into(), "tcp".into(), 5432)]);
        let lookup = |name: &str| ServiceLookup::service(&registry, "default", name);

        let api = lookup("api").unwrap();
        assert!(
            matches!(api.kind, DnsServiceKind::ClusterIp { .. }),
            "{api:?}"
        );
        assert!(api.endpoints.is_empty());
        let db = lookup("db").unwrap();
        assert_eq!(db.kind, DnsServiceKind::Endpoints);
        assert_eq!(db.endpoints[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(db.endpoints[0].ports, [("pg".into(), "tcp".into(), 5432)]);
        // Endpoints without a Service: a Microservice's own service.
        assert_eq!(lookup("legacy").unwrap().endpoints.len(), 1);
        assert_eq!(
            lookup("mail").unwrap().kind,
            DnsServiceKind::ExternalName("smtp.example.com".into())
        );
        assert_eq!(lookup("nothing"), None);

        let names = |ip: &str| registry.names_of(ip.parse().unwrap());
        let name = |service: &str, endpoint: Option<&str>| DnsName {
            namespace: "default".into(),
            service: service.into(),
            endpoint: endpoint.map(str::to_string),
        };
        assert_eq!(names("10.96.0.7"), [name("api", None)]);
        assert_eq!(names("10.88.0.3"), [name("db", Some("db-0"))]);
        assert_eq!(names("10.88.1.1"), [name("pets", Some("pet-0"))]);
        assert_eq!(names("10.88.1.2"), []);
        // An endpoint behind a cluster IP has no PTR record.
        assert_eq!(names("10.88.0.2"), []);
        assert_eq!(names("10.88.0.9"), []);
        shutdown.cancel();
    }

    #[test]
    fn ready_addresses_carry_their_subset_ports_and_hostname() {
        let endpoints = json!({"subsets": [{
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}, {"port": 70000}],
            "addresses": [
                {"ip": "10.0.0.5", "hostname": "db-0", "nodeName": "n1", "targetRef": {"name": "db-abc"}},
                {"ip": "10.0.0.6", "targetRef": {"name": "db-def"}},
            ],
            "notReadyAddresses": [{"ip": "10.0.0.7", "targetRef": {"name": "db-ghi"}}],
        }]});
        let addresses: Vec<ReadyAddress> = ready_addresses(&endpoints).collect();
        assert_eq!(addresses.len(), 2);
        assert_eq!(addresses[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(addresses[0].node, "n1");
        assert_eq!(addresses[1].hostname, None);
        assert_eq!(addresses[1].instance, "db-def");
        assert_eq!(addresses[1].ports, [("pg".into(), "tcp".into(), 5432)]);
    }
}
