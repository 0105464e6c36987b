//! The `cri` driver against containerd 1.6's CRI service (CRI-O is not
//! packaged here; both serve the same `runtime.v1`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use c4m_core::{ContainerRuntime, ContainerState, Error};
use c4m_image::write_busybox_image;
use c4m_runtime::CriRuntime;
use c4m_testkit::{Containerd, ContainerdOptions};
use oci_spec::image::ConfigBuilder;

use crate::kit::{self, Kit};
use crate::suite;

/// Pushes a pod sandbox ("pause") image to the kit's registry: busybox
/// sleeping for ever (there is no internet to fetch Kubernetes' pause).
/// Its reference.
pub(crate) fn push_pause_image(kit: &Kit) -> String {
    let config = ConfigBuilder::default()
        .cmd(vec!["/bin/sleep".to_string(), "2147483647".to_string()])
        .build()
        .expect("pause image config");
    let layout = kit.dir().join("pause-layout");
    write_busybox_image(Path::new("/bin/busybox"), &layout, "1", config)
        .expect("pause image layout");
    kit.registry().push_oci_layout(&layout, "1", "c4m/pause:1");
    format!("{}/c4m/pause:1", kit.registry().host())
}

/// containerd with its CRI service reaching the kit's registry, and the
/// pause image there.
pub(crate) fn containerd_for(kit: &Kit) -> Containerd {
    let sandbox_image = push_pause_image(kit);
    Containerd::start_with(
        &kit.dir().join("containerd"),
        &ContainerdOptions {
            insecure_registries: vec![kit.registry().host()],
            sandbox_image: Some(sandbox_image),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd (CRI) + runc"]
async fn cri_conforms() {
    let kit = Kit::new().await;
    let daemon = containerd_for(&kit);
    let socket = daemon.socket().to_owned();
    let data = kit.dir().join("cri");
    suite::run("cri", &kit, move || {
        let (socket, data) = (socket.clone(), data.clone());
        async move {
            Arc::new(
                CriRuntime::connect(&socket, &data, Ipv4Addr::LOCALHOST.into())
                    .await
                    .expect("cri driver"),
            ) as Arc<dyn ContainerRuntime>
        }
    })
    .await;
}

/// What only this driver has: the sandbox. A restart whose new container
/// fails to start leaves the reused sandbox without a container; the
/// driver still lists it (exited, no exit code) so the agent can remove
/// it, and removing takes the sandbox too. A restart as privileged gets a
/// privileged sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd (CRI) + runc"]
async fn sandboxes_are_never_left_behind() {
    let kit = Kit::new().await;
    let daemon = containerd_for(&kit);
    let rt = CriRuntime::connect(
        daemon.socket(),
        &kit.dir().join("cri"),
        Ipv4Addr::LOCALHOST.into(),
    )
    .await
    .expect("cri driver");
    let runtime_objects = || daemon.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);

    let mut spec = kit::spec(&kit, "sandboxed", &["true"]);
    rt.start(&spec).await.expect("start");
    kit::wait_exit(&rt, &spec.id).await;
    spec.command = vec!["/no/such/program".into()];
    let error = rt.start(&spec).await.expect_err("no such program");
    assert!(error.to_string().contains("StartContainer"), "{error}");
    assert_eq!(runtime_objects().lines().count(), 1, "only the sandbox");
    let listed = rt.list().await.expect("list");
    let found = listed
        .iter()
        .find(|s| s.id == spec.id)
        .expect("the sandbox is listed");
    assert!(
        matches!(
            found.state,
            ContainerState::Exited {
                exit_code: None,
                ..
            }
        ),
        "{found:?}"
    );
    rt.stop(&spec.id, Duration::ZERO).await.expect("stop");
    rt.remove(&spec.id).await.expect("remove");
    assert!(matches!(
        rt.status(&spec.id).await,
        Err(Error::ContainerNotFound(_))
    ));
    assert_eq!(runtime_objects(), "", "nothing is left");

    let mut spec = kit::spec(&kit, "escalates", &["true"]);
    rt.start(&spec).await.expect("start");
    kit::wait_exit(&rt, &spec.id).await;
    spec.privileged = true;
    spec.command = vec!["sh".into(), "-c".into(), "exit 5".into()];
    rt.start(&spec).await.expect("restart as privileged");
    assert_eq!(
        kit::exit_code(&kit::wait_exit(&rt, &spec.id).await),
        Some(5)
    );
    rt.remove(&spec.id).await.expect("remove");
    assert_eq!(runtime_objects(), "", "nothing is left");
}
