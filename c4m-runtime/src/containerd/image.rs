//! Moving an image from c4m's [`ImageStore`] into containerd. containerd
//! 1.6 pulls on the client side, so c4m does what its client would: the
//! blobs go in through the Content service's writer protocol, each layer is
//! unpacked into an `overlayfs` snapshot named by its chain id (Prepare,
//! Diff Apply, Commit), and an image record points at the manifest. What
//! containerd has already is skipped. Garbage-collection labels tie it all
//! together as containerd's own pull does: the manifest references its
//! config and layers, the config the top snapshot; a lease keeps the pieces
//! until the image record holds them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image as ImageRecord, InfoRequest,
    UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::{Descriptor, Mount};
use futures::StreamExt;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::client::{self, Client, SNAPSHOTTER};
use crate::state::{self, blocking};
use crate::{Error, Result};
use c4m_image::ImageStore;

/// Size of one Content write message.
const CHUNK: usize = 1 << 20;
/// How long an import's lease may outlive a crashed agent.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// The manifest media type when the manifest names none.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image ready in containerd.
pub(super) struct Imported {
    /// The image record's name.
    pub name: String,
    /// The chain id of the top layer: the parent of a container's root
    /// file system (`None` for an image without layers).
    pub top_chain_id: Option<String>,
    /// The image's configuration.
    pub config: ImageConfiguration,
    /// The image's unpacked layers in c4m's store, lowest first (where the
    /// runtime spec looks names up in `/etc/passwd`).
    pub layer_dirs: Vec<PathBuf>,
}

/// The chain ids of layers with `diff_ids`, lowest first (OCI image spec:
/// the first is its diff id, each next one `sha256(parent + " " + diff_id)`).
pub(super) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}")))
            ),
        };
        chain.push(next);
    }
    chain
}

fn image_error(reference: &str, what: &str, status: &containerd_client::tonic::Status) -> Error {
    Error::Image {
        reference: reference.to_string(),
        source: format!("containerd {what}: {}", status.message()).into(),
    }
}

/// Makes sure containerd has the image `reference` names (pulled into c4m's
/// store first as `spec`'s pull policy says).
pub(super) async fn ensure(
    client: &Client,
    images: &Arc<ImageStore>,
    spec: &c4m_core::ContainerSpec,
    reference: &str,
) -> Result<Imported> {
    // Garbage collection of c4m's store waits until the blobs are copied.
    let store = Arc::clone(images);
    let _fence = blocking(move || store.gc_fence()).await?;
    let image = state::image_on_demand(images, spec, reference).await?;
    let store = Arc::clone(images);
    let wanted = image.clone();
    let (config, layer_dirs, manifest_path, config_path, layer_paths) = blocking(move || {
        let config = store.config(&wanted)?;
        let layer_dirs = store.layer_dirs(&wanted)?;
        let manifest = store.blob_file(&wanted.digest)?;
        let config_blob = store.blob_file(&wanted.config_digest)?;
        let layers = wanted
            .layers
            .iter()
            .map(|layer| store.blob_file(&layer.digest))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, c4m_image::Error>((config, layer_dirs, manifest, config_blob, layers))
    })
    .await?;
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    let name = image
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| reference.to_string());
    let imported = Imported {
        name: name.clone(),
        top_chain_id: chain.last().cloned(),
        config,
        layer_dirs,
    };
    if is_present(client, &name, &image.digest, chain.last()).await {
        return Ok(imported);
    }

    let manifest_bytes = tokio::fs::read(&manifest_path)
        .await
        .map_err(|e| Error::io(format!("read {}", manifest_path.display()), e))?;
    let manifest = ImageManifest::from_reader(&manifest_bytes[..]).map_err(|e| Error::Image {
        reference: name.to_string(),
        source: Box::new(e),
    })?;
    let manifest_type = manifest
        .media_type()
        .as_ref()
        .map_or_else(|| OCI_MANIFEST.to_string(), |t| t.to_string());
    let layers: Vec<Descriptor> = manifest
        .layers()
        .iter()
        .map(|layer| Descriptor {
            media_type: layer.media_type().to_string(),
            digest: layer.digest().to_string(),
            size: i64::try_from(layer.size()).unwrap_or(i64::MAX),
            annotations: HashMap::new(),
        })
        .collect();
    if layers.len() != chain.len() {
        return Err(Error::Image {
            reference: name.to_string(),
            source: format!(
                "the manifest has {} layers, the store {}",
                layers.len(),
                chain.len()
            )
            .into(),
        });
    }

    let lease = create_lease(client, &name).await?;
    let result = async {
        for (layer, path) in layers.iter().zip(&layer_paths) {
            write_blob(client, &lease, &name, path, &layer.digest, HashMap::new()).await?;
        }
        let mut config_labels = HashMap::new();
        if let Some(top) = chain.last() {
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                top.clone(),
            );
        }
        let config_digest = manifest.config().digest().to_string();
        write_blob(
            client,
            &lease,
            &name,
            &config_path,
            &config_digest,
            config_labels,
        )
        .await?;
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest,
        )]);
        for (index, layer) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{index}"),
                layer.digest.clone(),
            );
        }
        write_blob(
            client,
            &lease,
            &name,
            &manifest_path,
            &image.digest,
            manifest_labels,
        )
        .await?;
        unpack(client, &lease, &name, &layers, &chain).await?;
        let target = Descriptor {
            media_type: manifest_type,
            digest: image.digest.clone(),
            size: manifest_bytes.len() as i64,
            annotations: HashMap::new(),
        };
        put_image_record(client, &name, target).await
    }
    .await;
    let deleted = client
        .leases()
        .delete(client.request(DeleteLeaseRequest {
            id: lease.clone(),
            sync: false,
        }))
        .await;
    if let Err(status) = deleted {
        tracing::warn!(lease = %lease, error = %status.message(), "could not delete an import lease");
    }
    result.map(|()| imported)
}

