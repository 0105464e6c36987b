//! An in-memory mirror of the store that controllers read from.
//!
//! One list + watch over `/registry/` keeps every object in memory (as its
//! stored JSON, decoded when read);
//! readers take snapshots without touching the store, and wait on
//! [`Cache::changed`] to hear about writes. A controller that wrote at
//! revision R waits for the cache to reach R ([`Cache::wait_for`]) before it
//! reconciles again, so it never acts twice on a view that misses its own write.
//!
//! Controllers read what changed through a [`ChangeFeed`] each: the keys
//! written under the kinds they follow, with the object as it was before,
//! so they reconcile only what a write touched.
//!
//! Instances are also indexed by their controlling workload, and by the node they are bound to, with one change
//! signal per node ([`Cache::watch_node`]): a node's assignment stream reads
//! and wakes for its own instances only, so its cost does not grow with the
//! cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use c4m_core::ResourceKind;
use c4m_state::{EventKind, KeyValue, Store};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::objects::{decode_json, key, prefix};

/// The root of every object key.
pub(crate) const ROOT: &str = "/registry/";
/// Key prefixes of instances, and of the objects whose change any node's
/// assignments may depend on (their env and volumes refer to ConfigMaps,
/// Secrets and claims, a claim to its PersistentVolume; their VPC's CIDR
/// is sent with them).
const PODS: &str = "/registry/pods/";
const NODES: &str = "/registry/nodes/";
const ASSIGNMENT_SOURCES: [&str; 5] = [
    "/registry/configmaps/",
    "/registry/secrets/",
    "/registry/vpcs/",
    "/registry/persistentvolumeclaims/",
    "/registry/persistentvolumes/",
];

/// One object as the store holds it: its JSON (without resourceVersion)
/// and the revision that wrote it. Kept encoded, it takes about a tenth of
/// the memory of a decoded [`Value`] (every small JSON object of which is a
/// B-tree node of its own); readers decode what they read.
#[derive(Clone)]
pub(crate) struct Stored {
    json: Arc<[u8]>,
    revision: i64,
}

impl Stored {
    /// Whether the stored JSON contains `needle`: a cheap test before
    /// decoding (a Node without a slice annotation need not be decoded).
    pub(crate) fn contains(&self, needle: &[u8]) -> bool {
        self.json
            .windows(needle.len())
            .any(|window| window == needle)
    }

    /// The JSON as stored (without resourceVersion).
    pub(crate) fn json(&self) -> &[u8] {
        &self.json
    }

    /// The revision of the write that stored this version
    /// (its resourceVersion).
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// The object, with its resourceVersion stamped. The cache took only
    /// JSON it could parse, so this fails only on a nesting too deep for
    /// `Value`: such an object is logged and read as absent.
    pub(crate) fn decode(&self, key: &str) -> Option<Arc<Value>> {
        match decode_json(key, &self.json, self.revision) {
            Ok(value) => Some(Arc::new(value)),
            Err(e) => {
                tracing::error!(error = %e, "cache: cannot decode a stored object");
                None
            }
        }
    }
}

/// Handles on every object of `stored`, to decode once the cache's lock
/// is released ([`decode_all`]): a writer does not wait for the decoding.
fn handles<'a>(stored: impl Iterator<Item = (&'a String, &'a Stored)>) -> Vec<(String, Stored)> {
    stored
        .map(|(key, stored)| (key.clone(), stored.clone()))
        .collect()
}

/// Decodes every object of `handles`, in order.
fn decode_all(handles: Vec<(String, Stored)>) -> Vec<Arc<Value>> {
    handles
        .iter()
        .filter_map(|(key, stored)| stored.decode(key))
        .collect()
}

/// An instance no owner controls: its labels and stored JSON.
type UncontrolledPod = (Arc<BTreeMap<String, String>>, Stored);

/// A mirrored object, with what the indexes read of it.
struct Entry {
    stored: Stored,
    /// The node an instance is bound to.
    node: Option<String>,
    /// The [`controller_key`] of an instance.
    owner: Option<String>,
    /// The labels of an instance no owner controls (a controller whose
    /// selector matches may adopt it); None for any other object.
    uncontrolled: Option<Arc<BTreeMap<String, String>>>,
    /// Whether a Node's Ready condition is True: read on every heartbeat
    /// and node-lifecycle pass, for thousands of nodes.
    ready: bool,
}

