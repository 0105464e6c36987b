//! The edge gateway on a node (`c4m agent --gateway`): c4m-mesh's
//! [`Gateway`] fed by the control plane's `WatchObjects` stream.
//!
//! On every new set of objects the routes are translated again (only when
//! a route, class, Gateway, Ingress or TLS Secret changed) and swapped in
//! with [`Gateway::reload`], which drops no connection; the ready
//! endpoints of every Service port are published from its EndpointSlices
//! (ready endpoints only, each `address:port` with the slice's port of
//! the Service port's name). The control plane writes the objects' status;
//! errors are only logged here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use c4m_mesh::gateway::{AdminOptions, Gateway, GatewayOptions};
use c4m_mesh::proxy::routes::{
    ClusterObjects, IngressPorts, ServicePort, ServiceRef, TRANSLATED_KINDS, translate,
};
use c4m_mesh::proxy::{AppProtocol, EndpointSource, ServiceEndpoints, StaticEndpoints};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::objects::ObjectSet;

/// How a node serves the edge gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The ports Ingresses are served on (80 and 443 by default). Gateways
    /// are served on their listeners' ports.
    pub ingress_ports: IngressPorts,
    /// The address listeners bind (all IPv4 addresses by default).
    pub bind_ip: IpAddr,
    /// Where `/metrics` and `/ready` are served to callers with the
    /// cluster token; `None`: not served.
    pub admin: Option<SocketAddr>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            ingress_ports: IngressPorts::default(),
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            admin: None,
        }
    }
}

/// The kinds the gateway reads from the control plane.
pub(crate) fn kinds() -> Vec<&'static str> {
    TRANSLATED_KINDS
        .iter()
        .copied()
        .chain(["services", "endpointslices"])
        .collect()
}

/// Runs the gateway until `shutdown`, from the first whole set of objects
/// on; a port that cannot be bound is logged and tried again on the next
/// change.
pub(crate) async fn run(
    config: GatewayConfig,
    token: Option<String>,
    mut objects: watch::Receiver<Option<Arc<ObjectSet>>>,
    shutdown: CancellationToken,
) {
    let mut options = GatewayOptions {
        bind_ip: config.bind_ip,
        ..GatewayOptions::default()
    };
    match (config.admin, token) {
        (Some(addr), Some(token)) => {
            options.admin = Some(AdminOptions {
                addr,
                bearer_token: Some(token),
                tls: None,
            })
        }
        (Some(addr), None) => {
            tracing::warn!(%addr, "no gateway admin endpoint: it needs the cluster token to authenticate callers");
        }
        (None, _) => {}
    }
    let mut edge = EdgeGateway::new(config.ingress_ports, options, shutdown.clone());
    loop {
        let set = objects.borrow_and_update().clone();
        if let Some(set) = set {
            edge.update(&set);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = objects.changed() => if changed.is_err() { break },
        }
    }
    if let Some(gateway) = edge.gateway {
        gateway.stopped().await;
    }
}

/// The gateway and what it was last given.
struct EdgeGateway {
    ingress_ports: IngressPorts,
    options: GatewayOptions,
    shutdown: CancellationToken,
    endpoints: Arc<StaticEndpoints>,
    gateway: Option<Gateway>,
    /// The route objects of the configuration in service (compared by
    /// identity: the mirror keeps an unchanged object's `Arc`).
    routes: Vec<Arc<Value>>,
    published: BTreeMap<ServiceRef, ServiceEndpoints>,
}

impl EdgeGateway {
    fn new(
        ingress_ports: IngressPorts,
        options: GatewayOptions,
        shutdown: CancellationToken,
    ) -> Self {
        EdgeGateway {
            ingress_ports,
            options,
            shutdown,
            endpoints: StaticEndpoints::new(),
            gateway: None,
            routes: Vec::new(),
            published: BTreeMap::new(),
        }
    }

