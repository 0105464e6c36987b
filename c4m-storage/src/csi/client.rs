//! The container-orchestrator side of CSI: connects to a driver's unix socket
//! and calls its services in the order the spec gives (Identity first, then
//! Controller, then Node; teardown in reverse).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::proto;
use super::proto::controller_client::ControllerClient;
use super::proto::controller_service_capability::rpc::Type as ControllerRpc;
use super::proto::identity_client::IdentityClient;
use super::proto::node_client::NodeClient;
use super::proto::node_service_capability::rpc::Type as NodeRpc;
use super::proto::volume_capability::access_mode::Mode;

/// What can go wrong talking to a CSI driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to csi driver at {}", .socket.display())]
    Connect {
        /// The driver's socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call failed.
    #[error("csi {method} failed")]
    Call {
        /// The RPC.
        method: &'static str,
        /// The driver's status.
        #[source]
        source: tonic::Status,
    },
    /// The driver answered without something the spec requires.
    #[error("csi {method}: {what}")]
    Protocol {
        /// The RPC.
        method: &'static str,
        /// What was missing or wrong.
        what: String,
    },
}

impl ClientError {
    /// The gRPC code of a failed call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Call { source, .. } => Some(source.code()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

fn call(method: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |source| ClientError::Call { method, source }
}

/// What a driver says about itself, gathered from its Identity service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverInfo {
    /// Its name (`GetPluginInfo`).
    pub name: String,
    /// Its version.
    pub vendor_version: String,
    /// Whether it offers the Controller service.
    pub controller_service: bool,
    /// The controller RPCs it offers.
    pub controller_rpcs: Vec<ControllerRpc>,
    /// The node RPCs it offers.
    pub node_rpcs: Vec<NodeRpc>,
    /// This node's id as the driver knows it (`NodeGetInfo`).
    pub node_id: String,
}

