//! The seam between a pod's volumes (set up by the supervisor before its
//! containers start) and the node's persistent volumes (provisioned,
//! staged and published by the node's volume manager).
//!
//! The supervisor asks for a claim's volume at a target directory of the
//! pod and gives it back when the pod is gone; the volume manager stages a
//! volume once per node and unstages it when its last pod gave it back.

use std::path::Path;

use async_trait::async_trait;
use c4m_core::volumes::VolumeSource;

/// Mounts persistent volumes into pods on this node.
#[async_trait]
pub(crate) trait ClaimMounts: Send + Sync + std::fmt::Debug {
    /// Makes the volume of `source` visible at `target` (created if
    /// missing) for the pod `pod_uid`, read-only if asked: stages it on the
    /// node if no other pod has, then publishes it. Idempotent. The error
    /// is the pod's `ContainerCreating` message (`MountVolume.SetUp failed
    /// for volume "data": ...`).
    async fn mount(
        &self,
        pod_uid: &str,
        volume: &str,
        source: &VolumeSource,
        read_only: bool,
        target: &Path,
    ) -> Result<(), String>;

    /// Unpublishes every volume mounted for `pod_uid`, and unstages those
    /// no other pod uses. Idempotent: an unknown pod succeeds.
    async fn unmount_pod(&self, pod_uid: &str) -> Result<(), String>;
}
