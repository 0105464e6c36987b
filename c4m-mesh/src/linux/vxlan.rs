//! The VXLAN overlay between nodes, Flannel's `vxlan` backend done over
//! netlink: one device per node carries every VPC, and its peers come
//! from the control plane's node list, never from multicast or learning.
//!
//! For each peer node: a forwarding entry (its VTEP MAC → its underlay
//! address), a permanent neighbour entry (its underlay address → its VTEP
//! MAC, on the overlay device) and, for each VPC this node serves, a route
//! to the peer's slice of the VPC via the peer's underlay address,
//! `onlink` over the device. A VTEP's MAC derives from its underlay
//! address, so peers need not publish it.
//!
//! One VNI for all VPCs: isolation is by address, in the table
//! `inet c4m_overlay`: what the overlay brings in may reach only the
//! bridge of the VPC its source address belongs to, what leaves through it
//! must stay in its VPC, and nothing but VPC bridges forwards to or from
//! it (VPC ranges do not overlap cluster-wide, so a source address names
//! its VPC), but connections a Service's rules DNATed to an endpoint
//! (a NodePort reached from outside: `ServiceRules` then gives them this
//! node's gateway address in the endpoint's VPC).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use tokio::sync::Mutex;

use async_trait::async_trait;

use super::bridge::{delete_link, link_index};
use super::firewall::{self, BRIDGE_PREFIX};
use crate::{Error, Overlay, OverlayPeer, OverlayVpc, Result, node_slice};

/// The overlay's VXLAN device on every node.
pub const OVERLAY_DEVICE: &str = "c4overlay";
/// What VXLAN adds to each packet: outer Ethernet (14), IPv4 (20), UDP (8)
/// and VXLAN (8) headers.
pub(super) const VXLAN_OVERHEAD: u32 = 50;
/// IANA's VXLAN port.
pub(super) const VXLAN_PORT: u16 = 4789;
/// The one VXLAN network identifier c4m uses.
const VNI: u32 = 4;
/// The overlay's nftables table.
const TABLE: &str = "c4m_overlay";

/// The node's VXLAN overlay (needs root, or `CAP_NET_ADMIN`).
pub struct VxlanOverlay {
    host: Handle,
    underlay: Ipv4Addr,
    underlay_index: u32,
    mtu: u32,
    /// Serialises syncs: each one reads the device's state and fixes it.
    sync: Mutex<()>,
}

impl VxlanOverlay {
    /// Prepares the overlay of a node reached at `underlay`, an address of
    /// one of its interfaces (whose MTU, less VXLAN's headers, becomes the
    /// overlay's). Nothing is created until [`sync`](Self::sync). Must run
    /// inside a Tokio runtime.
    pub async fn open(underlay: Ipv4Addr) -> Result<VxlanOverlay> {
        let failed = |message: String| overlay_error(message);
        if underlay.is_loopback() || underlay.is_unspecified() {
            return Err(failed(format!(
                "the node address {underlay} is not one other nodes can reach"
            )));
        }
        let (connection, host, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("opening a netlink socket", e))?;
        tokio::spawn(connection);
        let address = host
            .address()
            .get()
            .set_address_filter(IpAddr::V4(underlay))
            .execute()
            .try_next()
            .await
            .map_err(|e| overlay_failed(format!("finding the interface of {underlay}"), e))?
            .ok_or_else(|| failed(format!("no interface of this node holds {underlay}")))?;
        let underlay_index = address.header.index;
        let link = host
            .link()
            .get()
            .match_index(underlay_index)
            .execute()
            .try_next()
            .await
            .map_err(|e| overlay_failed(format!("reading interface {underlay_index}"), e))?
            .ok_or_else(|| failed(format!("interface {underlay_index} vanished")))?;
        let underlay_mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .unwrap_or(1500);
        Ok(VxlanOverlay {
            host,
            underlay,
            underlay_index,
            mtu: underlay_mtu.saturating_sub(VXLAN_OVERHEAD),
            sync: Mutex::new(()),
        })
    }

