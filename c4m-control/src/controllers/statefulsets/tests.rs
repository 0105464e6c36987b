use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;

fn set(spec: Value) -> Value {
    let mut set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default", "uid": "set-uid", "generation": 1},
        "spec": {
            "replicas": 3,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "redis:1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        set["spec"][key] = value.clone();
    }
    set
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

/// Everything the plan of `set` wants created, as stored (uids given),
/// and running and ready since `at(0)` when `ready`.
struct World {
    set: Value,
    pods: Vec<Value>,
    revisions: Vec<Value>,
    claims: Vec<Value>,
    now: SystemTime,
}

impl World {
    fn new(set: Value) -> World {
        World {
            set,
            pods: vec![],
            revisions: vec![],
            claims: vec![],
            now: at(100),
        }
    }

    fn plan(&self) -> SetPlan {
        let view = SetView {
            set: &self.set,
            pods: self.pods.iter().collect(),
            revisions: self.revisions.iter().collect(),
            claims: self.claims.iter().map(|c| (name_of(c), c)).collect(),
            now: self.now,
        };
        plan(&view)
    }

    /// Plans, then applies the plan as the store and the nodes would:
    /// created pods start not ready; deleted ones go at once.
    fn step(&mut self) -> SetPlan {
        let plan = self.plan();
        if let Some(revision) = &plan.revision {
            self.revisions.push(revision.clone());
        }
        for (name, references) in &plan.claim_owners {
            let claim = self.claims.iter_mut().find(|c| name_of(c) == name).unwrap();
            claim["metadata"]["ownerReferences"] = references.clone();
        }
        for claim in &plan.claims {
            let mut claim = claim.clone();
            claim["metadata"]["uid"] = json!(format!("uid-{}", name_of(&claim)));
            self.claims.push(claim);
        }
        for pod in &plan.create {
            let mut pod = pod.clone();
            pod["metadata"]["uid"] = json!(format!("uid-{}", name_of(&pod)));
            self.pods.push(pod);
        }
        self.pods
            .retain(|p| !plan.delete.contains(&name_of(p).to_string()));
        self.revisions
            .retain(|r| !plan.prune.contains(&name_of(r).to_string()));
        self.set["status"] = plan.status.clone();
        plan
    }

    fn ready(&mut self, name: &str, ready: bool) {
        let pod = self.pods.iter_mut().find(|p| name_of(p) == name).unwrap();
        let status = if ready { "True" } else { "False" };
        pod["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready",
            "status": status, "lastTransitionTime": c4m_core::format_rfc3339(at(0))}]});
    }

    fn all_ready(&mut self) {
        let names: Vec<String> = self.pods.iter().map(|p| name_of(p).to_string()).collect();
        for name in names {
            self.ready(&name, true);
        }
    }

    fn pod_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.pods.iter().map(name_of).collect();
        names.sort();
        names
    }

    fn pod(&self, name: &str) -> &Value {
        self.pods.iter().find(|p| name_of(p) == name).unwrap()
    }

    fn claim(&self, name: &str) -> &Value {
        self.claims.iter().find(|c| name_of(c) == name).unwrap()
    }
}

fn names(values: &[Value]) -> Vec<&str> {
    values.iter().map(name_of).collect()
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_with_its_claim_first() {
    let mut world = World::new(set(json!({})));
    let plan = world.step();
    assert_eq!(names(&plan.claims), ["data-web-0"]);
    assert_eq!(names(&plan.create), ["web-0"]);
    assert!(plan.revision.is_some(), "the first revision is recorded");
    // web-0 not ready yet: nothing more.
    let plan = world.step();
    assert!(plan.create.is_empty() && plan.claims.is_empty());
    world.ready("web-0", false);
    assert!(
        world.step().create.is_empty(),
        "Running but not Ready waits"
    );
    world.ready("web-0", true);
    let plan = world.step();
    assert_eq!(names(&plan.claims), ["data-web-1"]);
    assert_eq!(names(&plan.create), ["web-1"]);
    world.ready("web-1", true);
    assert_eq!(names(&world.step().create), ["web-2"]);
    world.ready("web-2", true);
    let plan = world.step();
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    let revision = name_of(&world.revisions[0]).to_string();
    assert_eq!(
        plan.status,
        json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
            "currentReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
            "currentRevision": revision, "updateRevision": revision, "collisionCount": 0})
    );
}

