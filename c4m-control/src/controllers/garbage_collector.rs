//! The garbage collector: deletes objects whose owners are gone, and
//! carries out the `orphan` and `foregroundDeletion` finalizers, for every
//! kind, as Kubernetes' garbage collector does.
//!
//! It keeps a graph of the objects that have `metadata.ownerReferences`
//! (their owners by uid), fed by the cache's changes:
//! - a dependent all of whose owners are gone is deleted (with the policy
//!   its own finalizers ask for, Background by default). An owner is gone
//!   when no object of its kind and name exists, or the one that exists has
//!   another uid (it was recreated). A cache miss is confirmed against the
//!   store before anything is deleted; deletes carry the uid as a
//!   precondition. References to gone owners of a dependent that still has
//!   a live owner are removed instead.
//! - an owner being deleted with the `orphan` finalizer has its reference
//!   removed from each dependent, then loses the finalizer;
//! - an owner being deleted with `foregroundDeletion` has its dependents
//!   deleted (those that have dependents of their own, in the foreground
//!   too), and loses the finalizer once no dependent with
//!   `blockOwnerDeletion` is left.

use std::collections::{BTreeSet, HashMap};

use c4m_core::ResourceKind;
use serde_json::Value;

use super::latest;
use crate::cache::{Cache, Changes, ROOT};

/// Where Nodes are stored.
const NODES: &str = "/registry/nodes/";
use crate::deletion::{DeleteOptions, FOREGROUND, ORPHAN, Propagation, finalizers, is_deleting};
use crate::objects::{Part, key, kind as kind_named, name_of, namespace_of};
use crate::{Error, Result};

/// One entry of `metadata.ownerReferences`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
    block_owner_deletion: bool,
}

/// The owner references of `object`.
fn owner_refs(object: &Value) -> Vec<OwnerRef> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|owner| OwnerRef {
            api_version: text(&owner["apiVersion"]),
            kind: text(&owner["kind"]),
            name: text(&owner["name"]),
            uid: text(&owner["uid"]),
            block_owner_deletion: owner["blockOwnerDeletion"].as_bool().unwrap_or(false),
        })
        .collect()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// The served kind an owner reference names (its group and kind; any
/// version of the group, as Kubernetes resolves them).
fn kind_of(owner: &OwnerRef) -> Option<&'static ResourceKind> {
    let group = owner
        .api_version
        .rsplit_once('/')
        .map_or("", |(group, _)| group);
    c4m_core::KINDS
        .iter()
        .find(|k| k.kind == owner.kind && k.group == group)
}

/// The kind stored under `key` (`/registry/PLURAL/...`).
fn kind_of_key(key: &str) -> Option<&'static ResourceKind> {
    let plural = key.strip_prefix(ROOT)?.split('/').next()?;
    c4m_core::KINDS.iter().find(|k| k.plural == plural)
}

/// A dependent in the graph.
#[derive(Debug, Clone)]
struct Dependent {
    namespace: String,
    owners: Vec<OwnerRef>,
}

/// The objects with owner references, by key and by owner uid.
#[derive(Default)]
struct Graph {
    dependents: HashMap<String, Dependent>,
    by_owner: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Records the object now at `key` (None: gone); returns the entry it
    /// replaces.
    fn set(&mut self, key: &str, object: Option<&Value>) -> Option<Dependent> {
        let old = self.dependents.remove(key);
        for owner in old.iter().flat_map(|d| &d.owners) {
            if let Some(keys) = self.by_owner.get_mut(&owner.uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(&owner.uid);
                }
            }
        }
        if let Some(object) = object {
            let owners = owner_refs(object);
            if !owners.is_empty() {
                for owner in &owners {
                    self.by_owner
                        .entry(owner.uid.clone())
                        .or_default()
                        .insert(key.to_string());
                }
                self.dependents.insert(
                    key.to_string(),
                    Dependent {
                        namespace: namespace_of(object).to_string(),
                        owners,
                    },
                );
            }
        }
        old
    }

    /// The keys of the dependents of the owner with `uid`.
    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.by_owner
            .get(uid)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Whether the stored object may matter to the collector: it has owners,
/// or it is being deleted.
fn worth_decoding(stored: &crate::cache::Stored) -> bool {
    stored.contains(b"\"ownerReferences\"") || stored.contains(b"\"deletionTimestamp\"")
}

