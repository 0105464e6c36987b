//! Edge gateway benchmark: c4m's gateway side by side with nginx and
//! HAProxy, one run, same route, TLS, worker count and CPU pinning.
//!
//! ```text
//! cargo run --release -p c4m-mesh --features proxy --example gateway_bench
//! ```
//!
//! Needs (as root or not) `taskset`, `h2load` (Debian `nghttp2-client`),
//! `nginx` (`nginx-light` is enough) and `haproxy`; it fails naming what is
//! missing. Everything listens on 127.0.0.1; files go to a temporary
//! directory removed at the end; every process it starts is stopped.
//!
//! The route: HTTPS (TLS 1.3, one ECDSA P-256 certificate from rcgen) for
//! host `bench.local`, path prefix `/bench`, to one HTTP/1.1 upstream kept
//! alive (a small hyper server answering `ok`). Each proxy runs with 1 and
//! with 2 workers (c4m: tokio worker threads; nginx: worker processes;
//! HAProxy: threads), pinned with `taskset` (1 worker: CPU 1; 2 workers:
//! CPUs 0-1); the upstream and h2load are pinned to CPU 0. Per protocol
//! (HTTP/1.1 and HTTP/2 over TLS) h2load runs open-loop at a fixed rate
//! (`--rps`) and closed-loop at saturation. Latency percentiles come from
//! h2load's per-request log; RSS is the proxy's (nginx: master and workers
//! summed), idle and the peak during the runs.
//!
//! Options: `--duration SECS` (default 10), `--rate REQS_PER_SEC` for the
//! fixed-rate runs (default 2000), `--rounds N` (default 3: the proxies take
//! turns in each round and the table gives medians, as the machine is
//! shared), `--only c4m|nginx|haproxy`.
//!
//! Subcommands used by the benchmark itself: `serve` (the c4m gateway) and
//! `upstream`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const HOST: &str = "bench.local";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("upstream") => upstream(),
        _ => run(&args),
    }
}

/// A value following `--name` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

// ---- the orchestrator ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ProxyKind {
    C4m,
    Nginx,
    Haproxy,
}

impl ProxyKind {
    fn name(self) -> &'static str {
        match self {
            ProxyKind::C4m => "c4m",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
        }
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    child: Child,
    name: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    if !found && !Path::new(tool).is_file() {
        bail!(
            "{tool} is not installed (apt-get install taskset? util-linux; h2load: nghttp2-client; nginx-light; haproxy)"
        );
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `program` pinned to `cpus`; reads `listening ADDR` from its
/// first stdout line when `announces` is set.
fn spawn_pinned(
    cpus: &str,
    program: &Path,
    args: &[&str],
    name: &str,
    announces: bool,
) -> Result<(Running, Option<SocketAddr>)> {
    let mut command = Command::new("taskset");
    command
        .arg("-c")
        .arg(cpus)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command.stdout(if announces {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let addr = if announces {
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .with_context(|| format!("{name} said {line:?}"))?;
        Some(addr.parse()?)
    } else {
        None
    };
    Ok((
        Running {
            child,
            name: name.to_owned(),
        },
        addr,
    ))
}

fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr}")
}

/// The resident set of `pid` and its children, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let own = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut total = own(pid);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Field 4 (after the parenthesised name) is the parent pid.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if parent == Some(pid) {
                total += own(child);
            }
        }
    }
    total
}

/// One h2load run's figures.
#[derive(Debug, Default)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    failed: u64,
}

