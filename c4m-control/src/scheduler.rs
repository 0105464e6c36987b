//! The scheduling loop: binds pending instances to nodes with `c4m-sched`.
//!
//! Each cycle takes one consistent snapshot from the cache (nodes and the
//! instances already bound), places every pending instance in priority order,
//! and writes all the binds in one transaction, each guarded by the
//! instance's resourceVersion. An instance that fits nowhere keeps
//! `PodScheduled=False` with the scheduler's reason, which `c4m describe` shows.
//!
//! Priorities come from `spec.priority`. An instance that fits nowhere may
//! preempt bound instances of strictly lower priority: the scheduler deletes
//! the victims (their owners recreate them, and they are scheduled again
//! where they fit), sets `status.nominatedNodeName` and a `PodScheduled=False`
//! condition with reason `Preempting`, and a later cycle binds the preemptor
//! once the victims are gone from the store. While any of its victims is
//! still there, an instance does not preempt again, and the room it won
//! stays booked on its node for it: no other instance takes it meanwhile.
//!
//! Disruption budgets come from PodDisruptionBudgets
//! ([`crate::disruption`]): an instance belongs to the first budget of its
//! namespace whose selector matches it, and a preemption never evicts more
//! members of a budget than its `disruptionsAllowed`, which counts ready
//! members against the owners' `spec.replicas` as Kubernetes does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use c4m_sched::{ClusterSnapshot, InstanceRequest, NodeInfo, PlacedInstance, Policy};
use serde_json::{Value, json};

use crate::Result;
use crate::cache::{Cache, Changes};
use crate::disruption::{Budgets, owner_replicas, workload_owners};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{is_terminal, node_name, set_condition};
use crate::scheduler_policy::current_policy;

mod request;

pub(crate) use request::node_info;
use request::{PLACEMENT_STRATEGY, request};

/// Preemptor annotation: the uids of the victims evicted for it, comma
/// separated; it does not preempt again while one of them remains.
const PREEMPTION_VICTIMS: &str = "c4m.io/preemption-victims";

/// `spec.priority`, 0 when absent, clamped to the `i32` Kubernetes allows.
fn priority(pod: &Value) -> i32 {
    pod["spec"]["priority"].as_i64().map_or(0, |priority| {
        i32::try_from(priority).unwrap_or(if priority < 0 { i32::MIN } else { i32::MAX })
    })
}

fn uid(pod: &Value) -> &str {
    pod["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The id preemption knows an instance by: `namespace/name`.
fn instance_id(pod: &Value) -> String {
    format!("{}/{}", namespace_of(pod), name_of(pod))
}

/// A bound instance as a possible victim, in the group of the disruption
/// budget that covers it.
fn placed_instance(pod: &Value, budgets: &Budgets) -> PlacedInstance {
    PlacedInstance {
        id: instance_id(pod),
        priority: priority(pod),
        disruption_budget: budgets.group_of(pod).map(str::to_owned),
    }
}

/// Whether `pod` may evict lower-priority instances to fit:
/// `spec.preemptionPolicy: Never` says it may not.
fn may_preempt(pod: &Value) -> bool {
    pod["spec"]["preemptionPolicy"] != "Never"
}

/// The node `pod` preempted instances on and waits for, if any.
fn nominated_node(pod: &Value) -> Option<&str> {
    pod["status"]["nominatedNodeName"].as_str()
}

/// Whether `pod` already preempted and one of its victims (by uid) is
/// still among `live_uids`.
fn awaiting_victims(pod: &Value, live_uids: &HashSet<&str>) -> bool {
    nominated_node(pod).is_some()
        && pod["metadata"]["annotations"][PREEMPTION_VICTIMS]
            .as_str()
            .is_some_and(|victims| victims.split(',').any(|victim| live_uids.contains(victim)))
}

/// The message of the `Preempting` condition.
fn preempting_message(victims: usize, node: &str) -> String {
    format!("preempting {victims} instance(s) on {node}")
}

/// Marks `pod` as waiting on `node` for `victim_uids` to go; false if it
/// got bound meanwhile.
fn nominate(pod: &mut Value, node: &str, victim_uids: &[&str]) -> bool {
    if node_name(pod).is_some() {
        return false;
    }
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][PREEMPTION_VICTIMS] = json!(victim_uids.join(","));
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    pod["status"]["nominatedNodeName"] = json!(node);
    let message = preempting_message(victim_uids.len(), node);
    set_condition(pod, "PodScheduled", false, "Preempting", &message);
    true
}

/// Clears what [`nominate`] set, when the instance is bound.
fn clear_nomination(pod: &mut Value) {
    if let Some(status) = pod["status"].as_object_mut() {
        status.remove("nominatedNodeName");
    }
    if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
        annotations.remove(PREEMPTION_VICTIMS);
    }
}

