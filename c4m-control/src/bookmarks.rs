//! Watch bookmarks and the WatchList protocol.
//!
//! - `allowWatchBookmarks=true`: the watch also carries `BOOKMARK` events,
//!   each an object of the watched kind with only its resourceVersion, so a
//!   client that restarts its watch resumes from there rather than from
//!   the last object it happened to see. c4m sends one every
//!   [`WatchOptions::bookmark_interval`], naming the last revision this
//!   watch delivered (a revision nothing can still be on its way below).
//! - `sendInitialEvents=true` with `resourceVersionMatch=NotOlderThan`
//!   (client-go's WatchList, kube-rs's streaming lists): the watch starts
//!   with an `ADDED` event per object, then a bookmark annotated
//!   `k8s.io/initial-events-end: "true"` at the revision they were read at,
//!   then the changes after it; a list and a watch in one request.

use std::collections::HashMap;
use std::time::Duration;

use c4m_core::ResourceKind;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::{Error, Result};

/// The annotation that ends the initial events of a WatchList.
pub(crate) const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How often a watch that allows them gets a bookmark, by default (as
/// Kubernetes' watch cache, about once a minute).
pub(crate) const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// What a watch request asks for beyond its selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WatchOptions {
    /// `allowWatchBookmarks=true`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// How often bookmarks are sent.
    pub bookmark_interval: Duration,
}

impl WatchOptions {
    /// Reads the options, refusing combinations Kubernetes refuses.
    pub(crate) fn from_query(query: &HashMap<String, String>) -> Result<Self> {
        let flag = |name: &str| -> Result<bool> {
            match query.get(name).map(String::as_str) {
                None | Some("") | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(other) => Err(Error::BadRequest(format!(
                    "{name}: invalid value {other:?}: must be true or false"
                ))),
            }
        };
        let allow_bookmarks = flag("allowWatchBookmarks")?;
        let send_initial_events = flag("sendInitialEvents")?;
        let matching = query.get("resourceVersionMatch").map(String::as_str);
        if send_initial_events {
            if matching != Some("NotOlderThan") {
                return Err(Error::Invalid(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires resourceVersionMatch=NotOlderThan".into(),
                ));
            }
            if !allow_bookmarks {
                return Err(Error::Invalid(
                    "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true (the end of the initial events is a bookmark)".into(),
                ));
            }
        }
        Ok(WatchOptions {
            allow_bookmarks,
            send_initial_events,
            bookmark_interval: BOOKMARK_INTERVAL,
        })
    }
}

/// A `BOOKMARK` event for `kind` at `revision`; `initial_events_end`
/// marks the end of a WatchList's initial events.
pub(crate) fn bookmark(kind: &ResourceKind, revision: i64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
    }
    json!({
        "type": "BOOKMARK",
        "object": {"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": metadata},
    })
}

/// `events` (watch events as JSON) with a bookmark every `interval` in
/// between, naming the last revision delivered (`from` before any).
pub(crate) fn with_bookmarks(
    events: impl Stream<Item = Value> + Send + 'static,
    kind: &'static ResourceKind,
    from: i64,
    interval: Duration,
) -> impl Stream<Item = Value> + Send + 'static {
    enum Item {
        Event(Value),
        Tick,
    }
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks = tokio_stream::wrappers::IntervalStream::new(ticks).map(|_| Item::Tick);
    // The watch ends when its events end, whatever the ticks do.
    let events = events
        .map(Item::Event)
        .map(Some)
        .chain(futures::stream::once(async { None }));
    let merged = futures::stream::select(events, ticks.map(Some));
    let mut last = from;
    merged
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(move |item| {
            let out = match item {
                Some(Item::Event(event)) => {
                    if let Some(revision) = event["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|rv| rv.parse::<i64>().ok())
                    {
                        last = last.max(revision);
                    }
                    Some(event)
                }
                Some(Item::Tick) => Some(bookmark(kind, last, false)),
                None => None,
            };
            std::future::ready(out)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::kind;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_follow_kubernetes_rules() {
        let list = WatchOptions::from_query(&query(&[
            ("sendInitialEvents", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
        ]))
        .unwrap();
        assert!(list.allow_bookmarks && list.send_initial_events);
        let error = WatchOptions::from_query(&query(&[
            ("sendInitialEvents", "true"),
            ("allowWatchBookmarks", "true"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("NotOlderThan"), "{error}");
        let error = WatchOptions::from_query(&query(&[
            ("sendInitialEvents", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("allowWatchBookmarks"), "{error}");
        assert_eq!(
            WatchOptions::from_query(&query(&[("allowWatchBookmarks", "maybe")]))
                .unwrap_err()
                .http_status()
                .0,
            400
        );
    }

    #[test]
    fn the_end_of_initial_events_is_an_annotated_bookmark() {
        let end = bookmark(kind("pods"), 42, true);
        assert_eq!(end["type"], "BOOKMARK");
        assert_eq!(end["object"]["kind"], "Pod");
        assert_eq!(end["object"]["apiVersion"], "v1");
        assert_eq!(end["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(
            end["object"]["metadata"]["annotations"][INITIAL_EVENTS_END],
            "true"
        );
        let plain = bookmark(kind("pods"), 42, false);
        assert!(plain["object"]["metadata"].get("annotations").is_none());
    }

    #[tokio::test]
    async fn bookmarks_name_the_last_revision_delivered() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let events = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        let interval = Duration::from_millis(50);
        let mut watch = Box::pin(with_bookmarks(events, kind("pods"), 7, interval));

        // Quiet: a bookmark at the revision the watch started from.
        let first = watch.next().await.unwrap();
        assert_eq!(first["type"], "BOOKMARK");
        assert_eq!(first["object"]["metadata"]["resourceVersion"], "7");

        let modified = json!({"type": "MODIFIED", "object": {"kind": "Pod",
            "metadata": {"name": "a", "resourceVersion": "12"}}});
        sender.send(modified.clone()).unwrap();
        assert_eq!(watch.next().await.unwrap(), modified);
        let next = watch.next().await.unwrap();
        assert_eq!(next["type"], "BOOKMARK");
        assert_eq!(next["object"]["metadata"]["resourceVersion"], "12");

        // The watch ends with its events.
        drop(sender);
        assert!(watch.next().await.is_none());
    }
}
