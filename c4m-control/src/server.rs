//! Composes the control plane: API server, agent service, controllers,
//! scheduler and DNS, all stopped by one cancellation token.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use c4m_api::agent::agent_service_server::AgentServiceServer;
use c4m_mesh::{FirstKnown, ServiceLookup};
use c4m_plugin::ControlPlaneExtensions;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::api::ApiState;
use crate::cache::Cache;
use crate::connections::ConnectionLimits;
use crate::controllers::{self, nodes::NodeHealth};
use crate::events::{self, EventsConfig};
use crate::objects::{Objects, kind};
use crate::registry::Registry;
use crate::service_addresses::ServiceRanges;
use crate::tls::TlsIdentity;
use crate::{Error, Result, scheduler};
use c4m_mesh::DnsServer;

/// How long the parts get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a control plane listens and behaves.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// HTTP/JSON API address.
    pub api_addr: SocketAddr,
    /// gRPC address agents dial.
    pub grpc_addr: SocketAddr,
    /// DNS address (UDP and TCP); None to run without DNS.
    pub dns_addr: Option<SocketAddr>,
    /// The cluster's DNS domain (`--cluster-domain`): services answer as
    /// `NAME.NAMESPACE.svc.<domain>`, and as `NAME.NAMESPACE.svc.c4m` too
    /// ([`c4m_mesh::C4M_DOMAIN`]).
    pub cluster_domain: String,
    /// Bearer token clients and agents must present; None runs an
    /// unauthenticated dev-mode control plane.
    pub token: Option<String>,
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is NotReady.
    pub node_grace: Duration,
    /// Time NotReady after which a node's instances are evicted.
    pub eviction_delay: Duration,
    /// With a certificate, the API port also speaks HTTPS (for kubectl,
    /// which sends tokens only over TLS).
    pub api_tls: Option<TlsIdentity>,
    /// How long after its last occurrence an Event is deleted
    /// (Kubernetes' `--event-ttl`, one hour).
    pub event_ttl: Duration,
    /// Whether Events are recorded at all (on; off only to measure what
    /// they cost).
    pub record_events: bool,
    /// How often each HorizontalPodAutoscaler is reconciled (Kubernetes'
    /// `--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub hpa_sync_period: Duration,
    /// The scale-down stabilization window of autoscalers whose behavior
    /// sets none (`--horizontal-pod-autoscaler-downscale-stabilization`,
    /// 5 minutes).
    pub hpa_downscale_stabilization: Duration,
    /// Where Services take cluster IPs and node ports from
    /// (`--service-cidr`, `--service-node-port-range`).
    pub service_ranges: ServiceRanges,
    /// The address the `kubernetes` Service's endpoints give for the API
    /// (`--advertise-address`); None picks one as kube-apiserver does.
    pub advertise_address: Option<IpAddr>,
    /// How many connections the API holds open, and how long a client has
    /// to send a request's headers.
    pub api_connections: ConnectionLimits,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            api_addr: ([127, 0, 0, 1], 8140).into(),
            grpc_addr: ([127, 0, 0, 1], 8141).into(),
            dns_addr: Some(([127, 0, 0, 1], 8153).into()),
            cluster_domain: c4m_mesh::DEFAULT_CLUSTER_DOMAIN.into(),
            token: None,
            heartbeat_interval: Duration::from_secs(2),
            node_grace: Duration::from_secs(10),
            eviction_delay: Duration::from_secs(5),
            api_tls: None,
            event_ttl: Duration::from_secs(3600),
            record_events: true,
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            service_ranges: ServiceRanges::default(),
            advertise_address: None,
            api_connections: ConnectionLimits::default(),
        }
    }
}

/// A control plane with its listeners bound, ready to [`run`](Self::run).
pub struct ControlPlane {
    config: ControlPlaneConfig,
    extensions: ControlPlaneExtensions,
    api: TcpListener,
    grpc: TcpListener,
    dns: Option<DnsServer>,
}

