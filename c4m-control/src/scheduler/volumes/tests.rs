use std::sync::Arc;

use c4m_api::agent::{StorageCapacity, VolumeReport};
use serde_json::{Value, json};

use crate::cache::Cache;
use crate::objects::{Objects, kind, name_of};
use crate::scheduler::Scheduler;
use crate::volume_reports::VolumeReports;

const GI: u64 = 1 << 30;

/// A store with two ready nodes, `a` and `b`, classes `wait`
/// (WaitForFirstConsumer, local) and `now` (Immediate), and its cache.
async fn cluster() -> (
    tempfile::TempDir,
    Objects,
    Arc<Cache>,
    tokio_util::sync::CancellationToken,
) {
    let (dir, store, objects) = crate::test_support::store_with_default_namespace().await;
    for name in ["a", "b"] {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                "annotations": {c4m_core::annotations::DRIVERS: "process=1"}},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"},
                "conditions": [{"type": "Ready", "status": "True"}]}});
        objects.create(kind("nodes"), "", node).await.unwrap();
    }
    for (name, mode) in [("wait", "WaitForFirstConsumer"), ("now", "Immediate")] {
        let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "c4m.io/local",
            "volumeBindingMode": mode});
        objects
            .create(kind("storageclasses"), "", class)
            .await
            .unwrap();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cache = Cache::start(store, shutdown.clone()).await.unwrap();
    (dir, objects, cache, shutdown)
}

fn claim(name: &str, class: &str, storage: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage}}}})
}

fn pod_using(name: &str, volumes: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"volumes": volumes, "containers": [{"name": "c", "image": "x"}]}})
}

/// Local free space per node.
fn reports(free: &[(&str, u64)]) -> Arc<VolumeReports> {
    let reports = Arc::new(VolumeReports::default());
    for (node, free_bytes) in free {
        reports.record(VolumeReport {
            node_name: node.to_string(),
            capacity: vec![StorageCapacity {
                driver: "c4m.io/local".into(),
                free_bytes: *free_bytes,
                total_bytes: 10 * GI,
            }],
            ..VolumeReport::default()
        });
    }
    reports
}

async fn create(objects: &Objects, plural: &str, object: Value) {
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    objects
        .create(kind(plural), &namespace, object)
        .await
        .unwrap();
}

/// Creates the pod `name` using the claim `claim`.
async fn create_user(objects: &Objects, name: &str, claim: &str) {
    let volumes = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    create(objects, "pods", pod_using(name, volumes)).await;
}

/// One scheduling cycle with `reports`; the pod `name` afterwards.
async fn schedule(
    objects: &Objects,
    cache: &Cache,
    reports: Arc<VolumeReports>,
    name: &str,
) -> Arc<Value> {
    let revision = objects.store().current_revision().await.unwrap();
    cache.wait_for(revision).await;
    let mut scheduler = Scheduler::default().with_volume_reports(reports);
    if let Some(revision) = scheduler.reconcile(objects, cache).await.unwrap() {
        cache.wait_for(revision).await;
    }
    cache.get(kind("pods"), "default", name).unwrap()
}

fn scheduled_message(pod: &Value) -> String {
    crate::pods::condition(pod, "PodScheduled").map_or(String::new(), |c| {
        c["message"].as_str().unwrap_or_default().to_string()
    })
}

