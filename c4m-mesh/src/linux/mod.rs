//! Instance networking on a Linux node (feature `linux`): a bridge per VPC,
//! a network namespace with its own address per instance.
//!
//! [`LinuxNetwork`] implements [`Network`](crate::Network) with netlink
//! (the `rtnetlink` crate) and nftables:
//!
//! - per VPC a Linux bridge whose address is the gateway (the first address
//!   of the VPC's slice on this node), and an nftables table of its own that
//!   keeps other VPCs' traffic out and masquerades what leaves the node;
//! - per instance a named network namespace bind-mounted under the run dir
//!   (as `ip netns add` does), a veth pair (the host end on the bridge, the
//!   other end `eth0` inside), an address from the VPC's slice and a default
//!   route via the gateway;
//! - the allocations on disk (`ipam`), so a restarted agent re-adopts the
//!   namespaces it made instead of handing their addresses out again;
//! - between nodes, a VXLAN overlay ([`VxlanOverlay`]) routing each VPC's
//!   other slices to the nodes that serve them.
//!
//! [`ServiceRules`] programs Services' virtual IPs into nftables.
//!
//! [`CniNetwork`] implements it with a CNI plugin chain instead (one
//! network, whatever the plugins make of it), in the same namespaces.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::{Result, search_domains};

mod bridge;
mod cni;
mod firewall;
mod ipam;
mod netns;
mod service_rules;
mod vxlan;

pub use bridge::LinuxNetwork;
pub use cni::CniNetwork;
pub use netns::{create_loopback_namespace, enter_network_namespace, remove_network_namespace};
pub use service_rules::{SERVICE_TABLE, ServiceRules, SyncReport};
pub use vxlan::{OVERLAY_DEVICE, VxlanOverlay};

/// Where a network keeps the namespace of `instance` under its run dir.
fn namespace_path(run_dir: &Path, instance: &str) -> PathBuf {
    run_dir.join("netns").join(instance)
}

/// Where a network keeps the `resolv.conf` of `instance` under its run dir.
fn resolv_conf_path(run_dir: &Path, instance: &str) -> PathBuf {
    run_dir.join("resolv").join(format!("{instance}.conf"))
}

/// Writes an instance's `resolv.conf`: `nameserver` (c4m's DNS relay on
/// the gateway) and the search domains of Kubernetes namespace `namespace`.
fn write_resolv_conf(
    path: &Path,
    nameserver: IpAddr,
    namespace: &str,
    cluster_domain: &str,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| crate::Error::io(format!("creating {}", parent.display()), e))?;
    }
    let contents = format!(
        "nameserver {nameserver}\nsearch {}\noptions ndots:5\n",
        search_domains(namespace, cluster_domain)
    );
    ipam::write_atomically(path, contents.as_bytes())
}

/// The `NAME.json` files in `dir`, as (NAME, path): what a network keeps
/// per VPC or per instance, read back when it is re-opened.
fn json_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let reading = |e| crate::Error::io(format!("reading {}", dir.display()), e);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(reading)? {
        let path = entry.map_err(reading)?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
            files.push((name.to_string(), path.clone()));
        }
    }
    Ok(files)
}

/// Removes a file; absent is Ok.
fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::Error::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}
