//! Importing OCI image layouts (directory or tar) and docker-archive tars.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, MediaType};
use serde::Deserialize;

use c4m_core::Reference;

use crate::{Error, Result};
use crate::{Image, ImageStore};

/// Annotation holding the full name of an image (containerd, nerdctl).
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Annotation holding the tag (or full name) of an image in an OCI layout.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Docker's manifest list, the equivalent of an OCI index.
pub(super) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// How deep nested indexes may go before the layout is called malformed.
pub(super) const MAX_INDEX_DEPTH: usize = 4;

pub(super) fn import(
    store: &ImageStore,
    path: &Path,
    default_name: Option<&str>,
) -> Result<Vec<Image>> {
    let default_name = match default_name {
        Some(name) => name.to_string(),
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.to_ascii_lowercase())
            .ok_or_else(|| Error::Invalid(format!("{}: give the image a name", path.display())))?,
    };
    let fail = |source: c4m_core::BoxError| Error::Import {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.into()))?;
    if meta.is_dir() {
        return import_oci_dir(store, path, &default_name).map_err(|e| fail(e.into()));
    }
    let unpacked = tempfile::tempdir_in(&store.tmp)
        .map_err(|e| Error::io(format!("create a directory in {}", store.tmp.display()), e))?;
    let file = File::open(path).map_err(|e| fail(e.into()))?;
    // `Archive::unpack` refuses entries that would land outside the target.
    tar::Archive::new(file)
        .unpack(unpacked.path())
        .map_err(|e| fail(Error::io("not a readable tar", e).into()))?;
    let dir = unpacked.path();
    let result = if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        import_oci_dir(store, dir, &default_name)
    } else if dir.join("manifest.json").is_file() {
        import_docker_archive(store, dir, &default_name)
    } else {
        Err(Error::Invalid(
            "neither an OCI image layout (oci-layout, index.json) nor a docker archive (manifest.json)"
                .into(),
        ))
    };
    result.map_err(|e| fail(e.into()))
}

/// A file of the unpacked archive, refused if it (or a symlink on the way)
/// leads outside the archive.
fn contained_file(dir: &Path, relative: &str) -> Result<PathBuf> {
    let outside = || Error::Invalid(format!("{relative:?} is outside the archive"));
    let canonical_dir = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("resolve {}", dir.display()), e))?;
    let path = dir
        .join(relative)
        .canonicalize()
        .map_err(|e| Error::io(format!("open {relative}"), e))?;
    if path.starts_with(&canonical_dir) {
        Ok(path)
    } else {
        Err(outside())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, relative: &str) -> Result<T> {
    let path = contained_file(dir, relative)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("read {relative}"), e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::malformed(relative.to_string(), e))
}

/// The name an OCI layout gives an image, if any.
fn layout_name(descriptor: &Descriptor, default_name: &str) -> Result<Option<Reference>> {
    let annotations = descriptor.annotations().clone().unwrap_or_default();
    if let Some(name) = annotations.get(CONTAINERD_NAME) {
        return Ok(Some(Reference::parse(name)?));
    }
    let Some(ref_name) = annotations.get(OCI_REF_NAME) else {
        return Ok(None);
    };
    // A full reference has a repository; a bare tag only tag characters.
    let bare_tag = !ref_name.contains(['/', ':', '@']);
    if bare_tag {
        Ok(Some(Reference::parse(&format!(
            "{default_name}:{ref_name}"
        ))?))
    } else {
        Ok(Some(Reference::parse(ref_name)?))
    }
}

fn import_oci_dir(store: &ImageStore, dir: &Path, default_name: &str) -> Result<Vec<Image>> {
    let index: ImageIndex = read_json(dir, "index.json")?;
    let copy = |digest: &str| -> Result<()> {
        let hex = crate::blob::digest_hex(digest)?;
        let path = contained_file(dir, &format!("blobs/sha256/{hex}"))?;
        let file = File::open(&path).map_err(|e| Error::io(format!("open blob {digest}"), e))?;
        store.blobs.write(digest, file).map(drop)
    };
    let mut images = Vec::new();
    for descriptor in index.manifests() {
        let name = layout_name(descriptor, default_name)?;
        let manifest = platform_manifest(store, descriptor, &copy, 0)?;
        copy(&manifest)?;
        let manifest_bytes = store.blobs.read(&manifest)?;
        let parsed = oci_spec::image::ImageManifest::from_reader(&manifest_bytes[..])
            .map_err(|e| Error::malformed(format!("manifest {manifest}"), e))?;
        copy(parsed.config().digest().as_ref())?;
        for layer in parsed.layers() {
            copy(layer.digest().as_ref())?;
        }
        images.push(store.add_image(&manifest, name.as_slice())?);
    }
    if images.is_empty() {
        return Err(Error::Invalid("index.json lists no image".into()));
    }
    Ok(images)
}

