//! [`ImageStore`]: the catalog (`images.json`, under an `flock`), names,
//! removal, leases and garbage collection (see the crate documentation for
//! the layout on disk).

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use c4m_core::{GcReport, Image, Layer, Reference};

use crate::blob::Blobs;
use crate::{Error, Result};

/// How many hex digits of a digest identify an image in lists (`c4m image
/// ls`) and may be used to refer to it.
pub const SHORT_ID_LEN: usize = 12;

/// The image store. See the module docs.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    pub(crate) blobs: Blobs,
    pub(crate) layers_dir: PathBuf,
    leases_dir: PathBuf,
    pub(crate) tmp: PathBuf,
    /// `<root>/lock`, locked with `flock` around read-modify-write of
    /// `images.json` and garbage collection, so that several stores over
    /// one directory (agent server, drivers, other processes) stay
    /// consistent.
    lock_path: PathBuf,
    /// `<root>/gc.lock`: held shared by every pull, import and container
    /// start from its first blob until the image is in the catalog (or
    /// leased), and exclusively by garbage collection, which would
    /// otherwise take blobs and layers not yet referenced.
    gc_lock_path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    /// By manifest digest.
    images: BTreeMap<String, Image>,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`; work left in
    /// `tmp/` by an interrupted process is discarded.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore> {
        let root = root.into();
        let tmp = root.join("tmp");
        let layers_dir = root.join("layers").join("sha256");
        let leases_dir = root.join("leases");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| Error::io(format!("clear {}", tmp.display()), e))?;
        }
        for dir in [&tmp, &layers_dir, &leases_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        Ok(ImageStore {
            blobs: Blobs::new(&root, &tmp)?,
            lock_path: root.join("lock"),
            gc_lock_path: root.join("gc.lock"),
            root,
            layers_dir,
            leases_dir,
            tmp,
        })
    }

    fn locked(&self) -> Result<Flock<std::fs::File>> {
        flock(&self.lock_path, FlockArg::LockExclusive)
    }

    /// Keeps garbage collection out while the caller adds blobs and layers
    /// the catalog does not reference yet (see `gc_lock_path`). Blocks while
    /// a collection runs.
    pub fn gc_fence(&self) -> Result<Flock<std::fs::File>> {
        flock(&self.gc_lock_path, FlockArg::LockShared)
    }

    fn catalog_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn load(&self) -> Result<Catalog> {
        let path = self.catalog_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::malformed(format!("corrupt {}", path.display()), e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Catalog::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn save(&self, catalog: &Catalog) -> Result<()> {
        write_atomically(&self.tmp, &self.catalog_path(), &json(catalog)?)
    }

    /// Every image, sorted by first name then digest.
    pub fn list(&self) -> Result<Vec<Image>> {
        let _guard = self.locked()?;
        let mut images: Vec<Image> = self.load()?.images.into_values().collect();
        images.sort_by(|a, b| (a.names.first(), &a.digest).cmp(&(b.names.first(), &b.digest)));
        Ok(images)
    }

    /// The image `reference` names: `name[:tag]`, `name@sha256:...`,
    /// `sha256:...`, or at least [`SHORT_ID_LEN`] leading hex digits of its
    /// digest.
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let _guard = self.locked()?;
        resolve_in(&self.load()?, reference)
    }

    /// Whether the store has blob `digest`.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_file(digest).is_ok()
    }

    /// The file holding blob `digest`; an error if the store lacks it.
    pub fn blob_file(&self, digest: &str) -> Result<PathBuf> {
        let path = self.blobs.path(digest)?;
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Invalid(format!(
                "blob {digest} is not in the image store"
            )))
        }
    }

    /// The image's configuration (entrypoint, cmd, env, ...).
    pub fn config(&self, image: &Image) -> Result<ImageConfiguration> {
        let bytes = self.blobs.read(&image.config_digest)?;
        ImageConfiguration::from_reader(&bytes[..]).map_err(|e| {
            Error::malformed(
                format!(
                    "image {}: bad configuration {}",
                    image.digest, image.config_digest
                ),
                e,
            )
        })
    }

    /// Registers the image whose manifest blob `manifest_digest` is in the
    /// store, together with its config and layer blobs: checks them,
    /// unpacks missing layers and points `names` at it.
    pub fn add_image(&self, manifest_digest: &str, names: &[Reference]) -> Result<Image> {
        let fail = |message: String| Error::Invalid(format!("image {manifest_digest}: {message}"));
        let manifest_bytes = self.blobs.read(manifest_digest)?;
        let manifest = ImageManifest::from_reader(&manifest_bytes[..])
            .map_err(|e| Error::malformed(format!("image {manifest_digest}: bad manifest"), e))?;
        let config_digest = manifest.config().digest().to_string();
        let config_bytes = self.blobs.read(&config_digest)?;
        let config = ImageConfiguration::from_reader(&config_bytes[..]).map_err(|e| {
            Error::malformed(
                format!("image {manifest_digest}: bad configuration {config_digest}"),
                e,
            )
        })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(fail(format!(
                "the manifest has {} layers but the configuration {} diff-ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        let mut size = manifest_bytes.len() as u64 + config_bytes.len() as u64;
        for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let layer = Layer {
                digest: descriptor.digest().to_string(),
                diff_id: diff_id.clone(),
            };
            self.ensure_layer(&layer)?;
            size += descriptor.size();
            layers.push(layer);
        }
        let _guard = self.locked()?;
        let mut catalog = self.load()?;
        let names: Vec<String> = names.iter().filter_map(Reference::tagged).collect();
        for other in catalog.images.values_mut() {
            other.names.retain(|name| !names.contains(name));
        }
        let image = catalog
            .images
            .entry(manifest_digest.to_string())
            .or_insert_with(|| Image {
                digest: manifest_digest.to_string(),
                names: Vec::new(),
                config_digest,
                layers,
                size,
            });
        for name in names {
            if !image.names.contains(&name) {
                image.names.push(name);
            }
        }
        let image = image.clone();
        self.save(&catalog)?;
        Ok(image)
    }

    /// Unpacks a layer unless its directory exists. Done in `tmp/` and
    /// renamed, so a layer directory is always complete.
    fn ensure_layer(&self, layer: &Layer) -> Result<PathBuf> {
        let dest = self
            .layers_dir
            .join(crate::blob::digest_hex(&layer.diff_id)?);
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.blobs.open(&layer.digest)?;
        let work = tempfile::tempdir_in(&self.tmp)
            .map_err(|e| Error::io(format!("create a directory in {}", self.tmp.display()), e))?;
        crate::layer::unpack(blob, &layer.diff_id, work.path())?;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("chmod {}", work.path().display()), e))?;
        match std::fs::rename(work.path(), &dest) {
            Ok(()) => Ok(dest),
            // Another import unpacked the same layer meanwhile.
            Err(_) if dest.is_dir() => Ok(dest),
            Err(e) => Err(Error::io(format!("rename layer to {}", dest.display()), e)),
        }
    }

    /// The unpacked layer directories of `image`, lowest first, unpacking
    /// any that are missing.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .map(|layer| self.ensure_layer(layer))
            .collect()
    }

    /// Records that container `holder` uses `image`'s layers, so that
    /// garbage collection keeps them until [`ImageStore::release`].
    pub fn lease(&self, holder: &str, image: &Image) -> Result<()> {
        let diff_ids: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
        write_atomically(&self.tmp, &self.lease_path(holder)?, &json(&diff_ids)?)
    }

    /// Drops the lease of `holder` (Ok if it has none).
    pub fn release(&self, holder: &str) -> Result<()> {
        let path = self.lease_path(holder)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    fn lease_path(&self, holder: &str) -> Result<PathBuf> {
        let valid = !holder.is_empty()
            && !holder.starts_with('.')
            && holder
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::Invalid(format!("invalid lease holder {holder:?}")));
        }
        Ok(self.leases_dir.join(format!("{holder}.json")))
    }

    /// Removes `reference`: a name is untagged (the image goes when its last
    /// name does); a digest removes the image and all its names. Blobs and
    /// layers stay until [`ImageStore::gc`].
    pub fn remove(&self, reference: &str) -> Result<Image> {
        let _guard = self.locked()?;
        let mut catalog = self.load()?;
        let image = resolve_in(&catalog, reference)?;
        let by_name = Reference::parse(reference)
            .ok()
            .filter(|r| r.digest.is_none())
            .and_then(|r| r.tagged())
            .filter(|name| image.names.contains(name));
        let Some(entry) = catalog.images.get_mut(&image.digest) else {
            return Err(Error::NotFound(reference.to_string()));
        };
        if let Some(name) = by_name {
            entry.names.retain(|n| *n != name);
        } else {
            entry.names.clear();
        }
        if entry.names.is_empty() {
            catalog.images.remove(&image.digest);
        }
        self.save(&catalog)?;
        Ok(image)
    }

    /// Removes blobs and unpacked layers that no image and no lease uses,
    /// and anything left in `tmp/`.
    pub fn gc(&self) -> Result<GcReport> {
        let _no_pulls = flock(&self.gc_lock_path, FlockArg::LockExclusive)?;
        let _guard = self.locked()?;
        let catalog = self.load()?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for image in catalog.images.values() {
            blobs.insert(image.digest.clone());
            blobs.insert(image.config_digest.clone());
            for layer in &image.layers {
                blobs.insert(layer.digest.clone());
                layers.insert(layer.diff_id.clone());
            }
        }
        for lease in read_dir_names(&self.leases_dir)? {
            let path = self.leases_dir.join(&lease);
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            let held: Vec<String> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::malformed(format!("corrupt lease {}", path.display()), e))?;
            layers.extend(held);
        }
        let mut report = GcReport::default();
        for hex in read_dir_names(self.blobs.dir())? {
            if !blobs.contains(&format!("sha256:{hex}")) {
                let path = self.blobs.dir().join(&hex);
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
                report.blobs += 1;
            }
        }
        for hex in read_dir_names(&self.layers_dir)? {
            if !layers.contains(&format!("sha256:{hex}")) {
                let path = self.layers_dir.join(&hex);
                std::fs::remove_dir_all(&path)
                    .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
                report.layers += 1;
            }
        }
        Ok(report)
    }

    /// Imports every image of an OCI image layout (a directory or a tar of
    /// one) or a docker-archive tar (`docker save`). Names come from the
    /// archive; a bare tag (as `skopeo copy oci:DIR:TAG` writes) is given
    /// the repository `default_name`, or else the file name without
    /// extension.
    pub fn import(&self, path: &Path, default_name: Option<&str>) -> Result<Vec<Image>> {
        let _fence = self.gc_fence()?;
        crate::import::import(self, path, default_name)
    }
}

/// Locks `path` (created if missing) with `flock`, released on drop.
fn flock(path: &Path, how: FlockArg) -> Result<Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    Flock::lock(file, how).map_err(|(_, errno)| {
        Error::io(
            format!("lock {}", path.display()),
            std::io::Error::from(errno),
        )
    })
}

fn resolve_in(catalog: &Catalog, reference: &str) -> Result<Image> {
    let not_found = || Error::NotFound(reference.to_string());
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let is_id = hex.len() >= SHORT_ID_LEN
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_id {
        let matches: Vec<&Image> = catalog
            .images
            .values()
            .filter(|image| image.digest["sha256:".len()..].starts_with(hex))
            .collect();
        match matches[..] {
            [image] => return Ok(image.clone()),
            [] => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "{reference:?} matches several images: give more digits"
                )));
            }
        }
    }
    let parsed = Reference::parse(reference)?;
    let found = match (&parsed.digest, parsed.tagged()) {
        (Some(digest), _) => catalog.images.get(digest),
        (None, Some(name)) => catalog.images.values().find(|i| i.names.contains(&name)),
        (None, None) => None,
    };
    found.cloned().ok_or_else(not_found)
}

fn json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::malformed("serialize", e))
}

/// Writes `bytes` to `path` through a temporary file in `tmp` (same file
/// system), so readers see the old or the new content, never a mix.
fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = tempfile::NamedTempFile::new_in(tmp)
        .map_err(|e| Error::io(format!("create a temporary file in {}", tmp.display()), e))?;
    std::io::Write::write_all(&mut temp, bytes)
        .map_err(|e| Error::io(format!("write {}", temp.path().display()), e))?;
    temp.persist(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e.error))?;
    Ok(())
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}
