use std::sync::Mutex;

use async_trait::async_trait;
use c4m_core::volumes::{ProjectedFile, VolumeSource};

use super::*;

/// Records what it is asked; makes the target directory as a mount would.
#[derive(Debug, Default)]
pub(crate) struct FakeClaims {
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl ClaimMounts for FakeClaims {
    async fn mount(
        &self,
        pod_uid: &str,
        volume: &str,
        source: &VolumeSource,
        read_only: bool,
        target: &Path,
    ) -> Result<(), String> {
        std::fs::create_dir_all(target).map_err(|e| e.to_string())?;
        let VolumeSource::Csi { handle, .. } = source else {
            return Err(format!(
                "MountVolume.SetUp failed for volume {volume:?}: not csi"
            ));
        };
        self.calls
            .lock()
            .unwrap()
            .push(format!("mount {pod_uid} {volume} {handle} ro={read_only}"));
        Ok(())
    }

    async fn unmount_pod(&self, pod_uid: &str) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("unmount {pod_uid}"));
        Ok(())
    }
}

async fn volumes(dir: &Path) -> (PodVolumes, Arc<FakeClaims>) {
    let claims = Arc::new(FakeClaims::default());
    let volumes = PodVolumes::open(dir, claims.clone(), 1 << 30).await;
    (volumes, claims)
}

fn pod(yaml: &str, resolved: serde_json::Value) -> Instance {
    let mut pod: Instance = serde_yaml::from_str(yaml).unwrap();
    pod.metadata.uid = Some("0a1b2c3d-uid".into());
    if !resolved.is_null() {
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(RESOLVED_VOLUMES.into(), resolved.to_string());
    }
    pod
}

fn files(entries: &[(&str, &str)]) -> serde_json::Value {
    let files: Vec<ProjectedFile> = entries
        .iter()
        .map(|(path, text)| ProjectedFile {
            path: path.to_string(),
            base64: base64::engine::general_purpose::STANDARD.encode(text),
            mode: 0o644,
        })
        .collect();
    serde_json::json!({"kind": "files", "files": files})
}

const POD: &str = r#"
metadata: {name: web, namespace: default}
spec:
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: config, configMap: {name: app}}
  - {name: data, persistentVolumeClaim: {claimName: data-web}}
  containers:
  - name: app
    env: [{name: POD_NAME, value: web}]
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: config, mountPath: /etc/app}
    - {name: data, mountPath: /data}
"#;

fn resolved_for_pod(config: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "config": config,
        "data": {
            "kind": "claim",
            "claim": "default/data-web",
            "source": {"type": "csi", "driver": "c4m.io/local", "handle": "pvc-1"},
            "read_only": false,
        },
    })
}

/// emptyDir, resolved files and a claim are made where the pod's
/// directory says; the container's mounts point there with its access and
/// propagation; the files change in place; teardown gives the claim back
/// and removes everything.
#[tokio::test]
async fn volumes_are_made_mounted_updated_and_torn_down() {
    let dir = tempfile::tempdir().unwrap();
    let (volumes, claims) = volumes(dir.path()).await;
    let pod = pod(POD, resolved_for_pod(files(&[("app.conf", "v1")])));
    let dirs = volumes.set_up("default_web_0a1b2c3d", &pod).await.unwrap();
    let base = dir.path().join("pod-volumes/default_web_0a1b2c3d/volumes");
    assert_eq!(dirs["scratch"].path, base.join("scratch"));
    assert!(dirs["config"].read_only && !dirs["scratch"].read_only && !dirs["data"].read_only);
    assert_eq!(
        std::fs::metadata(base.join("scratch"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o777
    );
    assert_eq!(
        std::fs::read_to_string(base.join("config/app.conf")).unwrap(),
        "v1"
    );
    assert_eq!(
        *claims.calls.lock().unwrap(),
        ["mount 0a1b2c3d-uid data pvc-1 ro=false"]
    );

    let container = &pod.spec.as_ref().unwrap().containers[0];
    let spec = ContainerSpec::from_pod(&pod, "id".into()).unwrap();
    let mounts = volumes
        .mounts_for(
            "default_web_0a1b2c3d",
            container,
            &spec,
            &dirs,
            "spec.containers[0]",
        )
        .unwrap();
    let summary: Vec<(String, String, bool, MountPropagation)> = mounts
        .iter()
        .map(|m| {
            (
                m.destination.display().to_string(),
                m.source.strip_prefix(&base).unwrap().display().to_string(),
                m.read_only,
                m.propagation,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "/scratch".into(),
                "scratch".into(),
                false,
                MountPropagation::None
            ),
            (
                "/etc/app".into(),
                "config".into(),
                true,
                MountPropagation::None
            ),
            ("/data".into(), "data".into(), false, MountPropagation::None),
        ]
    );

    // A new assignment with other files: rewritten in place.
    let edited = self::pod(
        POD,
        resolved_for_pod(files(&[("app.conf", "v2"), ("extra", "x")])),
    );
    volumes
        .refresh_files("default_web_0a1b2c3d", &edited)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(base.join("config/app.conf")).unwrap(),
        "v2"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("config/extra")).unwrap(),
        "x"
    );

    assert!(volumes.tear_down("default_web_0a1b2c3d").await);
    assert_eq!(
        claims.calls.lock().unwrap().last().unwrap(),
        "unmount 0a1b2c3d-uid"
    );
    assert!(!dir.path().join("pod-volumes/default_web_0a1b2c3d").exists());
    assert!(
        volumes.tear_down("default_web_0a1b2c3d").await,
        "twice is Ok"
    );
}

