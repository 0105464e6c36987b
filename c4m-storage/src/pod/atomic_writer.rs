//! Projected files (configMap, secret, downwardAPI, projected) written the way
//! the kubelet's AtomicWriter does, so a reader never sees a half-updated set:
//!
//! ```text
//! <dir>/..2026_07_12_00_41_41.012345678/   the payload, files with their modes
//! <dir>/..data -> ..2026_07_12_00_41_41.012345678
//! <dir>/<key>  -> ..data/<key>             one per top-level name
//! ```
//! An update writes a new timestamped directory, points `..data_tmp` at it and
//! renames that over `..data` (one atomic step), then removes the old
//! directory and names no longer in the payload.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file to project: its content and mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProjection {
    /// The bytes.
    pub data: Vec<u8>,
    /// The permission bits (`defaultMode` or the item's `mode`).
    pub mode: u32,
}

/// An `items` entry of a configMap or secret volume: which key goes to which path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyToPath {
    /// The key in the source.
    pub key: String,
    /// The relative path to write it to.
    pub path: String,
    /// Its mode; `defaultMode` when absent.
    pub mode: Option<u32>,
}

/// Builds a payload from a source's `data` as the kubelet does: every key at
/// its own name with `default_mode`, or only the `items` given, each at its
/// path with its own mode or `default_mode`. A missing key is an error unless
/// the source is `optional`.
pub fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>> {
    if items.is_empty() {
        return Ok(data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: default_mode,
                    },
                )
            })
            .collect());
    }
    let mut payload = BTreeMap::new();
    for item in items {
        match data.get(&item.key) {
            Some(bytes) => {
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: bytes.clone(),
                        mode: item.mode.unwrap_or(default_mode),
                    },
                );
            }
            None if optional => {}
            None => {
                return Err(Error::invalid(
                    "items",
                    format!("key {:?} is not in the source", item.key),
                ));
            }
        }
    }
    Ok(payload)
}

/// Writes payloads into one directory atomically (see the module docs).
#[derive(Clone, Debug)]
pub struct AtomicWriter {
    dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for `dir` (made on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Makes the directory show exactly `payload`. Returns false (and writes
    /// nothing) when it already does. Bad paths are an error and change nothing.
    pub fn write(&self, payload: &BTreeMap<String, FileProjection>) -> Result<bool> {
        let mut clean = BTreeMap::new();
        for (path, file) in payload {
            clean.insert(validate(path)?, file);
        }
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let data_link = self.dir.join(DATA_DIR);
        let old_ts = fs::read_link(&data_link).ok();
        if let Some(old) = &old_ts
            && self.matches(&self.dir.join(old), &clean)?
        {
            return Ok(false);
        }

        let new_ts = self.new_ts_dir()?;
        let new_ts_path = self.dir.join(&new_ts);
        for (path, file) in &clean {
            let full = new_ts_path.join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            fs::write(&full, &file.data).map_err(|e| Error::io("write", &full, e))?;
            fs::set_permissions(&full, fs::Permissions::from_mode(file.mode & 0o7777))
                .map_err(|e| Error::io("chmod", &full, e))?;
        }

        // User-visible names point through ..data, so they follow its swap.
        let new_top: BTreeSet<String> = clean.keys().map(|p| top_level(p)).collect();
        for name in &new_top {
            let link = self.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)
                    .map_err(|e| Error::io("symlink", &link, e))?;
            }
        }

        let tmp_link = self.dir.join(DATA_DIR_TMP);
        let _ = fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&new_ts, &tmp_link)
            .map_err(|e| Error::io("symlink", &tmp_link, e))?;
        fs::rename(&tmp_link, &data_link).map_err(|e| Error::io("rename over", &data_link, e))?;

