use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::slices::{MANAGED_BY, MANAGER, MAX_ENDPOINTS, SERVICE_NAME};
use crate::cache::{Cache, Changes};
use crate::objects::{Objects, kind};

/// A store with the `default` namespace, its cache, and what stops it.
async fn setup() -> (tempfile::TempDir, Objects, Arc<Cache>, CancellationToken) {
    let (dir, store, objects) = crate::test_support::store_with_default_namespace().await;
    let shutdown = CancellationToken::new();
    let cache = Cache::start(store, shutdown.clone()).await.unwrap();
    (dir, objects, cache, shutdown)
}

/// Creates `value` (of `plural`, in `default`) and waits for the cache to
/// see it.
async fn create_seen(objects: &Objects, cache: &Cache, plural: &str, value: Value) -> Value {
    let created = objects
        .create(kind(plural), "default", value)
        .await
        .unwrap();
    let revision = crate::objects::revision_of(&created).unwrap();
    cache.wait_for(revision).await;
    created
}

/// Changes the object `name` (of `plural`, in `default`) with `change` and
/// waits for the cache to see it.
async fn update_seen(
    objects: &Objects,
    cache: &Cache,
    plural: &str,
    name: &str,
    mut change: impl FnMut(&mut Value),
) {
    let revision = objects
        .update_with(kind(plural), "default", name, |object| {
            change(object);
            true
        })
        .await
        .unwrap()
        .unwrap();
    cache.wait_for(revision).await;
}

/// Reconciles everything and waits for the cache to see the writes.
async fn reconcile(objects: &Objects, cache: &Cache) {
    let everything = Changes {
        everything: true,
        changed: BTreeMap::new(),
    };
    if let Some(revision) = super::reconcile(objects, cache, &everything).await.unwrap() {
        cache.wait_for(revision).await;
    }
}

/// A Running instance labelled `app: web` at `ip`, with a container port
/// named `http` (8080) and one `dns` (5353/UDP), `ready` or not.
fn pod(name: &str, ip: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "web:1",
            "ports": [{"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"},
            {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}})
}

/// Deletes the instances `web-NNN` numbered in `range`.
async fn delete_pods(objects: &Objects, cache: &Cache, range: std::ops::Range<usize>) {
    let mut last = 0;
    for i in range {
        last = objects
            .delete(kind("pods"), "default", &format!("web-{i:03}"))
            .await
            .unwrap()
            .1;
    }
    cache.wait_for(last).await;
}

/// The managed slices of `web`, by name.
fn slices(cache: &Cache) -> BTreeMap<String, Value> {
    cache
        .list(kind("endpointslices"), Some("default"))
        .into_iter()
        .filter(|s| s["metadata"]["labels"][SERVICE_NAME] == "web")
        .map(|s| (crate::objects::name_of(&s).to_string(), (*s).clone()))
        .collect()
}

