//! Composes the agent: supervisor, control-plane session, HTTP server.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use c4m_api::agent::Driver;
use c4m_core::ContainerRuntime;
use c4m_image::ImageStore;
use c4m_mesh::{
    CniNetwork, InstanceNetwork, LinuxNetwork, Network, NetworkConfig, Overlay, ServiceRules,
    VxlanOverlay, keep_overlay,
};
use c4m_plugin::NodeExtensions;
use c4m_runtime::DefaultProber;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::claims::ClaimMounts;
use crate::edge::GatewayConfig;
use crate::holder::PodHolders;
use crate::objects::NodeObjects;
use crate::pod_etc::PodEtc;
use crate::pod_volumes::PodVolumes;
use crate::server::{ServerState, router};
use crate::service_rules::{self, keep_service_rules};
use crate::session::{ControlPlaneChannel, NetworkFeeds, Session, register_request};
use crate::supervisor::{RestartBackoff, Supervisor};
use crate::volumes::{self, VolumeTimers};
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
    /// unset); it must be one of the node's drivers, or
    /// [`c4m_core::AUTO_DRIVER`]: the first container driver the node
    /// offers (`oci`, `containerd`, `docker`, `cri`), and `process` only on
    /// a node that offers none.
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
    /// How restarts of crashing containers are spaced.
    pub restart_backoff: RestartBackoff,
    /// The program started as each pod's namespace holder, whose IPC (and,
    /// with `shareProcessNamespace`, PID) namespace the pod's containers
    /// join on drivers that take a network namespace: a binary whose `main`
    /// first calls [`crate::run_pod_holder_if_asked`] (the c4m binaries do:
    /// they pass [`std::env::current_exe`]). `None`: each container has its
    /// own, and pods asking `shareProcessNamespace` are refused.
    pub pod_holder: Option<PathBuf>,
    /// Run the edge gateway on this node (Ingresses and Gateway API
    /// routes, fed by the control plane); `None`: not run. The node gets
    /// the label `c4m.io/edge-gateway: "true"`.
    pub gateway: Option<GatewayConfig>,
    /// The node's volumes: CSI drivers served and used, and the volume
    /// manager's timers.
    pub storage: StorageConfig,
}

/// How the node's volume manager runs (see `c4m-agent/src/volumes`).
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    /// Serve the node's local volumes as a CSI driver (`c4m.io/local`) on
    /// this unix socket.
    pub csi_socket: Option<PathBuf>,
    /// External CSI drivers by name (`spec.csi.driver`) and their unix
    /// sockets: PersistentVolumes naming one are staged and published
    /// through it.
    pub csi_drivers: BTreeMap<String, PathBuf>,
    /// How often the manager reports and retries.
    pub timers: VolumeTimers,
}

