//! Unpacking one layer into its own directory, an overlayfs lower dir.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0/0 character
//! device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque` attribute on
//! its directory. Entries whose path leaves the layer (`..`, or through a
//! symlink that points outside) are refused: the whole layer fails.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::blob::HashingReader;
use crate::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Unpacks layer blob `blob` (tar, gzip or plain, detected from its first
/// bytes) into the empty directory `dest` and checks that the uncompressed
/// tar has digest `diff_id`.
pub(crate) fn unpack(blob: impl Read, diff_id: &str, dest: &Path) -> Result<()> {
    unpack_checked(blob, diff_id, dest).map_err(|e| Error::Layer {
        diff_id: diff_id.to_string(),
        source: Box::new(e),
    })
}

fn unpack_checked(blob: impl Read, diff_id: &str, dest: &Path) -> Result<()> {
    let mut buffered = BufReader::new(blob);
    let magic = buffered.fill_buf().map_err(|e| Error::io("read", e))?;
    let tar: Box<dyn Read> = if magic.starts_with(GZIP_MAGIC) {
        Box::new(GzDecoder::new(buffered))
    } else if magic.starts_with(ZSTD_MAGIC) {
        return Err(Error::Invalid(
            "zstd-compressed layers are not supported".into(),
        ));
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader::new(tar);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(|e| Error::io("read tar", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io("read tar", e))?;
            apply(&mut entry, dest)?;
        }
    }
    let (actual, _) = hashing.finish().map_err(|e| Error::io("read", e))?;
    if actual != diff_id {
        return Err(Error::Invalid(format!(
            "content does not match: the uncompressed layer has digest {actual}"
        )));
    }
    Ok(())
}

/// Applies one tar entry to the layer directory.
fn apply<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> Result<()> {
    let raw = entry
        .path()
        .map_err(|e| Error::io("bad entry path", e))?
        .into_owned();
    let relative = contained(&raw)?;
    let Some(name) = relative.file_name().and_then(|n| n.to_str()) else {
        // The layer's root itself ("./"): its attributes come from the
        // container's writable layer.
        return Ok(());
    };
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        let parent = relative.parent().unwrap_or(Path::new(""));
        let parent = create_parent_inside(dest, parent, &raw)?;
        if name == OPAQUE_WHITEOUT {
            xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| Error::io(format!("{}: mark directory opaque", raw.display()), e))?;
        } else {
            let target = parent.join(hidden);
            remove_existing(&target).map_err(|e| Error::io(raw.display().to_string(), e))?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| Error::io(format!("{}: create whiteout", raw.display()), e.into()))?;
        }
        return Ok(());
    }
    let unpacked = entry
        .unpack_in(dest)
        .map_err(|e| Error::io(raw.display().to_string(), with_causes(e)))?;
    if !unpacked {
        return Err(leaves_the_layer(&raw));
    }
    Ok(())
}

fn leaves_the_layer(path: &Path) -> Error {
    Error::Invalid(format!("{}: path leaves the layer", path.display()))
}

/// The entry path relative to the layer root: a leading `/` or `./` is
/// dropped (tar tools write both), `..` is refused.
fn contained(path: &Path) -> Result<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(leaves_the_layer(path)),
        }
    }
    Ok(relative)
}

/// Creates `dest/parent` and checks that, symlinks resolved, it is still
/// inside `dest` (an earlier entry may have made a component a symlink to
/// the host's `/etc`).
fn create_parent_inside(dest: &Path, parent: &Path, raw: &Path) -> Result<PathBuf> {
    let path = dest.join(parent);
    std::fs::create_dir_all(&path).map_err(|e| Error::io(raw.display().to_string(), e))?;
    let canonical_dest = dest
        .canonicalize()
        .map_err(|e| Error::io(dest.display().to_string(), e))?;
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::io(raw.display().to_string(), e))?;
    if !canonical.starts_with(&canonical_dest) {
        return Err(leaves_the_layer(raw));
    }
    Ok(canonical)
}

fn remove_existing(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `tar`'s error for an entry, whose text is a generic header (`failed to
/// unpack ...`) with the useful part (`Permission denied`, ...) in its
/// source: the same error, its text showing both.
fn with_causes(error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), ShownWithCauses(error))
}

#[derive(Debug)]
struct ShownWithCauses(std::io::Error);

impl std::fmt::Display for ShownWithCauses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for ShownWithCauses {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The text above already shows `self.0` and its causes; the chain
        // goes on from the first of them.
        std::error::Error::source(&self.0)
    }
}