/// A connection to one CSI driver.
#[derive(Clone, Debug)]
pub struct CsiClient {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

/// A read-write or read-only mount capability with ext4.
pub(crate) fn mount_capability(read_only: bool) -> proto::VolumeCapability {
    let mode = if read_only {
        Mode::SingleNodeReaderOnly
    } else {
        Mode::SingleNodeWriter
    };
    proto::VolumeCapability {
        access_type: Some(proto::volume_capability::AccessType::Mount(
            proto::volume_capability::MountVolume {
                fs_type: "ext4".into(),
                mount_flags: Vec::new(),
            },
        )),
        access_mode: Some(proto::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

impl CsiClient {
    /// Connects to the driver listening on the unix socket `socket`.
    pub async fn connect(socket: &Path) -> Result<Self> {
        let path = socket.to_path_buf();
        // The URI is required by tonic and ignored: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await
            .map_err(|source| ClientError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Self {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        })
    }

    /// The spec's first calls: GetPluginInfo, GetPluginCapabilities, Probe
    /// (which must say ready), then ControllerGetCapabilities (when offered),
    /// NodeGetInfo and NodeGetCapabilities.
    pub async fn discover(&mut self) -> Result<DriverInfo> {
        let info = self
            .identity
            .get_plugin_info(proto::GetPluginInfoRequest {})
            .await
            .map_err(call("GetPluginInfo"))?
            .into_inner();
        if info.name.is_empty() {
            return Err(ClientError::Protocol {
                method: "GetPluginInfo",
                what: "the driver has no name".into(),
            });
        }
        let plugin_caps = self
            .identity
            .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
            .await
            .map_err(call("GetPluginCapabilities"))?
            .into_inner();
        let controller_service = plugin_caps.capabilities.iter().any(|c| {
            matches!(&c.r#type, Some(proto::plugin_capability::Type::Service(s))
                if s.r#type == proto::plugin_capability::service::Type::ControllerService as i32)
        });
        let probe = self
            .identity
            .probe(proto::ProbeRequest {})
            .await
            .map_err(call("Probe"))?
            .into_inner();
        if probe.ready == Some(false) {
            return Err(ClientError::Protocol {
                method: "Probe",
                what: "the driver is not ready".into(),
            });
        }
        let controller_rpcs = if controller_service {
            self.controller
                .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
                .await
                .map_err(call("ControllerGetCapabilities"))?
                .into_inner()
                .capabilities
                .into_iter()
                .filter_map(|c| match c.r#type {
                    Some(proto::controller_service_capability::Type::Rpc(rpc)) => {
                        ControllerRpc::try_from(rpc.r#type).ok()
                    }
                    None => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let node_info = self
            .node
            .node_get_info(proto::NodeGetInfoRequest {})
            .await
            .map_err(call("NodeGetInfo"))?
            .into_inner();
        let node_rpcs = self
            .node
            .node_get_capabilities(proto::NodeGetCapabilitiesRequest {})
            .await
            .map_err(call("NodeGetCapabilities"))?
            .into_inner()
            .capabilities
            .into_iter()
            .filter_map(|c| match c.r#type {
                Some(proto::node_service_capability::Type::Rpc(rpc)) => {
                    NodeRpc::try_from(rpc.r#type).ok()
                }
                None => None,
            })
            .collect();
        Ok(DriverInfo {
            name: info.name,
            vendor_version: info.vendor_version,
            controller_service,
            controller_rpcs,
            node_rpcs,
            node_id: node_info.node_id,
        })
    }

    /// CreateVolume of `size_bytes` (exactly: required = limit rounded to 4 KiB),
    /// optionally from a snapshot.
    pub async fn create_volume(
        &mut self,
        name: &str,
        size_bytes: u64,
        parameters: HashMap<String, String>,
        from_snapshot: Option<&str>,
    ) -> Result<proto::Volume> {
        let request = proto::CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: size_bytes as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability(false)],
            parameters,
            secrets: HashMap::new(),
            volume_content_source: from_snapshot.map(|id| proto::VolumeContentSource {
                r#type: Some(proto::volume_content_source::Type::Snapshot(
                    proto::volume_content_source::SnapshotSource {
                        snapshot_id: id.into(),
                    },
                )),
            }),
            accessibility_requirements: None,
        };
        let response = self
            .controller
            .create_volume(request)
            .await
            .map_err(call("CreateVolume"))?
            .into_inner();
        response.volume.ok_or_else(|| ClientError::Protocol {
            method: "CreateVolume",
            what: "no volume in the answer".into(),
        })
    }

    /// DeleteVolume.
    pub async fn delete_volume(&mut self, volume_id: &str) -> Result<()> {
        let request = proto::DeleteVolumeRequest {
            volume_id: volume_id.into(),
            secrets: HashMap::new(),
        };
        self.controller
            .delete_volume(request)
            .await
            .map_err(call("DeleteVolume"))?;
        Ok(())
    }

    /// GetCapacity, in bytes.
    pub async fn capacity(&mut self) -> Result<u64> {
        let request = proto::GetCapacityRequest {
            volume_capabilities: vec![mount_capability(false)],
            parameters: HashMap::new(),
            accessible_topology: None,
        };
        let response = self
            .controller
            .get_capacity(request)
            .await
            .map_err(call("GetCapacity"))?
            .into_inner();
        Ok(response.available_capacity.max(0) as u64)
    }

    /// Makes a volume visible at `target`: NodeStageVolume at `staging` when the
    /// driver offers STAGE_UNSTAGE_VOLUME, then NodePublishVolume.
    pub async fn mount(
        &mut self,
        info: &DriverInfo,
        volume_id: &str,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        if info.node_rpcs.contains(&NodeRpc::StageUnstageVolume) {
            self.stage(volume_id, staging).await?;
        }
        self.publish(info, volume_id, staging, target, read_only)
            .await
    }

    /// NodePublishVolume alone (with `staging` when the driver stages).
    pub async fn publish(
        &mut self,
        info: &DriverInfo,
        volume_id: &str,
        staging: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        let staged = info.node_rpcs.contains(&NodeRpc::StageUnstageVolume);
        let request = proto::NodePublishVolumeRequest {
            volume_id: volume_id.into(),
            publish_context: HashMap::new(),
            staging_target_path: if staged {
                staging.display().to_string()
            } else {
                String::new()
            },
            target_path: target.display().to_string(),
            volume_capability: Some(mount_capability(read_only)),
            readonly: read_only,
            secrets: HashMap::new(),
            volume_context: HashMap::new(),
        };
        self.node
            .node_publish_volume(request)
            .await
            .map_err(call("NodePublishVolume"))?;
        Ok(())
    }

    /// NodeStageVolume alone.
    pub async fn stage(&mut self, volume_id: &str, staging: &Path) -> Result<()> {
        let request = proto::NodeStageVolumeRequest {
            volume_id: volume_id.into(),
            publish_context: HashMap::new(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(mount_capability(false)),
            secrets: HashMap::new(),
            volume_context: HashMap::new(),
        };
        self.node
            .node_stage_volume(request)
            .await
            .map_err(call("NodeStageVolume"))?;
        Ok(())
    }

    /// Undoes [`mount`](Self::mount): NodeUnpublishVolume, then NodeUnstageVolume
    /// when the driver stages.
    pub async fn unmount(
        &mut self,
        info: &DriverInfo,
        volume_id: &str,
        staging: &Path,
        target: &Path,
    ) -> Result<()> {
        self.unpublish(volume_id, target).await?;
        if info.node_rpcs.contains(&NodeRpc::StageUnstageVolume) {
            self.unstage(volume_id, staging).await?;
        }
        Ok(())
    }

    /// NodeUnstageVolume alone.
    pub async fn unstage(&mut self, volume_id: &str, staging: &Path) -> Result<()> {
        let request = proto::NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging.display().to_string(),
        };
        self.node
            .node_unstage_volume(request)
            .await
            .map_err(call("NodeUnstageVolume"))?;
        Ok(())
    }

    /// NodeUnpublishVolume alone.
    pub async fn unpublish(&mut self, volume_id: &str, target: &Path) -> Result<()> {
        let request = proto::NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: target.display().to_string(),
        };
        self.node
            .node_unpublish_volume(request)
            .await
            .map_err(call("NodeUnpublishVolume"))?;
        Ok(())
    }

    /// CreateSnapshot of `volume_id` named `name`.
    pub async fn create_snapshot(
        &mut self,
        volume_id: &str,
        name: &str,
    ) -> Result<proto::Snapshot> {
        let request = proto::CreateSnapshotRequest {
            source_volume_id: volume_id.into(),
            name: name.into(),
            secrets: HashMap::new(),
            parameters: HashMap::new(),
        };
        let response = self
            .controller
            .create_snapshot(request)
            .await
            .map_err(call("CreateSnapshot"))?
            .into_inner();
        response.snapshot.ok_or_else(|| ClientError::Protocol {
            method: "CreateSnapshot",
            what: "no snapshot in the answer".into(),
        })
    }

    /// DeleteSnapshot.
    pub async fn delete_snapshot(&mut self, snapshot_id: &str) -> Result<()> {
        let request = proto::DeleteSnapshotRequest {
            snapshot_id: snapshot_id.into(),
            secrets: HashMap::new(),
        };
        self.controller
            .delete_snapshot(request)
            .await
            .map_err(call("DeleteSnapshot"))?;
        Ok(())
    }

    /// ControllerExpandVolume to `size_bytes`; returns the new size.
    pub async fn expand(&mut self, volume_id: &str, size_bytes: u64) -> Result<u64> {
        let request = proto::ControllerExpandVolumeRequest {
            volume_id: volume_id.into(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: size_bytes as i64,
                limit_bytes: 0,
            }),
            secrets: HashMap::new(),
            volume_capability: Some(mount_capability(false)),
        };
        let response = self
            .controller
            .controller_expand_volume(request)
            .await
            .map_err(call("ControllerExpandVolume"))?
            .into_inner();
        Ok(response.capacity_bytes.max(0) as u64)
    }

    /// The raw generated clients, for calls this type does not wrap.
    pub fn services(
        &mut self,
    ) -> (
        &mut IdentityClient<Channel>,
        &mut ControllerClient<Channel>,
        &mut NodeClient<Channel>,
    ) {
        (&mut self.identity, &mut self.controller, &mut self.node)
    }
}
