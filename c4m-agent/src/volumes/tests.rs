//! The volume manager over [`FakeBackend`]: provisioning, collection,
//! refcounted mounts, recovery from records, expansion and snapshots.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex as StdMutex;

use c4m_core::Instance;
use c4m_core::volumes::{LOCAL_DRIVER, SELECTED_NODE, VolumeSource};
use c4m_storage::{FakeBackend, ProvisionRequest, SnapshotId, VolumeId};
use serde_json::{Value, json};

use super::*;
use crate::claims::ClaimMounts;

const GIB: u64 = 1 << 30;

struct Node {
    fake: Arc<FakeBackend>,
    volumes: Arc<NodeVolumes>,
    reports: watch::Receiver<Option<Arc<VolumeReport>>>,
    assignments: watch::Sender<Option<AssignmentSet>>,
    dir: tempfile::TempDir,
}

impl Node {
    /// The agent started again on the same backend and data directory; the
    /// old manager is gone first, as with a process.
    fn restarted(self) -> Node {
        let Node {
            fake,
            volumes,
            reports,
            assignments,
            dir,
        } = self;
        drop((volumes, reports, assignments));
        node_with(fake, dir)
    }
}

fn node_with(fake: Arc<FakeBackend>, dir: tempfile::TempDir) -> Node {
    let (assignments, assigned) = watch::channel(None);
    let backends = Backends::new(
        Some(Arc::clone(&fake) as Arc<dyn VolumeBackend>),
        None,
        BTreeMap::new(),
    );
    let (volumes, reports) = NodeVolumes::new(
        "n1",
        backends,
        dir.path(),
        assigned,
        VolumeTimers {
            report_every: Duration::from_millis(50),
            retry_every: Duration::from_millis(10),
        },
    );
    Node {
        fake,
        volumes,
        reports,
        assignments,
        dir,
    }
}

fn node() -> Node {
    node_with(
        Arc::new(FakeBackend::new(100 * GIB)),
        tempfile::tempdir().unwrap(),
    )
}

fn claim(name: &str, uid: &str, size: &str) -> (String, Value) {
    (
        format!("persistentvolumeclaims/shop/{name}"),
        json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid,
                         "annotations": {SELECTED_NODE: "n1"}},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}
        }),
    )
}

fn class() -> (String, Value) {
    (
        "storageclasses/local".into(),
        json!({"metadata": {"name": "local"}, "provisioner": LOCAL_DRIVER}),
    )
}

fn pv(uid: &str) -> (String, Value) {
    (
        format!("persistentvolumes/pvc-{uid}"),
        json!({"metadata": {"name": format!("pvc-{uid}")},
               "spec": {"csi": {"driver": LOCAL_DRIVER, "volumeHandle": format!("pvc-{uid}")},
                        "claimRef": {"uid": uid, "namespace": "shop", "name": "x"}}}),
    )
}

/// `pv(uid)` being deleted once its claim went, of policy `Delete`, held
/// by the provisioner's finalizer until this node deletes its data.
fn reclaimed_pv(uid: &str) -> (String, Value) {
    let (key, mut pv) = pv(uid);
    pv["metadata"]["deletionTimestamp"] = json!("2026-12-08T00:00:00Z");
    pv["metadata"]["finalizers"] = json!([c4m_core::volumes::PROVISIONER_FINALIZER]);
    pv["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    pv["status"] = json!({"phase": "Released"});
    (key, pv)
}

fn set(objects: Vec<(String, Value)>) -> ObjectSet {
    ObjectSet::from_objects(objects)
}

fn source(handle: &str) -> VolumeSource {
    VolumeSource::Csi {
        driver: LOCAL_DRIVER.into(),
        handle: handle.into(),
        fs_type: Some("ext4".into()),
        attributes: BTreeMap::new(),
    }
}

fn assign(node: &Node, pods: &[(&str, &str)]) {
    let pods = pods
        .iter()
        .map(|(name, uid)| {
            Arc::new(
                serde_json::from_value::<Instance>(json!({
                    "metadata": {"name": name, "namespace": "shop", "uid": uid},
                    "spec": {"containers": [{"name": "c", "image": "bb"}]}
                }))
                .unwrap(),
            )
        })
        .collect();
    node.assignments.send_replace(Some(Arc::new(pods)));
}

async fn ids(fake: &FakeBackend) -> Vec<String> {
    fake.list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id.to_string())
        .collect()
}

