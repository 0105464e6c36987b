//! `overlay`: TCP throughput between instances on two hosts over the VXLAN
//! overlay, beside the same two hosts over the plain veth links beneath it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use c4m_testkit::Hosts;
use serde_json::{Value, json};

use super::{ControlPlane, import_busybox, is_ready, kind};

/// The hosts' subnet (the overlay test uses 10.99.250.0/24).
const UNDERLAY: [u8; 3] = [10, 99, 251];
/// The default VPC's range here.
const VPC: &str = "10.99.176.0/20";
const PORT: u16 = 5201;
const MEGABYTE: usize = 1_000_000;

pub(crate) async fn run(megabytes: u64, rounds: usize) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the overlay bench needs root (namespaces, links, containers)");
    }
    if c4m_runtime::find_oci_binaries().is_none() {
        bail!("the overlay bench needs runc (or crun) and conmon");
    }
    let hosts = Hosts::create(UNDERLAY, 2);
    let control = ControlPlane::start_on(&hosts.gateway().to_string()).await?;
    let mut agents = Vec::new();
    for index in 1..=2 {
        let name = format!("host{index}");
        let address = hosts.address(index).to_string();
        let listen = format!("{address}:0");
        let flags = [
            "--name",
            &name,
            "--cpu",
            "4",
            "--memory",
            "4Gi",
            "--instance-network",
            "--default-vpc-cidr",
            VPC,
            "--address",
            &address,
            "--listen",
            &listen,
        ];
        let agent = control
            .agent_from(
                hosts.command(index, control.agent_bin.to_str().unwrap_or("c4m-agent")),
                &name,
                &flags,
                index,
            )
            .await?;
        agents.push(agent);
        import_busybox(&control, &name).await?;
    }
    for (pod, host) in [("receiver", "host2"), ("sender", "host1")] {
        control
            .apply(
                vec![json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": "default"},
                    "spec": {"runtimeClassName": "oci", "terminationGracePeriodSeconds": 1,
                        "nodeSelector": {"kubernetes.io/hostname": host},
                        "containers": [{"name": "main", "image": "bb:1", "command": ["sleep", "3600"]}]},
                })],
                1,
            )
            .await?;
    }
    let receiver = wait_ready(&control, "receiver").await?;
    wait_ready(&control, "sender").await?;
    let receiver_ip = receiver["status"]["podIP"]
        .as_str()
        .context("the receiver has no address")?
        .to_string();
    let sender_netns = instance_netns(&control.dir.path().join("host1"), "sender")?;
    let receiver_netns = instance_netns(&control.dir.path().join("host2"), "receiver")?;

    let mut overlay = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..rounds {
        overlay.push(measure(
            &receiver_netns,
            &sender_netns,
            format!("{receiver_ip}:{PORT}").parse()?,
            megabytes,
        )?);
        plain.push(measure(
            &hosts.namespace_path(2),
            &hosts.namespace_path(1),
            SocketAddr::new(hosts.address(2).into(), PORT),
            megabytes,
        )?);
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (overlay, plain) = (median(&mut overlay), median(&mut plain));
    println!(
        "TCP throughput between two hosts ({megabytes} MB per round, median of {rounds}, one stream):"
    );
    println!("  {:<38} {plain:>6.0} MB/s", "plain veth (host to host)");
    println!(
        "  {:<38} {overlay:>6.0} MB/s  ({:.0}% of plain)",
        "VXLAN overlay (instance to instance)",
        overlay / plain * 100.0
    );

    for pod in ["sender", "receiver"] {
        control
            .client
            .delete(kind("pods")?, Some("default"), pod)
            .await?;
    }
    control.wait_no_pods(Duration::from_secs(60)).await?;
    // Give the agents a moment to remove the containers and their networks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(agents);
    Ok(())
}

/// MB/s of one transfer of `megabytes` MB from a sender in network
/// namespace `from` to a receiver at `to` in namespace `at`.
fn measure(at: &Path, from: &Path, to: SocketAddr, megabytes: u64) -> Result<f64> {
    let me = std::env::current_exe()?;
    let mut sink = Command::new("nsenter")
        .arg(format!("--net={}", at.display()))
        .arg("--")
        .arg(&me)
        .args(["sink", &to.port().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("nsenter (util-linux) is needed")?;
    let mut ready = String::new();
    BufReader::new(sink.stdout.take().context("the sink's stdout")?).read_line(&mut ready)?;
    if ready.trim() != "listening" {
        let _ = sink.kill();
        bail!("the receiver did not start: {ready:?}");
    }
    let output = Command::new("nsenter")
        .arg(format!("--net={}", from.display()))
        .arg("--")
        .arg(&me)
        .args(["source", &to.to_string(), &megabytes.to_string()])
        .output();
    let output = match output {
        Ok(output) if output.status.success() => {
            let _ = sink.wait();
            output
        }
        // The sink still waits for a connection: end it.
        failed => {
            let _ = sink.kill();
            let _ = sink.wait();
            let output = failed?;
            bail!(
                "the sender failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    let seconds: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("the sender's time")?;
    Ok(megabytes as f64 / seconds)
}

/// `sink PORT`: receives one connection to its end.
pub(crate) fn sink(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("listening");
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    let mut buffer = vec![0u8; 1 << 20];
    while stream.read(&mut buffer)? > 0 {}
    Ok(())
}

/// `source TO MEGABYTES`: sends, then prints the seconds from connecting
/// until the receiver closed (it had everything).
pub(crate) fn source(to: SocketAddr, megabytes: u64) -> Result<()> {
    let buffer = vec![0x5au8; MEGABYTE];
    let started = Instant::now();
    let mut stream = TcpStream::connect(to)?;
    for _ in 0..megabytes {
        stream.write_all(&buffer)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    println!("{}", started.elapsed().as_secs_f64());
    Ok(())
}

/// The instance `pod` once Ready.
async fn wait_ready(control: &ControlPlane, pod: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(object) = control
            .client
            .get(kind("pods")?, Some("default"), pod)
            .await
            && is_ready(&object)
        {
            return Ok(object);
        }
        if Instant::now() > deadline {
            bail!("instance {pod} did not become Ready within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The network namespace the agent with data dir `agent` made for `pod`.
fn instance_netns(agent: &Path, pod: &str) -> Result<PathBuf> {
    let dir = agent.join("network").join("netns");
    let prefix = format!("default_{pod}_");
    std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .with_context(|| format!("no network namespace of {pod} in {}", dir.display()))
}
