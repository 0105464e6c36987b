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
//! - `orphans`: the volumes a node keeps that nothing references, on its
//!   Node object.
//!
//! The nodes do the rest (provision, restore, expand, snapshot, and delete
//! the backend volumes of reclaimed PersistentVolumes and the snapshots no
//! object references).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use c4m_api::agent::{SnapshotState, VolumeReport, VolumeState};
use serde_json::Value;

use crate::Result;
use crate::cache::Cache;
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, kind};
use crate::volume_reports::VolumeReports;

pub(crate) mod admission;
mod claims;
mod ephemeral;
mod orphans;
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

/// How often an Event that every pass would record again (a claim still
/// waiting, still failing) is recorded: as often as Kubernetes' controllers
/// resync, however often passes run.
pub(crate) const EVENT_REPEAT: Duration = Duration::from_secs(60);

/// When each (object, reason) last had its Event recorded, and with what
/// message.
#[derive(Default)]
pub(crate) struct Repeats(Mutex<HashMap<(String, String), (String, Instant)>>);

impl Repeats {
    /// Whether the Event `reason` with `message` on the object `uid` is
    /// due: never recorded, a new message, or [`EVENT_REPEAT`] ago.
    fn due(&self, uid: &str, reason: &str, message: &str) -> bool {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let key = (uid.to_string(), reason.to_string());
        match last.get(&key) {
            Some((said, at)) if said == message && now.duration_since(*at) < EVENT_REPEAT => false,
            _ => {
                if last.len() > REMEMBERED_EVENTS {
                    last.retain(|_, (_, at)| now.duration_since(*at) < EVENT_REPEAT);
                }
                last.insert(key, (message.to_string(), now));
                true
            }
        }
    }
}

/// Beyond this many remembered Events, the expired ones are forgotten.
const REMEMBERED_EVENTS: usize = 16_384;

/// What a pass reads besides the cache: the nodes' last reports and which
/// nodes are ready; and the Events it repeats.
pub(crate) struct NodeStorage<'a> {
    reports: HashMap<String, VolumeReport>,
    /// Every node, ready or not.
    known: BTreeSet<String>,
    ready: BTreeSet<String>,
    repeats: &'a Repeats,
}