#[tokio::test]
async fn claims_selected_here_are_provisioned_reported_and_collected_when_unreferenced() {
    let node = node();
    let mut bad = claim("bad", "u2", "1Gi");
    bad.1["spec"]["storageClassName"] = json!("missing");
    node.volumes
        .pass(&set(vec![class(), claim("a", "u1", "2Gi"), bad]))
        .await;
    assert_eq!(ids(&node.fake).await, ["pvc-u1"]);
    let report = node.volumes.report_now().await;
    assert_eq!(report.node_name, "n1");
    assert_eq!(report.capacity.len(), 1);
    assert_eq!(report.capacity[0].driver, LOCAL_DRIVER);
    assert_eq!(report.capacity[0].free_bytes, 98 * GIB);
    let states: Vec<_> = report
        .volumes
        .iter()
        .map(|v| (v.handle.as_str(), v.size_bytes, v.error.is_empty()))
        .collect();
    assert_eq!(states, [("pvc-u1", 2 * GIB, true), ("pvc-u2", 0, false)]);
    assert!(report.volumes[1].error.contains("\"missing\" not found"));

    // Provisioning again changes nothing; the PV keeps it once the claim is gone.
    node.volumes
        .pass(&set(vec![class(), claim("a", "u1", "2Gi"), pv("u1")]))
        .await;
    node.volumes.pass(&set(vec![class(), pv("u1")])).await;
    assert_eq!(ids(&node.fake).await, ["pvc-u1"]);
    // Its PV reclaimed: collected. Other volumes are not ours.
    node.fake
        .provision(&ProvisionRequest::new(
            VolumeId::new("scratch-1").unwrap(),
            GIB,
        ))
        .await
        .unwrap();
    node.volumes
        .pass(&set(vec![class(), reclaimed_pv("u1")]))
        .await;
    assert_eq!(ids(&node.fake).await, ["scratch-1"]);
    assert!(node.volumes.report_now().await.volumes.is_empty());
}

