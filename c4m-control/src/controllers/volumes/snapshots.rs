//! Snapshots, as the CSI external-snapshotter's controllers keep them: a
//! VolumeSnapshot of a claim gets the VolumeSnapshotContent
//! `snapcontent-<snapshot uid>` naming the claim's volume; the node holding
//! the volume takes backend snapshot `snapshot-<snapshot uid>` and reports
//! it; both objects' status follows the report. A snapshot of an existing
//! content (`volumeSnapshotContentName`) binds to it. A content whose
//! snapshot is gone is deleted when its `deletionPolicy` is `Delete` (its
//! node then deletes the backend snapshot).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{NodeStorage, all};
use crate::Result;
use crate::cache::Cache;
use crate::controllers::{latest, write_status};
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, kind, name_of, namespace_of};

/// The Event source.
const COMPONENT: &str = "snapshot-controller";

/// The content name of a dynamically taken snapshot.
pub(crate) fn content_name_for(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}

pub(super) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
) -> Result<Option<i64>> {
    let mut written = None;
    let restoring = restoring(cache);
    for snapshot in all(cache, "volumesnapshots") {
        let source = restoring.contains(&(
            namespace_of(&snapshot).to_string(),
            name_of(&snapshot).to_string(),
        ));
        written = latest(written, protect(objects, &snapshot, source).await?);
        if crate::deletion::is_deleting(&snapshot) {
            continue;
        }
        let outcome = if snapshot["spec"]["source"]["persistentVolumeClaimName"].is_string() {
            dynamic(objects, cache, nodes, &snapshot).await
        } else {
            pre_provisioned(objects, cache, nodes, &snapshot).await
        };
        match outcome {
            Ok(revision) => written = latest(written, revision),
            Err(e) => {
                tracing::warn!(snapshot = %name_of(&snapshot), error = %e, "cannot reconcile a snapshot");
            }
        }
    }
    for content in all(cache, "volumesnapshotcontents") {
        written = latest(written, collect(objects, cache, &content).await);
    }
    Ok(written)
}

/// The finalizer that keeps a snapshot while a claim is being restored
/// from it (the snapshotter's own name).
const SOURCE_PROTECTION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";

/// The snapshots (namespace, name) that claims not yet bound restore from.
fn restoring(cache: &Cache) -> BTreeSet<(String, String)> {
    all(cache, "persistentvolumeclaims")
        .iter()
        .filter(|claim| {
            claim["spec"]["volumeName"]
                .as_str()
                .is_none_or(str::is_empty)
                && !crate::deletion::is_deleting(claim)
                && claim["spec"]["dataSource"]["kind"] == "VolumeSnapshot"
        })
        .filter_map(|claim| {
            let name = claim["spec"]["dataSource"]["name"].as_str()?;
            Some((namespace_of(claim).to_string(), name.to_string()))
        })
        .collect()
}

/// Keeps [`SOURCE_PROTECTION`] on `snapshot` exactly while it is the
/// `source` of a claim being restored (added only before it is deleted),
/// so deleting it waits until the restore is done.
async fn protect(objects: &Objects, snapshot: &Value, source: bool) -> Result<Option<i64>> {
    let has = crate::deletion::finalizers(snapshot)
        .iter()
        .any(|f| f == SOURCE_PROTECTION);
    match (source, has) {
        (true, false) if !crate::deletion::is_deleting(snapshot) => {
            super::update(objects, "volumesnapshots", snapshot, |current| {
                if crate::deletion::is_deleting(current) {
                    return false;
                }
                super::admission::add_finalizer(current, SOURCE_PROTECTION);
                true
            })
            .await
        }
        (false, true) => {
            crate::controllers::garbage_collector::remove_finalizer(
                objects,
                kind("volumesnapshots"),
                snapshot,
                SOURCE_PROTECTION,
            )
            .await
        }
        _ => Ok(None),
    }
}

