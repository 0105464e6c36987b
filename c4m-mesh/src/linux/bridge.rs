//! [`Network`] on Linux: bridges, veths and addresses over netlink,
//! isolation with nftables.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::sync::Mutex;

use super::ipam::{Ipam, validate_name};
use super::{
    firewall, json_files, namespace_path, netns, remove_file_if_present, resolv_conf_path,
    write_resolv_conf,
};
use crate::{Attachment, Network, VpcNetwork};
use crate::{Error, Result};

/// The interface name of an instance's end of its veth pair.
const INSTANCE_INTERFACE: &str = "eth0";

/// Instance networking with netlink and nftables (needs root, or
/// `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` for the namespace mounts).
///
/// Its run dir holds `ipam/VPC.json` (the allocations), `netns/INSTANCE`
/// (the namespaces' bind mounts) and `resolv/INSTANCE.conf`.
pub struct LinuxNetwork {
    run_dir: PathBuf,
    host: Handle,
    /// MTU of instances' veth pairs (None: the kernel's default), lower
    /// than the node's when an overlay's headers must fit.
    mtu: Option<u32>,
    /// The cluster domain instances' `resolv.conf` searches.
    cluster_domain: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// VPC name → its allocations on this node.
    vpcs: BTreeMap<String, Ipam>,
    /// VPCs whose rules this process has loaded.
    rules_loaded: BTreeSet<String>,
}

impl LinuxNetwork {
    /// Opens the network state under `run_dir`, re-adopting the VPCs and
    /// allocations an earlier agent left. Must run inside a Tokio runtime
    /// (its netlink connection is a task on it, ending when this is dropped).
    pub fn open(run_dir: impl Into<PathBuf>) -> Result<LinuxNetwork> {
        let run_dir = run_dir.into();
        let ipam_dir = run_dir.join("ipam");
        std::fs::create_dir_all(&ipam_dir)
            .map_err(|e| Error::io(format!("creating {}", ipam_dir.display()), e))?;
        let mut state = State::default();
        for (name, path) in json_files(&ipam_dir)? {
            let ipam = Ipam::load(path, &name)?;
            state.vpcs.insert(name, ipam);
        }
        let (connection, host, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("opening a netlink socket", e))?;
        tokio::spawn(connection);
        Ok(LinuxNetwork {
            run_dir,
            cluster_domain: crate::DEFAULT_CLUSTER_DOMAIN.to_string(),
            host,
            mtu: None,
            state: Mutex::new(state),
        })
    }

    /// Gives instances attached from now on interfaces of `mtu` (an
    /// overlay's, so what they send fits its encapsulation).
    pub fn with_mtu(mut self, mtu: u32) -> LinuxNetwork {
        self.mtu = Some(mtu);
        self
    }

    /// Instances' `resolv.conf` searches `cluster_domain` (default
    /// [`DEFAULT_CLUSTER_DOMAIN`](crate::DEFAULT_CLUSTER_DOMAIN)).
    pub fn with_cluster_domain(mut self, cluster_domain: &str) -> LinuxNetwork {
        self.cluster_domain = cluster_domain.to_string();
        self
    }

    fn namespace_path(&self, instance: &str) -> PathBuf {
        namespace_path(&self.run_dir, instance)
    }

    fn resolv_conf_path(&self, instance: &str) -> PathBuf {
        resolv_conf_path(&self.run_dir, instance)
    }

    fn attachment_of(&self, instance: &str, vpc: &VpcNetwork, address: Ipv4Addr) -> Attachment {
        Attachment {
            instance: instance.to_string(),
            vpc: vpc.name.clone(),
            network_namespace: self.namespace_path(instance),
            address,
            prefix_len: vpc.subnet.prefix_len(),
            gateway: vpc.gateway(),
            host_interface: host_interface(address),
            resolv_conf: self.resolv_conf_path(instance),
        }
    }

