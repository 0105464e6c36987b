//! PodDisruptionBudgets: which budget covers each instance, and how many
//! voluntary disruptions (preemptions) each budget allows, with Kubernetes'
//! arithmetic.
//!
//! A budget matches the live instances of its namespace that its selector
//! selects (an empty selector selects all of them, a missing one none). An
//! instance belongs to the first budget by name that matches it. A budget's
//! *expected* count is the `spec.replicas` of the owners of the instances it
//! matches (each owner once), an instance whose owner is unknown counting for
//! itself; with an integer `minAvailable` it is, as in Kubernetes, the number
//! of matching instances. Percentages are of the expected count, rounded up.
//! *Healthy* instances are the ready ones; a budget allows
//! `healthy - desired healthy` disruptions, never fewer than zero, and none
//! while it expects nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use c4m_sched::DisruptionBudget;
use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::cache::Cache;
use crate::objects::{kind, name_of, namespace_of};
use crate::pods::{controller_uid, is_ready, is_terminal, labels};
use crate::selector::Selector;

/// What a budget's status says of the instances it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Assessment {
    /// Instances there should be.
    pub expected_pods: u64,
    /// Healthy instances the budget wants at least.
    pub desired_healthy: u64,
    /// Healthy (ready) instances now.
    pub current_healthy: u64,
    /// How many more instances may be disrupted now.
    pub disruptions_allowed: u64,
}

impl Assessment {
    /// The budget as preemption counts it: it allows exactly
    /// `disruptions_allowed`, and each victim makes one more unavailable.
    pub(crate) fn budget(&self) -> DisruptionBudget {
        let members = self.expected_pods.max(self.current_healthy);
        DisruptionBudget {
            max_unavailable: members - self.current_healthy + self.disruptions_allowed,
            unavailable: members - self.current_healthy,
        }
    }
}

/// One budget with the instances it matches.
pub(crate) struct Covered<'a> {
    /// The PodDisruptionBudget object.
    pub pdb: &'a Arc<Value>,
    /// Its decoded spec.
    pub spec: PodDisruptionBudgetSpec,
    /// The live instances its selector matches.
    pub pods: Vec<&'a Arc<Value>>,
}

/// Every budget of `pdbs` (in their order) with the instances of `pods`
/// (live ones) it matches. A budget whose spec or selector does not decode
/// (validation refuses those, so only another version could have written
/// it) is skipped with a warning.
pub(crate) fn covered<'a>(pdbs: &'a [Arc<Value>], pods: &[&'a Arc<Value>]) -> Vec<Covered<'a>> {
    let mut by_namespace: HashMap<&str, Vec<&'a Arc<Value>>> = HashMap::new();
    for pod in pods {
        by_namespace
            .entry(namespace_of(pod))
            .or_default()
            .push(*pod);
    }
    let mut covered = Vec::with_capacity(pdbs.len());
    for pdb in pdbs {
        let decoded = serde_json::from_value::<PodDisruptionBudgetSpec>(pdb["spec"].clone())
            .map_err(c4m_core::BoxError::from)
            .and_then(|spec| {
                let selector = spec
                    .selector
                    .as_ref()
                    .map(Selector::from_label_selector)
                    .transpose()?;
                Ok((spec, selector))
            });
        let (spec, selector) = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(
                    namespace = namespace_of(pdb),
                    name = name_of(pdb),
                    error = %e,
                    "skipping an undecodable PodDisruptionBudget"
                );
                continue;
            }
        };
        let pods = match selector {
            Some(selector) => by_namespace
                .get(namespace_of(pdb))
                .into_iter()
                .flatten()
                .filter(|pod| selector.matches(&labels(pod)))
                .copied()
                .collect(),
            None => Vec::new(),
        };
        covered.push(Covered { pdb, spec, pods });
    }
    covered
}

