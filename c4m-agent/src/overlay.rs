//! Keeps the node's VXLAN overlay in step with its peers (from the control
//! plane) and the VPCs it serves (from its attachments).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use c4m_core::{OverlayVpc, VxlanOverlay};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::session::Peers;

/// How long a failed sync waits before it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Syncs `overlay` whenever the peers or the local VPCs change, and again
/// after a failure, until `shutdown`. The device stays when the agent
/// stops: instances outlive their agent, and so does their traffic.
pub(crate) async fn keep_overlay(
    overlay: VxlanOverlay,
    mut peers: watch::Receiver<Arc<Peers>>,
    mut vpcs: watch::Receiver<BTreeMap<String, OverlayVpc>>,
    shutdown: CancellationToken,
) {
    loop {
        let wanted_peers: Vec<_> = peers.borrow_and_update().values().cloned().collect();
        let wanted_vpcs: Vec<_> = vpcs.borrow_and_update().values().cloned().collect();
        let retry = match overlay.sync(&wanted_peers, &wanted_vpcs).await {
            Ok(()) => {
                tracing::info!(
                    peers = wanted_peers.len(),
                    vpcs = wanted_vpcs.len(),
                    "overlay in step with the instance network"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?RETRY, "cannot sync the overlay");
                Some(RETRY)
            }
        };
        let retried = async {
            match retry {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = peers.changed() => if changed.is_err() { return },
            changed = vpcs.changed() => if changed.is_err() { return },
            _ = retried => {}
        }
    }
}