/// Endpoints and EndpointSlices come from one computation: ready,
/// not-ready and terminating instances with their conditions, named and
/// numeric target ports, TCP and UDP, the node, the instance, and the
/// hostname of an instance whose subdomain is the service.
#[tokio::test]
async fn a_service_gets_endpoint_slices_beside_its_endpoints() {
    let (_dir, objects, cache, shutdown) = setup().await;
    let created = create_seen(&objects, &cache, "services", service()).await;
    let mut ready = pod("web-a", "10.1.0.2", true);
    ready["spec"]["hostname"] = json!("a");
    ready["spec"]["subdomain"] = json!("web");
    let mut other_subdomain = pod("web-b", "10.1.0.3", false);
    other_subdomain["spec"]["hostname"] = json!("b");
    other_subdomain["spec"]["subdomain"] = json!("elsewhere");
    for pod in [ready, other_subdomain, pod("web-c", "10.1.0.4", true)] {
        create_seen(&objects, &cache, "pods", pod).await;
    }
    let mut elsewhere = pod("db", "10.1.0.5", true);
    elsewhere["metadata"]["labels"] = json!({"app": "db"});
    create_seen(&objects, &cache, "pods", elsewhere).await;
    // web-c is being deleted: serving still, but no longer ready.
    update_seen(&objects, &cache, "pods", "web-c", |pod| {
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    })
    .await;

    reconcile(&objects, &cache).await;

    let found = slices(&cache);
    assert_eq!(found.len(), 1, "{found:#?}");
    let (name, slice) = found.into_iter().next().unwrap();
    assert!(name.starts_with("web-"), "{name}");
    let uid =
        |name: &str| cache.get(kind("pods"), "default", name).unwrap()["metadata"]["uid"].clone();
    let target =
        |name: &str| json!({"kind": "Pod", "namespace": "default", "name": name, "uid": uid(name)});
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"],
        json!({SERVICE_NAME: "web", MANAGED_BY: MANAGER})
    );
    assert_eq!(
        slice["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Service", "name": "web",
            "uid": created["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"},
            {"name": "dns", "port": 5353, "protocol": "UDP"}])
    );
    assert_eq!(
        slice["endpoints"],
        json!([
            {"addresses": ["10.1.0.2"], "hostname": "a", "nodeName": "n1", "targetRef": target("web-a"),
                "conditions": {"ready": true, "serving": true, "terminating": false}},
            {"addresses": ["10.1.0.3"], "nodeName": "n1", "targetRef": target("web-b"),
                "conditions": {"ready": false, "serving": false, "terminating": false}},
            {"addresses": ["10.1.0.4"], "nodeName": "n1", "targetRef": target("web-c"),
                "conditions": {"ready": false, "serving": true, "terminating": true}},
        ])
    );
    // The Endpoints say the same: one ready address, two not ready.
    let endpoints = cache.get(kind("endpoints"), "default", "web").unwrap();
    let subset = &endpoints["subsets"][0];
    assert_eq!(subset["ports"], slice["ports"]);
    assert_eq!(subset["addresses"][0]["ip"], "10.1.0.2");
    let not_ready: Vec<&Value> = subset["notReadyAddresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["ip"])
        .collect();
    assert_eq!(not_ready, [&json!("10.1.0.3"), &json!("10.1.0.4")]);

    // Published whether ready or not: every endpoint is ready.
    update_seen(&objects, &cache, "services", "web", |service| {
        service["spec"]["publishNotReadyAddresses"] = json!(true);
    })
    .await;
    reconcile(&objects, &cache).await;
    let published = slices(&cache).into_values().next().unwrap();
    let ready: Vec<&Value> = published["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["conditions"]["ready"])
        .collect();
    assert_eq!(ready, [&json!(true); 3]);

    // Nothing changed: nothing written.
    let everything = Changes {
        everything: true,
        changed: BTreeMap::new(),
    };
    assert_eq!(
        super::reconcile(&objects, &cache, &everything)
            .await
            .unwrap(),
        None
    );
    shutdown.cancel();
}

/// At most 100 endpoints a slice; slices no longer wanted are deleted, and
/// a service without endpoints keeps one empty slice; a deleted service
/// loses its slices.
#[tokio::test]
async fn slices_hold_at_most_a_hundred_endpoints_and_stale_ones_go() {
    let (_dir, objects, cache, shutdown) = setup().await;
    create_seen(&objects, &cache, "services", service()).await;
    let pods: Vec<_> = (0..250)
        .map(|i| {
            (
                kind("pods"),
                pod(
                    &format!("web-{i:03}"),
                    &format!("10.1.{}.{}", i / 200, i % 200 + 2),
                    true,
                ),
            )
        })
        .collect();
    let revision = objects.create_many(pods).await.unwrap();
    cache.wait_for(revision).await;
    reconcile(&objects, &cache).await;
    let sizes: Vec<usize> = slices(&cache)
        .values()
        .map(|s| s["endpoints"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= MAX_ENDPOINTS), "{sizes:?}");

    delete_pods(&objects, &cache, 50..250).await;
    reconcile(&objects, &cache).await;
    let left = slices(&cache);
    assert_eq!(left.len(), 1, "{left:#?}");
    let only = left.values().next().unwrap();
    assert_eq!(only["endpoints"].as_array().unwrap().len(), 50);

    delete_pods(&objects, &cache, 0..50).await;
    reconcile(&objects, &cache).await;
    let empty = slices(&cache);
    assert_eq!(empty.len(), 1, "{empty:#?}");
    let placeholder = empty.values().next().unwrap();
    assert_eq!(placeholder["endpoints"], json!([]));
    assert_eq!(placeholder["ports"], json!([]));

    let (_, revision) = objects
        .delete(kind("services"), "default", "web")
        .await
        .unwrap();
    cache.wait_for(revision).await;
    reconcile(&objects, &cache).await;
    assert!(slices(&cache).is_empty());
    assert!(cache.get(kind("endpoints"), "default", "web").is_none());
    shutdown.cancel();
}

/// A Microservice's own service gets slices too, owned by it.
#[tokio::test]
async fn a_microservice_gets_endpoint_slices() {
    let (_dir, objects, cache, shutdown) = setup().await;
    let microservice = json!({"apiVersion": "c4m.io/v1", "kind": "Microservice",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "image": "web:1", "ports": [{"name": "http", "containerPort": 8080}]}});
    let created = create_seen(&objects, &cache, "microservices", microservice).await;
    let mut instance = pod("web-x1", "10.1.0.9", true);
    instance["metadata"]["labels"] = json!({c4m_core::labels::MICROSERVICE: "web"});
    instance["metadata"]["ownerReferences"] = json!([{"apiVersion": "c4m.io/v1",
        "kind": "Microservice", "name": "web", "uid": created["metadata"]["uid"], "controller": true}]);
    // The agent bound container port 8080 to node port 31000.
    instance["metadata"]["annotations"] = json!({c4m_core::annotations::PORTS:
        r#"[{"name":"http","containerPort":8080,"hostPort":31000}]"#});
    create_seen(&objects, &cache, "pods", instance).await;
    reconcile(&objects, &cache).await;
    let slices = slices(&cache);
    let slice = slices.values().next().expect("a slice");
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["kind"],
        "Microservice"
    );
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 31000, "protocol": "TCP"}])
    );
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.1.0.9"]));
    shutdown.cancel();
}