impl Entry {
    /// Checks that `kv` holds JSON (and, for an instance, reads what the
    /// indexes need), and keeps a tight copy of its bytes: the store's
    /// buffer may be larger than the object.
    fn new(kv: &KeyValue) -> Result<Entry> {
        let corrupt = |source: serde_json::Error| crate::Error::Corrupt {
            key: kv.key.clone(),
            source,
        };
        let indexed = if kv.key.starts_with(PODS) {
            serde_json::from_slice::<IndexedFields>(&kv.value).ok()
        } else {
            None
        };
        let ready = if kv.key.starts_with(NODES) {
            serde_json::from_slice::<ConditionsOnly>(&kv.value).is_ok_and(|node| node.is_ready())
        } else {
            false
        };
        let (node, owner, uncontrolled) = match indexed {
            Some(pod) => (pod.node(), pod.controller(), pod.uncontrolled_labels()),
            None => {
                // Not an instance, or fields of unexpected types (which
                // validation refuses): only check that it is JSON.
                serde_json::from_slice::<serde::de::IgnoredAny>(&kv.value).map_err(corrupt)?;
                (None, None, None)
            }
        };
        Ok(Entry {
            stored: Stored {
                json: Arc::from(&kv.value[..]),
                revision: kv.mod_revision,
            },
            node,
            owner,
            uncontrolled,
            ready,
        })
    }
}

/// An object's status conditions, parsed without the rest.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConditionsOnly {
    status: ConditionsStatus,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConditionsStatus {
    conditions: Option<Vec<ConditionFields>>,
}

#[derive(Deserialize)]
struct ConditionFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
}

impl ConditionsOnly {
    /// [`crate::pods::is_ready`]: whether its first Ready condition is True.
    fn is_ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.kind.as_deref() == Some("Ready"))
            .is_some_and(|c| c.status.as_deref() == Some("True"))
    }
}

/// Instances grouped by one string derived from each (its node, its
/// controlling owner), then by key.
#[derive(Default)]
struct PodIndex {
    groups: HashMap<String, BTreeMap<String, Stored>>,
}

impl PodIndex {
    fn insert(&mut self, group: Option<&str>, key: &str, pod: &Stored) {
        if let Some(group) = group {
            self.groups
                .entry(group.to_string())
                .or_default()
                .insert(key.to_string(), pod.clone());
        }
    }

    fn remove(&mut self, group: Option<&str>, key: &str) {
        let Some(group) = group else { return };
        if let Some(pods) = self.groups.get_mut(group) {
            pods.remove(key);
            if pods.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    fn get(&self, group: &str) -> Vec<(String, Stored)> {
        self.groups
            .get(group)
            .map(|pods| handles(pods.iter()))
            .unwrap_or_default()
    }
}

/// What the instance indexes read of a Pod: parsed straight from its JSON,
/// skipping the rest, which is cheaper than building a [`Value`].
#[derive(Deserialize, Default)]
#[serde(default)]
struct IndexedFields {
    metadata: IndexedMetadata,
    spec: IndexedSpec,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct IndexedMetadata {
    namespace: Option<String>,
    owner_references: Option<Vec<IndexedOwner>>,
    labels: Option<BTreeMap<String, String>>,
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct IndexedOwner {
    kind: Option<String>,
    name: Option<String>,
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct IndexedSpec {
    node_name: Option<String>,
}

impl IndexedFields {
    /// The node the instance is bound to.
    fn node(&self) -> Option<String> {
        self.spec.node_name.clone().filter(|node| !node.is_empty())
    }

    /// The labels of an instance that no owner controls and that is not
    /// being deleted: one a controller may adopt.
    fn uncontrolled_labels(&self) -> Option<Arc<BTreeMap<String, String>>> {
        let controlled = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true));
        if controlled || self.metadata.deletion_timestamp.is_some() {
            return None;
        }
        Some(Arc::new(self.metadata.labels.clone().unwrap_or_default()))
    }

    /// The [`owner_key`] of the workload that controls the instance.
    fn controller(&self) -> Option<String> {
        let owner = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))?;
        let plural = match owner.kind.as_deref()? {
            "Microservice" => "microservices",
            "Deployment" => "deployments",
            "Job" => "jobs",
            "DaemonSet" => "daemonsets",
            "StatefulSet" => "statefulsets",
            "CronJob" => "cronjobs",
            _ => return None,
        };
        Some(owner_key(
            plural,
            self.metadata.namespace.as_deref().unwrap_or_default(),
            owner.name.as_deref()?,
        ))
    }
}

/// The key of the workload that controls `pod` (`microservices/NS/NAME` or
/// `deployments/NS/NAME`), from its controller owner reference.
pub(crate) fn controller_key(pod: &Value) -> Option<String> {
    IndexedFields::deserialize(pod).ok()?.controller()
}

/// The namespace in an instance's key (`/registry/pods/NS/NAME`).
fn pod_namespace(key: &str) -> &str {
    key.strip_prefix(PODS)
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(namespace, _)| namespace)
}

