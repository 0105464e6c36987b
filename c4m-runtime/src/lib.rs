//! c4m's container drivers: what runs an instance's containers on a node,
//! each behind [`c4m_core::ContainerRuntime`] and a cargo feature.
//!
//! - `process` (default): [`ProcessRuntime`], host processes in their own
//!   process group and cgroup (v1 or v2), output to a file, state on disk
//!   for adoption by a restarted agent.
//! - `oci`: [`OciRuntime`], real containers without a daemon: an overlay
//!   root from the node's image store, the OCI runtime spec with Docker's
//!   security defaults, runc or crun under conmon.
//! - `docker`: [`DockerRuntime`], a Docker Engine over its unix socket.
//! - `containerd`: [`ContainerdRuntime`], containerd's gRPC API (needs
//!   `protoc` to build).
//! - `cri`: [`CriRuntime`], a Kubernetes CRI runtime (CRI-O, containerd).
//!
//! Health probes run through [`DefaultProber`] (HTTP GET, TCP, exec, gRPC),
//! whichever driver runs the container.
//!
//! ```no_run
//! # async fn demo() -> c4m_core::Result<()> {
//! use c4m_core::{ContainerRuntime, ContainerSpec};
//! use c4m_runtime::ProcessRuntime;
//!
//! let driver = ProcessRuntime::new("/var/lib/c4m/process".into(), [127, 0, 0, 1].into())?;
//! let status = driver
//!     .start(&ContainerSpec {
//!         id: "hello".into(),
//!         command: vec!["sleep".into(), "30".into()],
//!         ..ContainerSpec::default()
//!     })
//!     .await?;
//! println!("{:?}", status.state);
//! driver.remove("hello").await?;
//! # Ok(())
//! # }
//! ```

#[cfg(any(feature = "oci", feature = "containerd"))]
mod bundle;
#[cfg(feature = "containerd")]
mod containerd;
#[cfg(feature = "cri")]
mod cri;
#[cfg(feature = "docker")]
mod docker;
#[cfg(any(feature = "oci", feature = "cri"))]
mod k8s_file;
#[cfg(any(feature = "docker", feature = "oci", feature = "cri"))]
mod log_records;
#[cfg(feature = "oci")]
mod oci;
mod probe;
#[cfg(feature = "process")]
mod process;
mod state;

#[cfg(feature = "containerd")]
pub use containerd::ContainerdRuntime;
#[cfg(feature = "cri")]
pub use cri::CriRuntime;
#[cfg(feature = "docker")]
pub use docker::DockerRuntime;
#[cfg(feature = "oci")]
pub use oci::{OciRuntime, find_oci_binaries};
pub use probe::DefaultProber;
#[cfg(feature = "process")]
pub use process::ProcessRuntime;

use c4m_core::{ContainerSpec, Error, Result};

/// Refuses a spec asking for what driver `driver` cannot do: volume mounts
/// (unless `mounts`) or a bounded writable layer (unless `writable_layer`).
#[cfg_attr(
    not(any(feature = "process", feature = "docker", feature = "cri")),
    allow(dead_code)
)]
fn refuse_unsupported(
    driver: &str,
    spec: &ContainerSpec,
    mounts: bool,
    writable_layer: bool,
) -> Result<()> {
    let operation = if !mounts && !spec.mounts.is_empty() {
        "volume mounts"
    } else if !writable_layer && spec.writable_layer.is_some() {
        "a bounded writable layer (ephemeral-storage)"
    } else {
        return Ok(());
    };
    Err(Error::Unsupported {
        driver: driver.to_string(),
        operation,
    })
}

/// Every container's pids limit (a fork bomb stops there), whichever
/// driver runs it.
#[cfg(any(feature = "oci", feature = "containerd", feature = "docker"))]
const PIDS_LIMIT: i64 = 4096;

/// Reads a stream of an exec session to its end (terminal output is
/// read lossily).
#[cfg(test)]
async fn read_to_string(mut reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