#[tokio::test]
async fn a_claim_to_provision_goes_to_a_node_with_room_named_in_the_bind() {
    let (_dir, objects, cache, shutdown) = cluster().await;
    create(
        &objects,
        "persistentvolumeclaims",
        claim("data", "wait", "1Gi"),
    )
    .await;
    create_user(&objects, "db", "data").await;
    // No node has reported room yet: the pod waits.
    let pod = schedule(&objects, &cache, reports(&[]), "db").await;
    assert_eq!(crate::pods::node_name(&pod), None);
    assert_eq!(
        scheduled_message(&pod),
        "0/2 nodes are available: 2 node(s) did not have enough free storage."
    );
    // a has too little, b enough.
    let pod = schedule(
        &objects,
        &cache,
        reports(&[("a", GI / 2), ("b", 2 * GI)]),
        "db",
    )
    .await;
    assert_eq!(crate::pods::node_name(&pod), Some("b"));
    let claim = cache
        .get(kind("persistentvolumeclaims"), "default", "data")
        .unwrap();
    assert_eq!(
        claim["metadata"]["annotations"][c4m_core::volumes::SELECTED_NODE],
        "b"
    );
    assert_eq!(
        claim["metadata"]["resourceVersion"], pod["metadata"]["resourceVersion"],
        "the claim is selected in the bind's transaction"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_claim_selected_for_a_node_keeps_the_pod_there() {
    let (_dir, objects, cache, shutdown) = cluster().await;
    let mut selected = claim("data", "wait", "1Gi");
    selected["metadata"]["annotations"] = json!({c4m_core::volumes::SELECTED_NODE: "a"});
    create(&objects, "persistentvolumeclaims", selected).await;
    create_user(&objects, "db", "data").await;
    let pod = schedule(&objects, &cache, reports(&[("b", 5 * GI)]), "db").await;
    assert_eq!(crate::pods::node_name(&pod), Some("a"));
    shutdown.cancel();
}

/// A local PersistentVolume `name` of 1Gi on node `node`.
fn volume_on(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "c4m.io/local", "volumeHandle": name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
}

#[tokio::test]
async fn a_bound_volume_pins_the_pod_to_its_node() {
    let (_dir, objects, cache, shutdown) = cluster().await;
    create(&objects, "persistentvolumes", volume_on("pvc-1", "b")).await;
    let mut bound = claim("data", "wait", "1Gi");
    bound["spec"]["volumeName"] = json!("pvc-1");
    create(&objects, "persistentvolumeclaims", bound).await;
    create_user(&objects, "db", "data").await;
    let pod = schedule(&objects, &cache, reports(&[]), "db").await;
    assert_eq!(crate::pods::node_name(&pod), Some("b"));
    // Another pod of the claim that cannot go to b (its selector) is told why.
    let mut elsewhere = pod_using(
        "other",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]),
    );
    elsewhere["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "a"});
    create(&objects, "pods", elsewhere).await;
    let pod = schedule(&objects, &cache, reports(&[]), "other").await;
    assert_eq!(crate::pods::node_name(&pod), None);
    assert_eq!(
        scheduled_message(&pod),
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had volume node affinity conflict."
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_pod_whose_volume_node_is_cordoned_waits_for_it_and_says_why() {
    let (_dir, objects, cache, shutdown) = cluster().await;
    create(&objects, "persistentvolumes", volume_on("pvc-1", "b")).await;
    let mut bound = claim("data", "wait", "1Gi");
    bound["spec"]["volumeName"] = json!("pvc-1");
    create(&objects, "persistentvolumeclaims", bound).await;
    let cordon = |unschedulable: bool| {
        objects.update_with(kind("nodes"), "", "b", move |node| {
            node["spec"]["unschedulable"] = json!(unschedulable);
            true
        })
    };
    cordon(true).await.unwrap();
    create_user(&objects, "db", "data").await;
    // a is free, but has no copy of the data: the pod waits for b.
    let pod = schedule(&objects, &cache, reports(&[]), "db").await;
    assert_eq!(crate::pods::node_name(&pod), None);
    assert_eq!(
        scheduled_message(&pod),
        "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unschedulable: }, \
         1 node(s) had volume node affinity conflict."
    );
    cordon(false).await.unwrap();
    let pod = schedule(&objects, &cache, reports(&[]), "db").await;
    assert_eq!(crate::pods::node_name(&pod), Some("b"));
    shutdown.cancel();
}

#[tokio::test]
async fn missing_and_immediate_unbound_claims_keep_the_pod_pending() {
    let (_dir, objects, cache, shutdown) = cluster().await;
    let uses =
        |claim: &str| json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    create(&objects, "pods", pod_using("lost", uses("nothing"))).await;
    create(
        &objects,
        "persistentvolumeclaims",
        claim("soon", "now", "1Gi"),
    )
    .await;
    create(&objects, "pods", pod_using("early", uses("soon"))).await;
    create(
        &objects,
        "pods",
        pod_using(
            "scratch",
            json!([{"name": "tmp", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]),
        ),
    )
    .await;
    let big = reports(&[("a", 5 * GI), ("b", 5 * GI)]);
    let lost = schedule(&objects, &cache, Arc::clone(&big), "lost").await;
    assert_eq!(
        scheduled_message(&lost),
        "persistentvolumeclaim \"nothing\" not found"
    );
    let early = cache.get(kind("pods"), "default", "early").unwrap();
    assert_eq!(
        scheduled_message(&early),
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    );
    let scratch = cache.get(kind("pods"), "default", "scratch").unwrap();
    assert_eq!(
        scheduled_message(&scratch),
        "waiting for ephemeral volume controller to create the persistentvolumeclaim \"scratch-tmp\""
    );
    for pod in [&lost, &early, &scratch] {
        assert_eq!(crate::pods::node_name(pod), None, "{}", name_of(pod));
    }
    shutdown.cancel();
}

#[tokio::test]
async fn local_space_promised_to_selected_claims_is_not_given_twice() {
    let (_dir, objects, cache, shutdown) = cluster().await;
    // a has room for one of the two claims, b for none.
    let free = reports(&[("a", 3 * GI / 2), ("b", GI / 2)]);
    for (claim_name, pod) in [("one", "p1"), ("two", "p2")] {
        create(
            &objects,
            "persistentvolumeclaims",
            claim(claim_name, "wait", "1Gi"),
        )
        .await;
        create_user(&objects, pod, claim_name).await;
    }
    // In one cycle: the first placed takes a's room from the second.
    schedule(&objects, &cache, Arc::clone(&free), "p1").await;
    let pods = ["p1", "p2"].map(|name| cache.get(kind("pods"), "default", name).unwrap());
    let placed: Vec<_> = pods
        .iter()
        .filter_map(|pod| crate::pods::node_name(pod))
        .collect();
    assert_eq!(placed, ["a"], "exactly one goes to a");
    let waiting = pods
        .iter()
        .find(|pod| crate::pods::node_name(pod).is_none())
        .unwrap();
    assert_eq!(
        scheduled_message(waiting),
        "0/2 nodes are available: 2 node(s) did not have enough free storage."
    );
    // A later cycle, before a's report shows the selected claim's volume:
    // its bytes are still promised, so the other pod still waits.
    let again = schedule(&objects, &cache, free, name_of(waiting)).await;
    assert_eq!(crate::pods::node_name(&again), None);
    shutdown.cancel();
}