/// The index key of a workload: `PLURAL/NAMESPACE/NAME`.
pub(crate) fn owner_key(plural: &str, namespace: &str, name: &str) -> String {
    format!("{plural}/{namespace}/{name}")
}

/// Every object by key, and instances by node and by controlling owner.
#[derive(Default)]
struct Mirror {
    objects: BTreeMap<String, Entry>,
    pods_by_node: PodIndex,
    pods_by_owner: PodIndex,
    /// Instances no owner controls, by namespace, by key, with their labels.
    uncontrolled_pods: HashMap<String, BTreeMap<String, UncontrolledPod>>,
    /// How many instances are bound to no node (terminal ones included).
    unbound_pods: usize,
}

impl Mirror {
    fn listed(kvs: &[KeyValue]) -> Result<Mirror> {
        let mut mirror = Mirror::default();
        for kv in kvs {
            mirror.insert(kv.key.clone(), Entry::new(kv)?);
        }
        Ok(mirror)
    }

    /// Stores an object; returns what it replaced.
    fn insert(&mut self, key: String, entry: Entry) -> Option<Entry> {
        let previous = self.remove(&key);
        self.pods_by_node
            .insert(entry.node.as_deref(), &key, &entry.stored);
        self.pods_by_owner
            .insert(entry.owner.as_deref(), &key, &entry.stored);
        if key.starts_with(PODS) && entry.node.is_none() {
            self.unbound_pods += 1;
        }
        if let Some(labels) = &entry.uncontrolled {
            self.uncontrolled_pods
                .entry(pod_namespace(&key).to_string())
                .or_default()
                .insert(key.clone(), (Arc::clone(labels), entry.stored.clone()));
        }
        self.objects.insert(key, entry);
        previous
    }

    /// Drops an object; returns what it was.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let previous = self.objects.remove(key)?;
        self.pods_by_node.remove(previous.node.as_deref(), key);
        self.pods_by_owner.remove(previous.owner.as_deref(), key);
        if key.starts_with(PODS) && previous.node.is_none() {
            self.unbound_pods -= 1;
        }
        if previous.uncontrolled.is_some() {
            let namespace = pod_namespace(key);
            if let Some(pods) = self.uncontrolled_pods.get_mut(namespace) {
                pods.remove(key);
                if pods.is_empty() {
                    self.uncontrolled_pods.remove(namespace);
                }
            }
        }
        Some(previous)
    }

    /// The entries under `prefix`, in key order.
    fn entries_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        self.objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The objects under `prefix`, in key order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Stored)> {
        self.entries_under(prefix)
            .map(|(k, entry)| (k, &entry.stored))
    }
}

/// What changed under a feed's prefixes since it was last read.
#[derive(Clone, Default)]
pub(crate) struct Changes {
    /// The cache re-listed (or this is the feed's first read): anything may
    /// have changed, so the reader should look at everything.
    pub everything: bool,
    /// Each changed key with the object as it was before its first change
    /// since the last read (`None`: it did not exist), still encoded: a
    /// reader decodes the ones it looks at ([`Stored::decode`]), so a burst
    /// of writes does not hold thousands of decoded objects.
    pub changed: BTreeMap<String, Option<Stored>>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        !self.everything && self.changed.is_empty()
    }

    /// Merges `later` (changes made after this batch) into this batch: the
    /// older "before" value of a key wins.
    fn absorb(&mut self, later: Changes) {
        self.everything |= later.everything;
        for (key, before) in later.changed {
            self.changed.entry(key).or_insert(before);
        }
    }
}

/// A queue of changed keys for one controller: what lets it reconcile only
/// what a write touched instead of everything it owns.
pub(crate) struct ChangeFeed {
    prefixes: Vec<String>,
    pending: Mutex<Changes>,
    notify: Notify,
}

