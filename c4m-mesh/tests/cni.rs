//! `CniNetwork` with Debian's real CNI plugins (bridge, host-local,
//! portmap from containernetworking-plugins in /usr/lib/cni) against the
//! real kernel: addresses inside the namespaces, TCP between instances and
//! to a published port, CHECK, re-adoption, repair, DEL leaving nothing,
//! a failing plugin's error object, configuration errors, DEL with the
//! configuration ADD ran with. Needs root, `ip`, `iptables` and `umount`;
//! each test has its own bridge and subnet (10.99.90-91.0/24, 10.99.94.0/24).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use c4m_core::DEFAULT_VPC;
use c4m_mesh::{CniNetwork, Error, HostPort, Network, VpcNetwork, enter_network_namespace};

const PLUGINS: &str = "/usr/lib/cni";

/// The VPC every instance of a CNI network asks for (its subnet is the
/// plugins' business).
fn default_vpc() -> VpcNetwork {
    VpcNetwork {
        name: DEFAULT_VPC.into(),
        subnet: "10.88.0.0/24".parse().unwrap(),
    }
}

/// A test's run dir, configuration list and bridge, removed even when the
/// test fails half way.
struct Setup {
    dir: tempfile::TempDir,
    bridge: String,
    /// The instances whose NAT rules a failed test may leave.
    instances: &'static [&'static str],
}