/// Victims to delete for one preemptor, then the preemptor to nominate.
struct Preempting {
    namespace: String,
    name: String,
    node: String,
    /// (namespace, name, uid) of each victim.
    victims: Vec<(String, String, String)>,
}

/// Asks the snapshot for a preemption that would make room for `pod`, and
/// books it: later instances of this cycle see the victims gone, their
/// budgets spent and the room taken.
fn plan_preemption(
    snapshot: &mut ClusterSnapshot,
    budgets: &mut Budgets,
    bound_by_id: &HashMap<String, &Arc<Value>>,
    pod: &Value,
    request: &InstanceRequest,
) -> Option<Preempting> {
    let preemption = snapshot.preempt(request, priority(pod), budgets.by_group())?;
    let victims: Vec<&Arc<Value>> = preemption
        .victims
        .iter()
        .filter_map(|id| bound_by_id.get(id).copied())
        .collect();
    if victims.is_empty() || victims.len() != preemption.victims.len() {
        return None;
    }
    for victim in &victims {
        snapshot.release_instance(&instance_id(victim));
        budgets.evicted(victim);
    }
    snapshot.allocate(&preemption.node, request);
    Some(Preempting {
        namespace: namespace_of(pod).to_owned(),
        name: name_of(pod).to_owned(),
        node: preemption.node,
        victims: victims
            .iter()
            .map(|victim| {
                (
                    namespace_of(victim).to_owned(),
                    name_of(victim).to_owned(),
                    uid(victim).to_owned(),
                )
            })
            .collect(),
    })
}

/// The scheduler's memory between cycles: what it parsed from each
/// instance and node, kept while the object is unchanged (the same `Arc`
/// in the cache), so a cycle costs no JSON decoding for what did not change.
#[derive(Default)]
pub(crate) struct Scheduler {
    requests: HashMap<String, Parsed<std::result::Result<InstanceRequest, String>>>,
    nodes: HashMap<String, Parsed<NodeInfo>>,
    /// The live policy, read at the start of each cycle.
    policy: Policy,
}

/// A value parsed from one version of an object.
struct Parsed<T> {
    from: Arc<Value>,
    value: T,
}

/// The parsed value of `object` (stored at `key`), parsing it again only
/// when what `parse` reads of it changed since the last call: an instance's
/// status reports do not make it parse its spec again.
fn memoized<'a, T>(
    memo: &'a mut HashMap<String, Parsed<T>>,
    key: String,
    object: &Arc<Value>,
    parse: impl FnOnce(&Value) -> T,
) -> &'a T {
    use std::collections::hash_map::Entry;
    let parsed = || Parsed {
        from: Arc::clone(object),
        value: parse(object),
    };
    match memo.entry(key) {
        Entry::Occupied(mut entry) => {
            if !same_inputs(&entry.get().from, object) {
                entry.insert(parsed());
            } else if !Arc::ptr_eq(&entry.get().from, object) {
                // Keep the newest version, so the next comparison is a pointer check.
                entry.get_mut().from = Arc::clone(object);
            }
            &entry.into_mut().value
        }
        Entry::Vacant(entry) => &entry.insert(parsed()).value,
    }
}

