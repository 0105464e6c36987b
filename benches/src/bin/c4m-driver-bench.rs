//! Container start latency per driver, side by side in one run.
//!
//!     cargo build --release -p c4m-benches --bin c4m-driver-bench
//!     sudo ./target/release/c4m-driver-bench [--starts 50] [--drivers process,oci,docker,containerd,cri]
//!
//! For each driver: the busybox image (built here, pushed to a loopback
//! `docker-registry`) is pulled by one warm-up start, then `--starts`
//! containers are started one after the other (`sleep`), each timed from
//! `ContainerRuntime::start` to its answer (the container's process runs),
//! and removed. Prints p50, p99 and the slowest per driver. Daemons a
//! driver needs are started here, on sockets of their own, and stopped at
//! the end.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use c4m_benches::percentile;
use c4m_core::{ContainerRuntime, ContainerSpec, ContainerState};
use c4m_image::ImageStore;
use c4m_runtime::{ContainerdRuntime, CriRuntime, DockerRuntime, OciRuntime, ProcessRuntime};
use c4m_testkit::{Containerd, ContainerdOptions, Dockerd, Registry};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Container start latency per c4m driver, side by side")]
struct Args {
    /// Timed starts per driver.
    #[arg(long, default_value_t = 50)]
    starts: usize,
    /// Drivers to measure, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "process,oci,docker,containerd"
    )]
    drivers: Vec<String>,
}

/// A driver ready to measure, with whatever keeps it alive (a daemon).
struct Subject {
    runtime: Arc<dyn ContainerRuntime>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

async fn subject(driver: &str, dir: &Path, registry: &Registry) -> Result<Subject> {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let runtime: Arc<dyn ContainerRuntime> = match driver {
        "process" => Arc::new(ProcessRuntime::new(
            dir.join("process"),
            [127, 0, 0, 1].into(),
        )?),
        "oci" => {
            if c4m_runtime::find_oci_binaries().is_none() {
                bail!("the oci driver needs runc (or crun) and conmon");
            }
            let images = Arc::new(ImageStore::open(dir.join("images"))?);
            Arc::new(OciRuntime::new(&dir.join("oci"), images)?)
        }
        "docker" => {
            let daemon = Dockerd::start(&dir.join("dockerd"));
            let docker = DockerRuntime::connect(daemon.socket()).await?;
            keep.push(Box::new(daemon));
            Arc::new(docker)
        }
        "containerd" => {
            let daemon = Containerd::start(&dir.join("containerd"));
            let images = Arc::new(ImageStore::open(dir.join("images"))?);
            let runtime =
                ContainerdRuntime::connect(daemon.socket(), &dir.join("c4m"), images).await?;
            keep.push(Box::new(daemon));
            Arc::new(runtime)
        }
        "cri" => {
            // containerd's CRI service, with a sandbox image that sleeps.
            let pause = oci_spec::image::ConfigBuilder::default()
                .cmd(vec!["/bin/sleep".to_string(), "2147483647".to_string()])
                .build()?;
            let layout = dir.join("pause-layout");
            c4m_image::write_busybox_image(Path::new("/bin/busybox"), &layout, "1", pause)?;
            registry.push_oci_layout(&layout, "1", "bench/pause:1");
            let containerd = Containerd::start_with(
                &dir.join("containerd"),
                &ContainerdOptions {
                    insecure_registries: vec![registry.host()],
                    sandbox_image: Some(format!("{}/bench/pause:1", registry.host())),
                },
            );
            let runtime =
                CriRuntime::connect(containerd.socket(), dir, [127, 0, 0, 1].into()).await?;
            keep.push(Box::new(containerd));
            Arc::new(runtime)
        }
        other => bail!("unknown driver {other:?}"),
    };
    Ok(Subject {
        runtime,
        _keep: keep,
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(
    runtime: &dyn ContainerRuntime,
    image: &str,
    starts: usize,
) -> Result<Vec<Duration>> {
    let spec = |id: String| ContainerSpec {
        id,
        image: Some(image.to_string()),
        command: vec!["sleep".into(), "1000".into()],
        ..ContainerSpec::default()
    };
    // The warm-up pulls the image.
    let warm = spec(format!("bench-warm-{}", std::process::id()));
    runtime.start(&warm).await.context("the warm-up start")?;
    runtime.remove(&warm.id).await?;
    let mut times = Vec::with_capacity(starts);
    for index in 0..starts {
        let spec = spec(format!("bench-{index:03}-{}", std::process::id()));
        let started = Instant::now();
        let status = runtime
            .start(&spec)
            .await
            .with_context(|| format!("start {}", spec.id))?;
        times.push(started.elapsed());
        if !matches!(status.state, ContainerState::Running { .. }) {
            bail!("{} is not running after start: {status:?}", spec.id);
        }
        runtime.remove(&spec.id).await?;
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = oci_spec::image::ConfigBuilder::default()
        .cmd(vec!["/bin/sh".to_string()])
        .env(vec!["PATH=/bin".to_string()])
        .build()?;
    let layout = dir.path().join("layout");
    c4m_image::write_busybox_image(Path::new("/bin/busybox"), &layout, "1", config)?;
    let registry = Registry::start(&dir.path().join("registry"));
    registry.push_oci_layout(&layout, "1", "bench/busybox:1");
    let image = format!("{}/bench/busybox:1", registry.host());

    println!(
        "container start latency, {} starts per driver (start → running)",
        args.starts
    );
    println!(
        "{:<12} {:<24} {:>9} {:>9} {:>9}",
        "driver", "version", "p50 ms", "p99 ms", "max ms"
    );
    for driver in &args.drivers {
        let subject = subject(driver, &dir.path().join(driver), &registry).await?;
        let times = measure(subject.runtime.as_ref(), &image, args.starts)
            .await
            .with_context(|| format!("driver {driver}"))?;
        println!(
            "{:<12} {:<24} {:>9.1} {:>9.1} {:>9.1}",
            driver,
            subject.runtime.version(),
            millis(percentile(&times, 0.5)),
            millis(percentile(&times, 0.99)),
            millis(*times.last().expect("at least one start")),
        );
    }
    Ok(())
}