impl ControlPlane {
    /// Binds every listener (port 0 picks a free port); the control plane
    /// keeps its state in `extensions.store` and adds the rest of
    /// `extensions` to its scheduler, admission and DNS.
    pub async fn bind(
        config: ControlPlaneConfig,
        extensions: ControlPlaneExtensions,
    ) -> Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Io {
                context: format!("cannot listen on {addr}"),
                source,
            })
        };
        let api = bind(config.api_addr).await?;
        let grpc = bind(config.grpc_addr).await?;
        Ok(ControlPlane {
            config,
            extensions,
            api,
            grpc,
            dns: None,
        })
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr().unwrap_or(self.config.api_addr)
    }

    /// Where the agent gRPC service listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// Runs until `shutdown` is cancelled, then stops every part gracefully.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let store = Arc::clone(&self.extensions.store);
        let (events, event_writer) = events::events(
            Arc::clone(&store),
            EventsConfig {
                ttl: self.config.event_ttl,
                ..EventsConfig::default()
            },
        );
        let objects = Objects::new(Arc::clone(&store))
            .with_admission(self.extensions.admission.clone())
            .with_service_ranges(self.config.service_ranges.clone());
        let objects = if self.config.record_events {
            objects.with_events(events)
        } else {
            objects
        };
        ensure_default_namespace(&objects).await?;
        objects.check_service_cidr().await?;
        controllers::edge::ensure_default_classes(&objects).await?;
        controllers::volumes::admission::ensure_default_classes(&objects).await?;
        let cache = Cache::start(store, shutdown.clone()).await?;
        let registry = Registry::new(Arc::clone(&cache));
        if let Some(addr) = self.config.dns_addr {
            let lookup: Arc<dyn ServiceLookup> = match self.extensions.service_lookup.clone() {
                Some(fallback) => Arc::new(FirstKnown {
                    first: Arc::new(registry.clone()),
                    second: fallback,
                }),
                None => Arc::new(registry.clone()),
            };
            let domains = [self.config.cluster_domain.as_str(), c4m_mesh::C4M_DOMAIN];
            self.dns = Some(DnsServer::bind(addr, &domains, lookup).await?);
        }
        let health = Arc::new(NodeHealth::new(
            self.config.node_grace,
            self.config.eviction_delay,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(event_writer.run(shutdown.clone()));

        let volume_reports = Arc::new(crate::volume_reports::VolumeReports::default());
        let scheduler = scheduler::Scheduler::new(
            self.extensions.filters.clone(),
            self.extensions.scorers.clone(),
        )
        .with_volume_reports(Arc::clone(&volume_reports));
        spawn_controllers(&mut tasks, &objects, &cache, &health, scheduler, &shutdown);
        // The same reports for the scheduler, the volume controller and the
        // agents' service that records them.
        tasks.spawn(
            controllers::volumes::run(
                objects.clone(),
                Arc::clone(&cache),
                Arc::clone(&volume_reports),
                FULL_RESYNC,
                shutdown.clone(),
            )
            .then_ok(),
        );
        let api_endpoint = controllers::services::ApiEndpoint {
            service_ip: self.config.service_ranges.api_service_ip(),
            address: self
                .config
                .advertise_address
                .unwrap_or_else(|| advertise_address(self.api_addr(), self.grpc_addr())),
            port: self.api_addr().port(),
        };
        spawn_service_controllers(&mut tasks, &objects, &cache, api_endpoint, &shutdown);
        spawn_autoscaler_controller(
            &mut tasks,
            &objects,
            &cache,
            controllers::horizontal::AutoscalerController::new(
                Arc::new(controllers::clock::SystemClock),
                Arc::clone(&metrics),
                controllers::horizontal::AutoscalerConfig {
                    sync_period: self.config.hpa_sync_period,
                    downscale_stabilization: self.config.hpa_downscale_stabilization,
                    ..Default::default()
                },
            ),
            self.config.hpa_sync_period,
            &shutdown,
        );

        let state = Arc::new(ApiState {
            objects: objects.clone(),
            registry,
            metrics: crate::metrics::MetricsState {
                metrics: Arc::clone(&metrics),
                cache: Arc::clone(&cache),
            },
            token: self.config.token.clone(),
            agent_token: self.config.token.clone().unwrap_or_default(),
            http: reqwest::Client::new(),
            shutdown: shutdown.clone(),
            certificate_pem: self
                .config
                .api_tls
                .as_ref()
                .map(|identity| identity.certificate_pem.clone()),
            pages: Arc::default(),
        });
        tasks.spawn(
            crate::connections::serve(
                self.api,
                crate::tls::acceptor(self.config.api_tls.as_ref())?,
                crate::api::router(state),
                self.config.api_connections,
                shutdown.clone(),
            )
            .then_ok(),
        );

        let agents = Agents {
            objects,
            cache,
            health,
            metrics,
            heartbeat_interval: self.config.heartbeat_interval,
            dns_address: self
                .dns
                .as_ref()
                .map(|d| d.local_addr().to_string())
                .unwrap_or_default(),
            slices: Arc::default(),
            reported: Arc::default(),
            reported_events: Arc::default(),
            service_envs: Arc::default(),
            volume_reports,
            shutdown: shutdown.clone(),
        };
        let token = self.config.token.clone();
        let service =
            AgentServiceServer::with_interceptor(agents, move |request: tonic::Request<()>| {
                let Some(token) = &token else {
                    return Ok(request);
                };
                let header = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if c4m_api::bearer_matches(header, token) {
                    Ok(request)
                } else {
                    Err(tonic::Status::unauthenticated(
                        "wrong or missing cluster token",
                    ))
                }
            });
        // No Nagle: an assignment written right after another message on the
        // same connection would otherwise wait for the peer's delayed ACK
        // (~40 ms on Linux).
        let grpc = tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let grpc_shutdown = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(grpc, grpc_shutdown.cancelled_owned())
                .await
                .map_err(|e| Error::Io {
                    context: "agent gRPC server failed".into(),
                    source: std::io::Error::other(e),
                })
        });

        if let Some(dns) = self.dns.take() {
            let dns_shutdown = shutdown.clone();
            tasks.spawn(async move { dns.run(dns_shutdown).await.map_err(Error::from) });
        }

        tracing::info!("control plane running");
        let mut result = Ok(());
        // Once shutdown starts, parts get a bounded time to finish (open
        // streams to drain); whatever is still running after it is aborted,
        // so a stalled connection can never keep the process alive.
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::pin!(deadline);
        loop {
            let joined = tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(joined) => joined,
                    None => break,
                },
                _ = &mut deadline => {
                    tracing::warn!(remaining = tasks.len(), "shutdown grace over; aborting what is left");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            };
            let outcome = joined.unwrap_or_else(|e| {
                Err(Error::Io {
                    context: "a control plane task panicked".into(),
                    source: std::io::Error::other(e),
                })
            });
            if let Err(e) = outcome {
                tracing::error!(error = %e, "control plane part failed; shutting down");
                shutdown.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        tracing::info!("control plane stopped");
        result
    }
}

