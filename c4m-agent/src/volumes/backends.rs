//! The node's volume backends, by place: c4m's local pool (root only), one
//! NFS backend per export (opened on first use), and registered CSI drivers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use c4m_core::volumes::VolumeSource;
use c4m_storage::VolumeBackend;

use super::wanted::{NfsTarget, Place};

/// Opens the backend of one NFS export.
pub(crate) type NfsOpener = Box<dyn Fn(&NfsTarget) -> Arc<dyn VolumeBackend> + Send + Sync>;

/// Every backend the node can reach a volume through.
pub(crate) struct Backends {
    local: Option<Arc<dyn VolumeBackend>>,
    nfs_opener: Option<NfsOpener>,
    nfs: Mutex<BTreeMap<NfsTarget, Arc<dyn VolumeBackend>>>,
    csi: BTreeMap<String, Arc<dyn VolumeBackend>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("local", &self.local.is_some())
            .field("nfs", &self.nfs_opener.is_some())
            .field("csi", &self.csi.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Backends {
    /// The local pool (None: this node provisions no local volumes), NFS
    /// through `nfs_opener` (None: this build has no NFS client) and the
    /// registered CSI drivers by name.
    pub(crate) fn new(
        local: Option<Arc<dyn VolumeBackend>>,
        nfs_opener: Option<NfsOpener>,
        csi: BTreeMap<String, Arc<dyn VolumeBackend>>,
    ) -> Self {
        Self {
            local,
            nfs_opener,
            nfs: Mutex::default(),
            csi,
        }
    }

    /// Whether `driver` is a registered CSI driver.
    pub(crate) fn registered(&self, driver: &str) -> bool {
        self.csi.contains_key(driver)
    }

    pub(crate) fn local(&self) -> Option<&Arc<dyn VolumeBackend>> {
        self.local.as_ref()
    }

    /// The backend of `place`; the error says why this node has none. A
    /// CSI driver registered under the name of one of c4m's own drivers
    /// (`c4m.io/local`) takes that name's volumes.
    pub(crate) fn get(&self, place: &Place) -> Result<Arc<dyn VolumeBackend>, String> {
        if let Some(registered) = self.csi.get(place.driver()) {
            return Ok(Arc::clone(registered));
        }
        match place {
            Place::Local => self.local.clone().ok_or_else(|| {
                "this node has no local volumes (its agent does not run as root, or losetup is missing)"
                    .to_string()
            }),
            Place::Nfs(target) => {
                let opener = self
                    .nfs_opener
                    .as_ref()
                    .ok_or("this agent was built without NFS (cargo feature nfs)")?;
                let mut nfs = self.nfs.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(Arc::clone(
                    nfs.entry(target.clone()).or_insert_with(|| opener(target)),
                ))
            }
            Place::Csi(driver) => self.csi.get(driver).cloned().ok_or_else(|| {
                format!("CSI driver {driver:?} is not registered on this node (--csi-driver)")
            }),
        }
    }

    /// The local pool and every NFS export opened so far.
    pub(crate) fn opened(&self) -> Vec<(Place, Arc<dyn VolumeBackend>)> {
        let mut opened: Vec<_> = self
            .local
            .iter()
            .map(|b| (Place::Local, Arc::clone(b)))
            .collect();
        opened.extend(
            self.nfs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(t, b)| (Place::Nfs(t.clone()), Arc::clone(b))),
        );
        opened
    }
}

/// Where the volume of a claim's source is, and its handle on that backend.
/// An in-tree `nfs` volume (`server`, `path`) is the directory `path`'s last
/// component on the export of its parent, on the default ports.
pub(crate) fn place_of(source: &VolumeSource) -> Result<(Place, String), String> {
    match source {
        VolumeSource::Csi {
            driver,
            handle,
            attributes,
            ..
        } => Ok((Place::of(driver, attributes)?, handle.clone())),
        VolumeSource::Nfs { server, path } => {
            let trimmed = path.trim_end_matches('/');
            let (share, dir) = trimmed
                .rsplit_once('/')
                .filter(|(_, dir)| !dir.is_empty())
                .ok_or_else(|| {
                    format!("nfs path {path:?} must name a directory below the export")
                })?;
            let share = if share.is_empty() { "/" } else { share };
            Ok((
                Place::Nfs(NfsTarget {
                    server: server.clone(),
                    share: share.to_string(),
                    nfs_port: super::wanted::DEFAULT_NFS_PORT,
                    mount_port: super::wanted::DEFAULT_MOUNT_PORT,
                }),
                dir.to_string(),
            ))
        }
        VolumeSource::HostDir { path } => Err(format!(
            "{path:?} is a directory on the node, not a volume of a backend"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_their_backend_and_handle() {
        let csi = VolumeSource::Csi {
            driver: c4m_core::volumes::LOCAL_DRIVER.into(),
            handle: "pvc-1".into(),
            fs_type: Some("ext4".into()),
            attributes: BTreeMap::new(),
        };
        assert_eq!(place_of(&csi).unwrap(), (Place::Local, "pvc-1".into()));
        let nfs = VolumeSource::Nfs {
            server: "10.0.0.1".into(),
            path: "/export/data/".into(),
        };
        let (place, handle) = place_of(&nfs).unwrap();
        assert_eq!(handle, "data");
        let Place::Nfs(target) = place else {
            panic!("{place:?}")
        };
        assert_eq!(target.share, "/export");
        let root = VolumeSource::Nfs {
            server: "h".into(),
            path: "/".into(),
        };
        assert!(place_of(&root).unwrap_err().contains("below the export"));
        let backends = Backends::new(None, None, BTreeMap::new());
        assert!(backends.get(&Place::Local).unwrap_err().contains("root"));
        assert!(
            backends
                .get(&Place::Csi("x.example.com".into()))
                .unwrap_err()
                .contains("--csi-driver")
        );
    }
}