/// The budget's counts over the instances it matches (`pods`), with the
/// replicas of their owners by uid.
pub(crate) fn assess(
    spec: &PodDisruptionBudgetSpec,
    pods: &[&Arc<Value>],
    owner_replicas: &HashMap<&str, u64>,
) -> Assessment {
    let matching = pods.len() as u64;
    let (expected_pods, desired_healthy) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max_unavailable), _) => {
            let expected = expected_scale(pods, owner_replicas);
            let desired = scaled(max_unavailable, expected)
                .map_or(expected, |max| expected.saturating_sub(max));
            (expected, desired)
        }
        (None, Some(IntOrString::Int(min_available))) => {
            (matching, u64::try_from(*min_available).unwrap_or(0))
        }
        (None, Some(min_available)) => {
            let expected = expected_scale(pods, owner_replicas);
            (
                expected,
                scaled(min_available, expected).unwrap_or(expected),
            )
        }
        (None, None) => (0, 0),
    };
    let current_healthy = pods.iter().filter(|pod| is_ready(pod)).count() as u64;
    let disruptions_allowed = if expected_pods == 0 {
        0
    } else {
        current_healthy.saturating_sub(desired_healthy)
    };
    Assessment {
        expected_pods,
        desired_healthy,
        current_healthy,
        disruptions_allowed,
    }
}

/// The replicas of the owners of `pods`, each owner once; an instance whose
/// owner is unknown counts for itself.
fn expected_scale(pods: &[&Arc<Value>], owner_replicas: &HashMap<&str, u64>) -> u64 {
    let mut owners = HashSet::new();
    let mut expected = 0u64;
    for pod in pods {
        let owner = controller_uid(pod).and_then(|uid| Some((uid, *owner_replicas.get(uid)?)));
        expected = expected.saturating_add(match owner {
            Some((uid, replicas)) if owners.insert(uid) => replicas,
            Some(_) => 0,
            None => 1,
        });
    }
    expected
}

/// An integer as is, or a percentage of `total` rounded up; None when the
/// text is no percentage (validation refuses that), which callers read as
/// "allow no disruption".
fn scaled(value: &IntOrString, total: u64) -> Option<u64> {
    match value {
        IntOrString::Int(number) => Some(u64::try_from(*number).unwrap_or(0)),
        IntOrString::String(text) => {
            let percent: u64 = text.strip_suffix('%')?.parse().ok()?;
            Some((percent.min(100) * total).div_ceil(100))
        }
    }
}

/// What budgets are assessed against, read from the cache together: the
/// budgets, the instances and the workloads that own them.
pub(crate) struct BudgetInputs {
    /// Every PodDisruptionBudget.
    pub(crate) pdbs: Vec<Arc<Value>>,
    pods: Vec<Arc<Value>>,
    /// Microservices, Deployments and StatefulSets.
    owners: Vec<Arc<Value>>,
}

impl BudgetInputs {
    /// The inputs as the cache has them; `None` without any budget, when
    /// there is nothing to assess.
    pub(crate) fn read(cache: &Cache) -> Option<BudgetInputs> {
        let pdbs = cache.list(kind("poddisruptionbudgets"), None);
        if pdbs.is_empty() {
            return None;
        }
        Some(BudgetInputs {
            pdbs,
            pods: cache.list(kind("pods"), None),
            owners: ["microservices", "deployments", "statefulsets"]
                .into_iter()
                .flat_map(|plural| cache.list(kind(plural), None))
                .collect(),
        })
    }

    /// The instances that count: those not terminal.
    pub(crate) fn live(&self) -> Vec<&Arc<Value>> {
        self.pods.iter().filter(|pod| !is_terminal(pod)).collect()
    }

    /// `spec.replicas` of every workload that owns instances, by uid.
    pub(crate) fn owner_replicas(&self) -> HashMap<&str, u64> {
        self.owners
            .iter()
            .map(|owner| {
                (
                    owner["metadata"]["uid"].as_str().unwrap_or_default(),
                    owner["spec"]["replicas"].as_u64().unwrap_or(1),
                )
            })
            .collect()
    }
}

/// The disruption budgets of a set of live instances, as preemption uses
/// them: each covered instance's group (`namespace/pdb-name`) and each
/// group's budget.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    /// Group of each covered instance, by uid.
    group_of: HashMap<String, String>,
    by_group: BTreeMap<String, DisruptionBudget>,
}

