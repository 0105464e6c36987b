//! A node agent embedded in another program with one driver of its own
//! choosing (`process`) and no instance network.
//!
//! ```sh
//! cargo run -p c4m-agent --example one_driver -- http://127.0.0.1:8141 /tmp/c4m-node
//! ```

use std::collections::BTreeMap;

use c4m_agent::{Agent, AgentConfig, RestartBackoff, StorageConfig};
use c4m_plugin::NodeExtensions;
use c4m_runtime::ProcessRuntime;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let control_plane = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8141".into());
    let data_dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "c4m-node".into()));
    let config = AgentConfig {
        node_name: "embedded".into(),
        control_plane,
        token: std::env::var("C4M_TOKEN").ok(),
        data_dir: data_dir.clone(),
        cpu_millis: 2_000,
        memory_bytes: 2 << 30,
        max_instances: 50,
        labels: BTreeMap::from([("pool".into(), "batch".into())]),
        address: [127, 0, 0, 1].into(),
        listen: ([127, 0, 0, 1], 0).into(),
        default_driver: "process".into(),
        network: None,
        docker_socket: None,
        containerd_socket: None,
        cri_socket: None,
        restart_backoff: RestartBackoff::default(),
        pod_holder: None,
        gateway: None,
        storage: StorageConfig::default(),
    };
    let process = ProcessRuntime::new(data_dir.join("process"), config.address)?;
    let images = Agent::image_store(&config)?;
    let agent = Agent::bind(config, NodeExtensions::new().with_runtime(process), images).await?;
    println!("agent serving on http://{}", agent.http_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    agent.run(shutdown).await?;
    Ok(())
}
