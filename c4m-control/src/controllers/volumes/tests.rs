//! The volume controllers over a real store and cache, with hand-made node
//! reports (no agent).

use std::sync::Arc;
use std::time::Duration;

use c4m_api::agent::{SnapshotState, StorageCapacity, VolumeReport, VolumeState};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::admission::{PV_PROTECTION, PVC_PROTECTION};
use crate::cache::Cache;
use crate::objects::{Objects, Part, kind};
use crate::volume_reports::VolumeReports;
use c4m_core::volumes::PROVISIONER_FINALIZER;

const GI: u64 = 1 << 30;

struct Harness {
    _dir: tempfile::TempDir,
    objects: Objects,
    cache: Arc<Cache>,
    reports: VolumeReports,
    repeats: super::Repeats,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn new() -> Harness {
        let (dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        let shutdown = CancellationToken::new();
        let (events, writer) = crate::events::events(
            Arc::clone(&store),
            crate::events::EventsConfig {
                flush: Duration::from_millis(10),
                ..Default::default()
            },
        );
        tokio::spawn(writer.run(shutdown.clone()));
        let objects = objects.with_events(events);
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        Harness {
            _dir: dir,
            objects,
            cache,
            reports: VolumeReports::default(),
            repeats: super::Repeats::default(),
            shutdown,
        }
    }

    async fn create(&self, plural: &str, value: Value) -> Value {
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let created = self
            .objects
            .create(kind(plural), &namespace, value)
            .await
            .unwrap();
        self.cache
            .wait_for(crate::objects::revision_of(&created).unwrap())
            .await;
        created
    }

    async fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let (_, revision) = self
            .objects
            .delete(kind(plural), namespace, name)
            .await
            .unwrap();
        self.cache.wait_for(revision).await;
    }

    fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.cache.get(kind(plural), namespace, name)
    }

    /// Reconciles until a pass writes nothing.
    async fn settle(&self) {
        for _ in 0..20 {
            match super::reconcile(&self.objects, &self.cache, &self.reports, &self.repeats)
                .await
                .unwrap()
            {
                Some(revision) => self.cache.wait_for(revision).await,
                None => return,
            }
        }
        panic!("the volume controllers never settled");
    }

    async fn node(&self, name: &str) {
        self.create(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await;
    }

    /// A claim `name` of a new `Immediate` class `class_name`, provisioned
    /// on the new node `a` and bound; its volume handle.
    async fn provisioned(&self, name: &str, class_name: &str, expandable: bool) -> String {
        self.create("storageclasses", class(class_name, "Immediate", expandable))
            .await;
        self.provisioned_on("a", name, class_name).await
    }

    /// A claim `name` of the `Immediate` class `class_name`, provisioned on
    /// the new node `node` (its only one), which reports it, and bound; its
    /// volume handle.
    async fn provisioned_on(&self, node: &str, name: &str, class_name: &str) -> String {
        self.node(node).await;
        let created = self
            .create(
                "persistentvolumeclaims",
                new_claim(name, "1Gi", Some(class_name)),
            )
            .await;
        let handle = format!("pvc-{}", uid(&created));
        self.report(node, 10 * GI, vec![local_state(&handle, GI)], vec![]);
        self.settle().await;
        assert_eq!(
            self.get("persistentvolumeclaims", "default", name).unwrap()["status"]["phase"],
            "Bound"
        );
        handle
    }

    /// Ready nodes, each reporting its free bytes for the local driver and
    /// no volume.
    async fn nodes_with_room(&self, nodes: &[(&str, u64)]) {
        for (node, free) in nodes {
            self.node(node).await;
            self.report(node, *free, vec![], vec![]);
        }
    }

    /// Reports `node` with `free` bytes for the local driver and `volumes`.
    fn report(
        &self,
        node: &str,
        free: u64,
        volumes: Vec<VolumeState>,
        snapshots: Vec<SnapshotState>,
    ) {
        self.reports.record(VolumeReport {
            node_name: node.into(),
            capacity: vec![StorageCapacity {
                driver: c4m_core::volumes::LOCAL_DRIVER.into(),
                free_bytes: free,
                total_bytes: 100 * GI,
            }],
            volumes,
            snapshots,
        });
    }

    /// The Events of `name` with `reason`, once the writer stored them.
    async fn events(&self, name: &str, reason: &str) -> Vec<String> {
        for _ in 0..200 {
            let found: Vec<String> = self
                .cache
                .list(kind("events"), Some("default"))
                .iter()
                .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
                .filter_map(|e| e["message"].as_str().map(String::from))
                .collect();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Vec::new()
    }
}

fn new_claim(name: &str, size: &str, class: Option<&str>) -> Value {
    let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}});
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    claim
}

