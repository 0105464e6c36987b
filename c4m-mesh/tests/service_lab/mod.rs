//! A node of one's own for Service rules tests and benchmarks: network
//! namespaces on this machine, made with `ip` (iproute2) and removed on
//! drop. Shared by `tests/service_rules.rs` and the `service_rules_bench`
//! example (`#[path]`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use c4m_mesh::enter_network_namespace;

/// The port every endpoint listens on.
pub(crate) const TARGET_PORT: u16 = 8080;

/// A node namespace with a bridge `c4b0` (10.77.T.1/24) holding endpoint
/// namespaces (10.77.T.11, .12, ...) and a client instance (10.77.T.100),
/// and an outside host (10.78.T.2) linked to the node's `ext0`
/// (10.78.T.1). Everything goes when it drops.
pub(crate) struct Lab {
    subnet: u8,
    namespaces: Vec<String>,
}

impl Lab {
    pub(crate) fn new(subnet: u8, endpoints: usize) -> Lab {
        c4m_testkit::require_commands(&[
            ("ip", "iproute2"),
            ("nft", "nftables"),
            ("nsenter", "util-linux"),
        ]);
        assert!(
            nix::unistd::geteuid().is_root(),
            "the service rules tests need root (namespaces, nftables)"
        );
        let tag = format!("c4s{}x{subnet}", std::process::id() % 100_000);
        let lab = Lab {
            subnet,
            namespaces: std::iter::once(format!("{tag}n"))
                .chain(std::iter::once(format!("{tag}c")))
                .chain(std::iter::once(format!("{tag}o")))
                .chain((1..=endpoints).map(|i| format!("{tag}e{i}")))
                .collect(),
        };
        let node = lab.namespaces[0].clone();
        for namespace in &lab.namespaces {
            ip(&["netns", "add", namespace]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &node, "link", "add", "c4b0", "type", "bridge"]);
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{}/24", lab.gateway()),
            "dev",
            "c4b0",
        ]);
        ip(&["-n", &node, "link", "set", "c4b0", "up"]);
        sysctl(&node, "net.ipv4.ip_forward=1");
        let instances = std::iter::once((1usize, lab.client()))
            .chain((1..=endpoints).map(|i| (i + 2, lab.endpoint(i))));
        for (index, address) in instances {
            let namespace = &lab.namespaces[index];
            let host_end = format!("c4v{index}");
            ip(&[
                "-n", &node, "link", "add", &host_end, "type", "veth", "peer", "name", "eth0",
                "netns", namespace,
            ]);
            ip(&[
                "-n", &node, "link", "set", &host_end, "master", "c4b0", "up",
            ]);
            // As LinuxNetwork does, so an instance reaches itself through a
            // Service where bridged traffic passes netfilter (br_netfilter).
            ip(&[
                "-n",
                &node,
                "link",
                "set",
                &host_end,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ]);
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", namespace, "link", "set", "eth0", "up"]);
            let gateway = lab.gateway().to_string();
            ip(&["-n", namespace, "route", "add", "default", "via", &gateway]);
        }
        let outside = &lab.namespaces[2];
        ip(&[
            "-n", &node, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns",
            outside,
        ]);
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{}/24", lab.node_address()),
            "dev",
            "ext0",
        ]);
        ip(&["-n", &node, "link", "set", "ext0", "up"]);
        ip(&[
            "-n",
            outside,
            "addr",
            "add",
            &format!("{}/24", lab.outside()),
            "dev",
            "eth0",
        ]);
        ip(&["-n", outside, "link", "set", "eth0", "up"]);
        let via = lab.node_address().to_string();
        ip(&["-n", outside, "route", "add", "default", "via", &via]);
        // A node has a default route (cluster IPs are routed before they
        // are translated).
        let out = lab.outside().to_string();
        ip(&["-n", &node, "route", "add", "default", "via", &out]);
        lab
    }

    pub(crate) fn path(&self, index: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.namespaces[index])
    }

    pub(crate) fn node(&self) -> PathBuf {
        self.path(0)
    }

    pub(crate) fn client_namespace(&self) -> PathBuf {
        self.path(1)
    }

    pub(crate) fn outside_namespace(&self) -> PathBuf {
        self.path(2)
    }

    pub(crate) fn endpoint_namespace(&self, i: usize) -> PathBuf {
        self.path(i + 2)
    }

    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    pub(crate) fn client(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 100)
    }

    pub(crate) fn endpoint(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 10 + i as u8)
    }

    pub(crate) fn node_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.subnet, 1)
    }

    pub(crate) fn outside(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.subnet, 2)
    }

    pub(crate) fn cluster_ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, self.subnet, last)
    }

    /// Starts a server in endpoint `i`'s namespace that answers each
    /// connection with `e<i> <peer address>` and closes it.
    pub(crate) fn serve(&self, i: usize) -> Result<()> {
        let address = self.endpoint(i);
        let listener = enter_network_namespace(&self.endpoint_namespace(i), move || {
            TcpListener::bind((address, TARGET_PORT))
        })??;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let peer = stream
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let _ = writeln!(stream, "e{i} {peer}");
            }
        });
        Ok(())
    }

    /// Who answered each of `count` connections from the namespace at
    /// `from` to `to`: `e<i> <the peer address it saw>`, or the error.
    pub(crate) fn connect(
        &self,
        from: PathBuf,
        to: SocketAddr,
        count: usize,
    ) -> Result<Vec<Result<String, std::io::ErrorKind>>> {
        Ok(enter_network_namespace(&from, move || {
            (0..count)
                .map(|_| {
                    let mut stream = TcpStream::connect_timeout(&to, Duration::from_millis(700))
                        .map_err(|e| e.kind())?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .map_err(|e| e.kind())?;
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer).map_err(|e| e.kind())?;
                    Ok(answer.trim().to_string())
                })
                .collect()
        })?)
    }

    pub(crate) fn list_table(&self) -> String {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.node().display()))
            .args(["nft", "list", "table", "ip", "c4m_services"])
            .output()
            .expect("nsenter nft");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .output();
        }
    }
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sysctl(namespace: &str, setting: &str) {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "sysctl", "-qw", setting])
        .output()
        .expect("sysctl");
    assert!(output.status.success(), "sysctl {setting}");
}
