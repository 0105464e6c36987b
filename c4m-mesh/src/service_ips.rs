//! Service virtual IPs as a node programs them: plain data ([`ServiceTable`],
//! one [`ServicePortRules`] per port of each Service) built from Kubernetes
//! `v1` Services and `discovery.k8s.io/v1` EndpointSlices by a pure
//! function ([`ServiceTable::from_objects`]), and which endpoints a node
//! sends each kind of traffic to ([`ServicePortRules::select`], kube-proxy's
//! `CategorizeEndpoints`). `ServiceRules` (feature `linux`) programs a
//! table into nftables.
//!
//! ```
//! use c4m_mesh::ServiceTable;
//! use serde_json::json;
//!
//! let service = json!({
//!     "metadata": {"name": "cart", "namespace": "shop"},
//!     "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}
//! });
//! let slice = json!({
//!     "metadata": {"name": "cart-1", "namespace": "shop",
//!                  "labels": {"kubernetes.io/service-name": "cart"}},
//!     "addressType": "IPv4",
//!     "endpoints": [{"addresses": ["10.88.1.2"], "conditions": {"ready": true}, "nodeName": "n1"}],
//!     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
//! });
//! let (table, problems) = ServiceTable::from_objects([&service], [&slice]);
//! assert!(problems.is_empty());
//! let (name, rules) = table.ports().next().unwrap();
//! assert_eq!(name.to_string(), "shop/cart/tcp/http");
//! assert_eq!(rules.endpoints[0].port, 8080);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10_800;

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `TCP` (the default).
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Protocol {
    /// The protocol as nftables names it (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    fn parse(value: Option<&str>) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One port of one Service: `NAMESPACE/NAME/PROTOCOL/PORTNAME` (the port's
/// name may be empty when the Service has one port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The port's name (`spec.ports[].name`).
    pub port_name: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.as_str(),
            self.port_name
        )
    }
}

/// One endpoint of a Service port, from an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceEndpoint {
    /// Its address (`endpoints[].addresses[0]`).
    pub address: Ipv4Addr,
    /// The port it serves the Service port on (the slice's `ports[].port`).
    pub port: u16,
    /// `conditions.ready` (absent: true).
    pub ready: bool,
    /// `conditions.serving` (absent: true).
    pub serving: bool,
    /// `conditions.terminating` (absent: false).
    pub terminating: bool,
    /// The node it runs on (`nodeName`).
    pub node_name: Option<String>,
}

/// One Service port as a node programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortRules {
    /// The Service's cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The Service port (`spec.ports[].port`).
    pub port: u16,
    /// Its NodePort (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// Addresses that also answer on `port` from outside: the load
    /// balancer's ingress IPs (the nodes' addresses, k3s' way) and
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// ClientIP session affinity and its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`: cluster IP traffic only to this
    /// node's endpoints.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: NodePort and external traffic only
    /// to this node's endpoints, keeping the client's address.
    pub external_local: bool,
    /// Every endpoint, whatever its conditions, sorted.
    pub endpoints: Vec<ServiceEndpoint>,
}

/// Which endpoints a node sends a Service port's traffic to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// For `Cluster` policies: the ready endpoints, or when none is ready
    /// the serving terminating ones (kube-proxy's fallback).
    pub cluster: Vec<&'a ServiceEndpoint>,
    /// For `Local` policies: the same choice among this node's endpoints.
    pub local: Vec<&'a ServiceEndpoint>,
    /// Whether any endpoint anywhere can take traffic (else: reject).
    pub has_endpoints: bool,
}

impl ServicePortRules {
    /// Whether traffic may come from outside: a NodePort or an external
    /// address.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }

    /// The endpoints traffic goes to on node `node_name`.
    pub fn select(&self, node_name: &str) -> Selection<'_> {
        let cluster = usable(self.endpoints.iter().collect());
        let local = if self.internal_local || (self.external_local && self.externally_accessible())
        {
            usable(
                self.endpoints
                    .iter()
                    .filter(|e| e.node_name.as_deref() == Some(node_name))
                    .collect(),
            )
        } else {
            Vec::new()
        };
        Selection {
            has_endpoints: !cluster.is_empty(),
            cluster,
            local,
        }
    }
}

/// What every node programs: the Service ports with a cluster IP, and
/// where traffic into the overlay takes its source address from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    ports: BTreeMap<ServicePortName, ServicePortRules>,
    /// Per VPC range served here, this node's gateway in it.
    vpc_gateways: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// Addresses and ports claimed, so no two Service ports take one.
    claimed: BTreeSet<Claim>,
}

