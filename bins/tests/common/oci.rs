//! What tests of `oci` instances share: the check that the machine can run
//! them, and their Deployments.

/// Fails loudly unless this machine can run oci containers.
pub fn require_oci() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the oci driver needs root (namespaces, overlayfs, cgroups)"
    );
    assert!(
        c4m_core::find_oci_binaries().is_some(),
        "runc (or crun) and conmon are required: apt-get install runc conmon"
    );
}

/// An oci Deployment: see [`super::deployment_of`].
pub fn oci_deployment(
    name: &str,
    image: &str,
    replicas: usize,
    vpc: Option<&str>,
    script: &str,
    pod_spec: &str,
) -> String {
    super::deployment_of("oci", name, image, replicas, vpc, script, pod_spec)
}
