//! Composes the agent: supervisor, control-plane session, HTTP server.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use c4m_api::agent::Driver;
use c4m_core::{
    CniNetwork, ContainerRuntime, ContainerdRuntime, CriRuntime, DockerRuntime, ImageStore,
    LinuxNetwork, Network, OciRuntime, ProcessRuntime, VxlanOverlay, find_oci_binaries,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::network::{InstanceNetwork, NetworkConfig};
use crate::overlay::keep_overlay;
use crate::server::{ServerState, router};
use crate::session::{ControlPlaneChannel, NetworkFeeds, Session, register_request};
use crate::supervisor::Supervisor;
use crate::{Error, Result};

/// How an agent identifies its node and reaches the control plane.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (a DNS-1123 subdomain).
    pub node_name: String,
    /// gRPC URL of the control plane (`http://127.0.0.1:8141`).
    pub control_plane: String,
    /// Cluster token; None when the control plane runs in dev mode.
    pub token: Option<String>,
    /// Where drivers keep container state and logs.
    pub data_dir: PathBuf,
    /// CPU the node offers, in millicores.
    pub cpu_millis: u64,
    /// Memory the node offers, in bytes.
    pub memory_bytes: u64,
    /// Most instances the node runs at once.
    pub max_instances: u64,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Address instances on this node are reached at.
    pub address: IpAddr,
    /// Where the agent's HTTP server listens (port 0 picks one).
    pub listen: SocketAddr,
    /// The driver that runs instances naming none (`runtimeClassName`
    /// unset); it must be one of the node's drivers.
    pub default_driver: String,
    /// Instance networking (VPCs, an address per instance) for drivers
    /// that take a network namespace; None leaves it off.
    pub network: Option<NetworkConfig>,
    /// A Docker Engine socket to offer the `docker` driver on, if an
    /// engine answers there (only probed, never required).
    pub docker_socket: Option<PathBuf>,
    /// containerd's socket: the `containerd` driver is offered when a
    /// containerd answers there. None: not probed.
    pub containerd_socket: Option<PathBuf>,
    /// The socket of a CRI runtime (CRI-O, containerd) on this node; when
    /// set, the agent offers the `cri` driver over it.
    pub cri_socket: Option<PathBuf>,
}

/// An agent with its HTTP listener bound, ready to [`run`](Self::run).
pub struct Agent {
    config: AgentConfig,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    images: Arc<ImageStore>,
    listener: TcpListener,
}

