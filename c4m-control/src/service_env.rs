//! The Service environment variables of an instance, as the kubelet makes
//! them (its `envvars` package): for each Service with a cluster IP in the
//! instance's namespace (all of them unless `spec.enableServiceLinks` is
//! false), and always the `kubernetes` Service of `default`,
//! `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT`, `NAME_SERVICE_PORT_<PORT NAME>`
//! and Docker's link variables (`NAME_PORT=tcp://IP:PORT`,
//! `NAME_PORT_<PORT>_<PROTO>` with `_PROTO`, `_PORT`, `_ADDR`). They are
//! built when an assignment is, from the Services that exist then; a
//! container's own variables win.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::cache::Cache;
use crate::objects::{kind, name_of};

/// The namespace of the master Service, always linked.
const MASTER_NAMESPACE: &str = "default";
/// The master Service, linked into every namespace.
const MASTER_SERVICE: &str = "kubernetes";

/// The Service variables of an instance of namespace `namespace` whose
/// `spec.enableServiceLinks` is `links` (Kubernetes' default: true), in
/// Service name order.
pub(crate) fn service_env(cache: &Cache, namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut services: BTreeMap<String, Arc<Value>> = BTreeMap::new();
    // A Service of the instance's namespace shadows the master one of its name.
    if let Some(master) = cache.get(kind("services"), MASTER_NAMESPACE, MASTER_SERVICE) {
        services.insert(MASTER_SERVICE.to_string(), master);
    }
    if links {
        for service in cache.list(kind("services"), Some(namespace)) {
            services.insert(name_of(&service).to_string(), service);
        }
    }
    services
        .into_iter()
        .flat_map(|(name, service)| variables(&name, &service))
        .collect()
}

/// Whether `pod` wants Service links (`spec.enableServiceLinks`, default true).
pub(crate) fn links_enabled(pod: &Value) -> bool {
    pod["spec"]["enableServiceLinks"].as_bool().unwrap_or(true)
}

/// The variables of Service `name`, none unless it has a cluster IP.
fn variables(name: &str, service: &Value) -> Vec<(String, String)> {
    let spec = &service["spec"];
    let Some(ip) = spec["clusterIP"]
        .as_str()
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
    else {
        return Vec::new();
    };
    let prefix = env_name(name);
    let ports: Vec<(&str, u64, String)> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str().unwrap_or_default(),
                p["port"].as_u64()?,
                p["protocol"].as_str().unwrap_or("TCP").to_ascii_uppercase(),
            ))
        })
        .collect();
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    if let Some((_, first, _)) = ports.first() {
        out.push((format!("{prefix}_SERVICE_PORT"), first.to_string()));
    }
    for (port_name, port, _) in &ports {
        if !port_name.is_empty() {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)),
                port.to_string(),
            ));
        }
    }
    let host = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{ip}]"),
        _ => ip.to_string(),
    };
    for (index, (_, port, protocol)) in ports.iter().enumerate() {
        let proto = protocol.to_ascii_lowercase();
        let url = format!("{proto}://{host}:{port}");
        // Docker names the first port's link without a port.
        if index == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let link = format!("{prefix}_PORT_{port}_{protocol}");
        out.push((format!("{link}_PROTO"), proto));
        out.push((format!("{link}_PORT"), port.to_string()));
        out.push((format!("{link}_ADDR"), ip.to_string()));
        out.push((link, url));
    }
    out
}

/// `my-svc` → `MY_SVC`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_gets_kubelets_variables() {
        let service = json!({"spec": {"clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80},
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
        ]}});
        let env: BTreeMap<String, String> = variables("my-web", &service).into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("MY_WEB_SERVICE_HOST", "10.96.0.10"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_WEB_PORT", "tcp://10.96.0.10:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.96.0.10:80"),
            ("MY_WEB_PORT_80_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_80_TCP_PORT", "80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.96.0.10"),
            ("MY_WEB_PORT_53_UDP", "udp://10.96.0.10:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
            ("MY_WEB_PORT_53_UDP_PORT", "53"),
            ("MY_WEB_PORT_53_UDP_ADDR", "10.96.0.10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn services_without_a_cluster_ip_get_none() {
        for spec in [
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            json!({"ports": [{"port": 80}]}),
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
        ] {
            assert_eq!(variables("db", &json!({"spec": spec})), [], "{spec}");
        }
        // An unnamed single port.
        let one = json!({"spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 5432}]}});
        let env = variables("db", &one);
        assert_eq!(env[0], ("DB_SERVICE_HOST".into(), "10.96.0.3".into()));
        assert_eq!(env[1], ("DB_SERVICE_PORT".into(), "5432".into()));
        assert!(env.iter().all(|(k, _)| !k.starts_with("DB_SERVICE_PORT_")));
    }
}
