//! One level-triggered pass: provision, expand, snapshot and collect as
//! the objects ask.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};

use c4m_core::volumes::LOCAL_DRIVER;
use c4m_storage::{
    Error as StorageError, Filesystem, ProvisionRequest, SnapshotId, VolumeBackend, VolumeId,
};

use super::mounts::{self, key_of};
use super::wanted::{self, Place, Wanted};
use super::{NodeVolumes, RestartReason, bounded};
use crate::objects::ObjectSet;

impl NodeVolumes {
    /// One level-triggered pass over `set`.
    pub(crate) async fn pass(&self, set: &ObjectSet) {
        let wanted = wanted::wanted(set, &self.node);
        self.troubles().retry = false;
        for target in &wanted.nfs_exports {
            // Opened so their volumes are collected and their capacity reported.
            let _ = self.backends.get(&Place::Nfs(target.clone()));
        }
        self.provision(&wanted).await;
        if let Some(local) = self.backends.local().cloned() {
            self.expand(&local, &wanted).await;
            self.take_snapshots(&local, &wanted).await;
        }
        self.collect(&wanted).await;
        *self
            .last_wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(wanted);
    }

    async fn provision(&self, wanted: &Wanted) {
        // An export is shared: the node remembers the NFS volumes it makes,
        // before it makes them, so it collects only its own.
        let remembered = {
            let mut held = self.held();
            for p in &wanted.provisions {
                held.provisioning(&p.place, &p.handle);
            }
            held.save()
        };
        for p in &wanted.provisions {
            if self.backends.registered(p.place.driver()) {
                // A registered CSI driver's volumes are its controller's
                // to provision, not the node's.
                continue;
            }
            let result = async {
                if !matches!(p.place, Place::Local) {
                    remembered.clone()?;
                }
                let backend = self.backends.get(&p.place)?;
                let id = VolumeId::new(p.handle.clone()).map_err(|e| e.to_string())?;
                if backend
                    .volume(&id)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(false);
                }
                let request = ProvisionRequest {
                    id,
                    size_bytes: p.size_bytes,
                    access_mode: p.access_mode,
                    filesystem: match p.place {
                        Place::Nfs(_) => Filesystem::Nfs,
                        _ => Filesystem::Ext4,
                    },
                    parameters: p.parameters.clone(),
                };
                match &p.restore_from {
                    Some(snapshot) => {
                        let snapshot =
                            SnapshotId::new(snapshot.clone()).map_err(|e| e.to_string())?;
                        backend.restore(&snapshot, &request).await
                    }
                    None => backend.provision(&request).await,
                }
                .map(|_| true)
                .map_err(|e| e.to_string())
            }
            .await;
            let mut troubles = self.troubles();
            match result {
                Ok(made) => {
                    if made {
                        tracing::info!(claim = %p.claim, volume = %p.handle, driver = p.place.driver(), bytes = p.size_bytes, "volume provisioned");
                    }
                    troubles.volumes.remove(&p.handle);
                }
                Err(e) => {
                    tracing::warn!(claim = %p.claim, volume = %p.handle, error = %e, "cannot provision a volume");
                    troubles.volumes.insert(p.handle.clone(), e);
                    troubles.retry = true;
                }
            }
        }
    }

    /// Grows local volumes to their claims' size; one the host cannot grow
    /// mounted waits (`expansion_pending`) while its users restart.
    async fn expand(&self, local: &Arc<dyn VolumeBackend>, wanted: &Wanted) {
        let volumes = local.list().await.unwrap_or_default();
        for volume in volumes {
            let Some(&size) = wanted.sizes.get(volume.id.as_str()) else {
                continue;
            };
            let handle = volume.id.to_string();
            if size <= volume.size_bytes {
                let mut troubles = self.troubles();
                troubles.expansion_pending.remove(&handle);
                troubles.restarting.remove(&handle);
                continue;
            }
            let pending = volume.staged_at.is_some() && {
                let mut troubles = self.troubles();
                // The claim may have grown again meanwhile.
                let pending = troubles.expansion_pending.get_mut(&handle);
                pending.map(|pending| *pending = size).is_some()
            };
            if pending {
                self.restart_users(&handle).await;
                continue;
            }
            match local.expand(&volume.id, size).await {
                Ok(bytes) => {
                    tracing::info!(volume = %handle, bytes, "volume expanded");
                    self.troubles().volumes.remove(&handle);
                }
                Err(StorageError::OfflineExpansionRequired { .. }) => {
                    tracing::info!(volume = %handle, bytes = size, "volume must be unmounted to grow: restarting its users");
                    self.troubles()
                        .expansion_pending
                        .insert(handle.clone(), size);
                    self.restart_users(&handle).await;
                }
                Err(e) => {
                    let mut troubles = self.troubles();
                    troubles.volumes.insert(handle, e.to_string());
                    troubles.retry = true;
                }
            }
        }
    }

    /// Asks the supervisor, once per expansion, to restart the pods using
    /// local volume `handle`.
    async fn restart_users(&self, handle: &str) {
        if !self.troubles().restarting.insert(handle.to_string()) {
            return;
        }
        let key = (LOCAL_DRIVER.to_string(), handle.to_string());
        let users: Vec<String> = mounts::users_of(&*self.mounts.lock().await, &key)
            .cloned()
            .collect();
        if users.is_empty() {
            tracing::warn!(volume = %handle, "volume must be unmounted to grow and no pod of this node has it");
            return;
        }
        self.ask_restart(users, RestartReason::resize(handle));
    }

    /// Grows `id` if an expansion waits for it to be unmounted (called
    /// before it is staged again).
    pub(crate) async fn expand_offline(&self, backend: &Arc<dyn VolumeBackend>, id: &VolumeId) {
        let handle = id.to_string();
        let Some(size) = self.troubles().expansion_pending.get(&handle).copied() else {
            return;
        };
        match backend.expand(id, size).await {
            Ok(bytes) => {
                tracing::info!(volume = %handle, bytes, "volume expanded offline");
                let mut troubles = self.troubles();
                troubles.expansion_pending.remove(&handle);
                troubles.restarting.remove(&handle);
                troubles.volumes.remove(&handle);
            }
            Err(e) => {
                tracing::warn!(volume = %handle, error = %e, "offline expansion failed");
                self.troubles().volumes.insert(handle, e.to_string());
            }
        }
        self.wake.notify_one();
    }

    async fn take_snapshots(&self, local: &Arc<dyn VolumeBackend>, wanted: &Wanted) {
        let volumes: BTreeSet<String> = local
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.id.to_string())
            .collect();
        for take in &wanted.snapshots {
            if !volumes.contains(&take.volume) {
                continue;
            }
            let result = async {
                let snapshot = SnapshotId::new(take.handle.clone()).map_err(|e| e.to_string())?;
                if local
                    .get_snapshot(&snapshot)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(false);
                }
                let volume = VolumeId::new(take.volume.clone()).map_err(|e| e.to_string())?;
                local
                    .snapshot(&volume, &snapshot)
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string())
            }
            .await;
            let mut troubles = self.troubles();
            match result {
                Ok(taken) => {
                    if taken {
                        tracing::info!(snapshot = %take.handle, volume = %take.volume, "snapshot taken");
                    }
                    troubles.snapshots.remove(&take.handle);
                }
                Err(e) => {
                    tracing::warn!(snapshot = %take.handle, error = %e, "cannot take a snapshot");
                    troubles
                        .snapshots
                        .insert(take.handle.clone(), (take.volume.clone(), e));
                    troubles.retry = true;
                }
            }
        }
    }

    /// Deletes this node's provisioned volumes (`pvc-*`) whose
    /// PersistentVolume is reclaimed, and those nothing references that no
    /// PersistentVolume ever referenced (a claim deleted before its volume
    /// was recorded); keeps, with one warning, those a PersistentVolume
    /// referenced that nothing references now (a wiped store). Deletes the
    /// snapshots no content references. One still in use is tried later.
    async fn collect(&self, wanted: &Wanted) {
        let used: BTreeSet<(String, String)> = self
            .mounts
            .lock()
            .await
            .values()
            .flatten()
            .filter_map(|e| key_of(&e.source))
            .collect();
        let mut listed = Vec::new();
        for (place, backend) in self.backends.opened() {
            match bounded(backend.list()).await {
                Ok(volumes) => listed.push((place, backend, volumes)),
                Err(e) => {
                    tracing::warn!(driver = place.driver(), error = %e, "cannot list volumes");
                }
            }
        }
        self.remember_references(wanted, &listed);
        let mut orphaned = BTreeSet::new();
        for (place, backend, volumes) in &listed {
            for volume in volumes {
                let handle = volume.id.to_string();
                if !handle.starts_with("pvc-") || wanted.kept_volumes.contains(&handle) {
                    continue;
                }
                let (holds, referenced) = {
                    let held = self.held();
                    (held.holds(place, &handle), held.referenced(place, &handle))
                };
                let reclaimed = wanted.reclaimed.contains(&handle);
                if !holds {
                    // Another node's volume on a shared export.
                    continue;
                }
                if referenced && !reclaimed {
                    orphaned.insert((place.clone(), handle));
                    continue;
                }
                if used.contains(&(place.driver().to_string(), handle.clone())) {
                    continue;
                }
                match backend.delete(&volume.id).await {
                    Ok(()) => {
                        if reclaimed {
                            tracing::info!(volume = %handle, driver = place.driver(), "deleted the volume of a reclaimed persistent volume");
                        } else {
                            tracing::info!(volume = %handle, driver = place.driver(), "deleted a volume no persistent volume ever referenced and no claim references");
                        }
                        self.troubles().volumes.remove(&handle);
                    }
                    Err(e) => {
                        tracing::debug!(volume = %handle, error = %e, "cannot delete a volume yet");
                        self.troubles().retry = true;
                    }
                }
            }
            for snapshot in bounded(backend.list_snapshots()).await.unwrap_or_default() {
                if wanted.kept_snapshots.contains(snapshot.id.as_str()) {
                    continue;
                }
                match backend.delete_snapshot(&snapshot.id).await {
                    Ok(()) => {
                        tracing::info!(snapshot = %snapshot.id, "deleted a snapshot no content references")
                    }
                    Err(e) => {
                        tracing::warn!(snapshot = %snapshot.id, error = %e, "cannot delete a snapshot");
                        self.troubles().retry = true;
                    }
                }
            }
        }
        let mut troubles = self.troubles();
        for (place, handle) in orphaned.difference(&troubles.orphaned) {
            tracing::warn!(
                volume = %handle,
                driver = place.driver(),
                "volume {handle} is referenced by no object, but a persistent volume referenced it: its data is kept (the store may have been wiped or restored from an older backup); bind it again with a persistent volume, or delete it through one (docs/storage.md)"
            );
        }
        // Those of a backend that could not be listed stay as they were.
        troubles
            .orphaned
            .retain(|(place, _)| !listed.iter().any(|(p, _, _)| p == place));
        troubles.orphaned.extend(orphaned);
        troubles
            .snapshots
            .retain(|handle, _| wanted.kept_snapshots.contains(handle));
        troubles.volumes.retain(|handle, _| {
            wanted.kept_volumes.contains(handle) || wanted.refused.contains_key(handle)
        });
    }

    /// Remembers durably which listed volumes a PersistentVolume references
    /// now, before anything is deleted, and forgets the volumes gone.
    fn remember_references(
        &self,
        wanted: &Wanted,
        listed: &[(Place, Arc<dyn VolumeBackend>, Vec<c4m_storage::Volume>)],
    ) {
        let saved = {
            let mut held = self.held();
            for (place, _, volumes) in listed {
                let existing: BTreeSet<String> = volumes.iter().map(|v| v.id.to_string()).collect();
                held.keep_only(place, &existing);
                for handle in existing.intersection(&wanted.pv_volumes) {
                    held.mark_referenced(place, handle);
                }
            }
            held.save()
        };
        if let Err(e) = saved {
            // Kept in memory meanwhile: nothing referenced is deleted.
            tracing::error!(error = %e, "cannot record which volumes persistent volumes reference");
            self.troubles().retry = true;
        }
    }
}
