//! `WatchObjects`: the objects a node's own controllers read (Services and
//! EndpointSlices for its service rules, routes and TLS Secrets for its
//! edge gateway), streamed from the cache as stored: the whole set first,
//! then what each write changed.

use std::pin::Pin;
use std::sync::Arc;

use c4m_api::agent::{ObjectChanges, WatchedObject};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::cache::{Cache, Changes, ROOT, Stored};

/// The kinds a node may watch. Secrets are served only when of type
/// `kubernetes.io/tls` (what a gateway terminates TLS with).
pub(crate) const NODE_READABLE_KINDS: &[&str] = &[
    "services",
    "endpointslices",
    "nodes",
    "ingresses",
    "ingressclasses",
    "gatewayclasses",
    "gateways",
    "httproutes",
    "grpcroutes",
    "referencegrants",
    "secrets",
    // Their labels, for a Gateway listener's `allowedRoutes` selector.
    "namespaces",
    // What a node provisions, expands, snapshots and garbage-collects.
    "persistentvolumes",
    "persistentvolumeclaims",
    "storageclasses",
    "volumesnapshotcontents",
];

/// A message stays under this many bytes of objects (the agent's decoder
/// takes 4 MiB), unless one object alone is larger.
const MESSAGE_BYTES: usize = 1 << 20;

pub(crate) type ObjectStream = Pin<Box<dyn Stream<Item = Result<ObjectChanges, Status>> + Send>>;

/// Starts streaming `kinds` to `node`; refuses a kind a node may not read,
/// naming it.
pub(crate) fn watch_objects(
    cache: Arc<Cache>,
    node: String,
    mut kinds: Vec<String>,
    shutdown: CancellationToken,
) -> Result<ObjectStream, Status> {
    if kinds.is_empty() {
        return Err(Status::invalid_argument("kinds: name at least one kind"));
    }
    if let Some(kind) = kinds
        .iter()
        .find(|k| !NODE_READABLE_KINDS.contains(&k.as_str()))
    {
        return Err(Status::invalid_argument(format!(
            "kinds: {kind:?} is not a kind a node may watch (one of {})",
            NODE_READABLE_KINDS.join(", ")
        )));
    }
    kinds.sort();
    kinds.dedup();
    let plurals: Vec<&str> = kinds.iter().map(String::as_str).collect();
    // Subscribed before the first read (its first batch says "everything"),
    // so no write slips between the snapshot and the changes.
    let feed = cache.feed(&plurals);
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sender.closed() => return,
                batch = feed.next() => batch,
            };
            let messages = if batch.everything {
                everything(&cache, &kinds)
            } else {
                changes(&cache, &batch)
            };
            tracing::debug!(%node, messages = messages.len(), full = batch.everything, "objects for a node");
            for message in messages {
                if sender.send(Ok(message)).await.is_err() {
                    return; // The agent hung up.
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        receiver,
    )))
}

/// Every object of `kinds`, as messages of the first is `full`.
fn everything(cache: &Cache, kinds: &[String]) -> Vec<ObjectChanges> {
    let mut stored = Vec::new();
    for plural in kinds {
        cache.for_each_stored(&format!("{ROOT}{plural}/"), |key, object| {
            stored.push((key.to_string(), object.clone()));
        });
    }
    let mut batcher = Batcher::new(true);
    for (key, object) in stored {
        if let Some(watched) = visible(&key, &object) {
            batcher.push(watched);
        }
    }
    batcher.finish()
}

/// What `batch` changed: each changed key as it is now, or removed.
fn changes(cache: &Cache, batch: &Changes) -> Vec<ObjectChanges> {
    let mut batcher = Batcher::new(false);
    for key in batch.changed.keys() {
        match cache.stored(key).and_then(|object| visible(key, &object)) {
            Some(watched) => batcher.push(watched),
            None => batcher.remove(relative(key)),
        }
    }
    batcher.finish()
}

