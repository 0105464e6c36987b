//! The node's whole storage state, as `ReportVolumes` sends it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError};

use c4m_api::agent::{SnapshotState, StorageCapacity, VolumeReport, VolumeState};
use c4m_core::volumes::LOCAL_DRIVER;

use super::mounts::key_of;
use super::wanted::Place;
use super::{NodeVolumes, bounded};

impl NodeVolumes {
    /// `NAMESPACE/NAME` of every assigned pod, by uid.
    fn pod_names(&self) -> BTreeMap<String, String> {
        self.assignments
            .borrow()
            .iter()
            .flat_map(|set| set.iter())
            .filter_map(|pod| {
                let uid = pod.metadata.uid.clone()?;
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                let name = pod.metadata.name.as_deref()?;
                Some((uid, format!("{namespace}/{name}")))
            })
            .collect()
    }

    /// The node's whole storage state now.
    pub(crate) async fn report_now(&self) -> VolumeReport {
        let names = self.pod_names();
        let mut users: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (uid, entries) in self.mounts.lock().await.iter() {
            for entry in entries {
                if let (Some(key), Some(name)) = (key_of(&entry.source), names.get(uid)) {
                    users.entry(key).or_default().insert(name.clone());
                }
            }
        }
        let wanted = self
            .last_wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        let mut report = VolumeReport {
            node_name: self.node.clone(),
            ..VolumeReport::default()
        };
        let mut nfs_capacity: Option<StorageCapacity> = None;
        for (place, backend) in self.backends.opened() {
            let driver = place.driver().to_string();
            match bounded(backend.capacity()).await {
                Ok(capacity) => match place {
                    Place::Nfs(_) => {
                        let total = nfs_capacity.get_or_insert_with(|| StorageCapacity {
                            driver: driver.clone(),
                            ..StorageCapacity::default()
                        });
                        total.free_bytes += capacity.available_bytes;
                        total.total_bytes += capacity.total_bytes;
                    }
                    _ => report.capacity.push(StorageCapacity {
                        driver: driver.clone(),
                        free_bytes: capacity.available_bytes,
                        total_bytes: capacity.total_bytes,
                    }),
                },
                Err(e) => tracing::debug!(driver = %driver, error = %e, "no capacity"),
            }
            let volumes: Vec<c4m_storage::Volume> = match (&place, bounded(backend.list()).await) {
                (_, Err(e)) => {
                    tracing::debug!(driver = %driver, error = %e, "cannot list volumes");
                    // Not taken for gone (a reclaimed volume's finalizer
                    // waits for this node to stop reporting it).
                    let held: Vec<String> = self
                        .held()
                        .handles(&place)
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                    report
                        .volumes
                        .extend(held.into_iter().map(|handle| VolumeState {
                            driver: driver.clone(),
                            handle,
                            error: format!("cannot list the volumes of {driver}: {e}"),
                            ..VolumeState::default()
                        }));
                    continue;
                }
                (Place::Nfs(_), Ok(volumes)) => {
                    // An export is shared: report what this node provisioned
                    // (and holds) or mounts, with the size its claim asks for.
                    let held: BTreeSet<String> = self
                        .held()
                        .handles(&place)
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                    volumes
                        .into_iter()
                        .filter(|v| {
                            let handle = v.id.as_str();
                            held.contains(handle)
                                || wanted
                                    .provisions
                                    .iter()
                                    .any(|p| p.handle == handle && p.place == place)
                                || users.contains_key(&(driver.clone(), handle.to_string()))
                        })
                        .map(|mut v| {
                            v.size_bytes = wanted
                                .sizes
                                .get(v.id.as_str())
                                .copied()
                                .or_else(|| {
                                    wanted
                                        .provisions
                                        .iter()
                                        .find(|p| p.handle == v.id.as_str())
                                        .map(|p| p.size_bytes)
                                })
                                .unwrap_or(v.size_bytes);
                            v
                        })
                        .collect()
                }
                // Claims' volumes: not the pods' scratch directories, which
                // share the local pool (staged at the pod's directory).
                (_, Ok(volumes)) => volumes
                    .into_iter()
                    .filter(|v| {
                        v.staged_at
                            .as_ref()
                            .map_or(v.id.as_str().starts_with("pvc-"), |s| {
                                s.starts_with(&self.paths.staging)
                            })
                    })
                    .collect(),
            };
            {
                let troubles = self.troubles();
                for volume in volumes {
                    let handle = volume.id.to_string();
                    report.volumes.push(VolumeState {
                        driver: driver.clone(),
                        size_bytes: volume.size_bytes,
                        error: troubles.volumes.get(&handle).cloned().unwrap_or_default(),
                        expansion_pending: troubles.expansion_pending.contains_key(&handle),
                        orphaned: troubles.orphaned.contains(&(place.clone(), handle.clone())),
                        users: users
                            .get(&(driver.clone(), handle.clone()))
                            .map(|u| u.iter().cloned().collect())
                            .unwrap_or_default(),
                        handle,
                    });
                }
            }
            for snapshot in bounded(backend.list_snapshots()).await.unwrap_or_default() {
                report.snapshots.push(SnapshotState {
                    driver: driver.clone(),
                    handle: snapshot.id.to_string(),
                    source_volume: snapshot.source_volume.to_string(),
                    size_bytes: snapshot.size_bytes,
                    ready: true,
                    created_at: jiff::Timestamp::from_second(snapshot.created_unix)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    error: String::new(),
                });
            }
        }
        report.capacity.extend(nfs_capacity);
        let troubles = self.troubles();
        // Claims this node could not provision: reported with the reason.
        let failed = wanted
            .provisions
            .iter()
            .filter_map(|p| {
                let error = troubles.volumes.get(&p.handle)?;
                Some((p.place.driver(), &p.handle, error))
            })
            .chain(
                wanted
                    .refused
                    .iter()
                    .map(|(handle, (driver, error))| (driver.as_str(), handle, error)),
            );
        for (driver, handle, error) in failed {
            if !report.volumes.iter().any(|v| &v.handle == handle) {
                report.volumes.push(VolumeState {
                    driver: driver.to_string(),
                    handle: handle.clone(),
                    error: error.clone(),
                    ..VolumeState::default()
                });
            }
        }
        for (handle, (volume, error)) in &troubles.snapshots {
            if !report.snapshots.iter().any(|s| &s.handle == handle) {
                report.snapshots.push(SnapshotState {
                    driver: LOCAL_DRIVER.to_string(),
                    handle: handle.clone(),
                    source_volume: volume.clone(),
                    error: error.clone(),
                    ..SnapshotState::default()
                });
            }
        }
        report.volumes.sort_by(|a, b| a.handle.cmp(&b.handle));
        report.snapshots.sort_by(|a, b| a.handle.cmp(&b.handle));
        report
    }

    /// Publishes the state now when it changed since the last report.
    pub(super) async fn publish_report(&self) {
        let report = self.report_now().await;
        self.report.send_if_modified(|last| {
            let changed = last.as_deref() != Some(&report);
            if changed {
                *last = Some(Arc::new(report));
            }
            changed
        });
    }
}
