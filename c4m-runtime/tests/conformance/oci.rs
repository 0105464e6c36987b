//! The `oci` driver: runc (or crun) under conmon, images in c4m's own store.

use std::sync::Arc;

use c4m_core::ContainerRuntime;
use c4m_image::ImageStore;
use c4m_runtime::{OciRuntime, find_oci_binaries};

use crate::kit::Kit;
use crate::suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + runc + conmon"]
async fn oci_conforms() {
    assert!(
        find_oci_binaries().is_some(),
        "the oci driver needs runc (or crun) and conmon: apt-get install runc conmon"
    );
    let kit = Kit::new().await;
    let data = kit.dir().join("oci");
    let images = Arc::new(ImageStore::open(kit.dir().join("images")).expect("image store"));
    suite::run("oci", &kit, move || {
        let data = data.clone();
        let images = Arc::clone(&images);
        async move {
            Arc::new(OciRuntime::new(&data, images).expect("oci driver"))
                as Arc<dyn ContainerRuntime>
        }
    })
    .await;
}