#[tokio::test]
async fn a_wiped_store_keeps_the_volumes_a_pv_referenced_across_restarts() {
    let node = node();
    node.volumes
        .pass(&set(vec![
            class(),
            claim("a", "u1", "1Gi"),
            pv("u1"),
            claim("b", "u2", "1Gi"),
        ]))
        .await;
    assert_eq!(ids(&node.fake).await, ["pvc-u1", "pvc-u2"]);

    // The agent restarts and meets a store that knows none of them.
    let node = node.restarted();
    node.volumes.recover().await;
    node.volumes.pass(&set(vec![class()])).await;
    assert_eq!(
        ids(&node.fake).await,
        ["pvc-u1"],
        "a PV referenced pvc-u1: kept; no PV ever referenced pvc-u2: collected"
    );
    let report = node.volumes.report_now().await;
    let states: Vec<_> = report
        .volumes
        .iter()
        .map(|v| (v.handle.as_str(), v.orphaned))
        .collect();
    assert_eq!(states, [("pvc-u1", true)]);
    node.volumes.pass(&set(vec![class()])).await;
    assert_eq!(ids(&node.fake).await, ["pvc-u1"], "and every pass after");

    // Bound again by a PV (the way back): no longer orphaned.
    node.volumes.pass(&set(vec![class(), pv("u1")])).await;
    assert!(!node.volumes.report_now().await.volumes[0].orphaned);
    // A Retain PV deleted (or one whose finalizer was taken off by hand)
    // does not delete the data: only a reclaimed one does.
    let (key, mut retained) = reclaimed_pv("u1");
    retained["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
    node.volumes
        .pass(&set(vec![class(), (key.clone(), retained)]))
        .await;
    let (_, mut unguarded) = reclaimed_pv("u1");
    unguarded["metadata"]["finalizers"] = json!([]);
    node.volumes
        .pass(&set(vec![class(), (key, unguarded)]))
        .await;
    assert_eq!(ids(&node.fake).await, ["pvc-u1"]);
    node.volumes
        .pass(&set(vec![class(), reclaimed_pv("u1")]))
        .await;
    assert!(ids(&node.fake).await.is_empty());
    assert!(node.volumes.report_now().await.volumes.is_empty());
}

#[tokio::test]
async fn only_the_nfs_volumes_a_node_provisioned_are_its_to_collect() {
    let export = Arc::new(FakeBackend::new(100 * GIB));
    let dir = tempfile::tempdir().unwrap();
    let opener_export = Arc::clone(&export);
    let opener: NfsOpener =
        Box::new(move |_: &wanted::NfsTarget| Arc::clone(&opener_export) as Arc<dyn VolumeBackend>);
    let (_, assigned) = watch::channel(None);
    let (volumes, _) = NodeVolumes::new(
        "n1",
        Backends::new(None, Some(opener), BTreeMap::new()),
        dir.path(),
        assigned,
        VolumeTimers::default(),
    );
    let shared = (
        "storageclasses/shared".to_string(),
        json!({"metadata": {"name": "shared"}, "provisioner": c4m_core::volumes::NFS_DRIVER,
               "parameters": {"server": "10.0.0.1", "share": "/export"}}),
    );
    let nfs_claim = |name: &str, uid: &str| {
        let (key, mut claim) = claim(name, uid, "1Gi");
        claim["spec"]["storageClassName"] = json!("shared");
        (key, claim)
    };
    // Another node's volume on the shared export, referenced by nothing
    // this node sees.
    export
        .provision(&ProvisionRequest::new(
            VolumeId::new("pvc-theirs").unwrap(),
            GIB,
        ))
        .await
        .unwrap();
    volumes
        .pass(&set(vec![
            shared.clone(),
            nfs_claim("a", "u1"),
            nfs_claim("b", "u2"),
        ]))
        .await;
    assert_eq!(ids(&export).await, ["pvc-theirs", "pvc-u1", "pvc-u2"]);
    let mut nfs_pv = pv("u1");
    nfs_pv.1["spec"]["csi"]["driver"] = json!(c4m_core::volumes::NFS_DRIVER);
    let mut bound = nfs_claim("a", "u1");
    bound.1["spec"]["volumeName"] = json!("pvc-u1");
    volumes
        .pass(&set(vec![
            shared.clone(),
            bound,
            nfs_pv,
            nfs_claim("b", "u2"),
        ]))
        .await;
    let reported: Vec<String> = volumes
        .report_now()
        .await
        .volumes
        .into_iter()
        .map(|v| v.handle)
        .collect();
    assert_eq!(
        reported,
        ["pvc-u1", "pvc-u2"],
        "what this node provisioned, not the whole export"
    );
    // The store wiped: pvc-u1 (a PV referenced it) is kept, pvc-u2 (never
    // bound) collected, pvc-theirs left to its node.
    volumes.pass(&set(vec![shared])).await;
    assert_eq!(ids(&export).await, ["pvc-theirs", "pvc-u1"]);
}

#[tokio::test]
async fn nothing_is_done_before_the_first_whole_set_and_reports_go_out_at_start() {
    let mut node = node();
    node.fake
        .provision(&ProvisionRequest::new(
            VolumeId::new("pvc-old").unwrap(),
            GIB,
        ))
        .await
        .unwrap();
    let (objects, objects_rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(Arc::clone(&node.volumes).run(objects_rx, shutdown.clone()));
    node.reports.changed().await.unwrap();
    let report = node.reports.borrow_and_update().clone().unwrap();
    assert_eq!(
        report.volumes.len(),
        1,
        "reported before any object arrived"
    );
    // Several report periods pass without a set: nothing is collected.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(ids(&node.fake).await, ["pvc-old"]);
    objects.send_replace(Some(Arc::new(set(vec![class(), claim("a", "u1", "1Gi")]))));
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            node.reports.changed().await.unwrap();
            let report = node.reports.borrow_and_update().clone().unwrap();
            let handles: Vec<_> = report.volumes.iter().map(|v| v.handle.clone()).collect();
            if handles == ["pvc-u1"] {
                break;
            }
        }
    })
    .await
    .expect("the new volume reported, the unreferenced one collected");
    shutdown.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn a_volume_is_staged_once_for_its_pods_and_unstaged_after_the_last() {
    let node = node();
    assign(&node, &[("web-0", "p1"), ("web-1", "p2")]);
    node.volumes
        .pass(&set(vec![class(), claim("a", "u1", "1Gi"), pv("u1")]))
        .await;
    let id = VolumeId::new("pvc-u1").unwrap();
    let (t1, t2) = (node.dir.path().join("t1"), node.dir.path().join("t2"));
    node.volumes
        .mount("p1", "data", &source("pvc-u1"), false, &t1)
        .await
        .unwrap();
    node.volumes
        .mount("p2", "data", &source("pvc-u1"), true, &t2)
        .await
        .unwrap();
    // Idempotent.
    node.volumes
        .mount("p1", "data", &source("pvc-u1"), false, &t1)
        .await
        .unwrap();
    let volume = node.fake.volume(&id).await.unwrap().unwrap();
    let staging = volume.staged_at.clone().expect("staged");
    assert!(staging.starts_with(node.dir.path().join("staging")));
    assert_eq!(volume.published_at.len(), 2);
    let report = node.volumes.report_now().await;
    assert_eq!(report.volumes[0].users, ["shop/web-0", "shop/web-1"]);

    let err = node
        .volumes
        .mount("p1", "other", &source("pvc-nope"), false, &t2)
        .await
        .unwrap_err();
    assert!(
        err.starts_with("MountVolume.SetUp failed for volume \"other\": volume pvc-nope not found"),
        "{err}"
    );

    node.volumes.unmount_pod("p1").await.unwrap();
    let volume = node.fake.volume(&id).await.unwrap().unwrap();
    assert_eq!(
        volume.staged_at.as_ref(),
        Some(&staging),
        "p2 still uses it"
    );
    assert_eq!(volume.published_at, std::slice::from_ref(&t2));
    node.volumes.unmount_pod("p2").await.unwrap();
    node.volumes.unmount_pod("p2").await.unwrap();
    let volume = node.fake.volume(&id).await.unwrap().unwrap();
    assert_eq!((volume.staged_at, volume.published_at.len()), (None, 0));
    assert!(node.volumes.report_now().await.volumes[0].users.is_empty());
}

