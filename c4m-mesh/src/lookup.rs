//! The service-lookup seam: what cluster DNS (and later the proxies) ask
//! the service registry.

use std::net::IpAddr;

/// What the DNS server asks the registry: a service as DNS answers it.
pub trait ServiceLookup: Send + Sync + 'static {
    /// Service `name` in `namespace`, or `None` if no such service.
    ///
    /// `namespace` and `name` are lowercase, since DNS names are case-insensitive.
    fn service(&self, namespace: &str, name: &str) -> Option<DnsService>;

    /// The names `ip` is the address of, for PTR records: Services whose cluster IP it is, and
    /// the ready endpoints of headless services at it. None by default.
    fn names_of(&self, ip: IpAddr) -> Vec<DnsName> {
        let _ = ip;
        Vec::new()
    }
}

/// A name in the `svc` subtree, as a PTR record gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsName {
    /// The service's namespace.
    pub namespace: String,
    /// The service.
    pub service: String,
    /// The endpoint's [`DnsEndpoint::dns_label`] for an endpoint of a headless service; `None`
    /// for a Service's cluster IP.
    pub endpoint: Option<String>,
}

/// A service as DNS answers it (Kubernetes' DNS specification, section 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsService {
    /// What the service's own name answers.
    pub kind: DnsServiceKind,
    /// The ready endpoints. Only [`DnsServiceKind::Endpoints`] services answer them (and the
    /// per-endpoint names below the service).
    pub endpoints: Vec<DnsEndpoint>,
}

/// What a service's own name, `NAME.NAMESPACE.svc.<domain>`, answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DnsServiceKind {
    /// A headless Service (`clusterIP: None`), one with no cluster IP yet, or a Microservice's
    /// own service: the addresses of its ready endpoints (NXDOMAIN while there are none), SRV
    /// records targeting each endpoint's name.
    #[default]
    Endpoints,
    /// A Service with a cluster IP: the name answers `ips`; SRV records give the Service's
    /// `ports` and target the Service's own name.
    ClusterIp {
        /// `spec.clusterIPs` (or `spec.clusterIP`).
        ips: Vec<IpAddr>,
        /// The Service's ports, as `(name, protocol, port)` with the protocol lowercase
        /// (`"tcp"`, `"udp"`); the name may be empty.
        ports: Vec<(String, String, u16)>,
    },
    /// `type: ExternalName`: a CNAME to `spec.externalName`.
    ExternalName(String),
}

impl DnsService {
    /// A service answering its ready `endpoints` (a headless Service, a Microservice).
    pub fn endpoints(endpoints: Vec<DnsEndpoint>) -> Self {
        DnsService {
            kind: DnsServiceKind::Endpoints,
            endpoints,
        }
    }

    /// The names of this service (`namespace/name`) at `ip`, for PTR records: the service's
    /// own if `ip` is its cluster IP, each endpoint's at `ip` if it answers its endpoints.
    pub fn names_at(&self, namespace: &str, name: &str, ip: IpAddr) -> Vec<DnsName> {
        let named = |endpoint: Option<&str>| DnsName {
            namespace: namespace.to_string(),
            service: name.to_string(),
            endpoint: endpoint.map(str::to_string),
        };
        match &self.kind {
            DnsServiceKind::ClusterIp { ips, .. } if ips.contains(&ip) => vec![named(None)],
            DnsServiceKind::Endpoints => self
                .endpoints
                .iter()
                .filter(|endpoint| endpoint.ip == ip)
                .map(|endpoint| named(Some(endpoint.dns_label())))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One ready endpoint of a service, as DNS needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// Instance name, a DNS label: `INSTANCE.NAME.NAMESPACE.svc.<domain>` resolves to `ip`.
    pub instance: String,
    /// The endpoint's `hostname` (a pod's `spec.hostname` when its `spec.subdomain` is the
    /// service): `HOSTNAME.NAME.NAMESPACE.svc.<domain>` resolves to `ip` too, and SRV records
    /// target it rather than the instance name.
    pub hostname: Option<String>,
    /// Address the endpoint is reachable on; several instances may share one (e.g. a node IP).
    pub ip: IpAddr,
    /// Ports as `(name, protocol, port)`: the name may be empty (such ports only appear in the
    /// service-wide SRV answer), the protocol is `"tcp"` or `"udp"`.
    pub ports: Vec<(String, String, u16)>,
}

impl DnsEndpoint {
    /// The name SRV records target: the hostname when there is one, else the instance name.
    pub fn dns_label(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.instance)
    }

    /// Whether `label` names this endpoint (its hostname or its instance name), ignoring case.
    pub fn is_named(&self, label: &str) -> bool {
        self.instance.eq_ignore_ascii_case(label)
            || self
                .hostname
                .as_deref()
                .is_some_and(|hostname| hostname.eq_ignore_ascii_case(label))
    }
}

/// Answers from `first`, and from `second` for the services `first` does
/// not know.
#[derive(Clone)]
pub struct FirstKnown {
    /// Asked first (the registry).
    pub first: std::sync::Arc<dyn ServiceLookup>,
    /// Asked when `first` knows no such service.
    pub second: std::sync::Arc<dyn ServiceLookup>,
}

impl ServiceLookup for FirstKnown {
    fn service(&self, namespace: &str, name: &str) -> Option<DnsService> {
        self.first
            .service(namespace, name)
            .or_else(|| self.second.service(namespace, name))
    }

