//! `LinuxNetwork` against the real kernel: namespaces, veths, bridges and
//! nftables, with real TCP traffic between namespaces these tests make.
//! Needs root, `nft` and `ip` (iproute2, for the cleanup); each test uses
//! its own subnets under 10.99.0.0/16 so they run in parallel.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use c4m_mesh::{LinuxNetwork, Network, VpcNetwork, enter_network_namespace};

fn vpc(name: &str, subnet: &str) -> VpcNetwork {
    VpcNetwork {
        name: name.into(),
        subnet: subnet.parse().unwrap(),
    }
}

/// Removes whatever a test made, even when it fails half-way: namespace
/// mounts under its run dir, its bridges, veths and nftables tables.
struct Cleanup {
    run_dir: tempfile::TempDir,
    vpcs: Vec<VpcNetwork>,
}

impl Cleanup {
    fn new(vpcs: &[&VpcNetwork]) -> Cleanup {
        require_tools();
        Cleanup {
            run_dir: tempfile::tempdir().expect("a temporary run dir"),
            vpcs: vpcs.iter().map(|v| (*v).clone()).collect(),
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.run_dir.path().to_path_buf()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.run_dir.path().join("netns")) {
            for entry in entries.flatten() {
                let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
            }
        }
        for vpc in &self.vpcs {
            let _ = Command::new("ip")
                .args(["link", "del", &vpc.bridge_name()])
                .output();
            let _ = Command::new("nft")
                .args([
                    "delete",
                    "table",
                    "inet",
                    &format!("c4m_{}", vpc.bridge_name()),
                ])
                .output();
            for veth in links_of(vpc) {
                let _ = Command::new("ip").args(["link", "del", &veth]).output();
            }
        }
    }
}

fn require_tools() {
    c4m_testkit::require_commands(&[("ip", "iproute2"), ("nft", "nftables"), ("umount", "mount")]);
    assert!(
        nix::unistd::geteuid().is_root(),
        "the network tests need root (namespaces, links, nftables)"
    );
}

/// Host links of the VPC: its bridge and the veths named after its
/// addresses (`c4v` + the address in hex, so the subnet's prefix in hex).
fn links_of(vpc: &VpcNetwork) -> Vec<String> {
    let output = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link show");
    let network = u32::from(vpc.subnet.network());
    let hex_digits = (vpc.subnet.prefix_len() / 4) as usize;
    let veth_prefix = format!("c4v{}", &format!("{network:08x}")[..hex_digits]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or("").to_string())
        .filter(|name| *name == vpc.bridge_name() || name.starts_with(&veth_prefix))
        .collect()
}

