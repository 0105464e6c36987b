//! End-to-end figures through the real binaries: apply → instance Ready
//! latency for a process service, and the resident memory of an idle agent
//! and control plane.
//!
//!     cargo build --release --bins && ./target/release/c4m-e2e-bench [ROUNDS]
//!
//! It starts `c4m control` and `c4m agent` (found next to this binary) on
//! free loopback ports in a temporary directory, and stops them at the end.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use c4m_api::{ApplyObject, ApplyRequest, Client, Credentials};
use futures::StreamExt;
use serde_json::{Value, json};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(50);
    let bin = std::env::current_exe()?.with_file_name("c4m");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bins` first",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let (api, grpc, dns) = (free_port()?, free_port()?, free_port()?);
    let credentials = Credentials {
        access_token: "bench".into(),
        secret_key: "bench-secret".into(),
    };
    let env = [
        ("C4M_ACCESS_TOKEN", "bench"),
        ("C4M_SECRET_KEY", "bench-secret"),
        ("RUST_LOG", "warn"),
    ];
    let control = Daemon(
        Command::new(&bin)
            .args([
                "control",
                "--api",
                &format!("127.0.0.1:{api}"),
                "--grpc",
                &format!("127.0.0.1:{grpc}"),
            ])
            .args(["--dns", &format!("127.0.0.1:{dns}"), "--data-dir"])
            .arg(dir.path().join("control"))
            .envs(env)
            .stderr(Stdio::null())
            .spawn()?,
    );
    let client = Client::new(&format!("http://127.0.0.1:{api}"), Some(&credentials))?;
    let pods = c4m_core::ResourceKind::from_name("pods").context("pods kind")?;
    let nodes = c4m_core::ResourceKind::from_name("nodes").context("nodes kind")?;
    let started = Instant::now();
    while client.list(nodes, None, None).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the control plane did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = Daemon(
        Command::new(&bin)
            .args([
                "agent", "--name", "bench", "--cpu", "64", "--memory", "64Gi",
            ])
            .args([
                "--control-plane",
                &format!("http://127.0.0.1:{grpc}"),
                "--data-dir",
            ])
            .arg(dir.path().join("agent"))
            .envs(env)
            .stderr(Stdio::null())
            .spawn()?,
    );
    while client.list(nodes, None, None).await?["items"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_agent = rss_kib(agent.0.id())?;
    let idle_control = rss_kib(control.0.id())?;

    let microservices = c4m_core::ResourceKind::from_name("microservices").context("kind")?;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let name = format!("lat-{round}");
        let listed = client.list(pods, Some("default"), None).await?;
        let from = listed["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let mut events = Box::pin(client.watch(pods, Some("default"), &from).await?);
        let request = ApplyRequest {
            objects: vec![ApplyObject {
                source: "bench".into(),
                document: 1,
                object: json!({
                    "apiVersion": "c4m.io/v1", "kind": "Microservice",
                    "metadata": {"name": name},
                    "spec": {"command": ["sleep", "3600"], "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}},
                }),
            }],
            default_namespace: None,
        };
        let applied = Instant::now();
        client.apply(&request).await?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), events.next())
                .await
                .context("no Ready instance within 30 s")?
                .context("watch ended")??;
            let pod = &event.object;
            if pod["metadata"]["labels"]["c4m.io/microservice"] == name.as_str() && is_ready(pod) {
                break;
            }
        }
        latencies.push(applied.elapsed());
        client.delete(microservices, Some("default"), &name).await?;
    }
    // Deleted microservices take their instances with them: wait for the
    // agent to have stopped every one, so the run leaves nothing behind.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.list(pods, None, None).await?["items"]
        .as_array()
        .is_some_and(|p| !p.is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_agent = rss_kib(agent.0.id())?;
    let after_control = rss_kib(control.0.id())?;
    latencies.sort();
    println!("apply -> instance Ready (process driver, {rounds} rounds, one at a time):");
    println!(
        "  p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    println!("resident memory (VmRSS):");
    println!(
        "  idle agent {:.1} MiB (after the rounds {:.1} MiB)",
        idle_agent as f64 / 1024.0,
        after_agent as f64 / 1024.0
    );
    println!(
        "  control plane {:.1} MiB (after the rounds {:.1} MiB)",
        idle_control as f64 / 1024.0,
        after_control as f64 / 1024.0
    );
    drop(agent);
    drop(control);
    Ok(())
}