#[tokio::test]
async fn a_restart_rebuilds_users_from_records_and_unstages_what_no_pod_records() {
    let node = node();
    assign(&node, &[("web-0", "p1")]);
    node.volumes
        .pass(&set(vec![
            class(),
            claim("a", "u1", "1Gi"),
            claim("b", "u2", "1Gi"),
        ]))
        .await;
    let target = node.dir.path().join("t1");
    node.volumes
        .mount("p1", "data", &source("pvc-u1"), false, &target)
        .await
        .unwrap();
    // A crash after staging pvc-u2 but before its pod's record was written.
    let (_, b, staging_b, _) = node.volumes.resolve(&source("pvc-u2")).unwrap();
    node.fake.stage(&b, &staging_b).await.unwrap();

    let node = node.restarted();
    assign(&node, &[("web-0", "p1")]);
    node.volumes.recover().await;
    let a = node
        .fake
        .volume(&VolumeId::new("pvc-u1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(a.staged_at.is_some(), "its pod's record keeps it");
    let b = node.fake.volume(&b).await.unwrap().unwrap();
    assert_eq!(b.staged_at, None, "no pod recorded it: unstaged");
    let report = node.volumes.report_now().await;
    assert_eq!(report.volumes[0].users, ["shop/web-0"]);
    node.volumes.unmount_pod("p1").await.unwrap();
    let a = node
        .fake
        .volume(&VolumeId::new("pvc-u1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.staged_at, None);
}

#[derive(Default)]
struct Restarts(StdMutex<Vec<(Vec<String>, RestartReason)>>);

impl RestartUsers for Restarts {
    fn restart(&self, pod_uids: Vec<String>, why: RestartReason) {
        self.0.lock().unwrap().push((pod_uids, why));
    }
}

#[tokio::test]
async fn a_mounted_volume_the_host_cannot_grow_restarts_its_users_and_grows_offline() {
    let node = node_with(
        Arc::new(FakeBackend::new(100 * GIB).offline_expansion_only()),
        tempfile::tempdir().unwrap(),
    );
    let restarts = Arc::new(Restarts::default());
    node.volumes
        .set_restarts(Arc::clone(&restarts) as Arc<dyn RestartUsers>);
    assign(&node, &[("web-0", "p1")]);
    let objects = |size| set(vec![class(), claim("a", "u1", size), pv("u1")]);
    node.volumes.pass(&objects("1Gi")).await;
    let target = node.dir.path().join("t1");
    node.volumes
        .mount("p1", "data", &source("pvc-u1"), false, &target)
        .await
        .unwrap();

    node.volumes.pass(&objects("3Gi")).await;
    node.volumes.pass(&objects("3Gi")).await;
    let report = node.volumes.report_now().await;
    assert_eq!(
        (
            report.volumes[0].size_bytes,
            report.volumes[0].expansion_pending
        ),
        (GIB, true)
    );
    let asked = restarts.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "asked once: {asked:?}");
    assert_eq!(asked[0].0, ["p1"]);
    assert_eq!(asked[0].1, RestartReason::resize("pvc-u1"));

    // The supervisor restarts the pod: it gives the volume back and mounts it again.
    node.volumes.unmount_pod("p1").await.unwrap();
    node.volumes
        .mount("p1", "data", &source("pvc-u1"), false, &target)
        .await
        .unwrap();
    let report = node.volumes.report_now().await;
    assert_eq!(
        (
            report.volumes[0].size_bytes,
            report.volumes[0].expansion_pending
        ),
        (3 * GIB, false)
    );
}

/// A supervisor so quick that the pod it restarts for its volume is back
/// (its volume given back and mounted again) before the pass that asked
/// for the restart has ended.
struct RestartsAtOnce {
    volumes: StdMutex<Option<Arc<NodeVolumes>>>,
    target: PathBuf,
    asked: StdMutex<usize>,
}

impl RestartUsers for RestartsAtOnce {
    fn restart(&self, pod_uids: Vec<String>, _why: RestartReason) {
        *self.asked.lock().unwrap() += 1;
        let volumes = self.volumes.lock().unwrap().clone().unwrap();
        futures::executor::block_on(async {
            for uid in &pod_uids {
                volumes.unmount_pod(uid).await.unwrap();
                volumes
                    .mount(uid, "data", &source("pvc-u1"), false, &self.target)
                    .await
                    .unwrap();
            }
        });
    }
}

#[tokio::test]
async fn a_pod_back_before_the_pass_that_restarted_it_ends_still_grows_its_volume() {
    // Found by `c4m-e2e-bench volumes-crash`: an agent started again with a
    // mounted volume to grow restarted its pod during its first pass; the
    // pod mounted the volume before that pass had recorded the sizes it
    // wanted, so the volume was staged ungrown, and since its users are
    // restarted once per expansion, it never grew.
    let fake = Arc::new(FakeBackend::new(100 * GIB).offline_expansion_only());
    let node = node_with(Arc::clone(&fake), tempfile::tempdir().unwrap());
    assign(&node, &[("web-0", "p1")]);
    let objects = |size| set(vec![class(), claim("a", "u1", size), pv("u1")]);
    node.volumes.pass(&objects("1Gi")).await;
    let target = node.dir.path().join("t1");
    node.volumes
        .mount("p1", "data", &source("pvc-u1"), false, &target)
        .await
        .unwrap();
    // The agent stops; the claim grows meanwhile.
    let node = node.restarted();
    assign(&node, &[("web-0", "p1")]);
    node.volumes.recover().await;
    let restarts = Arc::new(RestartsAtOnce {
        volumes: StdMutex::new(Some(Arc::clone(&node.volumes))),
        target: target.clone(),
        asked: StdMutex::new(0),
    });
    node.volumes
        .set_restarts(Arc::clone(&restarts) as Arc<dyn RestartUsers>);

    node.volumes.pass(&objects("3Gi")).await;
    node.volumes.pass(&objects("3Gi")).await;
    let report = node.volumes.report_now().await;
    assert_eq!(
        (
            report.volumes[0].size_bytes,
            report.volumes[0].expansion_pending
        ),
        (3 * GIB, false),
        "grown by the one restart"
    );
    assert_eq!(*restarts.asked.lock().unwrap(), 1);
    let volume = node.fake.volume(&VolumeId::new("pvc-u1").unwrap()).await;
    assert_eq!(volume.unwrap().unwrap().published_at, [target]);
    // The restarter holds the manager: let it go.
    restarts.volumes.lock().unwrap().take();
}

#[tokio::test]
async fn snapshots_are_taken_for_contents_restored_into_claims_and_collected() {
    let node = node();
    let content = (
        "volumesnapshotcontents/snapcontent-s1".to_string(),
        json!({"metadata": {"name": "snapcontent-s1"},
               "spec": {"source": {"volumeHandle": "pvc-u1"},
                        "volumeSnapshotRef": {"namespace": "shop", "name": "snap", "uid": "s1"}}}),
    );
    let mut copy = claim("copy", "u2", "2Gi");
    copy.1["spec"]["dataSource"] = json!({"kind": "VolumeSnapshot", "name": "snap"});
    node.volumes
        .pass(&set(vec![
            class(),
            claim("a", "u1", "1Gi"),
            pv("u1"),
            content.clone(),
        ]))
        .await;
    let report = node.volumes.report_now().await;
    assert_eq!(report.snapshots.len(), 1);
    let snapshot = &report.snapshots[0];
    assert_eq!(
        (
            snapshot.handle.as_str(),
            snapshot.source_volume.as_str(),
            snapshot.size_bytes,
            snapshot.ready
        ),
        ("snapshot-s1", "pvc-u1", GIB, true)
    );
    assert_eq!(snapshot.created_at, "1970-01-01T00:00:00Z");

    node.volumes
        .pass(&set(vec![
            class(),
            claim("a", "u1", "1Gi"),
            pv("u1"),
            content,
            copy.clone(),
        ]))
        .await;
    let restored = node
        .fake
        .volume(&VolumeId::new("pvc-u2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        restored.source_snapshot.as_ref().map(SnapshotId::as_str),
        Some("snapshot-s1")
    );
    assert_eq!(restored.size_bytes, 2 * GIB);

    // The content is gone: so is the snapshot.
    node.volumes
        .pass(&set(vec![class(), claim("a", "u1", "1Gi"), pv("u1"), copy]))
        .await;
    assert!(node.volumes.report_now().await.snapshots.is_empty());
}

/// The same lifecycle on real loop devices: one loop device however many
/// pods mount the volume, none once the last gave it back, and a volume a
/// crash left staged for no recorded pod is released by the next start.
#[tokio::test]
#[ignore = "needs root + losetup + e2fsprogs: real loop devices"]
async fn real_volumes_are_staged_once_and_leave_no_loop_device() {
    use c4m_storage::testing::{CleanupGuard, LOCAL_PROGRAMS, leaks, require_root_and};
    require_root_and(LOCAL_PROGRAMS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = CleanupGuard::new([dir.path().to_path_buf()]);
    let pool = dir.path().join("volumes");
    let claims = dir.path().join("claims");
    let open = || {
        let local = Arc::new(c4m_storage::LocalBackend::open(&pool).unwrap());
        let (assignments, assigned) = watch::channel(None);
        let (volumes, _) = NodeVolumes::new(
            "n1",
            Backends::new(Some(local as Arc<dyn VolumeBackend>), None, BTreeMap::new()),
            &claims,
            assigned,
            VolumeTimers::default(),
        );
        (volumes, assignments)
    };
    let (volumes, _assignments) = open();
    volumes.recover().await;
    let objects = set(vec![
        class(),
        claim("a", "u1", "16Mi"),
        claim("b", "u2", "16Mi"),
    ]);
    volumes.pass(&objects).await;
    let (t1, t2) = (dir.path().join("t1"), dir.path().join("t2"));
    volumes
        .mount("p1", "data", &source("pvc-u1"), false, &t1)
        .await
        .unwrap();
    volumes
        .mount("p2", "data", &source("pvc-u1"), false, &t2)
        .await
        .unwrap();
    std::fs::write(t1.join("f"), b"seen by both").unwrap();
    assert_eq!(std::fs::read(t2.join("f")).unwrap(), b"seen by both");
    let image = pool.join("images/pvc-u1.img");
    let loops = || {
        let out = std::process::Command::new("losetup")
            .arg("-j")
            .arg(&image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(loops(), 1, "one loop device for two pods");
    // A crash right after staging pvc-u2, before its pod's record.
    let (backend, id, staging, _) = volumes.resolve(&source("pvc-u2")).unwrap();
    backend.stage(&id, &staging).await.unwrap();
    drop(volumes);

    let (volumes, _assignments) = open();
    volumes.recover().await;
    assert!(
        backend
            .volume(&id)
            .await
            .unwrap()
            .unwrap()
            .staged_at
            .is_none(),
        "no pod recorded pvc-u2: released at start"
    );
    volumes.unmount_pod("p1").await.unwrap();
    assert_eq!(loops(), 1, "p2 still has it");
    volumes.unmount_pod("p2").await.unwrap();
    assert_eq!(loops(), 0);
    volumes.pass(&set(vec![class()])).await;
    let leaked = leaks(&pool, &claims).await.unwrap();
    assert!(leaked.is_empty(), "{leaked:?}");
    assert!(
        std::fs::read_dir(pool.join("images"))
            .unwrap()
            .next()
            .is_none(),
        "both volumes collected once no claim references them"
    );
}

#[tokio::test]
async fn pods_whose_nfs_mounts_died_with_the_previous_agent_are_restarted() {
    let fake = Arc::new(FakeBackend::new(100 * GIB));
    let dir = tempfile::tempdir().unwrap();
    let open = |fake: &Arc<FakeBackend>| {
        let export = Arc::clone(fake);
        let opener: NfsOpener =
            Box::new(move |_: &wanted::NfsTarget| Arc::clone(&export) as Arc<dyn VolumeBackend>);
        let (_, assigned) = watch::channel(None);
        NodeVolumes::new(
            "n1",
            Backends::new(None, Some(opener), BTreeMap::new()),
            dir.path(),
            assigned,
            VolumeTimers::default(),
        )
        .0
    };
    let nfs = VolumeSource::Csi {
        driver: c4m_core::volumes::NFS_DRIVER.into(),
        handle: "pvc-shared".into(),
        fs_type: None,
        attributes: BTreeMap::from([
            ("server".to_string(), "10.0.0.1".to_string()),
            ("share".to_string(), "/export".to_string()),
        ]),
    };
    fake.provision(&ProvisionRequest::new(
        VolumeId::new("pvc-shared").unwrap(),
        GIB,
    ))
    .await
    .unwrap();
    let volumes = open(&fake);
    volumes
        .mount("p1", "data", &nfs, false, &dir.path().join("t1"))
        .await
        .unwrap();
    drop(volumes);

    // The next agent: the mount is made again, and its pod restarted once
    // someone restarts pods.
    let volumes = open(&fake);
    volumes.recover().await;
    let restarts = Arc::new(Restarts::default());
    volumes.set_restarts(Arc::clone(&restarts) as Arc<dyn RestartUsers>);
    let asked = restarts.0.lock().unwrap().clone();
    assert_eq!(
        asked,
        [(
            vec!["p1".to_string()],
            RestartReason::mount_lost("pvc-shared")
        )]
    );
    let held = fake
        .volume(&VolumeId::new("pvc-shared").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(held.staged_at.is_some(), "staged again");
}
