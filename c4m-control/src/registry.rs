//! The service registry as clients see it: ready endpoints by service name,
//! read from the Endpoints objects the endpoints controller keeps, and, for
//! DNS, what each Service's own name answers (its cluster IP, its endpoints
//! when headless, or the CNAME of an ExternalName).

use std::net::IpAddr;
use std::sync::Arc;

use c4m_api::{EndpointInfo, ServiceEndpoints};
use serde_json::Value;

use crate::cache::Cache;
use crate::objects::kind;
use c4m_mesh::{DnsEndpoint, DnsService, DnsServiceKind, ServiceLookup};

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
            let ports: Vec<(String, String, u16)> = subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase(),
                        u16::try_from(p["port"].as_u64()?).ok()?,
                    ))
                })
                .collect();
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
    let ports = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                text(&p["name"]),
                p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase(),
                u16::try_from(p["port"].as_u64()?).ok()?,
            ))
        })
        .collect();
    DnsServiceKind::ClusterIp { ips, ports }
}

impl ServiceLookup for Registry {
    fn service(&self, namespace: &str, name: &str) -> Option<DnsService> {
        let service = self.cache.get(kind("services"), namespace, name);
        let endpoints = self.cache.get(kind("endpoints"), namespace, name);
        // A Microservice's own service has Endpoints and no Service object.
        if service.is_none() && endpoints.is_none() {
            return None;
        }
        let kind = service.as_deref().map(service_kind).unwrap_or_default();
        let endpoints = match (&kind, &endpoints) {
            (DnsServiceKind::Endpoints, Some(endpoints)) => ready_addresses(endpoints)
                .filter_map(|address| {
                    Some(DnsEndpoint {
                        ip: address.ip.parse().ok()?,
                        instance: address.instance,
                        hostname: address.hostname,
                        ports: address.ports,
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(DnsService { kind, endpoints })
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
