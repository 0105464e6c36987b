//! Watch streams: history replay from the backend's log, then live events from the writer.
//!
//! A watcher that falls behind the live channel catches up from history, so a burst of
//! writes never forces a re-list unless the history it needs was compacted.
//!
//! Gaplessness: the watcher subscribes to live events *before* reading the revision it will
//! replay up to. Any revision published before the subscription was committed before that read,
//! so it is in the replayed history; any later one arrives live. Live revisions already replayed
//! are skipped, and every revision is checked to be exactly one past the previous.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::{Error, Result};
use crate::store::WatchStream;
use crate::types::WatchEvent;

/// Everything that happened at one revision, as published to live watchers.
#[derive(Debug)]
pub(crate) struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<WatchEvent>,
}

/// Past revisions with their events (those under a watch's prefix).
pub(crate) type HistoryPage = Vec<(i64, Vec<WatchEvent>)>;

/// A backend's history of past revisions, as a watcher replays it.
pub(crate) trait History: Send + Sync + 'static {
    /// The events of revisions `after + 1 ..= through` whose keys start with
    /// `prefix`, one entry per revision (empty when none matched), or
    /// [`Error::Compacted`] when `after` is older than the history kept.
    /// Ends with [`Error::Closed`] once the store is gone: an open watch
    /// must not keep it alive.
    fn read(
        &self,
        prefix: &str,
        after: i64,
        through: i64,
    ) -> BoxFuture<'static, Result<HistoryPage>>;
}

/// Revisions read from history per blocking read, bounding a watcher's replay memory.
const REPLAY_PAGE: i64 = 512;

pub(crate) struct Watcher {
    /// Where past revisions are read from.
    pub history: Box<dyn History>,
    pub prefix: String,
    pub live: broadcast::Receiver<Arc<RevisionEvents>>,
    /// The last revision delivered (or skipped as not matching the prefix).
    pub last: i64,
    /// Replay history until `last` reaches this revision, then switch to live events.
    pub replay_until: i64,
    pub pending: VecDeque<WatchEvent>,
    pub finished: bool,
}

impl Watcher {
    pub(crate) fn into_stream(self) -> WatchStream {
        futures::stream::unfold(self, |mut watcher| async move {
            let item = watcher.next_event().await?;
            Some((item, watcher))
        })
        .boxed()
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let step = if self.last < self.replay_until {
                self.replay_page().await
            } else {
                self.receive_live().await
            };
            if let Err(err) = step {
                self.finished = true;
                return Some(Err(err));
            }
        }
    }

    async fn replay_page(&mut self) -> Result<()> {
        let after = self.last;
        let through = self.replay_until.min(after.saturating_add(REPLAY_PAGE));
        let page = self.history.read(&self.prefix, after, through).await?;
        for (revision, events) in page {
            self.accept(revision, events);
        }
        Ok(())
    }

    async fn receive_live(&mut self) -> Result<()> {
        match self.live.recv().await {
            Ok(published) if published.revision <= self.last => Ok(()),
            // Live messages were lost while this watcher was slow: catch up from history
            // (as an etcd watcher does) through this revision, then follow live again. Only
            // history compacted past `last` ends the stream, with `Compacted`.
            Ok(published) if published.revision != self.last + 1 => {
                self.replay_until = published.revision;
                Ok(())
            }
            Ok(published) => {
                let events = published
                    .events
                    .iter()
                    .filter(|event| event.kv.key.starts_with(&self.prefix))
                    .cloned()
                    .collect();
                self.accept(published.revision, events);
                Ok(())
            }
            // The buffer overflowed, but the lost messages may all be ones already replayed;
            // the continuity check above decides whether anything we need was lost.
            Err(RecvError::Lagged(_)) => Ok(()),
            Err(RecvError::Closed) => Err(Error::Closed),
        }
    }

    fn accept(&mut self, revision: i64, events: Vec<WatchEvent>) {
        self.last = revision;
        self.pending.extend(events);
    }
}