fn h2load(
    url: &str,
    connect_to: SocketAddr,
    h1: bool,
    rate: Option<u32>,
    duration: u64,
    log: &Path,
) -> Result<Figures> {
    let mut args: Vec<String> = vec![
        "-c".into(),
        "0".into(),
        "-D".into(),
        duration.to_string(),
        "--warm-up-time".into(),
        "2".into(),
        format!("--connect-to={connect_to}"),
        format!("--log-file={}", log.display()),
    ];
    match rate {
        // Open loop: 20 connections, each at rate/20 requests per second.
        Some(rate) => {
            args[1] = "20".into();
            args.push(format!("--rps={}", rate / 20));
        }
        // Closed loop at saturation: HTTP/1.1 64 connections; HTTP/2 16
        // connections of 8 streams.
        None if h1 => args[1] = "64".into(),
        None => {
            args[1] = "16".into();
            args.extend(["-m".into(), "8".into()]);
        }
    }
    if h1 {
        args.push("--h1".into());
    }
    args.push(url.into());
    let _ = std::fs::remove_file(log);
    let output = Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg("h2load")
        .args(&args)
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut figures = Figures::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            figures.rps = rest
                .split(", ")
                .nth(1)
                .and_then(|s| s.trim_end_matches(" req/s").parse().ok())
                .unwrap_or(0.0);
        }
        if let Some(rest) = line.strip_prefix("requests: ") {
            let count = |word: &str| {
                rest.split(", ")
                    .find(|p| p.ends_with(word))
                    .and_then(|p| p.split(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            figures.ok = count(" succeeded");
            figures.failed = count(" failed") + count(" errored") + count(" timeout");
        }
    }
    let mut latencies: Vec<u64> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    figures.p50_ms = percentile(0.50);
    figures.p99_ms = percentile(0.99);
    Ok(figures)
}

struct Setup {
    dir: PathBuf,
    me: PathBuf,
    upstream: SocketAddr,
}

fn start_proxy(kind: ProxyKind, workers: usize, setup: &Setup) -> Result<(Running, SocketAddr)> {
    let cpus = if workers == 1 { "1" } else { "0,1" };
    let dir = &setup.dir;
    match kind {
        ProxyKind::C4m => {
            let workers = workers.to_string();
            let upstream = setup.upstream.to_string();
            let args = [
                "serve",
                "--workers",
                &workers,
                "--dir",
                dir.to_str().context("utf-8 dir")?,
                "--upstream",
                &upstream,
            ];
            let (running, addr) = spawn_pinned(cpus, &setup.me, &args, "c4m gateway", true)?;
            Ok((running, addr.context("the gateway's address")?))
        }
        ProxyKind::Nginx => {
            let port = free_port()?;
            let config = format!(
                r#"worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  # nginx closes a connection after 1,000 requests by default (HTTP/2
  # too); h2load does not reconnect HTTP/2. The others have no such limit.
  keepalive_requests 1000000000;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  upstream backend {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    server_name {HOST};
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /bench {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location / {{ return 404; }}
  }}
}}
"#,
                dir = dir.display(),
                upstream = setup.upstream,
            );
            std::fs::write(dir.join("nginx.conf"), config)?;
            let conf = dir.join("nginx.conf");
            let args = [
                "-p",
                dir.to_str().context("utf-8 dir")?,
                "-e",
                "nginx-error.log",
                "-c",
                conf.to_str().context("utf-8")?,
            ];
            let (running, _) =
                spawn_pinned(cpus, Path::new("/usr/sbin/nginx"), &args, "nginx", false)?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            wait_listening(addr)?;
            Ok((running, addr))
        }
        ProxyKind::Haproxy => {
            let port = free_port()?;
            let config = format!(
                r#"global
  nbthread {workers}
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:{port} ssl crt {dir}/haproxy.pem alpn h2,http/1.1
  acl bench_host hdr(host) -i {HOST}
  acl bench_path path_beg /bench
  http-request deny deny_status 404 unless bench_host bench_path
  default_backend upstream
backend upstream
  http-reuse always
  server one {upstream}
"#,
                dir = dir.display(),
                upstream = setup.upstream,
            );
            std::fs::write(dir.join("haproxy.cfg"), config)?;
            let conf = dir.join("haproxy.cfg");
            let (running, _) = spawn_pinned(
                cpus,
                Path::new("/usr/sbin/haproxy"),
                &["-db", "-f", conf.to_str().context("utf-8")?],
                "haproxy",
                false,
            )?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            wait_listening(addr)?;
            Ok((running, addr))
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let duration: u64 = flag(args, "--duration").map_or(Ok(10), str::parse)?;
    let rate: u32 = flag(args, "--rate").map_or(Ok(2000), str::parse)?;
    let rounds: usize = flag(args, "--rounds").map_or(Ok(3), str::parse)?;
    let only = flag(args, "--only");
    for tool in ["taskset", "h2load", "/usr/sbin/nginx", "/usr/sbin/haproxy"] {
        require(tool)?;
    }
    let dir = std::env::temp_dir().join(format!("c4m-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, duration, rate, rounds, only);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One table row's measurements over the rounds.
#[derive(Default)]
struct Row {
    runs: Vec<Figures>,
    idle_kib: u64,
    peak_kib: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn run_in(dir: &Path, duration: u64, rate: u32, rounds: usize, only: Option<&str>) -> Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![HOST.to_owned()])?.self_signed(&key)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    std::fs::write(
        dir.join("haproxy.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )?;

    let me = std::env::current_exe()?;
    let (_upstream, upstream) = spawn_pinned("0", &me, &["upstream"], "upstream", true)?;
    let setup = Setup {
        dir: dir.to_owned(),
        me,
        upstream: upstream.context("the upstream's address")?,
    };
    let url = format!("https://{HOST}/bench/item");
    let kinds: Vec<ProxyKind> = [ProxyKind::C4m, ProxyKind::Nginx, ProxyKind::Haproxy]
        .into_iter()
        .filter(|k| only.is_none_or(|o| o == k.name()))
        .collect();
    let loads = [
        ("HTTP/1.1", true, Some(rate)),
        ("HTTP/1.1", true, None),
        ("HTTP/2", false, Some(rate)),
        ("HTTP/2", false, None),
    ];
    let mut rows: std::collections::BTreeMap<(usize, usize, usize), Row> = Default::default();
    for round in 1..=rounds {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!("round {round}/{rounds}: load average {}", load.trim());
        // Proxies take turns within each round, so the machine's other
        // work weighs on each alike.
        for workers in [1, 2] {
            for (k, kind) in kinds.iter().enumerate() {
                let (proxy, addr) = start_proxy(*kind, workers, &setup)?;
                let pid = proxy.child.id();
                // A first few requests warm the TLS and upstream connections.
                h2load(&url, addr, true, Some(20), 1, &dir.join("warm.log"))?;
                let idle = rss_kib(pid);
                let peak = Arc::new(AtomicU64::new(idle));
                let sampling = Arc::new(AtomicBool::new(true));
                let sampler = {
                    let (peak, sampling) = (peak.clone(), sampling.clone());
                    std::thread::spawn(move || {
                        while sampling.load(Ordering::Relaxed) {
                            peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    })
                };
                for (l, (_, h1, fixed)) in loads.iter().enumerate() {
                    let figures =
                        h2load(&url, addr, *h1, *fixed, duration, &dir.join("requests.log"))?;
                    let row = rows.entry((workers, k, l)).or_default();
                    row.runs.push(figures);
                    row.idle_kib = row.idle_kib.max(idle);
                }
                sampling.store(false, Ordering::Relaxed);
                let _ = sampler.join();
                for l in 0..loads.len() {
                    let row = rows.entry((workers, k, l)).or_default();
                    row.peak_kib = row.peak_kib.max(peak.load(Ordering::Relaxed));
                }
                drop(proxy);
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# gateway benchmark: {rounds} rounds of {duration} s per run, fixed rate {rate} req/s; medians over the rounds"
    );
    println!();
    println!(
        "| workers | protocol | load | proxy | req/s | p50 ms | p99 ms | failed | RSS idle MiB | RSS peak MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for ((workers, k, l), row) in &rows {
        let (protocol, _, fixed) = loads[*l];
        let label = fixed.map_or("max".to_owned(), |r| format!("{r}/s"));
        let mut line = String::new();
        let _ = write!(
            line,
            "| {workers} | {protocol} | {label} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {:.1} |",
            kinds[*k].name(),
            median(row.runs.iter().map(|f| f.rps).collect()),
            median(row.runs.iter().map(|f| f.p50_ms).collect()),
            median(row.runs.iter().map(|f| f.p99_ms).collect()),
            row.runs.iter().map(|f| f.failed).sum::<u64>(),
            row.idle_kib as f64 / 1024.0,
            row.peak_kib as f64 / 1024.0
        );
        println!("{line}");
    }
    println!();
    println!("load average after: {}", load.trim());
    Ok(())
}

// ---- `upstream`: the origin server ----

fn upstream() -> Result<()> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

// ---- `serve`: the c4m gateway ----

fn serve(args: &[String]) -> Result<()> {
    use c4m_mesh::gateway::{Gateway, GatewayOptions};
    use c4m_mesh::proxy::StaticEndpoints;
    use c4m_mesh::proxy::routes::{Inputs, ServicePort, ServiceRef, translate};

    let workers: usize = flag(args, "--workers").context("--workers")?.parse()?;
    let dir = PathBuf::from(flag(args, "--dir").context("--dir")?);
    let upstream: SocketAddr = flag(args, "--upstream").context("--upstream")?.parse()?;

    let objects = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: c4m}}
spec: {{controllerName: c4m.io/gateway}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: bench}}
spec:
  gatewayClassName: c4m
  listeners:
  - {{name: https, port: 443, protocol: HTTPS, hostname: {HOST}, tls: {{certificateRefs: [{{name: bench-tls}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: bench, namespace: bench}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [{HOST}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /bench}}}}]
    backendRefs: [{{name: bench, port: 80}}]
"#
    );
    let docs: Vec<&str> = objects.split("\n---\n").collect();
    let classes = [serde_yaml::from_str(docs[0])?];
    let gateways = [serde_yaml::from_str(docs[1])?];
    let routes = [serde_yaml::from_str(docs[2])?];
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            namespace: Some("bench".into()),
            name: Some("bench-tls".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (
                    "tls.crt".to_owned(),
                    k8s_openapi::ByteString(std::fs::read(dir.join("cert.pem"))?),
                ),
                (
                    "tls.key".to_owned(),
                    k8s_openapi::ByteString(std::fs::read(dir.join("key.pem"))?),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let secrets = [secret];
    let inputs = Inputs {
        gateway_classes: &classes,
        gateways: &gateways,
        http_routes: &routes,
        secrets: &secrets,
        ..Inputs::new("c4m.io/gateway")
    };
    let translation = translate(&inputs);
    if !translation.errors.is_empty() {
        bail!("translation: {:?}", translation.errors);
    }
    let endpoints = StaticEndpoints::new();
    let service = ServiceRef {
        namespace: "bench".into(),
        name: "bench".into(),
        port: ServicePort::Number(80),
    };
    endpoints.set(
        service,
        c4m_mesh::proxy::ServiceEndpoints::http1([upstream]),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut options = GatewayOptions::default();
        options.bind_overrides.insert(443, "127.0.0.1:0".parse()?);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (gateway, _report) =
            Gateway::start(translation.config, endpoints, options, shutdown.clone())?;
        println!(
            "listening {}",
            gateway.local_addr(443).context("the listener")?
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        shutdown.cancel();
        gateway.stopped().await;
        anyhow::Ok(())
    })
}