impl Budgets {
    /// The budgets the PodDisruptionBudgets `pdbs` set for the live
    /// instances `pods`, with the replicas of their owners by uid.
    pub(crate) fn new(
        pods: &[&Arc<Value>],
        pdbs: &[Arc<Value>],
        owner_replicas: &HashMap<&str, u64>,
    ) -> Self {
        let mut budgets = Budgets::default();
        for covered in covered(pdbs, pods) {
            let group = format!("{}/{}", namespace_of(covered.pdb), name_of(covered.pdb));
            for pod in &covered.pods {
                let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
                budgets
                    .group_of
                    .entry(uid.to_owned())
                    .or_insert_with(|| group.clone());
            }
            let assessment = assess(&covered.spec, &covered.pods, owner_replicas);
            budgets.by_group.insert(group, assessment.budget());
        }
        budgets
    }

    /// The group of the budget covering the instance of uid `uid`, if one does.
    pub(crate) fn group_of(&self, uid: &str) -> Option<&str> {
        self.group_of.get(uid).map(String::as_str)
    }

    /// Every group's budget, as `ClusterSnapshot::preempt` takes them.
    pub(crate) fn by_group(&self) -> &BTreeMap<String, DisruptionBudget> {
        &self.by_group
    }

    /// Books the eviction of the instance of uid `uid`: its group has one
    /// more member unavailable.
    pub(crate) fn evicted(&mut self, uid: &str) {
        let Some(group) = self.group_of(uid).map(str::to_owned) else {
            return;
        };
        if let Some(budget) = self.by_group.get_mut(&group) {
            budget.unavailable = budget.unavailable.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, namespace: &str, owner: Option<&str>, app: &str, ready: bool) -> Arc<Value> {
        let owners = owner.map_or(json!([]), |uid| json!([{"uid": uid, "controller": true}]));
        Arc::new(json!({
            "metadata": {
                "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                "labels": {"app": app}, "ownerReferences": owners
            },
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
    }

    fn pdb(name: &str, spec: Value) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    }

    fn spec(value: Value) -> PodDisruptionBudgetSpec {
        serde_json::from_value(value).unwrap()
    }

    /// (expected, desired, healthy, allowed) of `spec` over `pods`.
    fn counts(
        spec_json: Value,
        pods: &[Arc<Value>],
        replicas: &[(&str, u64)],
    ) -> (u64, u64, u64, u64) {
        let refs: Vec<&Arc<Value>> = pods.iter().collect();
        let a = assess(&spec(spec_json), &refs, &replicas.iter().copied().collect());
        (
            a.expected_pods,
            a.desired_healthy,
            a.current_healthy,
            a.disruptions_allowed,
        )
    }

    /// A StatefulSet's replicas count as a Deployment's do.
    #[tokio::test]
    async fn a_stateful_sets_replicas_are_expected() {
        let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let set = serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let set = objects
            .create(kind("statefulsets"), "default", set)
            .await
            .unwrap();
        let pdb = serde_json::json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}});
        objects
            .create(kind("poddisruptionbudgets"), "default", pdb)
            .await
            .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let cache = crate::cache::Cache::start(store, shutdown.clone())
            .await
            .unwrap();
        let inputs = BudgetInputs::read(&cache).unwrap();
        let uid = set["metadata"]["uid"].as_str().unwrap();
        assert_eq!(inputs.owner_replicas().get(uid), Some(&3));
        shutdown.cancel();
    }

