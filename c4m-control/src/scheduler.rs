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

use c4m_sched::{
    ClusterSnapshot, Filter, InstanceRequest, NodeInfo, PlacedInstance, Policy, Scorer,
};
use serde_json::{Value, json};

use crate::Result;
use crate::cache::Cache;
use crate::disruption::{BudgetInputs, Budgets};
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{is_terminal, node_name, set_condition};
use crate::scheduler_policy::current_policy;

pub(crate) mod request;
pub(crate) mod volumes;

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

/// Whether `pod` may evict lower-priority instances to fit:
/// `spec.preemptionPolicy: Never` says it may not.
fn may_preempt(pod: &Value) -> bool {
    pod["spec"]["preemptionPolicy"] != "Never"
}

/// Whether `pod` already preempted and one of its victims (by uid) is
/// still among `live_uids`.
fn awaiting_victims(pod: &PodFacts, live_uids: &HashSet<&str>) -> bool {
    pod.nominated.is_some()
        && pod
            .victims
            .as_deref()
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
    bound_by_id: &HashMap<&str, &PodFacts>,
    pod: &PodFacts,
    request: &InstanceRequest,
) -> Option<Preempting> {
    let preemption = snapshot.preempt(request, pod.priority, budgets.by_group())?;
    let victims: Vec<&PodFacts> = preemption
        .victims
        .iter()
        .filter_map(|id| bound_by_id.get(id.as_str()).copied())
        .collect();
    if victims.is_empty() || victims.len() != preemption.victims.len() {
        return None;
    }
    for victim in &victims {
        snapshot.release_instance(&victim.id);
        budgets.evicted(&victim.uid);
    }
    snapshot.allocate(&preemption.node, request);
    Some(Preempting {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        node: preemption.node,
        victims: victims
            .iter()
            .map(|victim| {
                (
                    victim.namespace.clone(),
                    victim.name.clone(),
                    victim.uid.clone(),
                )
            })
            .collect(),
    })
}

/// What a cycle needs of one instance, read from one version of it.
pub(crate) struct PodFacts {
    /// `namespace/name`, the id preemption knows it by.
    id: String,
    namespace: String,
    name: String,
    uid: String,
    /// The node it is bound to.
    node: Option<String>,
    terminal: bool,
    priority: i32,
    created: Option<String>,
    /// The node it preempted instances on and waits for.
    nominated: Option<String>,
    /// The uids of its victims, comma separated ([`PREEMPTION_VICTIMS`]).
    victims: Option<String>,
    may_preempt: bool,
    /// Whether it names its placement strategy (else the policy's default
    /// applies).
    names_strategy: bool,
    /// The message of its `PodScheduled` condition.
    scheduled_message: Option<String>,
    /// The object as decoded for these facts while it waits for a node,
    /// until a cycle takes it to bind it without decoding it again.
    pending: Option<Arc<Value>>,
    /// Whether it uses persistent volume claims ([`volumes::claims_of`]).
    uses_claims: bool,
    /// A fingerprint of what [`request`] reads ([`request_inputs`]).
    inputs: u64,
    request: std::result::Result<InstanceRequest, String>,
}