    /// Makes sure the VPC's allocations, bridge and rules exist; returns the
    /// bridge's interface index.
    async fn ensure_vpc_locked(&self, state: &mut State, vpc: &VpcNetwork) -> Result<u32> {
        validate_name(&vpc.name)?;
        for (name, other) in &state.vpcs {
            let theirs = other.vpc().subnet;
            if *name == vpc.name && theirs != vpc.subnet {
                return Err(vpc_error(
                    vpc,
                    format!("has subnet {theirs} on this node, not {}", vpc.subnet),
                ));
            }
            if *name != vpc.name && c4m_core::cidrs_overlap(&theirs, &vpc.subnet) {
                return Err(vpc_error(
                    vpc,
                    format!("subnet {} overlaps vpc {name}'s {theirs}", vpc.subnet),
                ));
            }
        }
        if !state.vpcs.contains_key(&vpc.name) {
            let path = self.run_dir.join("ipam").join(format!("{}.json", vpc.name));
            state
                .vpcs
                .insert(vpc.name.clone(), Ipam::create(path, vpc.clone())?);
        }
        let bridge = vpc.bridge_name();
        let netlink =
            |e: rtnetlink::Error| Error::failed(format!("vpc {}: bridge {bridge}", vpc.name), e);
        let index = match link_index(&self.host, &bridge).await.map_err(netlink)? {
            Some(index) => index,
            None => {
                self.host
                    .link()
                    .add(LinkBridge::new(&bridge).build())
                    .execute()
                    .await
                    .map_err(netlink)?;
                link_index(&self.host, &bridge)
                    .await
                    .map_err(netlink)?
                    .ok_or_else(|| vpc_error(vpc, format!("bridge {bridge} vanished")))?
            }
        };
        self.host
            .address()
            .add(index, IpAddr::V4(vpc.gateway()), vpc.subnet.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(netlink)?;
        self.host
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink)?;
        if !state.rules_loaded.contains(&vpc.name) {
            enable_forwarding()?;
            firewall::apply(vpc).await?;
            state.rules_loaded.insert(vpc.name.clone());
        }
        Ok(index)
    }

