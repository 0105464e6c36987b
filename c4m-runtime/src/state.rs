//! What the drivers that run containers themselves (`process`, `oci`) share:
//! one directory per container holding `state.json`, exit records, listing
//! those directories, and reading a container's log file.

#[cfg(any(feature = "oci", feature = "containerd", feature = "cri"))]
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::process::{clock, logs};
use crate::{Error, Result};
use c4m_core::{ContainerSpec, ContainerState, ContainerStatus, LogOptions, PortBinding};
#[cfg(any(feature = "oci", feature = "containerd"))]
use c4m_image::{Image, ImageStore};

/// One lock per container id: serializes a container's start, stop and
/// remove without making containers wait for each other's grace periods.
#[derive(Default)]
#[cfg(any(feature = "oci", feature = "containerd", feature = "cri"))]
pub(crate) struct IdLocks {
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[cfg(any(feature = "oci", feature = "containerd", feature = "cri"))]
impl IdLocks {
    fn locks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // The map stays consistent even if a holder panicked.
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for container `id`'s lock and holds it until the guard drops.
    pub(crate) async fn hold(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(self.locks().entry(id.to_string()).or_default());
        lock.lock_owned().await
    }

    /// Drops the lock of a removed container.
    pub(crate) fn forget(&self, id: &str) {
        self.locks().remove(id);
    }
}

/// A driver error about container `id`.
#[cfg(any(feature = "oci", feature = "containerd", feature = "cri"))]
pub(crate) fn runtime_error(id: &str, message: impl Into<String>) -> Error {
    Error::Runtime {
        id: id.to_string(),
        message: message.into(),
    }
}

/// Runs blocking work (the image store's, file systems') off the async
/// threads.
#[cfg(any(feature = "oci", feature = "containerd"))]
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
    E: Into<Error> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::driver("a blocking task", e))?
        .map_err(Into::into)
}

/// An image the node lacks and could not pull.
#[cfg(any(feature = "oci", feature = "containerd"))]
#[derive(Debug, thiserror::Error)]
#[error("not in this node's image store, and pulling it failed: {0}")]
struct NotPulled(#[source] c4m_image::Error);

/// The image `spec` names (as `reference`) in `images`, pulled as its
/// `imagePullPolicy` says: `IfNotPresent` when the store lacks it, `Always`
/// every time, `Never` not at all (a missing image is
/// [`Error::ImageNeverPull`]). A pull logs in with the spec's registry
/// login, if it has one.
#[cfg(any(feature = "oci", feature = "containerd"))]
pub(crate) async fn image_on_demand(
    images: &Arc<ImageStore>,
    spec: &ContainerSpec,
    reference: &str,
) -> Result<Image> {
    let pull = || async {
        let login = spec
            .pull_credentials
            .as_ref()
            .map(|login| c4m_image::RegistryCredentials {
                username: login.username.clone(),
                password: login.password.clone(),
            });
        c4m_image::pull(images, reference, login.as_ref())
            .await
            .map_err(|e| Error::Image {
                reference: reference.to_string(),
                source: Box::new(NotPulled(e)),
            })
    };
    if spec.pull_policy == c4m_core::PullPolicy::Always {
        return pull().await;
    }
    let store = Arc::clone(images);
    let wanted = reference.to_string();
    let found = tokio::task::spawn_blocking(move || store.resolve(&wanted))
        .await
        .map_err(|e| Error::driver("an image store task", e))?;
    match found {
        Ok(image) => Ok(image),
        Err(c4m_image::Error::NotFound(_)) if spec.pull_policy == c4m_core::PullPolicy::Never => {
            Err(Error::ImageNeverPull {
                reference: reference.to_string(),
            })
        }
        Err(c4m_image::Error::NotFound(_)) => pull().await,
        Err(e) => Err(e.into()),
    }
}

/// Removes a file or a directory tree; a missing one is Ok.
#[cfg(any(feature = "oci", feature = "containerd", feature = "cri"))]
pub(crate) async fn remove_path(path: &Path) -> Result<()> {
    let result = match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// How a container's main process ended, as its state file records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: SystemTime,
}

/// A driver's view of its containers, for [`list`] and [`logs`].
#[async_trait]
pub(crate) trait Containers: Send + Sync + 'static {
    /// The container's current status.
    async fn status(&self, id: &str) -> Result<ContainerStatus>;

    /// Whether all the output of container `id`, whose exit a log
    /// follower first saw at `exit_seen_at`, is in its log. Drivers whose
    /// log is written by another process after the exit is reported say
    /// when it is done. (The follower's own time, not the reported exit's:
    /// a driver's clock or a missing exit time must not end it early.)
    async fn output_written(&self, id: &str, exit_seen_at: SystemTime) -> bool {
        let _ = (id, exit_seen_at);
        true
    }
}

