//! Controllers: loops that drive the store toward what the objects in it
//! ask for.
//!
//! Each controller follows the kinds it cares about through a
//! [`ChangeFeed`] and reconciles only what the changed keys touch (a work
//! queue, as Kubernetes controllers have). A periodic resync, and every
//! re-list of the cache, hands it "everything" instead, so a bug in mapping
//! a change to its work can never leave state wrong for longer than one
//! resync.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::cache::{Cache, ChangeFeed, Changes};

pub(crate) mod clock;
pub(crate) mod cronjobs;
pub(crate) mod daemonsets;
pub(crate) mod disruption;
pub(crate) mod edge;
pub(crate) mod endpoints;
pub(crate) mod garbage_collector;
pub(crate) mod horizontal;
pub(crate) mod jobs;
pub(crate) mod namespaces;
pub(crate) mod nodes;
pub(crate) mod replicasets;
pub(crate) mod services;
pub(crate) mod statefulsets;
pub(crate) mod volumes;
pub(crate) mod workload;

/// Short pause after a wake-up so a burst of writes is reconciled once.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// Pause before retrying a batch whose reconcile failed; it doubles with
/// each failure in a row, up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_millis(500);

/// The longest pause between retries of a batch that keeps failing.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The pause after `failures` failed reconciles in a row (one or more).
fn retry_after(failures: u32) -> Duration {
    RETRY
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(RETRY_MAX)
}

/// Runs `reconcile` on each batch of changes from `feed`, and on
/// everything every `resync`, until `shutdown`. `reconcile` returns the
/// last revision it wrote, if any; the loop waits for the cache to see it
/// before reconciling again, so it never acts on a view that misses its own
/// write. A failed batch is put back and retried, after a pause that grows
/// while it keeps failing.
///
/// A reconcile that panics fails its batch like an error (logged with the
/// objects of the batch): one object no controller expected, stored by an
/// older version or a client, must not stop the control plane, nor the
/// other controllers, nor this one's work on other objects.
pub(crate) async fn run<F, Fut>(
    name: &'static str,
    cache: Arc<Cache>,
    feed: Arc<ChangeFeed>,
    resync: Duration,
    shutdown: CancellationToken,
    mut reconcile: F,
) where
    F: FnMut(Arc<Changes>) -> Fut,
    Fut: Future<Output = Result<Option<i64>>>,
{
    use futures::FutureExt;
    let mut resync_at = tokio::time::Instant::now() + resync;
    let mut failures = 0;
    loop {
        let changes = tokio::select! {
            _ = shutdown.cancelled() => return,
            changes = feed.next() => changes,
            _ = tokio::time::sleep_until(resync_at) => {
                resync_at = tokio::time::Instant::now() + resync;
                feed.resync();
                continue;
            }
        };
        tokio::time::sleep(DEBOUNCE).await;
        let changes = Arc::new(feed.and_since(changes));
        // A reconcile may wait on the cache, which stops following the store
        // on shutdown: stop waiting then. Dropping a reconcile between its
        // writes is safe, each write being a transaction of its own.
        // Unwinding is safe too: what a reconcile shares (the cache, the
        // store, controller state behind locks that recover from poisoning)
        // stays consistent at every await point, each write being whole.
        let pass = std::panic::AssertUnwindSafe(reconcile(Arc::clone(&changes))).catch_unwind();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = pass => outcome,
        };
        match outcome {
            Ok(Ok(Some(revision))) => {
                failures = 0;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = cache.wait_for(revision) => {}
                }
            }
            Ok(Ok(None)) => failures = 0,
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(controller = name, error = %e, failures, "reconcile failed; retrying");
            }
            Err(panic) => {
                failures += 1;
                tracing::error!(
                    controller = name,
                    panic = %crate::panics::message(panic.as_ref()),
                    objects = %batch_of(&changes),
                    failures,
                    "reconcile panicked; retrying"
                );
            }
        }
        if failures > 0 {
            feed.requeue(Arc::unwrap_or_clone(changes));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retry_after(failures)) => {}
            }
        }
    }
}