    /// Whether the instance's veth is in place: the host end exists and the
    /// namespace's `eth0` holds the instance's address.
    async fn is_wired(&self, inside: &Handle, attachment: &Attachment) -> Result<bool> {
        let failed = |e: rtnetlink::Error| {
            Error::failed(
                format!("instance {}: checking links", attachment.instance),
                e,
            )
        };
        if link_index(&self.host, &attachment.host_interface)
            .await
            .map_err(failed)?
            .is_none()
        {
            return Ok(false);
        }
        let Some(index) = link_index(inside, INSTANCE_INTERFACE)
            .await
            .map_err(failed)?
        else {
            return Ok(false);
        };
        let address = inside
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(attachment.address))
            .execute()
            .try_next()
            .await
            .map_err(failed)?;
        Ok(address.is_some())
    }

    /// Creates the veth pair from scratch, removing any partial one first.
    async fn wire(
        &self,
        inside: &Handle,
        bridge_index: u32,
        attachment: &Attachment,
    ) -> Result<()> {
        let instance = &attachment.instance;
        let failed = |step: &str, e: rtnetlink::Error| {
            Error::failed(format!("instance {instance}: {step}"), e)
        };
        let peer = format!("c4p{:08x}", u32::from(attachment.address));
        for name in [&attachment.host_interface, &peer] {
            delete_link(&self.host, name)
                .await
                .map_err(|e| failed("removing a stale link", e))?;
        }
        delete_link(inside, INSTANCE_INTERFACE)
            .await
            .map_err(|e| failed("removing a stale eth0", e))?;

        let mut pair = LinkVeth::new(&attachment.host_interface, &peer);
        if let Some(mtu) = self.mtu {
            pair = pair.mtu(mtu);
        }
        self.host
            .link()
            .add(pair.build())
            .execute()
            .await
            .map_err(|e| failed("creating the veth pair", e))?;
        let namespace = std::fs::File::open(&attachment.network_namespace).map_err(|e| {
            Error::io(
                format!("opening {}", attachment.network_namespace.display()),
                e,
            )
        })?;
        let peer_index = required_link(&self.host, &peer, instance).await?;
        self.host
            .link()
            .set(
                LinkUnspec::new_with_index(peer_index)
                    .setns_by_fd(namespace.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| failed("moving the veth into the namespace", e))?;
        let host_index = required_link(&self.host, &attachment.host_interface, instance).await?;
        self.host
            .link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| failed("joining the bridge", e))?;
        // Hairpin, as the CNI bridge plugin's hairpinMode: where bridged
        // traffic passes netfilter (br_netfilter), an instance that reaches
        // itself through a Service's virtual IP is answered through its own
        // port.
        self.host
            .link()
            // RTM_NEWLINK on the existing link, neither creating nor
            // replacing it (RTM_SETLINK ignores a port's settings).
            .add(LinkBridgePort::new(host_index).hairpin(true).build())
            .set_flags(NLM_F_REQUEST | NLM_F_ACK)
            .execute()
            .await
            .map_err(|e| failed("setting hairpin mode", e))?;

        let index = required_link(inside, &peer, instance).await?;
        let mut eth0 = LinkUnspec::new_with_index(index)
            .name(INSTANCE_INTERFACE)
            .address(instance_mac(attachment.address));
        if let Some(mtu) = self.mtu {
            eth0 = eth0.mtu(mtu);
        }
        inside
            .link()
            .set(eth0.build())
            .execute()
            .await
            .map_err(|e| failed("naming eth0", e))?;
        inside
            .address()
            .add(index, IpAddr::V4(attachment.address), attachment.prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|e| failed("addressing eth0", e))?;
        let loopback = required_link(inside, "lo", instance).await?;
        for link in [loopback, index] {
            inside
                .link()
                .set(LinkUnspec::new_with_index(link).up().build())
                .execute()
                .await
                .map_err(|e| failed("bringing links up", e))?;
        }
        inside
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(attachment.gateway)
                    .output_interface(index)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(|e| failed("adding the default route", e))?;
        Ok(())
    }

    async fn attach_locked(
        &self,
        state: &mut State,
        instance: &str,
        namespace: &str,
        vpc: &VpcNetwork,
    ) -> Result<Attachment> {
        let bridge_index = self.ensure_vpc_locked(state, vpc).await?;
        let Some(ipam) = state.vpcs.get_mut(&vpc.name) else {
            return Err(vpc_error(vpc, "vanished while attaching".into()));
        };
        let address = ipam.allocate(instance)?;
        let attachment = self.attachment_of(instance, vpc, address);
        netns::create(&attachment.network_namespace)?;
        let inside = netns::netlink_in(&attachment.network_namespace)?;
        if !self.is_wired(&inside, &attachment).await? {
            self.wire(&inside, bridge_index, &attachment).await?;
        }
        write_resolv_conf(
            &attachment.resolv_conf,
            IpAddr::V4(attachment.gateway),
            namespace,
            &self.cluster_domain,
        )?;
        Ok(attachment)
    }

    async fn detach_locked(&self, state: &mut State, instance: &str) -> Result<()> {
        let held = state
            .vpcs
            .values_mut()
            .find_map(|ipam| ipam.lookup(instance).map(|address| (ipam, address)));
        if let Some((_, address)) = &held {
            // Removing the namespace would take its end of the pair (and so
            // the host end) with it, but only once nothing holds the
            // namespace: deleting the host end frees the link now.
            delete_link(&self.host, &host_interface(*address))
                .await
                .map_err(|e| Error::failed(format!("instance {instance}: removing its veth"), e))?;
        }
        netns::remove(&self.namespace_path(instance))?;
        remove_file_if_present(&self.resolv_conf_path(instance))?;
        if let Some((ipam, _)) = held {
            ipam.release(instance)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Network for LinuxNetwork {
    async fn ensure_vpc(&self, vpc: &VpcNetwork) -> Result<()> {
        let mut state = self.state.lock().await;
        self.ensure_vpc_locked(&mut state, vpc).await.map(|_| ())
    }

    async fn remove_vpc(&self, name: &str) -> Result<bool> {
        let mut state = self.state.lock().await;
        let Some(ipam) = state.vpcs.get(name) else {
            return Ok(true);
        };
        let vpc = ipam.vpc().clone();
        if !ipam.is_empty() {
            return Ok(false);
        }
        delete_link(&self.host, &vpc.bridge_name())
            .await
            .map_err(|e| {
                Error::failed(
                    format!("vpc {}: removing bridge {}", vpc.name, vpc.bridge_name()),
                    e,
                )
            })?;
        firewall::remove(&vpc).await?;
        state.rules_loaded.remove(name);
        if let Some(ipam) = state.vpcs.remove(name) {
            ipam.delete()?;
        }
        Ok(true)
    }

    async fn attach(
        &self,
        instance: &str,
        namespace: &str,
        vpc: &VpcNetwork,
    ) -> Result<Attachment> {
        let mut state = self.state.lock().await;
        if let Some((other, _)) = state
            .vpcs
            .iter()
            .find(|(name, ipam)| **name != vpc.name && ipam.lookup(instance).is_some())
        {
            return Err(instance_error(
                instance,
                format!("is attached to vpc {other}, not {}", vpc.name),
            ));
        }
        let attached = self
            .attach_locked(&mut state, instance, namespace, vpc)
            .await;
        if attached.is_err() {
            // Nothing half-made stays behind; the caller may try again.
            if let Err(e) = self.detach_locked(&mut state, instance).await {
                tracing::warn!(instance, error = %e, "cleaning up a failed attach");
            }
        }
        attached
    }

    async fn detach(&self, instance: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        self.detach_locked(&mut state, instance).await
    }

    async fn attachment(&self, instance: &str) -> Result<Option<Attachment>> {
        let state = self.state.lock().await;
        Ok(state.vpcs.values().find_map(|ipam| {
            ipam.lookup(instance)
                .map(|address| self.attachment_of(instance, ipam.vpc(), address))
        }))
    }

    async fn vpcs(&self) -> Result<Vec<VpcNetwork>> {
        let state = self.state.lock().await;
        Ok(state.vpcs.values().map(|ipam| ipam.vpc().clone()).collect())
    }
}

/// The host end of the veth of the instance holding `address`: unique on
/// the node while the address is allocated, and within 15 bytes.
fn host_interface(address: Ipv4Addr) -> String {
    format!("c4v{:08x}", u32::from(address))
}

/// The MAC address of the instance holding `address` (locally
/// administered, derived from the address as Docker does): a re-wired
/// instance keeps it, so its neighbours' ARP caches stay right.
fn instance_mac(address: Ipv4Addr) -> Vec<u8> {
    let [a, b, c, d] = address.octets();
    vec![0x02, 0x42, a, b, c, d]
}

/// The index of the link named `name`, if there is one.
pub(crate) async fn link_index(
    handle: &Handle,
    name: &str,
) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn required_link(handle: &Handle, name: &str, instance: &str) -> Result<u32> {
    link_index(handle, name)
        .await
        .map_err(|e| Error::failed(format!("instance {instance}: finding {name}"), e))?
        .ok_or_else(|| instance_error(instance, format!("link {name} is missing")))
}

/// Deletes the link named `name`; absent is Ok.
pub(crate) async fn delete_link(handle: &Handle, name: &str) -> Result<(), rtnetlink::Error> {
    match link_index(handle, name).await? {
        Some(index) => match handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) =>
            {
                Ok(())
            }
            done => done,
        },
        None => Ok(()),
    }
}

/// Routing between VPCs and out of the node needs IPv4 forwarding, as for
/// every container network (Docker, CNI bridges) on the host.
fn enable_forwarding() -> Result<()> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    let current = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if current.trim() != "1" {
        std::fs::write(path, "1")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

fn vpc_error(vpc: &VpcNetwork, message: String) -> Error {
    Error::Network {
        what: format!("vpc {}", vpc.name),
        message,
    }
}

fn instance_error(instance: &str, message: String) -> Error {
    Error::Network {
        what: format!("instance {instance}"),
        message,
    }
}