/// How often the workload and endpoints controllers look at everything,
/// besides what changed: rare, since a full pass costs as much as the
/// cluster is large.
const FULL_RESYNC: Duration = Duration::from_secs(60);

/// How often the scheduler retries instances that fit nowhere.
const SCHEDULER_RESYNC: Duration = Duration::from_secs(5);

/// How often the node lifecycle controller checks heartbeats.
const NODE_CHECK: Duration = Duration::from_millis(500);

fn spawn_controllers(
    tasks: &mut JoinSet<Result<()>>,
    objects: &Objects,
    cache: &Arc<Cache>,
    health: &Arc<NodeHealth>,
    scheduler: scheduler::Scheduler,
    shutdown: &CancellationToken,
) {
    let mut spawn = |name, kinds: &[&str], resync, reconcile: Reconcile| {
        let (o, c) = (objects.clone(), Arc::clone(cache));
        tasks.spawn(
            controllers::run(
                name,
                Arc::clone(cache),
                cache.feed(kinds),
                resync,
                shutdown.clone(),
                move |changes| reconcile(o.clone(), Arc::clone(&c), changes),
            )
            .then_ok(),
        );
    };
    spawn(
        "workload",
        &["microservices", "deployments", "replicasets", "pods"],
        FULL_RESYNC,
        Box::new(|o, c, changes| {
            Box::pin(async move { controllers::workload::reconcile(&o, &c, &changes).await })
        }),
    );
    spawn(
        "endpoints",
        &[
            "services",
            "microservices",
            "endpoints",
            "endpointslices",
            "pods",
        ],
        FULL_RESYNC,
        Box::new(|o, c, changes| {
            Box::pin(async move { controllers::endpoints::reconcile(&o, &c, &changes).await })
        }),
    );
    let scheduler = Arc::new(tokio::sync::Mutex::new(scheduler));
    spawn(
        "scheduler",
        &[
            "pods",
            "nodes",
            "microservices",
            "deployments",
            "poddisruptionbudgets",
            "schedulerpolicies",
            "persistentvolumeclaims",
            "persistentvolumes",
            "storageclasses",
        ],
        SCHEDULER_RESYNC,
        // The scheduler finds what changed itself, from the cache's revisions.
        Box::new(move |o, c, _| {
            let scheduler = Arc::clone(&scheduler);
            Box::pin(async move { scheduler.lock().await.reconcile(&o, &c).await })
        }),
    );
    spawn(
        "edge",
        &controllers::edge::follows(),
        FULL_RESYNC,
        Box::new(|o, c, _| Box::pin(async move { controllers::edge::reconcile(&o, &c).await })),
    );
    spawn(
        "disruption",
        &[
            "poddisruptionbudgets",
            "pods",
            "microservices",
            "deployments",
            "statefulsets",
        ],
        SCHEDULER_RESYNC,
        Box::new(|o, c, _| {
            Box::pin(async move { controllers::disruption::reconcile(&o, &c).await })
        }),
    );
    let collector = Arc::new(tokio::sync::Mutex::new(
        controllers::garbage_collector::GarbageCollector::default(),
    ));
    let every_kind: Vec<&str> = c4m_core::KINDS.iter().map(|k| k.plural).collect();
    spawn(
        "garbage collector",
        &every_kind[..],
        FULL_RESYNC,
        Box::new(move |o, c, changes| {
            let collector = Arc::clone(&collector);
            Box::pin(async move { collector.lock().await.reconcile(&o, &c, &changes).await })
        }),
    );
    spawn(
        "namespaces",
        &every_kind[..],
        FULL_RESYNC,
        Box::new(|o, c, _| {
            Box::pin(async move { controllers::namespaces::reconcile(&o, &c).await })
        }),
    );
    spawn(
        "daemonsets",
        &["daemonsets", "pods", "nodes"],
        FULL_RESYNC,
        Box::new(|o, c, changes| {
            Box::pin(async move { controllers::daemonsets::reconcile(&o, &c, &changes).await })
        }),
    );
    let health = Arc::clone(health);
    spawn(
        "nodes",
        &["nodes"],
        NODE_CHECK,
        Box::new(move |o, c, _| {
            let h = Arc::clone(&health);
            Box::pin(async move { controllers::nodes::reconcile(&o, &c, &h).await })
        }),
    );
    spawn_job_controller(tasks, objects, cache, shutdown);
    spawn_statefulset_controller(tasks, objects, cache, shutdown);
    spawn_cronjob_controller(tasks, objects, cache, shutdown);
}