    /// Takes in a new set: endpoints first (so new routes find theirs),
    /// then the routes if they changed.
    fn update(&mut self, set: &ObjectSet) {
        self.publish(service_endpoints(set));
        let routes: Vec<Arc<Value>> = TRANSLATED_KINDS
            .iter()
            .flat_map(|k| set.of_kind(k))
            .cloned()
            .collect();
        let unchanged = routes.len() == self.routes.len()
            && routes
                .iter()
                .zip(&self.routes)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if self.gateway.is_some() && unchanged {
            return;
        }
        let objects = ClusterObjects::read(&|plural| set.of_kind(plural).cloned().collect());
        let translation = translate(&objects.inputs(self.ingress_ports));
        for error in &translation.errors {
            tracing::debug!(%error, "left out of the gateway's routes");
        }
        let report = match &self.gateway {
            Some(gateway) => gateway.reload(translation.config),
            None => {
                let endpoints: Arc<dyn EndpointSource> = self.endpoints.clone();
                Gateway::start(
                    translation.config,
                    endpoints,
                    self.options.clone(),
                    self.shutdown.clone(),
                )
                .map(|(gateway, report)| {
                    tracing::info!(admin = ?gateway.admin_addr(), "edge gateway running");
                    self.gateway = Some(gateway);
                    report
                })
            }
        };
        match report {
            Ok(report) => {
                self.routes = routes;
                for rejected in &report.rejected_certificates {
                    tracing::warn!(?rejected, "certificate left out of the gateway");
                }
                if !report.opened.is_empty() || !report.closed.is_empty() {
                    tracing::info!(opened = ?report.opened, closed = ?report.closed, "gateway ports");
                }
            }
            Err(error) => {
                tracing::error!(%error, "gateway configuration not applied; retried on the next change")
            }
        }
    }

    /// Publishes what changed since the last set.
    fn publish(&mut self, now: BTreeMap<ServiceRef, ServiceEndpoints>) {
        for gone in self.published.keys().filter(|s| !now.contains_key(*s)) {
            self.endpoints.clear(gone);
        }
        for (service, endpoints) in &now {
            if self.published.get(service) != Some(endpoints) {
                self.endpoints.set(service.clone(), endpoints.clone());
            }
        }
        self.published = now;
    }
}

/// The ready endpoints of every Service port (by number, and by name when
/// named) from the EndpointSlices of the set.
fn service_endpoints(set: &ObjectSet) -> BTreeMap<ServiceRef, ServiceEndpoints> {
    const SERVICE_NAME: &str = "kubernetes.io/service-name";
    let mut slices: BTreeMap<(&str, &str), Vec<&Value>> = BTreeMap::new();
    for slice in set.of_kind("endpointslices") {
        let namespace = slice["metadata"]["namespace"].as_str().unwrap_or_default();
        if let Some(service) = slice["metadata"]["labels"][SERVICE_NAME].as_str() {
            slices.entry((namespace, service)).or_default().push(slice);
        }
    }
    let mut out = BTreeMap::new();
    for service in set.of_kind("services") {
        let namespace = service["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let slices = slices
            .get(&(namespace, name))
            .map_or(&[][..], Vec::as_slice);
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let Some(number) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let port_name = port["name"].as_str().unwrap_or_default();
            let endpoints = ServiceEndpoints {
                addrs: ready_addresses(slices, port_name),
                protocol: AppProtocol::from_app_protocol(port["appProtocol"].as_str()),
            };
            let service_ref = |port| ServiceRef {
                namespace: Arc::from(namespace),
                name: Arc::from(name),
                port,
            };
            if !port_name.is_empty() {
                out.insert(
                    service_ref(ServicePort::Name(Arc::from(port_name))),
                    endpoints.clone(),
                );
            }
            out.insert(service_ref(ServicePort::Number(number)), endpoints);
        }
    }
    out
}

/// `address:port` of each ready endpoint of `slices`, the port being the
/// slice's port named `port_name` (`""` for an unnamed Service port).
fn ready_addresses(slices: &[&Value], port_name: &str) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for slice in slices {
        let Some(port) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            // An unknown readiness counts as ready, as Kubernetes says.
            if endpoint["conditions"]["ready"] == false {
                continue;
            }
            let address = endpoint["addresses"][0]
                .as_str()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let Some(ip) = address {
                addrs.push(SocketAddr::new(ip, port));
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests;