/// `object` as sent to a node, or `None` when a node may not see it.
fn visible(key: &str, object: &Stored) -> Option<WatchedObject> {
    let relative = relative(key);
    if relative.starts_with("secrets/") && !is_tls_secret(object) {
        return None;
    }
    Some(WatchedObject {
        key: relative.to_string(),
        json: object.json().to_vec(),
        revision: object.revision(),
    })
}

/// Every Secret of type `kubernetes.io/tls`, decoded; the others are not
/// (a byte test first): what a gateway may read.
pub(crate) fn tls_secrets(cache: &Cache) -> Vec<Arc<serde_json::Value>> {
    let mut found = Vec::new();
    cache.for_each_stored(&format!("{ROOT}secrets/"), |key, object| {
        if is_tls_secret(object) {
            found.push((key.to_string(), object.clone()));
        }
    });
    found
        .into_iter()
        .filter_map(|(key, object)| object.decode(&key))
        .collect()
}

fn is_tls_secret(object: &Stored) -> bool {
    object.contains(b"kubernetes.io/tls")
        && serde_json::from_slice::<serde_json::Value>(object.json())
            .is_ok_and(|secret| secret["type"] == "kubernetes.io/tls")
}

fn relative(key: &str) -> &str {
    key.strip_prefix(ROOT).unwrap_or(key)
}

/// Cuts one batch into messages of about [`MESSAGE_BYTES`]; all but the
/// last say `more`, only the first may say `full`.
struct Batcher {
    full: bool,
    limit: usize,
    messages: Vec<ObjectChanges>,
    current: ObjectChanges,
    bytes: usize,
}

impl Batcher {
    fn new(full: bool) -> Self {
        Self::with_limit(full, MESSAGE_BYTES)
    }

    fn with_limit(full: bool, limit: usize) -> Self {
        Batcher {
            full,
            limit,
            messages: Vec::new(),
            current: ObjectChanges {
                full,
                ..ObjectChanges::default()
            },
            bytes: 0,
        }
    }

    fn push(&mut self, object: WatchedObject) {
        self.cut_before(object.key.len() + object.json.len());
        self.current.objects.push(object);
    }

    fn remove(&mut self, key: &str) {
        self.cut_before(key.len());
        self.current.removed.push(key.to_string());
    }

    fn cut_before(&mut self, size: usize) {
        let empty = self.current.objects.is_empty() && self.current.removed.is_empty();
        if !empty && self.bytes + size > self.limit {
            let mut next = ObjectChanges {
                full: false,
                ..ObjectChanges::default()
            };
            std::mem::swap(&mut next, &mut self.current);
            next.more = true;
            self.messages.push(next);
            self.bytes = 0;
        }
        self.bytes += size;
    }

    fn finish(mut self) -> Vec<ObjectChanges> {
        let empty = self.current.objects.is_empty() && self.current.removed.is_empty();
        // A full batch is sent even when empty: it tells the node the set is empty.
        if !empty || self.full && self.messages.is_empty() {
            self.messages.push(self.current);
        }
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: usize) -> WatchedObject {
        WatchedObject {
            key: key.to_string(),
            json: vec![b' '; size],
            revision: 1,
        }
    }

    #[test]
    fn a_batch_is_cut_into_messages_under_the_limit_and_only_the_last_says_done() {
        let mut batcher = Batcher::with_limit(true, 100);
        for i in 0..5 {
            batcher.push(object(&format!("services/ns/s{i}"), 40));
        }
        batcher.remove("services/ns/gone");
        let messages = batcher.finish();
        let shape: Vec<_> = messages
            .iter()
            .map(|m| (m.full, m.more, m.objects.len(), m.removed.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (true, true, 1, 0),
                (false, true, 1, 0),
                (false, true, 1, 0),
                (false, true, 1, 0),
                (false, false, 1, 1)
            ]
        );

        // An object larger than the limit still goes, alone.
        let mut batcher = Batcher::with_limit(false, 10);
        batcher.push(object("services/ns/big", 50));
        assert_eq!(batcher.finish().len(), 1);

        // An empty full batch is sent (the set is empty); an empty change is not.
        assert_eq!(Batcher::new(true).finish().len(), 1);
        assert!(Batcher::new(false).finish().is_empty());
    }
}
