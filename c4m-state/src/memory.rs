//! [`MemoryStore`]: the [`Store`] contract kept in memory, for tests and
//! for embedders that want a control plane without a data dir.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::options::StoreOptions;
use crate::plan::plan;
use crate::store::{Store, WatchStream};
use crate::types::{EventKind, KeyValue, Op};
use crate::watch::{History, HistoryPage, RevisionEvents, Watcher};

/// A [`Store`] in memory, with the same transaction, revision, history and
/// watch semantics as [`RedbStore`](crate::RedbStore) (both plan their
/// writes with one function), and nothing on disk: everything is gone when
/// it is dropped.
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Arc<RevisionEvents>>,
    history_revisions: i64,
}

struct State {
    keys: BTreeMap<String, KeyValue>,
    /// Revisions `compacted + 1 ..= revision`, oldest first.
    history: VecDeque<Arc<RevisionEvents>>,
    revision: i64,
    compacted: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default [`StoreOptions`].
    pub fn new() -> Self {
        Self::with_options(&StoreOptions::default())
    }

    /// An empty store keeping [`StoreOptions::history_revisions`] (at
    /// least one) revisions for watches, older ones compacted, with a live
    /// event buffer of [`StoreOptions::watch_buffer`]; the file options do
    /// not apply.
    pub fn with_options(options: &StoreOptions) -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                keys: BTreeMap::new(),
                history: VecDeque::new(),
                revision: 0,
                compacted: 0,
            })),
            events: broadcast::channel(options.watch_buffer.max(1)).0,
            history_revisions: options.history_revisions.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// The state, even if a panicking holder poisoned it: every write leaves it
/// consistent before anything that can panic.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().keys.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let state = self.lock();
        let values = state
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((values, state.revision))
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<i64> {
        let mut state = self.lock();
        let revision = state.revision + 1;
        let events = plan(&ops, revision, |key| Ok(state.keys.get(key).cloned()))?;
        if events.is_empty() {
            return Ok(state.revision);
        }
        for event in &events {
            match event.kind {
                EventKind::Put => state.keys.insert(event.kv.key.clone(), event.kv.clone()),
                EventKind::Delete => state.keys.remove(&event.kv.key),
            };
        }
        state.revision = revision;
        let published = Arc::new(RevisionEvents { revision, events });
        state.history.push_back(Arc::clone(&published));
        while state.history.len() as i64 > self.history_revisions {
            state.history.pop_front();
            state.compacted += 1;
        }
        // Sent under the lock, so live watchers see revisions in order. No
        // receivers is fine: nobody is watching.
        let _ = self.events.send(published);
        Ok(revision)
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.lock().revision)
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        if after_revision < 0 {
            return Err(Error::InvalidRequest(format!(
                "watch revision {after_revision} is negative"
            )));
        }
        let state = self.lock();
        if after_revision < state.compacted {
            return Err(Error::Compacted {
                requested: after_revision,
                oldest: state.compacted,
            });
        }
        // Subscribed under the lock: every later revision arrives live, every
        // earlier one is in the history replayed up to `replay_until`.
        Ok(Watcher {
            history: Box::new(MemoryHistory(Arc::downgrade(&self.state))),
            prefix: prefix.to_owned(),
            live: self.events.subscribe(),
            last: after_revision,
            replay_until: state.revision,
            pending: VecDeque::new(),
            finished: false,
        }
        .into_stream())
    }
}

/// The history of a [`MemoryStore`]; weak, so an open watch ends once the
/// store is dropped.
struct MemoryHistory(Weak<Mutex<State>>);

impl History for MemoryHistory {
    fn read(
        &self,
        prefix: &str,
        after: i64,
        through: i64,
    ) -> BoxFuture<'static, Result<HistoryPage>> {
        let page = self.0.upgrade().ok_or(Error::Closed).and_then(|state| {
            let state = lock(&state);
            if after < state.compacted {
                return Err(Error::Compacted {
                    requested: after,
                    oldest: state.compacted,
                });
            }
            Ok(state
                .history
                .iter()
                .filter(|published| (after + 1..=through).contains(&published.revision))
                .map(|published| {
                    let events = published
                        .events
                        .iter()
                        .filter(|event| event.kv.key.starts_with(prefix))
                        .cloned()
                        .collect();
                    (published.revision, events)
                })
                .collect())
        });
        Box::pin(std::future::ready(page))
    }
}
