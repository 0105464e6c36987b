//! A registered CSI driver as a [`VolumeBackend`], so a caller drives c4m's
//! own backends and third-party drivers alike. It connects on first use
//! (the driver may start after its caller), runs the spec's discovery
//! calls once, and then maps each operation onto the driver's RPCs: stage
//! and unstage only when the driver offers STAGE_UNSTAGE_VOLUME.
//!
//! CSI has no call listing a node's staged volumes, so [`VolumeBackend::list`]
//! is empty and [`VolumeBackend::reconcile`] repairs nothing: the driver
//! keeps its own state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::client::{ClientError, CsiClient, DriverInfo};
use super::proto::node_service_capability::rpc::Type as NodeRpc;
use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::types::{
    AccessMode, Capabilities, Capacity, Expansion, Filesystem, ProvisionRequest, ReconcileReport,
    Snapshot, SnapshotId, Volume, VolumeId,
};

/// A CSI driver reached on a unix socket (see the module docs).
#[derive(Debug)]
pub struct CsiBackend {
    name: String,
    socket: PathBuf,
    connection: Mutex<Option<(CsiClient, DriverInfo)>>,
}

impl CsiBackend {
    /// The driver `name` listening on `socket`; nothing is dialled yet.
    pub fn new(name: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            socket: socket.into(),
            connection: Mutex::new(None),
        }
    }

    fn error(&self, source: ClientError) -> Error {
        match source.code() {
            Some(tonic::Code::NotFound) => Error::NotFound {
                kind: "volume",
                id: source.to_string(),
            },
            _ => Error::Driver {
                driver: format!("csi driver {} ({})", self.name, self.socket.display()),
                source: Box::new(source),
            },
        }
    }

    /// A client and what the driver said of itself (connecting and
    /// discovering on first use, and again after a failed connection).
    async fn client(&self) -> Result<(CsiClient, DriverInfo)> {
        let mut connection = self.connection.lock().await;
        if let Some((client, info)) = connection.as_ref() {
            return Ok((client.clone(), info.clone()));
        }
        let mut client = CsiClient::connect(&self.socket)
            .await
            .map_err(|e| self.error(e))?;
        let info = client.discover().await.map_err(|e| self.error(e))?;
        if info.name != self.name {
            return Err(Error::invalid(
                "csi driver",
                format!(
                    "the driver at {} is {:?}, not {:?}",
                    self.socket.display(),
                    info.name,
                    self.name
                ),
            ));
        }
        *connection = Some((client.clone(), info.clone()));
        Ok((client, info))
    }

    fn volume_of(&self, id: &VolumeId, size_bytes: u64) -> Volume {
        Volume {
            id: id.clone(),
            size_bytes,
            access_mode: AccessMode::ReadWriteOnce,
            filesystem: Filesystem::Ext4,
            source_snapshot: None,
            staged_at: None,
            published_at: Vec::new(),
        }
    }
}

fn stages(info: &DriverInfo) -> bool {
    info.node_rpcs.contains(&NodeRpc::StageUnstageVolume)
}

#[async_trait]
impl VolumeBackend for CsiBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            expansion: Expansion::Online,
            enforces_size: false,
            access_modes: vec![AccessMode::ReadWriteOnce, AccessMode::ReadOnlyMany],
        }
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Volume> {
        let (mut client, _) = self.client().await?;
        let parameters: HashMap<_, _> = req.parameters.clone().into_iter().collect();
        let made = client
            .create_volume(req.id.as_str(), req.size_bytes, parameters, None)
            .await
            .map_err(|e| self.error(e))?;
        Ok(self.volume_of(&req.id, made.capacity_bytes.max(0) as u64))
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        let (mut client, _) = self.client().await?;
        client
            .delete_volume(id.as_str())
            .await
            .map_err(|e| self.error(e))
    }

    async fn volume(&self, _id: &VolumeId) -> Result<Option<Volume>> {
        Ok(None)
    }

    async fn list(&self) -> Result<Vec<Volume>> {
        Ok(Vec::new())
    }

    async fn stage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let (mut client, info) = self.client().await?;
        if !stages(&info) {
            return Ok(());
        }
        client
            .stage(id.as_str(), staging)
            .await
            .map_err(|e| self.error(e))
    }

    async fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        let (mut client, info) = self.client().await?;
        if !stages(&info) {
            return Ok(());
        }
        client
            .unstage(id.as_str(), staging)
            .await
            .map_err(|e| self.error(e))
    }

    async fn publish(
        &self,
        id: &VolumeId,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        let (mut client, info) = self.client().await?;
        client
            .publish(&info, id.as_str(), staging, target, read_only)
            .await
            .map_err(|e| self.error(e))
    }

    async fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<()> {
        let (mut client, _) = self.client().await?;
        client
            .unpublish(id.as_str(), target)
            .await
            .map_err(|e| self.error(e))
    }

    async fn expand(&self, id: &VolumeId, size_bytes: u64) -> Result<u64> {
        let (mut client, _) = self.client().await?;
        client
            .expand(id.as_str(), size_bytes)
            .await
            .map_err(|e| self.error(e))
    }

    async fn snapshot(&self, id: &VolumeId, snapshot: &SnapshotId) -> Result<Snapshot> {
        let (mut client, _) = self.client().await?;
        let taken = client
            .create_snapshot(id.as_str(), snapshot.as_str())
            .await
            .map_err(|e| self.error(e))?;
        Ok(Snapshot {
            id: snapshot.clone(),
            source_volume: id.clone(),
            size_bytes: taken.size_bytes.max(0) as u64,
            created_unix: taken.creation_time.map_or(0, |t| t.seconds),
        })
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotId) -> Result<()> {
        let (mut client, _) = self.client().await?;
        client
            .delete_snapshot(snapshot.as_str())
            .await
            .map_err(|e| self.error(e))
    }

    async fn get_snapshot(&self, _snapshot: &SnapshotId) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn restore(&self, snapshot: &SnapshotId, req: &ProvisionRequest) -> Result<Volume> {
        let (mut client, _) = self.client().await?;
        let parameters: HashMap<_, _> = req.parameters.clone().into_iter().collect();
        let made = client
            .create_volume(
                req.id.as_str(),
                req.size_bytes,
                parameters,
                Some(snapshot.as_str()),
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(self.volume_of(&req.id, made.capacity_bytes.max(0) as u64))
    }

    async fn capacity(&self) -> Result<Capacity> {
        let (mut client, _) = self.client().await?;
        let available_bytes = client.capacity().await.map_err(|e| self.error(e))?;
        Ok(Capacity {
            available_bytes,
            total_bytes: 0,
        })
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        Ok(ReconcileReport::default())
    }
}