impl ChangeFeed {
    /// Records a change of `key`, which was `before`.
    fn record(&self, key: &str, before: Option<&Stored>) {
        if !self.prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.changed.contains_key(key) {
            pending.changed.insert(key.to_string(), before.cloned());
        }
        drop(pending);
        self.notify.notify_one();
    }

    fn everything(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .everything = true;
        self.notify.notify_one();
    }

    /// Takes what changed, waiting until something has.
    pub(crate) async fn next(&self) -> Changes {
        loop {
            let notified = self.notify.notified();
            let taken =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            if !taken.is_empty() {
                return taken;
            }
            notified.await;
        }
    }

    /// `batch` with whatever changed since it was taken.
    pub(crate) fn and_since(&self, mut batch: Changes) -> Changes {
        let later = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        batch.absorb(later);
        batch
    }

    /// Puts back a batch that could not be handled, to be taken again with
    /// whatever changed since.
    pub(crate) fn requeue(&self, batch: Changes) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let later = std::mem::replace(&mut *pending, batch);
        pending.absorb(later);
        drop(pending);
        self.notify.notify_one();
    }

    /// Asks for a look at everything (a periodic resync).
    pub(crate) fn resync(&self) {
        self.everything();
    }
}

/// The mirror.
pub(crate) struct Cache {
    mirror: RwLock<Mirror>,
    revision: watch::Sender<i64>,
    /// One signal per node some reader watches, bumped when the node's
    /// instances, its Node object or any assignment source may have
    /// changed.
    node_signals: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The controllers' change feeds.
    feeds: Mutex<Vec<Arc<ChangeFeed>>>,
    /// Bumped when any assignment source may have changed (a write, a
    /// re-list): what an assignment depends on besides its instance and
    /// Node (the resolved env and volumes, the VPC's CIDR).
    sources_generation: AtomicU64,
    /// Bumped when any Node changes (and on a re-list): what the overlay's
    /// peer streams wait on.
    nodes_signal: watch::Sender<u64>,
}

impl Cache {
    /// Lists the store, then keeps following it until `shutdown`.
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Cache>> {
        let (kvs, revision) = store.range(ROOT).await?;
        let cache = Arc::new(Cache {
            mirror: RwLock::new(Mirror::listed(&kvs)?),
            revision: watch::channel(revision).0,
            node_signals: Mutex::new(HashMap::new()),
            feeds: Mutex::new(Vec::new()),
            sources_generation: AtomicU64::new(0),
            nodes_signal: watch::channel(0).0,
        });
        tokio::spawn(Arc::clone(&cache).follow(store, revision, shutdown));
        Ok(cache)
    }

