//! What tests of `oci` instances share: the check that the machine can run
//! them.

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
