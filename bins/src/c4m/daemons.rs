//! `c4m up`, `c4m control`, `c4m agent`: compose the libraries and run
//! until SIGINT or SIGTERM, then shut down gracefully.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use c4m_agent::{
    Agent, AgentConfig, CniConfig, DNS_PORT, HollowAgents, HollowConfig, NetworkConfig,
};
use c4m_api::Credentials;
use c4m_control::{ControlPlane, ControlPlaneConfig, TlsIdentity};
use c4m_store::RedbStore;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::commands::{ClientConfig, Connection, default_home};

/// Control plane flags shared by `up` and `control`.
#[derive(Args, Clone)]
pub struct ControlFlags {
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8140")]
    api: SocketAddr,
    /// gRPC address agents dial.
    #[arg(long, default_value = "127.0.0.1:8141")]
    grpc: SocketAddr,
    /// DNS address (UDP and TCP) for NAME.NAMESPACE.svc.c4m.
    #[arg(long, default_value = "127.0.0.1:8153")]
    dns: SocketAddr,
    /// Run without authentication (development only).
    #[arg(long)]
    dev: bool,
    /// Silence after which a node is marked NotReady.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_grace: Duration,
    /// Time a node stays NotReady before its instances are evicted.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    eviction_delay: Duration,
    /// How often agents send heartbeats.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    heartbeat: Duration,
}

/// Node flags shared by `up` and `agent`.
#[derive(Args, Clone)]
pub struct NodeFlags {
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// CPUs the node offers (default: all of the machine's).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory the node offers, e.g. 1Gi (default: the machine's).
    #[arg(long)]
    memory: Option<String>,
    /// Most instances the node runs.
    #[arg(long, default_value_t = 110)]
    max_instances: u64,
    /// Node label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// Address instances on this node are reached at.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Address of the agent's HTTP server (logs, exec, port-forward).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Give instances of drivers that take a network namespace (`oci`)
    /// their own address in a VPC (needs root).
    #[arg(long)]
    instance_network: bool,
    /// CIDR of the default VPC (when no `Vpc` object named `default` says).
    #[arg(long, default_value = "10.88.0.0/16")]
    default_vpc_cidr: ipnet::Ipv4Net,
    /// Attach instances with this CNI network configuration list
    /// (`.conflist`) instead of c4m's bridges: one network, the default
    /// VPC only (implies --instance-network).
    #[arg(long)]
    cni_config: Option<PathBuf>,
    /// Where the CNI plugins are (repeatable, searched in order).
    #[arg(long = "cni-bin-dir", default_value = "/usr/lib/cni")]
    cni_bin_dirs: Vec<PathBuf>,
    /// containerd's socket: the `containerd` driver is offered when a
    /// containerd answers there (`runtimeClassName: containerd`).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// Socket of a CRI runtime (CRI-O, containerd) on this node: offers the
    /// `cri` driver (`runtimeClassName: cri`).
    #[arg(long, value_name = "PATH")]
    cri_socket: Option<PathBuf>,
    /// The driver that runs instances naming none (no `runtimeClassName`),
    /// so one manifest runs on nodes of different drivers.
    #[arg(long, default_value = c4m_core::DEFAULT_DRIVER)]
    default_driver: String,
    /// Docker Engine socket: the `docker` driver is offered when an engine
    /// answers there (probed at start, never required).
    #[arg(long, default_value = "/var/run/docker.sock")]
    docker_socket: PathBuf,
}

/// `c4m up`.
#[derive(Args)]
pub struct UpArgs {
    /// Where state lives (store, instances, logs, credentials).
    #[arg(long, env = "C4M_HOME")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    control: ControlFlags,
    #[command(flatten)]
    node: NodeFlags,
}

/// `c4m control`.
#[derive(Args)]
pub struct ControlArgs {
    /// Where the store and credentials live.
    #[arg(long, env = "C4M_HOME")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    control: ControlFlags,
}

/// `c4m agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// Where instance state and logs live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC URL of the control plane.
    #[arg(
        long,
        env = "C4M_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8141"
    )]
    control_plane: String,
    /// Simulate N hollow nodes named NAME-0 to NAME-(N-1), each offering
    /// the node flags' resources, that report every assigned instance
    /// Running and Ready without starting anything (for scale tests).
    #[arg(long, value_name = "N", conflicts_with = "data_dir")]
    hollow: Option<usize>,
    #[command(flatten)]
    node: NodeFlags,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 10s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