/// Whether two versions of an object agree on everything the scheduler
/// parses from them: an instance's spec (but its `nodeName`, which binding
/// sets), labels, annotations and namespace; a Node whole (its allocatable
/// and conditions are in its status).
fn same_inputs(old: &Arc<Value>, new: &Arc<Value>) -> bool {
    if Arc::ptr_eq(old, new) {
        return true;
    }
    if new["kind"] != "Pod" {
        return old == new;
    }
    let (a, b) = (&old["metadata"], &new["metadata"]);
    fn without_node(spec: &Value) -> Option<impl Iterator<Item = (&String, &Value)>> {
        spec.as_object()
            .map(|fields| fields.iter().filter(|(name, _)| *name != "nodeName"))
    }
    let same_spec = match (without_node(&old["spec"]), without_node(&new["spec"])) {
        (Some(a), Some(b)) => a.eq(b),
        _ => old["spec"] == new["spec"],
    };
    same_spec
        && a["labels"] == b["labels"]
        && a["annotations"] == b["annotations"]
        && a["namespace"] == b["namespace"]
}

impl Scheduler {
    /// One scheduling cycle (see the module documentation).
    pub(crate) async fn reconcile(
        &mut self,
        objects: &Objects,
        cache: &Cache,
        changes: &Changes,
    ) -> Result<Option<i64>> {
        // A batch apply is one revision of thousands of events, which the
        // cache takes in one by one: scheduling from a half-applied revision
        // would split it into cycles that each pay for a snapshot and a write.
        cache
            .wait_for(objects.store().current_revision().await?)
            .await;
        self.refresh(cache, changes);
        self.policy = current_policy(cache);
        reconcile(objects, cache, self).await
    }

    /// Brings what was parsed up to date with `changes`: forgets objects
    /// that are gone and parses changed nodes now, so that the cycle that
    /// finds pending instances does not pay for thousands of nodes at once.
    fn refresh(&mut self, cache: &Cache, changes: &Changes) {
        if changes.everything {
            let pods: HashSet<String> = cache
                .list(kind("pods"), None)
                .iter()
                .map(|p| instance_id(p))
                .collect();
            self.requests.retain(|id, _| pods.contains(id));
            let nodes = cache.list(kind("nodes"), None);
            let names: HashSet<&str> = nodes.iter().map(|n| name_of(n)).collect();
            self.nodes.retain(|name, _| names.contains(name.as_str()));
            for node in &nodes {
                self.node_info(node);
            }
            return;
        }
        for key in changes.changed.keys() {
            let current = cache.get_key(key);
            if let Some(id) = key.strip_prefix("/registry/pods/") {
                if current.is_none() {
                    self.requests.remove(id);
                }
            } else if let Some(name) = key.strip_prefix("/registry/nodes/") {
                match &current {
                    Some(node) => {
                        self.node_info(node);
                    }
                    None => {
                        self.nodes.remove(name);
                    }
                }
            }
        }
    }

    /// What `pod` asks for, with the policy's default strategy unless it
    /// names one.
    fn request(&mut self, pod: &Arc<Value>) -> std::result::Result<InstanceRequest, String> {
        let mut request = memoized(&mut self.requests, instance_id(pod), pod, request).clone()?;
        if pod["metadata"]["annotations"][PLACEMENT_STRATEGY].is_null() {
            request.strategy = self.policy.default_strategy;
        }
        Ok(request)
    }

    fn node_info(&mut self, node: &Arc<Value>) -> NodeInfo {
        memoized(&mut self.nodes, name_of(node).to_string(), node, node_info).clone()
    }
}

