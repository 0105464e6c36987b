//! The volume controllers: what Kubernetes' persistentvolume-controller,
//! external-provisioner, pvc/pv-protection, ephemeral-volume and
//! snapshot controllers do, over what the nodes report (`ReportVolumes`,
//! kept in [`VolumeReports`]).
//!
//! Level-triggered: each pass looks at every claim, volume and snapshot,
//! on a change of any kind it follows, on every changed node report, and on
//! a periodic resync.
//! - `ephemeral`: the claim `<pod>-<volume>` of each `ephemeral` volume,
//!   owned by its pod.
//! - `claims`: static binding (class, access modes, the smallest volume that
//!   fits, `selector`, pre-bound volumes), node selection for `Immediate`
//!   classes (best fit over the nodes' last reports), the PersistentVolume
//!   of a volume a node reports provisioned, phases (`Available`, `Bound`,
//!   `Released`, `Lost`), reclaim, the protection finalizers and expansion
//!   status.
//! - `snapshots`: VolumeSnapshotContents and the status of both kinds.
//!
//! The nodes do the rest (provision, restore, expand, snapshot, and delete
//! backend volumes and snapshots no object references).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use c4m_api::agent::{SnapshotState, VolumeReport, VolumeState};
use serde_json::Value;

use crate::Result;
use crate::cache::Cache;
use crate::objects::{Objects, kind};
use crate::volume_reports::VolumeReports;

pub(crate) mod admission;
mod claims;
mod ephemeral;
mod snapshots;

pub(crate) use ephemeral::{claims_of_pod, made_for};

/// The kinds whose changes start a pass.
pub(crate) const FOLLOWS: &[&str] = &[
    "persistentvolumes",
    "persistentvolumeclaims",
    "storageclasses",
    "volumesnapshots",
    "volumesnapshotcontents",
    "volumesnapshotclasses",
    "pods",
    "nodes",
];

/// The Event source of binding and protection.
const BINDER: &str = "persistentvolume-controller";
/// The Event source of provisioning and expansion.
const PROVISIONER: &str = "c4m-volume-provisioner";

/// What a pass reads besides the cache: the nodes' last reports and which
/// nodes are ready.
pub(crate) struct NodeStorage {
    reports: HashMap<String, VolumeReport>,
    ready: BTreeSet<String>,
}

impl NodeStorage {
    pub(crate) fn read(cache: &Cache, reports: &VolumeReports) -> NodeStorage {
        NodeStorage {
            reports: reports.all(),
            ready: cache
                .node_readiness()
                .into_iter()
                .filter(|(_, ready)| *ready)
                .map(|(name, _)| name)
                .collect(),
        }
    }

    /// The node holding backend volume `handle` of `driver`, with its state.
    fn volume(&self, driver: &str, handle: &str) -> Option<(&str, &VolumeState)> {
        self.reports.iter().find_map(|(node, report)| {
            report
                .volumes
                .iter()
                .find(|v| v.handle == handle && v.driver == driver)
                .map(|v| (node.as_str(), v))
        })
    }

    /// The node holding backend snapshot `handle`, with its state.
    fn snapshot(&self, handle: &str) -> Option<(&str, &SnapshotState)> {
        self.reports.iter().find_map(|(node, report)| {
            report
                .snapshots
                .iter()
                .find(|s| s.handle == handle)
                .map(|s| (node.as_str(), s))
        })
    }

    /// Free bytes for `driver` on each ready node that reports it, by node.
    fn free(&self, driver: &str) -> BTreeMap<&str, u64> {
        self.reports
            .iter()
            .filter(|(node, _)| self.ready.contains(*node))
            .filter_map(|(node, report)| {
                let capacity = report.capacity.iter().find(|c| c.driver == driver)?;
                Some((node.as_str(), capacity.free_bytes))
            })
            .collect()
    }
}

/// One pass over every storage object.
pub(crate) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    reports: &VolumeReports,
) -> Result<Option<i64>> {
    for node in reports.all().keys() {
        if cache.get(kind("nodes"), "", node).is_none() {
            reports.forget(node);
        }
    }
    let nodes = NodeStorage::read(cache, reports);
    let mut written = ephemeral::reconcile(objects, cache).await?;
    written = super::latest(written, claims::reconcile(objects, cache, &nodes).await?);
    written = super::latest(written, snapshots::reconcile(objects, cache, &nodes).await?);
    Ok(written)
}

/// Runs [`reconcile`] as the other controllers run, and again whenever a
/// node's storage report changes.
pub(crate) async fn run(
    objects: Objects,
    cache: Arc<Cache>,
    reports: Arc<VolumeReports>,
    resync: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let feed = cache.feed(FOLLOWS);
    let mut changed = reports.subscribe();
    let wake = Arc::clone(&feed);
    let wake_shutdown = shutdown.clone();
    let wakes = async move {
        loop {
            tokio::select! {
                _ = wake_shutdown.cancelled() => return,
                outcome = changed.changed() => {
                    if outcome.is_err() {
                        return;
                    }
                    wake.resync();
                }
            }
        }
    };
    let passes = super::run(
        "volumes",
        Arc::clone(&cache),
        feed,
        resync,
        shutdown,
        move |_| {
            let (objects, cache, reports) =
                (objects.clone(), Arc::clone(&cache), Arc::clone(&reports));
            async move { reconcile(&objects, &cache, &reports).await }
        },
    );
    tokio::join!(wakes, passes);
}

/// A claim's storage request in bytes.
fn requested_bytes(claim: &Value) -> Option<u64> {
    claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(|s| c4m_core::parse_memory_bytes(s).ok())
}

/// A volume's `capacity.storage` in bytes.
fn capacity_bytes(pv: &Value) -> Option<u64> {
    pv["spec"]["capacity"]["storage"]
        .as_str()
        .and_then(|s| c4m_core::parse_memory_bytes(s).ok())
}

/// Every object of `plural`, as cached.
fn all(cache: &Cache, plural: &str) -> Vec<Arc<Value>> {
    cache.list(kind(plural), None)
}

#[cfg(test)]
mod tests;
