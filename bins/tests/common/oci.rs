//! What tests of `oci` instances share: the check that the machine can run
//! them, and the busybox image they run.

use std::path::{Path, PathBuf};

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

/// An OCI layout tar of a busybox image tagged `1` (the layout itself is
/// left in `dir/layout`).
pub fn busybox_image_tar(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let config = oci_spec::image::ConfigBuilder::default()
        .cmd(vec!["/bin/sh".to_string()])
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .unwrap();
    let layout = dir.join("layout");
    c4m_core::write_busybox_image(busybox, &layout, "1", config).unwrap();
    let tar = dir.join("busybox.tar");
    std::fs::write(&tar, c4m_core::tar_directory(&layout).unwrap()).unwrap();
    tar
}
