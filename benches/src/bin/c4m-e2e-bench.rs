//! End-to-end figures through the real binaries.
//!
//!     cargo build --release --bins
//!     ./target/release/c4m-e2e-bench latency [--rounds 50]
//!     ./target/release/c4m-e2e-bench schedule [--nodes 5000] [--instances 10000]
//!     ./target/release/c4m-e2e-bench microservices [--nodes 100] [--count 10000]
//!     ./target/release/c4m-e2e-bench jobs [--nodes 100] [--jobs 1000] [--run-for 1s]
//!     ./target/release/c4m-e2e-bench api [--nodes 200] [--instances 10000] [--rounds 5]
//!     sudo ./target/release/c4m-e2e-bench oci [--instances 100] [--driver oci|containerd] [--agent-subcommand]
//!     sudo ./target/release/c4m-e2e-bench overlay [--megabytes 1024] [--rounds 3]
//!     sudo ./target/release/c4m-e2e-bench volumes [--rounds 20] [--claims 100] [--fill-mib 768]
//!     sudo ./target/release/c4m-e2e-bench volumes-crash [--rounds 20] [--seed S]
//!
//! - `latency`: apply → instance Ready for a process service on a real
//!   agent, one at a time, and the resident memory of the idle agent and
//!   control plane.
//! - `schedule`: `--instances` bare instances created in one batch on
//!   `--nodes` hollow nodes; how long from created to all bound, through the
//!   real API, store, scheduler and cache (kube-scheduler's scheduler_perf
//!   shape, end to end).
//! - `microservices`: `--count` Microservices of one replica each on
//!   `--nodes` hollow nodes, until every instance is Running and Ready; the
//!   control plane's resident memory then (and its peak).
//! - `jobs`: `--jobs` Jobs of one pod each, created in one batch, on
//!   `--nodes` hollow nodes whose Job pods run `--run-for` and exit 0; how
//!   long from created to every Job Complete (the Job controller, the
//!   scheduler, the agents' reports and the controller again), in jobs/s.
//! - `api`: `--instances` instances Running on hollow nodes, then the real
//!   `kubectl get pods -A` (a Table over HTTPS, `$KUBECTL` or
//!   `/usr/bin/kubectl`; it asks for chunks of 500) and a full list through
//!   the HTTP API with c4m's client, as JSON and as Kubernetes protobuf,
//!   each `--rounds` times (median, slowest), and a watch receiving a second
//!   batch of instances (objects/s once the batch has committed).
//!
//! - `oci`: `--instances` instances in oci containers (a busybox image built
//!   here and imported), applied one after the other on one real agent and
//!   left running: apply → Ready p50/p99, then the agent's resident memory
//!   (`c4m-agent`; `c4m agent` with `--agent-subcommand`) with all of them
//!   running and, separately, the containers' monitors (conmon, or
//!   containerd's shims). Needs root, runc (or crun), conmon and
//!   `/bin/busybox`.
//!
//! - `overlay`: TCP throughput between two simulated hosts (network
//!   namespaces on a switch, `c4m_testkit::Hosts`), each with an agent and
//!   one oci instance: instance to instance over the VXLAN overlay, and
//!   host to host over the plain veth links beneath it, side by side. A
//!   Rust sender and receiver (this binary, in the namespaces) move
//!   `--megabytes` MB each round; the median of `--rounds` is printed.
//!   Needs root, runc (or crun), conmon and `/bin/busybox`.
//!
//! - `volumes` and `volumes-crash`: persistent volumes on one oci node
//!   with local volumes (see `e2e/volumes.rs`, `e2e/volumes_crash.rs`):
//!   claim + pod → Ready, many claims → Bound, a snapshot → readyToUse;
//!   and `--rounds` rounds of `kill -9` of the agent at random
//!   c4m-storage fail points (and of the control plane while claims
//!   provision) under a random workload, each round checked for the
//!   declared state, the fsynced data and leaks, its `--seed` printed.
//!   Needs root, runc (or crun), conmon, losetup and e2fsprogs.
//!
//! With `C4M_BENCH_CONTROL_LOG=FILE`, the control plane logs to FILE, with
//! the scheduler's per-cycle timings (`refresh_ms`, `snapshot_ms`,
//! `place_ms`, `write_ms`); with `C4M_BENCH_AGENT_LOG=FILE` the agents log
//! there (info); `C4M_BENCH_RUST_LOG` sets another filter for both.
//!
//! It starts `c4m control` and `c4m agent` (found next to this binary) on
//! free loopback ports in a temporary directory, and stops them at the end.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use c4m_api::{ApplyObject, ApplyRequest, Client, Credentials};
use c4m_benches::percentile;
use c4m_core::ResourceKind;
use clap::{Parser, Subcommand};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

#[path = "e2e/overlay.rs"]
mod overlay;
#[path = "e2e/volumes.rs"]
mod volumes;
#[path = "e2e/volumes_crash.rs"]
mod volumes_crash;

