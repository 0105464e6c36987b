//! `c4m-e2e-bench volumes` (root): persistent volumes through the whole
//! system on one oci node with local volumes (loop + ext4): a claim and a
//! pod using it applied together until the pod is Ready (volume created,
//! provisioned on the node, bound, mounted in a running container), beside
//! the same pod without a volume;
//! `claims` claims of an Immediate class created at once until all are
//! Bound; a VolumeSnapshot of a 1 GiB volume holding `fill_mib` MiB of
//! random data, created until readyToUse.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{ControlPlane, follow, import_busybox, is_ready, kind, percentile};

/// A claim of `size` in `class` (the default class when None).
pub(super) fn claim(name: &str, size: &str, class: Option<&str>) -> Value {
    let mut claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    });
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    claim
}

/// A busybox pod with `claim` (if any) at /data running `script`, then
/// sleeping; if `script` fails the container exits (and restarts). With
/// `ready_after_script`, an exec readiness probe makes it Ready once
/// `script` succeeded; without, it is Ready once its container runs. It
/// exits on SIGTERM (a shell as pid 1 ignores it otherwise), so it stops
/// at once also where its grace period is not known (a node removing what
/// an earlier agent ran).
pub(super) fn pod(
    name: &str,
    claim: Option<&str>,
    script: &str,
    ready_after_script: bool,
) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "bb:1",
                "command": ["sh", "-c", format!(
                    "trap 'exit 0' TERM; {script} || exit 1; touch /tmp/ready; sleep 3600 & wait"
                )]}]},
    });
    if let Some(claim) = claim {
        pod["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
    }
    if ready_after_script {
        pod["spec"]["containers"][0]["readinessProbe"] =
            json!({"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1});
    }
    pod
}

/// Fails if a pod named `prefix*` restarted: its check of the volume failed.
async fn assert_never_restarted(control: &ControlPlane, prefix: &str) -> Result<()> {
    let pods = control
        .client
        .list(kind("pods")?, Some("default"), None)
        .await?;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_u64();
        if name.starts_with(prefix) && restarts != Some(0) {
            bail!("{name} restarted ({restarts:?} times): its volume was not mounted as expected");
        }
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub(super) async fn run(rounds: usize, claims: usize, fill_mib: u64) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the volumes bench needs root (loop devices, mounts, oci containers)");
    }
    let control = ControlPlane::start().await?;
    let _agent = control
        .agent(
            &[
                "--name",
                "bench",
                "--cpu",
                "64",
                "--memory",
                "64Gi",
                "--max-instances",
                "1000",
                "--default-driver",
                "oci",
            ],
            1,
        )
        .await?;
    import_busybox(&control, "bench").await?;
    let outcome = measure(&control, rounds, claims, fill_mib).await;
    clean_up(&control).await?;
    outcome
}

async fn measure(
    control: &ControlPlane,
    rounds: usize,
    claims: usize,
    fill_mib: u64,
) -> Result<()> {
    // Create -> mounted in a running instance, one at a time. Beside each,
    // the same pod without a volume, so the volume's share of the time
    // shows. No readiness probe: a pod without one is Ready once its
    // container runs, and the container's mounts are in place before its
    // process starts; the process checks the volume is the claim's ext4
    // (`lost+found`) and exits if not, which `assert_never_restarted` catches.
    let (mut with_volume, mut without) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for index in 0..rounds {
        let (volume, name) = (format!("vol-{index:03}"), format!("user-{index:03}"));
        with_volume.push(
            control
                .time_to_ready(
                    &name,
                    vec![
                        claim(&volume, "64Mi", None),
                        pod(&name, Some(&volume), "test -d /data/lost+found", false),
                    ],
                )
                .await?,
        );
        let name = format!("bare-{index:03}");
        without.push(
            control
                .time_to_ready(&name, vec![pod(&name, None, "true", false)])
                .await?,
        );
    }
    assert_never_restarted(control, "user-").await?;
    for (what, latencies) in [
        (
            "claim + pod applied -> pod Ready with the volume mounted",
            &mut with_volume,
        ),
        (
            "the same pod without a volume, applied -> Ready",
            &mut without,
        ),
    ] {
        latencies.sort();
        println!("{what} (local, 64Mi, {rounds} one at a time):");
        println!(
            "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.99)),
            latencies.last().copied().map_or(0.0, ms),
        );
    }

    // Many claims of an Immediate class at once, until all are Bound.
    control
        .apply(
            vec![
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "bench-now"}, "provisioner": "c4m.io/local",
                "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
            ],
            1,
        )
        .await?;
    let events = control.watch("persistentvolumeclaims").await?;
    let mut bound = std::collections::BTreeSet::new();
    let created = Instant::now();
    control
        .apply(
            (0..claims)
                .map(|i| claim(&format!("many-{i:04}"), "16Mi", Some("bench-now")))
                .collect(),
            claims.max(1),
        )
        .await?;
    follow(events, Duration::from_secs(600), |claim| {
        let name = claim["metadata"]["name"].as_str().unwrap_or_default();
        if name.starts_with("many-") && claim["status"]["phase"] == "Bound" {
            bound.insert(name.to_string());
        }
        bound.len() >= claims
    })
    .await?;
    let took = created.elapsed();
    println!("{claims} claims (Immediate, local, 16Mi) created at once -> all Bound:");
    println!(
        "  {:.2} s   {:.1} claims/s",
        took.as_secs_f64(),
        claims as f64 / took.as_secs_f64()
    );

    // A snapshot of a 1 GiB volume holding random data.
    let events = control.watch_pods().await?;
    let filler = pod(
        "filler",
        Some("big"),
        &format!("dd if=/dev/urandom of=/data/fill bs=1M count={fill_mib} 2>/dev/null && sync"),
        true,
    );
    control
        .apply(vec![claim("big", "1Gi", None), filler], 2)
        .await?;
    follow(events, Duration::from_secs(600), |pod| {
        pod["metadata"]["name"] == "filler" && is_ready(pod)
    })
    .await?;
    let events = control.watch("volumesnapshots").await?;
    let taken = Instant::now();
    control
        .apply(
            vec![
                json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "big-snap", "namespace": "default"},
                "spec": {"source": {"persistentVolumeClaimName": "big"}}}),
            ],
            1,
        )
        .await?;
    follow(events, Duration::from_secs(600), |snapshot| {
        snapshot["metadata"]["name"] == "big-snap" && snapshot["status"]["readyToUse"] == true
    })
    .await?;
    println!(
        "VolumeSnapshot of a 1 GiB volume holding {fill_mib} MiB of random data, mounted and in use -> readyToUse:"
    );
    println!("  {:.2} s", taken.elapsed().as_secs_f64());
    Ok(())
}

