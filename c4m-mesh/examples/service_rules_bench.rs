//! Service virtual IPs in nftables, measured (root; network namespaces it
//! makes and removes):
//!
//! - the time `ServiceRules::sync` takes to program a table of 100, 1,000
//!   and 10,000 Services from nothing (the first sync), and then one
//!   Service's change (an endpoint turning unready), the median of 9;
//! - TCP connection setup through a cluster IP against a direct connection
//!   to the endpoint, interleaved in one run, p50 and p99, with the
//!   largest table loaded (the verdict map's lookup does not grow with it).
//!
//! `sudo cargo run -p c4m-mesh --features linux --example service_rules_bench [CONNECTIONS]`

#[path = "../tests/service_lab/mod.rs"]
mod service_lab;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use c4m_mesh::{ServiceRules, ServiceTable, enter_network_namespace};
use serde_json::{Value, json};
use service_lab::{Lab, TARGET_PORT};

const SIZES: [usize; 3] = [100, 1_000, 10_000];

/// `count` Services `svc-N` with cluster IPs from 10.96.0.10 on, two
/// endpoints each; Service 0's endpoint is `reached`, the others' are not
/// reached. `unready`: Service 1's first endpoint is not ready.
fn services(count: usize, reached: Ipv4Addr, unready: bool) -> ServiceTable {
    let mut objects = Vec::with_capacity(count);
    let mut slices = Vec::with_capacity(count);
    for n in 0..count {
        let name = format!("svc-{n}");
        let cluster_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + n as u32);
        objects.push(json!({"metadata": {"name": name, "namespace": "bench"},
            "spec": {"clusterIP": cluster_ip.to_string(), "ports": [{"name": "http", "port": 80}]}}));
        let endpoints: Vec<Value> = if n == 0 {
            vec![json!({"addresses": [reached.to_string()], "conditions": {"ready": true}})]
        } else {
            (0..2u32)
                .map(|e| {
                    let address =
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 77, 0, 0)) + 2 * n as u32 + e);
                    let ready = !(unready && n == 1 && e == 0);
                    json!({"addresses": [address.to_string()], "conditions": {"ready": ready}})
                })
                .collect()
        };
        slices.push(
            json!({"metadata": {"name": format!("{name}-1"), "namespace": "bench",
                "labels": {"kubernetes.io/service-name": name}},
            "endpoints": endpoints, "ports": [{"name": "http", "port": TARGET_PORT}]}),
        );
    }
    let (table, problems) = ServiceTable::from_objects(&objects, &slices);
    assert!(problems.is_empty(), "{problems:?}");
    table
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root (network namespaces, nftables)"
    );
    let connections: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let lab = Lab::new(9, 1);
    lab.serve(1)?;

    println!("Service change → rules programmed (ServiceRules::sync, nft 1 transaction)");
    println!(
        "{:>8}  {:>14}  {:>20}",
        "services", "first sync ms", "one change ms (p50)"
    );
    for size in SIZES {
        let mut rules = ServiceRules::new("bench").in_namespace(&lab.node());
        let reached = lab.endpoint(1);
        let (ready, unready) = (
            services(size, reached, false),
            services(size, reached, true),
        );
        let started = Instant::now();
        rules.sync(&ready).await?;
        let first = started.elapsed();
        let mut changes = Vec::new();
        for round in 0..9 {
            let table = if round % 2 == 0 { &unready } else { &ready };
            let started = Instant::now();
            let report = rules.sync(table).await?;
            changes.push(started.elapsed());
            ensure!(
                report.changed == 1 && !report.full,
                "one change: {report:?}"
            );
        }
        changes.sort();
        println!(
            "{size:>8}  {:>14.1}  {:>20.1}",
            millis(first),
            millis(percentile(&changes, 0.5))
        );
        if size != *SIZES.last().unwrap() {
            rules.remove().await?;
        }
    }

    let through = SocketAddr::from(([10, 96, 0, 10], 80));
    let direct = SocketAddr::from((lab.endpoint(1), TARGET_PORT));
    let (mut via_service, mut straight) =
        enter_network_namespace(&lab.client_namespace(), move || {
            let mut timed = (Vec::new(), Vec::new());
            for i in 0..connections * 2 {
                let (to, into) = if i % 2 == 0 {
                    (through, &mut timed.0)
                } else {
                    (direct, &mut timed.1)
                };
                let started = Instant::now();
                let stream = TcpStream::connect(to);
                into.push(started.elapsed());
                stream.expect("connected");
            }
            timed
        })?;
    via_service.sort();
    straight.sort();
    println!(
        "\nTCP connect, {connections} each, interleaved, {} Services loaded",
        SIZES.last().unwrap()
    );
    println!("{:>12}  {:>8}  {:>8}", "", "p50 µs", "p99 µs");
    for (name, times) in [("cluster IP", &via_service), ("direct", &straight)] {
        println!(
            "{name:>12}  {:>8.0}  {:>8.0}",
            percentile(times, 0.5).as_secs_f64() * 1e6,
            percentile(times, 0.99).as_secs_f64() * 1e6
        );
    }
    Ok(())
}