/// A snapshot of a claim: its content, then both statuses.
async fn dynamic(
    objects: &Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
    snapshot: &Value,
) -> Result<Option<i64>> {
    let uid = snapshot["metadata"]["uid"].as_str().unwrap_or_default();
    let name = content_name_for(uid);
    let Some(content) = cache.get(kind("volumesnapshotcontents"), "", &name) else {
        return create_content(objects, cache, nodes, snapshot, &name).await;
    };
    let handle = c4m_core::volumes::snapshot_handle_for(uid);
    let (content_written, status) = content_status(objects, nodes, &content, &handle).await?;
    Ok(latest(
        content_written,
        snapshot_status(objects, snapshot, &name, &status, nodes, &handle).await?,
    ))
}

/// The content of a snapshot of a claim, once the claim is bound to a CSI
/// volume.
async fn create_content(
    objects: &Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
    snapshot: &Value,
    name: &str,
) -> Result<Option<i64>> {
    let namespace = namespace_of(snapshot);
    let claim_name = snapshot["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_default();
    let fail = |message: String| {
        nodes.note(
            objects,
            snapshot,
            EventType::Warning,
            "SnapshotContentCreationFailed",
            message,
            COMPONENT,
        );
    };
    let volume = cache
        .get(kind("persistentvolumeclaims"), namespace, claim_name)
        .and_then(|claim| {
            let volume = claim["spec"]["volumeName"].as_str()?.to_string();
            (claim["status"]["phase"] == "Bound").then_some(volume)
        })
        .and_then(|volume| cache.get(kind("persistentvolumes"), "", &volume));
    let Some(volume) = volume else {
        fail(format!(
            "Failed to create snapshot content: the source persistentvolumeclaim \"{claim_name}\" is not bound to a volume"
        ));
        return Ok(None);
    };
    let csi = &volume["spec"]["csi"];
    let (Some(driver), Some(handle)) = (csi["driver"].as_str(), csi["volumeHandle"].as_str())
    else {
        fail(format!(
            "Failed to create snapshot content: volume {} is not a CSI volume",
            name_of(&volume)
        ));
        return Ok(None);
    };
    let class_name = snapshot["spec"]["volumeSnapshotClassName"].as_str();
    let class = class_name.and_then(|c| cache.get(kind("volumesnapshotclasses"), "", c));
    let deletion_policy = match (class_name, &class) {
        (Some(_), Some(class)) => class["deletionPolicy"].as_str().unwrap_or("Delete"),
        (Some(class_name), None) => {
            fail(format!(
                "Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{class_name}\" not found"
            ));
            return Ok(None);
        }
        (None, _) => "Delete",
    };
    let mut content = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {
            "volumeSnapshotRef": {
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "name": name_of(snapshot), "namespace": namespace, "uid": snapshot["metadata"]["uid"],
            },
            "source": {"volumeHandle": handle},
            "driver": driver,
            "deletionPolicy": deletion_policy,
            "sourceVolumeMode": volume["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
        },
    });
    if let Some(class_name) = class_name {
        content["spec"]["volumeSnapshotClassName"] = json!(class_name);
    }
    match objects
        .create(kind("volumesnapshotcontents"), "", content)
        .await
    {
        Ok(created) => Ok(crate::objects::revision_of(&created)),
        Err(crate::Error::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A content's status from its node's report of backend snapshot `handle`;
/// the revision written and the status.
async fn content_status(
    objects: &Objects,
    nodes: &NodeStorage<'_>,
    content: &Value,
    handle: &str,
) -> Result<(Option<i64>, Value)> {
    let mut status = json!({"snapshotHandle": handle, "readyToUse": false});
    if let Some((_, state)) = nodes.snapshot(handle) {
        status["readyToUse"] = json!(state.ready && state.error.is_empty());
        status["restoreSize"] = json!(state.size_bytes);
        if let Some(created) = c4m_core::parse_rfc3339(&state.created_at)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            status["creationTime"] = json!(created.as_nanos() as u64);
        }
        if !state.error.is_empty() {
            status["error"] = json!({"message": state.error, "time": state.created_at});
        }
    }
    let written = write_status(objects, "volumesnapshotcontents", content, &status).await?;
    Ok((written, status))
}

/// A snapshot's status from its content's.
async fn snapshot_status(
    objects: &Objects,
    snapshot: &Value,
    content_name: &str,
    content_status: &Value,
    nodes: &NodeStorage<'_>,
    handle: &str,
) -> Result<Option<i64>> {
    let ready = content_status["readyToUse"] == true;
    let mut status = json!({
        "boundVolumeSnapshotContentName": content_name,
        "readyToUse": ready,
    });
    if let Some(size) = content_status["restoreSize"].as_u64() {
        status["restoreSize"] = json!(c4m_core::format_memory_bytes(size));
    }
    if let Some((_, state)) = nodes.snapshot(handle) {
        if !state.created_at.is_empty() {
            status["creationTime"] = json!(state.created_at);
        }
        if !state.error.is_empty() {
            status["error"] = json!({"message": state.error, "time": state.created_at});
        }
    }
    if ready && snapshot["status"]["readyToUse"] != true {
        objects.events().record(
            Regarding::of(snapshot),
            EventType::Normal,
            "SnapshotReady",
            format!(
                "Snapshot {}/{} is ready to use.",
                namespace_of(snapshot),
                name_of(snapshot)
            ),
            COMPONENT,
        );
    }
    write_status(objects, "volumesnapshots", snapshot, &status).await
}

/// A snapshot naming an existing content: bound when the content's
/// `volumeSnapshotRef` names it back.
async fn pre_provisioned(
    objects: &Objects,
    cache: &Cache,
    nodes: &NodeStorage<'_>,
    snapshot: &Value,
) -> Result<Option<i64>> {
    let Some(name) = snapshot["spec"]["source"]["volumeSnapshotContentName"].as_str() else {
        return Ok(None);
    };
    let Some(content) = cache.get(kind("volumesnapshotcontents"), "", name) else {
        return Ok(None);
    };
    let reference = &content["spec"]["volumeSnapshotRef"];
    if reference["name"] != snapshot["metadata"]["name"]
        || reference["namespace"] != snapshot["metadata"]["namespace"]
    {
        nodes.note(
            objects,
            snapshot,
            EventType::Warning,
            "SnapshotBindFailed",
            format!("VolumeSnapshotContent {name} is bound to another snapshot"),
            COMPONENT,
        );
        return Ok(None);
    }
    let mut written = None;
    if reference["uid"].is_null() {
        let uid = snapshot["metadata"]["uid"].clone();
        written = objects
            .update_with(kind("volumesnapshotcontents"), "", name, |current| {
                if !current["spec"]["volumeSnapshotRef"]["uid"].is_null() {
                    return false;
                }
                current["spec"]["volumeSnapshotRef"]["uid"] = uid.clone();
                true
            })
            .await?;
    }
    let handle = content["spec"]["source"]["snapshotHandle"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (content_written, status) = content_status(objects, nodes, &content, &handle).await?;
    let snapshot_written =
        snapshot_status(objects, snapshot, name, &status, nodes, &handle).await?;
    Ok(latest(latest(written, content_written), snapshot_written))
}

/// Deletes a content whose snapshot is gone, when its policy says so.
async fn collect(objects: &Objects, cache: &Cache, content: &Value) -> Option<i64> {
    if crate::deletion::is_deleting(content) || content["spec"]["deletionPolicy"] != "Delete" {
        return None;
    }
    let reference = &content["spec"]["volumeSnapshotRef"];
    let uid = reference["uid"].as_str()?;
    let snapshot = cache.get(
        kind("volumesnapshots"),
        reference["namespace"].as_str().unwrap_or_default(),
        reference["name"].as_str().unwrap_or_default(),
    );
    if snapshot.is_some_and(|s| s["metadata"]["uid"] == uid) {
        return None;
    }
    crate::controllers::delete_object(objects, "volumesnapshotcontents", content).await
}
