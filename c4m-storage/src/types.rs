//! The data a backend is asked about: ids, sizes, access modes, filesystems.
//!
//! Everything here is `serde` so a plugin (a subprocess speaking gRPC or JSON)
//! can receive and return the same values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest id accepted, in bytes (a file name with room for suffixes).
pub const MAX_ID_LEN: usize = 128;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `id`: 1 to [`MAX_ID_LEN`] bytes of ASCII letters, digits,
            /// `-`, `_` and `.`, not starting with `.` (it names files on the node).
            pub fn new(id: impl Into<String>) -> Result<Self> {
                let id = id.into();
                validate_id($what, &id)?;
                Ok(Self(id))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(id: String) -> Result<Self> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// A volume's id, unique on its backend.
    VolumeId,
    "volume id"
);
id_type!(
    /// A snapshot's id, unique on its backend.
    SnapshotId,
    "snapshot id"
);

fn validate_id(what: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::invalid(
            what,
            format!("{id:?} must be 1 to {MAX_ID_LEN} bytes long"),
        ));
    }
    if id.starts_with('.') {
        return Err(Error::invalid(
            what,
            format!("{id:?} must not start with '.'"),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::invalid(
            what,
            format!("{id:?} has {bad:?}; allowed are letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// How the volume may be mounted, as Kubernetes names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    /// Read-write on one node.
    #[default]
    ReadWriteOnce,
    /// Read-write by one pod.
    ReadWriteOncePod,
    /// Read-only on many nodes.
    ReadOnlyMany,
    /// Read-write on many nodes.
    ReadWriteMany,
}

/// The filesystem a volume carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// ext4 (the local backend's only format).
    #[default]
    Ext4,
    /// A directory on an NFS export.
    Nfs,
    /// A directory on the host (hostPath).
    Host,
}

impl Filesystem {
    /// The name mount(8) and CSI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Nfs => "nfs",
            Filesystem::Host => "host",
        }
    }
}

/// What a caller asks a backend to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// The id to create it under (idempotency key).
    pub id: VolumeId,
    /// The size in bytes; a hard limit where the backend enforces sizes.
    pub size_bytes: u64,
    /// How it will be mounted.
    pub access_mode: AccessMode,
    /// The filesystem wanted.
    pub filesystem: Filesystem,
    /// Storage-class parameters, passed through to the backend.
    pub parameters: BTreeMap<String, String>,
}

impl ProvisionRequest {
    /// A read-write-once ext4 volume of `size_bytes` with no parameters.
    pub fn new(id: VolumeId, size_bytes: u64) -> Self {
        Self {
            id,
            size_bytes,
            access_mode: AccessMode::ReadWriteOnce,
            filesystem: Filesystem::Ext4,
            parameters: BTreeMap::new(),
        }
    }
}

/// A volume as a backend knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its id.
    pub id: VolumeId,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its access mode.
    pub access_mode: AccessMode,
    /// Its filesystem.
    pub filesystem: Filesystem,
    /// The snapshot it was restored from, if any.
    pub source_snapshot: Option<SnapshotId>,
    /// Where it is staged on this node, if it is.
    pub staged_at: Option<PathBuf>,
    /// Where it is published (bind-mounted for containers) on this node.
    pub published_at: Vec<PathBuf>,
}

/// A point-in-time copy of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its id.
    pub id: SnapshotId,
    /// The volume it was taken of.
    pub source_volume: VolumeId,
    /// The size of that volume when it was taken (the smallest restore).
    pub size_bytes: u64,
    /// When it was taken, as a Unix timestamp in seconds.
    pub created_unix: i64,
}

/// A backend's free and total space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Bytes that can still be provisioned (the pool filesystem's free space).
    pub available_bytes: u64,
    /// The pool filesystem's size.
    pub total_bytes: u64,
}

/// Whether a backend can grow a volume while it is mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expansion {
    /// It cannot grow volumes at all.
    None,
    /// Only while unmounted.
    Offline,
    /// Also while mounted (it may still answer [`Error::OfflineExpansionRequired`]
    /// where the host refuses).
    Online,
}

/// What a backend can do, so callers (and the CSI driver) can say so up front.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Snapshots and restore.
    pub snapshots: bool,
    /// Growing volumes.
    pub expansion: Expansion,
    /// Sizes are hard limits (a write past the size fails with ENOSPC).
    pub enforces_size: bool,
    /// The access modes it supports.
    pub access_modes: Vec<AccessMode>,
}

/// What [`crate::VolumeBackend::reconcile`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Half-made volumes and snapshots that were removed.
    pub removed_partial: Vec<String>,
    /// Deletes that were finished.
    pub finished_deletes: Vec<String>,
    /// Mounts that were not declared and were unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Loop devices that were detached.
    pub detached: Vec<String>,
    /// Declared mounts that were missing and were mounted again.
    pub remounted: Vec<PathBuf>,
    /// Filesystems that were thawed after a crash during a snapshot.
    pub thawed: Vec<PathBuf>,
}

impl ReconcileReport {
    /// True when nothing needed repair.
    pub fn is_clean(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(VolumeId::new("pvc-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(129)] {
            let err = VolumeId::new(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        what: "volume id",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        let err = serde_json::from_str::<SnapshotId>("\"../x\"").unwrap_err();
        assert!(err.to_string().contains("snapshot id"), "{err}");
    }

    #[test]
    fn requests_round_trip_as_json() {
        let mut req = ProvisionRequest::new(VolumeId::new("v1").unwrap(), 1 << 20);
        req.parameters.insert("k".into(), "v".into());
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            serde_json::from_str::<ProvisionRequest>(&text).unwrap(),
            req
        );
    }
}