impl NodeStorage<'_> {
    pub(crate) fn read<'a>(
        cache: &Cache,
        reports: &VolumeReports,
        repeats: &'a Repeats,
    ) -> NodeStorage<'a> {
        let nodes = cache.node_readiness();
        NodeStorage {
            reports: reports.all(),
            known: nodes.iter().map(|(name, _)| name.clone()).collect(),
            ready: nodes
                .into_iter()
                .filter(|(_, ready)| *ready)
                .map(|(name, _)| name)
                .collect(),
            repeats,
        }
    }

    /// Records an Event on `object` that a pass finds again each time (a
    /// claim still waiting), at most every [`EVENT_REPEAT`].
    fn note(
        &self,
        objects: &Objects,
        object: &Value,
        event_type: EventType,
        reason: &str,
        message: String,
        component: &'static str,
    ) {
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
        if self.repeats.due(uid, reason, &message) {
            objects.events().record(
                Regarding::of(object),
                event_type,
                reason,
                message,
                component,
            );
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
    repeats: &Repeats,
) -> Result<Option<i64>> {
    for node in reports.all().keys() {
        if cache.get(kind("nodes"), "", node).is_none() {
            reports.forget(node);
        }
    }
    let nodes = NodeStorage::read(cache, reports, repeats);
    let mut written = ephemeral::reconcile(objects, cache, &nodes).await?;
    written = super::latest(written, claims::reconcile(objects, cache, &nodes).await?);
    written = super::latest(written, snapshots::reconcile(objects, cache, &nodes).await?);
    written = super::latest(written, orphans::reconcile(objects, cache, &nodes).await?);
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
    let repeats = Arc::new(Repeats::default());
    let passes = super::run(
        "volumes",
        Arc::clone(&cache),
        feed,
        resync,
        shutdown,
        move |changes| {
            let (objects, cache, reports, repeats) = (
                objects.clone(),
                Arc::clone(&cache),
                Arc::clone(&reports),
                Arc::clone(&repeats),
            );
            async move {
                if !concerns_storage(&cache, &changes) {
                    return Ok(None);
                }
                reconcile(&objects, &cache, &reports, &repeats).await
            }
        },
    );
    tokio::join!(wakes, passes);
}

/// Whether `changes` may matter to storage: anything but pods, or a pod
/// that names a claim or an ephemeral volume (before or after the change).
/// Pods change far more often than storage does; the others need no pass.
fn concerns_storage(cache: &Cache, changes: &crate::cache::Changes) -> bool {
    const PODS: &str = "/registry/pods/";
    let names_a_claim = |stored: &crate::cache::Stored| {
        stored.contains(b"\"persistentVolumeClaim\"") || stored.contains(b"\"ephemeral\"")
    };
    changes.everything
        || changes.changed.iter().any(|(key, before)| {
            !key.starts_with(PODS)
                || before.as_ref().is_some_and(names_a_claim)
                || cache.stored(key).as_ref().is_some_and(names_a_claim)
        })
}

/// What the claims selected for a node but not yet in its report take of
/// it, by (driver, node): bytes that are not free, whatever the report
/// says. `provisioner` names a class's driver; `reported` tells whether a
/// node's report shows a backend volume (driver, handle) already.
/// The volume controller and the scheduler both pick nodes for claims, so
/// both count these.
pub(crate) fn promised(
    claims: &[Arc<Value>],
    provisioner: impl Fn(&str) -> Option<String>,
    reported: impl Fn(&str, &str) -> bool,
) -> BTreeMap<(String, String), u64> {
    let mut promised = BTreeMap::new();
    for claim in claims {
        let class = claim["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default();
        let (Some(node), Some(driver)) = (
            claim["metadata"]["annotations"][c4m_core::volumes::SELECTED_NODE].as_str(),
            provisioner(class),
        ) else {
            continue;
        };
        let handle = c4m_core::volumes::volume_handle_for_claim(
            claim["metadata"]["uid"].as_str().unwrap_or_default(),
        );
        if claim["spec"]["volumeName"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
            || reported(&driver, &handle)
        {
            continue;
        }
        *promised.entry((driver, node.to_string())).or_default() +=
            requested_bytes(claim).unwrap_or_default();
    }
    promised
}

/// Free bytes of c4m's local driver on each node that reported it, less
/// what is [`promised`] of it: what the scheduler may still give
/// `WaitForFirstConsumer` claims.
pub(crate) fn local_free_unpromised(
    cache: &Cache,
    reports: &HashMap<String, VolumeReport>,
) -> HashMap<String, u64> {
    let driver = c4m_core::volumes::LOCAL_DRIVER;
    let promised = promised(
        &all(cache, "persistentvolumeclaims"),
        |class| {
            cache
                .get(kind("storageclasses"), "", class)
                .and_then(|c| c["provisioner"].as_str().map(str::to_string))
        },
        |driver, handle| {
            reports.values().any(|report| {
                report
                    .volumes
                    .iter()
                    .any(|v| v.driver == driver && v.handle == handle)
            })
        },
    );
    reports
        .iter()
        .filter_map(|(node, report)| {
            let free = report
                .capacity
                .iter()
                .find(|c| c.driver == driver)?
                .free_bytes;
            let taken = promised
                .get(&(driver.to_string(), node.clone()))
                .copied()
                .unwrap_or_default();
            Some((node.clone(), free.saturating_sub(taken)))
        })
        .collect()
}

/// A claim's storage request in bytes.
pub(crate) fn requested_bytes(claim: &Value) -> Option<u64> {
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

/// Changes `object` (of `plural`) in place with `change` (false: leave it),
/// unless another object of its name replaced it meanwhile; the revision
/// written.
async fn update(
    objects: &Objects,
    plural: &str,
    object: &Value,
    mut change: impl FnMut(&mut Value) -> bool,
) -> Result<Option<i64>> {
    let uid = object["metadata"]["uid"].clone();
    objects
        .update_with(
            kind(plural),
            crate::objects::namespace_of(object),
            crate::objects::name_of(object),
            |current| current["metadata"]["uid"] == uid && change(current),
        )
        .await
}

/// Every object of `plural`, as cached.
fn all(cache: &Cache, plural: &str) -> Vec<Arc<Value>> {
    cache.list(kind(plural), None)
}

#[cfg(test)]
mod tests;