    async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut revision: i64,
        shutdown: CancellationToken,
    ) {
        loop {
            let mut events = match store.watch(ROOT, revision).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "cache: cannot watch the store; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => continue,
                    }
                }
            };
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        self.apply(&event);
                        revision = event.kv.mod_revision;
                        // Publish once per revision: a transaction's events share one.
                        self.revision.send_if_modified(|current| {
                            let newer = revision > *current;
                            if newer {
                                *current = revision;
                            }
                            newer
                        });
                    }
                    Some(Err(e)) => {
                        // Lagged or compacted: start over from a fresh list.
                        tracing::warn!(error = %e, "cache: watch ended; re-listing");
                        match self.relist(&store).await {
                            Ok(listed) => revision = listed,
                            Err(e) => tracing::error!(error = %e, "cache: re-list failed"),
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    fn apply(&self, event: &c4m_state::WatchEvent) {
        let key = &event.kv.key;
        let (previous, current_node) = {
            let mut mirror = self.mirror.write().unwrap_or_else(|e| e.into_inner());
            match event.kind {
                EventKind::Put => match Entry::new(&event.kv) {
                    Ok(entry) => {
                        let node = entry.node.clone();
                        (mirror.insert(key.clone(), entry), node)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cache: skipping a corrupt object");
                        return;
                    }
                },
                EventKind::Delete => (mirror.remove(key), None),
            }
        };
        let before = previous.as_ref().map(|p| &p.stored);
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        // A feed only the cache holds has lost its reader (a node's object
        // stream that ended): drop it rather than queue changes for no one.
        feeds.retain(|feed| Arc::strong_count(feed) > 1);
        for feed in feeds.iter() {
            feed.record(key, before);
        }
        drop(feeds);
        if ASSIGNMENT_SOURCES.iter().any(|p| key.starts_with(p)) {
            self.signal_all_nodes();
            return;
        }
        let previous_node = previous.and_then(|p| p.node);
        let own_node = key.strip_prefix(NODES).map(str::to_string);
        if own_node.is_some() {
            self.nodes_signal.send_modify(|generation| *generation += 1);
        }
        for node in [previous_node, current_node, own_node].iter().flatten() {
            self.signal_node(node);
        }
    }

    /// A feed of the keys that change under `prefixes` (kinds' plurals, as
    /// in `pods`); its first read says "everything".
    pub(crate) fn feed(&self, plurals: &[&str]) -> Arc<ChangeFeed> {
        let feed = Arc::new(ChangeFeed {
            prefixes: plurals.iter().map(|p| format!("{ROOT}{p}/")).collect(),
            pending: Mutex::new(Changes {
                everything: true,
                ..Changes::default()
            }),
            notify: Notify::new(),
        });
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&feed));
        feed
    }

    async fn relist(&self, store: &Arc<dyn Store>) -> Result<i64> {
        let (kvs, revision) = store.range(ROOT).await?;
        let mirror = Mirror::listed(&kvs)?;
        *self.mirror.write().unwrap_or_else(|e| e.into_inner()) = mirror;
        self.revision.send_replace(revision);
        for feed in self.feeds.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            feed.everything();
        }
        self.signal_all_nodes();
        self.nodes_signal.send_modify(|generation| *generation += 1);
        Ok(revision)
    }

    fn signal_node(&self, node: &str) {
        let mut signals = self.node_signals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signal) = signals.get(node) {
            if signal.is_closed() {
                // Its last reader is gone: forget it rather than keep every node ever seen.
                signals.remove(node);
            } else {
                signal.send_modify(|generation| *generation += 1);
            }
        }
    }

    /// Wakes every node: for a change of an assignment source, or a re-list.
    fn signal_all_nodes(&self) {
        self.sources_generation.fetch_add(1, Ordering::SeqCst);
        let mut signals = self.node_signals.lock().unwrap_or_else(|e| e.into_inner());
        signals.retain(|_, signal| !signal.is_closed());
        for signal in signals.values() {
            signal.send_modify(|generation| *generation += 1);
        }
    }

    /// Every object of a kind (in one namespace or all), sorted by key.
    pub(crate) fn list(&self, kind: &ResourceKind, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let prefix = prefix(kind, namespace);
        let listed = handles(self.read().under(&prefix));
        decode_all(listed)
    }

    /// Calls `visit` with each object under `prefix` (a key prefix), still
    /// encoded, in key order: for readers that keep what they derived from
    /// each version and decode only what changed. `visit` runs under the
    /// cache's read lock, so it should be quick.
    pub(crate) fn for_each_stored(&self, prefix: &str, mut visit: impl FnMut(&str, &Stored)) {
        for (key, stored) in self.read().under(prefix) {
            visit(key, stored);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys of every object of a kind, sorted: for a reader that needs
    /// only which objects exist.
    pub(crate) fn keys(&self, kind: &ResourceKind) -> Vec<String> {
        let prefix = prefix(kind, None);
        self.read()
            .under(&prefix)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Whether any instance is bound to no node (a terminal one may be
    /// among them): when none is, the scheduler has nothing to do.
    pub(crate) fn has_unbound_pods(&self) -> bool {
        self.read().unbound_pods > 0
    }

    /// Every Node's name and whether it is Ready, sorted by name.
    pub(crate) fn node_readiness(&self) -> Vec<(String, bool)> {
        self.read()
            .entries_under(NODES)
            .map(|(key, entry)| (key[NODES.len()..].to_string(), entry.ready))
            .collect()
    }

    /// Whether the Node `name` is Ready; `None` if the cache has no such node.
    pub(crate) fn node_ready(&self, name: &str) -> Option<bool> {
        let key = format!("{NODES}{name}");
        self.read().objects.get(&key).map(|entry| entry.ready)
    }

    /// One object.
    pub(crate) fn get(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        self.get_key(&key(kind, namespace, name))
    }

    /// The instances bound to `node` (terminal ones included), sorted by key.
    pub(crate) fn pods_on_node(&self, node: &str) -> Vec<Arc<Value>> {
        decode_all(self.pods_on_node_stored(node))
    }

    /// The instances bound to `node` (terminal ones included), still
    /// encoded, by key.
    pub(crate) fn pods_on_node_stored(&self, node: &str) -> Vec<(String, Stored)> {
        self.read().pods_by_node.get(node)
    }

    /// How many times an assignment source may have changed (or the
    /// cache re-listed): an assignment resolved at one generation holds
    /// while it stays.
    pub(crate) fn sources_generation(&self) -> u64 {
        self.sources_generation.load(Ordering::SeqCst)
    }

    /// The object stored at `key`.
    pub(crate) fn get_key(&self, key: &str) -> Option<Arc<Value>> {
        self.stored(key)?.decode(key)
    }

    /// The object stored at `key`, still encoded.
    pub(crate) fn stored(&self, key: &str) -> Option<Stored> {
        self.read()
            .objects
            .get(key)
            .map(|entry| entry.stored.clone())
    }

    /// Every workload ([`owner_key`]) some instance names as its controller.
    pub(crate) fn owners_of_pods(&self) -> Vec<String> {
        self.read().pods_by_owner.groups.keys().cloned().collect()
    }

    /// The instances whose controller owner reference names the workload
    /// `owner` ([`owner_key`]), whatever its uid, sorted by key.
    /// The instances of `namespace` that no owner controls and that are not
    /// being deleted, whose labels `wanted` accepts: read without decoding
    /// the others.
    pub(crate) fn uncontrolled_pods(
        &self,
        namespace: &str,
        wanted: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Vec<Arc<Value>> {
        let handles: Vec<(String, Stored)> = self
            .read()
            .uncontrolled_pods
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|(_, (labels, _))| wanted(labels))
            .map(|(key, (_, stored))| (key.clone(), stored.clone()))
            .collect();
        decode_all(handles)
    }

    pub(crate) fn pods_of_owner(&self, owner: &str) -> Vec<Arc<Value>> {
        let pods = self.read().pods_by_owner.get(owner);
        decode_all(pods)
    }

    /// A receiver that wakes when an instance bound to `node` (before or
    /// after the change), the Node object itself, or any assignment source
    /// (ConfigMap, Secret, Vpc, claim, PersistentVolume) changes, and after
    /// a re-list.
    pub(crate) fn watch_node(&self, node: &str) -> watch::Receiver<u64> {
        let mut signals = self.node_signals.lock().unwrap_or_else(|e| e.into_inner());
        signals
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// A receiver that wakes when any Node changes, and after a re-list.
    pub(crate) fn watch_nodes(&self) -> watch::Receiver<u64> {
        self.nodes_signal.subscribe()
    }

    /// The store revision the cache reflects.
    pub(crate) fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits until the cache reflects `revision` (or a later one).
    pub(crate) async fn wait_for(&self, revision: i64) {
        let mut receiver = self.revision.subscribe();
        // Err only if the sender is gone, which ends the process anyway.
        let _ = receiver.wait_for(|current| *current >= revision).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use c4m_state::{Op, Precondition, RedbStore};
    use serde_json::json;

    use super::*;
    use crate::objects::kind;

    async fn put(store: &Arc<dyn Store>, key: &str, value: Value) -> i64 {
        let bytes = serde_json::to_vec(&value).unwrap().into();
        store
            .txn(vec![Op::put(key, bytes, Precondition::None)])
            .await
            .unwrap()
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": {"nodeName": node}})
    }

    fn names(pods: &[Arc<Value>]) -> Vec<&str> {
        pods.iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect()
    }

    /// Whether `signal` fired (and marks it seen).
    async fn fired(signal: &mut watch::Receiver<u64>) -> bool {
        tokio::time::timeout(Duration::from_millis(200), signal.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn instances_are_indexed_by_node_and_wake_only_their_node() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join("store.redb")).unwrap());
        put(&store, "/registry/pods/default/a", pod("a", "one")).await;
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        assert_eq!(names(&cache.pods_on_node("one")), ["a"]);
        assert!(!cache.has_unbound_pods());
        let mut one = cache.watch_node("one");
        let mut two = cache.watch_node("two");

        // Bound to another node: both the old and the new node hear of it.
        let revision = put(&store, "/registry/pods/default/a", pod("a", "two")).await;
        cache.wait_for(revision).await;
        assert!(cache.pods_on_node("one").is_empty());
        assert_eq!(names(&cache.pods_on_node("two")), ["a"]);
        assert!(fired(&mut one).await && fired(&mut two).await);

        // An instance of node two leaves node one asleep.
        let revision = put(&store, "/registry/pods/default/b", pod("b", "two")).await;
        cache.wait_for(revision).await;
        assert_eq!(names(&cache.pods_on_node("two")), ["a", "b"]);
        assert!(fired(&mut two).await);
        assert!(!fired(&mut one).await);

        // A Secret may feed any node's env: every node wakes.
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}});
        let revision = put(&store, "/registry/secrets/default/s", secret).await;
        cache.wait_for(revision).await;
        assert!(fired(&mut one).await && fired(&mut two).await);

        let revision = put(&store, "/registry/pods/default/c", pod("c", "")).await;
        cache.wait_for(revision).await;
        assert!(cache.has_unbound_pods(), "c is bound to no node");
        let revision = store
            .txn(vec![
                Op::delete("/registry/pods/default/a", Precondition::None),
                Op::delete("/registry/pods/default/c", Precondition::None),
            ])
            .await
            .unwrap();
        cache.wait_for(revision).await;
        assert_eq!(names(&cache.pods_on_node("two")), ["b"]);
        assert!(fired(&mut two).await);
        assert_eq!(cache.list(kind("pods"), None).len(), 1);
        assert!(!cache.has_unbound_pods());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn feeds_report_changed_keys_with_what_they_were_before() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join("store.redb")).unwrap());
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        let feed = cache.feed(&["pods"]);
        // The first read is "everything": the reader starts from a full pass.
        let first = feed.next().await;
        assert!(first.everything && first.changed.is_empty());

        put(&store, "/registry/pods/default/a", pod("a", "one")).await;
        put(&store, "/registry/pods/default/a", pod("a", "two")).await;
        let revision = put(&store, "/registry/configmaps/default/c", json!({})).await;
        cache.wait_for(revision).await;
        let batch = feed.next().await;
        assert!(!batch.everything);
        // Two writes of one key coalesce, keeping what it was before the
        // first; keys outside the feed's kinds are not reported.
        assert_eq!(batch.changed.len(), 1);
        assert!(batch.changed["/registry/pods/default/a"].is_none());

        // A batch put back keeps its older "before" over a later change's.
        let revision = put(&store, "/registry/pods/default/a", pod("a", "three")).await;
        cache.wait_for(revision).await;
        feed.requeue(batch);
        let merged = feed.next().await;
        assert!(merged.changed["/registry/pods/default/a"].is_none());
        assert_eq!(cache.pods_on_node("three").len(), 1);

        // The owner index follows the controller reference.
        let mut owned = pod("b", "one");
        owned["metadata"]["ownerReferences"] =
            json!([{"kind": "Microservice", "name": "api", "uid": "u1", "controller": true}]);
        let revision = put(&store, "/registry/pods/default/b", owned).await;
        cache.wait_for(revision).await;
        assert_eq!(
            names(&cache.pods_of_owner(&owner_key("microservices", "default", "api"))),
            ["b"]
        );
        assert_eq!(cache.owners_of_pods(), ["microservices/default/api"]);
        let after = feed.next().await;
        assert_eq!(
            after.changed.keys().collect::<Vec<_>>(),
            ["/registry/pods/default/b"]
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn node_readiness_is_read_from_the_ready_condition() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join("store.redb")).unwrap());
        let node = |name: &str, conditions: Value| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"conditions": conditions}})
        };
        let ready = json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]);
        put(&store, "/registry/nodes/a", node("a", ready)).await;
        let not_ready = json!([{"type": "Ready", "status": "Unknown"}]);
        put(&store, "/registry/nodes/b", node("b", not_ready)).await;
        put(
            &store,
            "/registry/nodes/c",
            json!({"kind": "Node", "metadata": {"name": "c"}}),
        )
        .await;
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        let expected = |pairs: &[(&str, bool)]| {
            pairs
                .iter()
                .map(|(name, ready)| (name.to_string(), *ready))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cache.node_readiness(),
            expected(&[("a", true), ("b", false), ("c", false)])
        );
        let revision = put(
            &store,
            "/registry/nodes/b",
            node("b", json!([{"type": "Ready", "status": "True"}])),
        )
        .await;
        cache.wait_for(revision).await;
        assert_eq!(cache.node_ready("b"), Some(true));
        assert_eq!(cache.node_ready("zz"), None);
        shutdown.cancel();
    }
}
