//! [`ClaimMounts`] on the node's backends: a volume is staged once per node
//! (under `<data dir>/claims/staging`), published at each pod's target, and
//! unstaged when its last pod gave it back.
//!
//! Each pod's mounts are kept in a record (`<data dir>/claims/pods/<uid>.json`,
//! written atomically before a publish and after an unpublish), so the users
//! of every volume are known again after a restart, and a volume staged for
//! no recorded pod (a crash between stage and record) is unstaged then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use c4m_core::volumes::VolumeSource;
use c4m_storage::pod::{HostPathType, publish_host_path, unpublish_host_path};
use c4m_storage::{VolumeBackend, VolumeId};
use serde::{Deserialize, Serialize};

use super::NodeVolumes;
use super::backends::place_of;
use super::wanted::Place;
use crate::claims::ClaimMounts;

/// One volume mounted for a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MountEntry {
    /// The pod's volume name.
    pub volume: String,
    pub source: VolumeSource,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Every pod's mounts, by pod uid.
pub(crate) type PodMounts = BTreeMap<String, Vec<MountEntry>>;

/// The `(driver, handle)` of a volume, or None for a node directory.
pub(crate) fn key_of(source: &VolumeSource) -> Option<(String, String)> {
    place_of(source)
        .ok()
        .map(|(place, handle)| (place.driver().to_string(), handle))
}

/// A file or directory name made of `text`: what is not a letter, digit,
/// `-`, `_` or `.` becomes `_`.
fn file_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the node's claims live: staging paths, the pods' records, and
/// the volumes the node remembers ([`HeldVolumes`](super::held::HeldVolumes)).
#[derive(Clone, Debug)]
pub(crate) struct ClaimPaths {
    pub staging: PathBuf,
    pub pods: PathBuf,
    pub held: PathBuf,
}

impl ClaimPaths {
    pub(crate) fn under(dir: &Path) -> Self {
        Self {
            staging: dir.join("staging"),
            pods: dir.join("pods"),
            held: dir.join("volumes.json"),
        }
    }

    /// Where the volume `handle` of `place` is staged on this node.
    pub(crate) fn staging_of(&self, place: &Place, handle: &str) -> PathBuf {
        self.staging
            .join(file_name(place.driver()))
            .join(file_name(handle))
    }

    fn record_of(&self, pod_uid: &str) -> PathBuf {
        self.pods.join(format!("{}.json", file_name(pod_uid)))
    }

    /// Writes a pod's record (removes it when it has no mount left).
    pub(crate) fn write(&self, pod_uid: &str, entries: &[MountEntry]) -> Result<(), String> {
        let path = self.record_of(pod_uid);
        if entries.is_empty() {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("remove {}: {e}", path.display())),
            };
        }
        std::fs::create_dir_all(&self.pods)
            .map_err(|e| format!("create {}: {e}", self.pods.display()))?;
        let bytes = serde_json::to_vec_pretty(entries)
            .map_err(|e| format!("encode {}: {e}", path.display()))?;
        c4m_storage::write_atomically(&path, &bytes).map_err(|e| e.to_string())
    }

    /// Every pod's record; an unreadable one is logged and left out.
    pub(crate) fn read_all(&self) -> PodMounts {
        let mut mounts = PodMounts::new();
        let Ok(entries) = std::fs::read_dir(&self.pods) else {
            return mounts;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(uid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(list) => {
                    mounts.insert(uid.to_string(), list);
                }
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "skipping an unreadable claim record");
                }
            }
        }
        mounts
    }
}

/// The pods (uids) that have the volume `key` mounted.
pub(crate) fn users_of<'a>(
    mounts: &'a PodMounts,
    key: &'a (String, String),
) -> impl Iterator<Item = &'a String> + 'a {
    mounts
        .iter()
        .filter(move |(_, entries)| {
            entries
                .iter()
                .any(|e| key_of(&e.source).as_ref() == Some(key))
        })
        .map(|(uid, _)| uid)
}

impl NodeVolumes {
    /// The backend, id and staging path of a claim's volume.
    pub(crate) fn resolve(
        &self,
        source: &VolumeSource,
    ) -> Result<(std::sync::Arc<dyn VolumeBackend>, VolumeId, PathBuf, Place), String> {
        let (place, handle) = place_of(source)?;
        let backend = self.backends.get(&place)?;
        let id = VolumeId::new(handle.clone()).map_err(|e| e.to_string())?;
        let staging = self.paths.staging_of(&place, &handle);
        Ok((backend, id, staging, place))
    }

