//! What tests of `oci` instances share: the check that the machine can run
//! them, and a cluster to run them in.

use super::kubectl::Kubectl;
use super::{Cluster, busybox_image_tar};

/// Fails loudly unless this machine can run oci containers.
pub(crate) fn require_oci() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the oci driver needs root (namespaces, overlayfs, cgroups)"
    );
    assert!(
        c4m_runtime::find_oci_binaries().is_some(),
        "runc (or crun) and conmon are required: apt-get install runc conmon"
    );
}

/// A cluster with one `oci` node `name` started with agent `flags`, the
/// busybox image imported as `bb:1`, and kubectl for it.
pub(crate) fn oci_cluster_with(name: &str, flags: &[&str]) -> (Cluster, Kubectl) {
    require_oci();
    let mut cluster = Cluster::start();
    cluster.start_agent_with(name, "4", "4Gi", flags);
    let tar = busybox_image_tar(cluster.dir.path());
    cluster.ok(&["image", "import", tar.to_str().unwrap(), "--name", "bb"]);
    let kubectl = Kubectl::for_cluster(&cluster);
    (cluster, kubectl)
}
