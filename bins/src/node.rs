//! A node: its flags, and the agent they compose (`c4m up`, `c4m agent`,
//! `c4m-agent`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use c4m_agent::{
    Agent, AgentConfig, CniConfig, DNS_PORT, GatewayConfig, HollowAgents, HollowConfig,
    IngressPorts, NetworkConfig, RestartBackoff, StorageConfig,
};
use c4m_api::Credentials;
use clap::Args;

use crate::cli::{data_dir, parse_duration, parse_key_value, shutdown_on_signal};

/// A node's flags, shared by `c4m up`, `c4m agent` and `c4m-agent`.
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
    /// so one manifest runs on nodes of different drivers. `auto`: the first
    /// container driver the node offers (oci, containerd, docker, cri), and
    /// host processes (`process`) only on a node that offers none.
    #[arg(long, default_value = c4m_core::AUTO_DRIVER)]
    default_driver: String,
    /// Docker Engine socket: the `docker` driver is offered when an engine
    /// answers there (probed at start, never required).
    #[arg(long, default_value = "/var/run/docker.sock")]
    docker_socket: PathBuf,
    /// Run the edge gateway on this node: Ingresses (class `c4m`) and
    /// Gateway API routes (GatewayClass `c4m`), served on the node's
    /// address.
    #[arg(long)]
    gateway: bool,
    /// The port Ingresses are served on over HTTP.
    #[arg(long, default_value_t = 80, requires = "gateway")]
    gateway_http_port: u16,
    /// The port Ingresses with `tls` are served on over HTTPS.
    #[arg(long, default_value_t = 443, requires = "gateway")]
    gateway_https_port: u16,
    /// Serve the gateway's `/metrics` and `/ready` here, to callers with the
    /// cluster token.
    #[arg(long, value_name = "ADDR", requires = "gateway")]
    gateway_admin: Option<SocketAddr>,
    /// Serve this node's local volumes as a CSI driver (`c4m.io/local`:
    /// Identity, Controller and Node services) on this unix socket.
    #[arg(long, value_name = "PATH")]
    csi_socket: Option<PathBuf>,
    /// Register an external CSI driver NAME=SOCKET (repeatable):
    /// PersistentVolumes with `spec.csi.driver: NAME` are staged and
    /// published on this node through the driver at SOCKET.
    #[arg(long = "csi-driver", value_name = "NAME=SOCKET", value_parser = parse_key_value)]
    csi_drivers: Vec<(String, String)>,
}

/// The cluster's DNS domain: the control plane answers services as
/// `NAME.NAMESPACE.svc.<domain>` (and as `NAME.NAMESPACE.svc.c4m`), and
/// instances' `resolv.conf` searches it. Every node and control plane of a
/// cluster must say the same.
#[derive(Args, Clone)]
pub struct ClusterFlags {
    /// The cluster's DNS domain.
    #[arg(long, default_value = c4m_mesh::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
}

/// The flags of `c4m agent` and `c4m-agent`.
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
    /// With --hollow: an instance that does not restart (`restartPolicy`
    /// Never or OnFailure, a Job's) exits 0 this long after it starts,
    /// e.g. 1s; without it, such an instance runs until deleted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "hollow")]
    hollow_run_for: Option<std::time::Duration>,
    #[command(flatten)]
    node: NodeFlags,
    #[command(flatten)]
    cluster: ClusterFlags,
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

/// The agent a node's flags describe, its state in `dir`: its image store
/// opened once, for the drivers and the HTTP server alike.
pub async fn bind_agent(
    dir: &Path,
    node: &NodeFlags,
    cluster: &ClusterFlags,
    control_plane: String,
    token: Option<String>,
) -> Result<Agent> {
    let config = agent_config(dir, node, cluster, control_plane, token)?;
    let images = Agent::image_store(&config)?;
    let extensions = Agent::detect(&config, &images).await?;
    Ok(Agent::bind(config, extensions, images).await?)
}

fn agent_config(
    dir: &Path,
    node: &NodeFlags,
    cluster: &ClusterFlags,
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
            cluster_domain: cluster.cluster_domain.clone(),
        }),
        docker_socket: Some(node.docker_socket.clone()),
        containerd_socket: Some(node.containerd_socket.clone()),
        cri_socket: node.cri_socket.clone(),
        restart_backoff: RestartBackoff::default(),
        // Both binaries that run an agent (`c4m`, `c4m-agent`) start as a
        // pod's namespace holder when asked, first thing in `main`.
        pod_holder: std::env::current_exe().ok(),
        gateway: node.gateway.then_some(GatewayConfig {
            ingress_ports: IngressPorts {
                http: node.gateway_http_port,
                https: node.gateway_https_port,
            },
            bind_ip: node.address,
            admin: node.gateway_admin,
        }),
        storage: StorageConfig {
            csi_socket: node.csi_socket.clone(),
            csi_drivers: node
                .csi_drivers
                .iter()
                .map(|(name, socket)| (name.clone(), PathBuf::from(socket)))
                .collect(),
            ..StorageConfig::default()
        },
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

/// Runs a node agent (or hollow ones) until SIGINT or SIGTERM: `c4m agent`
/// and `c4m-agent`.
pub async fn run_agent(args: AgentArgs, credentials: Option<Credentials>) -> Result<()> {
    let token = credentials.as_ref().map(Credentials::bearer);
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
            run_for: args.hollow_run_for,
        })?;
        hollow.run(shutdown_on_signal()).await?;
        return Ok(());
    }
    let dir = data_dir(args.data_dir, "agent")?;
    let agent = bind_agent(&dir, &args.node, &args.cluster, args.control_plane, token).await?;
    agent.run(shutdown_on_signal()).await?;
    Ok(())
}
