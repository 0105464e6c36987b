//! `c4m-demo`: the small HTTP service the examples deploy.
//!
//! It answers `GET /` with who it is, and with `--backend SERVICE` it first
//! looks SERVICE up in c4m's DNS (SRV, as `C4M_DNS_SERVER` says where) and
//! includes the backend's answer, showing one service reaching another by
//! name. `GET /healthz` is for probes. `--call SERVICE` makes that call
//! once and prints the answer (e.g. through `c4m exec` inside an instance).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use hickory_resolver::proto::rr::RData;

/// A demo microservice for c4m's examples.
#[derive(Parser)]
struct Args {
    /// Name to answer with.
    #[arg(long, default_value = "demo")]
    name: String,
    /// Service to call on every request (NAME or NAME.NAMESPACE).
    #[arg(long)]
    backend: Option<String>,
    /// Port (default: $PORT, else 8080).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on: loopback for host processes (the process
    /// driver publishes them), `0.0.0.0` in a container with its own IP.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    address: IpAddr,
    /// Call SERVICE once as --backend does, print its answer and exit.
    #[arg(long, value_name = "SERVICE", conflicts_with = "backend")]
    call: Option<String>,
}

struct Demo {
    name: String,
    instance: String,
    backend: Option<String>,
    dns: Option<SocketAddr>,
    http: reqwest::Client,
}

impl Demo {
    async fn call_backend(&self, backend: &str) -> Result<String> {
        let dns = self
            .dns
            .ok_or_else(|| anyhow!("C4M_DNS_SERVER is not set"))?;
        let namespace = std::env::var("C4M_NAMESPACE").unwrap_or_else(|_| "default".into());
        let fqdn = if backend.contains('.') {
            format!("{backend}.svc.c4m.")
        } else {
            format!("{backend}.{namespace}.svc.c4m.")
        };
        let resolver = c4m_mesh::cluster_resolver(dns);
        let srv = resolver
            .srv_lookup(fqdn.as_str())
            .await
            .with_context(|| format!("SRV {fqdn}"))?;
        let (target, port) = srv
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                RData::SRV(srv) => Some((srv.target.to_string(), srv.port)),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{fqdn} has no endpoints"))?;
        let addresses = resolver
            .ipv4_lookup(target.as_str())
            .await
            .with_context(|| format!("A {target}"))?;
        let ip = addresses
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{target} has no address"))?;
        let url = format!("http://{ip}:{port}/");
        let body = self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(format!("{} via {url}", body.trim()))
    }
}

async fn root(State(demo): State<Arc<Demo>>) -> (StatusCode, String) {
    let me = format!(
        "{} ({}, pid {})",
        demo.name,
        demo.instance,
        std::process::id()
    );
    match &demo.backend {
        None => (StatusCode::OK, format!("{me}\n")),
        Some(backend) => match demo.call_backend(backend).await {
            Ok(answer) => (StatusCode::OK, format!("{me} -> {answer}\n")),
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                format!("{me} cannot reach {backend}: {e:#}\n"),
            ),
        },
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dns = match std::env::var("C4M_DNS_SERVER") {
        Ok(addr) => Some(
            addr.parse()
                .with_context(|| format!("C4M_DNS_SERVER={addr:?} is not HOST:PORT"))?,
        ),
        Err(_) => None,
    };
    let demo = Arc::new(Demo {
        name: args.name,
        instance: std::env::var("C4M_INSTANCE").unwrap_or_else(|_| "standalone".into()),
        backend: args.backend,
        dns,
        http: reqwest::Client::new(),
    });
    if let Some(service) = args.call {
        let answer = demo
            .call_backend(&service)
            .await
            .with_context(|| format!("cannot reach {service}"))?;
        println!("{answer}");
        return Ok(());
    }
    let app = Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(demo);
    let listen = SocketAddr::new(args.address, args.port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    // As pid 1 of a container nothing ends it on SIGTERM unless it says
    // so: stop at once instead of waiting out the grace period.
    axum::serve(listener, app)
        .with_graceful_shutdown(c4m_bins::shutdown_on_signal().cancelled_owned())
        .await?;
    Ok(())
}
