//! An in-memory mirror of the store that controllers read from.
//!
//! One list + watch over `/registry/` keeps every object decoded in memory;
//! readers take snapshots without touching the store, and wait on
//! [`Cache::changed`] to hear about writes. A controller that wrote at
//! revision R waits for the cache to reach R ([`Cache::wait_for`]) before it
//! reconciles again, so it never acts twice on a view that misses its own write.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use c4m_core::ResourceKind;
use c4m_store::{EventKind, Store};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::objects::{decode, key, prefix};

/// The root of every object key.
const ROOT: &str = "/registry/";

/// The mirror.
pub struct Cache {
    objects: RwLock<BTreeMap<String, Arc<Value>>>,
    revision: watch::Sender<i64>,
}

impl Cache {
    /// Lists the store, then keeps following it until `shutdown`.
    pub async fn start(store: Arc<dyn Store>, shutdown: CancellationToken) -> Result<Arc<Cache>> {
        let (kvs, revision) = store.range(ROOT).await?;
        let mut objects = BTreeMap::new();
        for kv in &kvs {
            objects.insert(kv.key.clone(), Arc::new(decode(kv)?));
        }
        let cache = Arc::new(Cache {
            objects: RwLock::new(objects),
            revision: watch::channel(revision).0,
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
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        match event.kind {
            EventKind::Put => match decode(&event.kv) {
                Ok(value) => {
                    objects.insert(event.kv.key.clone(), Arc::new(value));
                }
                Err(e) => tracing::error!(error = %e, "cache: skipping a corrupt object"),
            },
            EventKind::Delete => {
                objects.remove(&event.kv.key);
            }
        }
    }

    async fn relist(&self, store: &Arc<dyn Store>) -> Result<i64> {
        let (kvs, revision) = store.range(ROOT).await?;
        let mut objects = BTreeMap::new();
        for kv in &kvs {
            objects.insert(kv.key.clone(), Arc::new(decode(kv)?));
        }
        *self.objects.write().unwrap_or_else(|e| e.into_inner()) = objects;
        self.revision.send_replace(revision);
        Ok(revision)
    }

    /// Every object of a kind (in one namespace or all), sorted by key.
    pub fn list(&self, kind: &ResourceKind, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let prefix = prefix(kind, namespace);
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| Arc::clone(v))
            .collect()
    }

    /// One object.
    pub fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.get(&key(kind, namespace, name)).cloned()
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
