//! Events: what happened to an object, in Kubernetes' `core/v1` Event
//! shape, recorded by every part of the control plane (and, through their
//! reports, the agents).
//!
//! Recording never blocks and never fails the caller: [`Events::record`]
//! hands the event to a writer task over a bounded channel (a full channel
//! drops it, as client-go's broadcaster does under a storm). The writer
//! folds repeats into one Event, as Kubernetes' aggregation does: the same
//! object, type, reason, message and reporting component within the TTL
//! make one object whose `count` and `lastTimestamp` grow. It writes what
//! changed in batches, one transaction per batch, and deletes Events whose
//! last occurrence is older than the TTL (Kubernetes' `--event-ttl`, one
//! hour by default), so they cannot fill the store.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use c4m_core::format_rfc3339;
use c4m_state::{Op, Precondition, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::objects::{name_of, namespace_of};

/// Events waiting for the writer; beyond this many, new ones are dropped.
const QUEUE: usize = 4096;
/// Repeats remembered for aggregation; the oldest are forgotten first.
const REMEMBERED: usize = 16_384;
/// The key prefix of Events in the store.
const PREFIX: &str = "/registry/events/";

/// Whether an Event reports something normal or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventType {
    /// Things going as they should (`Scheduled`, `Started`).
    Normal,
    /// Something the user may need to act on (`FailedScheduling`, `BackOff`).
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an Event is about (its `involvedObject`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Regarding {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    /// A part of the object (`spec.containers{web}`), if the event is about
    /// one.
    pub(crate) field_path: Option<String>,
}

impl Regarding {
    /// The object `object` (an API object as JSON).
    pub(crate) fn of(object: &Value) -> Regarding {
        Regarding {
            api_version: object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            kind: object["kind"].as_str().unwrap_or_default().to_string(),
            namespace: namespace_of(object).to_string(),
            name: name_of(object).to_string(),
            uid: object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            field_path: None,
        }
    }

    /// Where the Event lives: the object's namespace, or `default` for
    /// cluster-scoped objects (as Kubernetes files a Node's events).
    fn event_namespace(&self) -> &str {
        if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }
}

/// One occurrence, as recorded.
#[derive(Debug, Clone)]
struct Occurrence {
    regarding: Regarding,
    event_type: EventType,
    reason: String,
    message: String,
    component: &'static str,
    at: SystemTime,
}

/// What makes two occurrences the same Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggregateKey {
    regarding: Regarding,
    event_type: EventType,
    reason: String,
    message: String,
    component: &'static str,
}

/// Records Events; cheap to clone, never blocks. One made by
/// [`Events::disabled`] drops everything (unit tests, tools).
#[derive(Clone, Debug)]
pub(crate) struct Events {
    queue: Option<mpsc::Sender<Occurrence>>,
}

impl Events {
    /// Records nothing.
    pub(crate) fn disabled() -> Events {
        Events { queue: None }
    }

    /// Records that `reason` (a CamelCase word, `FailedScheduling`)
    /// happened to `regarding`, reported by `component` (`default-scheduler`,
    /// `kubelet`, `job-controller`, ...), with a human `message`.
    pub(crate) fn record(
        &self,
        regarding: Regarding,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
        component: &'static str,
    ) {
        let Some(queue) = &self.queue else {
            return;
        };
        let occurrence = Occurrence {
            regarding,
            event_type,
            reason: reason.to_string(),
            message: message.into(),
            component,
            at: SystemTime::now(),
        };
        if queue.try_send(occurrence).is_err() {
            tracing::debug!(reason, "event dropped: the event queue is full");
        }
    }
}

/// How Events are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventsConfig {
    /// How long after its last occurrence an Event is deleted.
    pub(crate) ttl: Duration,
    /// How often what changed is written.
    pub(crate) flush: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            ttl: Duration::from_secs(3600),
            flush: Duration::from_millis(200),
        }
    }
}

/// A recorder and the writer task that stores what it records.
pub(crate) fn events(store: Arc<dyn Store>, config: EventsConfig) -> (Events, EventWriter) {
    let (queue, received) = mpsc::channel(QUEUE);
    (
        Events { queue: Some(queue) },
        EventWriter {
            store,
            config,
            received,
            aggregates: HashMap::new(),
        },
    )
}

/// An Event as the writer keeps it between writes.
struct Aggregate {
    name: String,
    uid: String,
    first: SystemTime,
    last: SystemTime,
    count: u64,
    /// Whether it changed since it was last written.
    dirty: bool,
}

