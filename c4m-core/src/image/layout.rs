//! Writing an OCI image layout, so that tests and the quickstart can build
//! images (e.g. from busybox) without a registry.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{
    Config, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, RootFsBuilder,
};

use super::blob::digest_of;
use crate::{Error, Result};

/// Writes an OCI image layout into directory `dest` holding one image
/// tagged `tag` (the `org.opencontainers.image.ref.name` annotation), made
/// of `layers` (uncompressed tars, lowest first; they are stored gzipped)
/// and `config`. Returns the manifest digest.
pub fn write_oci_layout(
    dest: &Path,
    tag: &str,
    layers: &[Vec<u8>],
    config: Config,
) -> Result<String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Image(format!("write OCI layout {}: {what}: {e}", dest.display()))
    };
    let blobs = dest.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .map_err(|e| Error::io(format!("create {}", blobs.display()), e))?;
    let put = |bytes: &[u8]| -> Result<(oci_spec::image::Digest, u64)> {
        let digest = digest_of(bytes);
        let path = blobs.join(&digest["sha256:".len()..]);
        std::fs::write(&path, bytes)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        let parsed = digest.parse().map_err(|e| fail("digest", &e))?;
        Ok((parsed, bytes.len() as u64))
    };
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for layer in layers {
        diff_ids.push(digest_of(layer));
        let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
        gzip.write_all(layer)
            .map_err(|e| fail("compress layer", &e))?;
        let compressed = gzip.finish().map_err(|e| fail("compress layer", &e))?;
        let (digest, size) = put(&compressed)?;
        descriptors.push(Descriptor::new(MediaType::ImageLayerGzip, size, digest));
    }
    let arch = super::import::host_architecture();
    let image_config = ImageConfigurationBuilder::default()
        .architecture(arch)
        .os("linux")
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .map_err(|e| fail("rootfs", &e))?,
        )
        .build()
        .map_err(|e| fail("config", &e))?;
    let config_json = image_config.to_string().map_err(|e| fail("config", &e))?;
    let (config_digest, config_size) = put(config_json.as_bytes())?;
    let manifest_json = manifest_json(config_size, config_digest, descriptors)?;
    let (manifest_digest, manifest_size) = put(manifest_json.as_bytes())?;
    let mut manifest_descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest_size,
        manifest_digest.clone(),
    );
    manifest_descriptor.set_annotations(Some(
        [(
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        )]
        .into(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()
        .map_err(|e| fail("index", &e))?;
    let index_json = index.to_string().map_err(|e| fail("index", &e))?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|e| fail("oci-layout", &e))?;
    let layout_json = serde_json::to_string(&layout).map_err(|e| fail("oci-layout", &e))?;
    for (name, content) in [("index.json", index_json), ("oci-layout", layout_json)] {
        let path = dest.join(name);
        std::fs::write(&path, content)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(manifest_digest.to_string())
}

/// An uncompressed tar of directory `dir`'s content (paths relative to it;
/// symlinks kept as symlinks), to use as a layer.
pub fn tar_directory(dir: &Path) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.into_inner())
        .map_err(|e| Error::io(format!("tar {}", dir.display()), e))
}

/// Writes a minimal root file system around a static busybox binary:
/// `/bin/busybox` with a symlink per applet, `/etc/passwd` and `/etc/group`
/// with `root` and `app` (1000:1000), `/etc/marker` (`from-image`), `/srv`
/// and a world-writable `/tmp`. Tests and the quickstart build their images
/// from it, without a registry.
pub fn write_busybox_rootfs(busybox: &Path, root: &Path) -> Result<()> {
    let io = |what: String| move |e: std::io::Error| Error::io(what, e);
    let bin = root.join("bin");
    for dir in ["bin", "etc", "srv", "tmp", "proc", "sys", "dev", "mnt"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(io(format!("create {}", path.display())))?;
    }
    std::fs::copy(busybox, bin.join("busybox"))
        .map_err(io(format!("copy {}", busybox.display())))?;
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io(format!("run {} --list", busybox.display())))?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    if !list.status.success() || applets.trim().is_empty() {
        return Err(Error::Image(format!(
            "{} --list printed no applets: not a busybox binary?",
            busybox.display()
        )));
    }
    for applet in applets
        .lines()
        .filter(|a| *a != "busybox" && !a.contains('/'))
    {
        let link = bin.join(applet);
        std::os::unix::fs::symlink("busybox", &link)
            .map_err(io(format!("link {}", link.display())))?;
    }
    let tmp = root.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(io(format!("chmod {}", tmp.display())))?;
    for (file, content) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\napp:x:1000:\n"),
        ("etc/marker", "from-image\n"),
    ] {
        let path = root.join(file);
        std::fs::write(&path, content).map_err(io(format!("write {}", path.display())))?;
    }
    Ok(())
}

/// Writes an OCI image layout into `dest` holding one busybox image tagged
/// `tag`: one layer of [`write_busybox_rootfs`] around the static binary
/// `busybox`, and `config`. Returns the manifest digest. What tests,
/// benchmarks and the quickstart run, with no registry.
pub fn write_busybox_image(
    busybox: &Path,
    dest: &Path,
    tag: &str,
    config: Config,
) -> Result<String> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("create a scratch directory", e))?;
    let rootfs = scratch.path().join("rootfs");
    write_busybox_rootfs(busybox, &rootfs)?;
    write_oci_layout(dest, tag, &[tar_directory(&rootfs)?], config)
}

/// The JSON of an OCI image manifest with this config and these layers.
pub(super) fn manifest_json(
    config_size: u64,
    config_digest: oci_spec::image::Digest,
    layers: Vec<Descriptor>,
) -> Result<String> {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            config_digest,
        ))
        .layers(layers)
        .build()
        .and_then(|manifest| manifest.to_string())
        .map_err(|e| Error::Image(format!("build manifest: {e}")))
}