/// An agent with its HTTP listener bound, ready to [`run`](Self::run).
pub struct Agent {
    config: AgentConfig,
    /// Its drivers (the default first), network and prober.
    extensions: NodeExtensions,
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
    /// Drivers this build leaves out (cargo features of `c4m-agent`) are
    /// not offered.
    #[allow(
        clippy::vec_init_then_push,
        reason = "which pushes there are depends on the build's cargo features"
    )]
    pub async fn detect_runtimes(
        config: &AgentConfig,
        images: &Arc<ImageStore>,
    ) -> Result<Vec<Arc<dyn ContainerRuntime>>> {
        let mut runtimes: Vec<Arc<dyn ContainerRuntime>> = Vec::new();
        #[cfg(feature = "process")]
        runtimes.push(Arc::new(c4m_runtime::ProcessRuntime::new(
            config.data_dir.join("process"),
            config.address,
        )?));
        #[cfg(feature = "oci")]
        Self::detect_oci(config, images, &mut runtimes);
        #[cfg(feature = "docker")]
        if let Some(docker) = Self::detect_docker(config).await {
            runtimes.push(Arc::new(docker));
        }
        #[cfg(feature = "containerd")]
        Self::detect_containerd(config, images, &mut runtimes).await;
        #[cfg(feature = "cri")]
        if let Some(socket) = &config.cri_socket {
            let cri = c4m_runtime::CriRuntime::connect(
                socket,
                &config.data_dir.join("cri"),
                config.address,
            )
            .await
            .map_err(|source| Error::Driver {
                what: "the cri driver (--cri-socket)",
                source,
            })?;
            tracing::info!(runtime = %cri.version(), "cri driver ready");
            runtimes.push(Arc::new(cri));
        }
        let _ = images;
        Ok(runtimes)
    }

    /// The `oci` driver, when an OCI runtime and conmon are installed and
    /// the agent runs as root.
    #[cfg(feature = "oci")]
    fn detect_oci(
        config: &AgentConfig,
        images: &Arc<ImageStore>,
        runtimes: &mut Vec<Arc<dyn ContainerRuntime>>,
    ) {
        use c4m_runtime::{OciRuntime, find_oci_binaries};
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
    }

    /// The `containerd` driver, when a containerd answers on the configured
    /// socket.
    #[cfg(feature = "containerd")]
    async fn detect_containerd(
        config: &AgentConfig,
        images: &Arc<ImageStore>,
        runtimes: &mut Vec<Arc<dyn ContainerRuntime>>,
    ) {
        use c4m_runtime::ContainerdRuntime;
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
    }

    /// The `docker` driver, if an engine answers on the configured socket;
    /// its containers are labelled with this node, whose address their
    /// (host network) ports are reached at.
    #[cfg(feature = "docker")]
    async fn detect_docker(config: &AgentConfig) -> Option<c4m_runtime::DockerRuntime> {
        use c4m_runtime::DockerRuntime;
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

    /// This node's instance network as [`AgentConfig::network`] asks: a
    /// CNI chain, or c4m's bridges joined to other nodes by the VXLAN
    /// overlay (when the node's address is one they can reach). None when
    /// the configuration has no instance network.
    pub async fn open_network(
        config: &AgentConfig,
    ) -> Result<Option<(Arc<dyn Network>, Option<Arc<dyn Overlay>>)>> {
        let Some(network) = &config.network else {
            return Ok(None);
        };
        let run_dir = config.data_dir.join("network");
        // A CNI chain is one network that spans nodes by its own means (its
        // plugins'); c4m's bridges span them over the overlay.
        Ok(Some(match &network.cni {
            Some(cni) => {
                let cni_network = CniNetwork::open(&cni.config_file, &cni.bin_dirs, run_dir)
                    .await?
                    .with_cluster_domain(&network.cluster_domain);
                tracing::info!(network = cni_network.name(), config = %cni.config_file.display(), "instances join a cni network");
                (Arc::new(cni_network), None)
            }
            None => {
                let mut linux =
                    LinuxNetwork::open(run_dir)?.with_cluster_domain(&network.cluster_domain);
                let overlay = open_overlay(config.address).await;
                if let Some(overlay) = &overlay {
                    linux = linux.with_mtu(overlay.mtu());
                }
                (
                    Arc::new(linux),
                    overlay.map(|overlay| Arc::new(overlay) as Arc<dyn Overlay>),
                )
            }
        }))
    }

    /// What this node offers, as its configuration asks: the drivers that
    /// work here ([`Agent::detect_runtimes`]) and its instance network
    /// ([`Agent::open_network`]).
    pub async fn detect(config: &AgentConfig, images: &Arc<ImageStore>) -> Result<NodeExtensions> {
        let mut extensions = NodeExtensions {
            runtimes: Self::detect_runtimes(config, images).await?,
            ..NodeExtensions::default()
        };
        if let Some((network, overlay)) = Self::open_network(config).await? {
            extensions = extensions.with_network(network, overlay);
        }
        Ok(extensions)
    }

    /// Binds the agent's HTTP server, which manages `images`; instances
    /// run through `extensions`' drivers (the configured default among
    /// them) and join its network, whose settings
    /// [`AgentConfig::network`] gives.
    pub async fn bind(
        mut config: AgentConfig,
        mut extensions: NodeExtensions,
        images: Arc<ImageStore>,
    ) -> Result<Self> {
        if extensions.network.is_some() && config.network.is_none() {
            return Err(Error::Config(
                "an instance network was given without its settings (AgentConfig::network)".into(),
            ));
        }
        let runtimes = &mut extensions.runtimes;
        if runtimes.is_empty() {
            return Err(Error::Config(
                "no container driver works on this node".into(),
            ));
        }
        // The default driver goes first: the supervisor runs instances that
        // name no driver with the first.
        let offered: Vec<&str> = runtimes.iter().map(|r| r.name()).collect();
        let Some(default_driver) =
            c4m_core::resolve_default_driver(&config.default_driver, offered.iter().copied())
        else {
            return Err(Error::Config(format!(
                "the default driver {:?} does not work on this node (it offers {})",
                config.default_driver,
                offered.join(", ")
            )));
        };
        if config.default_driver == c4m_core::AUTO_DRIVER
            && !c4m_core::CONTAINER_DRIVERS.contains(&default_driver)
        {
            tracing::warn!(
                driver = default_driver,
                "no container driver works on this node: instances naming no driver run as host processes, without their image"
            );
        }
        let default_driver = default_driver.to_string();
        let default = offered
            .iter()
            .position(|name| *name == default_driver)
            .unwrap_or_default();
        runtimes[..=default].rotate_right(1);
        config.default_driver = default_driver;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                context: format!("cannot listen on {}", config.listen),
                source,
            })?;
        Ok(Agent {
            config,
            extensions,
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
        let mut labels = self.config.labels.clone();
        if self.config.gateway.is_some() {
            labels.insert(c4m_core::labels::EDGE_GATEWAY.into(), "true".into());
        }
        let mut register = register_request(
            &self.config.node_name,
            self.config.cpu_millis,
            self.config.memory_bytes,
            self.config.max_instances,
            &labels,
            self.config.address,
        );
        register.drivers = self
            .extensions
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
        // What the node's own controllers (service rules, edge gateway) read
        // from the control plane: each subscribes here before the session
        // starts.
        let mut objects = NodeObjects::new();
        let edge_gateway = self.config.gateway.clone().map(|config| {
            let set = objects.subscribe(&crate::edge::kinds());
            crate::edge::run(config, self.config.token.clone(), set, shutdown.clone())
        });
        let mut overlay_keeper = None;
        let mut service_keeper = None;
        let network = match (&self.config.network, self.extensions.network.clone()) {
            (Some(config), Some(network)) => {
                register.instance_network = true;
                let network = Arc::new(InstanceNetwork::new(
                    network,
                    config.clone(),
                    dns_rx.clone(),
                    slice_rx,
                    shutdown.clone(),
                ));
                overlay_keeper = self.extensions.overlay.clone().map(|overlay| {
                    keep_overlay(overlay, peers_rx, network.local_vpcs(), shutdown.clone())
                });
                // A node with an instance network gives Services their
                // virtual IPs, for its instances and its host processes.
                service_keeper = Some(keep_service_rules(
                    ServiceRules::new(&self.config.node_name),
                    objects.subscribe(&service_rules::KINDS),
                    network.local_vpcs(),
                    shutdown.clone(),
                ));
                Some(network)
            }
            _ => None,
        };
        // The node's volume manager: it repairs the node's volumes before
        // any pod mounts one, then follows the storage objects.
        let (node_volumes, volume_reports) =
            volumes::open(&self.config, assignments_rx.clone(), shutdown.clone()).await;
        let volume_manager =
            Arc::clone(&node_volumes).run(objects.subscribe(&volumes::KINDS), shutdown.clone());
        // Pods whose volume must be unmounted to grow are restarted.
        let restarts = crate::supervisor::Restarts::default();
        node_volumes.set_restarts(Arc::new(restarts.clone()));
        let claims: Arc<dyn ClaimMounts> = node_volumes;
        let volumes =
            PodVolumes::open(&self.config.data_dir, claims, self.config.memory_bytes).await;
        let supervisor = Supervisor {
            volumes: Some(volumes),
            restarts,
            runtimes: self.extensions.runtimes,
            prober: self
                .extensions
                .prober
                .unwrap_or_else(|| Arc::new(DefaultProber)),
            assignments: assignments_rx,
            statuses: statuses_tx,
            directory: Arc::clone(&directory),
            dns_address: dns_rx,
            network: network.clone(),
            pod_namespaces: Some(self.config.data_dir.join("pods")),
            holders: self.config.pod_holder.clone().map(|program| {
                Arc::new(PodHolders::new(program, self.config.data_dir.join("pods")))
            }),
            backoff: self.config.restart_backoff,
            pod_etc: PodEtc::new(
                &self.config.data_dir,
                self.config
                    .network
                    .as_ref()
                    .map_or(c4m_mesh::DEFAULT_CLUSTER_DOMAIN, |n| &n.cluster_domain),
            ),
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
            network: network.is_some().then_some(NetworkFeeds {
                node_slice: slice_tx,
                peers: peers_tx,
            }),
            objects,
            measure_node: true,
            volume_reports: Some(volume_reports),
            volume_report_every: self.config.storage.timers.report_every,
        };
        let state = Arc::new(ServerState {
            directory,
            images: self.images,
            work_dir: self.config.data_dir.clone(),
            token: self.config.token.clone(),
            shutdown: shutdown.clone(),
            network,
        });
        // Log follows and exec streams are small writes in a row: no Nagle delay.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |stream| {
            let _ = stream.set_nodelay(true);
        });
        let server = axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tracing::info!(node = %self.config.node_name, %http_addr, "agent running");
        let (_, _, served, _) = tokio::join!(
            supervisor.run(shutdown.clone()),
            session.run(shutdown.clone()),
            server,
            async {
                tokio::join!(
                    volume_manager,
                    async {
                        if let Some(keeper) = overlay_keeper {
                            keeper.await;
                        }
                    },
                    async {
                        if let Some(keeper) = service_keeper {
                            keeper.await;
                        }
                    },
                    async {
                        if let Some(gateway) = edge_gateway {
                            gateway.await;
                        }
                    }
                );
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