impl Setup {
    /// A bridge + host-local (+ `extra` plugins) list on `bridge`, `subnet`.
    fn new(bridge: &str, subnet: &str, extra: &str, instances: &'static [&'static str]) -> Setup {
        require_tools();
        let dir = tempfile::tempdir().expect("a temporary dir");
        let conflist = format!(
            r#"{{"cniVersion": "1.0.0", "name": "c4m-{bridge}", "plugins": [
                {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": true,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{subnet}"}}]],
                           "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{}"}}}}{extra}]}}"#,
            dir.path().join("ipam").display()
        );
        std::fs::write(dir.path().join("net.conflist"), conflist).expect("writing the conflist");
        Setup {
            dir,
            bridge: bridge.into(),
            instances,
        }
    }

    fn conflist(&self) -> PathBuf {
        self.dir.path().join("net.conflist")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// host-local's allocation files (one per address in use).
    fn allocations(&self) -> Vec<String> {
        let Ok(networks) = std::fs::read_dir(self.dir.path().join("ipam")) else {
            return Vec::new();
        };
        networks
            .flatten()
            .flat_map(|network| std::fs::read_dir(network.path()).into_iter().flatten())
            .flatten()
            .map(|file| file.file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<Ipv4Addr>().is_ok())
            .collect()
    }

    async fn open(&self, bin_dirs: &[PathBuf]) -> c4m_mesh::Result<CniNetwork> {
        CniNetwork::open(&self.conflist(), bin_dirs, self.run_dir()).await
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.run_dir().join("netns")) {
            for entry in entries.flatten() {
                let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        for instance in self.instances {
            remove_nat_rules_of(instance);
        }
    }
}

/// Deletes the NAT rules naming `instance` and the per-container chains
/// they jump to (what DEL would have removed).
fn remove_nat_rules_of(instance: &str) {
    let chains: Vec<String> = nat_rules_of(instance)
        .iter()
        .filter_map(|rule| {
            let target = rule.rsplit(" -j ").next()?;
            (target.starts_with("CNI-") && !target.starts_with("CNI-HOSTPORT-"))
                .then(|| target.to_string())
        })
        .collect();
    for rule in nat_rules_of(instance) {
        // iptables-save quotes as a shell does.
        let _ = Command::new("sh")
            .args(["-c", &format!("iptables -t nat -D {}", &rule[3..])])
            .output();
    }
    for chain in chains {
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-F", &chain])
            .output();
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-X", &chain])
            .output();
    }
}

fn require_tools() {
    c4m_testkit::require_commands(&[
        ("ip", "iproute2"),
        ("iptables-save", "iptables"),
        ("umount", "mount"),
    ]);
    for plugin in ["bridge", "host-local", "portmap"] {
        assert!(
            Path::new(PLUGINS).join(plugin).exists(),
            "{PLUGINS}/{plugin} is missing: install containernetworking-plugins (scripts/test.sh does)"
        );
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the CNI tests need root (namespaces, links, iptables)"
    );
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The links enslaved to `bridge`.
fn bridge_ports(bridge: &str) -> String {
    let output = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip link show master");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The NAT table's rules and chains that name `instance` (portmap's and
/// bridge's ipMasq rules carry the container id in a comment).
fn nat_rules_of(instance: &str) -> Vec<String> {
    let output = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        // iptables-save escapes the comment's quotes.
        .filter(|line| line.contains(&format!(r#"id: \"{instance}\""#)))
        .map(str::to_string)
        .collect()
}

/// The chain portmap made for `instance` (`CNI-DN-…`), found through the
/// rule jumping to it.
fn portmap_chain_of(instance: &str) -> Option<String> {
    nat_rules_of(instance).iter().find_map(|rule| {
        let target = rule.rsplit(" -j ").next()?;
        target.starts_with("CNI-DN-").then(|| target.to_string())
    })
}

fn nat_chain_exists(chain: &str) -> bool {
    Command::new("iptables")
        .args(["-t", "nat", "-S", chain])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A server inside the namespace at `netns` on `address:port` that answers
/// each connection with `reply`, for `connections` connections.
fn serve_in(
    netns: &Path,
    address: Ipv4Addr,
    port: u16,
    reply: &'static str,
    connections: usize,
) -> Result<std::thread::JoinHandle<()>> {
    let listener: TcpListener =
        enter_network_namespace(netns, move || TcpListener::bind((address, port)))?
            .with_context(|| format!("binding {address}:{port} inside {}", netns.display()))?;
    Ok(std::thread::spawn(move || {
        for mut stream in listener.incoming().take(connections).flatten() {
            let _ = stream.write_all(reply.as_bytes());
        }
    }))
}

fn read_all(target: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// What a TCP client inside the namespace at `netns` reads from `target`.
fn read_from_inside(netns: &Path, target: SocketAddr) -> Result<String> {
    Ok(enter_network_namespace(netns, move || read_all(target))??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + CNI plugins (containernetworking-plugins) + iptables"]
async fn a_chain_attaches_instances_that_reach_each_other_and_a_published_port() -> Result<()> {
    let setup = Setup::new(
        "c4mcni90",
        "10.99.90.0/24",
        r#", {"type": "portmap", "capabilities": {"portMappings": true}}"#,
        &["cni-a", "cni-b"],
    );
    let plugins = vec![PathBuf::from(PLUGINS)];
    let network = setup.open(&plugins).await?;
    ensure!(network.publishes_host_ports(), "portmap takes portMappings");
    let subnet: ipnet::Ipv4Net = "10.99.90.0/24".parse()?;
    let host_port = c4m_testkit::free_port();
    let ports = [HostPort {
        name: String::new(),
        host_port,
        container_port: 7000,
        protocol: "tcp".into(),
        host_ip: None,
    }];

    let a = network
        .attach_with_host_ports("cni-a", "shop", &default_vpc(), &ports)
        .await?;
    ensure!(subnet.contains(&a.address), "{} in {subnet}", a.address);
    ensure!(a.gateway == Ipv4Addr::new(10, 99, 90, 1) && a.prefix_len == 24);
    ensure!(
        link_exists(&a.host_interface),
        "host veth {}",
        a.host_interface
    );
    let resolv = std::fs::read_to_string(&a.resolv_conf)?;
    ensure!(
        resolv.contains("nameserver 10.99.90.1\n")
            && resolv.contains("search shop.svc.cluster.local"),
        "{resolv}"
    );
    network.check("cni-a").await?;
    let portmap_chain = portmap_chain_of("cni-a").context("portmap made a chain for cni-a")?;
    ensure!(nat_chain_exists(&portmap_chain));

    let b = network.attach("cni-b", "shop", &default_vpc()).await?;
    ensure!(subnet.contains(&b.address) && b.address != a.address);
    network.check("cni-b").await?;

    // b reaches a over TCP; the host reaches a through its published port,
    // on loopback and on the bridge's address.
    let server = serve_in(&a.network_namespace, a.address, 7000, "from a", 3)?;
    let read = read_from_inside(&b.network_namespace, (a.address, 7000).into())?;
    ensure!(read == "from a", "b read {read:?}");
    for host in [Ipv4Addr::LOCALHOST, a.gateway] {
        let read = read_all((host, host_port).into())
            .with_context(|| format!("connecting to the published {host}:{host_port}"))?;
        ensure!(read == "from a", "{host}:{host_port} read {read:?}");
    }
    server.join().expect("the server thread");

    // A fresh instance (an agent restart) re-adopts both from disk.
    drop(network);
    let network = setup.open(&plugins).await?;
    ensure!(network.attachment("cni-a").await? == Some(a.clone()));
    network.check("cni-b").await?;
    ensure!(
        network
            .attach_with_host_ports("cni-a", "shop", &default_vpc(), &ports)
            .await?
            == a
    );

    // b's default route gone: CHECK says so, and attaching again repairs
    // it. (Not its veth: bridge 1.1.1's DEL finds the addresses whose
    // masquerade rules it removes on eth0, so it would leave them.)
    let deleted = enter_network_namespace(&b.network_namespace, || {
        Command::new("ip")
            .args(["route", "del", "default"])
            .status()
    })??;
    ensure!(deleted.success());
    let error = network.check("cni-b").await.unwrap_err();
    ensure!(
        matches!(
            error,
            Error::CniPlugin {
                command: "CHECK",
                ..
            }
        ),
        "{error}"
    );
    let repaired = network.attach("cni-b", "shop", &default_vpc()).await?;
    network.check("cni-b").await?;
    ensure!(subnet.contains(&repaired.address));

    // DEL leaves nothing: namespaces, veths, addresses, NAT rules, records.
    for (instance, attachment) in [("cni-a", &a), ("cni-b", &repaired)] {
        network.detach(instance).await?;
        ensure!(!attachment.network_namespace.exists());
        ensure!(!attachment.resolv_conf.exists());
        ensure!(!link_exists(&attachment.host_interface));
        let rules = nat_rules_of(instance);
        ensure!(rules.is_empty(), "{instance} left NAT rules: {rules:?}");
        ensure!(network.attachment(instance).await?.is_none());
    }
    ensure!(!nat_chain_exists(&portmap_chain), "{portmap_chain} is gone");
    ensure!(setup.allocations().is_empty(), "{:?}", setup.allocations());
    ensure!(bridge_ports(&setup.bridge).trim().is_empty());
    ensure!(
        std::fs::read_dir(setup.run_dir().join("cni"))?
            .next()
            .is_none()
    );
    network.detach("cni-a").await?;
    network.detach("never-attached").await?;
    ensure!(
        read_all((Ipv4Addr::LOCALHOST, host_port).into()).is_err(),
        "the host port is no longer published"
    );
    Ok(())
}

/// A plugin that answers VERSION, fails ADD with an error object and
/// takes DEL, to see a chain fail half way.
fn refusing_plugin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = r#"#!/bin/sh
cat > /dev/null
case "$CNI_COMMAND" in
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
  ADD) echo '{"cniVersion":"1.0.0","code":107,"msg":"refused","details":"on purpose"}'; exit 1 ;;
  *) ;;
esac
"#;
    let path = bin.join("refuse");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + CNI plugins (containernetworking-plugins) + iptables"]
async fn an_add_failing_half_way_leaves_nothing_and_reports_the_error_object() -> Result<()> {
    let setup = Setup::new(
        "c4mcni91",
        "10.99.91.0/24",
        r#", {"type": "refuse"}"#,
        &["cni-refused"],
    );
    let bin = refusing_plugin(setup.dir.path());
    let network = setup.open(&[bin, PathBuf::from(PLUGINS)]).await?;
    ensure!(!network.publishes_host_ports());

    let error = network
        .attach("cni-refused", "default", &default_vpc())
        .await
        .unwrap_err();
    ensure!(
        error.to_string()
            == "cni plugin refuse ADD for cni-refused: refused: on purpose (code 107)",
        "{error}"
    );
    ensure!(matches!(
        error,
        Error::CniPlugin {
            code: Some(107),
            ..
        }
    ));
    // bridge and host-local ran ADD before it; DEL undid them.
    ensure!(setup.allocations().is_empty(), "{:?}", setup.allocations());
    ensure!(
        bridge_ports(&setup.bridge).trim().is_empty(),
        "{}",
        bridge_ports(&setup.bridge)
    );
    ensure!(nat_rules_of("cni-refused").is_empty());
    ensure!(!setup.run_dir().join("netns/cni-refused").exists());
    ensure!(!setup.run_dir().join("cni/cni-refused.json").exists());
    ensure!(network.attachment("cni-refused").await?.is_none());

    // Another VPC than the default one is refused: the chain is one network.
    let shop = VpcNetwork {
        name: "shop".into(),
        subnet: "10.99.91.0/24".parse()?,
    };
    let error = network
        .attach("cni-shop", "default", &shop)
        .await
        .unwrap_err();
    ensure!(
        error.to_string().contains("vpc shop is not served here"),
        "{error}"
    );
    Ok(())
}

/// The file changes under an attached instance and the agent restarts:
/// the instance's CHECK and DEL run with the configuration its ADD ran
/// with (host-local frees the address where it allocated it), and a new
/// attachment gets the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + CNI plugins (containernetworking-plugins) + iptables"]
async fn check_and_del_run_with_the_configuration_add_ran_with() -> Result<()> {
    let setup = Setup::new("c4mcni94", "10.99.94.0/24", "", &["cni-moved"]);
    let plugins = vec![PathBuf::from(PLUGINS)];
    let network = setup.open(&plugins).await?;
    let attached = network
        .attach("cni-moved", "default", &default_vpc())
        .await?;
    ensure!(
        setup.allocations() == [attached.address.to_string()],
        "{:?}",
        setup.allocations()
    );
    drop(network);

    // host-local's state moves to another directory in the file.
    let old_data = setup.dir.path().join("ipam").display().to_string();
    let new_data = setup.dir.path().join("ipam-moved");
    let text = std::fs::read_to_string(setup.conflist())?;
    ensure!(text.contains(&format!("\"{old_data}\"")));
    std::fs::write(
        setup.conflist(),
        text.replace(
            &format!("\"{old_data}\""),
            &format!("\"{}\"", new_data.display()),
        ),
    )?;
    let network = setup.open(&plugins).await?;
    network.check("cni-moved").await?;
    network.detach("cni-moved").await?;
    ensure!(
        setup.allocations().is_empty(),
        "the old address stays allocated: {:?}",
        setup.allocations()
    );
    ensure!(!new_data.exists(), "DEL ran with the changed file");
    ensure!(nat_rules_of("cni-moved").is_empty());

    let reattached = network
        .attach("cni-moved", "default", &default_vpc())
        .await?;
    let allocated = new_data
        .join("c4m-c4mcni94")
        .join(reattached.address.to_string());
    ensure!(allocated.exists(), "{} exists", allocated.display());
    network.detach("cni-moved").await?;
    ensure!(!allocated.exists());
    Ok(())
}

#[tokio::test]
#[ignore = "needs root + CNI plugins (containernetworking-plugins) + iptables"]
async fn a_bad_configuration_names_the_file_and_the_field() -> Result<()> {
    require_tools();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.conflist");
    std::fs::write(
        &file,
        r#"{"cniVersion": "1.0.0", "name": "bad", "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local"}}, {"type": "nosuchplugin"}]}"#,
    )?;
    let error = CniNetwork::open(&file, &[PathBuf::from(PLUGINS)], dir.path().join("run"))
        .await
        .err()
        .context("a missing plugin is refused")?
        .to_string();
    ensure!(
        error
            == format!(
                "cni config {}: plugins[1].type: plugin \"nosuchplugin\" not found in {PLUGINS} \
                 (is containernetworking-plugins installed, or --cni-bin-dir right?)",
                file.display()
            ),
        "{error}"
    );

    // A plugin that does not speak the list's version is found at open.
    std::fs::write(
        &file,
        r#"{"cniVersion": "0.4.0", "name": "old", "plugins": [{"type": "refuse"}]}"#,
    )?;
    let bin = refusing_plugin(dir.path());
    let script = std::fs::read_to_string(bin.join("refuse"))?.replace("\"0.4.0\",", "");
    std::fs::write(bin.join("refuse"), script)?;
    let error = CniNetwork::open(&file, &[bin], dir.path().join("run"))
        .await
        .err()
        .context("a version the plugin lacks is refused")?
        .to_string();
    ensure!(
        error.contains("cniVersion: plugin refuse")
            && error.contains("does not speak 0.4.0 (it speaks 1.0.0)"),
        "{error}"
    );
    Ok(())
}