/// The objects a batch names, for a log line: the changed keys (the first
/// few of many), or `everything`.
fn batch_of(changes: &Changes) -> String {
    const SHOWN: usize = 10;
    let keys: Vec<&str> = changes
        .changed
        .keys()
        .take(SHOWN)
        .map(|key| key.strip_prefix(crate::cache::ROOT).unwrap_or(key))
        .collect();
    let mut text = keys.join(", ");
    if changes.changed.len() > SHOWN {
        text.push_str(&format!(" and {} more", changes.changed.len() - SHOWN));
    }
    match (changes.everything, text.is_empty()) {
        (true, true) => "everything".into(),
        (true, false) => format!("everything, {text}"),
        (false, _) => text,
    }
}

/// How many objects a controller reconciles at once: their writes meet in
/// the store's group commit, so a batch of N costs about N / this many
/// fsyncs instead of N.
const CONCURRENT_RECONCILES: usize = 64;

/// Runs `reconcile` on every item, [`CONCURRENT_RECONCILES`] at a time;
/// returns the latest revision written, or how many of `what` failed (each
/// failure is logged by `reconcile`).
pub(crate) async fn reconcile_each<T, F, Fut>(
    what: &'static str,
    items: impl IntoIterator<Item = T>,
    reconcile: F,
) -> Result<Option<i64>>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<Option<i64>>>,
{
    use futures::StreamExt;
    let (written, failed) = futures::stream::iter(items)
        .map(reconcile)
        .buffer_unordered(CONCURRENT_RECONCILES)
        .fold((None, 0), |(written, failed), outcome| async move {
            match outcome {
                Ok(revision) => (latest(written, revision), failed),
                Err(_) => (written, failed + 1),
            }
        })
        .await;
    match failed {
        0 => Ok(written),
        failed => Err(crate::Error::Reconcile { failed, what }),
    }
}

/// The larger of two optional revisions.
pub(crate) fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// The object `key` (`PLURAL/NAMESPACE/NAME`) names, as cached, and the
/// instances it controls. Instances controlled by an older object of that
/// name (or by one that is gone) are deleted, and those no owner controls
/// that its selector matches are adopted ([`adopt_orphans`]); the revision
/// of the last such write comes back too.
pub(crate) async fn owner_and_pods(
    objects: &crate::objects::Objects,
    cache: &Cache,
    key: &str,
) -> (
    Option<Arc<serde_json::Value>>,
    Vec<Arc<serde_json::Value>>,
    Option<i64>,
) {
    let owner = key
        .split_once('/')
        .and_then(|(plural, rest)| Some((plural, rest.split_once('/')?)))
        .and_then(|(plural, (namespace, name))| {
            cache.get(crate::objects::kind(plural), namespace, name)
        });
    let uid = owner.as_ref().and_then(|o| o["metadata"]["uid"].as_str());
    let (mine, orphans): (Vec<_>, Vec<_>) = cache
        .pods_of_owner(key)
        .into_iter()
        .partition(|pod| uid.is_some() && crate::pods::controller_uid(pod) == uid);
    let mut written = None;
    for pod in &orphans {
        written = latest(written, delete_object(objects, "pods", pod).await);
    }
    if let (Some(owner), Some((plural, _))) = (&owner, key.split_once('/')) {
        written = latest(written, adopt_orphans(objects, cache, plural, owner).await);
    }
    (owner, mine, written)
}

/// Makes `owner` the controller of the instances of its namespace that no
/// owner controls and that its selector matches, as Kubernetes' controllers
/// adopt orphans: after `kubectl delete --cascade=orphan`, a new owner with
/// the same selector takes the instances on (they count towards it from
/// its next reconcile). Owners being deleted adopt nothing. Returns the
/// revision of the last adoption.
async fn adopt_orphans(
    objects: &crate::objects::Objects,
    cache: &Cache,
    plural: &str,
    owner: &serde_json::Value,
) -> Option<i64> {
    use crate::objects::{name_of, namespace_of};
    let (api_version, owner_kind) = match plural {
        "deployments" => ("apps/v1", "Deployment"),
        "daemonsets" => ("apps/v1", "DaemonSet"),
        "jobs" => ("batch/v1", "Job"),
        _ => return None,
    };
    if !owner["metadata"]["deletionTimestamp"].is_null() {
        return None;
    }
    let selector = serde_json::from_value(owner["spec"]["selector"].clone()).ok()?;
    let selector = crate::selector::Selector::from_label_selector(&selector).ok()?;
    // An empty selector would take every instance of the namespace.
    if selector.is_empty() {
        return None;
    }
    let namespace = namespace_of(owner);
    let reference = serde_json::json!({
        "apiVersion": api_version,
        "kind": owner_kind,
        "name": name_of(owner),
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    });
    let mut written = None;
    for orphan in cache.uncontrolled_pods(namespace, |labels| selector.matches(labels)) {
        match adopt(objects, "pods", &orphan, &reference, |_| {}).await {
            Ok(revision) => written = latest(written, revision),
            Err(e) => tracing::warn!(
                pod = %name_of(&orphan), owner = %name_of(owner), error = %e,
                "cannot adopt an orphaned instance"
            ),
        }
    }
    written
}

