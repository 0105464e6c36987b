//! Fakes of the seams, for tests (feature `test-util`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::{
    Attachment, DnsEndpoint, DnsName, DnsService, Error, Network, Overlay, OverlayPeer, OverlayVpc,
    Result, ServiceLookup, VpcNetwork,
};

/// An instance network in memory: it makes no namespace and moves no
/// packet, and hands out addresses from each VPC's slice in order. Clones
/// share one state.
#[derive(Clone, Default)]
pub struct FakeNetwork {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    vpcs: BTreeMap<String, VpcNetwork>,
    attachments: BTreeMap<String, Attachment>,
}

impl FakeNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The instances attached now, sorted.
    pub fn attached(&self) -> Vec<String> {
        self.state().attachments.keys().cloned().collect()
    }
}

#[async_trait]
impl Network for FakeNetwork {
    async fn ensure_vpc(&self, vpc: &VpcNetwork) -> Result<()> {
        self.state().vpcs.insert(vpc.name.clone(), vpc.clone());
        Ok(())
    }

    async fn remove_vpc(&self, name: &str) -> Result<bool> {
        let mut state = self.state();
        if state.attachments.values().any(|a| a.vpc == name) {
            return Ok(false);
        }
        Ok(state.vpcs.remove(name).is_some())
    }

    async fn attach(
        &self,
        instance: &str,
        _namespace: &str,
        vpc: &VpcNetwork,
    ) -> Result<Attachment> {
        let mut state = self.state();
        if let Some(attachment) = state.attachments.get(instance) {
            return Ok(attachment.clone());
        }
        state.vpcs.insert(vpc.name.clone(), vpc.clone());
        let taken = state
            .attachments
            .values()
            .filter(|a| a.vpc == vpc.name)
            .count();
        let first = u32::from(vpc.gateway()) + 1;
        let address = Ipv4Addr::from(first + u32::try_from(taken).unwrap_or(u32::MAX - first));
        if !vpc.subnet.contains(&address) {
            return Err(Error::Config(format!("vpc {} is full", vpc.name)));
        }
        let attachment = Attachment {
            instance: instance.to_string(),
            vpc: vpc.name.clone(),
            network_namespace: PathBuf::from("/fake/netns").join(instance),
            address,
            prefix_len: vpc.subnet.prefix_len(),
            gateway: vpc.gateway(),
            host_interface: format!("fake-{instance}"),
            resolv_conf: PathBuf::from("/fake/resolv").join(instance),
        };
        state
            .attachments
            .insert(instance.to_string(), attachment.clone());
        Ok(attachment)
    }

    async fn detach(&self, instance: &str) -> Result<()> {
        self.state().attachments.remove(instance);
        Ok(())
    }

    async fn attachment(&self, instance: &str) -> Result<Option<Attachment>> {
        Ok(self.state().attachments.get(instance).cloned())
    }

    async fn vpcs(&self) -> Result<Vec<VpcNetwork>> {
        Ok(self.state().vpcs.values().cloned().collect())
    }
}

/// A stand-in for the control plane's DNS on loopback, answering each
/// datagram reversed until `stop`.
pub async fn reversing_udp_server(stop: CancellationToken) -> SocketAddr {
    let server = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback udp socket");
    let address = server.local_addr().expect("a bound socket has an address");
    tokio::spawn(async move {
        let mut buffer = [0u8; 512];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Ok((n, from)) = server.recv_from(&mut buffer) => {
                    let mut reply = buffer[..n].to_vec();
                    reply.reverse();
                    let _ = server.send_to(&reply, from).await;
                }
            }
        }
    });
    address
}

/// An overlay that joins nothing and remembers what it was last asked to
/// sync. Clones share one state.
#[derive(Clone, Default)]
pub struct FakeOverlay {
    synced: Arc<Mutex<(Vec<OverlayPeer>, Vec<OverlayVpc>)>>,
}

impl FakeOverlay {
    /// An overlay that has synced nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The peers and VPCs of the last sync.
    pub fn synced(&self) -> (Vec<OverlayPeer>, Vec<OverlayVpc>) {
        self.synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Overlay for FakeOverlay {
    fn mtu(&self) -> u32 {
        1450
    }

    async fn sync(&self, peers: &[OverlayPeer], vpcs: &[OverlayVpc]) -> Result<()> {
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = (peers.to_vec(), vpcs.to_vec());
        Ok(())
    }
}

/// A service registry fixed at construction: `(namespace, name)` to
/// service.
#[derive(Clone, Default)]
pub struct StaticLookup {
    services: BTreeMap<(String, String), DnsService>,
}

impl StaticLookup {
    /// No service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) service `name` in `namespace`, answering its
    /// ready `endpoints` (a headless service).
    pub fn with_service(self, namespace: &str, name: &str, endpoints: Vec<DnsEndpoint>) -> Self {
        self.with(namespace, name, DnsService::endpoints(endpoints))
    }

    /// Adds (or replaces) service `name` in `namespace`.
    pub fn with(mut self, namespace: &str, name: &str, service: DnsService) -> Self {
        self.services
            .insert((namespace.to_string(), name.to_string()), service);
        self
    }
}

impl ServiceLookup for StaticLookup {
    fn service(&self, namespace: &str, name: &str) -> Option<DnsService> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn names_of(&self, ip: std::net::IpAddr) -> Vec<DnsName> {
        self.services
            .iter()
            .flat_map(|((namespace, name), service)| service.names_at(namespace, name, ip))
            .collect()
    }
}
