//! The `containerd` driver against Debian's containerd 1.6, started here on
//! a socket of its own; images move from c4m's own store into it.

use std::sync::Arc;

use c4m_core::ContainerRuntime;
use c4m_image::ImageStore;
use c4m_runtime::ContainerdRuntime;
use c4m_testkit::Containerd;

use crate::kit::Kit;
use crate::suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd + runc"]
async fn containerd_conforms() {
    let kit = Kit::new().await;
    let daemon = Containerd::start(&kit.dir().join("containerd"));
    let socket = daemon.socket().to_owned();
    let data = kit.dir().join("c4m-containerd");
    let images = Arc::new(ImageStore::open(kit.dir().join("images")).expect("image store"));
    suite::run("containerd", &kit, move || {
        let (socket, data, images) = (socket.clone(), data.clone(), Arc::clone(&images));
        async move {
            Arc::new(
                ContainerdRuntime::connect(&socket, &data, images)
                    .await
                    .expect("containerd driver"),
            ) as Arc<dyn ContainerRuntime>
        }
    })
    .await;
}
