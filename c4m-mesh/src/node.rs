//! The agent's side of instance networking: which VPC an instance joins,
//! attaching it before its driver starts it, and the DNS relay that makes
//! the control plane's DNS reachable from inside instances.
//!
//! The control plane's DNS listens on its loopback, which no instance
//! namespace can reach. Every instance's `resolv.conf` names its VPC's
//! gateway (the bridge's address, on the node) as its name server, and the
//! agent relays each query arriving there (UDP, and TCP for answers too
//! large for a datagram) to the control plane's DNS and the answer back.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c4m_core::{DEFAULT_VPC, Instance, PortBinding, annotations};
use ipnet::Ipv4Net;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Attachment, Error, HostPort, Network, OverlayVpc, Result, VpcNetwork, node_slice};

/// The port instances send DNS queries to on their gateway.
pub const DNS_PORT: u16 = 53;
/// How long the relay waits for the control plane's answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// How this node takes part in instance networking.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// CIDR of the default VPC when no `Vpc` object gives one.
    pub default_vpc_cidr: Ipv4Net,
    /// Port of the DNS relay on every gateway (53 for instances; tests use
    /// another).
    pub dns_port: u16,
    /// Where an instance's `hostPort`s are published (the node's address).
    pub host_address: IpAddr,
    /// A CNI plugin chain to attach instances with instead of c4m's own
    /// bridges (one network: the default VPC only).
    pub cni: Option<CniConfig>,
    /// The cluster domain instances' `resolv.conf` searches
    /// ([`DEFAULT_CLUSTER_DOMAIN`](crate::DEFAULT_CLUSTER_DOMAIN) unless
    /// configured; the control plane's DNS answers under `svc.<domain>`).
    pub cluster_domain: String,
}

/// A CNI network for the node's instances.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// The network configuration list (`.conflist`).
    pub config_file: PathBuf,
    /// Where its plugins are (`CNI_PATH`), searched in order.
    pub bin_dirs: Vec<PathBuf>,
}

/// The instance's `hostPort`s, for a network that publishes them: on the
/// port's `hostIP`, else on `host_address` (every address when that is
/// unspecified).
pub fn host_ports(pod: &Instance, host_address: IpAddr) -> Vec<HostPort> {
    pod.spec
        .iter()
        .flat_map(|spec| spec.containers.iter())
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            let host_port = u16::try_from(port.host_port?).ok()?;
            let container_port = u16::try_from(port.container_port).ok()?;
            let host_ip = match port.host_ip.as_deref().map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => ip,
                _ => host_address,
            };
            Some(HostPort {
                name: port.name.clone().unwrap_or_default(),
                host_port,
                container_port,
                protocol: port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
                host_ip: (!host_ip.is_unspecified()).then_some(host_ip),
            })
        })
        .collect()
}

/// Attaches instances to their VPCs and serves DNS on each gateway.
pub struct InstanceNetwork {
    network: Arc<dyn Network>,
    config: NetworkConfig,
    /// Gateways with a DNS relay running, each with the token ending it.
    /// Held through a whole attach or detach, so a VPC being removed from
    /// the node and one being attached again do not interleave.
    relays: tokio::sync::Mutex<HashMap<Ipv4Addr, CancellationToken>>,
    /// Container id → the token ending its `hostPort` proxies, and where
    /// they listen.
    published: Mutex<HashMap<String, (CancellationToken, Vec<PortBinding>)>>,
    /// The control plane's DNS address (`IP:PORT`), from its registration.
    upstream: watch::Receiver<String>,
    /// This node's slice of every VPC, from its registration.
    node_slice: watch::Receiver<Option<u32>>,
    /// The VPCs this node serves, by name, with their whole ranges: what
    /// the overlay routes.
    local_vpcs: watch::Sender<BTreeMap<String, OverlayVpc>>,
    shutdown: CancellationToken,
}

