//! An in-memory backend for callers' unit tests: it keeps the contract of
//! [`VolumeBackend`] (idempotency, in-use checks, snapshots) without touching
//! the node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::types::{
    AccessMode, Capabilities, Capacity, Expansion, ProvisionRequest, ReconcileReport, Snapshot,
    SnapshotId, Volume, VolumeId,
};

#[derive(Debug, Default)]
struct State {
    volumes: BTreeMap<VolumeId, (Volume, Vec<(PathBuf, bool)>)>,
    snapshots: BTreeMap<SnapshotId, Snapshot>,
}

/// An in-memory [`VolumeBackend`] with a fixed capacity.
#[derive(Debug)]
pub struct FakeBackend {
    total_bytes: u64,
    online_expansion: bool,
    state: Mutex<State>,
}

impl FakeBackend {
    /// A backend with `total_bytes` of space that grows mounted volumes.
    pub fn new(total_bytes: u64) -> Self {
        Self {
            total_bytes,
            online_expansion: true,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes expansion of a staged volume answer
    /// [`Error::OfflineExpansionRequired`], as this host's kernel does.
    pub fn offline_expansion_only(mut self) -> Self {
        self.online_expansion = false;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data, still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn used(state: &State) -> u64 {
        state.volumes.values().map(|(v, _)| v.size_bytes).sum()
    }

    fn get<'a>(
        state: &'a mut State,
        id: &VolumeId,
    ) -> Result<&'a mut (Volume, Vec<(PathBuf, bool)>)> {
        state.volumes.get_mut(id).ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    fn create(&self, req: &ProvisionRequest, source: Option<&Snapshot>) -> Result<Volume> {
        if req.size_bytes == 0 {
            return Err(Error::invalid("size", "0 bytes"));
        }
        let mut state = self.state();
        if let Some((existing, _)) = state.volumes.get(&req.id) {
            if existing.size_bytes == req.size_bytes
                && existing.source_snapshot.as_ref() == source.map(|s| &s.id)
            {
                return Ok(existing.clone());
            }
            return Err(Error::AlreadyExists {
                kind: "volume",
                id: req.id.to_string(),
                existing: format!("{} bytes", existing.size_bytes),
                requested: format!("{} bytes", req.size_bytes),
            });
        }
        if let Some(s) = source
            && req.size_bytes < s.size_bytes
        {
            return Err(Error::invalid(
                "size",
                format!("smaller than snapshot {}", s.id),
            ));
        }
        let available = self.total_bytes.saturating_sub(Self::used(&state));
        if req.size_bytes > available {
            return Err(Error::InsufficientCapacity {
                requested: req.size_bytes,
                available,
            });
        }
        let volume = Volume {
            id: req.id.clone(),
            size_bytes: req.size_bytes,
            access_mode: req.access_mode,
            filesystem: req.filesystem,
            source_snapshot: source.map(|s| s.id.clone()),
            staged_at: None,
            published_at: Vec::new(),
        };
        state
            .volumes
            .insert(req.id.clone(), (volume.clone(), Vec::new()));
        Ok(volume)
    }
}

#[async_trait]
impl VolumeBackend for FakeBackend {
    fn name(&self) -> &str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            expansion: if self.online_expansion {
                Expansion::Online
            } else {
                Expansion::Offline
            },
            enforces_size: true,
            access_modes: vec![
                AccessMode::ReadWriteOnce,
                AccessMode::ReadWriteOncePod,
                AccessMode::ReadOnlyMany,
            ],
        }
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Volume> {
        self.create(req, None)
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        let mut state = self.state();
        if let Some((volume, _)) = state.volumes.get(id) {
            let paths: Vec<PathBuf> = volume
                .staged_at
                .iter()
                .chain(&volume.published_at)
                .cloned()
                .collect();
            if !paths.is_empty() {
                return Err(Error::InUse {
                    id: id.to_string(),
                    paths,
                });
            }
            state.volumes.remove(id);
        }
        Ok(())
    }

    async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        Ok(self.state().volumes.get(id).map(|(v, _)| v.clone()))
    }

    async fn list(&self) -> Result<Vec<Volume>> {
        Ok(self
            .state()
            .volumes
            .values()
            .map(|(v, _)| v.clone())
            .collect())
    }

