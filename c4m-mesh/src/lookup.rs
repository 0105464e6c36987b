//! The service-lookup seam: what cluster DNS (and later the proxies) ask
//! the service registry.

use std::net::IpAddr;

/// What the DNS server asks the registry: the ready endpoints of a service.
pub trait ServiceLookup: Send + Sync + 'static {
    /// Ready endpoints of service `name` in `namespace`, or `None` if no such service.
    ///
    /// `namespace` and `name` are lowercase, since DNS names are case-insensitive. An existing
    /// service without ready endpoints returns `Some(vec![])`.
    fn endpoints(&self, namespace: &str, name: &str) -> Option<Vec<DnsEndpoint>>;
}

/// One ready endpoint of a service, as DNS needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// Instance name, a DNS label: `INSTANCE.NAME.NAMESPACE.<zone>` resolves to `ip`.
    pub instance: String,
    /// Address the endpoint is reachable on; several instances may share one (e.g. a node IP).
    pub ip: IpAddr,
    /// Ports as `(name, protocol, port)`: the name may be empty (such ports only appear in the
    /// service-wide SRV answer), the protocol is `"tcp"` or `"udp"`.
    pub ports: Vec<(String, String, u16)>,
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
    fn endpoints(&self, namespace: &str, name: &str) -> Option<Vec<DnsEndpoint>> {
        self.first
            .endpoints(namespace, name)
            .or_else(|| self.second.endpoints(namespace, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::StaticLookup;

    fn endpoint(instance: &str, ip: [u8; 4]) -> DnsEndpoint {
        DnsEndpoint {
            instance: instance.into(),
            ip: ip.into(),
            ports: Vec::new(),
        }
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
            lookup.endpoints("shop", "web").unwrap()[0].instance,
            "web-1"
        );
        // A service the registry knows without endpoints stays empty.
        assert_eq!(lookup.endpoints("shop", "empty"), Some(Vec::new()));
        assert_eq!(
            lookup.endpoints("shop", "legacy").unwrap()[0].instance,
            "db"
        );
        assert_eq!(lookup.endpoints("shop", "nothing"), None);
    }
}
