//! `c4m volume`: persistent volumes as a user of one machine thinks of
//! them. A volume is a PersistentVolumeClaim (of `-n`, default `default`);
//! its ID is the name of the PersistentVolume it is bound to (`pvc-<uid>`),
//! and either names it.
//!
//! `--persistent` keeps the data when the volume is deleted: the claim
//! gets the class `<class>-retain`, made on first use as a copy of its
//! class (by default the default class) with `reclaimPolicy: Retain`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use c4m_api::Client;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::commands::{Connection, kind};
use crate::output::{self, Format};

/// The annotation marking the default StorageClass.
const DEFAULT_CLASS: &str = c4m_core::volumes::DEFAULT_CLASS;

/// `c4m volume`.
#[derive(Args)]
pub(crate) struct VolumeArgs {
    #[arg(short, long, default_value = "default", global = true)]
    namespace: String,
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Create a volume (a PersistentVolumeClaim); it is provisioned on the
    /// node of the first instance that uses it.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its size: bytes or a quantity (512Mi, 10Gi).
        #[arg(long)]
        size: String,
        /// Its StorageClass (default: the default class).
        #[arg(long)]
        class: Option<String>,
        /// Keep the data when the volume is deleted (reclaimPolicy Retain).
        #[arg(long)]
        persistent: bool,
    },
    /// List volumes: NAME, ID, SIZE, CLASS, STATUS, NODE, USED BY; the
    /// table ends with the volumes nodes keep that no object references
    /// any more (STATUS Orphaned: a persistent volume did, so their data
    /// was not deleted).
    List {
        /// table, json or yaml.
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// Delete volumes by name or ID; refused for one an instance uses. One
    /// already gone counts as deleted.
    Delete {
        /// Volume names or IDs.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Take a snapshot (a VolumeSnapshot) of a volume.
    Snapshot {
        /// The volume's name or ID.
        volume: String,
        /// The snapshot's name.
        #[arg(long)]
        name: String,
        /// Wait until it is ready to use, at most this long.
        #[arg(long, value_parser = c4m_bins::parse_duration)]
        wait: Option<Duration>,
    },
    /// Create a volume holding a snapshot's contents.
    Restore {
        /// The snapshot's name.
        snapshot: String,
        /// The new volume's name.
        #[arg(long)]
        name: String,
        /// Its size (default: the snapshot's).
        #[arg(long)]
        size: Option<String>,
        /// Its StorageClass (default: the snapshotted volume's).
        #[arg(long)]
        class: Option<String>,
    },
    /// Grow a volume (its class must allow expansion).
    Expand {
        /// The volume's name or ID.
        volume: String,
        /// Its new size.
        #[arg(long)]
        size: String,
        /// How long to wait for the node to grow it.
        #[arg(long, default_value = "30s", value_parser = c4m_bins::parse_duration)]
        wait: Duration,
    },
}

pub(crate) async fn volume(args: VolumeArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let namespace = args.namespace.as_str();
    match args.command {
        VolumeCommand::Create {
            name,
            size,
            class,
            persistent,
        } => {
            check_size(&size)?;
            let class = match (class, persistent) {
                (class, true) => Some(retaining_class(&client, class).await?),
                (class, false) => class,
            };
            let mut claim = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}}},
            });
            if let Some(class) = &class {
                claim["spec"]["storageClassName"] = json!(class);
            }
            client
                .create(kind("persistentvolumeclaims")?, Some(namespace), &claim)
                .await?;
            println!("volume/{name} created ({size})");
        }
        VolumeCommand::List { output } => {
            let claims = client
                .list(kind("persistentvolumeclaims")?, Some(namespace), None)
                .await?;
            let items = claims["items"].as_array().cloned().unwrap_or_default();
            match output {
                Format::Table => {
                    let pods = live_pods(&client, namespace).await?;
                    let volumes = client.list(kind("persistentvolumes")?, None, None).await?;
                    let volumes = volumes["items"].as_array().cloned().unwrap_or_default();
                    let nodes = client.list(kind("nodes")?, None, None).await?;
                    let nodes = nodes["items"].as_array().cloned().unwrap_or_default();
                    print!("{}", list_table(&items, &volumes, &pods, &nodes));
                }
                other => print!("{}", output::document(&claims, other)?),
            }
        }
        VolumeCommand::Delete { volumes } => delete(&client, namespace, &volumes).await?,
        VolumeCommand::Snapshot { volume, name, wait } => {
            let claim = find_claim(&client, namespace, &volume)
                .await?
                .ok_or_else(|| anyhow!("volume {volume:?} not found in namespace {namespace}"))?;
            let snapshot = json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"source": {"persistentVolumeClaimName": name_of(&claim)}},
            });
            let snapshots = kind("volumesnapshots")?;
            client.create(snapshots, Some(namespace), &snapshot).await?;
            println!("snapshot/{name} of volume/{} created", name_of(&claim));
            if let Some(wait) = wait {
                let ready = poll(wait, || async {
                    let snapshot = client.get(snapshots, Some(namespace), &name).await?;
                    Ok((snapshot["status"]["readyToUse"] == true).then_some(snapshot))
                })
                .await?
                .ok_or_else(|| anyhow!("snapshot/{name} not ready after {wait:?}"))?;
                println!(
                    "snapshot/{name} ready ({})",
                    ready["status"]["restoreSize"].as_str().unwrap_or("?")
                );
            }
        }
        VolumeCommand::Restore {
            snapshot,
            name,
            size,
            class,
        } => {
            let taken = client
                .get(kind("volumesnapshots")?, Some(namespace), &snapshot)
                .await
                .with_context(|| format!("snapshot {snapshot:?}"))?;
            let size = match size {
                Some(size) => size,
                None => taken["status"]["restoreSize"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        anyhow!("snapshot/{snapshot} is not ready yet: give --size or wait")
                    })?,
            };
            check_size(&size)?;
            let source = taken["spec"]["source"]["persistentVolumeClaimName"]
                .as_str()
                .unwrap_or_default();
            let class = match class {
                Some(class) => Some(class),
                None => client
                    .get(kind("persistentvolumeclaims")?, Some(namespace), source)
                    .await
                    .ok()
                    .and_then(|c| c["spec"]["storageClassName"].as_str().map(str::to_string)),
            };
            let mut claim = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}},
                    "dataSource": {"apiGroup": "snapshot.storage.k8s.io",
                        "kind": "VolumeSnapshot", "name": snapshot}},
            });
            if let Some(class) = &class {
                claim["spec"]["storageClassName"] = json!(class);
            }
            client
                .create(kind("persistentvolumeclaims")?, Some(namespace), &claim)
                .await?;
            println!("volume/{name} created from snapshot/{snapshot} ({size})");
        }
        VolumeCommand::Expand { volume, size, wait } => {
            expand(&client, namespace, &volume, &size, wait).await?;
        }
    }
    Ok(())
}