fn class(name: &str, mode: &str, expandable: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": c4m_core::volumes::LOCAL_DRIVER,
        "volumeBindingMode": mode, "allowVolumeExpansion": expandable})
}

fn nfs_volume(name: &str, size: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce", "ReadWriteMany"], "capacity": {"storage": size},
            "nfs": {"server": "10.0.0.1", "path": format!("/exports/{name}")}}})
}

fn local_state(handle: &str, size: u64) -> VolumeState {
    VolumeState {
        driver: c4m_core::volumes::LOCAL_DRIVER.into(),
        handle: handle.into(),
        size_bytes: size,
        ..VolumeState::default()
    }
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn new_objects_get_kubernetes_defaults_and_protection() {
    let h = Harness::new().await;
    super::admission::ensure_default_classes(&h.objects)
        .await
        .unwrap();
    let local = h
        .objects
        .get(kind("storageclasses"), "", "local")
        .await
        .unwrap();
    assert_eq!(local["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(local["reclaimPolicy"], "Delete");
    assert_eq!(
        local["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    h.objects
        .get(kind("volumesnapshotclasses"), "", "local")
        .await
        .unwrap();
    // Deleted by the user, it is not made again while another class exists.
    h.create("storageclasses", class("other", "Immediate", false))
        .await;
    h.delete("storageclasses", "", "local").await;
    super::admission::ensure_default_classes(&h.objects)
        .await
        .unwrap();
    assert!(
        h.objects
            .get(kind("storageclasses"), "", "local")
            .await
            .is_err()
    );

    let other = h
        .objects
        .get(kind("storageclasses"), "", "other")
        .await
        .unwrap();
    assert_eq!(other["reclaimPolicy"], "Delete", "Kubernetes' default");

    let defaulted = h
        .create("persistentvolumeclaims", new_claim("a", "1Gi", None))
        .await;
    assert!(
        defaulted["spec"]["storageClassName"].is_null(),
        "no default class left"
    );
    assert_eq!(defaulted["metadata"]["finalizers"], json!([PVC_PROTECTION]));
    assert_eq!(defaulted["status"]["phase"], "Pending");
    let mut default = class("fast", "Immediate", false);
    default["metadata"]["annotations"] =
        json!({"storageclass.kubernetes.io/is-default-class": "true"});
    h.create("storageclasses", default).await;
    let defaulted = h
        .create("persistentvolumeclaims", new_claim("b", "1Gi", None))
        .await;
    assert_eq!(defaulted["spec"]["storageClassName"], "fast");
    let none = h
        .create("persistentvolumeclaims", new_claim("c", "1Gi", Some("")))
        .await;
    assert_eq!(
        none["spec"]["storageClassName"], "",
        "\"\" asks for no class"
    );

    let mut restore = new_claim("r", "1Gi", Some(""));
    let source = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
        "name": "snap"});
    restore["spec"]["dataSourceRef"] = source.clone();
    let restore = h.create("persistentvolumeclaims", restore).await;
    assert_eq!(
        restore["spec"]["dataSource"], source,
        "mirrored, as Kubernetes does"
    );

    let pv = h
        .create("persistentvolumes", nfs_volume("nfs-1", "1Gi"))
        .await;
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["metadata"]["finalizers"], json!([PV_PROTECTION]));
}

#[tokio::test]
async fn updates_keep_what_kubernetes_keeps_immutable() {
    let h = Harness::new().await;
    h.create("storageclasses", class("fixed", "Immediate", false))
        .await;
    let mut changed = (*h.get("storageclasses", "", "fixed").unwrap()).clone();
    changed["parameters"] = json!({"x": "y"});
    let error = h
        .objects
        .replace(kind("storageclasses"), "", "fixed", changed, Part::Main)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "parameters: Forbidden: updates to parameters are forbidden."
    );
    let mut expandable = (*h.get("storageclasses", "", "fixed").unwrap()).clone();
    expandable["allowVolumeExpansion"] = json!(true);
    let mut expandable = h
        .objects
        .replace(kind("storageclasses"), "", "fixed", expandable, Part::Main)
        .await
        .expect("allowVolumeExpansion may change, as in Kubernetes");
    expandable["allowVolumeExpansion"] = json!(false);
    h.objects
        .replace(kind("storageclasses"), "", "fixed", expandable, Part::Main)
        .await
        .unwrap();

    let pv = h
        .create("persistentvolumes", nfs_volume("nfs-1", "1Gi"))
        .await;
    let mut moved = pv.clone();
    moved["spec"]["nfs"]["path"] = json!("/elsewhere");
    let error = h
        .objects
        .replace(kind("persistentvolumes"), "", "nfs-1", moved, Part::Main)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"
    );
    let mut grown = pv.clone();
    grown["spec"]["capacity"]["storage"] = json!("2Gi");
    h.objects
        .replace(kind("persistentvolumes"), "", "nfs-1", grown, Part::Main)
        .await
        .expect("a volume's capacity may change");

    let created = h
        .create(
            "persistentvolumeclaims",
            new_claim("data", "1Gi", Some("fixed")),
        )
        .await;
    let replace = |mutate: &dyn Fn(&mut Value)| {
        let mut value = created.clone();
        mutate(&mut value);
        h.objects.replace(
            kind("persistentvolumeclaims"),
            "default",
            "data",
            value,
            Part::Main,
        )
    };
    let error = replace(&|c| c["spec"]["accessModes"] = json!(["ReadWriteMany"]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "spec: Forbidden: spec is immutable after creation except resources.requests"
        ),
        "{error}"
    );
    let error = replace(&|c| c["spec"]["resources"]["requests"]["storage"] = json!("512Mi"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("spec is immutable"),
        "unbound: {error}"
    );

    // Bound (by hand here): it may grow only if its class allows it, never shrink.
    let h = &h;
    let edit = |change: fn(&mut Value)| async move {
        h.objects
            .update_with(kind("persistentvolumeclaims"), "default", "data", |c| {
                change(c);
                true
            })
            .await
            .unwrap();
        h.objects
            .get(kind("persistentvolumeclaims"), "default", "data")
            .await
            .unwrap()
    };
    let bound = edit(|c| {
        c["spec"]["volumeName"] = json!("pvc-x");
        c["status"]["phase"] = json!("Bound");
    })
    .await;
    let resize = |size: &str| {
        let mut value = bound.clone();
        value["spec"]["resources"]["requests"]["storage"] = json!(size);
        h.objects.replace(
            kind("persistentvolumeclaims"),
            "default",
            "data",
            value,
            Part::Main,
        )
    };
    let error = resize("512Mi").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "spec.resources.requests.storage: Forbidden: field can not be less than previous value"
    );
    let error = resize("2Gi").await.unwrap_err();
    assert!(
        matches!(&error, crate::Error::ForbiddenObject { reason, .. }
            if reason == "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"),
        "{error:?}"
    );
    h.create("storageclasses", class("growing", "Immediate", true))
        .await;
    let bound = edit(|c| c["spec"]["storageClassName"] = json!("growing")).await;
    let mut value = bound.clone();
    value["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    let grown = h
        .objects
        .replace(
            kind("persistentvolumeclaims"),
            "default",
            "data",
            value,
            Part::Main,
        )
        .await
        .unwrap();
    assert_eq!(grown["spec"]["resources"]["requests"]["storage"], "2Gi");
}

#[tokio::test]
async fn a_claim_binds_the_smallest_static_volume_that_fits() {
    let h = Harness::new().await;
    h.create("persistentvolumes", nfs_volume("big", "10Gi"))
        .await;
    h.create("persistentvolumes", nfs_volume("small", "2Gi"))
        .await;
    h.create("persistentvolumes", nfs_volume("tiny", "512Mi"))
        .await;
    let created = h
        .create("persistentvolumeclaims", new_claim("data", "1Gi", Some("")))
        .await;
    h.settle().await;
    let claim = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert_eq!(claim["spec"]["volumeName"], "small");
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(claim["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(
        claim["status"]["accessModes"],
        json!(["ReadWriteOnce", "ReadWriteMany"])
    );
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    let small = h.get("persistentvolumes", "", "small").unwrap();
    assert_eq!(small["status"]["phase"], "Bound");
    assert_eq!(small["spec"]["claimRef"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        h.get("persistentvolumes", "", "big").unwrap()["status"]["phase"],
        "Available"
    );

    // Deleted: the Retain volume stays, Released; protection let go.
    h.delete("persistentvolumeclaims", "default", "data").await;
    h.settle().await;
    assert!(h.get("persistentvolumeclaims", "default", "data").is_none());
    assert_eq!(
        h.get("persistentvolumes", "", "small").unwrap()["status"]["phase"],
        "Released"
    );
    // A new claim of that name does not take the released volume.
    h.create("persistentvolumeclaims", new_claim("data", "1Gi", Some("")))
        .await;
    h.settle().await;
    assert_eq!(
        h.get("persistentvolumeclaims", "default", "data").unwrap()["spec"]["volumeName"],
        "big"
    );
}

#[tokio::test]
async fn an_immediate_claim_is_provisioned_on_the_best_fitting_node_and_bound() {
    let h = Harness::new().await;
    h.nodes_with_room(&[("roomy", 50 * GI), ("snug", 3 * GI)])
        .await;
    h.create("storageclasses", class("fast", "Immediate", true))
        .await;
    let created = h
        .create(
            "persistentvolumeclaims",
            new_claim("data", "2Gi", Some("fast")),
        )
        .await;
    h.settle().await;
    let claim = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "snug"
    );
    assert_eq!(
        claim["status"]["phase"], "Pending",
        "until its node reports it"
    );

    let handle = format!("pvc-{}", uid(&created));
    h.report("snug", GI, vec![local_state(&handle, 2 * GI)], vec![]);
    h.settle().await;
    let pv = h.get("persistentvolumes", "", &handle).unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], "c4m.io/local");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], handle.as_str());
    assert_eq!(pv["spec"]["csi"]["fsType"], "ext4");
    assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["storageClassName"], "fast");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["snug"])
    );
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "c4m.io/local"
    );
    assert_eq!(
        pv["metadata"]["finalizers"],
        json!([PROVISIONER_FINALIZER, PV_PROTECTION]),
        "its node deletes its data when it is deleted"
    );
    assert_eq!(pv["status"]["phase"], "Bound");
    let claim = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert_eq!(claim["spec"]["volumeName"], handle.as_str());
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(claim["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(
        claim["metadata"]["resourceVersion"], pv["metadata"]["resourceVersion"],
        "the volume and its claim's binding are one transaction"
    );

    // In use by a pod, a deleted claim stays (Terminating) until the pod ends.
    h.create(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    )
    .await;
    h.delete("persistentvolumeclaims", "default", "data").await;
    h.settle().await;
    let terminating = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert!(crate::deletion::is_deleting(&terminating));
    assert_eq!(
        terminating["metadata"]["finalizers"],
        json!([PVC_PROTECTION])
    );
    let pod_revision = h
        .objects
        .update_with(kind("pods"), "default", "web", |pod| {
            pod["status"]["phase"] = json!("Succeeded");
            true
        })
        .await
        .unwrap()
        .unwrap();
    h.cache.wait_for(pod_revision).await;
    h.settle().await;
    assert!(h.get("persistentvolumeclaims", "default", "data").is_none());
    // reclaimPolicy Delete: the volume is deleted, and stays (Terminating,
    // Released) while its node still has the data.
    let reclaimed = h.get("persistentvolumes", "", &handle).unwrap();
    assert!(crate::deletion::is_deleting(&reclaimed));
    assert_eq!(reclaimed["status"]["phase"], "Released");
    assert_eq!(
        reclaimed["metadata"]["finalizers"],
        json!([PROVISIONER_FINALIZER])
    );
    h.report("snug", 3 * GI, vec![], vec![]);
    h.settle().await;
    assert!(
        h.get("persistentvolumes", "", &handle).is_none(),
        "gone once its node no longer reports the volume"
    );
}

