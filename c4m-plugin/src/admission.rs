//! The admission seam: hooks that judge, and may change, every object
//! written through the API before it is stored.

use async_trait::async_trait;
use c4m_core::ResourceKind;
use serde_json::Value;

/// What kind of write is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to an existing object (replace, patch, apply, status).
    Update,
}

/// A write an admission hook judges.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    /// Create or update.
    pub operation: Operation,
    /// The object's kind.
    pub kind: &'a ResourceKind,
    /// Its namespace (empty for cluster-scoped kinds).
    pub namespace: &'a str,
    /// The stored object an update replaces.
    pub old: Option<&'a Value>,
}

/// Why a hook refused a write; the API answers 403 Forbidden with it, as
/// Kubernetes does for admission denials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("admission {hook} denied the request: {message}")]
pub struct Denied {
    /// The hook's name.
    pub hook: String,
    /// What is wrong with the object, naming the field where it can.
    pub message: String,
}

/// An admission hook: every create and update of every kind passes each
/// hook in the order given, after c4m's own admission (defaults, priority)
/// and before the object is stored. A hook that changes the object
/// (mutating admission) does so in place; the changed object must still be
/// valid. A hook must not block: it runs on the request's task.
#[async_trait]
pub trait Admission: Send + Sync + 'static {
    /// Its name, as denials and logs give it.
    fn name(&self) -> &str;

    /// Judges `object` (and may change it): `Err` refuses the write and
    /// nothing is stored.
    async fn admit(&self, request: AdmissionRequest<'_>, object: &mut Value) -> Result<(), Denied>;
}
