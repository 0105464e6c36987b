//! A [`VolumeBackend`] served as a CSI driver (Identity, Controller and Node
//! services) on a unix socket.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto;
use super::proto::controller_service_capability::rpc::Type as ControllerRpc;
use super::proto::node_service_capability::rpc::Type as NodeRpc;
use super::proto::volume_capability::access_mode::Mode;
use crate::backend::VolumeBackend;
use crate::error::{Error, Result};
use crate::types::{AccessMode, ProvisionRequest, SnapshotId, VolumeId};

/// The size given to a CreateVolume without a capacity range.
pub(super) const DEFAULT_VOLUME_BYTES: u64 = 1 << 30;

/// A CSI driver over a backend, for one node.
#[derive(Clone, Debug)]
pub struct CsiDriver {
    name: String,
    node_id: String,
    backend: Arc<dyn VolumeBackend>,
}

impl CsiDriver {
    /// A driver named `name` (e.g. `local.storage.c4m.io`) for node `node_id`.
    pub fn new(
        name: impl Into<String>,
        node_id: impl Into<String>,
        backend: Arc<dyn VolumeBackend>,
    ) -> Self {
        Self {
            name: name.into(),
            node_id: node_id.into(),
            backend,
        }
    }
}

/// Serves `driver` on a unix socket at `socket` (mode 0600, replacing a stale
/// socket file) until `shutdown` is cancelled.
pub async fn serve_driver(
    driver: CsiDriver,
    socket: &Path,
    shutdown: CancellationToken,
) -> Result<()> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale socket", socket, e)),
    }
    let listener =
        tokio::net::UnixListener::bind(socket).map_err(|e| Error::io("bind", socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod", socket, e))?;
    let served = tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(driver.clone()))
        .add_service(proto::controller_server::ControllerServer::new(
            driver.clone(),
        ))
        .add_service(proto::node_server::NodeServer::new(driver))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await;
    let _ = std::fs::remove_file(socket);
    served.map_err(|e| Error::Driver {
        driver: format!("csi server on {}", socket.display()),
        source: Box::new(e),
    })
}

fn status(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::InvalidArgument { .. } => Status::invalid_argument(message),
        Error::NotFound { .. } => Status::not_found(message),
        Error::AlreadyExists { .. } => Status::already_exists(message),
        Error::InUse { .. } | Error::OfflineExpansionRequired { .. } => {
            Status::failed_precondition(message)
        }
        Error::InsufficientCapacity { .. } => Status::resource_exhausted(message),
        Error::Unsupported { .. } => Status::unimplemented(message),
        _ => {
            tracing::warn!(error = %message, "csi call failed");
            Status::internal(message)
        }
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

fn volume_id(value: &str) -> Result<VolumeId, Status> {
    VolumeId::new(required(value, "volume_id")?).map_err(status)
}

fn path(value: &str, field: &str) -> Result<PathBuf, Status> {
    let path = PathBuf::from(required(value, field)?);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{field} {value:?} must be absolute"
        )));
    }
    Ok(path)
}

/// The access mode a capability asks for; block access is refused.
fn access_mode(capability: &proto::VolumeCapability) -> Result<AccessMode, Status> {
    if let Some(proto::volume_capability::AccessType::Block(_)) = capability.access_type {
        return Err(Status::invalid_argument(
            "block access is not supported; ask for a mount",
        ));
    }
    if let Some(proto::volume_capability::AccessType::Mount(mount)) = &capability.access_type
        && !(mount.fs_type.is_empty() || mount.fs_type == "ext4")
    {
        return Err(Status::invalid_argument(format!(
            "fs_type {:?} is not supported; only ext4",
            mount.fs_type
        )));
    }
    let mode = capability
        .access_mode
        .as_ref()
        .map(|m| m.mode())
        .unwrap_or(Mode::Unknown);
    match mode {
        Mode::SingleNodeWriter => Ok(AccessMode::ReadWriteOnce),
        Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => Ok(AccessMode::ReadOnlyMany),
        Mode::MultiNodeMultiWriter | Mode::MultiNodeSingleWriter => Ok(AccessMode::ReadWriteMany),
        Mode::Unknown => Err(Status::invalid_argument(
            "volume_capability.access_mode is required",
        )),
    }
}

