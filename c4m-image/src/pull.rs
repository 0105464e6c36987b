//! Pulling images from an OCI registry (distribution v2 API) with
//! `oci-client`. Every blob is verified against its digest as it enters the
//! store; a manifest asked for by digest must hash to that digest.

use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::blob::digest_of;
use crate::import::{DOCKER_MANIFEST_LIST, MAX_INDEX_DEPTH};
use c4m_core::Reference;

use crate::{Error, Result};
use crate::{Image, ImageStore};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPTED: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Registry credentials (HTTP basic; registries exchange them for a token).
#[derive(Debug, Clone)]
pub struct RegistryCredentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

/// Loopback registries are spoken to over plain HTTP (as Docker treats
/// `localhost`); every other registry over HTTPS.
fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(host, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            host
        } else {
            registry
        }
    });
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Pulls `reference` (by tag or by digest) into `store` and names it (a
/// tag reference names the image; a digest reference only adds it).
/// Blobs the store already has are not downloaded again.
pub async fn pull(
    store: &Arc<ImageStore>,
    reference: &str,
    credentials: Option<&RegistryCredentials>,
) -> Result<Image> {
    let parsed = Reference::parse(reference)?;
    let fail = |source: Error| Error::Pull {
        reference: parsed.to_string(),
        source: Box::new(source),
    };
    let invalid = |message: String| fail(Error::Invalid(message));
    // Garbage collection waits until the pulled image is in the catalog.
    let _fence = {
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || store.gc_fence())
            .await
            .map_err(|source| {
                fail(Error::Task {
                    what: "lock task failed",
                    source,
                })
            })??
    };
    // rustls needs a process-wide crypto provider; the first pull installs
    // ring (an error means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if is_loopback(&parsed.registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = oci_client::Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    let auth = match credentials {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let remote = |digest: Option<&str>| match (digest.or(parsed.digest.as_deref()), &parsed.tag) {
        (Some(digest), _) => oci_client::Reference::with_digest(
            parsed.registry.clone(),
            parsed.repository.clone(),
            digest.to_string(),
        ),
        (None, tag) => oci_client::Reference::with_tag(
            parsed.registry.clone(),
            parsed.repository.clone(),
            tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    };
    // The manifest (through an index to this platform's, if need be).
    let mut wanted: Option<String> = parsed.digest.clone();
    let mut target = remote(None);
    let mut depth = 0;
    let (manifest_digest, manifest_bytes) = loop {
        let (bytes, _) = client
            .pull_manifest_raw(&target, &auth, &ACCEPTED)
            .await
            .map_err(|e| fail(Error::registry("manifest", e)))?;
        let digest = digest_of(&bytes);
        if let Some(expected) = &wanted
            && *expected != digest
        {
            return Err(invalid(format!(
                "the registry's manifest has digest {digest}, not {expected}"
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            fail(Error::malformed(
                format!("manifest {digest} is not JSON"),
                e,
            ))
        })?;
        let media_type = value["mediaType"].as_str().unwrap_or_default();
        let is_index = media_type == OCI_INDEX
            || media_type == DOCKER_MANIFEST_LIST
            || (media_type.is_empty() && value.get("manifests").is_some());
        if !is_index {
            break (digest, bytes);
        }
        depth += 1;
        if depth >= MAX_INDEX_DEPTH {
            return Err(invalid("indexes nested too deep".into()));
        }
        let index = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| fail(Error::malformed(format!("index {digest}"), e)))?;
        let chosen = crate::import::platform_descriptor(&index)
            .ok_or_else(|| invalid(format!("index {digest} has no image for this platform")))?;
        let next = chosen.digest().to_string();
        target = remote(Some(&next));
        wanted = Some(next);
    };
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| fail(Error::malformed(format!("manifest {manifest_digest}"), e)))?;
    let mut descriptors: Vec<Descriptor> = vec![manifest.config().clone()];
    descriptors.extend(manifest.layers().iter().cloned());
    for descriptor in descriptors {
        let digest = descriptor.digest().to_string();
        if store.has_blob(&digest) {
            continue;
        }
        let temp = tempfile::NamedTempFile::new_in(&store.tmp).map_err(|e| {
            Error::io(
                format!("create a temporary file in {}", store.tmp.display()),
                e,
            )
        })?;
        let file = tokio::fs::File::from_std(
            temp.reopen()
                .map_err(|e| Error::io(format!("open {}", temp.path().display()), e))?,
        );
        client
            .pull_blob(&target, digest.as_str(), file)
            .await
            .map_err(|e| fail(Error::registry(format!("blob {digest}"), e)))?;
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || store.blobs.adopt(&digest, temp).map(drop))
            .await
            .map_err(|source| {
                fail(Error::Task {
                    what: "store task failed",
                    source,
                })
            })?
            .map_err(fail)?;
    }
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        store.blobs.write(&manifest_digest, &manifest_bytes[..])?;
        store.add_image(&manifest_digest, std::slice::from_ref(&parsed))
    })
    .await
    .map_err(|source| Error::Task {
        what: "pull: store task failed",
        source,
    })?
}