fn spawn_cronjob_controller(
    tasks: &mut JoinSet<Result<()>>,
    objects: &Objects,
    cache: &Arc<Cache>,
    shutdown: &CancellationToken,
) {
    use controllers::cronjobs::CronJobController;
    let cronjobs = Arc::new(CronJobController::new(Arc::new(
        controllers::clock::SystemClock,
    )));
    let feed = cache.feed(&["cronjobs", "jobs"]);
    tasks.spawn(
        Arc::clone(&cronjobs)
            .run_wakeups(Arc::clone(&feed), JOB_WAKEUP_TICK, shutdown.clone())
            .then_ok(),
    );
    let (o, c) = (objects.clone(), Arc::clone(cache));
    tasks.spawn(
        controllers::run(
            "cronjobs",
            Arc::clone(cache),
            feed,
            FULL_RESYNC,
            shutdown.clone(),
            move |changes| {
                let (o, c, cronjobs) = (o.clone(), Arc::clone(&c), Arc::clone(&cronjobs));
                async move { cronjobs.reconcile(&o, &c, &changes).await }
            },
        )
        .then_ok(),
    );
}

/// Runs the HorizontalPodAutoscaler controller: every autoscaler each
/// `sync_period`, and new ones as they come.
fn spawn_autoscaler_controller(
    tasks: &mut JoinSet<Result<()>>,
    objects: &Objects,
    cache: &Arc<Cache>,
    controller: controllers::horizontal::AutoscalerController,
    sync_period: Duration,
    shutdown: &CancellationToken,
) {
    let controller = Arc::new(controller);
    let (o, c) = (objects.clone(), Arc::clone(cache));
    tasks.spawn(
        controllers::run(
            "horizontalpodautoscalers",
            Arc::clone(cache),
            cache.feed(&["horizontalpodautoscalers"]),
            sync_period,
            shutdown.clone(),
            move |changes| {
                let (o, c, controller) = (o.clone(), Arc::clone(&c), Arc::clone(&controller));
                async move { controller.reconcile(&o, &c, &changes).await }
            },
        )
        .then_ok(),
    );
}

/// How often the Job controller looks for Jobs whose deadline, backoff or
/// TTL has come.
const JOB_WAKEUP_TICK: Duration = Duration::from_millis(250);