#[derive(Parser)]
#[command(about = "End-to-end benchmarks through the real c4m binaries")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Apply → instance Ready latency on a real agent, and idle memory.
    Latency {
        /// How many services to apply, one after the other.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// Instances created in one batch, until all are bound (hollow nodes).
    Schedule {
        /// Hollow nodes.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Instances.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// Run the control plane with `--no-events`, to measure what
        /// recording Events costs.
        #[arg(long)]
        no_events: bool,
    },
    /// kubectl get pods -A latency, list and watch throughput with many
    /// instances (hollow nodes).
    Api {
        /// Hollow nodes.
        #[arg(long, default_value_t = 200)]
        nodes: usize,
        /// Instances.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// How many times each request is timed.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Apply → Ready of oci containers on one agent, and its memory with
    /// them running.
    Oci {
        /// Instances, applied one after the other and left running.
        #[arg(long, default_value_t = 100)]
        instances: usize,
        /// The driver running them: `oci` (runc under conmon), or
        /// `containerd` (runc under containerd's shim; a containerd of the
        /// bench's own), the peer.
        #[arg(long, default_value = "oci")]
        driver: String,
        /// Run the agent as `c4m agent` (the whole CLI's binary) instead of
        /// `c4m-agent`, to compare their memory.
        #[arg(long)]
        agent_subcommand: bool,
    },
    /// TCP throughput between instances on two hosts over the overlay,
    /// and between the hosts over plain veth.
    Overlay {
        /// Megabytes moved per round.
        #[arg(long, default_value_t = 1024)]
        megabytes: u64,
        /// Rounds per path (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Persistent volumes on one oci node (root): claim + pod -> Ready
    /// with the volume mounted, many claims -> Bound, a 1 GiB volume's
    /// snapshot -> readyToUse.
    Volumes {
        /// Claim + pod pairs, one after the other.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Claims created at once.
        #[arg(long, default_value_t = 100)]
        claims: usize,
        /// MiB of random data in the snapshotted 1 GiB volume.
        #[arg(long, default_value_t = 768)]
        fill_mib: u64,
    },
    /// A random crash run of volumes on one oci node (root): the agent
    /// killed at random c4m-storage fail points, sometimes the control
    /// plane while claims provision, under a random workload; after each
    /// round the declared state, the fsynced data and no leak.
    VolumesCrash {
        /// Rounds (each a fail point armed and a workload).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// The seed of the run's random draws [default: from the clock].
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Receives one TCP connection on `port` to its end (run by `overlay`
    /// inside a network namespace).
    #[command(hide = true)]
    Sink {
        /// Port to listen on (every address).
        port: u16,
    },
    /// Sends `megabytes` MB to `to` and prints the seconds until the
    /// receiver has it all (run by `overlay` inside a network namespace).
    #[command(hide = true)]
    Source {
        /// The receiver.
        to: std::net::SocketAddr,
        /// Megabytes to send.
        megabytes: u64,
    },
    /// Jobs of one pod each, from created to Complete (hollow nodes whose
    /// Job pods run `--run-for`, then exit 0).
    Jobs {
        /// Hollow nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Jobs.
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// How long each Job's pod runs on its hollow node (`c4m agent
        /// --hollow-run-for`).
        #[arg(long, default_value = "1s")]
        run_for: String,
    },
    /// Microservices of one replica, until all run (hollow nodes).
    Microservices {
        /// Hollow nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Microservices.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A control plane on free loopback ports, with a client for its API.
struct ControlPlane {
    daemon: Daemon,
    client: Client,
    /// Where agents dial (`IP:PORT`).
    grpc: String,
    bin: PathBuf,
    /// `c4m-agent`, beside `c4m`: the agent as nodes run it.
    agent_bin: PathBuf,
    /// `c4m`'s arguments, to start it again on the same ports and data.
    args: Vec<String>,
    dir: tempfile::TempDir,
}

/// Environment variable naming a file for the control plane's log, with
/// the scheduler's debug events.
const CONTROL_LOG: &str = "C4M_BENCH_CONTROL_LOG";
const AGENT_LOG: &str = "C4M_BENCH_AGENT_LOG";
/// Overrides the filter of the logs the two variables above ask for.
const LOG_FILTER: &str = "C4M_BENCH_RUST_LOG";

/// Sends `command`'s stderr to the file the environment variable `variable`
/// names, at `filter` (or `C4M_BENCH_RUST_LOG`'s), or to nowhere.
fn log_to(command: &mut Command, variable: &str, filter: &str) -> Result<()> {
    match std::env::var_os(variable) {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("{variable}: cannot open {path:?}"))?;
            let filter = std::env::var(LOG_FILTER).unwrap_or_else(|_| filter.to_string());
            command.env("RUST_LOG", filter).stderr(file)
        }
        None => command.stderr(Stdio::null()),
    };
    Ok(())
}

const ENV: [(&str, &str); 3] = [
    ("C4M_ACCESS_TOKEN", "bench"),
    ("C4M_SECRET_KEY", "bench-secret"),
    ("RUST_LOG", "warn"),
];

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn kind(name: &str) -> Result<&'static ResourceKind> {
    ResourceKind::from_name(name).with_context(|| format!("kind {name}"))
}

/// Starts `c4m` with `args` (a control plane); its log goes to the file
/// [`CONTROL_LOG`] names, with the scheduler's debug events, or nowhere.
fn spawn_control(bin: &std::path::Path, args: &[String]) -> Result<Daemon> {
    let mut command = Command::new(bin);
    command.args(args).envs(ENV);
    // The scheduler's per-cycle figures (snapshot_ms, place_ms, write_ms)
    // are debug events: written to this file when it is set.
    log_to(
        &mut command,
        CONTROL_LOG,
        "warn,c4m_control::scheduler=debug",
    )?;
    Ok(Daemon(command.spawn()?))
}

impl ControlPlane {
    async fn start() -> Result<ControlPlane> {
        ControlPlane::start_with("127.0.0.1", &[]).await
    }

    /// A control plane whose agents' gRPC and DNS listen on `address` (its
    /// API stays on loopback).
    async fn start_on(address: &str) -> Result<ControlPlane> {
        ControlPlane::start_with(address, &[]).await
    }

    /// [`ControlPlane::start_on`] with `extra` flags for `c4m control`.
    async fn start_with(address: &str, extra: &[&str]) -> Result<ControlPlane> {
        let bin = std::env::current_exe()?.with_file_name("c4m");
        let agent_bin = bin.with_file_name("c4m-agent");
        for bin in [&bin, &agent_bin] {
            if !bin.exists() {
                bail!(
                    "{} not found: run `cargo build --release --bins` first",
                    bin.display()
                );
            }
        }
        let dir = tempfile::tempdir()?;
        let (api, grpc, dns) = (free_port()?, free_port()?, free_port()?);
        let mut args: Vec<String> = ["control", "--api", &format!("127.0.0.1:{api}")]
            .into_iter()
            .map(str::to_string)
            .collect();
        args.extend(["--grpc".into(), format!("{address}:{grpc}")]);
        args.extend(["--dns".into(), format!("{address}:{dns}")]);
        args.extend([
            "--data-dir".into(),
            dir.path().join("control").display().to_string(),
        ]);
        args.extend(extra.iter().map(|flag| flag.to_string()));
        for variable in [CONTROL_LOG, AGENT_LOG] {
            if let Some(path) = std::env::var_os(variable) {
                // Emptied once: restarted processes append.
                std::fs::File::create(&path)
                    .with_context(|| format!("{variable}: cannot create {path:?}"))?;
            }
        }
        let credentials = Credentials {
            access_token: "bench".into(),
            secret_key: "bench-secret".into(),
        };
        let client = Client::new(&format!("http://127.0.0.1:{api}"), Some(&credentials))?;
        let control = ControlPlane {
            daemon: spawn_control(&bin, &args)?,
            client,
            grpc: format!("{address}:{grpc}"),
            bin,
            agent_bin,
            args,
            dir,
        };
        control.wait_api().await?;
        Ok(control)
    }

    /// Waits until the API answers.
    async fn wait_api(&self) -> Result<()> {
        let started = Instant::now();
        while self.client.list(kind("nodes")?, None, None).await.is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the control plane did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGKILLs the control plane and starts it again on the same ports and
    /// data directory, until its API answers.
    async fn restart(&mut self) -> Result<()> {
        self.daemon.0.kill()?;
        self.daemon.0.wait()?;
        self.daemon = spawn_control(&self.bin, &self.args)?;
        self.wait_api().await
    }

    /// Starts `c4m-agent` with `args` and waits until `nodes` nodes are
    /// Ready. A real agent (one node) gets a data directory; hollow ones
    /// have none.
    async fn agent(&self, args: &[&str], nodes: usize) -> Result<Daemon> {
        self.agent_from(Command::new(&self.agent_bin), "agent", args, nodes)
            .await
    }

    /// [`ControlPlane::agent`] run by `command` (`c4m-agent`, possibly
    /// through `nsenter`), its data in the directory `data`.
    async fn agent_from(
        &self,
        command: Command,
        data: &str,
        args: &[&str],
        nodes: usize,
    ) -> Result<Daemon> {
        let mut command = self.agent_command(command, data, args);
        log_to(&mut command, AGENT_LOG, "info")?;
        let mut agent = Daemon(command.spawn()?);
        self.wait_nodes_ready(&mut agent, nodes).await?;
        Ok(agent)
    }

    /// `command` (`c4m-agent`) made an agent of this control plane with
    /// `args`, its data in the directory `data` unless it is hollow.
    fn agent_command(&self, mut command: Command, data: &str, args: &[&str]) -> Command {
        command
            .args(args)
            .args(["--control-plane", &format!("http://{}", self.grpc)])
            .envs(ENV);
        if !args.contains(&"--hollow") {
            command.arg("--data-dir").arg(self.dir.path().join(data));
        }
        command
    }

    /// Waits until `nodes` nodes are Ready; fails if `agent` exits first.
    async fn wait_nodes_ready(&self, agent: &mut Daemon, nodes: usize) -> Result<()> {
        let started = Instant::now();
        loop {
            let listed = self.client.list(kind("nodes")?, None, None).await?;
            let ready = listed["items"]
                .as_array()
                .map_or(0, |nodes| nodes.iter().filter(|n| is_ready(n)).count());
            if ready >= nodes {
                return Ok(());
            }
            if let Some(status) = agent.0.try_wait()? {
                bail!("the agent exited with {status}");
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("only {ready} of {nodes} nodes became Ready");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until no instance is left (at most `limit`).
    async fn wait_no_pods(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.client.list(kind("pods")?, None, None).await?["items"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn rss(&self) -> Result<Memory> {
        Memory::of(self.daemon.0.id())
    }

    /// A watch on every instance, from now.
    async fn watch_pods(&self) -> Result<impl Stream<Item = Result<Value>> + use<>> {
        self.watch("pods").await
    }

    /// The time from applying `objects` to the pod `name` being Ready.
    async fn time_to_ready(&self, name: &str, objects: Vec<Value>) -> Result<Duration> {
        let events = self.watch_pods().await?;
        let applied = Instant::now();
        let count = objects.len();
        self.apply(objects, count).await?;
        follow(events, Duration::from_secs(120), |pod| {
            pod["metadata"]["name"] == name && is_ready(pod)
        })
        .await?;
        Ok(applied.elapsed())
    }

    /// A watch on every object of the kind `plural`, from now.
    async fn watch(&self, plural: &str) -> Result<impl Stream<Item = Result<Value>> + use<>> {
        let kind = kind(plural)?;
        let listed = self.client.list(kind, None, None).await?;
        let from = listed["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let events = self.client.watch(kind, None, &from).await?;
        Ok(events.map(|event| Ok(event?.object)))
    }

    /// Applies `objects` in batches of `batch`, all or nothing each.
    async fn apply(&self, objects: Vec<Value>, batch: usize) -> Result<()> {
        let mut objects = objects.into_iter().peekable();
        while objects.peek().is_some() {
            let request = ApplyRequest {
                objects: objects
                    .by_ref()
                    .take(batch)
                    .enumerate()
                    .map(|(index, object)| ApplyObject {
                        source: "bench".into(),
                        document: index + 1,
                        object,
                    })
                    .collect(),
                default_namespace: None,
            };
            self.client.apply(&request).await?;
        }
        Ok(())
    }
}

/// Resident memory of a process.
struct Memory {
    current_kib: u64,
    peak_kib: u64,
    /// Of `current_kib`: heap, stacks and other private memory.
    anon_kib: u64,
    /// Of `current_kib`: pages of mapped files (the binary's code, mostly).
    file_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Memory {
            current_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
        })
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn is_ready(object: &Value) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Reads `events` until `done` says the set it keeps is complete, or
/// `limit` passes.
async fn follow(
    events: impl Stream<Item = Result<Value>>,
    limit: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Result<()> {
    let mut events = std::pin::pin!(events);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .with_context(|| format!("not done within {limit:?}"))?
            .context("the watch ended")??;
        if done(&event) {
            return Ok(());
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().bench {
        Bench::Latency { rounds } => latency(rounds).await,
        Bench::Schedule {
            nodes,
            instances,
            no_events,
        } => schedule(nodes, instances, no_events).await,
        Bench::Microservices { nodes, count } => microservices(nodes, count).await,
        Bench::Jobs {
            nodes,
            jobs: count,
            run_for,
        } => jobs(nodes, count, &run_for).await,
        Bench::Api {
            nodes,
            instances,
            rounds,
        } => api(nodes, instances, rounds).await,
        Bench::Oci {
            instances,
            driver,
            agent_subcommand,
        } => oci(instances, &driver, agent_subcommand).await,
        Bench::Overlay { megabytes, rounds } => overlay::run(megabytes, rounds).await,
        Bench::Volumes {
            rounds,
            claims,
            fill_mib,
        } => volumes::run(rounds, claims, fill_mib).await,
        Bench::VolumesCrash { rounds, seed } => volumes_crash::run(rounds, seed).await,
        Bench::Sink { port } => overlay::sink(port),
        Bench::Source { to, megabytes } => overlay::source(to, megabytes),
    }
}

async fn latency(rounds: usize) -> Result<()> {
    let control = ControlPlane::start().await?;
    let agent = control
        .agent(&["--name", "bench", "--cpu", "64", "--memory", "64Gi"], 1)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_agent = Memory::of(agent.0.id())?;
    let idle_control = control.rss()?;

    let microservices = kind("microservices")?;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let name = format!("lat-{round}");
        let events = control.watch_pods().await?;
        let applied = Instant::now();
        control
            .apply(
                vec![json!({
                    "apiVersion": "c4m.io/v1", "kind": "Microservice",
                    "metadata": {"name": name},
                    "spec": {"command": ["sleep", "3600"], "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}},
                })],
                1,
            )
            .await?;
        follow(events, Duration::from_secs(30), |pod| {
            pod["metadata"]["labels"]["c4m.io/microservice"] == name.as_str() && is_ready(pod)
        })
        .await?;
        latencies.push(applied.elapsed());
        control
            .client
            .delete(microservices, Some("default"), &name)
            .await?;
    }
    // Deleted microservices take their instances with them: wait for the
    // agent to have stopped every one, so the run leaves nothing behind.
    control.wait_no_pods(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_agent = Memory::of(agent.0.id())?;
    let after_control = control.rss()?;
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
        mib(idle_agent.current_kib),
        mib(after_agent.current_kib)
    );
    println!(
        "  control plane {:.1} MiB (after the rounds {:.1} MiB)",
        mib(idle_control.current_kib),
        mib(after_control.current_kib)
    );
    Ok(())
}

/// Imports a busybox image as `bb:1` into `node`'s store, through the API
/// as `c4m image import` does.
async fn import_busybox(control: &ControlPlane, node: &str) -> Result<()> {
    let layout = control.dir.path().join("image").join(node);
    let config = oci_spec::image::ConfigBuilder::default()
        .cmd(vec!["/bin/sh".to_string()])
        .build()?;
    c4m_image::write_busybox_image(std::path::Path::new("/bin/busybox"), &layout, "1", config)?;
    let archive = c4m_image::tar_directory(&layout)?;
    control
        .client
        .import_image(node, "bb", reqwest::Body::from(archive))
        .await?;
    Ok(())
}

async fn oci(instances: usize, driver: &str, agent_subcommand: bool) -> Result<()> {
    if c4m_runtime::find_oci_binaries().is_none() {
        bail!("the oci bench needs runc (or crun) and conmon");
    }
    let control = ControlPlane::start().await?;
    // The monitors holding the containers: conmon for `oci`, containerd's
    // shims for `containerd` (whose command line names its socket).
    let (containerd, monitor, needle) = match driver {
        "oci" => (None, "conmon", control.dir.path().join("agent")),
        "containerd" => {
            let daemon = c4m_testkit::Containerd::start(&control.dir.path().join("containerd"));
            let socket = daemon.socket().to_owned();
            (Some(daemon), "containerd-shim", socket)
        }
        other => bail!("the oci bench runs the oci or containerd driver, not {other:?}"),
    };
    let mut flags = vec![
        "--name".to_string(),
        "bench".into(),
        "--cpu".into(),
        "64".into(),
        "--memory".into(),
        "64Gi".into(),
        "--max-instances".into(),
        "1000".into(),
    ];
    if let Some(daemon) = &containerd {
        flags.push("--containerd-socket".into());
        flags.push(daemon.socket().display().to_string());
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = if agent_subcommand {
        let mut command = Command::new(&control.bin);
        command.arg("agent");
        control.agent_from(command, "agent", &flags, 1).await?
    } else {
        control.agent(&flags, 1).await?
    };
    let nodes = control.client.list(kind("nodes")?, None, None).await?;
    let drivers = nodes["items"][0]["metadata"]["annotations"][c4m_core::annotations::DRIVERS]
        .as_str()
        .unwrap_or_default();
    if !drivers
        .split(',')
        .any(|d| d.starts_with(&format!("{driver}=")))
    {
        bail!("the agent does not offer the {driver} driver (not root?): {drivers}");
    }
    import_busybox(&control, "bench").await?;

    let mut latencies = Vec::with_capacity(instances);
    for index in 0..instances {
        let name = format!("oci-{index:04}");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"runtimeClassName": driver, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "bb:1",
                "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}}}]},
        });
        latencies.push(control.time_to_ready(&name, vec![pod]).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent_memory = Memory::of(agent.0.id())?;
    let monitors = monitors_rss_kib(monitor, &needle)?;

    let pods = kind("pods")?;
    for index in 0..instances {
        control
            .client
            .delete(pods, Some("default"), &format!("oci-{index:04}"))
            .await?;
    }
    control.wait_no_pods(Duration::from_secs(300)).await?;
    // Let the agent remove the containers (monitors, mounts, cgroups)
    // before it stops: an oci container is gone with its directory, which
    // goes after its overlay is unmounted (the monitor exits before that).
    let containers = control.dir.path().join("agent/oci/containers");
    let any_left = |dir: &std::path::Path| {
        std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while monitors_rss_kib(monitor, &needle)?.0 > 0 || any_left(&containers) {
        if Instant::now() > deadline {
            bail!("the agent did not remove every container within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    latencies.sort();
    println!(
        "apply -> instance Ready ({driver} driver, {instances} containers, one at a time, left running):"
    );
    println!(
        "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    println!("resident memory (VmRSS) with {instances} containers running:");
    println!(
        "  agent ({}) {:.1} MiB (peak {:.1} MiB): {:.1} MiB private, {:.1} MiB of mapped files (code)",
        if agent_subcommand {
            "c4m agent"
        } else {
            "c4m-agent"
        },
        mib(agent_memory.current_kib),
        mib(agent_memory.peak_kib),
        mib(agent_memory.anon_kib),
        mib(agent_memory.file_kib),
    );
    println!(
        "  {monitor} monitors: {} processes, {:.1} MiB in all",
        monitors.0,
        mib(monitors.1)
    );
    Ok(())
}

/// How many `monitor` processes (by name) mention `needle` on their command
/// line (the agent's directory, containerd's socket), and their resident
/// memory in all (KiB).
fn monitors_rss_kib(monitor: &str, needle: &std::path::Path) -> Result<(usize, u64)> {
    let needle = needle.display().to_string();
    let (mut count, mut total) = (0, 0);
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if comm.trim().starts_with(monitor)
            && String::from_utf8_lossy(&cmdline).contains(&needle)
            && let Ok(memory) = Memory::of(pid)
        {
            count += 1;
            total += memory.current_kib;
        }
    }
    Ok((count, total))
}

/// Flags of a hollow agent of `nodes` nodes of 8 CPUs and 32 GiB.
fn hollow(nodes: usize) -> Vec<String> {
    ["--hollow", &nodes.to_string(), "--name", "hollow"]
        .into_iter()
        .chain(["--cpu", "8", "--memory", "32Gi", "--max-instances", "110"])
        .map(str::to_string)
        .collect()
}

/// Creates `instances` bare instances in one batch and waits until every
/// one is bound; returns how long the creation took, and until all were
/// bound (both from the start).
async fn create_bound_instances(
    control: &ControlPlane,
    instances: usize,
) -> Result<(Duration, Duration)> {
    let pods: Vec<Value> = (0..instances)
        .map(|index| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("sched-{index:05}"), "namespace": "default"},
                "spec": {"containers": [{"name": "main", "image": "bench", "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            })
        })
        .collect();
    let events = control.watch_pods().await?;
    let started = Instant::now();
    control.apply(pods, instances).await?;
    let created = started.elapsed();
    let mut bound = HashSet::new();
    follow(events, Duration::from_secs(600), |pod| {
        if pod["spec"]["nodeName"].is_string() {
            bound.insert(
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        bound.len() >= instances
    })
    .await?;
    Ok((created, started.elapsed()))
}

async fn schedule(nodes: usize, instances: usize, no_events: bool) -> Result<()> {
    let extra: &[&str] = if no_events { &["--no-events"] } else { &[] };
    let control = ControlPlane::start_with("127.0.0.1", extra).await?;
    let flags = hollow(nodes);
    let _agent = control
        .agent(&flags.iter().map(String::as_str).collect::<Vec<_>>(), nodes)
        .await?;
    let before = control.rss()?;
    let (created, all_bound) = create_bound_instances(&control, instances).await?;
    let binding = all_bound - created;
    let after = control.rss()?;
    println!(
        "{instances} instances on {nodes} hollow nodes (one batch apply, then the scheduler{}):",
        if no_events { ", no Events" } else { "" }
    );
    println!("  created in {:.3} s", created.as_secs_f64());
    print_rates(instances, "instances", "bound", binding, all_bound);
    println!(
        "  control plane RSS {:.1} MiB with the nodes only, {:.1} MiB after (peak {:.1} MiB)",
        mib(before.current_kib),
        mib(after.current_kib),
        mib(after.peak_kib)
    );
    Ok(())
}

async fn microservices(nodes: usize, count: usize) -> Result<()> {
    let control = ControlPlane::start().await?;
    let flags = hollow(nodes);
    let _agent = control
        .agent(&flags.iter().map(String::as_str).collect::<Vec<_>>(), nodes)
        .await?;
    let objects: Vec<Value> = (0..count)
        .map(|index| {
            json!({
                "apiVersion": "c4m.io/v1", "kind": "Microservice",
                "metadata": {"name": format!("svc-{index:05}"), "namespace": "default"},
                "spec": {"command": ["sleep", "3600"], "ports": [{"name": "http", "containerPort": 8080}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
            })
        })
        .collect();
    let events = control.watch_pods().await?;
    let started = Instant::now();
    control.apply(objects, 1000).await?;
    let applied = started.elapsed();
    let mut running = HashSet::new();
    follow(events, Duration::from_secs(1200), |pod| {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if pod["status"]["phase"] == "Running" && is_ready(pod) {
            running.insert(name.to_string());
        } else {
            running.remove(name);
        }
        running.len() >= count
    })
    .await?;
    let all_running = started.elapsed();
    // Let the controllers settle (endpoints, workload status) before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let memory = control.rss()?;
    println!("{count} microservices (1 replica each) on {nodes} hollow nodes:");
    println!(
        "  applied in {:.3} s (batches of 1,000)",
        applied.as_secs_f64()
    );
    println!(
        "  all instances Running and Ready {:.3} s after the first apply ({:.0} instances/s)",
        all_running.as_secs_f64(),
        count as f64 / all_running.as_secs_f64()
    );
    println!(
        "  control plane RSS {:.1} MiB (peak {:.1} MiB)",
        mib(memory.current_kib),
        mib(memory.peak_kib)
    );
    Ok(())
}

fn is_complete(job: &Value) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

async fn jobs(nodes: usize, count: usize, run_for: &str) -> Result<()> {
    let control = ControlPlane::start().await?;
    let mut flags = hollow(nodes);
    flags.extend(["--hollow-run-for".to_string(), run_for.to_string()]);
    let _agent = control
        .agent(&flags.iter().map(String::as_str).collect::<Vec<_>>(), nodes)
        .await?;
    let objects: Vec<Value> = (0..count)
        .map(|index| {
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": format!("job-{index:05}"), "namespace": "default"},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "bench", "command": ["sleep", "1"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
            })
        })
        .collect();
    let events = control.watch("jobs").await?;
    let started = Instant::now();
    control.apply(objects, count).await?;
    let created = started.elapsed();
    let mut complete = HashSet::new();
    follow(events, Duration::from_secs(1200), |job| {
        if is_complete(job) {
            complete.insert(
                job["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        complete.len() >= count
    })
    .await?;
    let all_complete = started.elapsed();
    let memory = control.rss()?;
    let after_creation = all_complete - created;
    println!("{count} Jobs (one pod each, running {run_for}) on {nodes} hollow nodes:");
    println!("  created in {:.3} s (one batch)", created.as_secs_f64());
    print_rates(count, "jobs", "Complete", after_creation, all_complete);
    println!(
        "  control plane RSS {:.1} MiB (peak {:.1} MiB)",
        mib(memory.current_kib),
        mib(memory.peak_kib)
    );
    Ok(())
}

/// How fast `count` objects (`unit`) reached `state`: from their creation
/// (`after_creation`) and from the apply (`end_to_end`). scripts/bench-events.sh
/// reads the first line.
fn print_rates(
    count: usize,
    unit: &str,
    state: &str,
    after_creation: Duration,
    end_to_end: Duration,
) {
    let rate = |took: Duration| count as f64 / took.as_secs_f64();
    println!(
        "  all {state} {:.3} s after creation: {:.0} {unit}/s (created → {state})",
        after_creation.as_secs_f64(),
        rate(after_creation)
    );
    println!(
        "  end to end {:.3} s: {:.0} {unit}/s (apply → all {state})",
        end_to_end.as_secs_f64(),
        rate(end_to_end)
    );
}

/// The store's revision, from an empty list.
async fn current_revision(control: &ControlPlane) -> Result<String> {
    let listed = control
        .client
        .list(kind("namespaces")?, None, Some("c4m.io/none=none"))
        .await?;
    Ok(listed["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string())
}

/// How long kubectl waited on its client-side rate limiter, from its
/// log (`-v=3` and above): the sum of its client-side throttling lines, as client-go
/// 1.32 writes them (`"Waited before sending request" delay="195.3ms"`)
/// or as earlier ones did (`Waited for 195.3ms due to client-side
/// throttling`); Go durations: 195.3ms, 1.2s, 900µs.
fn client_side_throttling(log: &str) -> Duration {
    log.lines()
        .filter(|line| line.contains("client-side throttling"))
        .filter_map(|line| {
            let text = match line.split_once("delay=\"") {
                Some((_, rest)) => rest.split('"').next()?,
                None => line.split("Waited for ").nth(1)?.split(' ').next()?,
            };
            let split = text.find(|c: char| c.is_alphabetic() || c == 'µ')?;
            let (number, unit) = text.split_at(split);
            let number: f64 = number.parse().ok()?;
            let seconds = match unit {
                "s" => number,
                "ms" => number / 1e3,
                "µs" | "us" => number / 1e6,
                "ns" => number / 1e9,
                _ => return None,
            };
            Duration::try_from_secs_f64(seconds).ok()
        })
        .sum()
}

/// Every instance as kubectl get pods -A asks for them: Table pages of
/// 500, each continuing the last. Returns the time taken and the pages.
async fn table_pages(client: &Client, instances: usize) -> Result<(Duration, usize)> {
    const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let started = Instant::now();
    let (mut rows, mut pages, mut token) = (0, 0, String::new());
    loop {
        let mut path = "/api/v1/pods?limit=500".to_string();
        if !token.is_empty() {
            // A token is base64: its +, / and = escaped for the query.
            let token = token
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            path.push_str(&format!("&continue={token}"));
        }
        let page: Value = client.get_path_as(&path, TABLE).await?;
        if page["kind"] != "Table" {
            bail!("asked for a Table, got {}", page["kind"]);
        }
        rows += page["rows"].as_array().map_or(0, Vec::len);
        pages += 1;
        token = page["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if token.is_empty() {
            break;
        }
    }
    if rows < instances {
        bail!("the Table pages had {rows} rows, expected {instances}");
    }
    Ok((started.elapsed(), pages))
}

/// The median and the slowest of `times`.
fn median_and_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 1.0))
}

async fn api(nodes: usize, instances: usize, rounds: usize) -> Result<()> {
    let rounds = rounds.max(1);
    let control = ControlPlane::start().await?;
    let flags = hollow(nodes);
    let _agent = control
        .agent(&flags.iter().map(String::as_str).collect::<Vec<_>>(), nodes)
        .await?;
    let pods = kind("pods")?;
    create_bound_instances(&control, instances).await?;
    // Let the cluster settle first (every instance reported Running, its
    // status written): lists timed while 10,000 status writes are still
    // under way measure those writes as much as the lists.
    let started = Instant::now();
    loop {
        let listed = control.client.list(pods, None, None).await?;
        let items = listed["items"].as_array().map_or(&[][..], Vec::as_slice);
        let running = items
            .iter()
            .filter(|pod| pod["status"]["phase"] == "Running")
            .count();
        if running >= instances {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {running} of {instances} instances Running after 5 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // kubectl get pods: a Table of every instance, over HTTPS.
    let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "/usr/bin/kubectl".into());
    let kubeconfig = control.dir.path().join("kubeconfig");
    let output = Command::new(&control.bin)
        .arg("kubeconfig")
        .env("C4M_ENDPOINT_URL", control.client.endpoint())
        .envs(ENV)
        .output()?;
    if !output.status.success() {
        bail!(
            "c4m kubeconfig: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(&kubeconfig, &output.stdout)?;
    let cache = control.dir.path().join("kubectl-cache");
    // kubectl's own wait: client-go's client-side rate limiter (5 requests/s
    // after a burst of 10) holds the 11th page of 500 onwards, whatever the
    // server; `-v=3` and above log each wait.
    let get_pods = |chunk_size: &str| -> Result<(Duration, Duration)> {
        let started = Instant::now();
        let output = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["get", "pods", "--all-namespaces", "--no-headers", "-v=6"])
            .arg(format!("--chunk-size={chunk_size}"))
            .output()
            .with_context(|| format!("run {}", kubectl.to_string_lossy()))?;
        let elapsed = started.elapsed();
        let rows = output
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // kubectl's -v=6 log of the last run of each chunk size
        // (PATH.500, PATH.0), to see where its time went.
        if let Some(path) = std::env::var_os("C4M_BENCH_KUBECTL_LOG") {
            let mut path = PathBuf::from(path).into_os_string();
            path.push(format!(".{chunk_size}"));
            std::fs::write(&path, &output.stderr)
                .with_context(|| format!("C4M_BENCH_KUBECTL_LOG: cannot write {path:?}"))?;
        }
        if !output.status.success() || rows < instances {
            bail!(
                "kubectl get pods failed or listed {rows} rows ({}): {stderr}",
                output.status
            );
        }
        Ok((elapsed, client_side_throttling(&stderr)))
    };
    get_pods("500")?; // fills kubectl's discovery cache
    let mut kubectl_times = Vec::with_capacity(rounds);
    let mut throttled_times = Vec::with_capacity(rounds);
    let mut one_request_times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (elapsed, throttled) = get_pods("500")?;
        kubectl_times.push(elapsed);
        throttled_times.push(throttled);
        one_request_times.push(get_pods("0")?.0);
    }

    // The server's part of kubectl get pods: the same Table pages of 500,
    // asked back to back with kubectl's Accept header and no rate limiter.
    let mut table_times = Vec::with_capacity(rounds);
    let mut pages = 0;
    for _ in 0..rounds {
        let (elapsed, count) = table_pages(&control.client, instances).await?;
        table_times.push(elapsed);
        pages = count;
    }

    // A list of every instance through the HTTP API with c4m's client, as
    // JSON and as Kubernetes protobuf (decoded into the same JSON values),
    // interleaved.
    let mut list_times = Vec::with_capacity(rounds);
    let mut protobuf_times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let listed = control.client.list(pods, None, None).await?;
        list_times.push(started.elapsed());
        std::hint::black_box(listed);
        let started = Instant::now();
        let listed = control.client.list_protobuf(pods, None, None).await?;
        protobuf_times.push(started.elapsed());
        let items = listed["items"].as_array().map_or(0, Vec::len);
        if items < instances {
            bail!("the protobuf list had {items} instances, expected {instances}");
        }
    }

    // A watch from now, then a second batch of instances in one
    // transaction: how fast their events arrive once it has committed.
    let events = control
        .client
        .watch(pods, None, &current_revision(&control).await?)
        .await?;
    let batch: Vec<Value> = (0..instances)
        .map(|index| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("watched-{index:05}"), "namespace": "default"},
                "spec": {"containers": [{"name": "main", "image": "bench", "command": ["sleep", "3600"]}]},
            })
        })
        .collect();
    control.apply(batch, instances).await?;
    let started = Instant::now();
    let mut seen = HashSet::new();
    follow(
        events.map(|e| Ok(e?.object)),
        Duration::from_secs(600),
        |pod| {
            if let Some(name) = pod["metadata"]["name"].as_str()
                && name.starts_with("watched-")
            {
                seen.insert(name.to_string());
            }
            seen.len() >= instances
        },
    )
    .await?;
    let watched = started.elapsed();

    let (kubectl_median, kubectl_max) = median_and_max(kubectl_times);
    let (throttled_median, _) = median_and_max(throttled_times);
    let (one_request_median, one_request_max) = median_and_max(one_request_times);
    let (table_median, table_max) = median_and_max(table_times);
    let (list_median, list_max) = median_and_max(list_times);
    let (protobuf_median, protobuf_max) = median_and_max(protobuf_times);
    println!("{instances} instances on {nodes} hollow nodes, {rounds} rounds:");
    println!(
        "  kubectl get pods -A (chunks of 500): median {:.0} ms, slowest {:.0} ms ({:.0} rows/s)",
        kubectl_median.as_secs_f64() * 1e3,
        kubectl_max.as_secs_f64() * 1e3,
        instances as f64 / kubectl_median.as_secs_f64()
    );
    println!(
        "    of which kubectl's own client-side throttling: median {:.0} ms",
        throttled_median.as_secs_f64() * 1e3,
    );
    println!(
        "  kubectl get pods -A --chunk-size=0 (one request): median {:.0} ms, slowest {:.0} ms",
        one_request_median.as_secs_f64() * 1e3,
        one_request_max.as_secs_f64() * 1e3,
    );
    println!(
        "  the server's part: its {pages} Table pages of 500 asked back to back: median {:.0} ms ({:.1} ms a page), slowest {:.0} ms",
        table_median.as_secs_f64() * 1e3,
        table_median.as_secs_f64() * 1e3 / pages.max(1) as f64,
        table_max.as_secs_f64() * 1e3,
    );
    println!(
        "  list (JSON, HTTP API): median {:.0} ms, slowest {:.0} ms ({:.0} objects/s)",
        list_median.as_secs_f64() * 1e3,
        list_max.as_secs_f64() * 1e3,
        instances as f64 / list_median.as_secs_f64()
    );
    println!(
        "  list (protobuf, HTTP API): median {:.0} ms, slowest {:.0} ms ({:.0} objects/s)",
        protobuf_median.as_secs_f64() * 1e3,
        protobuf_max.as_secs_f64() * 1e3,
        instances as f64 / protobuf_median.as_secs_f64()
    );
    println!(
        "  watch: {instances} new instances' events in {:.3} s after their batch committed ({:.0} objects/s)",
        watched.as_secs_f64(),
        instances as f64 / watched.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_throttling_waits_are_summed() {
        let log = "I1207 13:28:45.004008    1936 loader.go:402] Config loaded from file:  kubeconfig
I1207 13:28:45.205759    1936 request.go:661] Waited for 109.5ms due to client-side throttling, not priority and fairness, request: GET:http://127.0.0.1:1/api/v1/pods?limit=500
I1207 13:28:45.405621    1936 request.go:661] Waited for 1.2s due to client-side throttling, not priority and fairness, request: GET:http://127.0.0.1:1/api/v1/pods
I1207 13:28:45.405621    1936 request.go:661] Waited for 500µs due to client-side throttling, not priority and fairness, request: GET:x
I1207 13:28:45.405621    1936 request.go:661] Waited for garbage due to client-side throttling
I1207 16:41:31.968632   20544 request.go:683] \"Waited before sending request\" delay=\"146.362113ms\" reason=\"client-side throttling, not priority and fairness\" verb=\"GET\" URL=\"https://127.0.0.1:43015/api/v1/pods?limit=500\"";
        assert_eq!(
            client_side_throttling(log),
            Duration::from_nanos(109_500_000 + 1_200_000_000 + 500_000 + 146_362_113)
        );
        assert_eq!(client_side_throttling(""), Duration::ZERO);
    }
}