fn finalizers(h: &Harness, handle: &str) -> Value {
    h.get("persistentvolumes", "", handle).unwrap()["metadata"]["finalizers"].clone()
}

#[tokio::test]
async fn a_retained_volume_has_no_provisioner_finalizer_and_goes_without_its_node() {
    let h = Harness::new().await;
    let mut keep = class("keep", "Immediate", false);
    keep["reclaimPolicy"] = json!("Retain");
    h.create("storageclasses", keep).await;
    let handle = h.provisioned_on("a", "kept", "keep").await;
    let pv = h.get("persistentvolumes", "", &handle).unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["metadata"]["finalizers"], json!([PV_PROTECTION]));

    h.delete("persistentvolumeclaims", "default", "kept").await;
    h.settle().await;
    assert_eq!(
        h.get("persistentvolumes", "", &handle).unwrap()["status"]["phase"],
        "Released",
        "kept: Retain"
    );
    h.delete("persistentvolumes", "", &handle).await;
    h.settle().await;
    assert!(
        h.get("persistentvolumes", "", &handle).is_none(),
        "deleted at once, its node still reporting the volume (whose data it keeps)"
    );
}

#[tokio::test]
async fn the_provisioner_finalizer_follows_the_reclaim_policy_and_the_node() {
    let h = Harness::new().await;
    h.create("storageclasses", class("fast", "Immediate", false))
        .await;
    let handle = h.provisioned_on("a", "data", "fast").await;
    assert_eq!(
        finalizers(&h, &handle),
        json!([PROVISIONER_FINALIZER, PV_PROTECTION])
    );
    // Turned Retain: the node will not delete the data, nothing to wait for.
    let set_policy = |policy: &'static str| {
        let h = &h;
        let handle = handle.clone();
        async move {
            let revision = h
                .objects
                .update_with(kind("persistentvolumes"), "", &handle, |pv| {
                    pv["spec"]["persistentVolumeReclaimPolicy"] = json!(policy);
                    true
                })
                .await
                .unwrap()
                .unwrap();
            h.cache.wait_for(revision).await;
            h.settle().await;
        }
    };
    set_policy("Retain").await;
    assert_eq!(finalizers(&h, &handle), json!([PV_PROTECTION]));
    // Delete again (as a volume made before the finalizer existed): added.
    set_policy("Delete").await;
    assert_eq!(
        finalizers(&h, &handle),
        json!([PV_PROTECTION, PROVISIONER_FINALIZER])
    );

    // Deleted while bound: it waits for its claim, then for the node.
    h.delete("persistentvolumes", "", &handle).await;
    h.settle().await;
    let pv = h.get("persistentvolumes", "", &handle).unwrap();
    assert_eq!(pv["status"]["phase"], "Bound");
    h.delete("persistentvolumeclaims", "default", "data").await;
    h.settle().await;
    let pv = h.get("persistentvolumes", "", &handle).unwrap();
    assert_eq!(
        pv["status"]["phase"], "Released",
        "released while being deleted, so its node deletes the data"
    );
    assert_eq!(pv["metadata"]["finalizers"], json!([PROVISIONER_FINALIZER]));

    // Its node deleted for good: nothing will ever delete the data; the
    // object goes.
    h.delete("nodes", "", "a").await;
    h.settle().await;
    assert!(h.get("persistentvolumes", "", &handle).is_none());
}