impl PodFacts {
    /// The facts of `pod`; its request is parsed again only if what it is
    /// parsed from changed since `previous`: a status report or a bind does
    /// not make the scheduler parse an instance's spec again.
    fn new(pod: &Arc<Value>, previous: Option<PodFacts>) -> PodFacts {
        let inputs = request_inputs(pod);
        let node = node_name(pod).map(str::to_owned);
        let terminal = is_terminal(pod);
        let request = match previous {
            Some(previous) if previous.inputs == inputs => previous.request,
            _ => request(pod),
        };
        PodFacts {
            id: format!("{}/{}", namespace_of(pod), name_of(pod)),
            namespace: namespace_of(pod).to_owned(),
            name: name_of(pod).to_owned(),
            uid: pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            pending: (node.is_none() && !terminal).then(|| Arc::clone(pod)),
            node,
            terminal,
            priority: priority(pod),
            created: pod["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_owned),
            nominated: pod["status"]["nominatedNodeName"]
                .as_str()
                .map(str::to_owned),
            victims: pod["metadata"]["annotations"][PREEMPTION_VICTIMS]
                .as_str()
                .map(str::to_owned),
            may_preempt: may_preempt(pod),
            names_strategy: !pod["metadata"]["annotations"][PLACEMENT_STRATEGY].is_null(),
            scheduled_message: crate::pods::condition(pod, "PodScheduled")
                .and_then(|c| c["message"].as_str())
                .map(str::to_owned),
            uses_claims: !volumes::claims_of(pod).is_empty(),
            inputs,
            request,
        }
    }

    /// What it asks for, with `policy`'s default strategy unless it names one.
    fn request(&self, policy: &Policy) -> std::result::Result<InstanceRequest, String> {
        let mut request = self.request.clone()?;
        if !self.names_strategy {
            request.strategy = policy.default_strategy;
        }
        Ok(request)
    }

    /// A bound instance as a possible victim, in the group of the
    /// disruption budget that covers it.
    fn placed_instance(&self, budgets: &Budgets) -> PlacedInstance {
        PlacedInstance {
            id: self.id.clone(),
            priority: self.priority,
            disruption_budget: budgets.group_of(&self.uid).map(str::to_owned),
        }
    }
}

/// A fingerprint of everything [`request`] reads of an instance: its spec
/// (but its `nodeName`, which binding sets), labels, annotations and
/// namespace.
fn request_inputs(pod: &Value) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    /// Feeds serialized JSON to a hasher, without building the text.
    struct Hashing(DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let metadata = &pod["metadata"];
    let spec: Option<BTreeMap<&String, &Value>> = pod["spec"].as_object().map(|fields| {
        fields
            .iter()
            .filter(|(name, _)| *name != "nodeName")
            .collect()
    });
    let inputs = (
        spec.as_ref().ok_or(&pod["spec"]),
        &metadata["labels"],
        &metadata["annotations"],
        &metadata["namespace"],
    );
    let mut hashing = Hashing(DefaultHasher::new());
    // Writing to a hasher cannot fail, and serializing a Value cannot either.
    let _ = serde_json::to_writer(&mut hashing, &inputs);
    hashing.0.finish()
}

/// A value derived from one version of an object.
struct Versioned<T> {
    /// The revision of the version it comes from.
    revision: i64,
    /// The refresh that last found the object in the cache.
    seen: u64,
    value: T,
}

/// Brings `memo` (by key) up to date with the objects under `prefix`:
/// forgets the ones gone and derives the value of a changed or new one
/// from its current version (`derive` gets the previous value too). Only
/// what changed is decoded.
fn sync<T>(
    memo: &mut BTreeMap<String, Versioned<T>>,
    cache: &Cache,
    prefix: &str,
    seen: u64,
    derive: impl Fn(&Arc<Value>, Option<T>) -> T,
) {
    let mut changed = Vec::new();
    cache.for_each_stored(prefix, |key, stored| {
        if let Some(known) = memo.get_mut(key) {
            known.seen = seen;
            if known.revision == stored.revision() {
                return;
            }
        }
        changed.push((key.to_owned(), stored.clone()));
    });
    memo.retain(|_, known| known.seen == seen);
    if !changed.is_empty() {
        tracing::debug!(prefix, changed = changed.len(), "decoding changed objects");
    }
    for (key, stored) in changed {
        let previous = memo.remove(&key).map(|known| known.value);
        if let Some(object) = stored.decode(&key) {
            let value = derive(&object, previous);
            let revision = stored.revision();
            memo.insert(
                key,
                Versioned {
                    revision,
                    seen,
                    value,
                },
            );
        }
    }
}

/// The scheduler's memory between cycles: what it derived from each
/// instance and node, kept while the object is unchanged (the same
/// revision in the cache), so a cycle decodes only what changed.
#[derive(Default)]
pub(crate) struct Scheduler {
    pods: BTreeMap<String, Versioned<PodFacts>>,
    nodes: BTreeMap<String, Versioned<NodeInfo>>,
    /// How many times [`Scheduler::refresh`] ran.
    refreshes: u64,
    /// The live policy, read at the start of each cycle.
    policy: Policy,
    /// The embedder's filters, added to every cycle's snapshot.
    filters: Vec<Arc<dyn Filter>>,
    /// The embedder's scorers with their weights, likewise.
    scorers: Vec<(i64, Arc<dyn Scorer>)>,
    /// Each node's last storage report, for claims to provision.
    volume_reports: Arc<crate::volume_reports::VolumeReports>,
}

impl Scheduler {
    /// A scheduler that also applies an embedder's `filters` and `scorers`.
    pub(crate) fn new(filters: Vec<Arc<dyn Filter>>, scorers: Vec<(i64, Arc<dyn Scorer>)>) -> Self {
        Scheduler {
            filters,
            scorers,
            ..Scheduler::default()
        }
    }

