//! The local backend served as a CSI driver on a unix socket, driven by the
//! CSI client in the spec's order, with the csi-sanity checks that matter
//! ported (root: real loop devices and mounts). No third-party CSI driver
//! installs on this machine, so the client is tested against c4m's own.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use c4m_storage::csi::proto::controller_service_capability::rpc::Type as ControllerRpc;
use c4m_storage::csi::proto::node_service_capability::rpc::Type as NodeRpc;
use c4m_storage::csi::{CsiClient, CsiDriver, proto, serve_driver};
use c4m_storage::testing::{CleanupGuard, leaks, require_root_and};
use c4m_storage::{FakeBackend, LocalBackend, VolumeBackend};
use tokio_util::sync::CancellationToken;

/// Serves `backend` on a socket in `dir` and connects a client.
async fn serve(
    backend: Arc<dyn VolumeBackend>,
    dir: &std::path::Path,
) -> (
    CsiClient,
    CancellationToken,
    tokio::task::JoinHandle<c4m_storage::Result<()>>,
    std::path::PathBuf,
) {
    let socket = dir.join("csi.sock");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let driver = CsiDriver::new("local.storage.c4m.io", "node-1", backend);
        let (socket, shutdown) = (socket.clone(), shutdown.clone());
        async move { serve_driver(driver, &socket, shutdown).await }
    });
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "socket mode"
    );
    (
        CsiClient::connect(&socket).await.unwrap(),
        shutdown,
        server,
        socket,
    )
}