/// Whether containerd's record `name` points at `digest` and the top
/// snapshot is there.
async fn is_present(client: &Client, name: &str, digest: &str, top: Option<&String>) -> bool {
    let record = client
        .images()
        .get(client.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await;
    let same = record.is_ok_and(|response| {
        response
            .into_inner()
            .image
            .and_then(|image| image.target)
            .is_some_and(|target| target.digest == digest)
    });
    if !same {
        return false;
    }
    match top {
        None => true,
        Some(top) => snapshot_exists(client, top).await.unwrap_or(false),
    }
}

async fn snapshot_exists(
    client: &Client,
    key: &str,
) -> std::result::Result<bool, containerd_client::tonic::Status> {
    let stat = client
        .snapshots()
        .stat(client.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        }))
        .await;
    Ok(client::found(stat)?.is_some())
}

async fn create_lease(client: &Client, name: &str) -> Result<String> {
    let now = SystemTime::now();
    let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let id = format!("c4m-import-{nanos}");
    let expiry = c4m_core::format_rfc3339(now + LEASE_EXPIRY);
    client
        .leases()
        .create(client.request(CreateLeaseRequest {
            id: id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_string(), expiry)]),
        }))
        .await
        .map_err(|status| image_error(name, "create lease", &status))?;
    Ok(id)
}