/// Deletes what the bench made and waits for the node to release it
/// (volumes unmounted, loop devices detached, backend volumes deleted)
/// before the agent is stopped.
pub(super) async fn clean_up(control: &ControlPlane) -> Result<()> {
    let client = &control.client;
    for plural in ["pods", "volumesnapshots", "persistentvolumeclaims"] {
        let kind = kind(plural)?;
        let listed = client.list(kind, Some("default"), None).await?;
        for item in listed["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let _ = client.delete(kind, Some("default"), name).await;
        }
        if plural == "pods" {
            control.wait_no_pods(Duration::from_secs(300)).await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let volumes = kind("persistentvolumes")?;
    while client.list(volumes, None, None).await?["items"]
        .as_array()
        .is_some_and(|v| !v.is_empty())
    {
        if Instant::now() > deadline {
            bail!("the node did not release every volume within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A PersistentVolume goes once its node has deleted the backend volume
    // (the deletion finalizer); the loop devices of volumes still staged
    // for a deleted pod may be detached a moment later.
    while !loops_under(control.dir.path()).is_empty() {
        if Instant::now() > deadline {
            bail!(
                "the node left loop devices attached: {:?}",
                loops_under(control.dir.path())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The loop devices whose backing files are under `dir`, each with its
/// backing file as the kernel names it (` (deleted)` after a file removed
/// while attached).
pub(super) fn loops_under(dir: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|device| {
            let backing = std::fs::read_to_string(device.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim();
            std::path::Path::new(backing.trim_end_matches(" (deleted)"))
                .starts_with(dir)
                .then(|| {
                    (
                        device.file_name().to_string_lossy().to_string(),
                        backing.to_string(),
                    )
                })
        })
        .collect()
}
