//! `c4m port-forward INSTANCE LOCAL:REMOTE`: forwards a local port to an
//! instance's port, wherever that port is reachable from here (its VPC
//! address, or the host port the `process` driver bound).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use c4m_core::{ResourceKind, annotations};
use clap::Args;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::commands::Connection;
use crate::daemons::shutdown_on_signal;

/// `c4m port-forward`.
#[derive(Args)]
pub struct PortForwardArgs {
    /// Instance name.
    instance: String,
    /// LOCAL:REMOTE (REMOTE is the instance's container port; LOCAL 0
    /// picks a free port).
    ports: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
}

pub async fn port_forward(args: PortForwardArgs, connection: &Connection) -> Result<()> {
    let (local, remote) = args
        .ports
        .split_once(':')
        .and_then(|(l, r)| Some((l.parse::<u16>().ok()?, r.parse::<u16>().ok()?)))
        .with_context(|| {
            format!(
                "ports {:?}: expected LOCAL:REMOTE, e.g. 8080:80",
                args.ports
            )
        })?;
    let kind = ResourceKind::from_name("pods").context("this c4m has no instances")?;
    let client = connection.client()?;
    let pod = client
        .get(kind, Some(&args.namespace), &args.instance)
        .await?;
    let target = target(&pod, remote)?;
    let listener = TcpListener::bind((args.address, local))
        .await
        .with_context(|| format!("cannot listen on {}:{local}", args.address))?;
    println!(
        "Forwarding from {} -> {target}",
        listener
            .local_addr()
            .unwrap_or((args.address, local).into())
    );
    c4m_agent::forward_tcp(listener, target, shutdown_on_signal()).await;
    Ok(())
}

/// Where the instance's container port `remote` is reachable: the host
/// binding its agent reported, else its own address.
fn target(pod: &Value, remote: u16) -> Result<SocketAddr> {
    let bindings: Vec<Value> = pod["metadata"]["annotations"][annotations::PORTS]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let bound = bindings
        .iter()
        .find(|b| b["containerPort"].as_u64() == Some(u64::from(remote)));
    let (ip, port) = match bound {
        Some(binding) => (
            binding["hostIP"].as_str().unwrap_or_default(),
            binding["hostPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(remote),
        ),
        None => (pod["status"]["podIP"].as_str().unwrap_or_default(), remote),
    };
    if ip.is_empty() {
        bail!("the instance has no address yet (is it running?)");
    }
    let ip = ip
        .parse()
        .with_context(|| format!("the instance's address {ip:?} is not an IP"))?;
    Ok(SocketAddr::new(ip, port))
}