/// The store key of `owner`, referenced by a dependent in `namespace`;
/// None when the reference cannot resolve (an unserved kind, or a
/// namespaced owner of a cluster-scoped dependent).
fn owner_key(owner: &OwnerRef, namespace: &str) -> Option<(&'static ResourceKind, String)> {
    let kind = kind_of(owner)?;
    if kind.namespaced && namespace.is_empty() {
        return None;
    }
    Some((kind, key(kind, namespace, &owner.name)))
}

/// What an owner reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// An owner that exists (it may be being deleted, but not in the
    /// foreground).
    Solid,
    /// No object with that uid exists.
    Dangling,
    /// The owner is being deleted in the foreground: it waits for its
    /// dependents to go.
    Waiting,
    /// The reference names a kind c4m does not serve: left alone.
    Unknown,
}

/// The garbage collector's state between batches.
#[derive(Default)]
pub(crate) struct GarbageCollector {
    graph: Graph,
}

impl GarbageCollector {
    /// Handles one batch of changes (everything on a resync).
    pub(crate) async fn reconcile(
        &mut self,
        objects: &crate::objects::Objects,
        cache: &Cache,
        changes: &Changes,
    ) -> Result<Option<i64>> {
        let mut attempt: BTreeSet<String> = BTreeSet::new();
        let mut deleting_owners: BTreeSet<String> = BTreeSet::new();
        if changes.everything {
            self.graph = Graph::default();
            let mut decoded = Vec::new();
            cache.for_each_stored(ROOT, |key, stored| {
                if worth_decoding(stored) {
                    decoded.push((key.to_string(), stored.clone()));
                }
            });
            for (key, stored) in decoded {
                let Some(object) = stored.decode(&key) else {
                    continue;
                };
                self.graph.set(&key, Some(&object));
                if self.graph.dependents.contains_key(&key) {
                    attempt.insert(key.clone());
                }
                if is_deleting(&object) {
                    deleting_owners.insert(key);
                }
            }
        } else {
            for (key, before) in &changes.changed {
                let stored = cache.stored(key);
                let gone = stored.is_none();
                let current = stored
                    .filter(worth_decoding)
                    .and_then(|stored| stored.decode(key));
                let old = self.graph.set(key, current.as_deref());
                // Owners being deleted that may wait for this dependent
                // look again.
                for dependent in old.iter().chain(self.graph.dependents.get(key)) {
                    for owner in &dependent.owners {
                        if let Some((_, owner_key)) = owner_key(owner, &dependent.namespace)
                            && cache
                                .stored(&owner_key)
                                .is_some_and(|s| s.contains(b"\"deletionTimestamp\""))
                        {
                            deleting_owners.insert(owner_key);
                        }
                    }
                }
                if let Some(current) = &current {
                    if self.graph.dependents.contains_key(key) {
                        attempt.insert(key.clone());
                    }
                    if is_deleting(current) {
                        deleting_owners.insert(key.clone());
                    }
                }
                // A gone owner leaves its dependents to collect.
                if gone && let Some(before) = before.as_ref().and_then(|b| b.decode(key)) {
                    attempt.extend(self.graph.dependents_of(&text(&before["metadata"]["uid"])));
                }
                // A gone node leaves its pods being deleted to remove.
                if gone && let Some(node) = key.strip_prefix(NODES) {
                    for pod in cache.pods_on_node(node).iter().filter(|p| is_deleting(p)) {
                        deleting_owners.insert(key_of_pod(pod));
                    }
                }
            }
        }
        let mut written = None;
        let mut failed = 0;
        for key in &deleting_owners {
            match self.process_deleting_owner(objects, cache, key).await {
                Ok(revision) => written = latest(written, revision),
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "garbage collector: cannot finalize");
                    failed += 1;
                }
            }
        }
        for key in &attempt {
            match self.attempt_to_delete(objects, cache, key).await {
                Ok(revision) => written = latest(written, revision),
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "garbage collector: cannot collect");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            return Err(Error::Reconcile {
                failed,
                what: "garbage collection",
            });
        }
        Ok(written)
    }

    /// Classifies `owner`, referenced from `namespace`: the cache first,
    /// the store when the cache says it is gone (it may be behind).
    async fn owner_state(
        objects: &crate::objects::Objects,
        cache: &Cache,
        owner: &OwnerRef,
        namespace: &str,
    ) -> Result<OwnerState> {
        let Some(kind) = kind_of(owner) else {
            return Ok(OwnerState::Unknown);
        };
        let Some((_, key)) = owner_key(owner, namespace) else {
            return Ok(OwnerState::Dangling);
        };
        let classify = |object: &Value| {
            if object["metadata"]["uid"].as_str() != Some(owner.uid.as_str()) {
                OwnerState::Dangling
            } else if is_deleting(object) && finalizers(object).iter().any(|f| f == FOREGROUND) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            }
        };
        // The common case, an owner alive and well, without decoding it:
        // its JSON holds its uid and no deletion mark.
        if let Some(stored) = cache.stored(&key)
            && stored.contains(format!("\"uid\":\"{}\"", owner.uid).as_bytes())
            && !stored.contains(b"\"deletionTimestamp\"")
        {
            return Ok(OwnerState::Solid);
        }
        if let Some(cached) = cache.get_key(&key)
            && classify(&cached) != OwnerState::Dangling
        {
            return Ok(classify(&cached));
        }
        let owner_namespace = if kind.namespaced { namespace } else { "" };
        match objects.get(kind, owner_namespace, &owner.name).await {
            Ok(object) => Ok(classify(&object)),
            Err(Error::NotFound { .. }) => Ok(OwnerState::Dangling),
            Err(e) => Err(e),
        }
    }

    /// Deletes the dependent at `key` if all its owners are gone (or
    /// waiting for it); removes its references to gone owners if some
    /// owner is alive.
    async fn attempt_to_delete(
        &self,
        objects: &crate::objects::Objects,
        cache: &Cache,
        key: &str,
    ) -> Result<Option<i64>> {
        let (Some(item), Some(kind)) = (cache.get_key(key), kind_of_key(key)) else {
            return Ok(None);
        };
        if is_deleting(&item) {
            return Ok(None);
        }
        let namespace = namespace_of(&item).to_string();
        let owners = owner_refs(&item);
        if owners.is_empty() {
            return Ok(None);
        }
        let mut solid = false;
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for owner in &owners {
            match Self::owner_state(objects, cache, owner, &namespace).await? {
                OwnerState::Solid | OwnerState::Unknown => solid = true,
                OwnerState::Dangling => dangling.push(owner.uid.clone()),
                OwnerState::Waiting => waiting.push(owner.uid.clone()),
            }
        }
        let uid = text(&item["metadata"]["uid"]);
        if solid {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(None);
            }
            let stale: Vec<String> = dangling.into_iter().chain(waiting).collect();
            tracing::debug!(object = %key, ?stale, "removing references to gone owners");
            return remove_owner_refs(objects, kind, &namespace, name_of(&item), &uid, &stale)
                .await;
        }
        let has_dependents = !self.graph.dependents_of(&uid).is_empty();
        let item_finalizers = finalizers(&item);
        let propagation = if !waiting.is_empty() && has_dependents {
            Propagation::Foreground
        } else if item_finalizers.iter().any(|f| f == ORPHAN) {
            Propagation::Orphan
        } else if item_finalizers.iter().any(|f| f == FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        tracing::debug!(object = %key, ?propagation, "deleting an object whose owners are gone");
        let options = DeleteOptions {
            uid: Some(uid),
            ..DeleteOptions::propagating(propagation)
        };
        match objects
            .delete_with(kind, &namespace, name_of(&item), &options)
            .await
        {
            Ok(deleted) => Ok(Some(deleted.revision)),
            // Gone already, or replaced by a new object of that name.
            Err(Error::NotFound { .. } | Error::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Carries out the `orphan` and `foregroundDeletion` finalizers of the
    /// object at `key`, if it is being deleted.
    async fn process_deleting_owner(
        &self,
        objects: &crate::objects::Objects,
        cache: &Cache,
        key: &str,
    ) -> Result<Option<i64>> {
        let (Some(owner), Some(kind)) = (cache.get_key(key), kind_of_key(key)) else {
            return Ok(None);
        };
        if !is_deleting(&owner) {
            return Ok(None);
        }
        if kind.kind == "Pod"
            && let Some(node) = owner["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
            && cache.get(kind_named("nodes"), "", node).is_none()
        {
            return remove_pod_of_gone_node(objects, &owner).await;
        }
        let owner_finalizers = finalizers(&owner);
        let uid = text(&owner["metadata"]["uid"]);
        let dependents = self.graph.dependents_of(&uid);
        let mut written = None;
        if owner_finalizers.iter().any(|f| f == ORPHAN) {
            for dependent_key in &dependents {
                let (Some(dependent), Some(dependent_kind)) =
                    (cache.get_key(dependent_key), kind_of_key(dependent_key))
                else {
                    continue;
                };
                written = latest(
                    written,
                    remove_owner_refs(
                        objects,
                        dependent_kind,
                        namespace_of(&dependent),
                        name_of(&dependent),
                        &text(&dependent["metadata"]["uid"]),
                        std::slice::from_ref(&uid),
                    )
                    .await?,
                );
            }
            written = latest(
                written,
                remove_finalizer(objects, kind, &owner, ORPHAN).await?,
            );
        } else if owner_finalizers.iter().any(|f| f == FOREGROUND) {
            let mut blocking = false;
            for dependent_key in &dependents {
                let Some(dependent) = cache.get_key(dependent_key) else {
                    continue;
                };
                blocking |= owner_refs(&dependent)
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion);
                written = latest(
                    written,
                    self.attempt_to_delete(objects, cache, dependent_key)
                        .await?,
                );
            }
            if !blocking {
                written = latest(
                    written,
                    remove_finalizer(objects, kind, &owner, FOREGROUND).await?,
                );
            }
        }
        Ok(written)
    }
}

/// The store key of a pod.
fn key_of_pod(pod: &Value) -> String {
    key(kind_named("pods"), namespace_of(pod), name_of(pod))
}

/// Removes a pod being deleted whose node is gone: no agent is left to
/// report its containers stopped (Kubernetes' pod garbage collector).
async fn remove_pod_of_gone_node(
    objects: &crate::objects::Objects,
    pod: &Value,
) -> Result<Option<i64>> {
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        uid: Some(text(&pod["metadata"]["uid"])),
        ..DeleteOptions::default()
    };
    match objects
        .delete_with(
            kind_named("pods"),
            namespace_of(pod),
            name_of(pod),
            &options,
        )
        .await
    {
        Ok(deleted) => Ok(Some(deleted.revision)),
        Err(Error::NotFound { .. } | Error::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the references to the owners with `uids` from the object
/// `name` (if it still has `uid`).
async fn remove_owner_refs(
    objects: &crate::objects::Objects,
    kind: &ResourceKind,
    namespace: &str,
    name: &str,
    uid: &str,
    uids: &[String],
) -> Result<Option<i64>> {
    objects
        .update_with(kind, namespace, name, |object| {
            if object["metadata"]["uid"].as_str() != Some(uid) {
                return false;
            }
            let Some(meta) = object["metadata"].as_object_mut() else {
                return false;
            };
            let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") else {
                return false;
            };
            let before = refs.len();
            refs.retain(|owner| !uids.iter().any(|u| owner["uid"].as_str() == Some(u)));
            if refs.len() == before {
                return false;
            }
            if refs.is_empty() {
                meta.remove("ownerReferences");
            }
            true
        })
        .await
}

/// Takes `finalizer` off `owner` (an update, which removes the object when
/// it was the last one).
pub(crate) async fn remove_finalizer(
    objects: &crate::objects::Objects,
    kind: &ResourceKind,
    owner: &Value,
    finalizer: &str,
) -> Result<Option<i64>> {
    let uid = owner["metadata"]["uid"].clone();
    let outcome = objects
        .modify(
            kind,
            namespace_of(owner),
            name_of(owner),
            Part::Main,
            |current| {
                if current["metadata"]["uid"] != uid {
                    return Err(Error::NotFound {
                        kind: kind.plural.to_string(),
                        name: name_of(owner).to_string(),
                    });
                }
                let mut changed = current.clone();
                if let Some(list) = changed["metadata"]["finalizers"].as_array_mut() {
                    list.retain(|f| f.as_str() != Some(finalizer));
                }
                Ok(changed)
            },
        )
        .await;
    match outcome {
        Ok(written) => Ok(crate::objects::revision_of(&written)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::objects::{Objects, kind};

    /// An in-memory store with the collector running over it, as the
    /// control plane runs it.
    struct Harness {
        objects: Objects,
        shutdown: CancellationToken,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn harness() -> Harness {
        let store: Arc<dyn c4m_state::Store> = Arc::new(c4m_state::MemoryStore::new());
        let objects = Objects::new(Arc::clone(&store));
        let namespace = json!({"metadata": {"name": "default"}});
        objects
            .create(kind("namespaces"), "", namespace)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        let plurals: Vec<&str> = c4m_core::KINDS.iter().map(|k| k.plural).collect();
        let collector = Arc::new(tokio::sync::Mutex::new(GarbageCollector::default()));
        let (o, c) = (objects.clone(), Arc::clone(&cache));
        tokio::spawn(super::super::run(
            "garbage collector",
            Arc::clone(&cache),
            cache.feed(&plurals),
            Duration::from_secs(3600),
            shutdown.clone(),
            move |changes| {
                let (o, c, collector) = (o.clone(), Arc::clone(&c), Arc::clone(&collector));
                async move { collector.lock().await.reconcile(&o, &c, &changes).await }
            },
        ));
        Harness { objects, shutdown }
    }

    impl Harness {
        async fn config_map(&self, name: &str, owners: &[(&Value, bool)]) -> Value {
            let refs: Vec<Value> = owners
                .iter()
                .map(|(owner, block)| {
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name_of(owner),
                           "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block})
                })
                .collect();
            let mut object = json!({"metadata": {"name": name}, "data": {"k": "v"}});
            if !refs.is_empty() {
                object["metadata"]["ownerReferences"] = json!(refs);
            }
            self.objects
                .create(kind("configmaps"), "default", object)
                .await
                .unwrap()
        }

        async fn get(&self, name: &str) -> Option<Value> {
            match self.objects.get(kind("configmaps"), "default", name).await {
                Ok(object) => Some(object),
                Err(Error::NotFound { .. }) => None,
                Err(e) => panic!("get {name}: {e}"),
            }
        }

        /// Waits (up to five seconds) until `check` holds of the object
        /// `name` (None: absent).
        async fn until(&self, name: &str, what: &str, check: impl Fn(Option<&Value>) -> bool) {
            for _ in 0..500 {
                if check(self.get(name).await.as_ref()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("{name}: {what}; it is {:?}", self.get(name).await);
        }

        async fn until_gone(&self, name: &str) {
            self.until(name, "expected it gone", |o| o.is_none()).await;
        }

        async fn delete(&self, name: &str, propagation: Option<Propagation>) -> Value {
            let options = DeleteOptions {
                propagation,
                ..DeleteOptions::default()
            };
            self.objects
                .delete_with(kind("configmaps"), "default", name, &options)
                .await
                .unwrap()
                .object
        }
    }

    fn owner_uids(object: Option<&Value>) -> Vec<String> {
        object
            .map(owner_refs)
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.uid)
            .collect()
    }

    #[tokio::test]
    async fn the_dependents_of_a_deleted_owner_are_collected() {
        let h = harness().await;
        let owner = h.config_map("owner", &[]).await;
        let other = h.config_map("other", &[]).await;
        h.config_map("only-child", &[(&owner, false)]).await;
        h.config_map("shared", &[(&owner, false), (&other, false)])
            .await;
        let grandchild_of = h.config_map("middle", &[(&owner, false)]).await;
        h.config_map("grandchild", &[(&grandchild_of, false)]).await;
        h.delete("owner", None).await;
        h.until_gone("only-child").await;
        h.until_gone("grandchild").await;
        let other_uid = text(&other["metadata"]["uid"]);
        h.until("shared", "expected only the live owner", |o| {
            owner_uids(o) == [other_uid.clone()]
        })
        .await;
        assert!(h.get("other").await.is_some());
    }

    #[tokio::test]
    async fn a_dependent_whose_owner_has_another_uid_or_never_existed_is_collected() {
        let h = harness().await;
        let owner = h.config_map("owner", &[]).await;
        let mut stale = owner.clone();
        stale["metadata"]["uid"] = json!("a-uid-of-an-earlier-owner");
        h.config_map("stale", &[(&stale, true)]).await;
        let ghost = json!({"metadata": {"name": "ghost", "uid": "g1"}});
        h.config_map("haunted", &[(&ghost, false)]).await;
        let unknown =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "w1"});
        let mut kept = json!({"metadata": {"name": "kept", "ownerReferences": [unknown]}});
        kept["data"] = json!({});
        h.objects
            .create(kind("configmaps"), "default", kept)
            .await
            .unwrap();
        h.until_gone("stale").await;
        h.until_gone("haunted").await;
        // An owner of a kind c4m does not serve cannot be judged gone.
        assert!(h.get("kept").await.is_some());
        assert!(h.get("owner").await.is_some());
    }

    #[tokio::test]
    async fn orphan_keeps_the_dependents_without_their_reference() {
        let h = harness().await;
        let owner = h.config_map("owner", &[]).await;
        let other = h.config_map("other", &[]).await;
        h.config_map("child", &[(&owner, true)]).await;
        h.config_map("shared", &[(&owner, false), (&other, false)])
            .await;
        let marked = h.delete("owner", Some(Propagation::Orphan)).await;
        assert_eq!(finalizers(&marked), [ORPHAN]);
        assert!(is_deleting(&marked));
        h.until_gone("owner").await;
        h.until("child", "expected kept without owners", |o| {
            o.is_some_and(|o| owner_refs(o).is_empty())
        })
        .await;
        let other_uid = text(&other["metadata"]["uid"]);
        assert_eq!(owner_uids(h.get("shared").await.as_ref()), [other_uid]);
    }

    #[tokio::test]
    async fn foreground_deletes_the_dependents_first_and_waits_for_blocking_ones() {
        let h = harness().await;
        let owner = h.config_map("owner", &[]).await;
        let mut held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                 "uid": owner["metadata"]["uid"], "blockOwnerDeletion": true}]}});
        held["data"] = json!({});
        h.objects
            .create(kind("configmaps"), "default", held)
            .await
            .unwrap();
        h.config_map("loose", &[(&owner, false)]).await;
        let middle = h.config_map("middle", &[(&owner, true)]).await;
        h.config_map("leaf", &[(&middle, true)]).await;

        let marked = h.delete("owner", Some(Propagation::Foreground)).await;
        assert_eq!(finalizers(&marked), [FOREGROUND]);
        h.until_gone("loose").await;
        h.until_gone("leaf").await;
        h.until_gone("middle").await;
        h.until("held", "expected marked for deletion", |o| {
            o.is_some_and(is_deleting)
        })
        .await;
        // The owner waits for the dependent that blocks it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = h.get("owner").await.expect("the owner waits");
        assert!(is_deleting(&waiting));

        // Taking the last finalizer off removes the dependent, then the owner.
        h.objects
            .modify(
                kind("configmaps"),
                "default",
                "held",
                Part::Main,
                |current| {
                    let mut released = current.clone();
                    released["metadata"]["finalizers"] = json!([]);
                    Ok(released)
                },
            )
            .await
            .unwrap();
        h.until_gone("held").await;
        h.until_gone("owner").await;
    }

    #[tokio::test]
    async fn finalizers_hold_an_object_until_an_update_empties_them() {
        let h = harness().await;
        let mut guarded = json!({"metadata": {"name": "guarded", "finalizers": ["example.com/a"]}});
        guarded["data"] = json!({});
        h.objects
            .create(kind("configmaps"), "default", guarded)
            .await
            .unwrap();
        let marked = h.delete("guarded", None).await;
        assert!(is_deleting(&marked));
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        let update = |finalizers: Value| {
            let objects = h.objects.clone();
            async move {
                objects
                    .modify(
                        kind("configmaps"),
                        "default",
                        "guarded",
                        Part::Main,
                        |current| {
                            let mut changed = current.clone();
                            changed["metadata"]["finalizers"] = finalizers.clone();
                            // A client cannot clear the mark.
                            changed["metadata"]["deletionTimestamp"] = Value::Null;
                            Ok(changed)
                        },
                    )
                    .await
            }
        };
        let refused = update(json!(["example.com/a", "example.com/b"]))
            .await
            .unwrap_err();
        assert_eq!(refused.http_status().0, 422, "{refused}");
        let kept = update(json!(["example.com/a"])).await.unwrap();
        assert!(is_deleting(&kept), "the mark stays: {kept}");
        update(json!([])).await.unwrap();
        assert!(h.get("guarded").await.is_none());
    }
}
