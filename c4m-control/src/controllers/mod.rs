//! Controllers: level-triggered loops that drive the store toward what the
//! objects in it ask for.
//!
//! Each controller reconciles *everything* it owns on every wake-up (a cache
//! change or a resync tick): a missed event can never leave state wrong for
//! longer than one tick.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::cache::Cache;

pub(crate) mod disruption;
pub(crate) mod endpoints;
pub(crate) mod nodes;
pub(crate) mod workload;

/// Short pause after a wake-up so a burst of writes is reconciled once.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// Runs `reconcile` on every cache change and every `resync`, until
/// `shutdown`. `reconcile` returns the last revision it wrote, if any; the
/// loop waits for the cache to see it before reconciling again.
pub(crate) async fn run<F, Fut>(
    name: &'static str,
    cache: Arc<Cache>,
    resync: Duration,
    shutdown: CancellationToken,
    mut reconcile: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<i64>>>,
{
    let mut changed = cache.changed();
    loop {
        match reconcile().await {
            Ok(Some(revision)) => cache.wait_for(revision).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(controller = name, error = %e, "reconcile failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.changed() => {}
            _ = tokio::time::sleep(resync) => {}
        }
        changed.borrow_and_update();
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// The larger of two optional revisions.
pub(crate) fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}