fn table_exists(vpc: &VpcNetwork) -> bool {
    Command::new("nft")
        .args([
            "list",
            "table",
            "inet",
            &format!("c4m_{}", vpc.bridge_name()),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A listener on `address` inside the namespace at `netns`.
fn listen_in(netns: &Path, address: Ipv4Addr) -> Result<TcpListener> {
    Ok(enter_network_namespace(netns, move || {
        TcpListener::bind((address, 7000))
    })??)
}

/// A TCP connect from inside the namespace at `netns` (the handshake is
/// the kernel's: nothing needs to accept).
fn connect_from(netns: &Path, to: Ipv4Addr, port: u16) -> Result<()> {
    let target = SocketAddr::from((to, port));
    enter_network_namespace(netns, move || {
        TcpStream::connect_timeout(&target, Duration::from_millis(1500))
    })??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables: network namespaces and bridges"]
async fn instances_of_one_vpc_reach_each_other_and_not_another_vpc() -> Result<()> {
    let blue = vpc("blue-reach", "10.99.11.0/24");
    let red = vpc("red-reach", "10.99.12.0/24");
    let cleanup = Cleanup::new(&[&blue, &red]);
    let network = LinuxNetwork::open(cleanup.run_dir())?;

    let a1 = network.attach("reach-a1", "shop", &blue).await?;
    let a2 = network.attach("reach-a2", "shop", &blue).await?;
    let b1 = network.attach("reach-b1", "shop", &red).await?;
    assert_eq!(a1.address, Ipv4Addr::new(10, 99, 11, 2));
    assert_eq!(a2.address, Ipv4Addr::new(10, 99, 11, 3));
    assert_eq!(b1.address, Ipv4Addr::new(10, 99, 12, 2));
    assert_eq!(a1.gateway, Ipv4Addr::new(10, 99, 11, 1));
    // Hairpin on the bridge port, so an instance reaches itself through a
    // Service's virtual IP.
    let hairpin = format!("/sys/class/net/{}/brport/hairpin_mode", a1.host_interface);
    assert_eq!(std::fs::read_to_string(&hairpin)?.trim(), "1", "{hairpin}");
    let resolv = std::fs::read_to_string(&a1.resolv_conf)?;
    assert_eq!(
        resolv,
        "nameserver 10.99.11.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );

    let _a2_listener = listen_in(&a2.network_namespace, a2.address)?;
    let _b1_listener = listen_in(&b1.network_namespace, b1.address)?;
    connect_from(&a1.network_namespace, a2.address, 7000).context("a1 → a2, one vpc")?;
    // The gateway is the host: what the DNS relay listens on.
    let _gateway_listener = TcpListener::bind((a1.gateway, 7000))?;
    connect_from(&a1.network_namespace, a1.gateway, 7000).context("a1 → its gateway")?;

    ensure!(
        connect_from(&a1.network_namespace, b1.address, 7000).is_err(),
        "a1 reached b1 in another vpc"
    );
    ensure!(
        connect_from(&b1.network_namespace, a2.address, 7000).is_err(),
        "b1 reached a2 in another vpc"
    );

    // Without the rules the path exists (so the refusal above is theirs):
    for vpc in [&blue, &red] {
        let status = Command::new("nft")
            .args([
                "delete",
                "table",
                "inet",
                &format!("c4m_{}", vpc.bridge_name()),
            ])
            .status()?;
        ensure!(status.success(), "deleting {}'s table", vpc.name);
    }
    connect_from(&a1.network_namespace, b1.address, 7000)
        .context("a1 → b1 with the isolation rules removed")?;

    // A re-created network loads them again.
    drop(network);
    let network = LinuxNetwork::open(cleanup.run_dir())?;
    network.ensure_vpc(&blue).await?;
    ensure!(
        connect_from(&a1.network_namespace, b1.address, 7000).is_err(),
        "a1 reached b1 after the rules were reloaded"
    );

    for instance in ["reach-a1", "reach-a2", "reach-b1"] {
        network.detach(instance).await?;
    }
    ensure!(network.remove_vpc(&blue.name).await?);
    ensure!(network.remove_vpc(&red.name).await?);
    for vpc in [&blue, &red] {
        ensure!(links_of(vpc).is_empty(), "links left: {:?}", links_of(vpc));
        ensure!(!table_exists(vpc), "{}'s table is left", vpc.name);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables: network namespaces and bridges"]
async fn allocations_survive_a_new_network_and_detach_is_idempotent() -> Result<()> {
    let green = vpc("green-ipam", "10.99.13.0/24");
    let cleanup = Cleanup::new(&[&green]);
    let network = LinuxNetwork::open(cleanup.run_dir())?;
    let first = network.attach("ipam-x", "default", &green).await?;
    assert_eq!(first.address, Ipv4Addr::new(10, 99, 13, 2));
    drop(network);

    // A restarted agent finds the allocation and the namespace as they were.
    let network = LinuxNetwork::open(cleanup.run_dir())?;
    assert_eq!(network.vpcs().await?, vec![green.clone()]);
    assert_eq!(network.attachment("ipam-x").await?, Some(first.clone()));
    let _listener = listen_in(&first.network_namespace, first.address)?;
    let again = network.attach("ipam-x", "default", &green).await?;
    assert_eq!(again, first);
    // Re-attaching kept the namespace (the listener in it still answers).
    let second = network.attach("ipam-y", "default", &green).await?;
    assert_eq!(second.address, Ipv4Addr::new(10, 99, 13, 3));
    connect_from(&second.network_namespace, first.address, 7000)?;

    // Attaching an instance to a second VPC is refused.
    let other = vpc("other-ipam", "10.99.14.0/24");
    let error = network
        .attach("ipam-y", "default", &other)
        .await
        .unwrap_err();
    ensure!(
        error.to_string().contains("is attached to vpc green-ipam"),
        "{error}"
    );

    // A repair: the host end of x's veth vanished; attach re-wires it.
    let status = Command::new("ip")
        .args(["link", "del", &first.host_interface])
        .status()?;
    ensure!(status.success());
    let repaired = network.attach("ipam-x", "default", &green).await?;
    assert_eq!(repaired, first);
    connect_from(&second.network_namespace, first.address, 7000).context("after the repair")?;

    network.detach("ipam-x").await?;
    network.detach("ipam-x").await?;
    network.detach("never-attached").await?;
    ensure!(!first.network_namespace.exists(), "x's namespace is left");
    ensure!(!first.resolv_conf.exists(), "x's resolv.conf is left");
    ensure!(
        !network.remove_vpc(&green.name).await?,
        "removed a vpc with an instance attached"
    );
    ensure!(!links_of(&green).is_empty(), "the kept vpc lost its bridge");
    network.detach("ipam-y").await?;
    ensure!(network.remove_vpc(&green.name).await?);
    ensure!(
        network.remove_vpc(&green.name).await?,
        "an unknown vpc counts as removed"
    );
    ensure!(
        links_of(&green).is_empty(),
        "links left: {:?}",
        links_of(&green)
    );
    ensure!(!table_exists(&green), "the table is left");
    ensure!(network.vpcs().await?.is_empty());
    // The freed addresses are free in a new network too.
    drop(network);
    let network = LinuxNetwork::open(cleanup.run_dir())?;
    if !network.vpcs().await?.is_empty() {
        bail!("the vpc's allocations outlived remove_vpc");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables: network namespaces and bridges"]
async fn overlapping_and_changed_subnets_are_refused() -> Result<()> {
    let wide = vpc("wide-overlap", "10.99.16.0/22");
    let inner = vpc("inner-overlap", "10.99.17.0/24");
    let cleanup = Cleanup::new(&[&wide, &inner]);
    let network = LinuxNetwork::open(cleanup.run_dir())?;
    network.ensure_vpc(&wide).await?;
    let error = network.ensure_vpc(&inner).await.unwrap_err().to_string();
    ensure!(
        error.contains("subnet 10.99.17.0/24 overlaps vpc wide-overlap's 10.99.16.0/22"),
        "{error}"
    );
    ensure!(links_of(&inner).is_empty(), "the refused vpc got a bridge");
    let moved = vpc("wide-overlap", "10.99.20.0/24");
    let error = network.ensure_vpc(&moved).await.unwrap_err().to_string();
    ensure!(
        error.contains("has subnet 10.99.16.0/22 on this node"),
        "{error}"
    );
    ensure!(network.remove_vpc(&wide.name).await?);
    ensure!(links_of(&wide).is_empty());
    Ok(())
}