    /// Makes the device, its forwarding and neighbour entries, its routes
    /// and its rules match `peers` and `vpcs` exactly: what is missing is
    /// added, what is stale removed. Peers whose slice of a VPC cannot be
    /// told from this node's (VPCs of /24 or smaller) get no route to it.
    async fn sync_to(&self, peers: &[OverlayPeer], vpcs: &[OverlayVpc]) -> Result<()> {
        let _one_at_a_time = self.sync.lock().await;
        let index = self.ensure_device().await?;
        let peers: BTreeSet<&OverlayPeer> = peers
            .iter()
            .filter(|p| p.underlay != self.underlay)
            .collect();
        let mut routes: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
        for vpc in vpcs {
            for peer in &peers {
                match node_slice(vpc.cidr, peer.slice) {
                    Ok(slice) if slice != vpc.local.subnet => {
                        routes.insert(slice, peer.underlay);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(vpc = %vpc.local.name, peer = %peer.underlay, error = %e, "no route to the peer's slice")
                    }
                }
            }
        }
        let underlays: BTreeSet<Ipv4Addr> = peers.iter().map(|p| p.underlay).collect();
        self.sync_forwarding(index, &underlays).await?;
        self.sync_neighbours(index, &underlays).await?;
        self.sync_routes(index, &routes).await?;
        firewall::load(&format!("overlay table {TABLE}"), &ruleset(vpcs)).await
    }

    /// The device's index, creating it (or re-creating one that is not
    /// what this node needs) first.
    async fn ensure_device(&self) -> Result<u32> {
        let failed = |e: rtnetlink::Error| overlay_failed(OVERLAY_DEVICE, e);
        let mac = vtep_mac(self.underlay);
        if let Some(index) = link_index(&self.host, OVERLAY_DEVICE)
            .await
            .map_err(failed)?
        {
            let link = self
                .host
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_next()
                .await
                .map_err(failed)?;
            let fits = link.is_some_and(|link| {
                link.attributes.contains(&LinkAttribute::Mtu(self.mtu))
                    && link
                        .attributes
                        .iter()
                        .any(|a| matches!(a, LinkAttribute::Address(address) if *address == mac))
            });
            if fits {
                return Ok(index);
            }
            // Made for another address or MTU (the node's changed): anew.
            delete_link(&self.host, OVERLAY_DEVICE)
                .await
                .map_err(failed)?;
        }
        self.host
            .link()
            .add(
                LinkVxlan::new(OVERLAY_DEVICE, VNI)
                    .dev(self.underlay_index)
                    .local(self.underlay)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .mtu(self.mtu)
                    .address(mac)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(failed)?;
        let index = link_index(&self.host, OVERLAY_DEVICE)
            .await
            .map_err(failed)?
            .ok_or_else(|| overlay_error(format!("{OVERLAY_DEVICE} vanished")))?;
        self.host
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(failed)?;
        Ok(index)
    }

    /// One forwarding entry per peer: its VTEP MAC → its underlay address.
    async fn sync_forwarding(&self, index: u32, peers: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let listed = self.neighbours(index, AddressFamily::Bridge).await?;
        let present = self
            .keep_only(listed, "forwarding entries", |entry| {
                destination(entry).filter(|peer| {
                    peers.contains(peer) && link_layer_address(entry) == Some(vtep_mac(*peer))
                })
            })
            .await?;
        for peer in peers.difference(&present) {
            self.host
                .neighbours()
                .add_bridge(index, &vtep_mac(*peer))
                .destination(IpAddr::V4(*peer))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| overlay_failed("adding a forwarding entry", e))?;
        }
        Ok(())
    }