    fn names_of(&self, ip: IpAddr) -> Vec<DnsName> {
        let mut names = self.first.names_of(ip);
        names.extend(self.second.names_of(ip));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::StaticLookup;

    fn endpoint(instance: &str, ip: [u8; 4]) -> DnsEndpoint {
        DnsEndpoint {
            instance: instance.into(),
            hostname: None,
            ip: ip.into(),
            ports: Vec::new(),
        }
    }

    fn instances(service: Option<DnsService>) -> Option<Vec<String>> {
        service.map(|s| s.endpoints.into_iter().map(|e| e.instance).collect())
    }

    #[test]
    fn the_first_lookup_that_knows_a_service_answers() {
        let registry = StaticLookup::new()
            .with_service("shop", "web", vec![endpoint("web-1", [10, 0, 0, 1])])
            .with_service("shop", "empty", Vec::new());
        let outside = StaticLookup::new()
            .with_service("shop", "web", vec![endpoint("elsewhere", [10, 9, 9, 9])])
            .with_service("shop", "empty", vec![endpoint("elsewhere", [10, 9, 9, 9])])
            .with_service("shop", "legacy", vec![endpoint("db", [192, 168, 0, 5])]);
        let lookup = FirstKnown {
            first: std::sync::Arc::new(registry),
            second: std::sync::Arc::new(outside),
        };
        assert_eq!(
            instances(lookup.service("shop", "web")),
            Some(vec!["web-1".to_string()])
        );
        // A service the registry knows without endpoints stays empty.
        assert_eq!(instances(lookup.service("shop", "empty")), Some(Vec::new()));
        assert_eq!(
            instances(lookup.service("shop", "legacy")),
            Some(vec!["db".to_string()])
        );
        assert_eq!(lookup.service("shop", "nothing"), None);
    }

    #[test]
    fn names_at_an_address_are_a_cluster_ip_or_headless_endpoints() {
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        let mut pet = endpoint("db-7f9c", [10, 0, 0, 3]);
        pet.hostname = Some("db-0".into());
        let headless = DnsService::endpoints(vec![pet, endpoint("db-x", [10, 0, 0, 4])]);
        let name = |endpoint: Option<&str>| DnsName {
            namespace: "shop".into(),
            service: "db".into(),
            endpoint: endpoint.map(str::to_string),
        };
        assert_eq!(headless.names_at("shop", "db", ip(3)), [name(Some("db-0"))]);
        assert_eq!(headless.names_at("shop", "db", ip(4)), [name(Some("db-x"))]);
        assert_eq!(headless.names_at("shop", "db", ip(5)), []);
        let normal = DnsService {
            kind: DnsServiceKind::ClusterIp {
                ips: vec![ip(100)],
                ports: Vec::new(),
            },
            endpoints: headless.endpoints.clone(),
        };
        assert_eq!(normal.names_at("shop", "db", ip(100)), [name(None)]);
        assert_eq!(normal.names_at("shop", "db", ip(3)), []);
    }

    #[test]
    fn an_endpoint_is_named_by_its_hostname_and_its_instance() {
        let mut pet = endpoint("db-7f9c", [10, 0, 0, 3]);
        assert_eq!(pet.dns_label(), "db-7f9c");
        pet.hostname = Some("db-0".into());
        assert_eq!(pet.dns_label(), "db-0");
        assert!(pet.is_named("DB-0") && pet.is_named("db-7f9c"));
        assert!(!pet.is_named("db-1"));
    }
}
