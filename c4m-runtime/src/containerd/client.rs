//! containerd's gRPC services over its Unix socket, every request in c4m's
//! namespace (and, while an image is moved in, under a lease).

use std::path::Path;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use crate::{Error, Result};

/// The containerd namespace c4m's images, snapshots and containers live in.
pub(super) const NAMESPACE: &str = "c4m";
/// The snapshotter image layers and container root file systems use.
pub(super) const SNAPSHOTTER: &str = "overlayfs";

/// A connection to one containerd.
#[derive(Clone)]
pub(super) struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the containerd listening on `socket`.
    pub(super) async fn connect(socket: &Path) -> Result<Client> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| Error::daemon_unreachable("containerd", socket, e))?;
        Ok(Client { channel })
    }

    /// `message` as a request in c4m's namespace.
    pub(super) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "containerd-namespace",
            MetadataValue::from_static(NAMESPACE),
        );
        request
    }

    /// `message` as a request in c4m's namespace whose new resources the
    /// lease `lease` keeps from containerd's garbage collector.
    pub(super) fn leased<T>(&self, message: T, lease: &str) -> Result<Request<T>> {
        let mut request = self.request(message);
        let value = MetadataValue::try_from(lease)
            .map_err(|e| Error::driver(format!("containerd lease id {lease:?}"), e))?;
        request.metadata_mut().insert("containerd-lease", value);
        Ok(request)
    }

    pub(super) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub(super) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    pub(super) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    pub(super) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }

    pub(super) fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    pub(super) fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    pub(super) fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    pub(super) fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }
}

/// Whether containerd answered that the thing asked for does not exist.
pub(super) fn not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// Whether containerd answered that the thing to create exists already.
pub(super) fn already_exists(status: &Status) -> bool {
    status.code() == Code::AlreadyExists
}

/// `Ok(None)` for a NotFound answer, the value otherwise.
pub(super) fn found<T>(
    result: std::result::Result<T, Status>,
) -> std::result::Result<Option<T>, Status> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(status) if not_found(&status) => Ok(None),
        Err(status) => Err(status),
    }
}

/// An error naming what was asked of containerd and its answer.
pub(super) fn call_error(id: &str, what: &str, status: &Status) -> Error {
    Error::Runtime {
        id: id.to_string(),
        message: format!("containerd {what}: {}", status.message()),
    }
}