    /// One permanent neighbour entry per peer on the device: its underlay
    /// address (the routes' next hop) → its VTEP MAC, so nothing is ARPed.
    async fn sync_neighbours(&self, index: u32, peers: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let listed = self.neighbours(index, AddressFamily::Inet).await?;
        let present = self
            .keep_only(listed, "neighbour entries", |entry| {
                destination(entry).filter(|peer| {
                    peers.contains(peer)
                        && link_layer_address(entry) == Some(vtep_mac(*peer))
                        && is_permanent(entry)
                })
            })
            .await?;
        for peer in peers.difference(&present) {
            self.host
                .neighbours()
                .add(index, IpAddr::V4(*peer))
                .link_layer_address(&vtep_mac(*peer))
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| overlay_failed("adding a neighbour entry", e))?;
        }
        Ok(())
    }

    /// Deletes the entries `wanted` names no peer for (or a peer twice) and
    /// returns the peers the others serve.
    async fn keep_only(
        &self,
        entries: Vec<NeighbourMessage>,
        what: &str,
        wanted: impl Fn(&NeighbourMessage) -> Option<Ipv4Addr>,
    ) -> Result<BTreeSet<Ipv4Addr>> {
        let mut present = BTreeSet::new();
        for entry in entries {
            match wanted(&entry) {
                Some(peer) if present.insert(peer) => {}
                _ => self
                    .host
                    .neighbours()
                    .del(entry)
                    .execute()
                    .await
                    .or_else(ignore_missing)
                    .map_err(|e| overlay_failed(format!("removing {what}"), e))?,
            }
        }
        Ok(present)
    }

    /// One route per (VPC, peer): the peer's slice via its underlay
    /// address, on the device.
    async fn sync_routes(&self, index: u32, routes: &BTreeMap<Ipv4Net, Ipv4Addr>) -> Result<()> {
        let failed = |e: rtnetlink::Error| overlay_failed("routes", e);
        let listed: Vec<RouteMessage> = self
            .host
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(failed)?;
        let mut present = BTreeSet::new();
        for route in listed {
            if !route.attributes.contains(&RouteAttribute::Oif(index)) {
                continue;
            }
            let destination = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                    Ipv4Net::new(*d, route.header.destination_prefix_length).ok()
                }
                _ => None,
            });
            let gateway = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            });
            match destination {
                Some(subnet) if gateway.is_some() && routes.get(&subnet) == gateway.as_ref() => {
                    present.insert(subnet);
                }
                // The kernel's own routes of the device (none with a gateway) stay.
                _ if gateway.is_none() => {}
                _ => self
                    .host
                    .route()
                    .del(route)
                    .execute()
                    .await
                    .or_else(ignore_missing)
                    .map_err(failed)?,
            }
        }
        for (subnet, peer) in routes {
            if present.contains(subnet) {
                continue;
            }
            self.host
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(subnet.network(), subnet.prefix_len())
                        .gateway(*peer)
                        .output_interface(index)
                        .onlink()
                        .build(),
                )
                .replace()
                .execute()
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// The device's neighbour entries of `family` (`Bridge`: forwarding).
    async fn neighbours(&self, index: u32, family: AddressFamily) -> Result<Vec<NeighbourMessage>> {
        let listed: Vec<NeighbourMessage> = self
            .host
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| overlay_failed("listing neighbour entries", e))?;
        Ok(listed
            .into_iter()
            .filter(|n| n.header.ifindex == index && n.header.family == family)
            // The kernel's own entries (the all-zero default, the device's MAC).
            .filter(|n| {
                n.header.family != AddressFamily::Bridge
                    || link_layer_address(n).is_some_and(|mac| mac.iter().any(|b| *b != 0))
                        && is_permanent(n)
                        && destination(n).is_some()
            })
            .collect())
    }
}

#[async_trait]
impl Overlay for VxlanOverlay {
    /// The MTU of the overlay, which instances' interfaces must not exceed.
    fn mtu(&self) -> u32 {
        self.mtu
    }

    async fn sync(&self, peers: &[OverlayPeer], vpcs: &[OverlayVpc]) -> Result<()> {
        self.sync_to(peers, vpcs).await
    }
}

