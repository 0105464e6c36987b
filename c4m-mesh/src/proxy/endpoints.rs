//! Where backends' ready endpoints come from: the seam the control plane
//! implements (from EndpointSlices), and a table for tests and embedders.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::proxy::routes::ServiceRef;

/// How a Service port speaks, from its `appProtocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1 (the default). HTTP/2 and gRPC requests still go as HTTP/2
    /// when the route is a GRPCRoute or the request is gRPC.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (`appProtocol: kubernetes.io/h2c`).
    H2c,
}

impl AppProtocol {
    /// The protocol a Service port's `appProtocol` names (HTTP/1.1 for
    /// anything but `kubernetes.io/h2c`, `h2c` and `grpc`).
    pub fn from_app_protocol(app_protocol: Option<&str>) -> Self {
        match app_protocol {
            Some("kubernetes.io/h2c" | "h2c" | "grpc") => AppProtocol::H2c,
            _ => AppProtocol::Http1,
        }
    }
}

/// The ready endpoints of one Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceEndpoints {
    /// The endpoints' addresses (target port resolved).
    pub addrs: Vec<SocketAddr>,
    /// How they speak.
    pub protocol: AppProtocol,
}

impl ServiceEndpoints {
    /// HTTP/1.1 endpoints at `addrs`.
    pub fn http1(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        ServiceEndpoints {
            addrs: addrs.into_iter().collect(),
            protocol: AppProtocol::Http1,
        }
    }
}

/// Resolves Service ports to their ready endpoints, and keeps them current.
///
/// The proxy calls [`watch`](Self::watch) once per Service port a route
/// uses (again only after the route is gone and comes back), then reads the
/// receiver's latest value on the request path: publishing a new value is
/// all an update takes, and an endpoint that left gets no new request once
/// it is published. An unknown Service is an empty set (503) until
/// published. Ports named rather than numbered (Ingress) are the
/// implementation's to resolve.
pub trait EndpointSource: Send + Sync + std::fmt::Debug + 'static {
    /// The current and future ready endpoints of `service`.
    fn watch(&self, service: &ServiceRef) -> watch::Receiver<Arc<ServiceEndpoints>>;
}

/// Endpoints set by hand: a static table for tests, or what a control plane
/// publishes into from its EndpointSlice watch.
#[derive(Debug, Default)]
pub struct StaticEndpoints {
    services: Mutex<HashMap<ServiceRef, watch::Sender<Arc<ServiceEndpoints>>>>,
}

impl StaticEndpoints {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(StaticEndpoints::default())
    }

    /// Publishes the ready endpoints of `service`.
    pub fn set(&self, service: ServiceRef, endpoints: ServiceEndpoints) {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let endpoints = Arc::new(endpoints);
        match services.get(&service) {
            Some(tx) => {
                tx.send_replace(endpoints);
            }
            None => {
                services.insert(service, watch::Sender::new(endpoints));
            }
        }
    }

    /// Publishes an empty set for `service` (every endpoint gone).
    pub fn clear(&self, service: &ServiceRef) {
        self.set(service.clone(), ServiceEndpoints::default());
    }
}

impl EndpointSource for StaticEndpoints {
    fn watch(&self, service: &ServiceRef) -> watch::Receiver<Arc<ServiceEndpoints>> {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        services
            .entry(service.clone())
            .or_insert_with(|| watch::Sender::new(Arc::default()))
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::routes::ServicePort;

    #[test]
    fn watchers_see_later_updates() {
        let table = StaticEndpoints::new();
        let svc = ServiceRef {
            namespace: "ns".into(),
            name: "web".into(),
            port: ServicePort::Number(80),
        };
        let rx = table.watch(&svc);
        assert!(rx.borrow().addrs.is_empty());
        table.set(
            svc.clone(),
            ServiceEndpoints::http1(["127.0.0.1:1".parse().unwrap()]),
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow().addrs.len(), 1);
        table.clear(&svc);
        assert!(rx.borrow().addrs.is_empty());
    }
}
