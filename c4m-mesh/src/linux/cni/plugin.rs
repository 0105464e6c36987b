//! Running one CNI plugin (CNI spec 1.0.0, "Execution protocol"): the
//! command and its arguments in the environment, the configuration on
//! stdin, a result or an error object on stdout.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use c4m_core::BoxError;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::config::{NetworkConfigList, PluginConfig};
use crate::HostPort;
use crate::{Error, Result};

/// How long a plugin may take before it is killed and counted failed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach it (tolerant of what is already gone).
    Del,
    /// Check that an attachment is as ADD left it.
    Check,
    /// Ask the plugin which `cniVersion`s it speaks.
    Version,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// What a command is about: the container, its namespace and interface.
pub(crate) struct Target<'a> {
    /// `CNI_CONTAINERID`.
    pub(crate) container: &'a str,
    /// `CNI_NETNS`; None when the namespace is gone (DEL only).
    pub(crate) netns: Option<&'a Path>,
    /// `CNI_IFNAME`.
    pub(crate) ifname: &'a str,
    /// `CNI_PATH`: the plugin directories, `:`-separated.
    pub(crate) cni_path: &'a str,
}

/// The configuration a plugin of `list` gets on stdin: its own object
/// with the list's `name` and `cniVersion`, the previous result and the
/// runtime values of the capabilities it asks for.
pub(crate) fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    host_ports: &[HostPort],
) -> Value {
    let mut config = plugin.config.clone();
    config.insert("name".into(), Value::String(list.name.clone()));
    config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev_result {
        config.insert("prevResult".into(), prev.clone());
    }
    let mut runtime = Map::new();
    if plugin.capabilities.contains("portMappings") && !host_ports.is_empty() {
        runtime.insert(
            "portMappings".into(),
            serde_json::to_value(host_ports).unwrap_or_default(),
        );
    }
    if !runtime.is_empty() {
        config.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(config)
}

/// Runs `plugin` for `command`; returns what it printed on success (the
/// result for ADD and VERSION, nothing for DEL and CHECK).
pub(crate) async fn run(
    plugin: &PluginConfig,
    command: Command,
    target: &Target<'_>,
    stdin: &Value,
) -> Result<Vec<u8>> {
    let error = |code: Option<u32>, message: String, source: Option<BoxError>| Error::CniPlugin {
        plugin: plugin.plugin_type.clone(),
        command: command.as_str(),
        container: target.container.to_string(),
        code,
        message,
        source,
    };
    let failed = |code: Option<u32>, message: String| error(code, message, None);
    let input =
        serde_json::to_vec(stdin).map_err(|e| error(None, "encoding".into(), Some(e.into())))?;
    let mut child = tokio::process::Command::new(&plugin.binary)
        .env_clear()
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", target.container)
        .env(
            "CNI_NETNS",
            target.netns.map(Path::as_os_str).unwrap_or_default(),
        )
        .env("CNI_IFNAME", target.ifname)
        .env("CNI_PATH", target.cni_path)
        // iptables (portmap, bridge's ipMasq) is found through PATH.
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            error(
                None,
                format!("running {}", plugin.binary.display()),
                Some(e.into()),
            )
        })?;
    let mut pipe = child.stdin.take();
    let write = async move {
        if let Some(pipe) = pipe.as_mut() {
            // A plugin that exits without reading all of it fails below.
            let _ = pipe.write_all(&input).await;
        }
        drop(pipe);
    };
    let (_, output) = tokio::time::timeout(PLUGIN_TIMEOUT, async {
        tokio::join!(write, child.wait_with_output())
    })
    .await
    .map_err(|_| failed(None, format!("no answer in {PLUGIN_TIMEOUT:?}; killed")))?;
    let output = output.map_err(|e| error(None, "waiting for it".into(), Some(e.into())))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(
        match serde_json::from_slice::<ErrorObject>(&output.stdout) {
            Ok(error) => {
                let details = match error.details.as_deref() {
                    Some(details) if !details.is_empty() => format!(": {details}"),
                    _ => String::new(),
                };
                failed(
                    Some(error.code),
                    format!("{}{details} (code {})", error.msg, error.code),
                )
            }
            Err(_) => failed(
                None,
                format!(
                    "{} without an error object: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ),
        },
    )
}

/// The error object a failing plugin prints.
#[derive(Debug, Deserialize)]
struct ErrorObject {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: Option<String>,
}

/// The `cniVersion`s a plugin speaks (its VERSION answer).
pub(crate) fn supported_versions(output: &[u8]) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct VersionResult {
        #[serde(rename = "supportedVersions")]
        supported_versions: Vec<String>,
    }
    serde_json::from_slice::<VersionResult>(output)
        .ok()
        .map(|v| v.supported_versions)
}

/// The parts of an ADD result c4m uses (unknown fields are ignored, as
/// later spec versions may add some).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CniResult {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Debug, Clone, Deserialize)]
struct Interface {
    name: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Clone, Deserialize)]