/// Makes `reference` the controller of `object` (of kind `plural`), and
/// applies `also` to it, unless another owner controls it or it is being
/// deleted by the time it is written. Returns the write's revision.
pub(crate) async fn adopt(
    objects: &crate::objects::Objects,
    plural: &str,
    object: &serde_json::Value,
    reference: &serde_json::Value,
    mut also: impl FnMut(&mut serde_json::Value),
) -> Result<Option<i64>> {
    use crate::objects::{kind, name_of, namespace_of};
    objects
        .update_with(
            kind(plural),
            namespace_of(object),
            name_of(object),
            |current| {
                if crate::pods::controller_uid(current).is_some()
                    || crate::deletion::is_deleting(current)
                {
                    return false;
                }
                let references = &mut current["metadata"]["ownerReferences"];
                match references.as_array_mut() {
                    Some(refs) => refs.push(reference.clone()),
                    None => *references = serde_json::json!([reference]),
                }
                also(current);
                true
            },
        )
        .await
}

/// Deletes an object a controller no longer wants; returns the deletion's
/// revision. Already gone is fine; another failure is logged (the next
/// reconcile tries again).
pub(crate) async fn delete_object(
    objects: &crate::objects::Objects,
    plural: &str,
    object: &serde_json::Value,
) -> Option<i64> {
    use crate::objects::{kind, name_of, namespace_of};
    match objects
        .delete(kind(plural), namespace_of(object), name_of(object))
        .await
    {
        Ok((_, revision)) => Some(revision),
        Err(crate::Error::NotFound { .. }) => None,
        Err(e) => {
            tracing::warn!(plural, name = name_of(object), error = %e, "cannot delete");
            None
        }
    }
}

/// The default class of `plural` (IngressClasses, StorageClasses,
/// VolumeSnapshotClasses): of those annotated `annotation: "true"`, the
/// newest, as Kubernetes' admission picks it.
pub(crate) async fn default_class(
    store: &dyn c4m_state::Store,
    plural: &str,
    annotation: &str,
) -> Result<Option<serde_json::Value>> {
    let (classes, _) = store
        .range(&crate::objects::prefix(crate::objects::kind(plural), None))
        .await?;
    Ok(classes
        .iter()
        .filter_map(|kv| crate::objects::decode(kv).ok())
        .filter(|c| c["metadata"]["annotations"][annotation] == "true")
        .max_by(|a, b| {
            let created = |c: &serde_json::Value| {
                c["metadata"]["creationTimestamp"]
                    .as_str()
                    .map(str::to_owned)
            };
            created(a).cmp(&created(b))
        }))
}

/// When each object (by store key) wants its controller to look at it
/// again although nothing changed: a deadline, a backoff, a schedule.
#[derive(Debug, Default)]
pub(crate) struct Wakeups(
    std::sync::Mutex<std::collections::BTreeMap<String, std::time::SystemTime>>,
);

impl Wakeups {
    /// Wakes `store_key` at `at`; None forgets it.
    pub(crate) fn set(&self, store_key: &str, at: Option<std::time::SystemTime>) {
        let mut wakeups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(at) => {
                wakeups.insert(store_key.to_string(), at);
            }
            None => {
                wakeups.remove(store_key);
            }
        }
    }

    /// The keys due at `now`, forgotten as they are returned.
    fn take_due(&self, now: std::time::SystemTime) -> Vec<String> {
        let mut wakeups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<String> = wakeups
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &due {
            wakeups.remove(key);
        }
        due
    }

    /// Puts the keys that fall due on `clock` into `feed`, checking every
    /// `tick`, until `shutdown`.
    pub(crate) async fn run(
        &self,
        clock: &dyn clock::Clock,
        feed: &ChangeFeed,
        tick: Duration,
        shutdown: CancellationToken,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let due = self.take_due(clock.now());
            if !due.is_empty() {
                feed.requeue(Changes {
                    everything: false,
                    changed: due.into_iter().map(|key| (key, None)).collect(),
                });
            }
        }
    }
}