#[test]
fn a_pod_has_its_stable_identity_and_claim() {
    let mut world = World::new(set(json!({})));
    world.step();
    let pod = world.pod("web-0");
    let revision = name_of(&world.revisions[0]);
    assert!(revision.starts_with("web-"));
    assert_eq!(pod["spec"]["hostname"], "web-0");
    assert_eq!(pod["spec"]["subdomain"], "web");
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "web", "statefulset.kubernetes.io/pod-name": "web-0",
            "apps.kubernetes.io/pod-index": "0", "controller-revision-hash": revision})
    );
    assert_eq!(
        pod["spec"]["volumes"],
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}])
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    let claim = world.claim("data-web-0");
    assert_eq!(claim["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(
        claim["metadata"]["ownerReferences"].is_null(),
        "Retain (the default) leaves the claim unowned"
    );
    let revision = &world.revisions[0];
    assert_eq!(revision["revision"], 1);
    assert_eq!(revision["data"]["spec"]["template"]["$patch"], "replace");
    assert_eq!(revision["metadata"]["ownerReferences"][0]["uid"], "set-uid");
}

#[test]
fn parallel_creates_and_deletes_all_at_once() {
    let mut world = World::new(set(json!({"podManagementPolicy": "Parallel"})));
    let plan = world.step();
    assert_eq!(names(&plan.create), ["web-0", "web-1", "web-2"]);
    assert_eq!(
        names(&plan.claims),
        ["data-web-0", "data-web-1", "data-web-2"]
    );
    world.set["spec"]["replicas"] = json!(1);
    let plan = world.step();
    assert_eq!(plan.delete, ["web-2", "web-1"]);
    assert_eq!(world.pod_names(), ["web-0"]);
    assert_eq!(world.claims.len(), 3, "claims stay when pods go");
}

#[test]
fn ordered_ready_scales_down_from_the_highest_ordinal_one_at_a_time() {
    let mut world = World::new(set(json!({})));
    for _ in 0..3 {
        world.step();
        world.all_ready();
    }
    assert_eq!(world.pod_names(), ["web-0", "web-1", "web-2"]);
    world.set["spec"]["replicas"] = json!(1);
    let plan = world.step();
    assert_eq!(plan.delete, ["web-2"]);
    assert_eq!(world.step().delete, ["web-1"]);
    assert!(world.step().delete.is_empty());
    assert_eq!(world.claims.len(), 3);
    // An unhealthy pod stops the scale down.
    world.set["spec"]["replicas"] = json!(3);
    world.step();
    world.all_ready();
    world.step();
    world.all_ready();
    world.set["spec"]["replicas"] = json!(1);
    world.ready("web-0", false);
    assert!(world.step().delete.is_empty(), "web-0 is not ready");
}

