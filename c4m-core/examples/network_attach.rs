//! Measures `LinuxNetwork` against the kernel: attach and detach time per
//! instance (namespace, veth, address, route), and that neither leaks file
//! descriptors. Needs root; uses 10.99.200.0/24 and removes what it makes.
//!
//! ```sh
//! cargo run -p c4m-core --example network_attach [-- COUNT]
//! ```

use std::time::{Duration, Instant};

use c4m_core::{LinuxNetwork, Network, VpcNetwork};

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> c4m_core::Result<()> {
    let count: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let run_dir = tempfile::tempdir().map_err(|e| c4m_core::Error::io("a run dir", e))?;
    let network = LinuxNetwork::open(run_dir.path())?;
    let vpc = VpcNetwork {
        name: "attach-bench".into(),
        subnet: "10.99.200.0/24".parse().expect("a valid subnet"),
    };
    network.ensure_vpc(&vpc).await?;
    let descriptors = open_descriptors();

    let started = Instant::now();
    for i in 0..count {
        network
            .attach(&format!("bench-{i}"), "default", &vpc)
            .await?;
    }
    let attach = started.elapsed() / count;
    let started = Instant::now();
    for i in 0..count {
        network.detach(&format!("bench-{i}")).await?;
    }
    let detach = started.elapsed() / count;
    // Netlink connections of finished attaches end on their own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "{count} instances: attach {attach:?} each, detach {detach:?} each; \
         descriptors {descriptors} before, {} after",
        open_descriptors()
    );
    network.remove_vpc(&vpc.name).await?;
    Ok(())
}