fn supported(
    backend: &dyn VolumeBackend,
    capabilities: &[proto::VolumeCapability],
) -> Result<AccessMode, Status> {
    let first = capabilities
        .first()
        .ok_or_else(|| Status::invalid_argument("volume_capabilities is required"))?;
    let wanted = access_mode(first)?;
    for capability in capabilities {
        let mode = access_mode(capability)?;
        if !backend.capabilities().access_modes.contains(&mode) {
            return Err(Status::invalid_argument(format!(
                "access mode {mode:?} is not supported"
            )));
        }
    }
    Ok(wanted)
}

fn size_from(range: Option<&proto::CapacityRange>) -> Result<u64, Status> {
    let Some(range) = range else {
        return Ok(DEFAULT_VOLUME_BYTES);
    };
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(Status::invalid_argument(
            "capacity_range bytes must not be negative",
        ));
    }
    let (required, limit) = (range.required_bytes as u64, range.limit_bytes as u64);
    let size = if required > 0 {
        required
    } else if limit > 0 {
        limit.min(DEFAULT_VOLUME_BYTES)
    } else {
        DEFAULT_VOLUME_BYTES
    };
    // Backends round up to their block size; the limit must leave room for it.
    let rounded = size.next_multiple_of(4096);
    if limit > 0 && rounded > limit {
        return Err(Status::out_of_range(format!(
            "required {required} bytes rounds to {rounded}, above limit_bytes {limit}"
        )));
    }
    Ok(size)
}

fn csi_volume(volume: crate::types::Volume) -> proto::Volume {
    proto::Volume {
        capacity_bytes: volume.size_bytes as i64,
        volume_id: volume.id.to_string(),
        volume_context: HashMap::new(),
        content_source: volume.source_snapshot.map(|s| proto::VolumeContentSource {
            r#type: Some(proto::volume_content_source::Type::Snapshot(
                proto::volume_content_source::SnapshotSource {
                    snapshot_id: s.to_string(),
                },
            )),
        }),
        accessible_topology: Vec::new(),
    }
}

fn csi_snapshot(snapshot: crate::types::Snapshot) -> proto::Snapshot {
    proto::Snapshot {
        size_bytes: snapshot.size_bytes as i64,
        snapshot_id: snapshot.id.to_string(),
        source_volume_id: snapshot.source_volume.to_string(),
        creation_time: Some(prost_types::Timestamp {
            seconds: snapshot.created_unix,
            nanos: 0,
        }),
        ready_to_use: true,
    }
}