#[cfg(test)]
mod tests {
    use c4m_testkit::Registry;
    use std::path::Path;

    use oci_spec::image::ConfigBuilder;

    use super::*;
    use crate::{tar_directory, write_busybox_rootfs, write_oci_layout};

    #[test]
    fn loopback_registries_use_http() {
        for registry in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
        ] {
            assert!(is_loopback(registry), "{registry}");
        }
        for registry in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(registry), "{registry}");
        }
    }

    /// Builds a busybox image and pushes it with skopeo as `bb:1`.
    fn push_busybox(dir: &Path, registry: &Registry) {
        let rootfs = dir.join("rootfs");
        write_busybox_rootfs(Path::new("/bin/busybox"), &rootfs)
            .expect("/bin/busybox is required (apt-get install busybox-static)");
        let config = ConfigBuilder::default()
            .cmd(vec!["/bin/sh".to_string()])
            .build()
            .unwrap();
        let layout = dir.join("layout");
        write_oci_layout(&layout, "1", &[tar_directory(&rootfs).unwrap()], config).unwrap();
        registry.push_oci_layout(&layout, "1", "bb:1");
    }

    #[tokio::test]
    async fn pulls_by_tag_and_by_digest_and_refuses_corrupt_blobs() {
        let temp = tempfile::tempdir().unwrap();
        let registry = Registry::start(temp.path());
        push_busybox(temp.path(), &registry);
        let port = registry.port();

        let store = Arc::new(ImageStore::open(temp.path().join("store-tag")).unwrap());
        let image = pull(&store, &format!("127.0.0.1:{port}/bb:1"), None)
            .await
            .unwrap();
        assert_eq!(image.names, vec![format!("127.0.0.1:{port}/bb:1")]);
        let layers = store.layer_dirs(&image).unwrap();
        assert!(layers[0].join("bin/busybox").is_file());
        // Pulling again finds every blob in place.
        assert_eq!(
            pull(&store, &format!("127.0.0.1:{port}/bb:1"), None)
                .await
                .unwrap(),
            image
        );

        // By digest, into another store: the same image, without a name.
        let by_digest = format!("127.0.0.1:{port}/bb@{}", image.digest);
        let other = Arc::new(ImageStore::open(temp.path().join("store-digest")).unwrap());
        let pulled = pull(&other, &by_digest, None).await.unwrap();
        assert_eq!(pulled.digest, image.digest);
        assert!(pulled.names.is_empty());
        assert_eq!(other.resolve(&by_digest).unwrap().digest, image.digest);

        // A digest the registry does not have.
        let missing = format!("127.0.0.1:{port}/bb@sha256:{}", "0".repeat(64));
        assert!(pull(&other, &missing, None).await.is_err());

        // Alter the layer in the registry's storage: the pull is refused
        // and the store keeps nothing of it.
        let layer = &image.layers[0].digest["sha256:".len()..];
        let data = temp
            .path()
            .join("registry/docker/registry/v2/blobs/sha256")
            .join(&layer[..2])
            .join(layer)
            .join("data");
        let mut bytes = std::fs::read(&data).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();
        let fresh = Arc::new(ImageStore::open(temp.path().join("store-corrupt")).unwrap());
        let error = pull(&fresh, &format!("127.0.0.1:{port}/bb:1"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(layer), "{error}");
        assert!(fresh.list().unwrap().is_empty());
        assert!(!fresh.has_blob(&image.layers[0].digest));
    }
}
