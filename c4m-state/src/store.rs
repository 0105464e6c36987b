//! The backend-neutral store interface.

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::types::{KeyValue, Op, Precondition, WatchEvent};

/// A stream of watch events, in revision order, without gaps or duplicates.
///
/// The stream ends with an error item ([`Error::WatchLagged`](crate::Error::WatchLagged),
/// [`Error::Compacted`](crate::Error::Compacted), [`Error::Closed`](crate::Error::Closed), ...)
/// rather than skipping events; after an error the caller should re-list and watch again.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// An etcd-v3-shaped key-value store with a single global revision, compare-and-swap
/// transactions and prefix watches. Usable as `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads several keys, each answer in the position of its key. The
    /// default reads them one by one; a backend may read them in one go
    /// (one consistent snapshot).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// Reads every key starting with `prefix` (all keys for `""`), sorted by key, from one
    /// consistent snapshot, together with the revision of that snapshot.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)>;

    /// Applies `ops` atomically and returns the resulting revision.
    ///
    /// If any precondition fails nothing is written and [`Error::Conflict`](crate::Error::Conflict)
    /// names the key. A transaction that changes nothing (empty, or only deletes of missing keys)
    /// does not bump the revision and returns the current one. A key may appear at most once.
    async fn txn(&self, ops: Vec<Op>) -> Result<i64>;

    /// The revision of the latest committed write (0 for an empty store).
    async fn current_revision(&self) -> Result<i64>;

    /// Watches keys starting with `prefix`, yielding every event with revision
    /// `> after_revision`: past events from history first, then live ones.
    ///
    /// Pass the revision returned by [`range`](Store::range) for a gapless list-then-watch;
    /// pass [`current_revision`](Store::current_revision) to see only future events.
    /// Fails with [`Error::Compacted`](crate::Error::Compacted) if that history is gone.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream>;

    /// Writes one key under `precondition`; returns the new revision.
    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<i64> {
        self.txn(vec![Op::Put {
            key: key.to_owned(),
            value,
            precondition,
        }])
        .await
    }

    /// Deletes one key under `precondition`; returns the resulting revision (unchanged if the key
    /// was already absent and `precondition` is [`Precondition::None`]).
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<i64> {
        self.txn(vec![Op::Delete {
            key: key.to_owned(),
            precondition,
        }])
        .await
    }
}
