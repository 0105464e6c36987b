//! Simulated hosts on one machine: network namespaces on a switch (a
//! bridge in a namespace of its own), with the root namespace on the same
//! switch, so processes started in a host namespace see a machine of their
//! own on a private subnet. Made with `ip` (iproute2); everything is
//! removed when the handle drops, even after a failed test.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// Hosts `PREFIX.11`, `PREFIX.12`, ... and the root namespace at
/// `PREFIX.1`, on one /24.
pub struct Hosts {
    /// Names of the namespaces made: the switch first, then the hosts.
    namespaces: Vec<String>,
    /// The root namespace's end of its link to the switch.
    root_link: String,
    prefix: [u8; 3],
}

impl Hosts {
    /// Makes `count` hosts on `PREFIX.0/24` (`prefix` as in `[10, 99, 250]`),
    /// reaching each other and the root namespace (`PREFIX.1`). Needs root.
    /// Panics, after removing what it made, if a step fails.
    pub fn create(prefix: [u8; 3], count: usize) -> Hosts {
        assert!(
            (1..=200).contains(&count),
            "between 1 and 200 hosts, not {count}"
        );
        // Names unique to this process and subnet, within the kernel's 15 bytes.
        let tag = format!("{}{}", std::process::id() % 100_000, prefix[2]);
        let hosts = Hosts {
            namespaces: std::iter::once(format!("c4t{tag}sw"))
                .chain((1..=count).map(|i| format!("c4t{tag}h{i}")))
                .collect(),
            root_link: format!("c4t{tag}r"),
            prefix,
        };
        let switch = hosts.namespaces[0].clone();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        ip(&[
            "link",
            "add",
            &hosts.root_link,
            "type",
            "veth",
            "peer",
            "name",
            "root",
            "netns",
            &switch,
        ]);
        ip(&["-n", &switch, "link", "set", "root", "master", "br0", "up"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.gateway()),
            "dev",
            &hosts.root_link,
        ]);
        ip(&["link", "set", &hosts.root_link, "up"]);
        for index in 1..=count {
            let namespace = hosts.namespaces[index].clone();
            let port = format!("p{index}");
            ip(&["netns", "add", &namespace]);
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &namespace,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{}/24", hosts.address(index)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// How many hosts there are.
    pub fn count(&self) -> usize {
        self.namespaces.len() - 1
    }

    /// The root namespace's address on the hosts' subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The address of host `index` (from 1).
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 10 + index as u8)
    }

    /// The name of host `index`'s network namespace (from 1).
    pub fn namespace(&self, index: usize) -> &str {
        &self.namespaces[index]
    }

    /// The path of host `index`'s network namespace, for `nsenter --net=`.
    pub fn namespace_path(&self, index: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(self.namespace(index))
    }

    /// A command that runs `program` in host `index`'s network namespace
    /// only (`nsenter --net`: the mounts, `/sys` included, stay the
    /// machine's, as a process started there expects).
    pub fn command(&self, index: usize, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.namespace_path(index).display()))
            .arg("--")
            .arg(program);
        command
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting the root end takes its switch end; deleting a namespace
        // takes the links in it once nothing else holds it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_link])
            .output();
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .output();
        }
    }
}

/// Runs `ip ARGS`, panicking with its error output if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip is missing (apt-get install iproute2): {e}"));
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
