//! The embedded, crash-safe [`Store`] on a redb file.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use futures::future::BoxFuture;
use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::{Error, Result};
use crate::options::StoreOptions;
use crate::store::{Store, WatchStream};
use crate::tables::{self, HISTORY, KEYS, META};
use crate::types::{KeyValue, Op};
use crate::watch::{History, HistoryPage, RevisionEvents, Watcher};
use crate::writer::{WriteRequest, Writer};

/// Pending transactions allowed to queue for the writer before callers wait.
const WRITE_QUEUE: usize = 1024;
const MAX_WATCH_BUFFER: usize = 1 << 24;

/// A [`Store`] kept in a single redb file.
///
/// Every acknowledged transaction is durable (redb `Durability::Immediate`). Writes run on a
/// dedicated thread; reads run on tokio's blocking pool. Dropping the store waits for the writer
/// to finish queued work and closes the file; open watch streams then end with
/// [`Error::Closed`].
///
/// A `txn` whose future is dropped after it was queued may still be applied, as with etcd.
pub struct RedbStore {
    db: Arc<Database>,
    requests: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    events: broadcast::Sender<Arc<RevisionEvents>>,
    revision: Arc<AtomicI64>,
}

impl RedbStore {
    /// Opens the store at `path` with default options, creating the file if missing.
    ///
    /// Blocking: call it at startup or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<RedbStore> {
        RedbStore::open_with(path, StoreOptions::default())
    }

    /// Opens the store at `path` with `options`, creating the file if missing.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<RedbStore> {
        if options.history_revisions < 1 {
            return Err(Error::InvalidRequest(
                "history_revisions must be at least 1".into(),
            ));
        }
        if !(1..=MAX_WATCH_BUFFER).contains(&options.watch_buffer) {
            return Err(Error::InvalidRequest(format!(
                "watch_buffer must be between 1 and {MAX_WATCH_BUFFER}"
            )));
        }
        let db = Database::builder()
            .set_check_integrity_on_open(options.verify_on_open)
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(Error::storage)?;
        let counters = {
            // Create the tables up front so readers never see them missing.
            let txn = db.begin_write().map_err(Error::storage)?;
            txn.open_table(KEYS).map_err(Error::storage)?;
            txn.open_table(HISTORY).map_err(Error::storage)?;
            let counters = tables::read_counters(&txn.open_table(META).map_err(Error::storage)?)?;
            txn.commit().map_err(Error::storage)?;
            counters
        };
        let db = Arc::new(db);
        let revision = Arc::new(AtomicI64::new(counters.revision));
        let (events, _) = broadcast::channel(options.watch_buffer);
        let (requests, queue) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            db: db.clone(),
            counters,
            history_revisions: options.history_revisions,
            published_revision: revision.clone(),
            events: events.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("c4m-state-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|err| Error::internal("cannot start writer thread", err))?;
        Ok(RedbStore {
            db,
            requests: Some(requests),
            writer: Some(writer),
            events,
            revision,
        })
    }

    /// Runs a blocking read on tokio's blocking pool against one consistent snapshot.
    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(Error::storage)?;
            read(&txn)
        })
        .await
        .map_err(|err| Error::internal("read task failed", err))?
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |txn| tables::read_key(txn, &key)).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>> {
        let keys = keys.to_vec();
        self.read(move |txn| keys.iter().map(|key| tables::read_key(txn, key)).collect())
            .await
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let prefix = prefix.to_owned();
        self.read(move |txn| tables::read_prefix(txn, &prefix))
            .await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<i64> {
        let requests = self.requests.as_ref().ok_or(Error::Closed)?;
        let (reply, outcome) = oneshot::channel();
        requests
            .send(WriteRequest { ops, reply })
            .await
            .map_err(|_| Error::Closed)?;
        outcome.await.map_err(|_| Error::Closed)?
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.revision.load(Ordering::Acquire))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        if after_revision < 0 {
            return Err(Error::InvalidRequest(format!(
                "watch revision {after_revision} is negative"
            )));
        }
        // Subscribe before reading the replay target: see the `watch` module docs.
        let live = self.events.subscribe();
        let counters = self.read(tables::snapshot_counters).await?;
        if after_revision < counters.compacted {
            return Err(Error::Compacted {
                requested: after_revision,
                oldest: counters.compacted,
            });
        }
        Ok(Watcher {
            history: Box::new(RedbHistory(Arc::downgrade(&self.db))),
            prefix: prefix.to_owned(),
            live,
            last: after_revision,
            replay_until: counters.revision,
            pending: VecDeque::new(),
            finished: false,
        }
        .into_stream())
    }
}

/// The history table, read on tokio's blocking pool. Weak, so an open watch
/// does not keep the database file open after the store is dropped.
struct RedbHistory(Weak<Database>);

impl History for RedbHistory {
    fn read(
        &self,
        prefix: &str,
        after: i64,
        through: i64,
    ) -> BoxFuture<'static, Result<HistoryPage>> {
        let db = self.0.clone();
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let db = db.upgrade().ok_or(Error::Closed)?;
            tokio::task::spawn_blocking(move || {
                let txn = db.begin_read().map_err(Error::storage)?;
                tables::read_history(&txn, &prefix, after, through)
            })
            .await
            .map_err(|err| Error::internal("history read task failed", err))?
        })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer after it has answered everything queued.
        self.requests.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("c4m-state writer thread panicked");
        }
    }
}