/// The ready endpoints among `endpoints`, or when none is ready the
/// serving terminating ones (kube-proxy's fallback).
fn usable(endpoints: Vec<&ServiceEndpoint>) -> Vec<&ServiceEndpoint> {
    let ready: Vec<_> = endpoints.iter().copied().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .into_iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

/// An nftables map key a Service port takes: one owner each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    Address(Ipv4Addr, Protocol, u16),
    NodePort(Protocol, u16),
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> ServiceTable {
        ServiceTable::default()
    }

    /// Adds a Service port. A port whose address, port and protocol (or
    /// NodePort) another port already has is refused, naming both: the
    /// first keeps it.
    pub fn insert(&mut self, name: ServicePortName, rules: ServicePortRules) -> Result<(), String> {
        if let Some(old) = self.ports.remove(&name) {
            for claim in claims(&old) {
                self.claimed.remove(&claim);
            }
        }
        let wanted = claims(&rules);
        if let Some(taken) = wanted.iter().find(|c| self.claimed.contains(c)) {
            let owner = self
                .ports
                .iter()
                .find(|(_, r)| claims(r).contains(taken))
                .map(|(n, _)| n.to_string())
                .unwrap_or_default();
            return Err(format!("service port {name}: {taken} is taken by {owner}"));
        }
        self.claimed.extend(wanted);
        self.ports.insert(name, rules);
        Ok(())
    }

    /// Removes a Service port; returns what it was.
    pub fn remove(&mut self, name: &ServicePortName) -> Option<ServicePortRules> {
        let old = self.ports.remove(name)?;
        for claim in claims(&old) {
            self.claimed.remove(&claim);
        }
        Some(old)
    }

    /// The Service ports, by name.
    pub fn ports(&self) -> impl Iterator<Item = (&ServicePortName, &ServicePortRules)> {
        self.ports.iter()
    }

    /// The rules of one Service port.
    pub fn get(&self, name: &ServicePortName) -> Option<&ServicePortRules> {
        self.ports.get(name)
    }

    /// How many Service ports there are.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether there is no Service port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Sets the VPCs this node serves: per VPC range, this node's gateway
    /// in it, the source address that service traffic into the overlay
    /// takes when it must be masqueraded. Overlapping ranges are refused.
    pub fn set_vpc_gateways(
        &mut self,
        gateways: impl IntoIterator<Item = (Ipv4Net, Ipv4Addr)>,
    ) -> Result<(), String> {
        let gateways: BTreeMap<_, _> = gateways.into_iter().collect();
        let ranges: Vec<_> = gateways.keys().collect();
        for pair in ranges.windows(2) {
            if pair[0].contains(&pair[1].network()) {
                return Err(format!("vpc ranges {} and {} overlap", pair[0], pair[1]));
            }
        }
        self.vpc_gateways = gateways;
        Ok(())
    }

    /// Per VPC range served here, this node's gateway in it.
    pub fn vpc_gateways(&self) -> &BTreeMap<Ipv4Net, Ipv4Addr> {
        &self.vpc_gateways
    }

    /// The table of `services` (Kubernetes `v1` Service objects) and their
    /// `slices` (`discovery.k8s.io/v1` EndpointSlice objects). Services
    /// without a cluster IP (headless, ExternalName) have no rules. What
    /// cannot be used is left out and said in the returned problems, one
    /// line each naming the object and the field.
    pub fn from_objects<'a>(
        services: impl IntoIterator<Item = &'a serde_json::Value>,
        slices: impl IntoIterator<Item = &'a serde_json::Value>,
    ) -> (ServiceTable, Vec<String>) {
        let mut problems = Vec::new();
        // (namespace, service) → its slices.
        let mut slices_of: BTreeMap<(String, String), Vec<SliceView>> = BTreeMap::new();
        for value in slices {
            match SliceView::deserialize(value) {
                Ok(slice) => {
                    let Some(service) = slice.metadata.labels.get(SERVICE_NAME_LABEL).cloned()
                    else {
                        continue;
                    };
                    slices_of
                        .entry((slice.metadata.namespace.clone(), service))
                        .or_default()
                        .push(slice);
                }
                Err(e) => problems.push(format!(
                    "endpointslice {}: {e}",
                    object_name(value, "metadata")
                )),
            }
        }
        let mut table = ServiceTable::new();
        for value in services {
            let service = match ServiceView::deserialize(value) {
                Ok(service) => service,
                Err(e) => {
                    problems.push(format!("service {}: {e}", object_name(value, "metadata")));
                    continue;
                }
            };
            let key = (
                service.metadata.namespace.clone(),
                service.metadata.name.clone(),
            );
            let slices = slices_of.get(&key).map(Vec::as_slice).unwrap_or_default();
            match service.port_rules(slices) {
                Ok(ports) => {
                    for (name, rules) in ports {
                        if let Err(e) = table.insert(name, rules) {
                            problems.push(e);
                        }
                    }
                }
                Err(e) => problems.push(format!(
                    "service {}/{}: {e}",
                    service.metadata.namespace, service.metadata.name
                )),
            }
        }
        (table, problems)
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Address(address, protocol, port) => {
                write!(f, "{address}:{port}/{}", protocol.as_str())
            }
            Claim::NodePort(protocol, port) => write!(f, "node port {port}/{}", protocol.as_str()),
        }
    }
}