/// A size given on the command line: bytes or a quantity.
fn check_size(size: &str) -> Result<u64> {
    let bytes = c4m_core::parse_memory_bytes(size)
        .map_err(|e| anyhow!("--size {size:?}: {e} (give bytes or a quantity like 10Gi)"))?;
    if bytes == 0 {
        bail!("--size {size:?}: a volume needs more than 0 bytes");
    }
    Ok(bytes)
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The class `<class>-retain`: `class` (else the default class) with
/// reclaimPolicy Retain, made if it does not exist yet.
async fn retaining_class(client: &Client, class: Option<String>) -> Result<String> {
    let classes = kind("storageclasses")?;
    let base = match class {
        Some(name) => client
            .get(classes, None, &name)
            .await
            .with_context(|| format!("storage class {name:?}"))?,
        None => {
            let all = client.list(classes, None, None).await?;
            all["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["metadata"]["annotations"][DEFAULT_CLASS] == "true")
                .cloned()
                .ok_or_else(|| anyhow!("no default storage class: give --class"))?
        }
    };
    if base["reclaimPolicy"] == "Retain" {
        return Ok(name_of(&base).to_string());
    }
    let name = format!("{}-retain", name_of(&base));
    let mut retaining = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "reclaimPolicy": "Retain",
    });
    for field in [
        "provisioner",
        "parameters",
        "volumeBindingMode",
        "allowVolumeExpansion",
        "mountOptions",
    ] {
        if !base[field].is_null() {
            retaining[field] = base[field].clone();
        }
    }
    match client.create(classes, None, &retaining).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(409) => {}
        Err(e) => return Err(e).context(format!("create storage class {name:?}")),
    }
    Ok(name)
}

/// The claim a volume name or ID (its PersistentVolume's name) names.
async fn find_claim(client: &Client, namespace: &str, volume: &str) -> Result<Option<Value>> {
    let claims = kind("persistentvolumeclaims")?;
    match client.get(claims, Some(namespace), volume).await {
        Ok(claim) => return Ok(Some(claim)),
        Err(e) if e.code() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    let all = client.list(claims, Some(namespace), None).await?;
    Ok(all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["spec"]["volumeName"] == volume)
        .cloned())
}

/// The name of the claim a volume name or ID names (`c4m run --volume`).
pub(crate) async fn claim_name(client: &Client, namespace: &str, volume: &str) -> Result<String> {
    let claim = find_claim(client, namespace, volume)
        .await?
        .ok_or_else(|| {
            anyhow!("--volume: no volume {volume:?} in namespace {namespace} (c4m volume list)")
        })?;
    Ok(name_of(&claim).to_string())
}