    async fn mount_entry(
        &self,
        mounts: &mut PodMounts,
        pod_uid: &str,
        entry: MountEntry,
    ) -> Result<(), String> {
        if let VolumeSource::HostDir { path } = &entry.source {
            publish_host_path(
                Path::new(path),
                &entry.target,
                HostPathType::Directory,
                entry.read_only,
            )
            .map_err(|e| e.to_string())?;
            return self.remember(mounts, pod_uid, entry);
        }
        let (backend, id, staging, place) = self.resolve(&entry.source)?;
        let key = (place.driver().to_string(), id.to_string());
        if users_of(mounts, &key).next().is_none() {
            // Nobody has it staged: the moment to grow it offline.
            self.expand_offline(&backend, &id).await;
        }
        backend
            .stage(&id, &staging)
            .await
            .map_err(|e| e.to_string())?;
        self.remember(mounts, pod_uid, entry.clone())?;
        backend
            .publish(&id, &staging, &entry.target, entry.read_only)
            .await
            .map_err(|e| e.to_string())
    }

    /// Records `entry` among the pod's mounts (before it is published).
    fn remember(
        &self,
        mounts: &mut PodMounts,
        pod_uid: &str,
        entry: MountEntry,
    ) -> Result<(), String> {
        let entries = mounts.entry(pod_uid.to_string()).or_default();
        if entries.contains(&entry) {
            return Ok(());
        }
        entries.retain(|e| e.target != entry.target);
        entries.push(entry);
        self.paths.write(pod_uid, entries)
    }

    /// Unpublishes `entry` of `pod_uid` and unstages its volume when no
    /// other pod uses it; the record forgets it once unpublished.
    pub(crate) async fn unmount_entry(
        &self,
        mounts: &mut PodMounts,
        pod_uid: &str,
        entry: &MountEntry,
    ) -> Result<(), String> {
        let staged = match &entry.source {
            VolumeSource::HostDir { .. } => {
                unpublish_host_path(&entry.target).map_err(|e| e.to_string())?;
                None
            }
            source => {
                let (backend, id, staging, place) = self.resolve(source)?;
                backend
                    .unpublish(&id, &entry.target)
                    .await
                    .map_err(|e| e.to_string())?;
                Some((backend, id, staging, place))
            }
        };
        let entries = mounts.entry(pod_uid.to_string()).or_default();
        entries.retain(|e| e != entry);
        let left = entries.clone();
        if left.is_empty() {
            mounts.remove(pod_uid);
        }
        self.paths.write(pod_uid, &left)?;
        if let Some((backend, id, staging, place)) = staged {
            let key = (place.driver().to_string(), id.to_string());
            if users_of(mounts, &key).next().is_none() {
                backend
                    .unstage(&id, &staging)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ClaimMounts for NodeVolumes {
    async fn mount(
        &self,
        pod_uid: &str,
        volume: &str,
        source: &VolumeSource,
        read_only: bool,
        target: &Path,
    ) -> Result<(), String> {
        let entry = MountEntry {
            volume: volume.to_string(),
            source: source.clone(),
            target: target.to_path_buf(),
            read_only,
        };
        let mut mounts = self.mounts.lock().await;
        let result = self.mount_entry(&mut mounts, pod_uid, entry).await;
        drop(mounts);
        self.wake.notify_one();
        result.map_err(|e| format!("MountVolume.SetUp failed for volume {volume:?}: {e}"))
    }

    async fn unmount_pod(&self, pod_uid: &str) -> Result<(), String> {
        let mut mounts = self.mounts.lock().await;
        let entries = mounts.get(pod_uid).cloned().unwrap_or_default();
        let mut result = Ok(());
        for entry in &entries {
            if let Err(e) = self.unmount_entry(&mut mounts, pod_uid, entry).await {
                result = Err(format!(
                    "UnmountVolume.TearDown failed for volume {:?}: {e}",
                    entry.volume
                ));
                break;
            }
        }
        drop(mounts);
        if !entries.is_empty() {
            self.wake.notify_one();
        }
        result
    }
}