/// The objects of `plural` (as `PLURAL/NAMESPACE/NAME`) a batch of
/// `changes` touches: each changed one, and the controller of each changed
/// object of `children` (`pods`, or a CronJob's `jobs`) before and after
/// the change; every one, and every controller of pods of that kind, when
/// `everything`.
pub(crate) fn touched_owners(
    cache: &Cache,
    changes: &Changes,
    plural: &str,
    children: &str,
    everything: bool,
) -> std::collections::BTreeSet<String> {
    use crate::cache::{ROOT, controller_key};
    let prefix = format!("{plural}/");
    let mut touched = std::collections::BTreeSet::new();
    if everything {
        touched.extend(
            cache
                .keys(crate::objects::kind(plural))
                .iter()
                .filter_map(|key| key.strip_prefix(ROOT).map(str::to_string)),
        );
        touched.extend(
            cache
                .owners_of_pods()
                .into_iter()
                .filter(|owner| owner.starts_with(&prefix)),
        );
        return touched;
    }
    let children = format!("{children}/");
    for (key, before) in &changes.changed {
        let Some(rest) = key.strip_prefix(ROOT) else {
            continue;
        };
        if rest.starts_with(&children) {
            let before = before.as_ref().and_then(|before| before.decode(key));
            let current = cache.get_key(key);
            touched.extend(
                [before.as_deref(), current.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter_map(controller_key)
                    .filter(|owner| owner.starts_with(&prefix)),
            );
        } else if rest.starts_with(&prefix) {
            touched.insert(rest.to_string());
        }
    }
    touched
}

/// Writes `status` into `object` (of `plural`) unless it has it already or
/// was replaced by another of its name meanwhile; returns the revision.
pub(crate) async fn write_status(
    objects: &crate::objects::Objects,
    plural: &str,
    object: &serde_json::Value,
    status: &serde_json::Value,
) -> Result<Option<i64>> {
    use crate::objects::{kind, name_of, namespace_of};
    if object["status"] == *status {
        return Ok(None);
    }
    let uid = &object["metadata"]["uid"];
    objects
        .update_with(
            kind(plural),
            namespace_of(object),
            name_of(object),
            |current| {
                if current["metadata"]["uid"] != *uid || current["status"] == *status {
                    return false;
                }
                current["status"] = status.clone();
                true
            },
        )
        .await
}

/// A copy of `template`'s `field` (`metadata`, `spec`) when it is an
/// object, else an empty object: what a controller builds an object from.
pub(crate) fn object_field(template: &serde_json::Value, field: &str) -> serde_json::Value {
    match &template[field] {
        serde_json::Value::Object(map) => serde_json::Value::Object(map.clone()),
        _ => serde_json::json!({}),
    }
}

/// Creates `pods` for `owner` in one transaction and records a
/// SuccessfulCreate Event for each, from `component`.
pub(crate) async fn create_pods(
    objects: &crate::objects::Objects,
    owner: &serde_json::Value,
    pods: Vec<serde_json::Value>,
    component: &'static str,
) -> Result<Option<i64>> {
    use crate::events::{EventType, Regarding};
    use crate::objects::{kind, name_of};
    if pods.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = pods.iter().map(|p| name_of(p).to_string()).collect();
    let revision = objects
        .create_many(pods.into_iter().map(|p| (kind("pods"), p)).collect())
        .await?;
    for name in names {
        objects.events().record(
            Regarding::of(owner),
            EventType::Normal,
            "SuccessfulCreate",
            format!("Created pod: {name}"),
            component,
        );
    }
    Ok(Some(revision))
}

/// Deletes the pods `names` of `owner` (in its namespace), recording a
/// SuccessfulDelete Event for each, from `component`; one already gone is
/// fine.
pub(crate) async fn delete_pods(
    objects: &crate::objects::Objects,
    owner: &serde_json::Value,
    names: &[String],
    component: &'static str,
) -> Result<Option<i64>> {
    delete_pods_saying(objects, owner, names, component, |name| {
        format!("Deleted pod: {name}")
    })
    .await
}

/// [`delete_pods`], each Event saying `message(pod name)`.
pub(crate) async fn delete_pods_saying(
    objects: &crate::objects::Objects,
    owner: &serde_json::Value,
    names: &[String],
    component: &'static str,
    message: impl Fn(&str) -> String,
) -> Result<Option<i64>> {
    use crate::events::{EventType, Regarding};
    use crate::objects::{kind, namespace_of};
    let mut written = None;
    for name in names {
        match objects
            .delete(kind("pods"), namespace_of(owner), name)
            .await
        {
            Ok((_, revision)) => {
                written = latest(written, Some(revision));
                objects.events().record(
                    Regarding::of(owner),
                    EventType::Normal,
                    "SuccessfulDelete",
                    message(name),
                    component,
                );
            }
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use crate::cache::Cache;
    use crate::objects::kind;

    /// A reconcile that panics (a bug met on one object) is logged and
    /// retried, after a pause that grows; the loop goes on serving.
    #[tokio::test]
    async fn a_reconcile_that_panics_is_retried() {
        let (_dir, store, _) = crate::test_support::store_with_default_namespace().await;
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        let feed = cache.feed(&["namespaces"]);
        let (passes, mut passed) = tokio::sync::mpsc::unbounded_channel();
        let mut calls = 0;
        let running = tokio::spawn(super::run(
            "test",
            Arc::clone(&cache),
            feed,
            std::time::Duration::from_secs(3600),
            shutdown.clone(),
            move |changes| {
                calls += 1;
                let (call, passes) = (calls, passes.clone());
                async move {
                    passes.send((call, changes.everything)).unwrap();
                    if call < 3 {
                        let stored = json!({"status": "boom"});
                        let mut copy = stored.clone();
                        // What the node controller did with such a status.
                        copy["status"]["phase"] = json!("Failed");
                    }
                    Ok(None)
                }
            },
        ));
        for expected in 1..=3 {
            let (call, everything) =
                tokio::time::timeout(std::time::Duration::from_secs(30), passed.recv())
                    .await
                    .expect("the reconcile was not retried")
                    .unwrap();
            assert_eq!(call, expected);
            assert!(everything, "the failed batch is retried whole");
        }
        assert!(!running.is_finished());
        assert_eq!(super::retry_after(1), super::RETRY);
        assert_eq!(super::retry_after(2), super::RETRY * 2);
        assert_eq!(super::retry_after(40), super::RETRY_MAX);
        shutdown.cancel();
        running.await.unwrap();
    }

    /// An owner adopts the uncontrolled instances its selector matches,
    /// and nothing else: not those of another controller, another
    /// namespace or other labels.
    #[tokio::test]
    async fn an_owner_adopts_the_orphans_its_selector_matches() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let pod = |name: &str, labels: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "spec": {"containers": [{"name": "c", "image": "web:1"}]}})
        };
        objects
            .create(
                kind("pods"),
                "default",
                pod("orphan", json!({"app": "web"})),
            )
            .await
            .unwrap();
        objects
            .create(kind("pods"), "default", pod("other", json!({"app": "db"})))
            .await
            .unwrap();
        let mut owned = pod("owned", json!({"app": "web"}));
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1",
            "kind": "Job", "name": "j", "uid": "job-uid", "controller": true}]);
        objects
            .create(kind("pods"), "default", owned)
            .await
            .unwrap();
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}});
        let created = objects
            .create(kind("deployments"), "default", deployment)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();

        let (_, mine, written) =
            super::owner_and_pods(&objects, &cache, "deployments/default/web").await;
        assert!(
            mine.is_empty(),
            "adopted instances count from the next reconcile"
        );
        cache
            .wait_for(written.expect("an adoption was written"))
            .await;
        let references = |name: &str| {
            cache.get(kind("pods"), "default", name).unwrap()["metadata"]["ownerReferences"].clone()
        };
        assert_eq!(
            references("orphan"),
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": created["metadata"]["uid"], "controller": true,
                "blockOwnerDeletion": true}])
        );
        assert!(references("other").is_null());
        assert_eq!(references("owned")[0]["kind"], "Job");
        let (_, mine, written) =
            super::owner_and_pods(&objects, &cache, "deployments/default/web").await;
        assert_eq!(mine.len(), 1);
        assert_eq!(written, None, "nothing left to adopt");
        shutdown.cancel();
    }
}