    /// Reads the nodes' free storage from `reports`.
    pub(crate) fn with_volume_reports(
        mut self,
        reports: Arc<crate::volume_reports::VolumeReports>,
    ) -> Self {
        self.volume_reports = reports;
        self
    }

    /// One scheduling cycle (see the module documentation).
    pub(crate) async fn reconcile(
        &mut self,
        objects: &Objects,
        cache: &Cache,
    ) -> Result<Option<i64>> {
        // A batch apply is one revision of thousands of events, which the
        // cache takes in one by one: scheduling from a half-applied revision
        // would split it into cycles that each pay for a snapshot and a write.
        cache
            .wait_for(objects.store().current_revision().await?)
            .await;
        if !cache.has_unbound_pods() {
            // Nothing to place: catching up with thousands of instances just
            // bound would only compete with the writes and watches that
            // follow a bind. A cycle with work catches up then.
            return Ok(None);
        }
        let started = std::time::Instant::now();
        self.refresh(cache);
        tracing::debug!(
            refresh_ms = started.elapsed().as_millis(),
            "caught up with the cache"
        );
        self.policy = current_policy(cache);
        reconcile(objects, cache, self).await
    }

    /// Brings what was derived up to date with the cache: one pass over
    /// the keys of instances and nodes, decoding those whose revision moved.
    fn refresh(&mut self, cache: &Cache) {
        self.refreshes += 1;
        sync(&mut self.pods, cache, PODS, self.refreshes, PodFacts::new);
        sync(&mut self.nodes, cache, NODES, self.refreshes, |node, _| {
            node_info(node)
        });
    }
}

/// The component scheduling Events name, as Kubernetes' scheduler does.
const SCHEDULER: &str = "default-scheduler";

/// Key prefixes of instances and of nodes.
const PODS: &str = "/registry/pods/";
const NODES: &str = "/registry/nodes/";

async fn reconcile(objects: &Objects, cache: &Cache, memo: &mut Scheduler) -> Result<Option<i64>> {
    let waiting = |pod: &PodFacts| pod.node.is_none() && !pod.terminal;
    if !memo.pods.values().any(|pod| waiting(&pod.value)) {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    // Taken, so that binding needs no copy; an instance this cycle does not
    // bind is decoded from the cache when a later cycle does.
    let mut decoded: HashMap<String, Arc<Value>> = memo
        .pods
        .iter_mut()
        .filter_map(|(key, pod)| Some((key.clone(), pod.value.pending.take()?)))
        .collect();
    let memo: &Scheduler = memo;
    let mut pending: Vec<(&String, &PodFacts)> = memo
        .pods
        .iter()
        .map(|(key, pod)| (key, &pod.value))
        .filter(|(_, pod)| waiting(pod))
        .collect();
    let policy = &memo.policy;
    let mut snapshot = ClusterSnapshot::new();
    snapshot.set_policy(policy);
    for filter in &memo.filters {
        snapshot.add_filter(Arc::clone(filter));
    }
    for (weight, scorer) in &memo.scorers {
        snapshot.add_scorer(*weight, Arc::clone(scorer));
    }
    for node in memo.nodes.values() {
        snapshot.upsert_node(node.value.clone());
    }
    let mut budgets = budgets(cache);
    let live: Vec<&PodFacts> = memo
        .pods
        .values()
        .map(|pod| &pod.value)
        .filter(|pod| !pod.terminal)
        .collect();
    let mut bound_by_id: HashMap<&str, &PodFacts> = HashMap::new();
    for pod in &live {
        if let (Some(node), Ok(request)) = (&pod.node, pod.request(policy)) {
            bound_by_id.insert(&pod.id, pod);
            snapshot.allocate_instance(node, &request, pod.placed_instance(&budgets));
        }
    }
    let live_uids: HashSet<&str> = live.iter().map(|pod| pod.uid.as_str()).collect();
    pending.sort_by(|(_, a), (_, b)| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| a.name.cmp(&b.name))
    });
    // The room a nominated preemptor won is booked on its node for it
    // against instances of its priority or lower, as Kubernetes does: the
    // booking starts when the cycle reaches its priority (instances go in
    // descending priority) and ends at its own turn.
    let nominees: Vec<(i32, &str, &str, InstanceRequest)> = pending
        .iter()
        .filter_map(|(_, pod)| {
            let request = pod.request(policy).ok()?;
            Some((
                pod.priority,
                pod.id.as_str(),
                pod.nominated.as_deref()?,
                request,
            ))
        })
        .collect();
    let mut booked_from = 0;
    let mut booked: HashMap<&str, (&str, &InstanceRequest)> = HashMap::new();
    let node_infos: Vec<&c4m_sched::NodeInfo> = memo.nodes.values().map(|n| &n.value).collect();
    // Local storage each node has left for claims this cycle selects.
    let mut local_free = if pending.iter().any(|(_, pod)| pod.uses_claims) {
        crate::controllers::volumes::local_free_unpromised(cache, &memo.volume_reports.all())
    } else {
        HashMap::new()
    };
    let built = started.elapsed();
    let mut binds = Vec::new();
    let mut unschedulable: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut preemptions = Vec::new();
    for (key, pod) in pending {
        while let Some((nominee_priority, id, node, request)) = nominees.get(booked_from)
            && *nominee_priority >= pod.priority
        {
            snapshot.allocate(node, request);
            booked.insert(id, (node, request));
            booked_from += 1;
        }
        let reservation = booked.remove(pod.id.as_str());
        if let Some((node, request)) = reservation {
            snapshot.release(node, request);
        }
        let mut request = pod
            .request(policy)
            .map_err(|e| format!("invalid instance: {e}"));
        // What its claims ask: a pending claim keeps it here whatever the
        // nodes; claims to provision go where it goes.
        let (mut to_provision, mut local_bytes) = (Vec::new(), 0);
        if pod.uses_claims
            && let Ok(request) = &mut request
        {
            let Some(object) = decoded.get(key).cloned().or_else(|| cache.get_key(key)) else {
                continue;
            };
            match volumes::needs(&object, cache, &node_infos, &local_free) {
                Ok(needs) => {
                    let needs = needs.unwrap_or_default();
                    request.volume_nodes = Some(needs.nodes);
                    to_provision = needs.to_provision;
                    local_bytes = needs.local_bytes;
                }
                Err(reason) => {
                    if pod.scheduled_message.as_deref() != Some(reason.as_str()) {
                        unschedulable.insert((pod.namespace.clone(), pod.name.clone()), reason);
                    }
                    continue;
                }
            }
        }
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
                let Some(current) = decoded.remove(key).or_else(|| cache.get_key(key)) else {
                    continue; // Deleted meanwhile: nothing to bind.
                };
                // Its claims to provision name the node in the same write.
                if !to_provision.is_empty() {
                    let Some(claims) =
                        volumes::selecting(cache, &pod.namespace, &to_provision, &node)
                    else {
                        continue;
                    };
                    binds.extend(
                        claims
                            .into_iter()
                            .map(|c| (kind("persistentvolumeclaims"), c)),
                    );
                    if let Some(free) = local_free.get_mut(&node) {
                        *free = free.saturating_sub(local_bytes);
                    }
                }
                let mut bound = Arc::unwrap_or_clone(current);
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
                        .filter(|_| pod.may_preempt)
                        .and_then(|request| {
                            plan_preemption(&mut snapshot, &mut budgets, &bound_by_id, pod, request)
                        });
                if let Some(preemption) = preemption {
                    preemptions.push(preemption);
                    continue;
                }
                if pod.scheduled_message.as_deref() != Some(reason.as_str()) {
                    unschedulable.insert((pod.namespace.clone(), pod.name.clone()), reason);
                }
            }
        }
    }
    let placed = started.elapsed();
    let mut written = None;
    if !binds.is_empty() {
        let scheduled: Vec<(Regarding, String)> = binds
            .iter()
            .filter(|(kind, _)| kind.kind == "Pod")
            .map(|(_, pod)| {
                let message = format!(
                    "Successfully assigned {}/{} to {}",
                    namespace_of(pod),
                    name_of(pod),
                    pod["spec"]["nodeName"].as_str().unwrap_or_default()
                );
                (Regarding::of(pod), message)
            })
            .collect();
        let count = scheduled.len();
        match objects.write_many(binds).await {
            Ok(revision) => {
                for (regarding, message) in scheduled {
                    objects.events().record(
                        regarding,
                        EventType::Normal,
                        "Scheduled",
                        message,
                        SCHEDULER,
                    );
                }
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
        let mut regarding = None;
        let revision = objects
            .update_with(kind("pods"), &namespace, &name, |pod| {
                regarding = Some(Regarding::of(pod));
                node_name(pod).is_none()
                    && set_condition(pod, "PodScheduled", false, "Unschedulable", &reason)
            })
            .await?;
        if revision.is_some()
            && let Some(regarding) = regarding
        {
            objects.events().record(
                regarding,
                EventType::Warning,
                "FailedScheduling",
                reason,
                SCHEDULER,
            );
        }
        written = written.max(revision);
    }
    Ok(written)
}

/// The disruption budgets of the live instances. Without any
/// PodDisruptionBudget (the common case) there is nothing to read; with
/// some, the instances and workloads are decoded for them.
fn budgets(cache: &Cache) -> Budgets {
    BudgetInputs::read(cache).map_or_else(Budgets::default, |inputs| {
        Budgets::new(&inputs.live(), &inputs.pdbs, &inputs.owner_replicas())
    })
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
        let instance = PodFacts::new(&web, None).placed_instance(&budgets);
        assert_eq!(instance.id, "default/web-1");
        assert_eq!(instance.priority, 3);
        assert_eq!(instance.disruption_budget.as_deref(), Some("default/web"));
        assert_eq!(
            PodFacts::new(&db, None)
                .placed_instance(&budgets)
                .disruption_budget,
            None
        );
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
        let awaiting = |pod: &Value, live: &[&str]| {
            let facts = PodFacts::new(&Arc::new(pod.clone()), None);
            awaiting_victims(&facts, &live.iter().copied().collect())
        };
        assert!(awaiting(&preemptor, &["uid-b", "uid-x"]));
        assert!(!awaiting(&preemptor, &["uid-x"]));
        clear_nomination(&mut preemptor);
        assert!(preemptor["status"]["nominatedNodeName"].is_null());
        assert!(!awaiting(&preemptor, &["uid-a"]));
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
        let (dir, store, objects) = crate::test_support::store_with_default_namespace().await;
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
        if let Some(revision) = Scheduler::default()
            .reconcile(objects, cache)
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

    #[tokio::test]
    async fn a_cordoned_node_takes_only_instances_tolerating_its_taint() {
        let (_dir, objects, cache, shutdown) = one_node_cluster().await;
        objects
            .update_with(kind("nodes"), "", "n1", |node| {
                node["spec"] = json!({"unschedulable": true});
                true
            })
            .await
            .unwrap();
        create_pod(&objects, "plain", 0, None).await;
        // A daemon pod tolerates the cordon, as Kubernetes gives it to them.
        let daemon = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "daemon", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}],
                "tolerations": [{"key": request::UNSCHEDULABLE_TAINT,
                    "operator": "Exists", "effect": "NoSchedule"}]},
        });
        objects
            .create(kind("pods"), "default", daemon)
            .await
            .unwrap();
        let placed = schedule_once(&objects, &cache).await;
        assert_eq!(placed["daemon"], "n1");
        assert_eq!(placed["plain"], "Unschedulable");
        let plain = cache.get(kind("pods"), "default", "plain").unwrap();
        assert_eq!(
            crate::pods::condition(&plain, "PodScheduled").unwrap()["message"],
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unschedulable: }."
        );
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
            pod
        };
        let pending = request_inputs(&pod(None, "Pending", "web"));
        assert_eq!(pending, request_inputs(&pod(Some("n1"), "Running", "web")));
        assert_ne!(pending, request_inputs(&pod(None, "Pending", "api")));
        let mut limited = pod(None, "Pending", "web");
        limited["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}});
        assert_ne!(pending, request_inputs(&limited));
    }
}