#[tokio::test]
async fn a_node_that_has_not_reported_since_a_restart_is_waited_for() {
    let h = Harness::new().await;
    h.create("storageclasses", class("fast", "Immediate", false))
        .await;
    let handle = h.provisioned_on("a", "data", "fast").await;
    // A control plane started afresh: no report from "a" yet.
    h.reports.forget("a");
    h.delete("persistentvolumeclaims", "default", "data").await;
    h.settle().await;
    assert_eq!(
        finalizers(&h, &handle),
        json!([PROVISIONER_FINALIZER]),
        "no report is not \"gone\""
    );
    h.report("a", 10 * GI, vec![local_state(&handle, GI)], vec![]);
    h.settle().await;
    assert!(h.get("persistentvolumes", "", &handle).is_some());
    h.report("a", 10 * GI, vec![], vec![]);
    h.settle().await;
    assert!(h.get("persistentvolumes", "", &handle).is_none());
}

#[tokio::test]
async fn a_nodes_orphaned_volumes_are_written_on_it() {
    let h = Harness::new().await;
    h.node("a").await;
    let mut orphan = local_state("pvc-old", 64 << 20);
    orphan.orphaned = true;
    h.report(
        "a",
        10 * GI,
        vec![orphan, local_state("pvc-new", GI)],
        vec![],
    );
    h.settle().await;
    let node = h.get("nodes", "", "a").unwrap();
    let written: Value = serde_json::from_str(
        node["metadata"]["annotations"][c4m_core::annotations::ORPHANED_VOLUMES]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        written,
        json!([{"driver": "c4m.io/local", "handle": "pvc-old", "sizeBytes": 64 << 20}])
    );
    h.report("a", 10 * GI, vec![local_state("pvc-new", GI)], vec![]);
    h.settle().await;
    let node = h.get("nodes", "", "a").unwrap();
    assert!(node["metadata"]["annotations"][c4m_core::annotations::ORPHANED_VOLUMES].is_null());
}

