//! `c4m-demo`: the small HTTP service the examples deploy.
//!
//! It answers `GET /` with who it is (one line), and with `--backend` it
//! first calls each backend and includes their answers (`ME -> ANSWER`, or
//! `ME -> [ANSWER; ANSWER]` for several), showing services reaching each
//! other by name:
//! - `HOST:PORT` (`cart:80`, `accounts.shop:80`), as apps written for
//!   Kubernetes call a Service: resolved through the instance's
//!   `resolv.conf` (its search domains make short names work), else, for a
//!   host process without one, as an A record of c4m's DNS
//!   (`C4M_DNS_SERVER`) under `NAMESPACE.svc.c4m`;
//! - a bare `SERVICE` or `SERVICE.NAMESPACE`: an SRV lookup in c4m's DNS,
//!   which gives an endpoint's address and port.
//!
//! `GET /healthz` is for probes. `--call BACKEND` makes that call once and
//! prints the answer (e.g. through `c4m exec` inside an instance).

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
    /// Service to call on every request (HOST:PORT, NAME or
    /// NAME.NAMESPACE); repeat for several.
    #[arg(long)]
    backend: Vec<String>,
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
    backends: Vec<String>,
    dns: Option<SocketAddr>,
    http: reqwest::Client,
}

impl Demo {
    async fn call_backend(&self, backend: &str) -> Result<String> {
        let url = match backend.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .with_context(|| format!("{backend:?}: the port is not a number"))?;
                format!("http://{}/", self.address_of(host, port).await?)
            }
            None => format!("http://{}/", self.endpoint_of(backend).await?),
        };
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

    /// `host:port` as an app finds it: through `resolv.conf`, else (a host
    /// process, whose `resolv.conf` is the host's) c4m's DNS.
    async fn address_of(&self, host: &str, port: u16) -> Result<SocketAddr> {
        let system = match tokio::net::lookup_host((host, port)).await {
            Ok(mut found) => match found.next() {
                Some(address) => return Ok(address),
                None => format!("{host}: no address"),
            },
            Err(e) => format!("{host}: {e}"),
        };
        let Some(dns) = self.dns else {
            return Err(anyhow!(system));
        };
        let resolver = c4m_mesh::cluster_resolver(dns);
        let fqdn = self.fqdn(host);
        let addresses = resolver
            .ipv4_lookup(fqdn.as_str())
            .await
            .with_context(|| format!("A {fqdn}"))?;
        addresses
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                RData::A(a) => Some(SocketAddr::new(IpAddr::V4(a.0), port)),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{fqdn} has no address"))
    }

    /// `NAME` or `NAME.NAMESPACE` in c4m's zone.
    fn fqdn(&self, name: &str) -> String {
        let namespace = std::env::var("C4M_NAMESPACE").unwrap_or_else(|_| "default".into());
        if name.contains('.') {
            format!("{name}.svc.c4m.")
        } else {
            format!("{name}.{namespace}.svc.c4m.")
        }
    }

    /// An endpoint of service `backend` from its SRV record.
    async fn endpoint_of(&self, backend: &str) -> Result<SocketAddr> {
        let dns = self
            .dns
            .ok_or_else(|| anyhow!("C4M_DNS_SERVER is not set"))?;
        let fqdn = self.fqdn(backend);
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
        Ok(SocketAddr::new(IpAddr::V4(ip), port))
    }
}

async fn root(State(demo): State<Arc<Demo>>) -> (StatusCode, String) {
    let me = format!(
        "{} ({}, pid {})",
        demo.name,
        demo.instance,
        std::process::id()
    );
    let answers =
        futures::future::join_all(demo.backends.iter().map(|b| demo.call_backend(b))).await;
    let mut status = StatusCode::OK;
    let answers: Vec<String> = demo
        .backends
        .iter()
        .zip(answers)
        .map(|(backend, answer)| {
            answer.unwrap_or_else(|e| {
                status = StatusCode::BAD_GATEWAY;
                format!("cannot reach {backend}: {e:#}")
            })
        })
        .collect();
    let text = match answers.as_slice() {
        [] => me,
        [one] => format!("{me} -> {one}"),
        several => format!("{me} -> [{}]", several.join("; ")),
    };
    (status, format!("{text}\n"))
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
        backends: args.backend,
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