#[tonic::async_trait]
impl proto::identity_server::Identity for CsiDriver {
    async fn get_plugin_info(
        &self,
        _: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::from([("backend".to_string(), self.backend.name().to_string())]),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        use proto::plugin_capability::{Service, Type, service};
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: vec![proto::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            }],
        }))
    }

    async fn probe(
        &self,
        _: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        self.backend.capacity().await.map_err(status)?;
        Ok(Response::new(proto::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl proto::controller_server::Controller for CsiDriver {
    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = VolumeId::new(required(&req.name, "name")?).map_err(status)?;
        let access_mode = supported(self.backend.as_ref(), &req.volume_capabilities)?;
        let size_bytes = size_from(req.capacity_range.as_ref())?;
        let provision = ProvisionRequest {
            id,
            size_bytes,
            access_mode,
            filesystem: crate::types::Filesystem::Ext4,
            parameters: req.parameters.into_iter().collect(),
        };
        let source = req.volume_content_source.and_then(|s| s.r#type);
        let volume = match source {
            None => self.backend.provision(&provision).await,
            Some(proto::volume_content_source::Type::Snapshot(s)) => {
                let snapshot =
                    SnapshotId::new(required(&s.snapshot_id, "snapshot_id")?).map_err(status)?;
                match self.backend.restore(&snapshot, &provision).await {
                    // A snapshot id that cannot exist is NOT_FOUND, as the spec says.
                    Err(Error::NotFound { kind, id }) => {
                        return Err(Status::not_found(format!("{kind} {id} not found")));
                    }
                    other => other,
                }
            }
            Some(proto::volume_content_source::Type::Volume(_)) => {
                return Err(Status::invalid_argument(
                    "cloning from a volume is not supported",
                ));
            }
        }
        .map_err(status)?;
        Ok(Response::new(proto::CreateVolumeResponse {
            volume: Some(csi_volume(volume)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<proto::DeleteVolumeRequest>,
    ) -> Result<Response<proto::DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        let raw = required(&req.volume_id, "volume_id")?;
        // An id this driver could never have made does not exist: success.
        if let Ok(id) = VolumeId::new(raw) {
            self.backend.delete(&id).await.map_err(status)?;
        }
        Ok(Response::new(proto::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volumes are node-local: no controller publish",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volumes are node-local: no controller unpublish",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let id = volume_id(&req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        if self.backend.volume(&id).await.map_err(status)?.is_none() {
            return Err(Status::not_found(format!("volume {id} not found")));
        }
        let response = match supported(self.backend.as_ref(), &req.volume_capabilities) {
            Ok(_) => proto::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                }),
                message: String::new(),
            },
            Err(unsupported) => proto::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: unsupported.message().to_string(),
            },
        };
        Ok(Response::new(response))
    }

    async fn list_volumes(
        &self,
        request: Request<proto::ListVolumesRequest>,
    ) -> Result<Response<proto::ListVolumesResponse>, Status> {
        let req = request.into_inner();
        let volumes = self.backend.list().await.map_err(status)?;
        let start = if req.starting_token.is_empty() {
            0
        } else {
            req.starting_token
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= volumes.len())
                .ok_or_else(|| {
                    Status::aborted(format!(
                        "starting_token {:?} is not one this driver gave",
                        req.starting_token
                    ))
                })?
        };
        let take = if req.max_entries > 0 {
            req.max_entries as usize
        } else {
            usize::MAX
        };
        let end = start.saturating_add(take).min(volumes.len());
        let entries = volumes[start..end]
            .iter()
            .cloned()
            .map(|v| proto::list_volumes_response::Entry {
                volume: Some(csi_volume(v)),
                status: None,
            })
            .collect();
        let next_token = if end < volumes.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        _: Request<proto::GetCapacityRequest>,
    ) -> Result<Response<proto::GetCapacityResponse>, Status> {
        let capacity = self.backend.capacity().await.map_err(status)?;
        Ok(Response::new(proto::GetCapacityResponse {
            available_capacity: capacity.available_bytes as i64,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<proto::ControllerGetCapabilitiesResponse>, Status> {
        let caps = self.backend.capabilities();
        let mut rpcs = vec![
            ControllerRpc::CreateDeleteVolume,
            ControllerRpc::ListVolumes,
            ControllerRpc::GetCapacity,
        ];
        if caps.snapshots {
            rpcs.push(ControllerRpc::CreateDeleteSnapshot);
        }
        if caps.expansion != crate::types::Expansion::None {
            rpcs.push(ControllerRpc::ExpandVolume);
        }
        let capabilities = rpcs
            .into_iter()
            .map(|rpc| proto::ControllerServiceCapability {
                r#type: Some(proto::controller_service_capability::Type::Rpc(
                    proto::controller_service_capability::Rpc { r#type: rpc as i32 },
                )),
            })
            .collect();
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        let snapshot = SnapshotId::new(required(&req.name, "name")?).map_err(status)?;
        let volume = volume_id(&req.source_volume_id)?;
        let taken = self
            .backend
            .snapshot(&volume, &snapshot)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(taken)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<proto::DeleteSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        if let Ok(id) = SnapshotId::new(required(&req.snapshot_id, "snapshot_id")?) {
            self.backend.delete_snapshot(&id).await.map_err(status)?;
        }
        Ok(Response::new(proto::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        _: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented("listing snapshots is not supported"))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<proto::ControllerExpandVolumeRequest>,
    ) -> Result<Response<proto::ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = volume_id(&req.volume_id)?;
        let range = req
            .capacity_range
            .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        let size = size_from(Some(&range))?;
        let grown = self.backend.expand(&id, size).await.map_err(status)?;
        Ok(Response::new(proto::ControllerExpandVolumeResponse {
            capacity_bytes: grown as i64,
            node_expansion_required: false,
        }))
    }

    async fn controller_get_volume(
        &self,
        _: Request<proto::ControllerGetVolumeRequest>,
    ) -> Result<Response<proto::ControllerGetVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "controller get volume is not supported",
        ))
    }
}

#[tonic::async_trait]
impl proto::node_server::Node for CsiDriver {
    async fn node_stage_volume(
        &self,
        request: Request<proto::NodeStageVolumeRequest>,
    ) -> Result<Response<proto::NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = volume_id(&req.volume_id)?;
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        let capability = req
            .volume_capability
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        access_mode(&capability)?;
        self.backend.stage(&id, &staging).await.map_err(status)?;
        Ok(Response::new(proto::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = volume_id(&req.volume_id)?;
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        self.backend.unstage(&id, &staging).await.map_err(status)?;
        Ok(Response::new(proto::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = volume_id(&req.volume_id)?;
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        let target = path(&req.target_path, "target_path")?;
        let capability = req
            .volume_capability
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let read_only = req.readonly || access_mode(&capability)? == AccessMode::ReadOnlyMany;
        self.backend
            .publish(&id, &staging, &target, read_only)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = volume_id(&req.volume_id)?;
        let target = path(&req.target_path, "target_path")?;
        self.backend.unpublish(&id, &target).await.map_err(status)?;
        Ok(Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        volume_id(&req.volume_id)?;
        let volume_path = path(&req.volume_path, "volume_path")?;
        let st = nix::sys::statvfs::statvfs(&volume_path).map_err(|e| {
            Status::not_found(format!("volume_path {}: {e}", volume_path.display()))
        })?;
        let unit = st.fragment_size();
        let bytes = proto::VolumeUsage {
            available: (st.blocks_available() * unit) as i64,
            total: (st.blocks() * unit) as i64,
            used: ((st.blocks() - st.blocks_free()) * unit) as i64,
            unit: proto::volume_usage::Unit::Bytes as i32,
        };
        let inodes = proto::VolumeUsage {
            available: st.files_available() as i64,
            total: st.files() as i64,
            used: (st.files() - st.files_free()) as i64,
            unit: proto::volume_usage::Unit::Inodes as i32,
        };
        Ok(Response::new(proto::NodeGetVolumeStatsResponse {
            usage: vec![bytes, inodes],
            volume_condition: None,
        }))
    }

    async fn node_expand_volume(
        &self,
        _: Request<proto::NodeExpandVolumeRequest>,
    ) -> Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "expansion happens in ControllerExpandVolume",
        ))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [NodeRpc::StageUnstageVolume, NodeRpc::GetVolumeStats]
            .into_iter()
            .map(|rpc| proto::NodeServiceCapability {
                r#type: Some(proto::node_service_capability::Type::Rpc(
                    proto::node_service_capability::Rpc { r#type: rpc as i32 },
                )),
            })
            .collect();
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_capacity_range() {
        assert_eq!(size_from(None).unwrap(), DEFAULT_VOLUME_BYTES);
        let range = |required_bytes, limit_bytes| proto::CapacityRange {
            required_bytes,
            limit_bytes,
        };
        assert_eq!(size_from(Some(&range(10 << 20, 0))).unwrap(), 10 << 20);
        assert_eq!(size_from(Some(&range(0, 64 << 20))).unwrap(), 64 << 20);
        assert_eq!(
            size_from(Some(&range(4097, 4097))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            size_from(Some(&range(-1, 0))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn block_access_and_missing_modes_are_refused() {
        let block = proto::VolumeCapability {
            access_type: Some(proto::volume_capability::AccessType::Block(
                proto::volume_capability::BlockVolume {},
            )),
            access_mode: Some(proto::volume_capability::AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        };
        assert_eq!(
            access_mode(&block).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let no_mode = proto::VolumeCapability {
            access_type: None,
            access_mode: None,
        };
        assert_eq!(
            access_mode(&no_mode).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