impl InstanceNetwork {
    /// Attaches instances with `network` as `config` says; the relays
    /// forward to the control plane's DNS at `upstream` (`IP:PORT`, from
    /// its registration) and `node_slice` is this node's slice of every
    /// VPC. Everything it starts ends with `shutdown`.
    pub fn new(
        network: Arc<dyn Network>,
        config: NetworkConfig,
        upstream: watch::Receiver<String>,
        node_slice: watch::Receiver<Option<u32>>,
        shutdown: CancellationToken,
    ) -> Self {
        InstanceNetwork {
            network,
            config,
            relays: tokio::sync::Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            upstream,
            node_slice,
            local_vpcs: watch::channel(BTreeMap::new()).0,
            shutdown,
        }
    }

    /// The VPCs this node serves, as they change.
    pub fn local_vpcs(&self) -> watch::Receiver<BTreeMap<String, OverlayVpc>> {
        self.local_vpcs.subscribe()
    }

    /// Notes that this node serves `vpc` (for the overlay).
    fn serve(&self, vpc: OverlayVpc) {
        self.local_vpcs.send_if_modified(|vpcs| {
            let changed = vpcs.get(&vpc.local.name) != Some(&vpc);
            if changed {
                vpcs.insert(vpc.local.name.clone(), vpc);
            }
            changed
        });
    }

    /// The VPC an instance joins, as this node serves it, with its whole range.
    pub fn vpc_of(&self, pod: &Instance) -> Result<OverlayVpc> {
        let annotations = pod.metadata.annotations.as_ref();
        let name = annotations
            .and_then(|a| a.get(annotations::VPC))
            .map_or(DEFAULT_VPC, String::as_str);
        let cidr = match annotations.and_then(|a| a.get(annotations::VPC_CIDR)) {
            Some(cidr) => cidr.parse().map_err(|e| {
                Error::Config(format!(
                    "annotation {} {cidr:?} is not a CIDR: {e}",
                    annotations::VPC_CIDR
                ))
            })?,
            None if name == DEFAULT_VPC => self.config.default_vpc_cidr,
            None => {
                return Err(Error::Config(format!(
                    "vpc {name} came without its CIDR (annotation {})",
                    annotations::VPC_CIDR
                )));
            }
        };
        let Some(slice) = *self.node_slice.borrow() else {
            return Err(Error::Config(
                "this node has no slice of the VPCs yet: the control plane assigns one when it registers".into(),
            ));
        };
        let subnet = node_slice(cidr, slice)?;
        Ok(OverlayVpc {
            local: VpcNetwork {
                name: name.to_string(),
                subnet,
            },
            cidr,
        })
    }

    /// Attaches the instance with container id `id` and makes sure its
    /// gateway relays DNS.
    pub async fn attach(&self, id: &str, pod: &Instance) -> Result<Attachment> {
        let vpc = self.vpc_of(pod)?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut relays = self.relays.lock().await;
        // A network that does not publish host ports ignores them.
        let host_ports = host_ports(pod, self.config.host_address);
        let attachment = self
            .network
            .attach_with_host_ports(id, namespace, &vpc.local, &host_ports)
            .await?;
        self.serve(vpc);
        self.ensure_relay(&mut relays, attachment.gateway).await;
        self.publish(id, pod, attachment.address).await?;
        Ok(attachment)
    }

    /// The instance's attachment, if it is attached (a failure to read it
    /// is logged and counts as none).
    async fn attachment_of(&self, id: &str) -> Option<Attachment> {
        match self.network.attachment(id).await {
            Ok(attachment) => attachment,
            Err(e) => {
                tracing::warn!(container = id, error = %e, "cannot read the instance's network");
                None
            }
        }
    }