/// The instances of `namespace` that have not finished.
async fn live_pods(client: &Client, namespace: &str) -> Result<Vec<Value>> {
    let pods = client.list(kind("pods")?, Some(namespace), None).await?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .cloned()
        .collect())
}

/// `pod/NAME` of each of `pods` that uses the claim `claim`.
fn users(claim: &str, pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter(|pod| {
            pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| {
                    v["persistentVolumeClaim"]["claimName"] == claim
                        || (v["ephemeral"].is_object()
                            && format!("{}-{}", name_of(pod), v["name"].as_str().unwrap_or(""))
                                == claim)
                })
        })
        .map(|pod| format!("pod/{}", name_of(pod)))
        .collect()
}

/// The node a claim's data is on: its volume's node affinity, else the
/// node selected to provision it.
fn node_of(claim: &Value, volume: Option<&Value>) -> Option<String> {
    let pinned = volume.and_then(|v| {
        v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
            .as_array()?
            .iter()
            .flat_map(|t| t["matchExpressions"].as_array().into_iter().flatten())
            .find(|e| e["key"] == "kubernetes.io/hostname" && e["operator"] == "In")?["values"][0]
            .as_str()
            .map(str::to_string)
    });
    pinned.or_else(|| {
        claim["metadata"]["annotations"][c4m_core::volumes::SELECTED_NODE]
            .as_str()
            .map(str::to_string)
    })
}

/// The `c4m volume list` table: `claims`, then the orphaned volumes of
/// `nodes`.
fn list_table(claims: &[Value], volumes: &[Value], pods: &[Value], nodes: &[Value]) -> String {
    let mut rows = vec![
        ["NAME", "ID", "SIZE", "CLASS", "STATUS", "NODE", "USED BY"]
            .map(String::from)
            .to_vec(),
    ];
    let none = || "<none>".to_string();
    for claim in claims {
        let id = claim["spec"]["volumeName"]
            .as_str()
            .filter(|v| !v.is_empty());
        let volume = id.and_then(|id| volumes.iter().find(|v| name_of(v) == id));
        let size = claim["status"]["capacity"]["storage"]
            .as_str()
            .or_else(|| claim["spec"]["resources"]["requests"]["storage"].as_str())
            .unwrap_or("?");
        let status = if claim["metadata"]["deletionTimestamp"].is_null() {
            claim["status"]["phase"].as_str().unwrap_or("Pending")
        } else {
            "Terminating"
        };
        let used_by = users(name_of(claim), pods);
        rows.push(vec![
            name_of(claim).to_string(),
            id.map_or_else(none, str::to_string),
            size.to_string(),
            claim["spec"]["storageClassName"]
                .as_str()
                .map_or_else(none, str::to_string),
            status.to_string(),
            node_of(claim, volume).unwrap_or_else(none),
            if used_by.is_empty() {
                none()
            } else {
                used_by.join(",")
            },
        ]);
    }
    for (node, handle, size) in orphaned(nodes) {
        rows.push(vec![
            none(),
            handle,
            size,
            none(),
            "Orphaned".to_string(),
            node,
            none(),
        ]);
    }
    output::columns(&rows)
}

/// (node, handle, size) of each volume a node keeps that nothing
/// references ([`ORPHANED_VOLUMES`](c4m_core::annotations::ORPHANED_VOLUMES));
/// an annotation that does not parse is skipped.
fn orphaned(nodes: &[Value]) -> Vec<(String, String, String)> {
    let mut orphaned = Vec::new();
    for node in nodes {
        let Some(text) =
            node["metadata"]["annotations"][c4m_core::annotations::ORPHANED_VOLUMES].as_str()
        else {
            continue;
        };
        let Ok(Value::Array(volumes)) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        for volume in volumes {
            let Some(handle) = volume["handle"].as_str() else {
                continue;
            };
            let size = volume["sizeBytes"]
                .as_u64()
                .map_or_else(|| "?".to_string(), c4m_core::format_memory_bytes);
            orphaned.push((name_of(node).to_string(), handle.to_string(), size));
        }
    }
    orphaned
}