async fn reconcile(objects: &Objects, cache: &Cache, memo: &mut Scheduler) -> Result<Option<i64>> {
    let pods = cache.list(kind("pods"), None);
    let mut pending: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| node_name(p).is_none() && !is_terminal(p))
        .collect();
    if pending.is_empty() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let mut snapshot = ClusterSnapshot::new();
    snapshot.set_policy(&memo.policy);
    for node in cache.list(kind("nodes"), None) {
        snapshot.upsert_node(memo.node_info(&node));
    }
    let live: Vec<&Arc<Value>> = pods.iter().filter(|p| !is_terminal(p)).collect();
    let owners = workload_owners(cache);
    let pdbs = cache.list(kind("poddisruptionbudgets"), None);
    let mut budgets = Budgets::new(&live, &pdbs, &owner_replicas(&owners));
    let mut bound_by_id: HashMap<String, &Arc<Value>> = HashMap::new();
    for pod in &live {
        if let (Some(node), Ok(request)) = (node_name(pod), memo.request(pod)) {
            let instance = placed_instance(pod, &budgets);
            bound_by_id.insert(instance.id.clone(), pod);
            snapshot.allocate_instance(node, &request, instance);
        }
    }
    let live_uids: HashSet<&str> = live.iter().map(|pod| uid(pod)).collect();
    pending.sort_by(|a, b| {
        priority(b)
            .cmp(&priority(a))
            .then_with(|| {
                a["metadata"]["creationTimestamp"]
                    .as_str()
                    .cmp(&b["metadata"]["creationTimestamp"].as_str())
            })
            .then_with(|| name_of(a).cmp(name_of(b)))
    });
    // The room a nominated preemptor won is booked on its node for it
    // against instances of its priority or lower, as Kubernetes does: the
    // booking starts when the cycle reaches its priority (instances go in
    // descending priority) and ends at its own turn.
    let nominees: Vec<(i32, String, String, InstanceRequest)> = pending
        .iter()
        .filter_map(|pod| {
            let request = memo.request(pod).ok()?;
            Some((
                priority(pod),
                instance_id(pod),
                nominated_node(pod)?.to_owned(),
                request,
            ))
        })
        .collect();
    let mut booked_from = 0;
    let mut booked: HashMap<&str, (&str, &InstanceRequest)> = HashMap::new();
    let built = started.elapsed();
    let mut binds = Vec::new();
    let mut unschedulable: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut preemptions = Vec::new();
    for pod in pending {
        while let Some((nominee_priority, id, node, request)) = nominees.get(booked_from)
            && *nominee_priority >= priority(pod)
        {
            snapshot.allocate(node, request);
            booked.insert(id, (node, request));
            booked_from += 1;
        }
        let reservation = booked.remove(instance_id(pod).as_str());
        if let Some((node, request)) = reservation {
            snapshot.release(node, request);
        }
        let request = memo
            .request(pod)
            .map_err(|e| format!("invalid instance: {e}"));
        let placement = request
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|request| snapshot.place(request).map_err(|reason| reason.to_string()));
        if placement.is_err()
            && let Some((node, request)) = reservation
        {
            // Still waiting for its victims: keep the room for the rest of the cycle.
            snapshot.allocate(node, request);
        }
        match placement {
            Ok(node) => {
                let mut bound = (**pod).clone();
                clear_nomination(&mut bound);
                bound["spec"]["nodeName"] = json!(node);
                set_condition(
                    &mut bound,
                    "PodScheduled",
                    true,
                    "Scheduled",
                    &format!("assigned to {node}"),
                );
                binds.push((kind("pods"), bound));
            }
            Err(_) if awaiting_victims(pod, &live_uids) => {}
            Err(reason) => {
                let preemption =
                    request
                        .as_ref()
                        .ok()
                        .filter(|_| may_preempt(pod))
                        .and_then(|request| {
                            plan_preemption(&mut snapshot, &mut budgets, &bound_by_id, pod, request)
                        });
                if let Some(preemption) = preemption {
                    preemptions.push(preemption);
                    continue;
                }
                let current = crate::pods::condition(pod, "PodScheduled");
                if current.is_none_or(|c| c["message"] != reason.as_str()) {
                    unschedulable.insert(
                        (namespace_of(pod).to_string(), name_of(pod).to_string()),
                        reason,
                    );
                }
            }
        }
    }
    let placed = started.elapsed();
    let mut written = None;
    if !binds.is_empty() {
        let count = binds.len();
        match objects.write_many(binds).await {
            Ok(revision) => {
                tracing::debug!(
                    count,
                    revision,
                    snapshot_ms = built.as_millis(),
                    place_ms = (placed - built).as_millis(),
                    write_ms = (started.elapsed() - placed).as_millis(),
                    "bound instances"
                );
                written = Some(revision);
            }
            // Another writer moved an instance on: the next cycle sees it.
            Err(crate::Error::Conflict(e)) => {
                tracing::debug!(error = %e, "bind conflicted; rescheduling")
            }
            Err(e) => return Err(e),
        }
    }
    for preemption in preemptions {
        written = written.max(preempt(objects, &preemption).await?);
    }
    for ((namespace, name), reason) in unschedulable {
        let revision = objects
            .update_with(kind("pods"), &namespace, &name, |pod| {
                node_name(pod).is_none()
                    && set_condition(pod, "PodScheduled", false, "Unschedulable", &reason)
            })
            .await?;
        written = written.max(revision);
    }
    Ok(written)
}