    /// Where the instance's `hostPort`s are published on the node (none
    /// when it has none, or is not attached).
    pub fn host_bindings(&self, id: &str) -> Vec<PortBinding> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|(_, bindings)| bindings.clone())
            .unwrap_or_default()
    }

    /// The DNS server an attached instance reaches: the relay on its
    /// gateway.
    pub fn dns_server(&self, attachment: &Attachment) -> SocketAddr {
        SocketAddr::from((attachment.gateway, self.config.dns_port))
    }

    /// The instance's address in its VPC, if it is attached.
    pub async fn address(&self, id: &str) -> Option<Ipv4Addr> {
        self.attachment_of(id).await.map(|a| a.address)
    }

    /// The attachment of an instance found running at start-up, with its
    /// host ports published again.
    pub async fn readopt(&self, id: &str, pod: &Instance) -> Option<Attachment> {
        let mut relays = self.relays.lock().await;
        let attachment = self.attachment_of(id).await?;
        match self.vpc_of(pod) {
            Ok(vpc) => self.serve(vpc),
            Err(e) => {
                tracing::warn!(container = id, error = %e, "cannot route the instance's vpc over the overlay")
            }
        }
        self.ensure_relay(&mut relays, attachment.gateway).await;
        if let Err(e) = self.publish(id, pod, attachment.address).await {
            tracing::warn!(container = id, error = %e, "cannot publish host ports");
        }
        Some(attachment)
    }

    /// Publishes the instance's `hostPort`s on the node: a TCP proxy per
    /// port to the instance's address, unless the network publishes them
    /// itself. Already published is Ok.
    async fn publish(&self, id: &str, pod: &Instance, address: Ipv4Addr) -> Result<()> {
        if self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
        {
            return Ok(());
        }
        // A network that publishes host ports itself (a CNI chain with
        // portmap) did so at attach; they are only recorded here.
        let by_network = self.network.publishes_host_ports();
        let token = self.shutdown.child_token();
        let mut listeners = Vec::new();
        let mut bindings = Vec::new();
        for port in host_ports(pod, self.config.host_address) {
            if port.protocol != "tcp" && !by_network {
                tracing::warn!(
                    container = id,
                    host_port = port.host_port,
                    "only TCP host ports are published"
                );
                continue;
            }
            let published = SocketAddr::new(
                port.host_ip.unwrap_or(self.config.host_address),
                port.host_port,
            );
            if !by_network {
                let listener = TcpListener::bind(published)
                    .await
                    .map_err(|source| Error::Io {
                        context: format!("publishing host port {published}"),
                        source,
                    })?;
                listeners.push((listener, SocketAddr::from((address, port.container_port))));
            }
            bindings.push(PortBinding {
                name: port.name.clone(),
                container_port: port.container_port,
                host_ip: published.ip().to_string(),
                host_port: port.host_port,
                protocol: port.protocol.to_ascii_uppercase(),
            });
        }
        for (listener, target) in listeners {
            tokio::spawn(forward_tcp(listener, target, token.clone()));
        }
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (token, bindings));
        Ok(())
    }

    /// Detaches the instance; the last instance of a VPC on this node takes
    /// the VPC's bridge, rules and DNS relay with it.
    pub async fn detach(&self, id: &str) {
        let mut relays = self.relays.lock().await;
        if let Some((token, _)) = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            token.cancel();
        }
        let attachment = self.network.attachment(id).await.ok().flatten();
        if let Err(e) = self.network.detach(id).await {
            tracing::warn!(container = id, error = %e, "cannot detach from its vpc");
            return;
        }
        let Some(attachment) = attachment else {
            return;
        };
        match self.network.remove_vpc(&attachment.vpc).await {
            Ok(true) => {
                tracing::info!(vpc = %attachment.vpc, "no instance left in the vpc: removed from the node");
                self.local_vpcs
                    .send_if_modified(|vpcs| vpcs.remove(&attachment.vpc).is_some());
                if let Some(relay) = relays.remove(&attachment.gateway) {
                    relay.cancel();
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(vpc = %attachment.vpc, error = %e, "cannot remove the vpc"),
        }
    }

    async fn ensure_relay(
        &self,
        relays: &mut HashMap<Ipv4Addr, CancellationToken>,
        gateway: Ipv4Addr,
    ) {
        if relays.contains_key(&gateway) {
            return;
        }
        let address = SocketAddr::from((gateway, self.config.dns_port));
        let token = self.shutdown.child_token();
        match UdpSocket::bind(address).await {
            Ok(socket) => {
                tracing::info!(%address, "relaying instance DNS to the control plane");
                tokio::spawn(relay_dns(socket, self.upstream.clone(), token.clone()));
            }
            Err(e) => tracing::warn!(%address, error = %e, "cannot serve DNS to instances"),
        }
        // DNS over TCP (answers too large for a datagram): a plain proxy to
        // the control plane's DNS, which serves TCP on the same port.
        match TcpListener::bind(address).await {
            Ok(listener) => {
                let upstream = self.upstream.clone();
                let target = move || upstream.borrow().parse::<SocketAddr>().ok();
                tokio::spawn(forward_tcp_to(listener, target, token.clone()));
            }
            Err(e) => tracing::warn!(%address, error = %e, "cannot serve DNS over TCP"),
        }
        relays.insert(gateway, token);
    }
}

