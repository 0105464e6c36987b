//! An in-memory mirror of the store that controllers read from.
//!
//! One list + watch over `/registry/` keeps every object decoded in memory;
//! readers take snapshots without touching the store, and wait on
//! [`Cache::changed`] to hear about writes. A controller that wrote at
//! revision R waits for the cache to reach R ([`Cache::wait_for`]) before it
//! reconciles again, so it never acts twice on a view that misses its own write.
//!
//! Instances are also indexed by the node they are bound to, with one change
//! signal per node ([`Cache::watch_node`]): a node's assignment stream reads
//! and wakes for its own instances only, so its cost does not grow with the
//! cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use c4m_core::ResourceKind;
use c4m_store::{EventKind, KeyValue, Store};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::objects::{decode, key, prefix};
use crate::pods::node_name;

/// The root of every object key.
const ROOT: &str = "/registry/";
/// Key prefixes of instances, and of the objects whose change any node's
/// instances may depend on (their env refers to them).
const PODS: &str = "/registry/pods/";
const NODES: &str = "/registry/nodes/";
const ENV_SOURCES: [&str; 2] = ["/registry/configmaps/", "/registry/secrets/"];

/// Every object by key, and instances by node name then key.
#[derive(Default)]
struct Mirror {
    objects: BTreeMap<String, Arc<Value>>,
    pods_by_node: HashMap<String, BTreeMap<String, Arc<Value>>>,
}

impl Mirror {
    fn listed(kvs: &[KeyValue]) -> Result<Mirror> {
        let mut mirror = Mirror::default();
        for kv in kvs {
            mirror.insert(kv.key.clone(), Arc::new(decode(kv)?));
        }
        Ok(mirror)
    }

    /// Stores an object; for an instance, returns the node it was bound to
    /// before and the node it is bound to now.
    fn insert(&mut self, key: String, value: Arc<Value>) -> (Option<String>, Option<String>) {
        let previous_node = self.unindex(&key);
        let current_node = key
            .starts_with(PODS)
            .then(|| node_name(&value).map(str::to_string))
            .flatten();
        if let Some(node) = &current_node {
            self.pods_by_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone(), Arc::clone(&value));
        }
        self.objects.insert(key, value);
        (previous_node, current_node)
    }

    /// Drops an object; returns the node of the instance it was.
    fn remove(&mut self, key: &str) -> Option<String> {
        let previous_node = self.unindex(key);
        self.objects.remove(key);
        previous_node
    }

    fn unindex(&mut self, key: &str) -> Option<String> {
        if !key.starts_with(PODS) {
            return None;
        }
        let node = node_name(self.objects.get(key)?)?.to_string();
        if let Some(pods) = self.pods_by_node.get_mut(&node) {
            pods.remove(key);
            if pods.is_empty() {
                self.pods_by_node.remove(&node);
            }
        }
        Some(node)
    }
}

/// The mirror.
pub struct Cache {
    mirror: RwLock<Mirror>,
    revision: watch::Sender<i64>,
    /// One signal per node some reader watches, bumped when the node's
    /// instances, its Node object or any env source may have changed.
    node_signals: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Cache {
    /// Lists the store, then keeps following it until `shutdown`.
    pub async fn start(store: Arc<dyn Store>, shutdown: CancellationToken) -> Result<Arc<Cache>> {
        let (kvs, revision) = store.range(ROOT).await?;
        let cache = Arc::new(Cache {
            mirror: RwLock::new(Mirror::listed(&kvs)?),
            revision: watch::channel(revision).0,
            node_signals: Mutex::new(HashMap::new()),
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

    fn apply(&self, event: &c4m_store::WatchEvent) {
        let key = &event.kv.key;
        let (previous_node, current_node) = {
            let mut mirror = self.mirror.write().unwrap_or_else(|e| e.into_inner());
            match event.kind {
                EventKind::Put => match decode(&event.kv) {
                    Ok(value) => mirror.insert(key.clone(), Arc::new(value)),
                    Err(e) => {
                        tracing::error!(error = %e, "cache: skipping a corrupt object");
                        return;
                    }
                },
                EventKind::Delete => (mirror.remove(key), None),
            }
        };
        if ENV_SOURCES.iter().any(|p| key.starts_with(p)) {
            self.signal_all_nodes();
            return;
        }
        let own_node = key.strip_prefix(NODES).map(str::to_string);
        for node in [previous_node, current_node, own_node].iter().flatten() {
            self.signal_node(node);
        }
    }

    async fn relist(&self, store: &Arc<dyn Store>) -> Result<i64> {
        let (kvs, revision) = store.range(ROOT).await?;
        let mirror = Mirror::listed(&kvs)?;
        *self.mirror.write().unwrap_or_else(|e| e.into_inner()) = mirror;
        self.revision.send_replace(revision);
        self.signal_all_nodes();
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

    fn signal_all_nodes(&self) {
        let mut signals = self.node_signals.lock().unwrap_or_else(|e| e.into_inner());
        signals.retain(|_, signal| !signal.is_closed());
        for signal in signals.values() {
            signal.send_modify(|generation| *generation += 1);
        }
    }

    /// Every object of a kind (in one namespace or all), sorted by key.
    pub fn list(&self, kind: &ResourceKind, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let prefix = prefix(kind, namespace);
        let mirror = self.mirror.read().unwrap_or_else(|e| e.into_inner());
        mirror
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| Arc::clone(v))
            .collect()
    }

    /// One object.
    pub fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let mirror = self.mirror.read().unwrap_or_else(|e| e.into_inner());
        mirror.objects.get(&key(kind, namespace, name)).cloned()
    }

    /// The instances bound to `node` (terminal ones included), sorted by key.
    pub fn pods_on_node(&self, node: &str) -> Vec<Arc<Value>> {
        let mirror = self.mirror.read().unwrap_or_else(|e| e.into_inner());
        mirror
            .pods_by_node
            .get(node)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver that wakes when an instance bound to `node` (before or
    /// after the change), the Node object itself, or any ConfigMap or Secret
    /// changes, and after a re-list.
    pub fn watch_node(&self, node: &str) -> watch::Receiver<u64> {
        let mut signals = self.node_signals.lock().unwrap_or_else(|e| e.into_inner());
        signals
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// A receiver that wakes whenever the cache moves to a newer revision.
    pub fn changed(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Waits until the cache reflects `revision` (or a later one).
    pub async fn wait_for(&self, revision: i64) {
        let mut receiver = self.revision.subscribe();
        // Err only if the sender is gone, which ends the process anyway.
        let _ = receiver.wait_for(|current| *current >= revision).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use c4m_store::{Op, Precondition, RedbStore};
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

        let revision = store
            .txn(vec![Op::delete(
                "/registry/pods/default/a",
                Precondition::None,
            )])
            .await
            .unwrap();
        cache.wait_for(revision).await;
        assert_eq!(names(&cache.pods_on_node("two")), ["b"]);
        assert!(fired(&mut two).await);
        assert_eq!(cache.list(kind("pods"), None).len(), 1);
        shutdown.cancel();
    }
}
