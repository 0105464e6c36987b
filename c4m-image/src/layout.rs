//! Writing an OCI image layout, so that tests and the quickstart can build
//! images (e.g. from busybox) without a registry.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{
    Config, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, RootFsBuilder,
};

use crate::blob::digest_of;
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
    let fail = |what: &str, e: c4m_core::BoxError| {
        Error::malformed(format!("write OCI layout {}: {what}", dest.display()), e)
    };
    let blobs = dest.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .map_err(|e| Error::io(format!("create {}", blobs.display()), e))?;
    let put = |bytes: &[u8]| -> Result<(oci_spec::image::Digest, u64)> {
        let digest = digest_of(bytes);
        let path = blobs.join(&digest["sha256:".len()..]);
        std::fs::write(&path, bytes)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        let parsed = digest
            .parse()
            .map_err(|e: oci_spec::OciSpecError| fail("digest", e.into()))?;
        Ok((parsed, bytes.len() as u64))
    };
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for layer in layers {
        diff_ids.push(digest_of(layer));
        let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
        gzip.write_all(layer)
            .map_err(|e| fail("compress layer", e.into()))?;
        let compressed = gzip
            .finish()
            .map_err(|e| fail("compress layer", e.into()))?;
        let (digest, size) = put(&compressed)?;
        descriptors.push(Descriptor::new(MediaType::ImageLayerGzip, size, digest));
    }
    let arch = crate::import::host_architecture();
    let image_config = ImageConfigurationBuilder::default()
        .architecture(arch)
        .os("linux")
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .map_err(|e| fail("rootfs", e.into()))?,
        )
        .build()
        .map_err(|e| fail("config", e.into()))?;
    let config_json = image_config
        .to_string()
        .map_err(|e| fail("config", e.into()))?;
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
        .map_err(|e| fail("index", e.into()))?;
    let index_json = index.to_string().map_err(|e| fail("index", e.into()))?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|e| fail("oci-layout", e.into()))?;
    let layout_json = serde_json::to_string(&layout).map_err(|e| fail("oci-layout", e.into()))?;
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
        return Err(Error::Invalid(format!(
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
    write_busybox_image_with(busybox, &[], dest, tag, config)
}

/// [`write_busybox_image`] with each of `executables` added to the layer
/// ([`add_executable`]).
fn write_busybox_image_with(
    busybox: &Path,
    executables: &[&Path],
    dest: &Path,
    tag: &str,
    config: Config,
) -> Result<String> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("create a scratch directory", e))?;
    let rootfs = scratch.path().join("rootfs");
    write_busybox_rootfs(busybox, &rootfs)?;
    for executable in executables {
        add_executable(&rootfs, executable)?;
    }
    write_oci_layout(dest, tag, &[tar_directory(&rootfs)?], config)
}

/// An OCI image layout tar of a busybox image tagged `tag` with each of
/// `executables` added ([`write_busybox_image_with`]), `PATH=/bin` and
/// `/bin/sh` as its command: what `c4m image build` imports.
pub fn busybox_image_tar(busybox: &Path, executables: &[&Path], tag: &str) -> Result<Vec<u8>> {
    let config = ConfigBuilder::default()
        .cmd(vec!["/bin/sh".to_string()])
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .map_err(|e| Error::malformed("image config", e))?;
    let scratch = tempfile::tempdir().map_err(|e| Error::io("create a scratch directory", e))?;
    let layout = scratch.path().join("layout");
    write_busybox_image_with(busybox, executables, &layout, tag, config)?;
    tar_directory(&layout)
}

/// Adds a host executable to root file system `root` as `/bin/NAME`, with
/// the shared libraries and loader `ldd` names for it, each at the path it
/// has on the host (a static executable brings none). What it loads at run
/// time beyond those (`dlopen`) is not found this way.
pub(crate) fn add_executable(root: &Path, executable: &Path) -> Result<()> {
    let io = |what: String| move |e: std::io::Error| Error::io(what, e);
    let name = executable
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file name", executable.display())))?;
    let ldd = std::process::Command::new("ldd")
        .arg(executable)
        .output()
        .map_err(io(format!(
            "run ldd {} (it comes with libc-bin)",
            executable.display()
        )))?;
    let listed = String::from_utf8_lossy(&ldd.stdout);
    let libraries = if listed.contains("statically linked") || !ldd.status.success() {
        // ldd fails on what it cannot load: fine for a static executable,
        // an error for anything else.
        let said = String::from_utf8_lossy(&ldd.stderr);
        if !ldd.status.success() && !said.contains("not a dynamic executable") {
            return Err(Error::Invalid(format!(
                "ldd {}: {}",
                executable.display(),
                said.trim()
            )));
        }
        Vec::new()
    } else {
        shared_libraries(&listed)
            .map_err(|e| Error::malformed(format!("ldd {}", executable.display()), e))?
    };
    let mut copies = vec![(executable.to_path_buf(), root.join("bin").join(name))];
    for library in libraries {
        let inside = root.join(library.strip_prefix("/").unwrap_or(&library));
        copies.push((library, inside));
    }
    for (from, to) in copies {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        }
        // Never copy through what is there (a busybox applet link).
        match std::fs::remove_file(&to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("replace {}", to.display()), e));
            }
            _ => {}
        }
        std::fs::copy(&from, &to).map_err(io(format!(
            "copy {} to {}",
            from.display(),
            to.display()
        )))?;
    }
    Ok(())
}

/// The files in `ldd`'s listing (`libc.so.6 => /lib/.../libc.so.6 (0x..)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`); the kernel's vDSO has none. A
/// library ldd did not find is an error naming it.
pub(super) fn shared_libraries(
    listing: &str,
) -> std::result::Result<Vec<std::path::PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                target
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libraries.push(path.into());
        }
    }
    Ok(libraries)
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
        .map_err(|e| Error::malformed("build manifest", e))
}
