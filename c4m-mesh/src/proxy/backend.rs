//! Backends (Service ports) with their current endpoints, and the registry
//! that keeps per-object state (endpoints and connections, limiters,
//! metrics) alive across configuration reloads.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::balance::p2c;
use super::clock::SharedClock;
use super::endpoints::{AppProtocol, EndpointSource, ServiceEndpoints};
use super::error::ProxyError;
use super::pool::{Endpoint, Upstream};
use crate::proxy::routes::ServiceRef;

/// A map from keys to shared values that lives as long as someone else
/// holds the values: a reload that keeps a route finds its old limiter,
/// metrics and backends (with their pooled connections) again.
#[derive(Debug)]
pub(crate) struct Registry<K, V> {
    map: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for Registry<K, V> {
    fn default() -> Self {
        Registry {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Registry<K, V> {
    /// The live value for `key`, or a new one from `make`.
    pub(crate) fn get_or_insert_with(&self, key: &K, make: impl FnOnce() -> V) -> Arc<V> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = map.get(key).and_then(Weak::upgrade) {
            return live;
        }
        let value = Arc::new(make());
        map.insert(key.clone(), Arc::downgrade(&value));
        value
    }

    /// Forgets values nobody holds any more.
    pub(crate) fn prune(&self) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| v.strong_count() > 0);
    }

    /// The values still held, with their keys.
    pub(crate) fn live(&self) -> Vec<(K, Arc<V>)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.upgrade()?)))
            .collect()
    }
}

/// A backend's endpoints at one moment.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    pub(crate) protocol: AppProtocol,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
}

/// A Service port as the proxy sends to it.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) service: ServiceRef,
    updates: Mutex<watch::Receiver<Arc<ServiceEndpoints>>>,
    current: ArcSwap<EndpointSet>,
    upstream: Arc<Upstream>,
    clock: SharedClock,
}

impl Backend {
    pub(crate) fn new(
        service: ServiceRef,
        source: &dyn EndpointSource,
        upstream: Arc<Upstream>,
        clock: SharedClock,
    ) -> Self {
        let mut updates = source.watch(&service);
        let first = updates.borrow_and_update().clone();
        let backend = Backend {
            service,
            updates: Mutex::new(updates),
            current: ArcSwap::default(),
            upstream,
            clock,
        };
        backend.apply(&first);
        backend
    }

    /// An endpoint for one request (power of two choices over peak EWMA)
    /// and how the backend speaks.
    pub(crate) fn pick(
        &self,
        rng: &mut fastrand::Rng,
    ) -> Result<(Arc<Endpoint>, AppProtocol), ProxyError> {
        self.refresh();
        let set = self.current.load();
        let now = self.clock.now();
        let endpoints = &set.endpoints;
        match p2c(endpoints.len(), |i| endpoints[i].load.cost(now), rng) {
            Some(i) => Ok((endpoints[i].clone(), set.protocol)),
            None => Err(ProxyError::NoEndpoints(self.service.clone())),
        }
    }

    /// Takes in a published change of endpoints, if any. A request that
    /// finds another request doing so goes on with the previous set.
    fn refresh(&self) {
        let Ok(mut updates) = self.updates.try_lock() else {
            return;
        };
        if updates.has_changed().unwrap_or(false) {
            let latest = updates.borrow_and_update().clone();
            self.apply(&latest);
        }
    }

    /// Makes `latest` current, keeping the state (load, connections) of
    /// endpoints that stay.
    fn apply(&self, latest: &ServiceEndpoints) {
        let previous = self.current.load();
        let now = self.clock.now();
        let endpoints = latest
            .addrs
            .iter()
            .map(
                |addr| match previous.endpoints.iter().find(|e| e.addr == *addr) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(Endpoint::new(*addr, self.upstream.clone(), now)),
                },
            )
            .collect();
        self.current.store(Arc::new(EndpointSet {
            protocol: latest.protocol,
            endpoints,
        }));
    }

    /// The endpoints now current.
    #[cfg(test)]
    pub(crate) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.refresh();
        self.current.load().endpoints.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::clock::ManualClock;
    use crate::proxy::endpoints::StaticEndpoints;
    use crate::proxy::routes::ServicePort;

    fn upstream() -> Arc<Upstream> {
        Arc::new(Upstream::default())
    }

    #[test]
    fn endpoint_changes_apply_on_the_next_pick_keeping_survivors() {
        let table = StaticEndpoints::new();
        let svc = ServiceRef {
            namespace: "ns".into(),
            name: "web".into(),
            port: ServicePort::Number(80),
        };
        let a: std::net::SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: std::net::SocketAddr = "127.0.0.1:1002".parse().unwrap();
        table.set(svc.clone(), ServiceEndpoints::http1([a, b]));
        let backend = Backend::new(svc.clone(), &*table, upstream(), ManualClock::new());
        let before = backend.endpoints();
        assert_eq!(before.len(), 2);

        table.set(svc.clone(), ServiceEndpoints::http1([b]));
        let after = backend.endpoints();
        assert_eq!(after.len(), 1);
        assert!(
            Arc::ptr_eq(&after[0], &before[1]),
            "the endpoint that stays keeps its state"
        );
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            assert_eq!(
                backend.pick(&mut rng).unwrap().0.addr,
                b,
                "no request goes to the endpoint that left"
            );
        }

        table.clear(&svc);
        assert!(matches!(
            backend.pick(&mut rng),
            Err(ProxyError::NoEndpoints(_))
        ));
    }

    #[test]
    fn the_registry_keeps_values_while_held() {
        let registry: Registry<&str, u32> = Registry::default();
        let first = registry.get_or_insert_with(&"a", || 1);
        assert_eq!(*registry.get_or_insert_with(&"a", || 2), 1);
        drop(first);
        assert_eq!(*registry.get_or_insert_with(&"a", || 3), 3);
        registry.prune();
        assert!(registry.live().is_empty());
    }
}