pub(crate) fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Credentials a control plane keeps in its data dir.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCredentials {
    access_token: String,
    secret_key: String,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(16))
        .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The credentials a control plane accepts: from flags/env, else from its
/// data dir, else new ones saved there (mode 0600).
fn control_credentials(data_dir: &Path, connection: &Connection) -> Result<Credentials> {
    if let Some(access_token) = &connection.access_token {
        return Ok(Credentials {
            access_token: access_token.clone(),
            secret_key: connection.secret_key.clone().unwrap_or_default(),
        });
    }
    let path = data_dir.join("credentials.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let stored: StoredCredentials = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid credentials JSON", path.display()))?;
        return Ok(Credentials {
            access_token: stored.access_token,
            secret_key: stored.secret_key,
        });
    }
    let stored = StoredCredentials {
        access_token: format!("c4m{}", random_hex(8)),
        secret_key: random_hex(24),
    };
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)?;
    Ok(Credentials {
        access_token: stored.access_token,
        secret_key: stored.secret_key,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The API's TLS certificate and key, kept in the data dir (`api-tls.crt`,
/// `api-tls.key`) so clients' kubeconfigs stay valid across restarts;
/// generated self-signed for loopback, the bound address and the host
/// name on first start.
fn api_tls_identity(dir: &Path, api: SocketAddr) -> Result<TlsIdentity> {
    let (cert_path, key_path) = (dir.join("api-tls.crt"), dir.join("api-tls.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok(TlsIdentity {
            certificate_pem: std::fs::read_to_string(&cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?,
            private_key_pem: std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?,
        });
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !api.ip().is_unspecified() && !api.ip().is_loopback() {
        names.push(api.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_ascii_lowercase());
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("cannot generate the API's TLS certificate")?;
    let identity = TlsIdentity {
        certificate_pem: generated.cert.pem(),
        private_key_pem: generated.signing_key.serialize_pem(),
    };
    write_private(&key_path, identity.private_key_pem.as_bytes())?;
    write_private(&cert_path, identity.certificate_pem.as_bytes())?;
    Ok(identity)
}

fn data_dir(flag: Option<PathBuf>, sub: &str) -> Result<PathBuf> {
    let dir = match flag {
        Some(dir) => dir,
        None => default_home()?.join(sub),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

async fn bind_control(
    dir: &Path,
    flags: &ControlFlags,
    connection: &Connection,
) -> Result<(ControlPlane, Option<Credentials>)> {
    let store = RedbStore::open(&dir.join("store.redb"))
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let credentials = if flags.dev {
        None
    } else {
        Some(control_credentials(dir, connection)?)
    };
    let config = ControlPlaneConfig {
        api_addr: flags.api,
        grpc_addr: flags.grpc,
        dns_addr: Some(flags.dns),
        token: credentials.as_ref().map(Credentials::bearer),
        heartbeat_interval: flags.heartbeat,
        node_grace: flags.node_grace,
        eviction_delay: flags.eviction_delay,
        api_tls: Some(api_tls_identity(dir, flags.api)?),
        ..ControlPlaneConfig::default()
    };
    let control = ControlPlane::bind(config, Arc::new(store)).await?;
    let client = ClientConfig {
        endpoint: format!("http://{}", control.api_addr()),
        access_token: credentials
            .as_ref()
            .map(|c| c.access_token.clone())
            .unwrap_or_default(),
        secret_key: credentials
            .as_ref()
            .map(|c| c.secret_key.clone())
            .unwrap_or_default(),
    };
    write_private(
        &dir.join("client.json"),
        &serde_json::to_vec_pretty(&client)?,
    )?;
    eprintln!(
        "c4m control plane: API http://{0} (https://{0} for kubectl) · agents http://{1} · DNS {2} · client config {3}",
        control.api_addr(),
        control.grpc_addr(),
        flags.dns,
        dir.join("client.json").display()
    );
    Ok((control, credentials))
}

/// A node's name and what it offers, from the flags or the machine.
struct NodeOffer {
    name: String,
    cpu_millis: u64,
    memory_bytes: u64,
}

fn node_offer(node: &NodeFlags) -> Result<NodeOffer> {
    let name = match &node.name {
        Some(name) => name.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_else(|_| "node".into()),
    };
    let cpu_millis = match &node.cpu {
        Some(cpu) => c4m_core::parse_cpu_millis(cpu).with_context(|| "--cpu")?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000,
    };
    let memory_bytes = match &node.memory {
        Some(memory) => c4m_core::parse_memory_bytes(memory).with_context(|| "--memory")?,
        None => machine_memory().unwrap_or(1 << 30),
    };
    if cpu_millis == 0 || memory_bytes == 0 {
        bail!("--cpu and --memory must be more than zero");
    }
    Ok(NodeOffer {
        name,
        cpu_millis,
        memory_bytes,
    })
}

fn agent_config(
    dir: &Path,
    node: &NodeFlags,
    control_plane: String,
    token: Option<String>,
) -> Result<AgentConfig> {
    let NodeOffer {
        name,
        cpu_millis,
        memory_bytes,
    } = node_offer(node)?;
    Ok(AgentConfig {
        node_name: name,
        control_plane,
        token,
        data_dir: dir.to_path_buf(),
        cpu_millis,
        memory_bytes,
        max_instances: node.max_instances,
        labels: node.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        address: node.address,
        listen: node.listen,
        default_driver: node.default_driver.clone(),
        network: (node.instance_network || node.cni_config.is_some()).then(|| NetworkConfig {
            default_vpc_cidr: node.default_vpc_cidr,
            dns_port: DNS_PORT,
            host_address: node.address,
            cni: node.cni_config.clone().map(|config_file| CniConfig {
                config_file,
                bin_dirs: node.cni_bin_dirs.clone(),
            }),
        }),
        docker_socket: Some(node.docker_socket.clone()),
        containerd_socket: Some(node.containerd_socket.clone()),
        cri_socket: node.cri_socket.clone(),
    })
}

fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `c4m up`.
pub async fn up(args: UpArgs, connection: &Connection) -> Result<()> {
    let dir = data_dir(args.data_dir, "")?;
    let (control, credentials) = bind_control(&dir, &args.control, connection).await?;
    // `up` is the quickstart: make plain `c4m get ...` find this control plane.
    let default_config = default_home()?.join("client.json");
    if default_config != dir.join("client.json") {
        if let Some(parent) = default_config.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(dir.join("client.json"), &default_config)
            .with_context(|| format!("cannot write {}", default_config.display()))?;
    }
    let config = agent_config(
        &dir.join("agent"),
        &args.node,
        format!("http://{}", control.grpc_addr()),
        credentials.as_ref().map(Credentials::bearer),
    )?;
    let agent = bind_agent(config).await?;
    let shutdown = shutdown_on_signal();
    let (control_result, agent_result) = tokio::join!(control.run(shutdown.clone()), async {
        let result = agent.run(shutdown.clone()).await;
        shutdown.cancel();
        result
    });
    control_result?;
    agent_result?;
    Ok(())
}

/// `c4m control`.
pub async fn control(args: ControlArgs, connection: &Connection) -> Result<()> {
    let dir = data_dir(args.data_dir, "control")?;
    let (control, _) = bind_control(&dir, &args.control, connection).await?;
    control.run(shutdown_on_signal()).await?;
    Ok(())
}

/// `c4m agent`.
pub async fn agent(args: AgentArgs, connection: &Connection) -> Result<()> {
    let token = connection.access_token.as_ref().map(|access| {
        Credentials {
            access_token: access.clone(),
            secret_key: connection.secret_key.clone().unwrap_or_default(),
        }
        .bearer()
    });
    if let Some(count) = args.hollow {
        // Hollow nodes keep no state: no data dir is created.
        let offer = node_offer(&args.node)?;
        let hollow = HollowAgents::new(HollowConfig {
            control_plane: args.control_plane,
            token,
            count,
            name_prefix: offer.name,
            cpu_millis: offer.cpu_millis,
            memory_bytes: offer.memory_bytes,
            max_instances: args.node.max_instances,
            labels: args.node.labels.iter().cloned().collect(),
            address: args.node.address,
        })?;
        hollow.run(shutdown_on_signal()).await?;
        return Ok(());
    }
    let dir = data_dir(args.data_dir, "agent")?;
    let config = agent_config(&dir, &args.node, args.control_plane, token)?;
    let agent = bind_agent(config).await?;
    agent.run(shutdown_on_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
    }
}

/// The agent over `config`: its image store opened once, for the drivers
/// and the HTTP server alike.
async fn bind_agent(config: AgentConfig) -> Result<Agent> {
    let images = Agent::image_store(&config)?;
    let runtimes = Agent::detect_runtimes(&config, &images).await?;
    Ok(Agent::bind(config, runtimes, images).await?)
}