/// A driver's container records, `<records_dir>/<id>/state.json`: the
/// lookups both drivers make, over [`load`] and [`save`].
#[async_trait]
pub(crate) trait Records: Send + Sync {
    /// What the driver records of one container.
    type Record: Serialize + DeserializeOwned + Send + Sync;

    /// The directory holding one directory per container.
    fn records_dir(&self) -> &Path;

    /// The container's directory (its id checked).
    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        container_dir(self.records_dir(), id)
    }

    /// The container's record; `None` if there is none.
    async fn load(&self, id: &str) -> Result<Option<Self::Record>> {
        load(&self.container_dir(id)?, id).await
    }

    /// The container's record; an unknown container is an error.
    async fn load_existing(&self, id: &str) -> Result<Self::Record> {
        self.load(id)
            .await?
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
    }

    /// Writes the record atomically.
    async fn save(&self, id: &str, record: &Self::Record) -> Result<()> {
        save(&self.container_dir(id)?, id, record).await
    }
}

/// The signal that ended a process whose exit code a monitor (conmon,
/// dockerd) reported as 128 + signal, as shells do.
#[cfg(any(
    feature = "oci",
    feature = "containerd",
    feature = "docker",
    feature = "cri"
))]
pub(crate) fn signal_of_exit_code(code: i32) -> Option<i32> {
    (code > 128 && code < 128 + 65).then(|| code - 128)
}

/// Where the spec's ports are for a container on the node's network
/// (`docker`, `cri`): its own port numbers at the node's address.
#[cfg(any(feature = "docker", feature = "cri"))]
pub(crate) fn host_port_bindings(spec: &ContainerSpec, host_ip: &str) -> Vec<PortBinding> {
    spec.ports
        .iter()
        .map(|port| PortBinding {
            name: port.name.clone(),
            container_port: port.container_port,
            host_ip: host_ip.to_string(),
            host_port: port.container_port,
            protocol: port.protocol.clone(),
        })
        .collect()
}

/// `base/<id>`, if `id` is usable as a file name (letters, digits, `-`,
/// `_`, `.`; not `.` or `..`).
pub(crate) fn container_dir(base: &Path, id: &str) -> Result<PathBuf> {
    check_id(id)?;
    Ok(base.join(id))
}

/// Whether `id` is a valid container id (letters, digits, `-`, `_`, `.`;
/// not `.` or `..`): usable as a file name and in a Docker container name.
pub(crate) fn check_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Error::Runtime {
            id: id.to_string(),
            message: "invalid container id: use letters, digits, '-', '_' and '.'".into(),
        });
    }
    Ok(())
}

/// The record in `dir/state.json`; `None` if there is none.
pub(crate) async fn load<T: DeserializeOwned>(dir: &Path, id: &str) -> Result<Option<T>> {
    let path = dir.join("state.json");
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::container(id, format!("corrupt state file {}", path.display()), e))
}

/// Writes `dir/state.json` atomically (temp file + rename), so a crash
/// leaves the old or the new state, never half of one.
pub(crate) async fn save<T: Serialize>(dir: &Path, id: &str, record: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::container(id, "serialize state", e))?;
    let temp = dir.join("state.json.tmp");
    tokio::fs::write(&temp, json)
        .await
        .map_err(|e| Error::io(format!("write {}", temp.display()), e))?;
    tokio::fs::rename(&temp, dir.join("state.json"))
        .await
        .map_err(|e| Error::io(format!("rename {} to state.json", temp.display()), e))
}

