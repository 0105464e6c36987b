//! Measures `LinuxNetwork` against the kernel: attach and detach time per
//! instance (namespace, veth, address, route), and that neither leaks file
//! descriptors. Needs root; uses 10.99.200.0/24 and removes what it makes.
//! Given a `.conflist`, measures `CniNetwork` with that chain instead
//! (plugins from /usr/lib/cni).
//!
//! ```sh
//! cargo run -p c4m-mesh --features linux --example network_attach [-- COUNT [CONFLIST]]
//! ```

use std::time::{Duration, Instant};

use c4m_core::DEFAULT_VPC;
use c4m_mesh::{CniNetwork, LinuxNetwork, Network, VpcNetwork};

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
    let conflist = std::env::args().nth(2);
    let vpc = VpcNetwork {
        name: if conflist.is_some() {
            DEFAULT_VPC.into()
        } else {
            "attach-bench".into()
        },
        subnet: "10.99.200.0/24".parse().expect("a valid subnet"),
    };
    let network: Box<dyn Network> = match conflist {
        Some(conflist) => Box::new(
            CniNetwork::open(conflist.as_ref(), &["/usr/lib/cni".into()], run_dir.path()).await?,
        ),
        None => Box::new(LinuxNetwork::open(run_dir.path())?),
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