/// Writes blob `digest` from `path` into containerd's content store with
/// `labels`, unless it is there.
async fn write_blob(
    client: &Client,
    lease: &str,
    name: &str,
    path: &std::path::Path,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    let info = client
        .content()
        .info(client.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await;
    if client::found(info)
        .map_err(|status| image_error(name, &format!("content info {digest}"), &status))?
        .is_some()
    {
        return Ok(());
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let total = file
        .metadata()
        .await
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len() as i64;
    let reference = format!("c4m-{digest}");
    let expected = digest.to_string();
    // WRITE messages with the data, then one COMMIT. A read error ends the
    // stream early, which leaves the write uncommitted (reported below).
    let requests = futures::stream::unfold(
        (Some(file), 0i64, Some(labels)),
        move |(file, offset, labels)| {
            let reference = reference.clone();
            let expected = expected.clone();
            async move {
                let mut file = file?;
                let mut data = vec![0u8; CHUNK];
                match file.read(&mut data).await {
                    Ok(0) => Some((
                        WriteContentRequest {
                            action: WriteAction::Commit as i32,
                            r#ref: reference,
                            total,
                            expected,
                            offset,
                            data: Vec::new(),
                            labels: labels.unwrap_or_default(),
                        },
                        (None, offset, None),
                    )),
                    Ok(n) => {
                        data.truncate(n);
                        Some((
                            WriteContentRequest {
                                action: WriteAction::Write as i32,
                                r#ref: reference,
                                total,
                                expected,
                                offset,
                                data,
                                labels: HashMap::new(),
                            },
                            (Some(file), offset + n as i64, labels),
                        ))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "read a blob for containerd");
                        None
                    }
                }
            }
        },
    );
    let what = format!("write content {digest}");
    let mut responses = client
        .content()
        .write(client.leased(requests, lease)?)
        .await
        .map_err(|status| image_error(name, &what, &status))?
        .into_inner();
    let mut committed = false;
    while let Some(response) = responses.next().await {
        match response {
            Ok(response) => committed |= response.action == WriteAction::Commit as i32,
            Err(status) if client::already_exists(&status) => committed = true,
            Err(status) => return Err(image_error(name, &what, &status)),
        }
    }
    if !committed {
        return Err(Error::Image {
            reference: name.to_string(),
            source: format!(
                "containerd did not commit blob {digest} from {}",
                path.display()
            )
            .into(),
        });
    }
    Ok(())
}

/// Unpacks each layer missing from the snapshotter into a snapshot named
/// by its chain id, on top of the one below.
async fn unpack(
    client: &Client,
    lease: &str,
    name: &str,
    layers: &[Descriptor],
    chain: &[String],
) -> Result<()> {
    let mut parent = String::new();
    for (layer, chain_id) in layers.iter().zip(chain) {
        let exists = snapshot_exists(client, chain_id)
            .await
            .map_err(|status| image_error(name, &format!("stat snapshot {chain_id}"), &status))?;
        if !exists {
            unpack_layer(client, lease, name, layer, &parent, chain_id).await?;
        }
        parent = chain_id.clone();
    }
    Ok(())
}

async fn unpack_layer(
    client: &Client,
    lease: &str,
    name: &str,
    layer: &Descriptor,
    parent: &str,
    chain_id: &str,
) -> Result<()> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!("c4m-extract-{nanos}-{chain_id}");
    let mounts: Vec<Mount> = client
        .snapshots()
        .prepare(client.leased(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.clone(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            },
            lease,
        )?)
        .await
        .map_err(|status| image_error(name, &format!("prepare snapshot {key}"), &status))?
        .into_inner()
        .mounts;
    // Whether the snapshot was committed (false: another start did it).
    let committed: Result<bool> = async {
        client
            .diff()
            .apply(client.leased(
                ApplyRequest {
                    diff: Some(layer.clone()),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            )?)
            .await
            .map_err(|status| {
                image_error(name, &format!("apply layer {}", layer.digest), &status)
            })?;
        let commit = client
            .snapshots()
            .commit(client.leased(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    name: chain_id.to_string(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                lease,
            )?)
            .await;
        match commit {
            Ok(_) => Ok(true),
            Err(status) if client::already_exists(&status) => Ok(false),
            Err(status) => Err(image_error(
                name,
                &format!("commit snapshot {chain_id}"),
                &status,
            )),
        }
    }
    .await;
    if matches!(committed, Ok(true)) {
        return Ok(());
    }
    let removed = client
        .snapshots()
        .remove(client.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.clone(),
        }))
        .await;
    if let Err(status) = client::found(removed) {
        tracing::warn!(snapshot = %key, error = %status.message(), "could not remove an unpack snapshot");
    }
    committed.map(drop)
}

/// Creates the image record `name`, or points an existing one at `target`.
async fn put_image_record(client: &Client, name: &str, target: Descriptor) -> Result<()> {
    let record = ImageRecord {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(target),
        created_at: None,
        updated_at: None,
    };
    let created = client
        .images()
        .create(client.request(CreateImageRequest {
            image: Some(record.clone()),
            source_date_epoch: None,
        }))
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(status) if client::already_exists(&status) => client
            .images()
            .update(client.request(UpdateImageRequest {
                image: Some(record),
                update_mask: None,
                source_date_epoch: None,
            }))
            .await
            .map(drop)
            .map_err(|status| image_error(name, "update image", &status)),
        Err(status) => Err(image_error(name, "create image", &status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let diff_ids = vec![
            "sha256:a".to_string(),
            "sha256:b".to_string(),
            "sha256:c".to_string(),
        ];
        let chain = chain_ids(&diff_ids);
        assert_eq!(chain[0], "sha256:a");
        let second = format!(
            "sha256:{}",
            hex::encode(Sha256::digest("sha256:a sha256:b"))
        );
        assert_eq!(chain[1], second);
        let third = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{second} sha256:c")))
        );
        assert_eq!(chain[2], third);
        assert!(chain_ids(&[]).is_empty());
    }
}