/// A volume the control plane could not resolve yet keeps the pod waiting
/// with its message; one it has not resolved at all says so; a hostPath
/// of the wrong type names the volume.
#[tokio::test]
async fn what_cannot_be_mounted_yet_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (volumes, _) = volumes(dir.path()).await;
    let waiting = serde_json::json!({
        "config": {"kind": "waiting", "message": "configmap \"app\" not found"},
    });
    let error = volumes.set_up("p", &pod(POD, waiting)).await.unwrap_err();
    assert_eq!(error.0, "configmap \"app\" not found");
    let error = volumes
        .set_up("p", &pod(POD, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert_eq!(error.0, "volume \"config\" is not resolved yet");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let host = format!(
        "spec: {{volumes: [{{name: logs, hostPath: {{path: {}, type: Directory}}}}], containers: []}}",
        file.display()
    );
    let error = volumes
        .set_up("p", &pod(&host, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert!(
        error
            .0
            .starts_with("MountVolume.SetUp failed for volume \"logs\": ")
            && error.0.contains("is not a directory"),
        "{}",
        error.0
    );
}

/// subPath resolves inside the volume, making what is missing; a symbolic
/// link that leads out of the volume is refused; subPathExpr expands the
/// container's variables.
#[test]
fn sub_paths_stay_inside_their_volume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vol");
    std::fs::create_dir_all(root.join("inside")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
    std::os::unix::fs::symlink("inside", root.join("in")).unwrap();
    let canonical = std::fs::canonicalize(&root).unwrap();
    assert_eq!(
        resolve_sub_path(&root, "made/deep").unwrap(),
        canonical.join("made/deep")
    );
    assert!(root.join("made/deep").is_dir());
    assert_eq!(
        resolve_sub_path(&root, "in").unwrap(),
        canonical.join("inside"),
        "a link inside the volume is followed"
    );
    let error = resolve_sub_path(&root, "out/ssl").unwrap_err();
    assert!(error.contains("leads out of the volume"), "{error}");
    assert!(!Path::new("/etc/ssl/made").exists());
}

/// The writable mounts a container gets name the field when a subPath
/// cannot be used, and subPathExpr is expanded (root: the subPath is bound).
#[tokio::test]
#[ignore = "needs root (bind mounts)"]
async fn sub_path_mounts_are_bound_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (volumes, _) = volumes(dir.path()).await;
    let yaml = r#"
spec:
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: app
    env: [{name: POD_NAME, value: web-0}]
    volumeMounts:
    - {name: scratch, mountPath: /logs, subPathExpr: "logs/$(POD_NAME)"}
    - {name: scratch, mountPath: /escape, subPath: out}
"#;
    let pod = pod(yaml, serde_json::Value::Null);
    let dirs = volumes.set_up("p", &pod).await.unwrap();
    std::os::unix::fs::symlink("/etc", dirs["scratch"].path.join("out")).unwrap();
    let mut container = pod.spec.as_ref().unwrap().containers[0].clone();
    let spec = ContainerSpec::from_pod(&pod, "id".into()).unwrap();
    let error = volumes
        .mounts_for("p", &container, &spec, &dirs, "spec.containers[0]")
        .unwrap_err();
    assert!(
        error.starts_with("spec.containers[0].volumeMounts[1]: subPath \"out\" of volume \"scratch\": it leads out of the volume"),
        "{error}"
    );
    container.volume_mounts.as_mut().unwrap().truncate(1);
    let mounts = volumes
        .mounts_for("p", &container, &spec, &dirs, "spec.containers[0]")
        .unwrap();
    std::fs::write(mounts[0].source.join("seen"), "through the bind").unwrap();
    assert_eq!(
        std::fs::read_to_string(dirs["scratch"].path.join("logs/web-0/seen")).unwrap(),
        "through the bind"
    );
    assert!(volumes.tear_down("p").await);
    assert!(!dir.path().join("pod-volumes/p").exists());
}

/// A disk emptyDir with sizeLimit is a file system of that size: a write
/// past it fails with ENOSPC; a memory one is a tmpfs of its limit; both
/// go with the pod, also when found orphaned.
#[tokio::test]
#[ignore = "needs root (loop devices, mounts)"]
async fn sized_empty_dirs_stop_writes_at_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (volumes, _) = volumes(dir.path()).await;
    let yaml = r#"
spec:
  volumes:
  - {name: disk, emptyDir: {sizeLimit: 16Mi}}
  - {name: memory, emptyDir: {medium: Memory, sizeLimit: 4Mi}}
  containers: [{name: app}]
"#;
    let pod = pod(yaml, serde_json::Value::Null);
    let dirs = volumes.set_up("p", &pod).await.unwrap();
    volumes.set_up("p", &pod).await.expect("again: idempotent");
    for (name, write) in [("disk", 32usize << 20), ("memory", 8 << 20)] {
        let error = std::fs::write(dirs[name].path.join("fill"), vec![7u8; write]).unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(28),
            "{name}: ENOSPC, not {error}"
        );
    }
    volumes.tear_down_orphans(&HashSet::new()).await;
    assert!(!dir.path().join("pod-volumes/p").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.path().display().to_string()),
        "{mounts}"
    );
}

