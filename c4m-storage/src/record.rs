//! Small JSON records kept on disk for every volume and snapshot, written
//! atomically (temporary file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old or the new record, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A directory of `<id>.json` records.
#[derive(Clone, Debug)]
pub(crate) struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    pub(crate) fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|e| Error::io("create record directory", &dir, e))?;
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub(crate) fn read<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>> {
        let path = self.path(id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Record { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read record", path, e)),
        }
    }

    pub(crate) fn write<T: Serialize>(&self, id: &str, record: &T) -> Result<()> {
        let path = self.path(id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| Error::Record {
            path: path.clone(),
            source,
        })?;
        write_atomically(&path, &bytes)
    }

    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove record", path, e)),
        }
    }

    /// The ids of every record. Temporary files are left alone: one may
    /// be a write under way (see [`sweep`](Self::sweep)).
    pub(crate) fn ids(&self) -> Result<Vec<String>> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| Error::io("list records", &self.dir, e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list records", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes the temporary files a crash left (only while no write can
    /// be under way: at reconcile, under the backend's lock).
    pub(crate) fn sweep(&self) -> Result<()> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| Error::io("list records", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list records", &self.dir, e))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))?;
    sync_dir(dir)
}

/// fsyncs a directory, making renames and removals in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_temporaries_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let records = RecordDir::open(dir.path().join("r")).unwrap();
        records.write("a", &vec![1, 2, 3]).unwrap();
        fs::write(dir.path().join("r/b.json.tmp"), b"{torn").unwrap();
        assert_eq!(records.read::<Vec<i32>>("a").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(records.read::<Vec<i32>>("missing").unwrap(), None);
        assert_eq!(records.ids().unwrap(), vec!["a".to_string()]);
        assert!(
            dir.path().join("r/b.json.tmp").exists(),
            "listing leaves a write under way alone"
        );
        records.sweep().unwrap();
        assert!(!dir.path().join("r/b.json.tmp").exists());
        records.remove("a").unwrap();
        records.remove("a").unwrap();
        assert!(records.ids().unwrap().is_empty());
    }

    #[test]
    fn a_torn_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let records = RecordDir::open(dir.path().to_path_buf()).unwrap();
        fs::write(dir.path().join("x.json"), b"{").unwrap();
        let err = records.read::<Vec<i32>>("x").unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
    }
}