/// The protocol layer alone, over the in-memory backend (no root).
#[tokio::test]
async fn csi_driver_and_client_over_the_fake_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (mut client, shutdown, server, socket) =
        serve(Arc::new(FakeBackend::new(1 << 30)), dir.path()).await;
    let info = client.discover().await.unwrap();
    assert_eq!(info.name, "local.storage.c4m.io");
    let vol = client
        .create_volume("pvc-1", 64 << 20, Default::default(), None)
        .await
        .unwrap();
    assert_eq!(
        client
            .create_volume("pvc-1", 64 << 20, Default::default(), None)
            .await
            .unwrap(),
        vol
    );
    let err = client
        .create_volume("pvc-1", 32 << 20, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::AlreadyExists));
    let err = client
        .create_volume("big", 2 << 30, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::ResourceExhausted));
    assert_eq!(client.capacity().await.unwrap(), (1 << 30) - (64 << 20));
    let (staging, target) = (dir.path().join("s"), dir.path().join("t"));
    client
        .mount(&info, &vol.volume_id, &staging, &target, false)
        .await
        .unwrap();
    client
        .mount(&info, &vol.volume_id, &staging, &target, false)
        .await
        .unwrap();
    let err = client.delete_volume(&vol.volume_id).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition));
    client
        .unmount(&info, &vol.volume_id, &staging, &target)
        .await
        .unwrap();
    client
        .unmount(&info, &vol.volume_id, &staging, &target)
        .await
        .unwrap();
    client
        .create_snapshot(&vol.volume_id, "snap")
        .await
        .unwrap();
    client.delete_snapshot("snap").await.unwrap();
    client.delete_snapshot("snap").await.unwrap();
    client.delete_volume(&vol.volume_id).await.unwrap();
    client.delete_volume(&vol.volume_id).await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(!socket.exists());
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs), fsfreeze"]
async fn local_backend_through_the_csi_socket() {
    require_root_and(&["losetup", "mkfs.ext4", "fsfreeze", "cp"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _guard = CleanupGuard::new([dir.path().to_path_buf()]);
    let pool = dir.path().join("pool");
    let mnt = dir.path().join("mnt");
    let backend = Arc::new(LocalBackend::open(&pool).unwrap());
    let (mut client, shutdown, server, socket) = serve(backend, dir.path()).await;
    // Identity, then the controller's and the node's capabilities.
    let info = client.discover().await.unwrap();
    assert_eq!(info.name, "local.storage.c4m.io");
    assert_eq!(info.node_id, "node-1");
    assert!(info.controller_service);
    for rpc in [
        ControllerRpc::CreateDeleteVolume,
        ControllerRpc::GetCapacity,
        ControllerRpc::CreateDeleteSnapshot,
        ControllerRpc::ExpandVolume,
    ] {
        assert!(
            info.controller_rpcs.contains(&rpc),
            "{rpc:?} in {:?}",
            info.controller_rpcs
        );
    }
    assert!(info.node_rpcs.contains(&NodeRpc::StageUnstageVolume));
    assert!(
        !info
            .controller_rpcs
            .contains(&ControllerRpc::PublishUnpublishVolume)
    );

    // Capacity is the pool's free space.
    let capacity = client.capacity().await.unwrap();
    assert!(capacity > 64 << 20, "{capacity}");

    // CreateVolume is idempotent; another size under the same name is ALREADY_EXISTS.
    let vol = client
        .create_volume("pvc-1", 32 << 20, Default::default(), None)
        .await
        .unwrap();
    assert_eq!(vol.capacity_bytes, 32 << 20);
    assert_eq!(
        client
            .create_volume("pvc-1", 32 << 20, Default::default(), None)
            .await
            .unwrap(),
        vol
    );
    let err = client
        .create_volume("pvc-1", 64 << 20, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::AlreadyExists), "{err:?}");
    let err = client
        .create_volume("", 32 << 20, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));

    // NodeStage / NodePublish are idempotent.
    let staging = mnt.join("staging/pvc-1");
    let target = mnt.join("pods/p1/volumes/data");
    client
        .mount(&info, &vol.volume_id, &staging, &target, false)
        .await
        .unwrap();
    client
        .mount(&info, &vol.volume_id, &staging, &target, false)
        .await
        .unwrap();
    std::fs::write(target.join("hello"), b"world").unwrap();

    // Deleting a volume in use is refused.
    let err = client.delete_volume(&vol.volume_id).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err:?}");

    // Snapshot create (twice) and a restore from it.
    let snap = client
        .create_snapshot(&vol.volume_id, "snap-1")
        .await
        .unwrap();
    assert!(snap.ready_to_use);
    assert_eq!(snap.source_volume_id, vol.volume_id);
    assert_eq!(
        client
            .create_snapshot(&vol.volume_id, "snap-1")
            .await
            .unwrap()
            .snapshot_id,
        snap.snapshot_id
    );
    let err = client
        .create_snapshot("no-such-volume", "snap-2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err:?}");
    let restored = client
        .create_volume(
            "pvc-2",
            32 << 20,
            Default::default(),
            Some(&snap.snapshot_id),
        )
        .await
        .unwrap();
    let err = client
        .create_volume("pvc-3", 32 << 20, Default::default(), Some("no-such-snap"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err:?}");
    let r_staging = mnt.join("staging/pvc-2");
    let r_target = mnt.join("pods/p2/volumes/data");
    client
        .mount(&info, &restored.volume_id, &r_staging, &r_target, true)
        .await
        .unwrap();
    assert_eq!(std::fs::read(r_target.join("hello")).unwrap(), b"world");
    assert!(
        std::fs::write(r_target.join("x"), b"x").is_err(),
        "published read-only"
    );

    // Expansion of a mounted volume: FAILED_PRECONDITION where the host refuses online resize.
    match client.expand(&vol.volume_id, 64 << 20).await {
        Ok(size) => assert_eq!(size, 64 << 20),
        Err(err) => assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err:?}"),
    }

    // NodeUnpublish and NodeUnstage, twice each: an unmounted path succeeds.
    for (id, staging, target) in [
        (&vol.volume_id, &staging, &target),
        (&restored.volume_id, &r_staging, &r_target),
    ] {
        client.unmount(&info, id, staging, target).await.unwrap();
        client.unmount(&info, id, staging, target).await.unwrap();
    }
    client
        .unpublish(&vol.volume_id, &mnt.join("never-mounted"))
        .await
        .unwrap();
    assert_eq!(
        client.expand(&vol.volume_id, 64 << 20).await.unwrap(),
        64 << 20,
        "offline expansion"
    );

    // Snapshot delete, DeleteVolume, each twice; missing ids succeed.
    client.delete_snapshot(&snap.snapshot_id).await.unwrap();
    client.delete_snapshot(&snap.snapshot_id).await.unwrap();
    for id in [&vol.volume_id, &restored.volume_id] {
        client.delete_volume(id).await.unwrap();
        client.delete_volume(id).await.unwrap();
    }
    client.delete_volume("never-existed").await.unwrap();
    client.delete_volume("not/a valid id").await.unwrap();
    let err = client.delete_volume("").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));

    // Raw calls csi-sanity makes: list, validate, and argument checks.
    let (_, controller, node) = client.services();
    let listed = controller
        .list_volumes(proto::ListVolumesRequest {
            max_entries: 0,
            starting_token: String::new(),
        })
        .await
        .unwrap();
    assert!(listed.into_inner().entries.is_empty());
    let validate = proto::ValidateVolumeCapabilitiesRequest {
        volume_id: "pvc-1".into(),
        volume_context: Default::default(),
        volume_capabilities: vec![],
        parameters: Default::default(),
        secrets: Default::default(),
    };
    assert_eq!(
        controller
            .validate_volume_capabilities(validate)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
    let stage = proto::NodeStageVolumeRequest {
        volume_id: "pvc-1".into(),
        staging_target_path: String::new(),
        ..Default::default()
    };
    assert_eq!(
        node.node_stage_volume(stage).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    assert!(leaks(&pool, &mnt).await.unwrap().is_empty());
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

/// A registered driver used as a backend (`CsiBackend`): each operation
/// reaches the served backend through the spec's RPCs (no root).
#[tokio::test]
async fn a_csi_driver_is_a_backend_through_csi_backend() {
    use c4m_storage::csi::CsiBackend;
    use c4m_storage::{ProvisionRequest, SnapshotId, VolumeId};

    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new(4 << 30));
    let (_, shutdown, server, socket) =
        serve(Arc::clone(&fake) as Arc<dyn VolumeBackend>, dir.path()).await;

    let wrong = CsiBackend::new("other.example.com", &socket);
    let err = wrong.capacity().await.unwrap_err().to_string();
    assert!(
        err.contains("is \"local.storage.c4m.io\", not \"other.example.com\""),
        "{err}"
    );

    let csi = CsiBackend::new("local.storage.c4m.io", &socket);
    assert_eq!(csi.capacity().await.unwrap().available_bytes, 4 << 30);
    let id = VolumeId::new("pvc-1").unwrap();
    let made = csi
        .provision(&ProvisionRequest::new(id.clone(), 1 << 30))
        .await
        .unwrap();
    assert_eq!(made.size_bytes, 1 << 30);
    let (staging, target) = (dir.path().join("stage"), dir.path().join("pub"));
    csi.stage(&id, &staging).await.unwrap();
    csi.publish(&id, &staging, &target, true).await.unwrap();
    let held = fake.volume(&id).await.unwrap().unwrap();
    assert_eq!(held.staged_at.as_deref(), Some(staging.as_path()));
    assert_eq!(held.published_at, std::slice::from_ref(&target));

    let snapshot = SnapshotId::new("snapshot-1").unwrap();
    let taken = csi.snapshot(&id, &snapshot).await.unwrap();
    assert_eq!(
        (taken.source_volume, taken.size_bytes),
        (id.clone(), 1 << 30)
    );
    assert_eq!(csi.expand(&id, 2 << 30).await.unwrap(), 2 << 30);

    csi.unpublish(&id, &target).await.unwrap();
    csi.unstage(&id, &staging).await.unwrap();
    csi.delete_snapshot(&snapshot).await.unwrap();
    csi.delete(&id).await.unwrap();
    csi.delete(&id).await.unwrap();
    assert!(fake.list().await.unwrap().is_empty());
    assert!(fake.list_snapshots().await.unwrap().is_empty());

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