        // Names that were in the old payload and are not in the new one.
        if let Some(old) = &old_ts {
            let old_path = self.dir.join(old);
            for name in top_level_names(&old_path)? {
                if !new_top.contains(&name) {
                    let link = self.dir.join(&name);
                    if fs::symlink_metadata(&link)
                        .map(|m| m.file_type().is_symlink())
                        .unwrap_or(false)
                    {
                        fs::remove_file(&link).map_err(|e| Error::io("remove", &link, e))?;
                    }
                }
            }
            if old_path != new_ts_path {
                fs::remove_dir_all(&old_path).map_err(|e| Error::io("remove", &old_path, e))?;
            }
        }
        Ok(true)
    }

    fn matches(&self, ts_dir: &Path, payload: &BTreeMap<PathBuf, &FileProjection>) -> Result<bool> {
        let mut on_disk = Vec::new();
        collect_files(ts_dir, ts_dir, &mut on_disk)?;
        if on_disk.len() != payload.len() {
            return Ok(false);
        }
        for path in on_disk {
            let Some(want) = payload.get(&path) else {
                return Ok(false);
            };
            let full = ts_dir.join(&path);
            let meta = fs::metadata(&full).map_err(|e| Error::io("stat", &full, e))?;
            if meta.permissions().mode() & 0o7777 != want.mode & 0o7777 {
                return Ok(false);
            }
            if fs::read(&full).map_err(|e| Error::io("read", &full, e))? != want.data {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn new_ts_dir(&self) -> Result<String> {
        let now = jiff::Zoned::now();
        for attempt in 0..100u32 {
            let name = format!("..{}.{attempt}", now.strftime("%Y_%m_%d_%H_%M_%S.%f"));
            let path = self.dir.join(&name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(|e| Error::io("chmod", &path, e))?;
                    return Ok(name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", path, e)),
            }
        }
        Err(Error::invalid(
            "directory",
            format!(
                "{} has too many timestamped directories",
                self.dir.display()
            ),
        ))
    }
}

/// A payload path must be relative, not climb (`..`), and not start with `..`
/// (those names are the writer's own).
fn validate(path: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::invalid("projected path", format!("{path:?} {why}"));
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.starts_with("..") {
        return Err(bad("must not start with '..'"));
    }
    let parsed = Path::new(path);
    for component in parsed.components() {
        match component {
            Component::Normal(_) => {}
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("must not contain '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("must be relative")),
        }
    }
    Ok(parsed.components().collect())
}

fn top_level(path: &Path) -> String {
    path.components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn top_level_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(|e| Error::io("stat", &path, e))?
            .is_dir()
        {
            collect_files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str, u32)]) -> BTreeMap<String, FileProjection> {
        entries
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn writes_swaps_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path().join("vol"));
        let root = dir.path().join("vol");
        assert!(
            writer
                .write(&payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]))
                .unwrap()
        );
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(root.join("sub/b")).unwrap(), "2");
        assert!(
            fs::symlink_metadata(root.join("a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::metadata(root.join("sub/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let first = fs::read_link(root.join("..data")).unwrap();

        // The same payload writes nothing.
        assert!(
            !writer
                .write(&payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]))
                .unwrap()
        );
        assert_eq!(fs::read_link(root.join("..data")).unwrap(), first);

        // A new payload swaps ..data, drops 'sub' and the old directory.
        assert!(
            writer
                .write(&payload(&[("a", "3", 0o400), ("c", "4", 0o644)]))
                .unwrap()
        );
        let second = fs::read_link(root.join("..data")).unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "3");
        assert_eq!(
            fs::metadata(root.join("a")).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert!(fs::symlink_metadata(root.join("sub")).is_err());
        assert!(!root.join(&first).exists());
        let names: BTreeSet<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let want: BTreeSet<String> = ["..data", "a", "c", second.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn a_mode_change_alone_is_an_update() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path());
        assert!(writer.write(&payload(&[("a", "1", 0o644)])).unwrap());
        assert!(writer.write(&payload(&[("a", "1", 0o600)])).unwrap());
    }

    #[test]
    fn bad_paths_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path().join("vol"));
        for bad in ["../x", "/etc/passwd", "a/../../x", "..data", ""] {
            let err = writer
                .write(&payload(&[("ok", "1", 0o644), (bad, "x", 0o644)]))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        what: "projected path",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert!(!dir.path().join("vol").exists());
    }

    #[test]
    fn items_and_default_mode_follow_the_kubelet() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("k1".to_string(), b"v1".to_vec()),
            ("k2".to_string(), b"v2".to_vec()),
        ]
        .into();
        let all = project(&data, &[], 0o440, false).unwrap();
        assert_eq!(all["k1"].mode, 0o440);
        assert_eq!(all.len(), 2);
        let items = [KeyToPath {
            key: "k2".into(),
            path: "dir/two".into(),
            mode: Some(0o400),
        }];
        let some = project(&data, &items, 0o644, false).unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["dir/two"]);
        assert_eq!(some["dir/two"].mode, 0o400);
        let missing = [KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert!(project(&data, &missing, 0o644, false).is_err());
        assert!(project(&data, &missing, 0o644, true).unwrap().is_empty());
    }
}