/// Deletes the victims, then nominates the preemptor: in this order, a
/// failure in between leaves no nomination waiting on victims that stay.
async fn preempt(objects: &Objects, preemption: &Preempting) -> Result<Option<i64>> {
    let mut written = None;
    for (namespace, name, _) in &preemption.victims {
        match objects.delete(kind("pods"), namespace, name).await {
            Ok((_, revision)) => written = written.max(Some(revision)),
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let uids: Vec<&str> = preemption
        .victims
        .iter()
        .map(|(_, _, uid)| uid.as_str())
        .collect();
    tracing::info!(
        instance = %preemption.name,
        node = %preemption.node,
        victims = uids.len(),
        "preempting"
    );
    let revision = objects
        .update_with(
            kind("pods"),
            &preemption.namespace,
            &preemption.name,
            |pod| nominate(pod, &preemption.node, &uids),
        )
        .await?;
    Ok(written.max(revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owner: Option<&str>, annotations: Value, ready: bool) -> Arc<Value> {
        let owners = owner.map_or(json!([]), |uid| json!([{"uid": uid, "controller": true}]));
        Arc::new(json!({
            "metadata": {
                "name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "annotations": annotations, "ownerReferences": owners
            },
            "spec": {"priority": 3, "containers": [{"name": "a"}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
    }

    #[test]
    fn bound_instances_carry_the_group_of_their_budget() {
        let mut web = pod("web-1", Some("web"), json!({}), true);
        Arc::make_mut(&mut web)["metadata"]["labels"] = json!({"app": "web"});
        let db = pod("db-1", Some("db"), json!({}), true);
        let refs = [&web, &db];
        let pdbs = [Arc::new(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
        }))];
        let budgets = Budgets::new(&refs, &pdbs, &HashMap::from([("web", 1)]));
        let instance = placed_instance(&web, &budgets);
        assert_eq!(instance.id, "default/web-1");
        assert_eq!(instance.priority, 3);
        assert_eq!(instance.disruption_budget.as_deref(), Some("default/web"));
        assert_eq!(placed_instance(&db, &budgets).disruption_budget, None);
        assert_eq!(budgets.by_group()["default/web"].allowed_disruptions(), 1);
    }

    #[test]
    fn priorities_are_clamped_to_i32() {
        assert_eq!(priority(&json!({"spec": {"priority": -5}})), -5);
        assert_eq!(
            priority(&json!({"spec": {"priority": 1i64 << 40}})),
            i32::MAX
        );
        assert_eq!(
            priority(&json!({"spec": {"priority": -(1i64 << 40)}})),
            i32::MIN
        );
        assert_eq!(priority(&json!({"spec": {}})), 0);
    }

    #[test]
    fn a_nominated_preemptor_waits_while_its_victims_remain() {
        let mut preemptor = (*pod("urgent", None, json!({}), false)).clone();
        assert!(nominate(&mut preemptor, "n1", &["uid-a", "uid-b"]));
        assert_eq!(preemptor["status"]["nominatedNodeName"], "n1");
        let scheduled = crate::pods::condition(&preemptor, "PodScheduled").unwrap();
        assert_eq!(scheduled["reason"], "Preempting");
        assert_eq!(scheduled["message"], "preempting 2 instance(s) on n1");
        assert!(awaiting_victims(
            &preemptor,
            &HashSet::from(["uid-b", "uid-x"])
        ));
        assert!(!awaiting_victims(&preemptor, &HashSet::from(["uid-x"])));
        clear_nomination(&mut preemptor);
        assert!(preemptor["status"]["nominatedNodeName"].is_null());
        assert!(!awaiting_victims(&preemptor, &HashSet::from(["uid-a"])));
        preemptor["spec"]["nodeName"] = json!("n2");
        assert!(
            !nominate(&mut preemptor, "n1", &["uid-a"]),
            "bound meanwhile"
        );
    }

    /// A control plane's store, objects and cache, with one node of 1 CPU.
    async fn one_node_cluster() -> (
        tempfile::TempDir,
        Objects,
        Arc<Cache>,
        tokio_util::sync::CancellationToken,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn c4m_store::Store> =
            Arc::new(c4m_store::RedbStore::open(&dir.path().join("store.redb")).unwrap());
        let objects = Objects::new(Arc::clone(&store));
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        objects
            .create(kind("namespaces"), "", namespace)
            .await
            .unwrap();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "annotations": {c4m_core::annotations::DRIVERS: "process=1"}},
            "status": {
                "allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        objects.create(kind("nodes"), "", node).await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        (dir, objects, cache, shutdown)
    }

    async fn create_pod(objects: &Objects, name: &str, priority: i32, nominated: Option<&str>) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": "1"}}}]},
        });
        objects.create(kind("pods"), "default", pod).await.unwrap();
        if let Some(node) = nominated {
            objects
                .update_with(kind("pods"), "default", name, |pod| {
                    nominate(pod, node, &["gone"])
                })
                .await
                .unwrap();
        }
    }

    async fn schedule_once(objects: &Objects, cache: &Cache) -> BTreeMap<String, String> {
        let revision = objects.store().current_revision().await.unwrap();
        cache.wait_for(revision).await;
        let changes = Changes {
            everything: true,
            ..Changes::default()
        };
        if let Some(revision) = Scheduler::default()
            .reconcile(objects, cache, &changes)
            .await
            .unwrap()
        {
            cache.wait_for(revision).await;
        }
        cache
            .list(kind("pods"), None)
            .iter()
            .map(|pod| {
                let place = node_name(pod).map_or_else(
                    || {
                        crate::pods::condition(pod, "PodScheduled").map_or(String::new(), |c| {
                            c["reason"].as_str().unwrap_or_default().to_owned()
                        })
                    },
                    str::to_owned,
                );
                (name_of(pod).to_owned(), place)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_nominated_preemptor_keeps_its_room_from_equal_priorities() {
        let (_dir, objects, cache, shutdown) = one_node_cluster().await;
        // "peer" comes first (same priority, name order) and would take the
        // node the preemptor "urgent" won.
        create_pod(&objects, "peer", 10, None).await;
        create_pod(&objects, "urgent", 10, Some("n1")).await;
        let placed = schedule_once(&objects, &cache).await;
        assert_eq!(placed["urgent"], "n1");
        assert_eq!(placed["peer"], "Unschedulable");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_higher_priority_instance_may_take_a_nominated_room() {
        let (_dir, objects, cache, shutdown) = one_node_cluster().await;
        create_pod(&objects, "urgent", 10, Some("n1")).await;
        create_pod(&objects, "critical", 100, None).await;
        let placed = schedule_once(&objects, &cache).await;
        assert_eq!(placed["critical"], "n1");
        assert_ne!(placed["urgent"], "n1");
        shutdown.cancel();
    }

    #[test]
    fn status_reports_and_binding_do_not_invalidate_a_parsed_request() {
        let pod = |node: Option<&str>, phase: &str, app: &str| {
            let mut pod = json!({"kind": "Pod", "metadata": {"namespace": "d", "labels": {"app": app}},
                "spec": {"containers": [{"name": "c"}]}, "status": {"phase": phase}});
            if let Some(node) = node {
                pod["spec"]["nodeName"] = json!(node);
            }
            Arc::new(pod)
        };
        let pending = pod(None, "Pending", "web");
        assert!(same_inputs(&pending, &pod(Some("n1"), "Running", "web")));
        assert!(!same_inputs(&pending, &pod(None, "Pending", "api")));
        let node = Arc::new(json!({"kind": "Node", "status": {"allocatable": {"cpu": "1"}}}));
        let grown = Arc::new(json!({"kind": "Node", "status": {"allocatable": {"cpu": "2"}}}));
        assert!(!same_inputs(&node, &grown));
    }
}