#[tokio::test]
async fn a_claim_no_node_has_room_for_stays_pending_and_says_why() {
    let h = Harness::new().await;
    h.nodes_with_room(&[("a", 2 * GI), ("b", GI / 2)]).await;
    h.create("storageclasses", class("fast", "Immediate", false))
        .await;
    h.create(
        "persistentvolumeclaims",
        new_claim("huge", "10Gi", Some("fast")),
    )
    .await;
    h.settle().await;
    let claim = h.get("persistentvolumeclaims", "default", "huge").unwrap();
    assert!(claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].is_null());
    assert_eq!(claim["status"]["phase"], "Pending");
    assert_eq!(
        h.events("huge", "ProvisioningFailed").await,
        [
            "failed to provision volume with StorageClass \"fast\": no ready node has 10Gi free for c4m.io/local (a: 2Gi free, b: 512Mi free)"
        ]
    );

    // A WaitForFirstConsumer claim waits for the scheduler's choice.
    h.create(
        "storageclasses",
        class("later", "WaitForFirstConsumer", false),
    )
    .await;
    h.create(
        "persistentvolumeclaims",
        new_claim("later", "1Gi", Some("later")),
    )
    .await;
    h.settle().await;
    let claim = h.get("persistentvolumeclaims", "default", "later").unwrap();
    assert!(claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].is_null());
    assert_eq!(
        h.events("later", "WaitForFirstConsumer").await,
        ["waiting for first consumer to be created before binding"]
    );
}

