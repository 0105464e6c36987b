//! The overlay seam: what joins this node's slices of each VPC to the other
//! nodes' (`VxlanOverlay` with feature `linux`), and [`keep_overlay`], which
//! keeps one in step with its peers (from the control plane) and the VPCs
//! the node serves (from its attachments).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Result, VpcNetwork};

/// Another node of the instance network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OverlayPeer {
    /// Where VXLAN reaches it.
    pub underlay: Ipv4Addr,
    /// Its slice of every VPC ([`node_slice`](crate::node_slice)).
    pub slice: u32,
}

/// A VPC this node serves, with its whole range (other nodes' slices are in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayVpc {
    /// The VPC on this node (its slice, its bridge).
    pub local: VpcNetwork,
    /// The VPC's range across the cluster.
    pub cidr: Ipv4Net,
}

/// The links between this node's instance network and its peers'.
#[async_trait]
pub trait Overlay: Send + Sync + 'static {
    /// The MTU instance interfaces must keep to for their packets to fit
    /// the overlay's encapsulation.
    fn mtu(&self) -> u32;

    /// Makes the overlay match `peers` and `vpcs` exactly: what is missing
    /// is added, what is stale removed.
    async fn sync(&self, peers: &[OverlayPeer], vpcs: &[OverlayVpc]) -> Result<()>;
}

/// How long a failed sync waits before it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Syncs `overlay` whenever the peers or the local VPCs change, and again
/// after a failure, until `shutdown`. The device stays when the agent
/// stops: instances outlive their agent, and so does their traffic.
pub async fn keep_overlay(
    overlay: Arc<dyn Overlay>,
    mut peers: watch::Receiver<Arc<BTreeMap<String, OverlayPeer>>>,
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
        if !changed_or_retry(&mut peers, &mut vpcs, retry, &shutdown).await {
            return;
        }
    }
}

/// Waits until `a` or `b` changes, or `retry` (when a sync failed) has
/// passed: true then; false once `shutdown` came or a sender is gone. The
/// wait of a keeper loop that syncs from two feeds.
pub async fn changed_or_retry<A, B>(
    a: &mut watch::Receiver<A>,
    b: &mut watch::Receiver<B>,
    retry: Option<Duration>,
    shutdown: &CancellationToken,
) -> bool {
    let retried = async {
        match retry {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => false,
        changed = a.changed() => changed.is_ok(),
        changed = b.changed() => changed.is_ok(),
        _ = retried => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeOverlay;

    #[tokio::test]
    async fn the_keeper_syncs_peers_and_vpcs_as_they_change() {
        let overlay = FakeOverlay::new();
        let (peers_tx, peers) = watch::channel(Arc::new(BTreeMap::new()));
        let (vpcs_tx, vpcs) = watch::channel(BTreeMap::new());
        let shutdown = CancellationToken::new();
        let keeper = tokio::spawn(keep_overlay(
            Arc::new(overlay.clone()),
            peers,
            vpcs,
            shutdown.clone(),
        ));
        let peer = OverlayPeer {
            underlay: Ipv4Addr::new(10, 99, 250, 2),
            slice: 1,
        };
        peers_tx.send_replace(Arc::new(BTreeMap::from([("b".to_string(), peer.clone())])));
        let vpc = OverlayVpc {
            local: VpcNetwork {
                name: "default".into(),
                subnet: "10.88.0.0/24".parse().unwrap(),
            },
            cidr: "10.88.0.0/16".parse().unwrap(),
        };
        vpcs_tx.send_replace(BTreeMap::from([("default".to_string(), vpc.clone())]));
        tokio::time::timeout(Duration::from_secs(10), async {
            while overlay.synced() != (vec![peer.clone()], vec![vpc.clone()]) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the overlay follows its peers and vpcs");
        shutdown.cancel();
        keeper.await.unwrap();
    }
}