    async fn stage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let mut state = self.state();
        let (volume, _) = Self::get(&mut state, id)?;
        match &volume.staged_at {
            Some(current) if current == staging => Ok(()),
            Some(current) => Err(Error::invalid(
                "staging path",
                format!("already staged at {}", current.display()),
            )),
            None => {
                volume.staged_at = Some(staging.to_path_buf());
                Ok(())
            }
        }
    }

    async fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let mut state = self.state();
        let Some((volume, _)) = state.volumes.get_mut(id) else {
            return Ok(());
        };
        if volume.staged_at.as_deref() != Some(staging) {
            return Ok(());
        }
        if !volume.published_at.is_empty() {
            return Err(Error::InUse {
                id: id.to_string(),
                paths: volume.published_at.clone(),
            });
        }
        volume.staged_at = None;
        Ok(())
    }

    async fn publish(
        &self,
        id: &VolumeId,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        let mut state = self.state();
        let (volume, publications) = Self::get(&mut state, id)?;
        if volume.staged_at.as_deref() != Some(staging) {
            return Err(Error::invalid(
                "staging path",
                format!("volume {id} is not staged at {}", staging.display()),
            ));
        }
        if let Some((_, ro)) = publications.iter().find(|(t, _)| t == target) {
            if *ro != read_only {
                return Err(Error::AlreadyExists {
                    kind: "publication",
                    id: target.display().to_string(),
                    existing: format!("read_only={ro}"),
                    requested: format!("read_only={read_only}"),
                });
            }
            return Ok(());
        }
        publications.push((target.to_path_buf(), read_only));
        volume.published_at.push(target.to_path_buf());
        Ok(())
    }

    async fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<()> {
        let mut state = self.state();
        if let Some((volume, publications)) = state.volumes.get_mut(id) {
            publications.retain(|(t, _)| t != target);
            volume.published_at.retain(|t| t != target);
        }
        Ok(())
    }

    async fn expand(&self, id: &VolumeId, size_bytes: u64) -> Result<u64> {
        let online = self.online_expansion;
        let mut state = self.state();
        let (volume, _) = Self::get(&mut state, id)?;
        if size_bytes <= volume.size_bytes {
            return Ok(volume.size_bytes);
        }
        if volume.staged_at.is_some() && !online {
            return Err(Error::OfflineExpansionRequired {
                id: id.to_string(),
                size_bytes,
                reason: "the fake refuses online expansion".into(),
            });
        }
        volume.size_bytes = size_bytes;
        Ok(size_bytes)
    }

    async fn snapshot(&self, id: &VolumeId, snapshot: &SnapshotId) -> Result<Snapshot> {
        let mut state = self.state();
        if let Some(existing) = state.snapshots.get(snapshot) {
            if &existing.source_volume == id {
                return Ok(existing.clone());
            }
            return Err(Error::AlreadyExists {
                kind: "snapshot",
                id: snapshot.to_string(),
                existing: format!("source volume {}", existing.source_volume),
                requested: format!("source volume {id}"),
            });
        }
        let size_bytes = Self::get(&mut state, id)?.0.size_bytes;
        let taken = Snapshot {
            id: snapshot.clone(),
            source_volume: id.clone(),
            size_bytes,
            created_unix: 0,
        };
        state.snapshots.insert(snapshot.clone(), taken.clone());
        Ok(taken)
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotId) -> Result<()> {
        self.state().snapshots.remove(snapshot);
        Ok(())
    }

    async fn get_snapshot(&self, snapshot: &SnapshotId) -> Result<Option<Snapshot>> {
        Ok(self.state().snapshots.get(snapshot).cloned())
    }

    async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.state().snapshots.values().cloned().collect())
    }

    async fn restore(&self, snapshot: &SnapshotId, req: &ProvisionRequest) -> Result<Volume> {
        let source = self
            .state()
            .snapshots
            .get(snapshot)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot.to_string(),
            })?;
        self.create(req, Some(&source))
    }

    async fn capacity(&self) -> Result<Capacity> {
        let used = Self::used(&self.state());
        Ok(Capacity {
            available_bytes: self.total_bytes.saturating_sub(used),
            total_bytes: self.total_bytes,
        })
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        Ok(ReconcileReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> VolumeId {
        VolumeId::new(s).unwrap()
    }

    #[tokio::test]
    async fn the_fake_keeps_the_backend_contract() {
        let fake = FakeBackend::new(100 << 20).offline_expansion_only();
        let req = ProvisionRequest::new(id("v"), 40 << 20);
        let vol = fake.provision(&req).await.unwrap();
        assert_eq!(fake.provision(&req).await.unwrap(), vol);
        let err = fake
            .provision(&ProvisionRequest::new(id("v"), 1 << 20))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        let err = fake
            .provision(&ProvisionRequest::new(id("w"), 80 << 20))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InsufficientCapacity { available, .. } if available == 60 << 20),
            "{err}"
        );

        let (staging, target) = (Path::new("/s"), Path::new("/t"));
        fake.stage(&id("v"), staging).await.unwrap();
        fake.stage(&id("v"), staging).await.unwrap();
        fake.publish(&id("v"), staging, target, false)
            .await
            .unwrap();
        assert!(matches!(
            fake.delete(&id("v")).await,
            Err(Error::InUse { .. })
        ));
        assert!(matches!(
            fake.unstage(&id("v"), staging).await,
            Err(Error::InUse { .. })
        ));
        assert!(matches!(
            fake.expand(&id("v"), 50 << 20).await,
            Err(Error::OfflineExpansionRequired { .. })
        ));

        let snap = SnapshotId::new("s").unwrap();
        fake.snapshot(&id("v"), &snap).await.unwrap();
        let err = fake
            .restore(&snap, &ProvisionRequest::new(id("r"), 1 << 20))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        fake.unpublish(&id("v"), target).await.unwrap();
        fake.unpublish(&id("v"), target).await.unwrap();
        fake.unstage(&id("v"), staging).await.unwrap();
        assert_eq!(fake.expand(&id("v"), 50 << 20).await.unwrap(), 50 << 20);
        fake.delete(&id("v")).await.unwrap();
        fake.delete(&id("v")).await.unwrap();
        fake.delete_snapshot(&snap).await.unwrap();
        assert_eq!(fake.capacity().await.unwrap().available_bytes, 100 << 20);
    }
}
