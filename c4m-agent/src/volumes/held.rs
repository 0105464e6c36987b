//! What the node remembers of its volumes across restarts, so a store that
//! forgot them (wiped, restored from an older backup) never deletes their
//! data:
//! - which volumes a PersistentVolume referenced: their data is deleted only
//!   when such a volume is reclaimed (`Wanted::reclaimed`), never merely
//!   because nothing references them any more;
//! - which NFS volumes this node provisioned: an export is shared, so a
//!   node deletes only its own (every volume of its local pool is its own).
//!
//! One JSON file (`<data dir>/claims/volumes.json`), written atomically
//! (temporary file, fsync, rename) when it changed, so a crash leaves the
//! old or the new list, never a torn one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::wanted::Place;

/// One remembered volume, as the file holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    place: Place,
    handle: String,
    /// A PersistentVolume referenced it.
    #[serde(default)]
    referenced: bool,
}

/// The node's remembered volumes (see the module docs).
#[derive(Debug)]
pub(crate) struct HeldVolumes {
    path: PathBuf,
    /// Whether a PersistentVolume referenced each, by place and handle.
    entries: BTreeMap<(Place, String), bool>,
    /// Why the file could not be read: every volume then counts as
    /// referenced (nothing a PersistentVolume may have used is deleted), no
    /// NFS volume as this node's, and the file is left as it is.
    unreadable: Option<String>,
    /// Changed since the last save.
    dirty: bool,
}

impl HeldVolumes {
    /// The volumes remembered in `path` (none when it does not exist).
    pub(crate) fn open(path: &Path) -> Self {
        let mut held = Self {
            path: path.to_path_buf(),
            entries: BTreeMap::new(),
            unreadable: None,
            dirty: false,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return held,
            Err(e) => {
                held.unreadable = Some(e.to_string());
                return held.warn_unreadable();
            }
        };
        match serde_json::from_slice::<Vec<Entry>>(&bytes) {
            Ok(entries) => {
                held.entries = entries
                    .into_iter()
                    .map(|e| ((e.place, e.handle), e.referenced))
                    .collect();
            }
            Err(e) => held.unreadable = Some(e.to_string()),
        }
        held.warn_unreadable()
    }

    fn warn_unreadable(self) -> Self {
        if let Some(error) = &self.unreadable {
            tracing::error!(
                record = %self.path.display(),
                error = %error,
                "cannot read which volumes persistent volumes referenced: no volume is deleted unless its persistent volume is (fix or remove the file and restart the agent)"
            );
        }
        self
    }

    /// Whether the volume `handle` of `place` is this node's to delete:
    /// every one of its local pool, and the NFS volumes it provisioned.
    pub(crate) fn holds(&self, place: &Place, handle: &str) -> bool {
        matches!(place, Place::Local) || self.entries.contains_key(&key(place, handle))
    }

    /// Whether a PersistentVolume referenced the volume `handle` of `place`.
    pub(crate) fn referenced(&self, place: &Place, handle: &str) -> bool {
        self.unreadable.is_some() || self.entries.get(&key(place, handle)) == Some(&true)
    }

    /// Every remembered volume of `place`.
    pub(crate) fn handles(&self, place: &Place) -> BTreeSet<&str> {
        self.entries
            .keys()
            .filter(|(p, _)| p == place)
            .map(|(_, handle)| handle.as_str())
            .collect()
    }

    /// Remembers that this node provisions `handle` of `place` (before it
    /// does, so a crash in between leaves no volume it would not collect).
    pub(crate) fn provisioning(&mut self, place: &Place, handle: &str) {
        if !matches!(place, Place::Local) && !self.entries.contains_key(&key(place, handle)) {
            self.entries.insert(key(place, handle), false);
            self.dirty = true;
        }
    }

    /// Remembers that a PersistentVolume references `handle` of `place`, if
    /// it is this node's.
    pub(crate) fn mark_referenced(&mut self, place: &Place, handle: &str) {
        if !self.holds(place, handle) {
            return;
        }
        let referenced = self.entries.entry(key(place, handle)).or_default();
        if !*referenced {
            *referenced = true;
            self.dirty = true;
        }
    }

    /// Forgets the volumes of `place` not in `existing` (deleted, or never
    /// made).
    pub(crate) fn keep_only(&mut self, place: &Place, existing: &BTreeSet<String>) {
        let before = self.entries.len();
        self.entries
            .retain(|(p, handle), _| p != place || existing.contains(handle));
        self.dirty |= self.entries.len() != before;
    }

    /// Writes the file if anything changed (never over an unreadable one).
    pub(crate) fn save(&mut self) -> Result<(), String> {
        if !self.dirty || self.unreadable.is_some() {
            return Ok(());
        }
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .map(|((place, handle), referenced)| Entry {
                place: place.clone(),
                handle: handle.clone(),
                referenced: *referenced,
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&entries)
            .map_err(|e| format!("encode {}: {e}", self.path.display()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        c4m_storage::write_atomically(&self.path, &bytes).map_err(|e| e.to_string())?;
        self.dirty = false;
        Ok(())
    }
}

fn key(place: &Place, handle: &str) -> (Place, String) {
    (place.clone(), handle.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::wanted::NfsTarget;
    use super::*;

    fn export() -> Place {
        Place::Nfs(NfsTarget {
            server: "10.0.0.1".into(),
            share: "/export".into(),
            nfs_port: 2049,
            mount_port: 20048,
        })
    }

    #[test]
    fn references_survive_a_restart_and_only_own_nfs_volumes_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claims/volumes.json");
        let mut held = HeldVolumes::open(&path);
        assert!(held.holds(&Place::Local, "pvc-a"), "the local pool is ours");
        assert!(!held.holds(&export(), "pvc-n"), "a shared export is not");
        held.provisioning(&Place::Local, "pvc-a");
        held.provisioning(&export(), "pvc-n");
        held.mark_referenced(&Place::Local, "pvc-a");
        held.mark_referenced(&export(), "pvc-other");
        held.save().unwrap();

        let mut held = HeldVolumes::open(&path);
        assert!(held.referenced(&Place::Local, "pvc-a"));
        assert!(held.holds(&export(), "pvc-n"));
        assert!(
            !held.referenced(&export(), "pvc-n"),
            "provisioned, no PV yet"
        );
        assert!(
            !held.holds(&export(), "pvc-other"),
            "another node's nfs volume is not remembered"
        );
        held.mark_referenced(&export(), "pvc-n");
        held.keep_only(&Place::Local, &BTreeSet::new());
        held.save().unwrap();
        let held = HeldVolumes::open(&path);
        assert!(!held.referenced(&Place::Local, "pvc-a"), "gone: forgotten");
        assert!(held.referenced(&export(), "pvc-n"));
        assert_eq!(held.handles(&export()), BTreeSet::from(["pvc-n"]));
    }

    #[test]
    fn an_unreadable_file_keeps_every_volume_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volumes.json");
        std::fs::write(&path, b"{not json").unwrap();
        let mut held = HeldVolumes::open(&path);
        assert!(held.referenced(&Place::Local, "pvc-a"));
        assert!(!held.holds(&export(), "pvc-n"));
        held.mark_referenced(&Place::Local, "pvc-b");
        held.save().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
    }
}
