//! The network seam: [`Network`], what a node's agent asks of the instance
//! network, with the data it exchanges ([`VpcNetwork`], [`Attachment`],
//! [`HostPort`]), and how VPCs are sliced between nodes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Prefix length of a node's slice of a VPC.
const NODE_SLICE_PREFIX: u8 = 24;

/// A node's slice of a VPC: the `index`th /24 of `cidr`, or all of a VPC
/// of /24 or smaller (which is then node-local: every node serves it whole).
pub fn node_slice(cidr: Ipv4Net, index: u32) -> Result<Ipv4Net> {
    if cidr.prefix_len() >= NODE_SLICE_PREFIX {
        return Ok(cidr.trunc());
    }
    cidr.trunc()
        .subnets(NODE_SLICE_PREFIX)
        .ok()
        .and_then(|mut slices| slices.nth(index as usize))
        .ok_or_else(|| {
            crate::Error::Invalid(format!(
                "node slice {index} is outside {cidr} (it has {} /{NODE_SLICE_PREFIX} slices)",
                1u64 << (NODE_SLICE_PREFIX - cidr.prefix_len())
            ))
        })
}

/// The cluster domain when none is configured, as in Kubernetes: services
/// answer as `NAME.NAMESPACE.svc.cluster.local` (charts hard-code it).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// c4m's own domain, answered beside the configured one whatever it is:
/// `NAME.NAMESPACE.svc.c4m` keeps working.
pub const C4M_DOMAIN: &str = "c4m";

/// The DNS search domains of an instance in Kubernetes namespace
/// `namespace` of a cluster whose domain is `cluster_domain` (`c4m`,
/// `cluster.local`), as the kubelet writes them.
pub fn search_domains(namespace: &str, cluster_domain: &str) -> String {
    c4m_core::pod_etc::cluster_searches(namespace, cluster_domain).join(" ")
}

/// A port of an instance published on the node (a container's
/// `hostPort`), in the shape of CNI's `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    /// The port's name (may be empty); c4m's own, not sent to plugins.
    #[serde(skip)]
    pub name: String,
    /// The port on the node.
    pub host_port: u16,
    /// The instance's port it reaches.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lowercase, as CNI writes it).
    pub protocol: String,
    /// The node address it is published on; None for every address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// One VPC as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcNetwork {
    /// The VPC's name (lowercase letters, digits and `-`, at most 63).
    pub name: String,
    /// The VPC's address range on this node; its first address is the
    /// gateway, the others go to instances.
    pub subnet: Ipv4Net,
}

impl VpcNetwork {
    /// The gateway: the first host address of the subnet, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The node's bridge for this VPC. The name derives from the gateway,
    /// which no two VPCs on a node share (their subnets may not overlap),
    /// and fits the kernel's 15 bytes.
    pub fn bridge_name(&self) -> String {
        format!("c4b{:08x}", u32::from(self.gateway()))
    }
}

/// An instance's place on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The instance (container id) attached.
    pub instance: String,
    /// The VPC it is in.
    pub vpc: String,
    /// The network namespace the container joins.
    pub network_namespace: PathBuf,
    /// The instance's address (on `eth0` inside the namespace).
    pub address: Ipv4Addr,
    /// Prefix length of the VPC's subnet.
    pub prefix_len: u8,
    /// The default gateway, which is also the instance's DNS server.
    pub gateway: Ipv4Addr,
    /// The host end of the veth pair.
    pub host_interface: String,
    /// The `resolv.conf` written for the instance, for the driver to mount.
    pub resolv_conf: PathBuf,
}

/// The node's instance network (the side-effect seam: `LinuxNetwork` and
/// `CniNetwork` with feature `linux`; tests and other platforms stand in).
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Creates the VPC's bridge and isolation rules, or checks they are
    /// there. A subnet overlapping another VPC's on this node is refused.
    async fn ensure_vpc(&self, vpc: &VpcNetwork) -> Result<()>;

    /// Removes the VPC's bridge, rules and allocations from the node, and
    /// says whether it did: a VPC with an instance attached stays (false).
    /// Removing an unknown VPC is Ok (true).
    async fn remove_vpc(&self, name: &str) -> Result<bool>;

    /// Gives `instance` a network namespace in `vpc` (creating the VPC on
    /// the node first when needed), with DNS search domains of Kubernetes
    /// namespace `namespace`. Attaching an attached instance returns its
    /// attachment, repairing what is missing (after a crash or a reboot).
    async fn attach(&self, instance: &str, namespace: &str, vpc: &VpcNetwork)
    -> Result<Attachment>;

    /// Whether [`Network::attach_with_host_ports`] publishes host ports
    /// itself (in the kernel); otherwise the agent proxies them.
    fn publishes_host_ports(&self) -> bool {
        false
    }

    /// [`Network::attach`], also publishing `host_ports` on the node when
    /// [`Network::publishes_host_ports`] (networks that do not, ignore them).
    async fn attach_with_host_ports(
        &self,
        instance: &str,
        namespace: &str,
        vpc: &VpcNetwork,
        host_ports: &[HostPort],
    ) -> Result<Attachment> {
        let _ = host_ports;
        self.attach(instance, namespace, vpc).await
    }

    /// Removes the instance's namespace, veth and address. Detaching an
    /// unknown instance is Ok.
    async fn detach(&self, instance: &str) -> Result<()>;

    /// The attachment of `instance`, if it has one.
    async fn attachment(&self, instance: &str) -> Result<Option<Attachment>>;

    /// Every VPC this node serves.
    async fn vpcs(&self) -> Result<Vec<VpcNetwork>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_bridge_derive_from_the_subnet() {
        let vpc = VpcNetwork {
            name: "blue".into(),
            subnet: "10.99.3.0/24".parse().unwrap(),
        };
        assert_eq!(vpc.gateway(), Ipv4Addr::new(10, 99, 3, 1));
        assert_eq!(vpc.bridge_name(), "c4b0a630301");
        assert!(vpc.bridge_name().len() <= 15);
        assert_eq!(search_domains("shop", "c4m"), "shop.svc.c4m svc.c4m c4m");
        assert_eq!(
            search_domains("shop", "cluster.local"),
            "shop.svc.cluster.local svc.cluster.local cluster.local"
        );
    }

    #[test]
    fn node_slices_are_the_nth_slash_24() {
        let cidr: Ipv4Net = "10.99.0.0/16".parse().unwrap();
        assert_eq!(node_slice(cidr, 0).unwrap().to_string(), "10.99.0.0/24");
        assert_eq!(node_slice(cidr, 5).unwrap().to_string(), "10.99.5.0/24");
        let error = node_slice(cidr, 256).unwrap_err().to_string();
        assert!(
            error.contains("node slice 256 is outside 10.99.0.0/16"),
            "{error}"
        );
        let small: Ipv4Net = "10.99.7.0/26".parse().unwrap();
        assert_eq!(node_slice(small, 3).unwrap(), small);
    }
}
