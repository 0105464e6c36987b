//! Storage benchmark (root): local volume create -> mounted latency, snapshot
//! time of a 1 GiB volume with real data, fio throughput of a local volume
//! against the host filesystem on the same disk, and a crash run over random
//! fail points with its seed printed.
//!
//! ```text
//! cargo run --release -p c4m-storage --example storage-bench -- [--volumes N] [--fill-mib M] [--crashes K] [--seed S] [--dir D]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use c4m_storage::testing::{
    CleanupGuard, LOCAL_PROGRAMS, XorShift, every_step_workload, leaks, require_root_and,
    tear_down_all,
};
use c4m_storage::{
    FAIL_ACTION_ENV, FAIL_POINT_ENV, FAIL_POINTS, LocalBackend, ProvisionRequest, SnapshotId,
    VolumeBackend, VolumeId,
};

struct Args {
    volumes: usize,
    fill_mib: usize,
    crashes: usize,
    seed: u64,
    dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        volumes: 100,
        fill_mib: 768,
        crashes: 20,
        seed: XorShift::seed_from_clock(),
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--volumes" => args.volumes = value()?.parse()?,
            "--fill-mib" => args.fill_mib = value()?.parse()?,
            "--crashes" => args.crashes = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--dir" => args.dir = value()?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn create_to_mounted(pool: &Path, mnt: &Path, n: usize) -> anyhow::Result<()> {
    let backend = LocalBackend::open(pool)?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let id = VolumeId::new(format!("lat-{i}"))?;
        let start = Instant::now();
        backend
            .provision(&ProvisionRequest::new(id.clone(), 1 << 30))
            .await?;
        backend.stage(&id, &mnt.join(format!("lat-{i}"))).await?;
        times.push(start.elapsed());
    }
    let start = Instant::now();
    for i in 0..n {
        let id = VolumeId::new(format!("lat-{i}"))?;
        backend.unstage(&id, &mnt.join(format!("lat-{i}"))).await?;
        backend.delete(&id).await?;
    }
    let teardown = start.elapsed();
    times.sort();
    println!(
        "local create -> mounted (1 GiB sparse ext4, {n} volumes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 200 ms); unmount+delete all: {:.0} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        teardown.as_secs_f64() * 1e3,
    );
    ensure!(leaks(pool, mnt).await?.is_empty(), "the latency run leaked");
    Ok(())
}

async fn snapshot_time(pool: &Path, mnt: &Path, fill_mib: usize) -> anyhow::Result<()> {
    let backend = LocalBackend::open(pool)?;
    let id = VolumeId::new("snap-src")?;
    let staging = mnt.join("snap-src");
    backend
        .provision(&ProvisionRequest::new(id.clone(), 1 << 30))
        .await?;
    backend.stage(&id, &staging).await?;
    // Incompressible data, fsynced.
    let mut file = std::fs::File::create(staging.join("data"))?;
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..fill_mib {
        rng.fill(&mut chunk);
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    drop(file);
    let start = Instant::now();
    backend.snapshot(&id, &SnapshotId::new("mounted")?).await?;
    let frozen = start.elapsed();
    backend.unstage(&id, &staging).await?;
    let start = Instant::now();
    backend
        .snapshot(&id, &SnapshotId::new("unmounted")?)
        .await?;
    let unmounted = start.elapsed();
    let start = Instant::now();
    backend
        .restore(
            &SnapshotId::new("unmounted")?,
            &ProvisionRequest::new(VolumeId::new("snap-restored")?, 1 << 30),
        )
        .await?;
    let restore = start.elapsed();
    println!(
        "snapshot of a 1 GiB volume holding {fill_mib} MiB of data: mounted (fsfreeze during the copy) {:.0} ms, unmounted {:.0} ms; restore {:.0} ms",
        frozen.as_secs_f64() * 1e3,
        unmounted.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3
    );
    for snap in ["mounted", "unmounted"] {
        backend.delete_snapshot(&SnapshotId::new(snap)?).await?;
    }
    backend.delete(&VolumeId::new("snap-restored")?).await?;
    backend.delete(&id).await?;
    Ok(())
}

fn fio(dir: &Path, name: &str, rw: &str, bs: &str) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("fio")
        .args([
            &format!("--name={name}"),
            &format!("--directory={}", dir.display()),
            &format!("--rw={rw}"),
            &format!("--bs={bs}"),
            "--size=256M",
            "--direct=1",
            "--ioengine=psync",
            "--runtime=10",
            "--time_based=0",
            "--output-format=json",
        ])
        .output()
        .context("running fio (Debian package fio)")?;
    ensure!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("fio's JSON")?;
    let job = json
        .get("jobs")
        .and_then(|j| j.get(0))
        .context("fio output has no job")?;
    let side = if rw.contains("read") { "read" } else { "write" };
    let stats = job.get(side).context("fio job has no stats")?;
    let mib_s = stats.get("bw").and_then(|v| v.as_f64()).unwrap_or(0.0) / 1024.0;
    let iops = stats.get("iops").and_then(|v| v.as_f64()).unwrap_or(0.0);
    Ok((mib_s, iops))
}

