//! The service registry as clients see it: ready endpoints by service name,
//! read from the Endpoints objects the endpoints controller keeps.

use std::collections::BTreeMap;
use std::sync::Arc;

use c4m_api::{EndpointInfo, ServiceEndpoints};
use serde_json::Value;

use crate::cache::Cache;
use crate::objects::kind;
use c4m_mesh::{DnsEndpoint, ServiceLookup};

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
        Some(ServiceEndpoints {
            namespace: namespace.to_string(),
            service: name.to_string(),
            endpoints: ready_endpoints(&endpoints),
        })
    }
}

fn ready_endpoints(endpoints: &Value) -> Vec<EndpointInfo> {
    let mut out = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports: BTreeMap<String, u16> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p["port"].as_u64()?).ok()?;
                let name = match p["name"].as_str() {
                    Some(name) if !name.is_empty() => name.to_string(),
                    _ => port.to_string(),
                };
                Some((name, port))
            })
            .collect();
        for address in subset["addresses"].as_array().into_iter().flatten() {
            out.push(EndpointInfo {
                instance: address["targetRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                node: address["nodeName"].as_str().unwrap_or_default().to_string(),
                ip: address["ip"].as_str().unwrap_or_default().to_string(),
                ports: ports.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    out
}

impl ServiceLookup for Registry {
    fn endpoints(&self, namespace: &str, name: &str) -> Option<Vec<DnsEndpoint>> {
        let endpoints = self.cache.get(kind("endpoints"), namespace, name)?;
        let mut out = Vec::new();
        for subset in endpoints["subsets"].as_array().into_iter().flatten() {
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
            for address in subset["addresses"].as_array().into_iter().flatten() {
                let Some(ip) = address["ip"].as_str().and_then(|ip| ip.parse().ok()) else {
                    continue;
                };
                out.push(DnsEndpoint {
                    instance: address["targetRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ip,
                    ports: ports.clone(),
                });
            }
        }
        Some(out)
    }
}
