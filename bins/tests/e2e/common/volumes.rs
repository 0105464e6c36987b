//! What tests of volumes share: where an agent keeps its volumes and their
//! records, and the check that it leaked none (loop devices counted by
//! backing file, mounts, records).

use std::path::{Path, PathBuf};

use c4m_storage::testing::{Leaks, leaks};
use serde_json::Value;

use super::Cluster;

/// Agent `node`'s local pool: images, snapshots and their records.
pub(crate) fn agent_pool(cluster: &Cluster, node: &str) -> PathBuf {
    cluster.agent_dir(node).join("volumes")
}

/// Agent `node`'s claims: staged volumes and the pods' mount records.
pub(crate) fn agent_claims(cluster: &Cluster, node: &str) -> PathBuf {
    cluster.agent_dir(node).join("claims")
}

/// The names of the `.json` files (records) in `dir`.
pub(crate) fn json_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

/// The record of local volume `id` in agent `node`'s pool, if it has one.
pub(crate) fn volume_record(cluster: &Cluster, node: &str, id: &str) -> Option<Value> {
    let path = agent_pool(cluster, node)
        .join("records/volumes")
        .join(format!("{id}.json"));
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The loop devices backed by agent `node`'s pool and the mounts under its
/// pool and claims.
pub(crate) fn agent_leaks(cluster: &Cluster, node: &str) -> Leaks {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(leaks(
            &agent_pool(cluster, node),
            &agent_claims(cluster, node),
        ))
        .unwrap()
}

/// Fails unless agent `node` holds nothing: no volume, snapshot or pod
/// record, no loop device, no mount.
pub(crate) fn assert_agent_leaked_nothing(cluster: &Cluster, node: &str, when: &str) {
    let pool = agent_pool(cluster, node);
    let records = (
        json_files(&pool.join("records/volumes")),
        json_files(&pool.join("records/snapshots")),
        json_files(&agent_claims(cluster, node).join("pods")),
    );
    assert_eq!(
        records,
        (vec![], vec![], vec![]),
        "{when}: {node}'s volume, snapshot and pod records left"
    );
    let leaked = agent_leaks(cluster, node);
    assert!(leaked.is_empty(), "{when}: {node} leaked {leaked:?}");
}