#[tokio::test]
async fn expansion_status_follows_what_the_node_reports() {
    let h = Harness::new().await;
    let handle = h.provisioned("data", "fast", true).await;
    let bound = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert_eq!(bound["status"]["phase"], "Bound");
    let mut grown = (*bound).clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    let written = h
        .objects
        .replace(
            kind("persistentvolumeclaims"),
            "default",
            "data",
            grown,
            Part::Main,
        )
        .await
        .unwrap();
    h.cache
        .wait_for(crate::objects::revision_of(&written).unwrap())
        .await;

    let mut pending = local_state(&handle, GI);
    pending.expansion_pending = true;
    h.report("a", 10 * GI, vec![pending], vec![]);
    h.settle().await;
    let claim = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert_eq!(claim["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(
        claim["status"]["conditions"][0]["type"],
        "FileSystemResizePending"
    );
    assert_eq!(claim["status"]["conditions"][0]["status"], "True");

    h.report("a", 9 * GI, vec![local_state(&handle, 2 * GI)], vec![]);
    h.settle().await;
    let claim = h.get("persistentvolumeclaims", "default", "data").unwrap();
    assert_eq!(claim["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(claim["status"]["conditions"], json!([]));
    assert_eq!(
        h.get("persistentvolumes", "", &handle).unwrap()["spec"]["capacity"]["storage"],
        "2Gi"
    );
}

#[tokio::test]
async fn a_snapshot_gets_its_content_and_is_ready_once_reported() {
    let h = Harness::new().await;
    super::admission::ensure_default_classes(&h.objects)
        .await
        .unwrap();
    let handle = h.provisioned("data", "fast", false).await;
    let snapshot = h
        .create(
            "volumesnapshots",
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "snap", "namespace": "default"},
                "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
        )
        .await;
    assert_eq!(
        snapshot["spec"]["volumeSnapshotClassName"], "local",
        "the default class"
    );
    h.settle().await;
    let content_name = format!("snapcontent-{}", uid(&snapshot));
    let content = h.get("volumesnapshotcontents", "", &content_name).unwrap();
    assert_eq!(content["spec"]["source"]["volumeHandle"], handle.as_str());
    assert_eq!(content["spec"]["driver"], "c4m.io/local");
    assert_eq!(content["spec"]["deletionPolicy"], "Delete");
    assert_eq!(
        content["spec"]["volumeSnapshotRef"]["uid"],
        snapshot["metadata"]["uid"]
    );
    let snapshot_now = h.get("volumesnapshots", "default", "snap").unwrap();
    assert_eq!(snapshot_now["status"]["readyToUse"], false);
    assert_eq!(
        snapshot_now["status"]["boundVolumeSnapshotContentName"],
        content_name.as_str()
    );

    let snapshot_handle = format!("snapshot-{}", uid(&snapshot));
    let taken = SnapshotState {
        driver: "c4m.io/local".into(),
        handle: snapshot_handle.clone(),
        source_volume: handle.clone(),
        size_bytes: GI,
        ready: true,
        created_at: "2026-12-07T22:00:00Z".into(),
        error: String::new(),
    };
    h.report(
        "a",
        10 * GI,
        vec![local_state(&handle, GI)],
        vec![taken.clone()],
    );
    h.settle().await;
    let content = h.get("volumesnapshotcontents", "", &content_name).unwrap();
    assert_eq!(
        content["status"]["snapshotHandle"],
        snapshot_handle.as_str()
    );
    assert_eq!(content["status"]["readyToUse"], true);
    assert_eq!(content["status"]["restoreSize"], GI);
    assert_eq!(
        content["status"]["creationTime"],
        1_796_680_800_000_000_000u64
    );
    let ready = h.get("volumesnapshots", "default", "snap").unwrap();
    assert_eq!(ready["status"]["readyToUse"], true);
    assert_eq!(ready["status"]["restoreSize"], "1Gi");
    assert_eq!(ready["status"]["creationTime"], "2026-12-07T22:00:00Z");

    // A claim restored from it is made where the snapshot is.
    let mut restored = new_claim("restored", "1Gi", Some("fast"));
    restored["spec"]["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot", "name": "snap"});
    h.nodes_with_room(&[("b", 90 * GI)]).await;
    h.create("persistentvolumeclaims", restored).await;
    h.settle().await;
    let restoring = h
        .get("persistentvolumeclaims", "default", "restored")
        .unwrap();
    assert_eq!(
        restoring["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "a"
    );

    // Deleted while a claim is restored from it, it stays until the
    // restore is done, then takes its content (policy Delete) along.
    h.delete("volumesnapshots", "default", "snap").await;
    h.settle().await;
    let held = h.get("volumesnapshots", "default", "snap").unwrap();
    assert_eq!(
        held["metadata"]["finalizers"],
        json!(["snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"])
    );
    assert!(h.get("volumesnapshotcontents", "", &content_name).is_some());
    let restored_handle = format!("pvc-{}", uid(&restoring));
    h.report(
        "a",
        9 * GI,
        vec![local_state(&handle, GI), local_state(&restored_handle, GI)],
        vec![taken],
    );
    h.settle().await;
    assert_eq!(
        h.get("persistentvolumeclaims", "default", "restored")
            .unwrap()["status"]["phase"],
        "Bound"
    );
    assert!(h.get("volumesnapshots", "default", "snap").is_none());
    assert!(h.get("volumesnapshotcontents", "", &content_name).is_none());
}

#[tokio::test]
async fn an_ephemeral_volume_gets_a_claim_owned_by_its_pod() {
    let h = Harness::new().await;
    let pod = h
        .create(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                        "metadata": {"labels": {"type": "scratch"}},
                        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                            "resources": {"requests": {"storage": "1Gi"}}}}}}]}}),
        )
        .await;
    h.settle().await;
    let claim = h
        .get("persistentvolumeclaims", "default", "web-scratch")
        .unwrap();
    assert_eq!(claim["metadata"]["labels"]["type"], "scratch");
    assert_eq!(
        claim["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    assert_eq!(claim["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
}

#[test]
fn an_event_a_pass_finds_again_is_recorded_once_per_repeat() {
    let repeats = super::Repeats::default();
    assert!(repeats.due("uid-1", "ProvisioningFailed", "no room"));
    assert!(!repeats.due("uid-1", "ProvisioningFailed", "no room"));
    assert!(repeats.due("uid-1", "ProvisioningFailed", "node a is not ready"));
    assert!(repeats.due("uid-2", "ProvisioningFailed", "node a is not ready"));
    assert!(repeats.due("uid-1", "WaitForFirstConsumer", "no room"));
}

#[tokio::test]
async fn two_claims_after_one_volume_never_share_it() {
    let h = Harness::new().await;
    h.create("persistentvolumes", nfs_volume("only", "1Gi"))
        .await;
    for name in ["first", "second", "third"] {
        h.create("persistentvolumeclaims", new_claim(name, "1Gi", Some("")))
            .await;
    }
    h.settle().await;
    let bound: Vec<String> = ["first", "second", "third"]
        .iter()
        .filter(|name| {
            h.get("persistentvolumeclaims", "default", name).unwrap()["status"]["phase"] == "Bound"
        })
        .map(|name| name.to_string())
        .collect();
    assert_eq!(bound.len(), 1, "{bound:?}");
    let pv = h.get("persistentvolumes", "", "only").unwrap();
    assert_eq!(pv["spec"]["claimRef"]["name"], bound[0].as_str());
    assert_eq!(
        h.events(
            if bound[0] == "first" {
                "second"
            } else {
                "first"
            },
            "FailedBinding"
        )
        .await,
        ["no persistent volumes available for this claim and no storage class is set"]
    );
}

#[tokio::test]
async fn a_claim_whose_selected_node_is_gone_gets_another() {
    let h = Harness::new().await;
    h.nodes_with_room(&[("a", 10 * GI)]).await;
    h.create("storageclasses", class("fast", "Immediate", false))
        .await;
    let mut claim = new_claim("data", "1Gi", Some("fast"));
    claim["metadata"]["annotations"] = json!({"volume.kubernetes.io/selected-node": "gone"});
    h.create("persistentvolumeclaims", claim).await;
    h.settle().await;
    assert_eq!(
        h.get("persistentvolumeclaims", "default", "data").unwrap()["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "a"
    );
}

#[tokio::test]
async fn claims_selected_at_once_do_not_overcommit_a_node() {
    let h = Harness::new().await;
    h.nodes_with_room(&[("small", 3 * GI), ("large", 5 * GI)])
        .await;
    h.create("storageclasses", class("fast", "Immediate", false))
        .await;
    for name in ["one", "two", "three"] {
        h.create(
            "persistentvolumeclaims",
            new_claim(name, "2Gi", Some("fast")),
        )
        .await;
    }
    h.settle().await;
    let mut selected: Vec<String> = ["one", "two", "three"]
        .iter()
        .filter_map(|name| {
            h.get("persistentvolumeclaims", "default", name).unwrap()["metadata"]["annotations"]
                ["volume.kubernetes.io/selected-node"]
                .as_str()
                .map(String::from)
        })
        .collect();
    selected.sort();
    assert_eq!(
        selected,
        ["large", "large", "small"],
        "3Gi takes one 2Gi claim, 5Gi two; none is promised more than it has"
    );
}

#[tokio::test]
async fn only_pods_that_name_claims_start_a_pass() {
    let h = Harness::new().await;
    let feed = h.cache.feed(super::FOLLOWS);
    let pod = |name: &str, volumes: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": volumes}})
    };
    let next = async || {
        let changes = feed.next().await;
        super::concerns_storage(&h.cache, &changes)
    };
    h.node("a").await;
    assert!(next().await, "a feed's first read is everything");
    h.create(
        "pods",
        pod("plain", json!([{"name": "tmp", "emptyDir": {}}])),
    )
    .await;
    assert!(!next().await, "a pod without claims");
    h.create(
        "pods",
        pod(
            "user",
            json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]),
        ),
    )
    .await;
    assert!(next().await, "a pod that names a claim");
    h.create("persistentvolumes", nfs_volume("v", "1Gi")).await;
    assert!(next().await, "any storage object");
}

