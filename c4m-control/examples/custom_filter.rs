//! A control plane embedded in another program, with a scheduler filter of
//! its own: instances land only on nodes labelled `pool=batch`.
//!
//! ```sh
//! cargo run -p c4m-control --example custom_filter -- /tmp/c4m-example
//! c4m-agent --data-dir /tmp/c4m-node --label pool=batch --control-plane http://127.0.0.1:8141  # in dev mode
//! ```

use std::sync::Arc;

use c4m_control::{ControlPlane, ControlPlaneConfig};
use c4m_plugin::ControlPlaneExtensions;
use c4m_sched::{Filter, InstanceRequest, NodeView, Scope, UnfitReason};
use c4m_state::RedbStore;
use tokio_util::sync::CancellationToken;

/// Only nodes labelled `pool=batch` take instances.
#[derive(Debug)]
struct BatchPoolOnly;

impl Filter for BatchPoolOnly {
    /// Labels are shared by a class of nodes: the scheduler's index stays fast.
    fn scope(&self) -> Scope {
        Scope::Class
    }

    fn unfit_reasons(&self, _request: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        if node.info.labels.get("pool").map(String::as_str) == Some("batch") {
            Vec::new()
        } else {
            vec![UnfitReason::Custom("were not in the batch pool".into())]
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "c4m-example".into());
    std::fs::create_dir_all(&dir)?;
    let store = RedbStore::open(&std::path::Path::new(&dir).join("store.redb"))?;
    let extensions = ControlPlaneExtensions::new(Arc::new(store)).with_filter(BatchPoolOnly);
    // No token: a development control plane on loopback.
    let control = ControlPlane::bind(ControlPlaneConfig::default(), extensions).await?;
    println!(
        "API http://{} · agents http://{}",
        control.api_addr(),
        control.grpc_addr()
    );
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    control.run(shutdown).await?;
    Ok(())
}