/// The digest of the image manifest for this machine's platform that
/// `descriptor` leads to (itself, or through nested indexes).
fn platform_manifest(
    store: &ImageStore,
    descriptor: &Descriptor,
    copy: &dyn Fn(&str) -> Result<()>,
    depth: usize,
) -> Result<String> {
    let digest = descriptor.digest().to_string();
    let is_index = match descriptor.media_type() {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST_LIST,
        _ => false,
    };
    if !is_index {
        return Ok(digest);
    }
    if depth >= MAX_INDEX_DEPTH {
        return Err(Error::Invalid(format!("index {digest}: nested too deep")));
    }
    copy(&digest)?;
    let bytes = store.blobs.read(&digest)?;
    let index = ImageIndex::from_reader(&bytes[..])
        .map_err(|e| Error::malformed(format!("index {digest}"), e))?;
    let chosen = platform_descriptor(&index).ok_or_else(|| {
        Error::Invalid(format!(
            "index {digest} has no image for linux/{}",
            host_architecture()
        ))
    })?;
    platform_manifest(store, chosen, copy, depth + 1)
}

/// The entry of an index for this machine (linux and its architecture; an
/// entry without a platform fits any).
pub(super) fn platform_descriptor(index: &ImageIndex) -> Option<&Descriptor> {
    let arch = host_architecture();
    index.manifests().iter().find(|m| {
        m.platform()
            .as_ref()
            .is_none_or(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
    })
}

/// The machine's architecture as OCI (GOARCH) names it.
pub(super) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// One image of a docker archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker_archive(store: &ImageStore, dir: &Path, default_name: &str) -> Result<Vec<Image>> {
    let entries: Vec<DockerArchiveEntry> = read_json(dir, "manifest.json")?;
    let mut images = Vec::new();
    // Docker archives may list the same layer file twice.
    let mut stored: HashMap<String, (String, u64, MediaType)> = HashMap::new();
    for entry in entries {
        let config_path = contained_file(dir, &entry.config)?;
        let config_file =
            File::open(&config_path).map_err(|e| Error::io(format!("open {}", entry.config), e))?;
        let (config_digest, config_size) = store.blobs.write_unknown(config_file)?;
        let config_bytes = store.blobs.read(&config_digest)?;
        ImageConfiguration::from_reader(&config_bytes[..])
            .map_err(|e| Error::malformed(entry.config.as_str(), e))?;
        let mut layers = Vec::new();
        for relative in &entry.layers {
            if !stored.contains_key(relative) {
                let path = contained_file(dir, relative)?;
                let media_type = layer_media_type(&path)?;
                let file =
                    File::open(&path).map_err(|e| Error::io(format!("open {relative}"), e))?;
                let (digest, size) = store.blobs.write_unknown(file)?;
                stored.insert(relative.clone(), (digest, size, media_type));
            }
            let (digest, size, media_type) = &stored[relative];
            let digest = digest
                .parse::<oci_spec::image::Digest>()
                .map_err(|e| Error::malformed(relative.to_string(), e))?;
            layers.push(Descriptor::new(media_type.clone(), *size, digest));
        }
        let config_digest_parsed = config_digest
            .parse::<oci_spec::image::Digest>()
            .map_err(|e| Error::malformed(entry.config.as_str(), e))?;
        let manifest_json =
            crate::layout::manifest_json(config_size, config_digest_parsed, layers)?;
        let (manifest_digest, _) = store.blobs.write_unknown(manifest_json.as_bytes())?;
        let names = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|tag| Reference::parse(tag))
            .collect::<Result<Vec<_>, _>>()?;
        let names = if names.is_empty() {
            vec![Reference::parse(default_name)?]
        } else {
            names
        };
        images.push(store.add_image(&manifest_digest, &names)?);
    }
    if images.is_empty() {
        return Err(Error::Invalid("manifest.json lists no image".into()));
    }
    Ok(images)
}

/// A docker archive's layer files are tars, gzipped or not.
fn layer_media_type(path: &Path) -> Result<MediaType> {
    let mut magic = [0u8; 2];
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let n = std::io::Read::read(&mut file, &mut magic)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        MediaType::ImageLayerGzip
    } else {
        MediaType::ImageLayer
    })
}