/// Stores recorded Events: aggregates, writes in batches, expires.
pub(crate) struct EventWriter {
    store: Arc<dyn Store>,
    config: EventsConfig,
    received: mpsc::Receiver<Occurrence>,
    aggregates: HashMap<AggregateKey, Aggregate>,
}

impl EventWriter {
    /// Runs until `shutdown`, then writes what is pending.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> crate::Result<()> {
        let mut flush = tokio::time::interval(self.config.flush);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expiry_period =
            (self.config.ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
        let mut expiry = tokio::time::interval(expiry_period);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.received.recv() => match received {
                    Some(occurrence) => self.add(occurrence),
                    None => break,
                },
                _ = flush.tick() => self.write().await,
                _ = expiry.tick() => self.expire().await,
            }
        }
        self.write().await;
        Ok(())
    }

    fn add(&mut self, occurrence: Occurrence) {
        let key = AggregateKey {
            regarding: occurrence.regarding,
            event_type: occurrence.event_type,
            reason: occurrence.reason,
            message: occurrence.message,
            component: occurrence.component,
        };
        let at = occurrence.at;
        let ttl = self.config.ttl;
        match self.aggregates.get_mut(&key) {
            Some(aggregate)
                if at
                    .duration_since(aggregate.last)
                    .is_ok_and(|since| since < ttl) =>
            {
                aggregate.count += 1;
                aggregate.last = at;
                aggregate.dirty = true;
            }
            _ => {
                if self.aggregates.len() >= REMEMBERED {
                    self.forget_oldest();
                }
                let name = event_name(&key, at);
                self.aggregates.insert(
                    key,
                    Aggregate {
                        name,
                        uid: uuid::Uuid::new_v4().to_string(),
                        first: at,
                        last: at,
                        count: 1,
                        dirty: true,
                    },
                );
            }
        }
    }

    /// Forgets the tenth of the remembered repeats that last happened
    /// longest ago (their Events stay; a repeat starts a new one).
    fn forget_oldest(&mut self) {
        let mut lasts: Vec<SystemTime> = self.aggregates.values().map(|a| a.last).collect();
        lasts.sort();
        let cutoff = lasts[lasts.len() / 10];
        self.aggregates
            .retain(|_, aggregate| aggregate.dirty || aggregate.last > cutoff);
    }

    /// Writes every Event that changed, in one transaction.
    async fn write(&mut self) {
        let ops: Vec<Op> = self
            .aggregates
            .iter()
            .filter(|(_, aggregate)| aggregate.dirty)
            .map(|(key, aggregate)| {
                let event = event_object(key, aggregate);
                let store_key = format!(
                    "{PREFIX}{}/{}",
                    key.regarding.event_namespace(),
                    aggregate.name
                );
                Op::put(
                    &store_key,
                    Bytes::from(event.to_string()),
                    Precondition::None,
                )
            })
            .collect();
        if ops.is_empty() {
            return;
        }
        let count = ops.len();
        match self.store.txn(ops).await {
            Ok(_) => self
                .aggregates
                .values_mut()
                .for_each(|aggregate| aggregate.dirty = false),
            // They stay dirty: the next flush tries again.
            Err(e) => tracing::warn!(error = %e, count, "cannot write events"),
        }
    }

    /// Deletes Events last seen longer than the TTL ago, and forgets them.
    async fn expire(&mut self) {
        let now = SystemTime::now();
        let ttl = self.config.ttl;
        let older_than =
            |last: SystemTime, age: Duration| now.duration_since(last).is_ok_and(|a| a >= age);
        self.aggregates
            .retain(|_, aggregate| !older_than(aggregate.last, ttl));
        // Stored times are whole seconds: one more second, so an Event is
        // never taken for older than it is.
        let expired = |last: SystemTime| older_than(last, ttl + Duration::from_secs(1));
        let stored = match self.store.range(PREFIX).await {
            Ok((stored, _)) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read events to expire them");
                return;
            }
        };
        let ops: Vec<Op> = stored
            .iter()
            .filter(|kv| {
                serde_json::from_slice::<Value>(&kv.value)
                    .ok()
                    .and_then(|event| last_occurrence(&event))
                    .is_none_or(expired)
            })
            .map(|kv| Op::delete(&kv.key, Precondition::ModRevision(kv.mod_revision)))
            .collect();
        if ops.is_empty() {
            return;
        }
        let count = ops.len();
        match self.store.txn(ops).await {
            Ok(_) => tracing::debug!(count, "expired events deleted"),
            // One changed meanwhile (a repeat): the next round sees it.
            Err(e) if e.is_conflict() => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete expired events"),
        }
    }
}