/// After a restart, the volumes of pods still assigned (adopted) stay; the
/// others' go, except those whose containers are still being removed,
/// which go once they are.
#[tokio::test]
async fn orphans_go_adopted_pods_and_pods_being_removed_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (volumes, claims) = volumes(dir.path()).await;
    let yaml = "spec: {volumes: [{name: d, emptyDir: {}}], containers: []}";
    for id in ["adopted", "orphan", "removing"] {
        volumes
            .set_up(id, &pod(yaml, serde_json::Value::Null))
            .await
            .unwrap();
    }
    volumes.removing("removing");
    volumes
        .tear_down_orphans(&HashSet::from(["adopted".to_string()]))
        .await;
    let root = dir.path().join("pod-volumes");
    assert!(root.join("adopted/volumes/d").is_dir());
    assert!(root.join("removing/volumes/d").is_dir());
    assert!(!root.join("orphan").exists());
    assert_eq!(*claims.calls.lock().unwrap(), ["unmount 0a1b2c3d-uid"]);
    volumes.removed("removing").await;
    assert!(!root.join("removing").exists());
}

/// A node that cannot make sized file systems (here its pool is a file;
/// elsewhere no root or no losetup) still sets up every other volume, and
/// says why a sized one cannot be made.
#[tokio::test]
async fn without_sized_file_systems_other_volumes_still_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pod-scratch"), "not a directory").unwrap();
    let (volumes, _) = volumes(dir.path()).await;
    let plain = "spec: {volumes: [{name: d, emptyDir: {}}], containers: []}";
    volumes
        .set_up("plain", &pod(plain, serde_json::Value::Null))
        .await
        .unwrap();
    let sized = "spec: {volumes: [{name: d, emptyDir: {sizeLimit: 16Mi}}], containers: []}";
    let error = volumes
        .set_up("sized", &pod(sized, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert!(
        error.0.starts_with(
            "MountVolume.SetUp failed for volume \"d\": this node cannot make sized file systems"
        ),
        "{}",
        error.0
    );
    assert!(
        volumes.tear_down("sized").await,
        "nothing was listed to remove"
    );
    assert!(volumes.tear_down("plain").await);
}