async fn fio_compare(pool: &Path, mnt: &Path) -> anyhow::Result<()> {
    let backend = LocalBackend::open(pool)?;
    let id = VolumeId::new("fio")?;
    let staging = mnt.join("fio");
    backend
        .provision(&ProvisionRequest::new(id.clone(), 1 << 30))
        .await?;
    backend.stage(&id, &staging).await?;
    let host_dir = pool.join("fio-host");
    std::fs::create_dir_all(&host_dir)?;
    for (label, rw, bs) in [
        ("seq write 1M", "write", "1M"),
        ("seq read 1M", "read", "1M"),
        ("rand write 4k", "randwrite", "4k"),
        ("rand read 4k", "randread", "4k"),
    ] {
        let (vol_bw, vol_iops) = fio(&staging, "vol", rw, bs)?;
        let (host_bw, host_iops) = fio(&host_dir, "host", rw, bs)?;
        println!(
            "fio {label:<14} (O_DIRECT, 256 MiB): local volume {vol_bw:8.1} MiB/s {vol_iops:8.0} IOPS | host fs same disk {host_bw:8.1} MiB/s {host_iops:8.0} IOPS ({:.0}%)",
            if host_bw > 0.0 {
                vol_bw / host_bw * 100.0
            } else {
                0.0
            }
        );
    }
    std::fs::remove_dir_all(&host_dir)?;
    backend.unstage(&id, &staging).await?;
    backend.delete(&id).await?;
    Ok(())
}

async fn crash_run(dir: &Path, crashes: usize, seed: u64) -> anyhow::Result<()> {
    println!("random crash run: seed {seed} ({crashes} crashes; rerun with --seed {seed})");
    let mut rng = XorShift::new(seed);
    let started = Instant::now();
    for round in 0..crashes {
        let point = *rng.pick(FAIL_POINTS).context("no fail point")?;
        let base = dir.join(format!("crash-{round}"));
        let (pool, root) = (base.join("pool"), base.join("mnt"));
        let _guard = CleanupGuard::new([base.clone()]);
        std::fs::create_dir_all(&base)?;
        let status = Command::new(std::env::current_exe()?)
            .args([
                "--crash-child",
                &pool.display().to_string(),
                &root.display().to_string(),
            ])
            .env(FAIL_POINT_ENV, point)
            .env(FAIL_ACTION_ENV, "kill")
            .stderr(std::process::Stdio::null())
            .status()?;
        ensure!(
            status.code().is_none(),
            "round {round}: the child was not killed at {point} ({status})"
        );
        let backend = LocalBackend::open(&pool)?;
        backend
            .reconcile()
            .await
            .with_context(|| format!("round {round} ({point}): reconcile"))?;
        tear_down_all(&backend).await?;
        let left = leaks(&pool, &root).await?;
        ensure!(left.is_empty(), "round {round} ({point}): leaked {left:?}");
        std::fs::remove_dir_all(&base)?;
    }
    println!(
        "random crash run: {crashes} kill -9 at random fail points, 0 leaks, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--crash-child") {
        let (pool, root) = (argv.get(2).context("pool")?, argv.get(3).context("root")?);
        let backend = LocalBackend::open(pool)?;
        every_step_workload(&backend, Path::new(root)).await?;
        return Ok(());
    }
    require_root_and(&[LOCAL_PROGRAMS, &["fio"]].concat()).map_err(anyhow::Error::msg)?;
    let args = parse_args()?;
    let dir = tempfile::tempdir_in(&args.dir)?;
    let _guard = CleanupGuard::new([dir.path().to_path_buf()]);
    let (pool, mnt) = (dir.path().join("pool"), dir.path().join("mnt"));
    create_to_mounted(&pool, &mnt, args.volumes).await?;
    snapshot_time(&pool, &mnt, args.fill_mib).await?;
    fio_compare(&pool, &mnt).await?;
    crash_run(&dir.path().join("crash"), args.crashes, args.seed).await?;
    Ok(())
}