/// `<object name>.<16 hex digits>`, as Kubernetes names Events.
fn event_name(key: &AggregateKey, at: SystemTime) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    at.hash(&mut hasher);
    format!("{}.{:016x}", key.regarding.name, hasher.finish())
}

/// The Event object, `core/v1`.
fn event_object(key: &AggregateKey, aggregate: &Aggregate) -> Value {
    let regarding = &key.regarding;
    let mut involved = json!({
        "apiVersion": regarding.api_version,
        "kind": regarding.kind,
        "name": regarding.name,
        "uid": regarding.uid,
    });
    if !regarding.namespace.is_empty() {
        involved["namespace"] = json!(regarding.namespace);
    }
    if let Some(field_path) = &regarding.field_path {
        involved["fieldPath"] = json!(field_path);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": aggregate.name,
            "namespace": regarding.event_namespace(),
            "uid": aggregate.uid,
            "creationTimestamp": format_rfc3339(aggregate.first),
        },
        "involvedObject": involved,
        "type": key.event_type.as_str(),
        "reason": key.reason,
        "message": key.message,
        "source": {"component": key.component},
        "reportingComponent": key.component,
        "reportingInstance": "",
        "firstTimestamp": format_rfc3339(aggregate.first),
        "lastTimestamp": format_rfc3339(aggregate.last),
        "count": aggregate.count,
    })
}

/// When a stored Event last happened.
fn last_occurrence(event: &Value) -> Option<SystemTime> {
    let text = event["lastTimestamp"]
        .as_str()
        .or_else(|| event["eventTime"].as_str())?;
    c4m_core::parse_rfc3339(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"}})
    }

    async fn stored(store: &dyn Store) -> Vec<Value> {
        let (kvs, _) = store.range(PREFIX).await.unwrap();
        kvs.iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn repeats_make_one_event_with_a_count() {
        let store: Arc<dyn Store> = Arc::new(c4m_state::MemoryStore::new());
        let (events, mut writer) = events(Arc::clone(&store), EventsConfig::default());
        for _ in 0..3 {
            let container = Regarding {
                field_path: Some("spec.containers{web}".into()),
                ..Regarding::of(&pod())
            };
            events.record(
                container,
                EventType::Warning,
                "BackOff",
                "Back-off restarting failed container",
                "kubelet",
            );
        }
        events.record(
            Regarding::of(&pod()),
            EventType::Normal,
            "Pulled",
            "Container image already present",
            "kubelet",
        );
        while let Ok(occurrence) = writer.received.try_recv() {
            writer.add(occurrence);
        }
        writer.write().await;
        let mut stored = stored(store.as_ref()).await;
        stored.sort_by_key(|e| e["reason"].as_str().unwrap_or_default().to_string());
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert_eq!(stored[0]["reason"], "BackOff");
        assert_eq!(stored[0]["count"], 3);
        assert_eq!(stored[0]["type"], "Warning");
        assert_eq!(stored[0]["involvedObject"]["name"], "web-1");
        assert_eq!(
            stored[0]["involvedObject"]["fieldPath"],
            "spec.containers{web}"
        );
        assert_eq!(stored[0]["metadata"]["namespace"], "shop");
        assert_eq!(stored[1]["count"], 1);
    }

    #[tokio::test]
    async fn events_past_their_ttl_are_deleted() {
        let store: Arc<dyn Store> = Arc::new(c4m_state::MemoryStore::new());
        let config = EventsConfig {
            ttl: Duration::from_millis(50),
            flush: Duration::from_millis(10),
        };
        let (events, writer) = events(Arc::clone(&store), config);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(writer.run(shutdown.clone()));
        let node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "n"}});
        events.record(
            Regarding::of(&node),
            EventType::Normal,
            "NodeReady",
            "node n1 is ready",
            "node-controller",
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while stored(store.as_ref()).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the event is written");
        // A cluster-scoped object's events live in `default`.
        assert_eq!(
            stored(store.as_ref()).await[0]["metadata"]["namespace"],
            "default"
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while !stored(store.as_ref()).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the expired event is deleted");
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
}