/// Relays DNS queries arriving on `socket` to the address `upstream`
/// holds, each from a socket of its own, until `shutdown`.
pub(crate) async fn relay_dns(
    socket: UdpSocket,
    upstream: watch::Receiver<String>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; 4096];
    loop {
        let (length, client) = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "dns relay receive");
                    continue;
                }
            },
        };
        let Ok(server) = upstream.borrow().parse::<SocketAddr>() else {
            tracing::debug!("no control-plane DNS address yet; query dropped");
            continue;
        };
        let query = buffer[..length].to_vec();
        let socket = Arc::clone(&socket);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                answered = forward(&query, server) => match answered {
                    Ok(answer) => {
                        if let Err(e) = socket.send_to(&answer, client).await {
                            tracing::debug!(%client, error = %e, "dns relay reply");
                        }
                    }
                    Err(e) => tracing::debug!(%server, error = %e, "dns relay upstream"),
                },
            }
        });
    }
}

/// Forwards every connection `listener` accepts to `target` until `stop`:
/// what publishes a host port.
pub(crate) async fn forward_tcp(
    listener: TcpListener,
    target: SocketAddr,
    stop: CancellationToken,
) {
    forward_tcp_to(listener, move || Some(target), stop).await
}

/// [`forward_tcp`] to wherever `target` says when a connection arrives
/// (None drops the connection).
async fn forward_tcp_to(
    listener: TcpListener,
    target: impl Fn() -> Option<SocketAddr> + Send + 'static,
    stop: CancellationToken,
) {
    loop {
        let mut inbound = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((inbound, _)) => inbound,
                Err(e) => {
                    tracing::debug!(error = %e, "port forward accept");
                    continue;
                }
            },
        };
        let Some(target) = target() else {
            tracing::debug!("no forwarding target yet; connection dropped");
            continue;
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut outbound = match TcpStream::connect(target).await {
                Ok(outbound) => outbound,
                Err(e) => {
                    tracing::debug!(%target, error = %e, "port forward connect");
                    return;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

async fn forward(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut answer = vec![0u8; 65535];
    let length = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    answer.truncate(length);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::reversing_udp_server;

    #[test]
    fn host_ports_take_the_ports_host_ip_else_the_node_address() {
        let pod: Instance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "main", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.9"},
                {"containerPort": 9000}
            ]}]}
        }))
        .unwrap();
        let node: IpAddr = Ipv4Addr::LOCALHOST.into();
        assert_eq!(
            host_ports(&pod, node),
            vec![
                HostPort {
                    name: String::new(),
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: Some(node),
                },
                HostPort {
                    name: String::new(),
                    host_port: 5353,
                    container_port: 53,
                    protocol: "udp".into(),
                    host_ip: Some(Ipv4Addr::new(10, 0, 0, 9).into()),
                },
            ]
        );
        let everywhere = host_ports(&pod, Ipv4Addr::UNSPECIFIED.into());
        assert_eq!(everywhere[0].host_ip, None);
    }

    #[tokio::test]
    async fn the_relay_forwards_queries_and_answers() {
        let shutdown = CancellationToken::new();
        let upstream_addr = reversing_udp_server(shutdown.clone()).await;
        let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let (_upstream_tx, upstream_rx) = watch::channel(upstream_addr.to_string());
        tokio::spawn(relay_dns(relay, upstream_rx, shutdown.clone()));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"query-1", relay_addr).await.unwrap();
        let mut answer = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut answer))
            .await
            .expect("the relay answered")
            .unwrap();
        assert_eq!(&answer[..n], b"1-yreuq");
        assert_eq!(from, relay_addr);
        shutdown.cancel();
    }
}