/// The status of a run that started at `started_at` as `pid`.
pub(crate) fn status(
    id: &str,
    spec: ContainerSpec,
    pid: u32,
    started_at: SystemTime,
    exit: Option<ExitRecord>,
    ports: Vec<PortBinding>,
) -> ContainerStatus {
    let state = match exit {
        None => ContainerState::Running { pid, started_at },
        Some(exit) => ContainerState::Exited {
            exit_code: exit.exit_code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            started_at,
            finished_at: exit.finished_at,
        },
    };
    ContainerStatus {
        id: id.to_string(),
        spec,
        state,
        ports,
    }
}

/// The status of every container directory under `base`, sorted by id.
pub(crate) async fn list(containers: &dyn Containers, base: &Path) -> Result<Vec<ContainerStatus>> {
    let mut entries = tokio::fs::read_dir(base)
        .await
        .map_err(|e| Error::io(format!("read {}", base.display()), e))?;
    let mut statuses = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| Error::io(format!("read {}", base.display()), e))?
    {
        let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_dir {
            continue;
        }
        match containers.status(&id).await {
            Ok(status) => statuses.push(status),
            // A directory whose state.json has not been written yet.
            Err(Error::ContainerNotFound(_)) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "skipping container"),
        }
    }
    statuses.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(statuses)
}

/// Streams log file `path` of container `id` as `options` ask: from the
/// last lines, and (following) until the container is no longer running;
/// with the byte offset the stream starts at.
pub(crate) async fn logs<C: Containers>(
    containers: &Arc<C>,
    id: &str,
    path: PathBuf,
    options: &LogOptions,
) -> Result<(BoxStream<'static, Result<Bytes>>, u64)> {
    let offset = match options.tail_lines {
        None => 0,
        Some(lines) => {
            let tail_path = path.clone();
            tokio::task::spawn_blocking(move || logs::tail_offset(&tail_path, lines))
                .await
                .map_err(|e| Error::container(id, "tail task failed", e))?
                .map_err(|e| Error::io(format!("tail {}", path.display()), e))?
        }
    };
    let exited = options.follow.then(|| {
        // Weak: an open log stream must not keep a dropped runtime alive;
        // once it is gone the stream ends.
        let containers = Arc::downgrade(containers);
        let id = id.to_string();
        let exit_seen_at = Arc::new(std::sync::Mutex::new(None::<SystemTime>));
        logs::exited_check(move || {
            let containers = containers.clone();
            let id = id.clone();
            let exit_seen_at = Arc::clone(&exit_seen_at);
            async move {
                let Some(containers) = containers.upgrade() else {
                    return true;
                };
                match containers.status(&id).await {
                    Ok(ContainerStatus {
                        state: ContainerState::Running { .. },
                        ..
                    }) => false,
                    Ok(ContainerStatus {
                        state: ContainerState::Exited { .. },
                        ..
                    }) => {
                        let seen_at = *exit_seen_at
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert_with(SystemTime::now);
                        containers.output_written(&id, seen_at).await
                    }
                    Err(_) => true,
                }
            }
        })
    });
    Ok((logs::stream(path, offset, exited).await?, offset))
}

/// Streams `<dir>/output.log` of container `id` as `options` ask, each
/// line's time taken from the log clock's index beside it (see
/// `process/clock.rs`; the driver runs the clock over its containers).
pub(crate) async fn clocked_logs<C: Containers>(
    containers: &Arc<C>,
    id: &str,
    dir: &Path,
    options: &LogOptions,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let (chunks, offset) = logs(containers, id, dir.join("output.log"), options).await?;
    if !options.timestamps && options.since.is_none() {
        return Ok(chunks);
    }
    let filter = logs::LineFilter {
        times: clock::LineTimes::load(clock::times_path(dir)),
        timestamps: options.timestamps,
        since: options.since,
    };
    Ok(logs::stamp_lines(chunks, offset, filter))
}