/// Deletes each volume no instance uses; refuses (and keeps) the others,
/// naming their users.
async fn delete(client: &Client, namespace: &str, volumes: &[String]) -> Result<()> {
    let claims = kind("persistentvolumeclaims")?;
    let pods = live_pods(client, namespace).await?;
    let mut failed = 0;
    for volume in volumes {
        let Some(claim) = find_claim(client, namespace, volume).await? else {
            println!("volume/{volume} already gone");
            continue;
        };
        let name = name_of(&claim);
        let used_by = users(name, &pods);
        if !used_by.is_empty() {
            eprintln!(
                "error: volume/{name} is in use by {}: delete them first",
                used_by.join(", ")
            );
            failed += 1;
            continue;
        }
        match client.delete(claims, Some(namespace), name).await {
            Ok(_) => println!("volume/{name} deleted"),
            Err(e) if e.code() == Some(404) => println!("volume/{name} already gone"),
            Err(e) => {
                eprintln!("error: volume/{name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} volumes not deleted", volumes.len());
    }
    Ok(())
}

/// Asks for `size`, then waits up to `wait` for the node: grown, or
/// pending until its users restart.
async fn expand(
    client: &Client,
    namespace: &str,
    volume: &str,
    size: &str,
    wait: Duration,
) -> Result<()> {
    let bytes = check_size(size)?;
    let claims = kind("persistentvolumeclaims")?;
    let mut claim = find_claim(client, namespace, volume)
        .await?
        .ok_or_else(|| anyhow!("volume {volume:?} not found in namespace {namespace}"))?;
    let name = name_of(&claim).to_string();
    claim["spec"]["resources"]["requests"]["storage"] = json!(size);
    client
        .replace(claims, Some(namespace), &name, &claim)
        .await?;
    println!("volume/{name}: expansion to {size} requested");
    let users = users(&name, &live_pods(client, namespace).await?);
    let outcome = poll(wait, || async {
        let claim = client.get(claims, Some(namespace), &name).await?;
        let capacity = claim["status"]["capacity"]["storage"]
            .as_str()
            .and_then(|c| c4m_core::parse_memory_bytes(c).ok())
            .unwrap_or(0);
        if capacity >= bytes {
            return Ok(Some(true));
        }
        let pending = claim["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "FileSystemResizePending" && c["status"] == "True");
        Ok(pending.then_some(false))
    })
    .await?;
    match outcome {
        Some(true) => println!("volume/{name} expanded to {size}"),
        Some(false) if users.is_empty() => {
            println!("volume/{name} grows to {size} when an instance next mounts it")
        }
        Some(false) => println!(
            "volume/{name} grows to {size} when its users restart ({}): the node cannot grow it while mounted",
            users.join(", ")
        ),
        None => println!(
            "volume/{name}: not grown yet after {wait:?}; `c4m volume list` shows its size"
        ),
    }
    Ok(())
}

/// Calls `check` every 200 ms until it gives something or `wait` passes.
async fn poll<T, F, Fut>(wait: Duration, mut check: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(found) = check().await? {
            return Ok(Some(found));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_list_shows_id_size_node_users_and_orphaned_volumes() {
        let claims = [
            json!({"metadata": {"name": "data"},
                "spec": {"volumeName": "pvc-1", "storageClassName": "local",
                    "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}),
            json!({"metadata": {"name": "new", "annotations":
                    {"volume.kubernetes.io/selected-node": "b"}},
                "spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        ];
        let volumes = [json!({"metadata": {"name": "pvc-1"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}})];
        let pods = [
            json!({"metadata": {"name": "db"}, "spec": {"volumes": [
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
            json!({"metadata": {"name": "web"}, "spec": {"volumes": [
                {"name": "data", "ephemeral": {"volumeClaimTemplate": {}}}]}}),
        ];
        let nodes = [
            json!({"metadata": {"name": "a", "annotations": {
                c4m_core::annotations::ORPHANED_VOLUMES:
                    r#"[{"driver": "c4m.io/local", "handle": "pvc-old", "sizeBytes": 67108864}]"#}}}),
            json!({"metadata": {"name": "b", "annotations": {
                c4m_core::annotations::ORPHANED_VOLUMES: "not json"}}}),
        ];
        let table = list_table(&claims, &volumes, &pods, &nodes);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            rows,
            [
                vec!["NAME", "ID", "SIZE", "CLASS", "STATUS", "NODE", "USED BY"],
                vec!["data", "pvc-1", "1Gi", "local", "Bound", "a", "pod/db"],
                vec!["new", "<none>", "2Gi", "<none>", "Pending", "b", "<none>"],
                vec![
                    "<none>", "pvc-old", "64Mi", "<none>", "Orphaned", "a", "<none>"
                ],
            ]
        );
        assert_eq!(users("web-data", &pods), ["pod/web"], "an ephemeral claim");
    }

    #[test]
    fn sizes_are_bytes_or_quantities() {
        assert_eq!(check_size("1048576").unwrap(), 1 << 20);
        assert_eq!(check_size("1Gi").unwrap(), 1 << 30);
        assert!(check_size("0").is_err());
        let error = check_size("lots").unwrap_err().to_string();
        assert!(error.contains("--size \"lots\""), "{error}");
    }
}