    #[test]
    fn kubernetes_arithmetic() {
        // web wants 4 replicas and has 3, two of them ready.
        let web = [
            pod("w1", "default", Some("web"), "web", true),
            pod("w2", "default", Some("web"), "web", true),
            pod("w3", "default", Some("web"), "web", false),
        ];
        let web_replicas = [("web", 4)];
        // (spec, owners' replicas) → (expected, desired, healthy, allowed)
        let cases = [
            // maxUnavailable: of the owner's replicas.
            (
                json!({"maxUnavailable": 1}),
                &web_replicas[..],
                (4, 3, 2, 0),
            ),
            (json!({"maxUnavailable": 3}), &web_replicas, (4, 1, 2, 1)),
            // Percentages round up: 30% of 4 is 2, 25% of 4 is 1.
            (
                json!({"maxUnavailable": "30%"}),
                &web_replicas,
                (4, 2, 2, 0),
            ),
            (json!({"minAvailable": "25%"}), &web_replicas, (4, 1, 2, 1)),
            // An integer minAvailable counts the matching instances.
            (json!({"minAvailable": 1}), &web_replicas, (3, 1, 2, 1)),
            (json!({"minAvailable": 5}), &web_replicas, (3, 5, 2, 0)),
            // An owner not known: each instance counts for itself.
            (json!({"maxUnavailable": "50%"}), &[], (3, 1, 2, 1)),
            // Neither field set: nothing expected, nothing allowed.
            (json!({}), &web_replicas, (0, 0, 2, 0)),
        ];
        for (spec, replicas, expected) in cases {
            assert_eq!(counts(spec.clone(), &web, replicas), expected, "{spec}");
        }
        assert_eq!(counts(json!({"maxUnavailable": 5}), &[], &[]), (0, 0, 0, 0));
    }

    #[test]
    fn the_scheduler_budget_allows_what_the_status_says() {
        for (expected_pods, desired_healthy, current_healthy, disruptions_allowed) in
            [(4, 3, 2, 0), (4, 1, 2, 1), (2, 0, 3, 3), (0, 0, 2, 0)]
        {
            let assessment = Assessment {
                expected_pods,
                desired_healthy,
                current_healthy,
                disruptions_allowed,
            };
            let mut budget = assessment.budget();
            assert_eq!(budget.allowed_disruptions(), disruptions_allowed);
            budget.unavailable += 1;
            assert_eq!(
                budget.allowed_disruptions(),
                disruptions_allowed.saturating_sub(1)
            );
        }
    }

    #[test]
    fn instances_belong_to_the_first_matching_budget_of_their_namespace() {
        let pods = [
            pod("w1", "default", Some("web"), "web", true),
            pod("w2", "default", Some("web"), "web", true),
            pod("d1", "default", None, "db", true),
            pod("o1", "other", None, "web", true),
            pod("x1", "default", None, "cache", true),
        ];
        let refs: Vec<&Arc<Value>> = pods.iter().collect();
        let pdbs = [
            pdb(
                "a-web",
                json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
            ),
            pdb("b-all", json!({"minAvailable": 3, "selector": {}})),
            pdb("c-none", json!({"maxUnavailable": 1})),
            pdb(
                "d-bad",
                json!({"maxUnavailable": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}),
            ),
        ];
        let mut budgets = Budgets::new(&refs, &pdbs, &HashMap::from([("web", 2)]));
        let group = |pod: &Value| {
            budgets
                .group_of(pod["metadata"]["uid"].as_str().unwrap_or_default())
                .map(str::to_owned)
        };
        assert_eq!(group(&pods[0]).as_deref(), Some("default/a-web"));
        assert_eq!(group(&pods[2]).as_deref(), Some("default/b-all"));
        assert_eq!(group(&pods[3]), None, "another namespace");
        assert_eq!(group(&pods[4]).as_deref(), Some("default/b-all"));
        let allowed =
            |budgets: &Budgets, group: &str| budgets.by_group()[group].allowed_disruptions();
        assert_eq!(allowed(&budgets, "default/a-web"), 1);
        // b-all matches all 4 default instances, all ready: one above 3.
        assert_eq!(allowed(&budgets, "default/b-all"), 1);
        assert_eq!(allowed(&budgets, "default/c-none"), 0);
        assert!(!budgets.by_group().contains_key("default/d-bad"));
        budgets.evicted(pods[1]["metadata"]["uid"].as_str().unwrap_or_default());
        assert_eq!(allowed(&budgets, "default/a-web"), 0);
    }
}