/// The overlay's isolation rules for the VPCs this node serves.
fn ruleset(vpcs: &[OverlayVpc]) -> String {
    let others = format!("{BRIDGE_PREFIX}*");
    let mut rules = String::new();
    for vpc in vpcs {
        let bridge = vpc.local.bridge_name();
        let cidr = vpc.cidr;
        rules.push_str(&format!(
            "\t\tiifname \"{OVERLAY_DEVICE}\" oifname \"{bridge}\" ip saddr != {cidr} drop\n\
             \t\tiifname \"{bridge}\" oifname \"{OVERLAY_DEVICE}\" ip daddr != {cidr} drop\n"
        ));
    }
    let chains = format!(
        "\tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tiifname \"{OVERLAY_DEVICE}\" oifname != \"{others}\" ct status & dnat == 0 drop\n\
         \t\toifname \"{OVERLAY_DEVICE}\" iifname != \"{others}\" ct status & dnat == 0 drop\n\
         {rules}\
         \t}}\n"
    );
    firewall::replace_table(TABLE, &chains)
}

/// The VTEP MAC of the node at `underlay` (locally administered).
fn vtep_mac(underlay: Ipv4Addr) -> Vec<u8> {
    let [a, b, c, d] = underlay.octets();
    vec![0x02, 0xc4, a, b, c, d]
}

fn link_layer_address(entry: &NeighbourMessage) -> Option<Vec<u8>> {
    entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => Some(mac.clone()),
        _ => None,
    })
}

/// The entry's IPv4 destination. Forwarding entries (family `Bridge`)
/// carry it as bare bytes.
fn destination(entry: &NeighbourMessage) -> Option<Ipv4Addr> {
    entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(address)) => Some(*address),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// Whether the entry is permanent (the kernel may add other bits, such as
/// `NOARP` on forwarding entries).
fn is_permanent(entry: &NeighbourMessage) -> bool {
    u16::from(entry.header.state) & u16::from(NeighbourState::Permanent) != 0
}

/// A delete of what is already gone succeeded.
fn ignore_missing(e: rtnetlink::Error) -> Result<(), rtnetlink::Error> {
    match &e {
        rtnetlink::Error::NetlinkError(message)
            if [nix::errno::Errno::ENOENT, nix::errno::Errno::ESRCH]
                .iter()
                .any(|errno| message.raw_code() == -(*errno as i32)) =>
        {
            Ok(())
        }
        _ => Err(e),
    }
}

fn overlay_error(message: String) -> Error {
    Error::Network {
        what: "overlay".into(),
        message,
    }
}

fn overlay_failed(what: impl std::fmt::Display, source: rtnetlink::Error) -> Error {
    Error::failed(format!("overlay: {what}"), source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VpcNetwork;

    #[test]
    fn the_rules_keep_each_vpc_to_its_range() {
        let vpc = OverlayVpc {
            local: VpcNetwork {
                name: "blue".into(),
                subnet: "10.99.3.0/24".parse().unwrap(),
            },
            cidr: "10.99.0.0/16".parse().unwrap(),
        };
        let rules = ruleset(&[vpc]);
        assert!(rules.starts_with("table inet c4m_overlay {}\ndelete table inet c4m_overlay\n"));
        assert!(rules.contains(
            "iifname \"c4overlay\" oifname \"c4b0a630301\" ip saddr != 10.99.0.0/16 drop"
        ));
        assert!(rules.contains(
            "iifname \"c4b0a630301\" oifname \"c4overlay\" ip daddr != 10.99.0.0/16 drop"
        ));
        assert!(
            rules.contains("iifname \"c4overlay\" oifname != \"c4b*\" ct status & dnat == 0 drop")
        );
        assert_eq!(
            vtep_mac(Ipv4Addr::new(10, 99, 250, 11)),
            vec![0x02, 0xc4, 10, 99, 250, 11]
        );
    }
}
