//! The volumes a node keeps although no object references them (a
//! PersistentVolume once did: the store was wiped or restored from an
//! older backup), from its reports' `orphaned`, written on its Node object
//! ([`ORPHANED_VOLUMES`]) so `c4m volume list` shows them.

use c4m_core::annotations::ORPHANED_VOLUMES;
use serde_json::{Value, json};

use super::{NodeStorage, update};
use crate::Result;
use crate::cache::Cache;
use crate::controllers::latest;
use crate::objects::kind;

/// Sets each reporting node's annotation to its orphaned volumes (removed
/// when there is none). A node that has not reported since this control
/// plane started keeps what it had.
pub(super) async fn reconcile(
    objects: &crate::objects::Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
) -> Result<Option<i64>> {
    let mut written = None;
    for (name, report) in &nodes.reports {
        let Some(node) = cache.get(kind("nodes"), "", name) else {
            continue;
        };
        let orphaned: Vec<Value> = report
            .volumes
            .iter()
            .filter(|v| v.orphaned)
            .map(|v| json!({"driver": v.driver, "handle": v.handle, "sizeBytes": v.size_bytes}))
            .collect();
        let wanted = (!orphaned.is_empty()).then(|| Value::Array(orphaned).to_string());
        if node["metadata"]["annotations"][ORPHANED_VOLUMES].as_str() == wanted.as_deref() {
            continue;
        }
        let changed = update(objects, "nodes", &node, |current| match &wanted {
            Some(wanted) => crate::json::object_at(current, &["metadata", "annotations"])
                .map(|annotations| annotations.insert(ORPHANED_VOLUMES.into(), json!(wanted)))
                .is_ok(),
            None => current["metadata"]["annotations"]
                .as_object_mut()
                .is_some_and(|annotations| annotations.remove(ORPHANED_VOLUMES).is_some()),
        })
        .await?;
        written = latest(written, changed);
    }
    Ok(written)
}
