//! The single writer thread.
//!
//! All transactions funnel through one OS thread so that revisions are assigned, committed and
//! published to watchers in one order, and so the tokio runtime never blocks on `fsync`. Requests
//! that queue up while a commit is in flight are applied together and made durable by a single
//! redb commit (group commit); each still gets its own revision and all-or-nothing semantics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use redb::{Database, ReadableDatabase, Table, WriteTransaction};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::codec;
use crate::error::{Error, Result};
use crate::plan::plan;
use crate::tables::{self, Counters, HISTORY, KEYS, META, META_COMPACTED, META_REVISION};
use crate::types::{EventKind, Op, WatchEvent};
use crate::watch::RevisionEvents;

/// Upper bound on transactions folded into one redb commit.
const MAX_GROUP: usize = 128;

/// One caller's transaction and where to send its outcome.
pub(crate) struct WriteRequest {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Result<i64>>,
}

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub counters: Counters,
    pub history_revisions: i64,
    /// Mirror of `counters.revision` for lock-free `current_revision()`.
    pub published_revision: Arc<AtomicI64>,
    pub events: broadcast::Sender<Arc<RevisionEvents>>,
}

impl Writer {
    /// Serves requests until every sender is dropped.
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<WriteRequest>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while requests.blocking_recv_many(&mut group, MAX_GROUP) > 0 {
            self.serve(std::mem::take(&mut group));
        }
    }

    fn serve(&mut self, group: Vec<WriteRequest>) {
        let ops: Vec<&[Op]> = group.iter().map(|request| request.ops.as_slice()).collect();
        let committed = self.commit_group(&ops);
        if let Err(failure) = &committed {
            tracing::warn!(
                transactions = group.len(),
                "store write failed: {}",
                failure.error
            );
            // A failed commit may still have reached disk; never reuse a revision.
            self.reload_counters();
        }
        match committed {
            Ok(outcomes) => {
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    // The caller may have gone away; its write stands either way.
                    let _ = request.reply.send(outcome);
                }
            }
            // Failed while building the group (e.g. an oversized value): retry one by one so a
            // single bad transaction cannot fail its neighbours. A failed commit is not retried,
            // since it may have been partly applied.
            Err(failure) if !failure.committing && group.len() > 1 => {
                for request in group {
                    self.serve(vec![request]);
                }
            }
            Err(failure) => {
                let mut error = Some(failure.error);
                for request in group {
                    // Error is not Clone (redb's errors aren't): the first caller gets the
                    // original, the rest its message.
                    let error = error.take().unwrap_or_else(|| {
                        Error::internal("group commit failed", failure.message.clone())
                    });
                    let _ = request.reply.send(Err(error));
                }
            }
        }
    }

    fn reload_counters(&mut self) {
        let counters = self
            .db
            .begin_read()
            .map_err(Error::storage)
            .and_then(|txn| tables::snapshot_counters(&txn));
        match counters {
            Ok(counters) => {
                self.counters = counters;
                self.published_revision
                    .store(counters.revision, Ordering::Release);
            }
            Err(err) => tracing::error!("cannot re-read store counters: {err}"),
        }
    }

    /// Applies each transaction in `group` at its own revision and commits them together.
    ///
    /// The outer error means the group failed as a whole; inner errors are per-transaction
    /// rejections.
    fn commit_group(&mut self, group: &[&[Op]]) -> Result<Vec<Result<i64>>, GroupFailure> {
        let txn = self
            .db
            .begin_write()
            .map_err(|err| GroupFailure::new(Error::storage(err), false))?;
        let built = self
            .build_group(&txn, group)
            .map_err(|err| GroupFailure::new(err, false))?;
        if built.published.is_empty() {
            txn.abort()
                .map_err(|err| GroupFailure::new(Error::storage(err), false))?;
            return Ok(built.outcomes);
        }
        // Durability::Immediate (redb's default): on disk once commit returns.
        txn.commit()
            .map_err(|err| GroupFailure::new(Error::storage(err), true))?;
        self.counters = built.counters;
        self.published_revision
            .store(built.counters.revision, Ordering::Release);
        for revision_events in built.published {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(revision_events);
        }
        Ok(built.outcomes)
    }

    /// Writes every transaction of `group` into `txn` (uncommitted).
    fn build_group(&self, txn: &WriteTransaction, group: &[&[Op]]) -> Result<BuiltGroup> {
        let mut built = BuiltGroup {
            counters: self.counters,
            outcomes: Vec::with_capacity(group.len()),
            published: Vec::new(),
        };
        let counters = &mut built.counters;
        let mut keys = txn.open_table(KEYS).map_err(Error::storage)?;
        let mut history = txn.open_table(HISTORY).map_err(Error::storage)?;
        for ops in group {
            // Planning only reads, so a rejection leaves the write transaction untouched.
            let events = match plan(ops, counters.revision + 1, |key| {
                tables::get_key(&keys, key)
            }) {
                Ok(events) => events,
                Err(rejection) => {
                    built.outcomes.push(Err(rejection));
                    continue;
                }
            };
            if events.is_empty() {
                // Nothing changes: no new revision (etcd bumps here; we keep history dense).
                built.outcomes.push(Ok(counters.revision));
                continue;
            }
            counters.revision += 1;
            write_events(&mut keys, &events)?;
            history
                .insert(counters.revision, codec::encode_events(&events).as_slice())
                .map_err(Error::storage)?;
            built.outcomes.push(Ok(counters.revision));
            built.published.push(Arc::new(RevisionEvents {
                revision: counters.revision,
                events,
            }));
        }
        if !built.published.is_empty() {
            let cutoff = counters.revision - self.history_revisions;
            if cutoff > counters.compacted {
                history
                    .retain_in(..=cutoff, |_, _| false)
                    .map_err(Error::storage)?;
                counters.compacted = cutoff;
            }
            let mut meta = txn.open_table(META).map_err(Error::storage)?;
            meta.insert(META_REVISION, counters.revision)
                .map_err(Error::storage)?;
            meta.insert(META_COMPACTED, counters.compacted)
                .map_err(Error::storage)?;
        }
        Ok(built)
    }
}

/// A group's writes, ready to commit.
struct BuiltGroup {
    counters: Counters,
    outcomes: Vec<Result<i64>>,
    published: Vec<Arc<RevisionEvents>>,
}

/// Why a whole group failed.
struct GroupFailure {
    error: Error,
    /// `error.to_string()`, for the group members after the first.
    message: String,
    /// The commit itself failed, so the group may be partly on disk and must not be retried.
    committing: bool,
}

impl GroupFailure {
    fn new(error: Error, committing: bool) -> Self {
        GroupFailure {
            message: error.to_string(),
            error,
            committing,
        }
    }
}

/// Applies planned events to the key table.
fn write_events(
    keys: &mut Table<&'static [u8], &'static [u8]>,
    events: &[WatchEvent],
) -> Result<()> {
    for event in events {
        let key = event.kv.key.as_bytes();
        match event.kind {
            EventKind::Put => {
                keys.insert(key, codec::encode_kv(&event.kv).as_slice())
                    .map_err(Error::storage)?;
            }
            EventKind::Delete => {
                keys.remove(key).map_err(Error::storage)?;
            }
        }
    }
    Ok(())
}