fn claims(rules: &ServicePortRules) -> Vec<Claim> {
    std::iter::once(rules.cluster_ip)
        .chain(rules.external_ips.iter().copied())
        .map(|address| Claim::Address(address, rules.protocol, rules.port))
        .chain(
            rules
                .node_port
                .map(|port| Claim::NodePort(rules.protocol, port)),
        )
        .collect()
}

/// `NAMESPACE/NAME` of an object that did not decode, as far as it goes.
fn object_name(value: &serde_json::Value, metadata: &str) -> String {
    let field = |name: &str| {
        value
            .get(metadata)
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    format!("{}/{}", field("namespace"), field("name"))
}

/// Whether `name` can be part of an nftables chain name as it is: what
/// Kubernetes allows in namespace, Service and port names.
fn is_plain_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

// Typed views of the fields used, so a wrong type is an error naming it.

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_string()
}

#[derive(Deserialize)]
struct ServiceView {
    metadata: Metadata,
    #[serde(default)]
    spec: ServiceSpecView,
    #[serde(default)]
    status: ServiceStatusView,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceSpecView {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Vec<ServicePortView>,
    session_affinity: Option<String>,
    session_affinity_config: Option<AffinityConfigView>,
    internal_traffic_policy: Option<String>,
    external_traffic_policy: Option<String>,
    #[serde(default, rename = "externalIPs")]
    external_ips: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePortView {
    #[serde(default)]
    name: String,
    protocol: Option<String>,
    port: u16,
    node_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AffinityConfigView {
    #[serde(rename = "clientIP")]
    client_ip: Option<ClientIpView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientIpView {
    timeout_seconds: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceStatusView {
    #[serde(default)]
    load_balancer: LoadBalancerView,
}

#[derive(Deserialize, Default)]
struct LoadBalancerView {
    #[serde(default)]
    ingress: Vec<IngressView>,
}

#[derive(Deserialize)]
struct IngressView {
    ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceView {
    metadata: Metadata,
    address_type: Option<String>,
    #[serde(default)]
    endpoints: Vec<SliceEndpointView>,
    #[serde(default)]
    ports: Vec<SlicePortView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceEndpointView {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    conditions: ConditionsView,
    node_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct ConditionsView {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
struct SlicePortView {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<u16>,
}

impl ServiceView {
    /// The rules of each port, or why the Service has none.
    fn port_rules(
        &self,
        slices: &[SliceView],
    ) -> Result<Vec<(ServicePortName, ServicePortRules)>, String> {
        let spec = &self.spec;
        let cluster_ip = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => return Ok(Vec::new()),
            Some(_) if spec.type_.as_deref() == Some("ExternalName") => return Ok(Vec::new()),
            Some(ip) => ip
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("spec.clusterIP {ip:?} is not an IPv4 address"))?,
        };
        for name in [&self.metadata.namespace, &self.metadata.name] {
            if !is_plain_name(name) {
                return Err(format!("name {name:?} is not a DNS label"));
            }
        }
        let external = matches!(
            spec.type_.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
        let mut external_ips = Vec::new();
        for (field, ip) in spec
            .external_ips
            .iter()
            .map(|ip| ("spec.externalIPs", Some(ip)))
            .chain(
                self.status
                    .load_balancer
                    .ingress
                    .iter()
                    .filter(|_| spec.type_.as_deref() == Some("LoadBalancer"))
                    .map(|i| ("status.loadBalancer.ingress[].ip", i.ip.as_ref())),
            )
        {
            let Some(ip) = ip else { continue };
            let address = ip
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{field} {ip:?} is not an IPv4 address"))?;
            if !external_ips.contains(&address) {
                external_ips.push(address);
            }
        }
        let affinity_timeout = match spec.session_affinity.as_deref() {
            Some("ClientIP") => Some(
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECS),
            ),
            _ => None,
        };
        let mut ports = Vec::new();
        for (index, port) in spec.ports.iter().enumerate() {
            let protocol = Protocol::parse(port.protocol.as_deref()).ok_or_else(|| {
                format!(
                    "spec.ports[{index}].protocol {:?} is not TCP, UDP or SCTP",
                    port.protocol.as_deref().unwrap_or_default()
                )
            })?;
            if !is_plain_name(&port.name) {
                return Err(format!(
                    "spec.ports[{index}].name {:?} is not a port name",
                    port.name
                ));
            }
            let name = ServicePortName {
                namespace: self.metadata.namespace.clone(),
                name: self.metadata.name.clone(),
                protocol,
                port_name: port.name.clone(),
            };
            let mut endpoints: Vec<ServiceEndpoint> = slices
                .iter()
                .filter(|s| s.address_type.as_deref().is_none_or(|t| t == "IPv4"))
                .flat_map(|slice| {
                    let target = slice.ports.iter().find(|p| {
                        p.name.as_deref().unwrap_or_default() == port.name
                            && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
                    });
                    target
                        .and_then(|p| p.port)
                        .into_iter()
                        .flat_map(move |target| {
                            slice.endpoints.iter().filter_map(move |e| {
                                let address = e.addresses.first()?.parse().ok()?;
                                let ready = e.conditions.ready.unwrap_or(true);
                                Some(ServiceEndpoint {
                                    address,
                                    port: target,
                                    ready,
                                    serving: e.conditions.serving.unwrap_or(ready),
                                    terminating: e.conditions.terminating.unwrap_or(false),
                                    node_name: e.node_name.clone(),
                                })
                            })
                        })
                })
                .collect();
            endpoints.sort();
            endpoints.dedup_by(|a, b| a.address == b.address && a.port == b.port);
            ports.push((
                name,
                ServicePortRules {
                    cluster_ip,
                    protocol,
                    port: port.port,
                    node_port: port.node_port.filter(|p| external && *p != 0),
                    external_ips: external_ips.clone(),
                    affinity_timeout,
                    internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                    external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                    endpoints,
                },
            ));
        }
        Ok(ports)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn service(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec})
    }

    fn slice(service: &str, endpoints: Value, ports: Value) -> Value {
        json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "shop",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports
        })
    }

    fn endpoint(address: &str, node: &str, conditions: Value) -> Value {
        json!({"addresses": [address], "nodeName": node, "conditions": conditions})
    }

    fn port_name(service: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: "shop".into(),
            name: service.into(),
            protocol: Protocol::Tcp,
            port_name: port.into(),
        }
    }

    #[test]
    fn ports_take_their_endpoints_by_port_name_and_protocol() {
        let services = [service(
            "cart",
            json!({"clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}),
        )];
        let slices = [slice(
            "cart",
            json!([
                endpoint("10.88.1.2", "n1", json!({"ready": true})),
                endpoint("10.88.2.2", "n2", json!({}))
            ]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                   {"name": "dns", "port": 5353, "protocol": "UDP"}]),
        )];
        let (table, problems) = ServiceTable::from_objects(&services, &slices);
        assert_eq!(problems, Vec::<String>::new());
        let http = table.get(&port_name("cart", "http")).unwrap();
        assert_eq!(http.cluster_ip, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(http.port, 80);
        assert_eq!(
            http.endpoints
                .iter()
                .map(|e| (e.address.to_string(), e.port, e.ready))
                .collect::<Vec<_>>(),
            [
                ("10.88.1.2".to_string(), 8080, true),
                ("10.88.2.2".to_string(), 8080, true)
            ]
        );
        let dns = table
            .get(&ServicePortName {
                protocol: Protocol::Udp,
                ..port_name("cart", "dns")
            })
            .unwrap();
        assert_eq!(dns.endpoints[0].port, 5353);
        assert_eq!(dns.affinity_timeout, None);
    }

    #[test]
    fn headless_and_external_name_services_have_no_rules() {
        let services = [
            service(
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
            service(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.org"}),
            ),
            service("pending", json!({"ports": [{"port": 80}]})),
        ];
        let (table, problems) = ServiceTable::from_objects(&services, &[]);
        assert!(table.is_empty());
        assert!(problems.is_empty());
    }

    #[test]
    fn node_ports_affinity_policies_and_load_balancer_addresses_are_read() {
        let mut lb = service(
            "front",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11",
                   "sessionAffinity": "ClientIP",
                   "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                   "ports": [{"port": 443, "nodePort": 30443}]}),
        );
        lb["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "10.99.250.11"}, {"ip": "10.99.250.12"}]}});
        let plain = service(
            "plain",
            json!({"clusterIP": "10.96.0.12", "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                   "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let (table, problems) = ServiceTable::from_objects([&lb, &plain], []);
        assert!(problems.is_empty(), "{problems:?}");
        let front = table.get(&port_name("front", "")).unwrap();
        assert_eq!(front.node_port, Some(30443));
        assert_eq!(
            front.external_ips,
            [
                Ipv4Addr::new(10, 99, 250, 11),
                Ipv4Addr::new(10, 99, 250, 12)
            ]
        );
        assert_eq!(front.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT_SECS));
        assert!(front.internal_local && front.external_local);
        let plain = table.get(&port_name("plain", "")).unwrap();
        // A ClusterIP Service has no NodePort, whatever its ports say.
        assert_eq!(plain.node_port, None);
        assert_eq!(plain.affinity_timeout, Some(60));
        assert!(!plain.externally_accessible());
    }

    #[test]
    fn bad_fields_are_named_and_change_nothing_else() {
        let services = [
            service(
                "bad-ip",
                json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}),
            ),
            service(
                "bad-proto",
                json!({"clusterIP": "10.96.0.13", "ports": [{"port": 80, "protocol": "ICMP"}]}),
            ),
            json!({"metadata": {"name": "bad-port", "namespace": "shop"}, "spec": {"clusterIP": "10.96.0.14", "ports": [{"port": "http"}]}}),
            service(
                "good",
                json!({"clusterIP": "10.96.0.15", "ports": [{"port": 80}]}),
            ),
            service(
                "same-ip",
                json!({"clusterIP": "10.96.0.15", "ports": [{"port": 80}]}),
            ),
        ];
        let (table, problems) = ServiceTable::from_objects(&services, &[]);
        assert_eq!(table.len(), 1);
        assert!(table.get(&port_name("good", "")).is_some());
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("shop/bad-ip") && problems[0].contains("spec.clusterIP"));
        assert!(problems[1].contains("spec.ports[0].protocol"));
        assert!(problems[2].starts_with("service shop/bad-port:"));
        assert!(
            problems[3].contains("10.96.0.15:80/tcp is taken by shop/good/tcp/"),
            "{}",
            problems[3]
        );
    }

    fn rules(endpoints: Vec<ServiceEndpoint>) -> ServicePortRules {
        ServicePortRules {
            cluster_ip: Ipv4Addr::new(10, 96, 0, 1),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            external_ips: Vec::new(),
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            endpoints,
        }
    }

    fn ep(last: u8, node: &str, ready: bool, serving: bool, terminating: bool) -> ServiceEndpoint {
        ServiceEndpoint {
            address: Ipv4Addr::new(10, 88, 0, last),
            port: 8080,
            ready,
            serving,
            terminating,
            node_name: Some(node.into()),
        }
    }

    fn lasts(endpoints: &[&ServiceEndpoint]) -> Vec<u8> {
        endpoints.iter().map(|e| e.address.octets()[3]).collect()
    }

    #[test]
    fn ready_endpoints_first_then_serving_terminating_ones() {
        let port = rules(vec![
            ep(2, "n1", true, true, false),
            ep(3, "n1", false, true, true),
            ep(4, "n2", false, false, false),
        ]);
        let chosen = port.select("n1");
        assert_eq!(lasts(&chosen.cluster), [2]);
        assert!(chosen.local.is_empty(), "no Local policy, no local chain");
        assert!(chosen.has_endpoints);

        let port = rules(vec![
            ep(3, "n1", false, true, true),
            ep(4, "n2", false, false, true),
        ]);
        assert_eq!(lasts(&port.select("n1").cluster), [3]);
        let port = rules(vec![ep(4, "n2", false, false, false)]);
        assert!(!port.select("n1").has_endpoints);
    }

    #[test]
    fn local_policies_choose_this_nodes_endpoints() {
        let mut port = rules(vec![
            ep(2, "n1", true, true, false),
            ep(3, "n2", true, true, false),
        ]);
        port.internal_local = true;
        assert_eq!(lasts(&port.select("n1").local), [2]);
        assert_eq!(lasts(&port.select("n2").local), [3]);
        assert!(port.select("n3").local.is_empty());
        assert!(port.select("n3").has_endpoints);
    }

    #[test]
    fn vpc_gateway_ranges_must_not_overlap() {
        let mut table = ServiceTable::new();
        let gateways = [
            ("10.88.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 88, 1, 1)),
            ("10.88.4.0/24".parse().unwrap(), Ipv4Addr::new(10, 88, 4, 1)),
        ];
        assert!(table.set_vpc_gateways(gateways).is_err());
        assert!(table.set_vpc_gateways([gateways[0]]).is_ok());
        assert_eq!(table.vpc_gateways().len(), 1);
    }
}