impl Agent {
    /// The drivers that work on this node: `process` always; `oci` when
    /// an OCI runtime (runc or crun) and conmon are installed and the
    /// agent may use namespaces and cgroups (root), running containers from
    /// `images`; `docker` when a Docker Engine answers on
    /// [`AgentConfig::docker_socket`]; `containerd` when a containerd answers
    /// on [`AgentConfig::containerd_socket`] (images move there from `images`);
    /// `cri` when a CRI socket is configured (a runtime that does not
    /// answer there is an error: it was asked for).
    pub async fn detect_runtimes(
        config: &AgentConfig,
        images: &Arc<ImageStore>,
    ) -> Result<Vec<Arc<dyn ContainerRuntime>>> {
        let process = ProcessRuntime::new(config.data_dir.join("process"), config.address)?;
        let mut runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(process)];
        if find_oci_binaries().is_none() {
            tracing::info!("oci driver unavailable: install runc (or crun) and conmon");
        } else if !nix::unistd::Uid::effective().is_root() {
            tracing::info!("oci driver unavailable: the agent does not run as root");
        } else {
            match OciRuntime::new(&config.data_dir.join("oci"), Arc::clone(images)) {
                Ok(oci) => runtimes.push(Arc::new(oci)),
                Err(e) => tracing::warn!(error = %e, "oci driver unavailable"),
            }
        }
        if let Some(docker) = Self::detect_docker(config).await {
            runtimes.push(Arc::new(docker));
        }
        if let Some(socket) = config.containerd_socket.as_deref() {
            if !socket.exists() {
                tracing::info!(socket = %socket.display(), "containerd driver unavailable: no socket");
            } else {
                let data_dir = config.data_dir.join("containerd");
                match ContainerdRuntime::connect(socket, &data_dir, Arc::clone(images)).await {
                    Ok(containerd) => runtimes.push(Arc::new(containerd)),
                    Err(e) => tracing::warn!(error = %e, "containerd driver unavailable"),
                }
            }
        }
        if let Some(socket) = &config.cri_socket {
            let cri = CriRuntime::connect(socket, &config.data_dir.join("cri"), config.address)
                .await
                .map_err(|e| Error::Config(format!("the cri driver (--cri-socket): {e}")))?;
            tracing::info!(runtime = %cri.version(), "cri driver ready");
            runtimes.push(Arc::new(cri));
        }
        Ok(runtimes)
    }

    /// The `docker` driver, if an engine answers on the configured socket;
    /// its containers are labelled with this node, whose address their
    /// (host network) ports are reached at.
    async fn detect_docker(config: &AgentConfig) -> Option<DockerRuntime> {
        let socket = config.docker_socket.as_ref()?;
        if !socket.exists() {
            tracing::info!(socket = %socket.display(), "docker driver unavailable: no socket");
            return None;
        }
        match DockerRuntime::connect(socket).await {
            Ok(docker) => {
                tracing::info!(version = %docker.version(), "docker driver available");
                Some(
                    docker
                        .for_node(&config.node_name)
                        .with_host_address(config.address),
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "docker driver unavailable");
                None
            }
        }
    }

    /// The node's image store (`<data_dir>/images`), which the `oci` driver
    /// runs containers from and the HTTP server manages. Open it once per
    /// agent: opening clears the store's temporary files.
    pub fn image_store(config: &AgentConfig) -> Result<Arc<ImageStore>> {
        Ok(Arc::new(ImageStore::open(config.data_dir.join("images"))?))
    }

    /// Binds the agent's HTTP server, which manages `images`.
    pub async fn bind(
        config: AgentConfig,
        runtimes: Vec<Arc<dyn ContainerRuntime>>,
        images: Arc<ImageStore>,
    ) -> Result<Self> {
        if runtimes.is_empty() {
            return Err(Error::Config(
                "no container driver works on this node".into(),
            ));
        }
        // The default driver goes first: the supervisor runs instances that
        // name no driver with the first.
        let mut runtimes = runtimes;
        let Some(default) = runtimes
            .iter()
            .position(|r| r.name() == config.default_driver)
        else {
            let offered: Vec<&str> = runtimes.iter().map(|r| r.name()).collect();
            return Err(Error::Config(format!(
                "the default driver {:?} does not work on this node (it offers {})",
                config.default_driver,
                offered.join(", ")
            )));
        };
        runtimes[..=default].rotate_right(1);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                context: format!("cannot listen on {}", config.listen),
                source,
            })?;
        Ok(Agent {
            config,
            runtimes,
            images,
            listener,
        })
    }

    /// Where the agent's HTTP server listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Runs until `shutdown`. Containers keep running after the agent stops;
    /// the next agent on this node adopts them.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let http_addr = self.http_addr();
        let (assignments_tx, assignments_rx) = watch::channel(None);
        let (statuses_tx, statuses_rx) = watch::channel(Arc::new(Vec::new()));
        let directory = Arc::new(Mutex::new(HashMap::new()));
        let (dns_tx, dns_rx) = watch::channel(String::new());
        let mut register = register_request(
            &self.config.node_name,
            self.config.cpu_millis,
            self.config.memory_bytes,
            self.config.max_instances,
            &self.config.labels,
            self.config.address,
        );
        register.drivers = self
            .runtimes
            .iter()
            .map(|r| Driver {
                name: r.name().to_string(),
                version: r.version(),
            })
            .collect();
        register.default_driver = self.config.default_driver.clone();
        register.agent_url = format!("http://{http_addr}");
        let (slice_tx, slice_rx) = watch::channel(None);
        let (peers_tx, peers_rx) = watch::channel(Arc::default());
        let mut overlay_keeper = None;
        let network = match &self.config.network {
            Some(config) => {
                register.instance_network = true;
                let run_dir = self.config.data_dir.join("network");
                // A CNI chain is one network that spans nodes by its own
                // means (its plugins'); c4m's bridges span them over the
                // overlay.
                let (network, overlay): (Arc<dyn Network>, Option<VxlanOverlay>) = match &config.cni
                {
                    Some(cni) => {
                        let network =
                            CniNetwork::open(&cni.config_file, &cni.bin_dirs, run_dir).await?;
                        tracing::info!(network = network.name(), config = %cni.config_file.display(), "instances join a cni network");
                        (Arc::new(network), None)
                    }
                    None => {
                        let mut linux = LinuxNetwork::open(run_dir)?;
                        let overlay = open_overlay(self.config.address).await;
                        if let Some(overlay) = &overlay {
                            linux = linux.with_mtu(overlay.mtu());
                        }
                        (Arc::new(linux), overlay)
                    }
                };
                let network = Arc::new(InstanceNetwork::new(
                    network,
                    config.clone(),
                    dns_rx.clone(),
                    slice_rx,
                    shutdown.clone(),
                ));
                overlay_keeper = overlay.map(|overlay| {
                    keep_overlay(overlay, peers_rx, network.local_vpcs(), shutdown.clone())
                });
                Some(network)
            }
            None => None,
        };
        let supervisor = Supervisor {
            runtimes: self.runtimes,
            assignments: assignments_rx,
            statuses: statuses_tx,
            directory: Arc::clone(&directory),
            dns_address: dns_rx,
            network: network.clone(),
        };
        let session = Session {
            channel: ControlPlaneChannel::new(
                &self.config.control_plane,
                self.config.token.as_deref(),
            )?,
            register,
            assignments: assignments_tx,
            statuses: statuses_rx,
            dns_address: dns_tx,
            network: self.config.network.is_some().then_some(NetworkFeeds {
                node_slice: slice_tx,
                peers: peers_tx,
            }),
        };
        let state = Arc::new(ServerState {
            directory,
            images: self.images,
            work_dir: self.config.data_dir.clone(),
            token: self.config.token.clone(),
            shutdown: shutdown.clone(),
            network,
        });
        let server = axum::serve(self.listener, router(state))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tracing::info!(node = %self.config.node_name, %http_addr, "agent running");
        let (_, _, served, _) = tokio::join!(
            supervisor.run(shutdown.clone()),
            session.run(shutdown.clone()),
            server,
            async {
                if let Some(keeper) = overlay_keeper {
                    keeper.await;
                }
            }
        );
        tracing::info!("agent stopped; its containers keep running");
        served.map_err(|source| Error::Io {
            context: "agent HTTP server failed".into(),
            source,
        })
    }
}

/// The overlay of a node reached at `address`, if it can have one: other
/// nodes cannot reach a loopback (or IPv6, for now) address, and a node
/// without one serves its instances alone.
async fn open_overlay(address: IpAddr) -> Option<VxlanOverlay> {
    let IpAddr::V4(underlay) = address else {
        tracing::warn!(%address, "no overlay: it needs an IPv4 node address");
        return None;
    };
    if underlay.is_loopback() {
        tracing::info!(%address, "no overlay: the node address is loopback, so instances reach only this node's");
        return None;
    }
    match VxlanOverlay::open(underlay).await {
        Ok(overlay) => {
            tracing::info!(%address, mtu = overlay.mtu(), "instances reach other nodes' over the VXLAN overlay");
            Some(overlay)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no overlay: instances reach only this node's");
            None
        }
    }
}
