//! The `docker` driver: dockerd 20.10 on a socket of its own, pulling the
//! test image from the loopback registry (plain HTTP, which dockerd allows
//! for 127.0.0.0/8).

use std::sync::Arc;

use c4m_core::{ContainerRuntime, DockerRuntime};
use c4m_testkit::Dockerd;

use crate::kit::Kit;
use crate::suite::{self, Gaps};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_conforms() {
    let kit = Kit::new().await;
    let daemon = Dockerd::start(&kit.dir().join("dockerd"));
    let socket = daemon.socket().to_owned();
    suite::run("docker", &kit, Gaps::none(), move || {
        let socket = socket.clone();
        async move {
            Arc::new(
                DockerRuntime::connect(&socket)
                    .await
                    .expect("the docker driver connects to its dockerd"),
            ) as Arc<dyn ContainerRuntime>
        }
    })
    .await;
}
