//! `c4m up` and `c4m control`: compose the libraries and run until SIGINT
//! or SIGTERM, then shut down gracefully. (`c4m agent` is
//! `c4m_bins::run_agent`, shared with `c4m-agent`.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use c4m_api::Credentials;
use c4m_bins::{
    ClusterFlags, NodeFlags, bind_agent, data_dir, default_home, parse_duration, shutdown_on_signal,
};
use c4m_control::{ConnectionLimits, ControlPlane, ControlPlaneConfig, ServiceRanges, TlsIdentity};
use c4m_plugin::ControlPlaneExtensions;
use c4m_state::RedbStore;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::commands::{ClientConfig, Connection};

/// Control plane flags shared by `up` and `control`.
#[derive(Args, Clone)]
pub(crate) struct ControlFlags {
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8140")]
    api: SocketAddr,
    /// gRPC address agents dial.
    #[arg(long, default_value = "127.0.0.1:8141")]
    grpc: SocketAddr,
    /// DNS address (UDP and TCP) for NAME.NAMESPACE.svc.<cluster domain> and
    /// NAME.NAMESPACE.svc.c4m.
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
    /// How long after its last occurrence an Event is deleted.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: Duration,
    /// Record no Events (only to measure what they cost).
    #[arg(long)]
    no_events: bool,
    /// How often each HorizontalPodAutoscaler is reconciled.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: Duration,
    /// The scale-down stabilization window of autoscalers whose behavior
    /// sets none.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// The range Services' cluster IPs come from (IPv4); its first address
    /// is the `kubernetes` Service's. It may not overlap a VPC.
    #[arg(long, default_value = "10.96.0.0/16", value_parser = parse_service_cidr)]
    service_cidr: (std::net::Ipv4Addr, u8),
    /// The range NodePort and LoadBalancer Services' node ports come from.
    #[arg(long, default_value = "30000-32767", value_parser = parse_node_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The API's address in the `kubernetes` Service's endpoints [default:
    /// the API's bind address unless unspecified, else the gRPC one, else
    /// the address of the host's default route].
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Connections the API holds open at once; more are closed as they
    /// come. Never more than half the open-file limit (raised to its hard
    /// limit at start).
    #[arg(long, default_value_t = ConnectionLimits::default().max_connections)]
    max_connections: usize,
    /// How long a client has to send a request's headers (and to start one
    /// on an idle connection) before the API closes the connection.
    #[arg(long, default_value = "32s", value_parser = parse_duration)]
    request_header_timeout: Duration,
}

fn parse_service_cidr(text: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    ServiceRanges::parse_cidr(text).map_err(|e| e.to_string())
}

fn parse_node_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    ServiceRanges::parse_node_ports(text).map_err(|e| e.to_string())
}

/// `c4m up`.
#[derive(Args)]
pub(crate) struct UpArgs {
    /// Where state lives (store, instances, logs, credentials).
    #[arg(long, env = "C4M_HOME")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    control: ControlFlags,
    #[command(flatten)]
    node: NodeFlags,
    #[command(flatten)]
    cluster: ClusterFlags,
}

/// `c4m control`.
#[derive(Args)]
pub(crate) struct ControlArgs {
    /// Where the store and credentials live.
    #[arg(long, env = "C4M_HOME")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    control: ControlFlags,
    #[command(flatten)]
    cluster: ClusterFlags,
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
    if let Some(credentials) = connection.credentials.credentials() {
        return Ok(credentials);
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

async fn bind_control(
    dir: &Path,
    flags: &ControlFlags,
    cluster: &ClusterFlags,
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
        cluster_domain: cluster.cluster_domain.clone(),
        token: credentials.as_ref().map(Credentials::bearer),
        heartbeat_interval: flags.heartbeat,
        node_grace: flags.node_grace,
        eviction_delay: flags.eviction_delay,
        api_tls: Some(api_tls_identity(dir, flags.api)?),
        event_ttl: flags.event_ttl,
        record_events: !flags.no_events,
        hpa_sync_period: flags.horizontal_pod_autoscaler_sync_period,
        hpa_downscale_stabilization: flags.horizontal_pod_autoscaler_downscale_stabilization,
        service_ranges: ServiceRanges {
            network: flags.service_cidr.0,
            prefix: flags.service_cidr.1,
            node_ports: flags.service_node_port_range.clone(),
        },
        advertise_address: flags.advertise_address,
        api_connections: ConnectionLimits {
            max_connections: connection_cap(flags.max_connections, raise_open_files_limit()),
            header_timeout: flags.request_header_timeout,
        },
    };
    let control = ControlPlane::bind(config, ControlPlaneExtensions::new(Arc::new(store))).await?;
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

/// Raises the soft limit on open files to the hard one: the control plane
/// holds a descriptor per API connection, watch, agent stream and proxied
/// stream, and the usual soft limit (1,024) is what a half-open flood
/// exhausted. Returns the limit in force (None: unlimited).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return Some(maximum),
            Err(e) => {
                tracing::warn!(error = %e, current, maximum, "cannot raise the open-file limit")
            }
        }
    }
    limit.current
}

/// The API's connection cap: `wanted`, but at most half of `open_files`,
/// leaving the rest to the store, agents and proxied streams (each of
/// which is a second descriptor beside its API connection).
fn connection_cap(wanted: usize, open_files: Option<u64>) -> usize {
    let Some(half) = open_files.map(|limit| usize::try_from(limit / 2).unwrap_or(usize::MAX))
    else {
        return wanted;
    };
    if wanted > half {
        tracing::warn!(
            wanted,
            taken = half,
            "the API takes at most half the open-file limit in connections"
        );
    }
    wanted.min(half).max(1)
}

/// `c4m up`.
pub(crate) async fn up(args: UpArgs, connection: &Connection) -> Result<()> {
    let dir = data_dir(args.data_dir, "")?;
    let (control, credentials) =
        bind_control(&dir, &args.control, &args.cluster, connection).await?;
    // `up` is the quickstart: make plain `c4m get ...` find this control plane.
    let default_config = default_home()?.join("client.json");
    if default_config != dir.join("client.json") {
        if let Some(parent) = default_config.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(dir.join("client.json"), &default_config)
            .with_context(|| format!("cannot write {}", default_config.display()))?;
    }
    let agent = bind_agent(
        &dir.join("agent"),
        &args.node,
        &args.cluster,
        format!("http://{}", control.grpc_addr()),
        credentials.as_ref().map(Credentials::bearer),
    )
    .await?;
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
pub(crate) async fn control(args: ControlArgs, connection: &Connection) -> Result<()> {
    let dir = data_dir(args.data_dir, "control")?;
    let (control, _) = bind_control(&dir, &args.control, &args.cluster, connection).await?;
    control.run(shutdown_on_signal()).await?;
    Ok(())
}