fn spawn_job_controller(
    tasks: &mut JoinSet<Result<()>>,
    objects: &Objects,
    cache: &Arc<Cache>,
    shutdown: &CancellationToken,
) {
    use controllers::jobs::{JobController, PodFailureBackoff};
    let jobs = Arc::new(JobController::new(
        Arc::new(controllers::clock::SystemClock),
        PodFailureBackoff::default(),
    ));
    let feed = cache.feed(&["jobs", "pods"]);
    tasks.spawn(
        Arc::clone(&jobs)
            .run_wakeups(Arc::clone(&feed), JOB_WAKEUP_TICK, shutdown.clone())
            .then_ok(),
    );
    let (o, c) = (objects.clone(), Arc::clone(cache));
    tasks.spawn(
        controllers::run(
            "jobs",
            Arc::clone(cache),
            feed,
            FULL_RESYNC,
            shutdown.clone(),
            move |changes| {
                let (o, c, jobs) = (o.clone(), Arc::clone(&c), Arc::clone(&jobs));
                async move { jobs.reconcile(&o, &c, &changes).await }
            },
        )
        .then_ok(),
    );
}

fn spawn_statefulset_controller(
    tasks: &mut JoinSet<Result<()>>,
    objects: &Objects,
    cache: &Arc<Cache>,
    shutdown: &CancellationToken,
) {
    use controllers::statefulsets::StatefulSetController;
    let sets = Arc::new(StatefulSetController::new(Arc::new(
        controllers::clock::SystemClock,
    )));
    let feed = cache.feed(&["statefulsets", "pods"]);
    tasks.spawn(
        Arc::clone(&sets)
            .run_wakeups(Arc::clone(&feed), JOB_WAKEUP_TICK, shutdown.clone())
            .then_ok(),
    );
    let (o, c) = (objects.clone(), Arc::clone(cache));
    tasks.spawn(
        controllers::run(
            "statefulsets",
            Arc::clone(cache),
            feed,
            FULL_RESYNC,
            shutdown.clone(),
            move |changes| {
                let (o, c, sets) = (o.clone(), Arc::clone(&c), Arc::clone(&sets));
                async move { sets.reconcile(&o, &c, &changes).await }
            },
        )
        .then_ok(),
    );
}

/// One reconcile pass of a controller, given the objects, the cache and
/// what changed.
type Reconcile = Box<
    dyn Fn(
            Objects,
            Arc<Cache>,
            Arc<crate::cache::Changes>,
        ) -> Pin<Box<dyn Future<Output = Result<Option<i64>>> + Send>>
        + Send,
>;

/// Turns a `()` future into one yielding `Ok(())` for the task set.
trait ThenOk: std::future::Future<Output = ()> + Sized {
    fn then_ok(self) -> impl std::future::Future<Output = Result<()>> {
        async move {
            self.await;
            Ok(())
        }
    }
}

impl<F: std::future::Future<Output = ()>> ThenOk for F {}

/// The address in-cluster clients reach the API at, as kube-apiserver picks
/// it without `--advertise-address`: the API's bind address unless
/// unspecified, else the agents' (gRPC) one, else the host's address on its
/// default route (a UDP socket's source address: nothing is sent), else
/// loopback.
fn advertise_address(api: SocketAddr, grpc: SocketAddr) -> IpAddr {
    if !api.ip().is_unspecified() {
        return api.ip();
    }
    if !grpc.ip().is_unspecified() {
        return grpc.ip();
    }
    std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|socket| {
            socket.connect(("192.0.2.1", 9))?;
            socket.local_addr()
        })
        .map(|addr| addr.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The `kubernetes` Service's keeper and the load balancer status
/// controller (`controllers/services.rs`).
fn spawn_service_controllers(
    tasks: &mut JoinSet<Result<()>>,
    objects: &Objects,
    cache: &Arc<Cache>,
    api: controllers::services::ApiEndpoint,
    shutdown: &CancellationToken,
) {
    let (o, c) = (objects.clone(), Arc::clone(cache));
    tasks.spawn(
        controllers::run(
            "kubernetes service",
            Arc::clone(cache),
            cache.feed(&["services", "endpoints", "endpointslices"]),
            FULL_RESYNC,
            shutdown.clone(),
            move |_| {
                let (o, c) = (o.clone(), Arc::clone(&c));
                async move { controllers::services::reconcile_api_service(&o, &c, &api).await }
            },
        )
        .then_ok(),
    );
    let (o, c) = (objects.clone(), Arc::clone(cache));
    tasks.spawn(
        controllers::run(
            "load balancers",
            Arc::clone(cache),
            cache.feed(&["services", "nodes"]),
            FULL_RESYNC,
            shutdown.clone(),
            move |changes| {
                let (o, c) = (o.clone(), Arc::clone(&c));
                async move {
                    controllers::services::reconcile_load_balancers(&o, &c, &changes).await
                }
            },
        )
        .then_ok(),
    );
}

async fn ensure_default_namespace(objects: &Objects) -> Result<()> {
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    match objects.create(kind("namespaces"), "", namespace).await {
        Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
