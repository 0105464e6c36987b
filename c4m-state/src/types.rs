//! Plain data types shared by every backend.

use bytes::Bytes;

/// A stored key with its value and etcd-style bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last write to the key; used as Kubernetes `resourceVersion`.
    pub mod_revision: i64,
    /// Number of writes since creation; 1 after the creating write.
    pub version: i64,
}

/// A compare-and-swap condition attached to a put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Unconditional.
    #[default]
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this `mod_revision` (update or delete with CAS).
    ModRevision(i64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite `key`.
    Put {
        /// The key to write.
        key: String,
        /// The new value.
        value: Bytes,
        /// Condition that must hold for the whole transaction to apply.
        precondition: Precondition,
    },
    /// Delete `key`; deleting a missing key with [`Precondition::None`] is a no-op.
    Delete {
        /// The key to delete.
        key: String,
        /// Condition that must hold for the whole transaction to apply.
        precondition: Precondition,
    },
}

impl Op {
    /// A put of `value` at `key` under `precondition`.
    pub fn put(key: &str, value: Bytes, precondition: Precondition) -> Op {
        Op::Put {
            key: key.to_string(),
            value,
            precondition,
        }
    }

    /// A delete of `key` under `precondition`.
    pub fn delete(key: &str, precondition: Precondition) -> Op {
        Op::Delete {
            key: key.to_string(),
            precondition,
        }
    }

    /// The key this operation targets.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    /// The precondition this operation carries.
    pub fn precondition(&self) -> Precondition {
        match self {
            Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
        }
    }
}

/// Whether a watch event is a write or a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// A change observed by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put: the new key-value. For a delete: the last value before deletion, with
    /// `mod_revision` set to the deleting revision (`create_revision` and `version` are those of
    /// the deleted key-value).
    pub kv: KeyValue,
    /// The key-value before this event, if the key existed.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision at which this event happened.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}