#[test]
fn retention_policy_sets_the_owners_of_claims() {
    let mut world = World::new(set(
        json!({"replicas": 2, "podManagementPolicy": "Parallel",
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}),
    ));
    world.step();
    // Claims are created without owners; the next pass adds them.
    let plan = world.step();
    assert_eq!(plan.claim_owners.len(), 2);
    assert_eq!(
        world.claim("data-web-0")["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "set-uid"}])
    );
    // Scaling down: the condemned pod becomes the owner of its claim in
    // the pass that deletes it.
    world.set["spec"]["replicas"] = json!(1);
    let plan = world.step();
    assert_eq!(plan.delete, ["web-1"]);
    assert_eq!(
        world.claim("data-web-1")["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "uid-web-1"}]),
        "the pod alone: the set would keep it"
    );
    // The pod gone, its claim is left to the collector.
    assert!(world.step().claim_owners.is_empty());
    // Retain both: the set's references go, others stay.
    world.set["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
    let foreign = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "x"});
    world.claims[0]["metadata"]["ownerReferences"]
        .as_array_mut()
        .unwrap()
        .push(foreign.clone());
    world.step();
    assert_eq!(
        world.claim("data-web-0")["metadata"]["ownerReferences"],
        json!([foreign])
    );
    assert!(world.step().claim_owners.is_empty(), "settled");
}

#[test]
fn a_rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
    let mut world = World::new(set(json!({})));
    for _ in 0..3 {
        world.step();
        world.all_ready();
    }
    world.step();
    let old = world.set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    world.set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("redis:2");
    world.set["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
    world.set["metadata"]["generation"] = json!(2);
    let plan = world.step();
    assert!(plan.revision.is_some());
    assert_eq!(plan.delete, ["web-2"]);
    let new = plan.status["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(plan.status["currentRevision"], old.as_str());
    // web-2 comes back at the new revision; web-1 waits until it is ready.
    let plan = world.step();
    assert_eq!(names(&plan.create), ["web-2"]);
    assert_eq!(
        world.pod("web-2")["spec"]["containers"][0]["image"],
        "redis:2"
    );
    assert!(world.step().delete.is_empty(), "web-2 is not ready yet");
    world.ready("web-2", true);
    let plan = world.step();
    assert_eq!(plan.delete, ["web-1"]);
    world.step();
    world.ready("web-1", true);
    // web-0 is below the partition: it stays at the old revision.
    let plan = world.step();
    assert!(plan.delete.is_empty() && plan.create.is_empty());
    assert_eq!(plan.status["updatedReplicas"], 2);
    assert_eq!(plan.status["currentReplicas"], 1);
    assert_eq!(plan.status["currentRevision"], old.as_str());
    // A recreated web-0 keeps the old revision while the partition holds it.
    world.pods.retain(|p| name_of(p) != "web-0");
    world.step();
    assert_eq!(
        world.pod("web-0")["metadata"]["labels"][REVISION_LABEL],
        old.as_str()
    );
    world.ready("web-0", true);
    // Partition 0 finishes the rollout: the current revision becomes the new one.
    world.set["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
    assert_eq!(world.step().delete, ["web-0"]);
    world.step();
    world.ready("web-0", true);
    let plan = world.step();
    assert_eq!(plan.status["currentRevision"], new.as_str());
    assert_eq!(plan.status["currentReplicas"], 3);
    assert_eq!(plan.status["updatedReplicas"], 3);
    assert_eq!(plan.status["observedGeneration"], 2);
}

#[test]
fn on_delete_replaces_only_the_pods_the_user_deletes() {
    let mut world = World::new(set(
        json!({"replicas": 2, "updateStrategy": {"type": "OnDelete"}}),
    ));
    for _ in 0..2 {
        world.step();
        world.all_ready();
    }
    world.set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("redis:2");
    let plan = world.step();
    assert!(plan.delete.is_empty());
    assert_eq!(plan.status["updatedReplicas"], 0);
    world.pods.retain(|p| name_of(p) != "web-1");
    world.step();
    assert_eq!(
        world.pod("web-1")["spec"]["containers"][0]["image"],
        "redis:2"
    );
    assert_eq!(
        world.pod("web-0")["spec"]["containers"][0]["image"],
        "redis:1"
    );
}

#[test]
fn min_ready_seconds_delays_availability_and_the_next_pod() {
    let mut world = World::new(set(json!({"replicas": 2, "minReadySeconds": 150})));
    world.step();
    world.ready("web-0", true); // ready since at(0); now is at(100)
    let plan = world.step();
    assert!(plan.create.is_empty(), "web-0 is not available yet");
    assert_eq!(plan.wake_at, Some(at(150)));
    assert_eq!(plan.status["readyReplicas"], 1);
    assert_eq!(plan.status["availableReplicas"], 0);
    world.now = at(150);
    let plan = world.step();
    assert_eq!(names(&plan.create), ["web-1"]);
    assert_eq!(plan.status["availableReplicas"], 1);
}

#[test]
fn a_failed_pod_is_replaced_under_its_name() {
    let mut world = World::new(set(json!({"replicas": 1})));
    world.step();
    world.pods[0]["status"] = json!({"phase": "Failed"});
    assert_eq!(world.step().delete, ["web-0"]);
    assert_eq!(names(&world.step().create), ["web-0"]);
    assert_eq!(world.claims.len(), 1, "the claim is reused");
}

#[test]
fn a_claim_being_deleted_holds_its_pod_back() {
    let mut world = World::new(set(json!({"replicas": 1})));
    world.claims.push(
        json!({"metadata": {"name": "data-web-0", "namespace": "default",
        "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    );
    let plan = world.step();
    assert!(plan.create.is_empty() && plan.claims.is_empty());
    world.claims.clear();
    assert_eq!(names(&world.step().create), ["web-0"]);
}

#[test]
fn old_revisions_beyond_the_history_limit_are_pruned() {
    let mut world = World::new(set(json!({"replicas": 1, "revisionHistoryLimit": 1,
        "podManagementPolicy": "Parallel"})));
    for image in ["redis:1", "redis:2", "redis:3", "redis:4"] {
        world.set["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        for _ in 0..3 {
            world.step();
            world.all_ready();
        }
    }
    assert_eq!(
        world.pod("web-0")["spec"]["containers"][0]["image"],
        "redis:4"
    );
    let mut numbers: Vec<i64> = world
        .revisions
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [3, 4],
        "one unused revision kept besides the one in use"
    );
}

#[test]
fn a_revision_name_taken_by_another_template_is_a_collision() {
    let mut world = World::new(set(json!({"replicas": 1})));
    let name = revision_name("web", &world.set["spec"]["template"], 0);
    world.revisions.push(json!({"metadata": {"name": name},
        "data": revision_data(&json!({"spec": {"containers": [{"name": "x", "image": "y"}]}})),
        "revision": 1}));
    let plan = world.step();
    assert_eq!(plan.status["collisionCount"], 1);
    let created = plan.revision.unwrap();
    assert_ne!(name_of(&created), name);
    assert_eq!(created["revision"], 2);
}

#[test]
fn ordinals_start_where_the_set_says() {
    let world = World::new(set(json!({"replicas": 2, "ordinals": {"start": 5},
        "podManagementPolicy": "Parallel"})));
    assert_eq!(names(&world.plan().create), ["web-5", "web-6"]);
    assert_eq!(ordinal_of("web", "web-05"), None);
    assert_eq!(ordinal_of("web", "web-x"), None);
    assert_eq!(ordinal_of("web", "webby-1"), None);
}

#[test]
fn a_new_set_gets_kubernetes_defaults_and_keeps_its_own() {
    let mut set = json!({"spec": {"replicas": 3, "updateStrategy": {"type": "OnDelete"}}});
    default_new_stateful_set(&mut set);
    assert_eq!(
        set["spec"],
        json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"},
            "podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"}})
    );
    let mut set =
        json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}});
    default_new_stateful_set(&mut set);
    assert_eq!(
        set["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(set["spec"]["replicas"], 1);
    assert_eq!(
        set["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Delete"})
    );
}

#[test]
fn an_update_may_change_only_what_kubernetes_lets_change() {
    let current = set(json!({}));
    let mut scaled = current.clone();
    scaled["spec"]["replicas"] = json!(5);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("redis:2");
    scaled["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    assert_eq!(check_update(&current, &scaled), Ok(()));
    for (field, value) in [
        ("serviceName", json!("other")),
        ("selector", json!({"matchLabels": {"app": "db"}})),
        ("volumeClaimTemplates", json!([])),
        ("podManagementPolicy", json!("Parallel")),
    ] {
        let mut changed = current.clone();
        changed["spec"][field] = value;
        let error = check_update(&current, &changed).unwrap_err();
        assert!(
            error.starts_with("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template'"),
            "{field}: {error}"
        );
    }
}
