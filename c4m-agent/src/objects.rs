//! The objects a node's own controllers read (Services, EndpointSlices,
//! routes), mirrored from the control plane's `WatchObjects` stream.
//!
//! A consumer subscribes to [`NodeObjects`] and waits for the first set:
//! until the first whole set has arrived the mirror holds `None`, so no
//! consumer mistakes "not yet known" for "nothing exists" (which would, say,
//! remove every service rule while the control plane is still unreachable
//! after an agent restart). While the control plane is away the last set
//! stays.

use std::collections::BTreeMap;
use std::sync::Arc;

use c4m_api::agent::ObjectChanges;
use serde_json::Value;
use tokio::sync::watch;

/// Every mirrored object, by key (`PLURAL/NAMESPACE/NAME`, or `PLURAL/NAME`
/// for a cluster-scoped kind), decoded, with its resourceVersion.
#[derive(Clone, Debug, Default)]
pub struct ObjectSet {
    objects: BTreeMap<String, Arc<Value>>,
}

impl ObjectSet {
    /// The objects of one kind (its plural), in key order.
    pub fn of_kind<'a>(&'a self, plural: &str) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        let prefix = format!("{plural}/");
        self.objects
            .range(prefix.clone()..)
            .take_while(move |(key, _)| key.starts_with(&prefix))
            .map(|(_, object)| object)
    }

    /// One object of a namespaced kind.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects.get(&format!("{plural}/{namespace}/{name}"))
    }

    /// One object of a cluster-scoped kind.
    pub fn get_cluster(&self, plural: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects.get(&format!("{plural}/{name}"))
    }

    /// How many objects the set holds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the set holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// A set of `(key, object)` pairs, for tests of its readers.
    #[cfg(test)]
    pub(crate) fn from_objects(objects: impl IntoIterator<Item = (String, Value)>) -> Self {
        Self {
            objects: objects
                .into_iter()
                .map(|(key, object)| (key, Arc::new(object)))
                .collect(),
        }
    }

    /// Applies one message of the stream (a `full` one starts afresh). An
    /// object that does not decode is logged and left out.
    fn apply(&mut self, changes: &ObjectChanges) {
        if changes.full {
            self.objects.clear();
        }
        for key in &changes.removed {
            self.objects.remove(key);
        }
        for object in &changes.objects {
            match serde_json::from_slice::<Value>(&object.json) {
                Ok(mut value) => {
                    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        metadata.insert(
                            "resourceVersion".into(),
                            Value::String(object.revision.to_string()),
                        );
                    }
                    self.objects.insert(object.key.clone(), Arc::new(value));
                }
                Err(e) => {
                    tracing::error!(key = %object.key, error = %e, "skipping an undecodable watched object");
                    self.objects.remove(&object.key);
                }
            }
        }
    }
}

/// The node's mirror: the kinds its controllers asked for, and the current
/// set (`None` until the first whole set arrived).
pub struct NodeObjects {
    kinds: Vec<String>,
    set: watch::Sender<Option<Arc<ObjectSet>>>,
}

impl NodeObjects {
    pub(crate) fn new() -> Self {
        NodeObjects {
            kinds: Vec::new(),
            set: watch::channel(None).0,
        }
    }

    /// Asks for `kinds` (plurals the control plane serves to nodes) and
    /// returns a receiver of the set; call before the agent connects.
    pub fn subscribe(&mut self, kinds: &[&str]) -> watch::Receiver<Option<Arc<ObjectSet>>> {
        for kind in kinds {
            if !self.kinds.iter().any(|k| k == kind) {
                self.kinds.push((*kind).to_string());
            }
        }
        self.set.subscribe()
    }

    /// The kinds asked for; empty when no controller subscribed.
    pub(crate) fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// Takes in one stream message; `pending` holds a batch until its last
    /// message (`more` unset), so consumers never see half a batch.
    pub(crate) fn receive(&self, pending: &mut Option<ObjectSet>, changes: &ObjectChanges) {
        let batch = pending.get_or_insert_with(|| {
            if changes.full {
                ObjectSet::default()
            } else {
                self.set.borrow().as_deref().cloned().unwrap_or_default()
            }
        });
        batch.apply(changes);
        if !changes.more
            && let Some(batch) = pending.take()
        {
            self.set.send_replace(Some(Arc::new(batch)));
        }
    }
}

#[cfg(test)]
mod tests {
    use c4m_api::agent::WatchedObject;
    use serde_json::json;

    use super::*;

    fn object(key: &str, revision: i64) -> WatchedObject {
        let name = key.rsplit('/').next().unwrap_or_default();
        WatchedObject {
            key: key.to_string(),
            json: serde_json::to_vec(&json!({"metadata": {"name": name}})).unwrap(),
            revision,
        }
    }

    #[test]
    fn a_batch_is_seen_whole_and_changes_apply_on_the_last_set() {
        let mut objects = NodeObjects::new();
        let mut set = objects.subscribe(&["services", "endpointslices"]);
        assert_eq!(objects.kinds(), ["services", "endpointslices"]);
        assert!(set.borrow().is_none(), "nothing known before the first set");

        let mut pending = None;
        let first = ObjectChanges {
            full: true,
            objects: vec![object("services/shop/web", 5)],
            removed: Vec::new(),
            more: true,
        };
        objects.receive(&mut pending, &first);
        assert!(set.borrow().is_none(), "half a batch is not published");
        let rest = ObjectChanges {
            full: false,
            objects: vec![object("endpointslices/shop/web-1", 6)],
            removed: Vec::new(),
            more: false,
        };
        objects.receive(&mut pending, &rest);
        let now = set.borrow_and_update().clone().expect("the whole set");
        assert_eq!(now.len(), 2);
        assert_eq!(
            now.get("services", "shop", "web").unwrap()["metadata"]["resourceVersion"],
            "5"
        );
        assert_eq!(now.of_kind("endpointslices").count(), 1);
        assert_eq!(now.of_kind("services").count(), 1);
        assert_eq!(now.of_kind("service").count(), 0);

        let change = ObjectChanges {
            full: false,
            objects: vec![object("services/shop/api", 7)],
            removed: vec!["services/shop/web".into()],
            more: false,
        };
        objects.receive(&mut pending, &change);
        let now = set.borrow_and_update().clone().unwrap();
        let names: Vec<_> = now
            .of_kind("services")
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["api"]);
        assert_eq!(now.len(), 2, "the slice stays");

        let undecodable = ObjectChanges {
            full: true,
            objects: vec![WatchedObject {
                key: "services/shop/bad".into(),
                json: b"{not json".to_vec(),
                revision: 8,
            }],
            removed: Vec::new(),
            more: false,
        };
        objects.receive(&mut pending, &undecodable);
        assert!(
            set.borrow().as_ref().unwrap().is_empty(),
            "a full set starts afresh"
        );
    }
}