struct IpConfig {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
struct Route {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Dns {
    #[serde(default)]
    nameservers: Vec<IpAddr>,
}

/// What c4m takes from a chain's final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addressing {
    /// The instance's IPv4 address on `ifname`.
    pub(crate) address: Ipv4Addr,
    /// Its prefix length.
    pub(crate) prefix_len: u8,
    /// Where c4m's DNS relay listens for it: the address's gateway (or the
    /// default route's), else the result's first IPv4 name server.
    pub(crate) gateway: Ipv4Addr,
    /// The last host-side interface listed (the veth of bridge or ptp).
    pub(crate) host_interface: String,
}

impl CniResult {
    /// Reads a result the way the spec writes it.
    pub(crate) fn parse(value: &Value) -> std::result::Result<CniResult, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("not a CNI result: {e}"))
    }

    /// Whether the result gives any IPv6 address.
    pub(crate) fn has_ipv6(&self) -> bool {
        self.ips.iter().any(|ip| matches!(ip.address, IpNet::V6(_)))
    }

    /// The IPv4 addressing of interface `ifname` in the sandbox.
    pub(crate) fn addressing(&self, ifname: &str) -> std::result::Result<Addressing, String> {
        let on_ifname = |ip: &&IpConfig| match ip.interface {
            Some(index) => self
                .interfaces
                .get(index)
                .is_some_and(|i| i.name == ifname && !i.sandbox.is_empty()),
            None => true,
        };
        let (ip, address) = self
            .ips
            .iter()
            .filter(on_ifname)
            .find_map(|ip| match ip.address {
                IpNet::V4(net) => Some((ip, net)),
                IpNet::V6(_) => None,
            })
            .ok_or_else(|| format!("gives {ifname} no IPv4 address (c4m's instances need one)"))?;
        let default_route = self
            .routes
            .iter()
            .find_map(|route| match (route.dst, route.gw) {
                (IpNet::V4(dst), Some(IpAddr::V4(gw))) if dst.prefix_len() == 0 => Some(gw),
                _ => None,
            });
        let name_server = self.dns.nameservers.iter().find_map(|ns| match ns {
            IpAddr::V4(ns) => Some(*ns),
            IpAddr::V6(_) => None,
        });
        let gateway = match ip.gateway {
            Some(IpAddr::V4(gateway)) => Some(gateway),
            _ => None,
        }
        .or(default_route)
        .or(name_server)
        .ok_or_else(|| {
            format!(
                "gives {} neither a gateway nor a name server, so c4m's DNS cannot be reached",
                address.addr()
            )
        })?;
        let host_interface = self
            .interfaces
            .iter()
            .rev()
            .find(|i| i.sandbox.is_empty())
            .map(|i| i.name.clone())
            .unwrap_or_default();
        Ok(Addressing {
            address: address.addr(),
            prefix_len: address.prefix_len(),
            gateway,
            host_interface,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_bridge_result_gives_address_gateway_and_host_veth() {
        let result = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni-c4m", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 2}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.99.0.1"], "search": ["x"]}
        });
        let addressing = CniResult::parse(&result)
            .unwrap()
            .addressing("eth0")
            .unwrap();
        assert_eq!(
            addressing,
            Addressing {
                address: Ipv4Addr::new(10, 99, 0, 5),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 99, 0, 1),
                host_interface: "veth1234".into(),
            }
        );
    }

    #[test]
    fn the_gateway_falls_back_to_the_default_route_and_results_can_be_unusable() {
        let routed = serde_json::json!({
            "ips": [{"address": "10.99.0.5/24"}],
            "routes": [{"dst": "10.0.0.0/8", "gw": "10.99.0.9"}, {"dst": "0.0.0.0/0", "gw": "10.99.0.254"}]
        });
        let addressing = CniResult::parse(&routed)
            .unwrap()
            .addressing("eth0")
            .unwrap();
        assert_eq!(addressing.gateway, Ipv4Addr::new(10, 99, 0, 254));
        assert_eq!(addressing.host_interface, "");

        let v6_only = serde_json::json!({"ips": [{"address": "fd00::5/64", "gateway": "fd00::1"}]});
        let error = CniResult::parse(&v6_only)
            .unwrap()
            .addressing("eth0")
            .unwrap_err();
        assert!(error.contains("no IPv4 address"), "{error}");
        let no_gateway = serde_json::json!({"ips": [{"address": "10.99.0.5/24"}]});
        let error = CniResult::parse(&no_gateway)
            .unwrap()
            .addressing("eth0")
            .unwrap_err();
        assert!(
            error.contains("neither a gateway nor a name server"),
            "{error}"
        );
        let error = CniResult::parse(&serde_json::json!({"ips": "x"})).unwrap_err();
        assert!(error.contains("not a CNI result"), "{error}");
    }

    #[test]
    fn stdin_carries_name_version_prev_result_and_asked_capabilities_only() {
        let plugin = |capabilities: &[&str]| PluginConfig {
            plugin_type: "portmap".into(),
            binary: "/usr/lib/cni/portmap".into(),
            capabilities: capabilities
                .iter()
                .map(|c| c.to_string())
                .collect::<BTreeSet<_>>(),
            config: serde_json::from_str(r#"{"type":"portmap","snat":true}"#).unwrap(),
        };
        let list = NetworkConfigList {
            file: "/x.conflist".into(),
            cni_version: "1.0.0".into(),
            name: "c4m-net".into(),
            disable_check: false,
            plugins: vec![],
            raw: Value::Null,
        };
        let ports = [HostPort {
            name: String::new(),
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }];
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        let stdin = plugin_stdin(&list, &plugin(&["portMappings"]), Some(&prev), &ports);
        assert_eq!(
            stdin,
            serde_json::json!({
                "type": "portmap", "snat": true, "name": "c4m-net", "cniVersion": "1.0.0",
                "prevResult": prev,
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
                ]}
            })
        );
        let without = plugin_stdin(&list, &plugin(&[]), None, &ports);
        assert!(without.get("runtimeConfig").is_none());
        assert!(without.get("prevResult").is_none());
    }
}
