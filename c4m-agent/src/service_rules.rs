//! Services' virtual IPs on this node: [`keep_service_rules`] programs the
//! Services and EndpointSlices the control plane streams (`WatchObjects`)
//! into nftables with `c4m_mesh::ServiceRules`, on every change, as
//! kube-proxy does on each node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c4m_mesh::{OverlayVpc, ServiceRules, ServiceTable, changed_or_retry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::objects::ObjectSet;

/// The kinds the rules are made from.
pub(crate) const KINDS: [&str; 2] = ["services", "endpointslices"];

/// How long a failed sync waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// How often the whole table is written again, whatever changed: what
/// changed it behind the agent's back is repaired (kube-proxy's full sync
/// period).
const FULL_SYNC: Duration = Duration::from_secs(3600);

/// Keeps `rules` in step with the Services and EndpointSlices in
/// `objects` and the VPCs this node serves (their gateways are the source
/// of masqueraded traffic into the overlay), until `shutdown`. Nothing is
/// programmed before the first whole set arrived. A node that cannot
/// program nftables (not root, no `nft`) says so once and goes on without
/// Service virtual IPs, trying again now and then. The table stays when
/// the agent stops: instances outlive their agent, and so does their
/// traffic. Every [`FULL_SYNC`] the whole table is written again.
pub(crate) async fn keep_service_rules(
    mut rules: ServiceRules,
    mut objects: watch::Receiver<Option<Arc<ObjectSet>>>,
    mut vpcs: watch::Receiver<BTreeMap<String, OverlayVpc>>,
    shutdown: CancellationToken,
) {
    let mut problems: Vec<String> = Vec::new();
    let mut failing = false;
    let mut last_full = Instant::now();
    loop {
        if last_full.elapsed() >= FULL_SYNC {
            rules.forget();
        }
        let set = objects.borrow_and_update().clone();
        let gateways: Vec<_> = vpcs
            .borrow_and_update()
            .values()
            .map(|vpc| (vpc.cidr, vpc.local.gateway()))
            .collect();
        let retry = match set {
            None => None,
            Some(set) => {
                let (mut table, found) = ServiceTable::from_objects(
                    set.of_kind(KINDS[0]).map(|o| o.as_ref()),
                    set.of_kind(KINDS[1]).map(|o| o.as_ref()),
                );
                if found != problems {
                    for problem in found.iter().filter(|p| !problems.contains(p)) {
                        tracing::warn!(%problem, "a Service gets no virtual IP rules");
                    }
                    problems = found;
                }
                if let Err(problem) = table.set_vpc_gateways(gateways) {
                    tracing::warn!(%problem, "service traffic into the overlay is not masqueraded");
                }
                match rules.sync(&table).await {
                    Ok(report) => {
                        if report.full {
                            last_full = Instant::now();
                        }
                        if failing || report.full {
                            tracing::info!(
                                service_ports = table.len(),
                                "service virtual IPs programmed"
                            );
                        }
                        failing = false;
                        Some(FULL_SYNC.saturating_sub(last_full.elapsed()))
                    }
                    Err(e) => {
                        if failing {
                            tracing::debug!(error = %e, "service rules still not programmed");
                        } else {
                            tracing::warn!(error = %e, retry_in = ?RETRY, "cannot program Service virtual IPs (nftables); the node goes on without them");
                        }
                        failing = true;
                        Some(RETRY)
                    }
                }
            }
        };
        if !changed_or_retry(&mut objects, &mut vpcs, retry, &shutdown).await {
            return;
        }
    }
}
