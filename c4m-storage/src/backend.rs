//! The seam every storage backend implements.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{
    Capabilities, Capacity, ProvisionRequest, ReconcileReport, Snapshot, SnapshotId, Volume,
    VolumeId,
};

/// A node-side volume backend: creates volumes, mounts them on this node and
/// tears them down again.
///
/// The lifecycle follows CSI: [`provision`](Self::provision) makes the volume,
/// [`stage`](Self::stage) attaches it and mounts it once per node at a staging
/// path, [`publish`](Self::publish) bind-mounts the staged volume where a
/// container will see it; [`unpublish`](Self::unpublish),
/// [`unstage`](Self::unstage) and [`delete`](Self::delete) undo them.
///
/// Contract, for every implementation (a plugin included):
/// - Every method is idempotent. Provisioning an existing id with the same size
///   returns it; with another size it is [`Error::AlreadyExists`](crate::Error::AlreadyExists).
///   Deleting a missing id, unpublishing or unstaging a path that is not
///   mounted succeed.
/// - A failed call leaves nothing half-made behind once
///   [`reconcile`](Self::reconcile) has run (which the caller runs at start).
/// - Deleting a staged or published volume is [`Error::InUse`](crate::Error::InUse)
///   and changes nothing; so is unstaging one still published.
#[async_trait]
pub trait VolumeBackend: fmt::Debug + Send + Sync {
    /// The backend's name (`local`, `nfs`, a plugin's name), for logs and CSI.
    fn name(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates the volume `req.id` (or returns it if it already exists alike).
    async fn provision(&self, req: &ProvisionRequest) -> Result<Volume>;

    /// Deletes the volume and its data. A missing id succeeds.
    async fn delete(&self, id: &VolumeId) -> Result<()>;

    /// The volume, if it exists.
    async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>>;

    /// Every volume on this backend.
    async fn list(&self) -> Result<Vec<Volume>>;

    /// Attaches the volume on this node and mounts it at `staging` (created if
    /// missing). Staging the same volume at the same path again succeeds.
    async fn stage(&self, id: &VolumeId, staging: &Path) -> Result<()>;

    /// Unmounts the volume from `staging` and detaches it. A path that is not
    /// mounted succeeds.
    async fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()>;

    /// Bind-mounts the staged volume at `target` (created if missing),
    /// read-only if asked.
    async fn publish(
        &self,
        id: &VolumeId,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()>;

    /// Unmounts `target` and removes it if empty. A path that is not mounted
    /// succeeds.
    async fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<()>;

    /// Grows the volume to `size_bytes` (a smaller size changes nothing) and
    /// returns its new size. Where the host cannot grow a mounted filesystem
    /// it answers [`Error::OfflineExpansionRequired`](crate::Error::OfflineExpansionRequired):
    /// unstage it (restart its users) and call again.
    async fn expand(&self, id: &VolumeId, size_bytes: u64) -> Result<u64>;

    /// Takes a snapshot of the volume under `snapshot` (the same id again
    /// returns the existing snapshot of the same volume).
    async fn snapshot(&self, id: &VolumeId, snapshot: &SnapshotId) -> Result<Snapshot>;

    /// Deletes a snapshot. A missing id succeeds.
    async fn delete_snapshot(&self, snapshot: &SnapshotId) -> Result<()>;

    /// The snapshot, if it exists.
    async fn get_snapshot(&self, snapshot: &SnapshotId) -> Result<Option<Snapshot>>;

    /// Every snapshot on this backend (none where it takes no snapshots).
    async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(Vec::new())
    }

    /// Creates the volume `req.id` with the snapshot's contents; `req.size_bytes`
    /// must be at least the snapshot's size.
    async fn restore(&self, snapshot: &SnapshotId, req: &ProvisionRequest) -> Result<Volume>;

    /// Free and total space for new volumes.
    async fn capacity(&self) -> Result<Capacity>;

    /// Brings the node to the declared state after a crash: finishes or rolls
    /// back operations that were under way, unmounts and detaches what no
    /// record declares, mounts again what records declare.
    async fn reconcile(&self) -> Result<ReconcileReport>;
}