/// The Endpoints users write for a Service without selector are mirrored
/// into slices (ready or not as listed), unless they opt out.
#[tokio::test]
async fn written_endpoints_of_a_service_without_selector_are_mirrored() {
    let (_dir, objects, cache, shutdown) = setup().await;
    let external = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "pg", "port": 5432}]}});
    create_seen(&objects, &cache, "services", external).await;
    let written = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "notReadyAddresses": [{"ip": "192.0.2.11"}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]});
    create_seen(&objects, &cache, "endpoints", written).await;
    reconcile(&objects, &cache).await;
    let found = slices(&cache);
    let slice = found.values().next().expect("a mirrored slice");
    assert_eq!(
        slice["endpoints"],
        json!([{"addresses": ["192.0.2.10"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            {"addresses": ["192.0.2.11"], "conditions": {"ready": false, "serving": false, "terminating": false}}])
    );
    assert_eq!(
        slice["ports"],
        json!([{"name": "pg", "port": 5432, "protocol": "TCP"}])
    );
    // The user's Endpoints stay as written.
    let endpoints = cache.get(kind("endpoints"), "default", "web").unwrap();
    assert!(endpoints["metadata"]["labels"].is_null(), "{endpoints}");

    update_seen(&objects, &cache, "endpoints", "web", |endpoints| {
        endpoints["metadata"]["labels"] =
            json!({"endpointslice.kubernetes.io/skip-mirror": "true"});
    })
    .await;
    reconcile(&objects, &cache).await;
    assert!(slices(&cache).is_empty());
    shutdown.cancel();
}

/// A full pass over many Services and instances in one namespace reads
/// each instance once per batch (it was Services times instances): every
/// Service gets its one endpoint, and a pass with nothing changed writes
/// nothing. The time of each pass is printed (`--nocapture`).
#[tokio::test]
async fn a_full_pass_over_many_services() {
    let (_dir, objects, cache, shutdown) = setup().await;
    let count = 1000;
    let mut batch = Vec::new();
    for i in 0..count {
        let mut svc = service();
        svc["metadata"]["name"] = json!(format!("s{i}"));
        svc["spec"]["selector"] = json!({"app": format!("a{i}")});
        batch.push((kind("services"), svc));
        let ip = format!("10.1.{}.{}", i / 200, i % 200 + 2);
        let mut instance = pod(&format!("p{i}"), &ip, true);
        instance["metadata"]["labels"] = json!({"app": format!("a{i}"), "tier": "web"});
        batch.push((kind("pods"), instance));
    }
    let revision = objects.create_many(batch).await.unwrap();
    cache.wait_for(revision).await;
    let everything = || Changes {
        everything: true,
        changed: BTreeMap::new(),
    };
    let started = std::time::Instant::now();
    reconcile(&objects, &cache).await;
    let first = started.elapsed();
    let all = cache.list(kind("endpointslices"), Some("default"));
    assert_eq!(all.len(), count);
    assert!(
        all.iter()
            .all(|s| s["endpoints"].as_array().map(Vec::len) == Some(1)),
        "every Service selects its one instance"
    );
    let started = std::time::Instant::now();
    let written = super::reconcile(&objects, &cache, &everything())
        .await
        .unwrap();
    assert_eq!(written, None);
    eprintln!(
        "{count} Services x {count} instances: first pass {first:?}, unchanged pass {:?}",
        started.elapsed()
    );
    shutdown.cancel();
}