#[tokio::test]
async fn a_claim_naming_its_volume_waits_for_that_one() {
    let h = Harness::new().await;
    h.create("persistentvolumes", nfs_volume("small", "512Mi"))
        .await;
    h.create("persistentvolumes", nfs_volume("other", "1Gi"))
        .await;
    let mut claim = new_claim("data", "1Gi", Some(""));
    claim["spec"]["volumeName"] = json!("small");
    h.create("persistentvolumeclaims", claim).await;
    let mut later = new_claim("later", "1Gi", Some(""));
    later["spec"]["volumeName"] = json!("later-pv");
    h.create("persistentvolumeclaims", later).await;
    h.settle().await;
    assert_eq!(
        h.get("persistentvolumeclaims", "default", "data").unwrap()["status"]["phase"],
        "Pending",
        "not another volume, and not one too small"
    );
    assert_eq!(
        h.events("data", "FailedBinding").await[0],
        "Cannot bind to requested volume \"small\": it does not fit the claim (class, access modes, size, volume mode or claimRef)"
    );
    assert_eq!(
        h.events("later", "FailedBinding").await,
        ["volume \"later-pv\" not found"]
    );
    h.create("persistentvolumes", nfs_volume("later-pv", "1Gi"))
        .await;
    h.settle().await;
    assert_eq!(
        h.get("persistentvolumeclaims", "default", "later").unwrap()["status"]["phase"],
        "Bound"
    );
    assert_eq!(
        h.get("persistentvolumes", "", "other").unwrap()["status"]["phase"],
        "Available"
    );
}
