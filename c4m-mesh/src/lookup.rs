//! The service-lookup seam: what cluster DNS (and later the proxies) ask
//! the service registry.

use std::net::IpAddr;

/// What the DNS server asks the registry: a service as DNS answers it.
pub trait ServiceLookup: Send + Sync + 'static {
    /// Service `name` in `namespace`, or `None` if no such service.
    ///
    /// `namespace` and `name` are lowercase, since DNS names are case-insensitive.
    fn service(&self, namespace: &str, name: &str) -> Option<DnsService>;
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
    fn an_endpoint_is_named_by_its_hostname_and_its_instance() {
        let mut pet = endpoint("db-7f9c", [10, 0, 0, 3]);
        assert_eq!(pet.dns_label(), "db-7f9c");
        pet.hostname = Some("db-0".into());
        assert_eq!(pet.dns_label(), "db-0");
        assert!(pet.is_named("DB-0") && pet.is_named("db-7f9c"));
        assert!(!pet.is_named("db-1"));
    }
}
