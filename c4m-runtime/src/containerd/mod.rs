//! The `containerd` driver: containers run by a containerd (1.6 or later)
//! over its gRPC API, in containerd namespace `c4m`.
//!
//! Images come from c4m's own [`ImageStore`] (pulled on demand) and are
//! moved into containerd by [`image`]. Each run is a containerd container
//! record (label `io.c4m.container`, the [`ContainerSpec`] as JSON in
//! extension `io.c4m.spec` so a new agent can adopt it; the OCI runtime spec
//! that [`super::bundle`] builds; runtime `io.containerd.runc.v2`; an
//! `overlayfs` snapshot on the image's top layer as root file system) and
//! a task. containerd keeps a task's exit status until the task is
//! deleted, so the status of a run is containerd's, and nothing here has
//! to watch a process.
//!
//! Output: the shim appends the task's stdout and stderr to
//! `<data_dir>/containers/<id>/output.log` (a `file://` stdio URI), which
//! survives agent restarts; the process driver's log clock stamps when each
//! line came (`output.times`) for `timestamps` and `since`. Execs write to
//! two files beside it that the shim fills and the driver reads after the
//! command ended. Usage and OOM kills are read from the run's cgroup
//! (`/c4m/containerd-<id>`, set in the spec), which lives until the task is
//! deleted.

mod client;
mod exec;
mod image;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Status;
use containerd_client::types::Mount;
use containerd_client::types::v1::{Process, Status as ProcessStatus};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost_types::Any;

use self::client::{Client, SNAPSHOTTER, call_error, found};
use crate::bundle;
use crate::process::clock::ClockTask;
use crate::state::{self, ExitRecord, IdLocks, remove_path, runtime_error};
use crate::{Error, Result};
use c4m_cgroups::Cgroups;
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerStatus, ExecOutput, ExecRequest, ExecSession,
    LogOptions, ResourceUsage,
};
use c4m_image::ImageStore;

/// The label naming the c4m container a containerd container runs.
const CONTAINER_LABEL: &str = "io.c4m.container";
/// The container extension holding the [`ContainerSpec`] as JSON (an
/// extension, not a label: labels are limited to 4 KiB).
const SPEC_EXTENSION: &str = "io.c4m.spec";
/// Its type URL.
const SPEC_EXTENSION_TYPE: &str = "c4m.io/runtime/ContainerSpec";
/// The type URLs containerd decodes OCI runtime specs and processes by.
const OCI_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const OCI_PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// The shim that runs tasks.
const RUNTIME: &str = "io.containerd.runc.v2";
/// How long connecting may take (the agent probes the socket at start).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits for the task to end after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long after a follower saw an exit the shim may still be copying
/// output to the log. Only a shim that is gone or hung lets it run out (a
/// live one closes the log once it has copied everything).
const OUTPUT_COPY_LIMIT: Duration = Duration::from_secs(30);
/// How long a start waits for runc's init to exec the program.
const EXEC_WAIT: Duration = Duration::from_secs(2);
const EXEC_POLL: Duration = Duration::from_millis(5);
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

/// The `containerd` driver. See the module docs.
pub struct ContainerdRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    version: String,
    /// `<data_dir>/containers`: one directory per container with its log.
    containers_dir: PathBuf,
    images: Arc<ImageStore>,
    cgroups: Cgroups,
    swap_accounting: bool,
    locks: IdLocks,
    clock: ClockTask,
    /// Makes exec ids unique within this agent.
    execs: AtomicU64,
    /// Serializes moving images into containerd.
    imports: tokio::sync::Mutex<()>,
}

impl ContainerdRuntime {
    /// A driver for the containerd listening on `socket`, keeping logs
    /// under `data_dir` and taking images from `images`. Fails with
    /// [`Error::DaemonUnreachable`] if containerd does not answer, or if the
    /// host's cgroups are unusable.
    pub async fn connect(
        socket: &Path,
        data_dir: &Path,
        images: Arc<ImageStore>,
    ) -> Result<ContainerdRuntime> {
        let handshake = async {
            let client = Client::connect(socket).await?;
            let version = client
                .version()
                .version(client.request(()))
                .await
                .map_err(|status| {
                    Error::daemon_unreachable(
                        "containerd",
                        socket,
                        format!("Version: {}", status.message()),
                    )
                })?
                .into_inner();
            Ok::<_, Error>((client, version))
        };
        let (client, version) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                Error::daemon_unreachable(
                    "containerd",
                    socket,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )
            })??;
        // Absolute: the shim opens the log by this path.
        let containers_dir = std::path::absolute(data_dir.join("containers"))
            .map_err(|e| Error::io(format!("resolve {}", data_dir.display()), e))?;
        std::fs::create_dir_all(&containers_dir)
            .map_err(|e| Error::io(format!("create {}", containers_dir.display()), e))?;
        Ok(ContainerdRuntime {
            inner: Arc::new(Inner {
                client,
                version: format!("{} ({RUNTIME})", version.version),
                containers_dir,
                images,
                cgroups: Cgroups::detect()?,
                swap_accounting: c4m_cgroups::host_accounts_swap(),
                locks: IdLocks::default(),
                clock: ClockTask::default(),
                execs: AtomicU64::new(0),
                imports: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn ensure_clock(&self) {
        self.inner.clock.ensure(
            Arc::downgrade(&self.inner),
            self.inner.containers_dir.clone(),
        );
    }
}

/// The cgroup of container `id` under `/c4m`: named apart from the other
/// drivers' groups, so the same id in two drivers never shares one.
/// The snapshot's root file system `mounts` with its writes on the sized
/// file system of `layer` ([`ContainerSpec::writable_layer`]): an overlay's
/// `upperdir` and `workdir` moved there, or the snapshot's own directory
/// (an image of one layer gives a bind mount) put under an overlay
/// writing there.
fn on_writable_layer(id: &str, mounts: Vec<Mount>, layer: &Path) -> Result<Vec<Mount>> {
    let (upper, work) = bundle::fresh_writable_layer(id, layer)?;
    let moved = |lower: Vec<String>| {
        lower
            .into_iter()
            .filter(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="))
            .chain([
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ])
            .collect::<Vec<String>>()
    };
    match mounts.as_slice() {
        [mount] if mount.r#type == "overlay" => Ok(vec![Mount {
            options: moved(mount.options.clone()),
            ..mount.clone()
        }]),
        [mount] if mount.r#type == "bind" => Ok(vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: moved(vec![format!("lowerdir={}", mount.source)]),
            ..mount.clone()
        }]),
        _ => Err(runtime_error(
            id,
            format!(
                "the snapshotter's root file system ({} mounts) cannot take a bounded writable layer",
                mounts.len()
            ),
        )),
    }
}

fn cgroup_name(id: &str) -> String {
    format!("containerd-{id}")
}

fn system_time(timestamp: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|t| SystemTime::try_from(t).ok())
}

/// Whether a task in this state has a live process.
fn is_running(process: &Process) -> bool {
    matches!(
        ProcessStatus::try_from(process.status),
        Ok(ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing)
    )
}

impl Inner {
    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        state::container_dir(&self.containers_dir, id)
    }

    /// containerd's record of container `id`, if it has one.
    async fn container(&self, id: &str) -> Result<Option<Container>> {
        let response = self
            .client
            .containers()
            .get(
                self.client
                    .request(GetContainerRequest { id: id.to_string() }),
            )
            .await;
        Ok(found(response)
            .map_err(|status| call_error(id, "get container", &status))?
            .and_then(|response| response.into_inner().container))
    }

    async fn existing_container(&self, id: &str) -> Result<Container> {
        self.container(id)
            .await?
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
    }

    /// The task's main process (or exec `exec_id`'s), if there is a task.
    async fn task(&self, id: &str, exec_id: &str) -> Result<Option<Process>> {
        let response = self
            .client
            .tasks()
            .get(self.client.request(GetRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        Ok(found(response)
            .map_err(|status| call_error(id, "get task", &status))?
            .and_then(|response| response.into_inner().process))
    }

    fn status_of(&self, container: Container, process: Option<Process>) -> Result<ContainerStatus> {
        let id = container.id.clone();
        let spec = container
            .extensions
            .get(SPEC_EXTENSION)
            .ok_or_else(|| runtime_error(&id, format!("no {SPEC_EXTENSION} extension")))
            .and_then(|any| {
                serde_json::from_slice::<ContainerSpec>(&any.value).map_err(|e| {
                    Error::container(&id, format!("corrupt {SPEC_EXTENSION} extension"), e)
                })
            })?;
        // One record per run: its creation is the run's start.
        let started_at = system_time(container.created_at).unwrap_or(SystemTime::UNIX_EPOCH);
        let (pid, exit) = match process {
            Some(process) if is_running(&process) => (process.pid, None),
            Some(process)
                if ProcessStatus::try_from(process.status) == Ok(ProcessStatus::Stopped) =>
            {
                let code = i32::try_from(process.exit_status).unwrap_or(i32::MAX);
                let exit = ExitRecord {
                    exit_code: Some(code),
                    // The shim reports a signal death as 128 + signal.
                    signal: state::signal_of_exit_code(code),
                    // Each run has a fresh cgroup, so any kill in it is this run's.
                    oom_killed: self
                        .cgroups
                        .group(&cgroup_name(&id))
                        .oom_kills()
                        .is_some_and(|kills| kills > 0),
                    finished_at: system_time(process.exited_at).unwrap_or_else(SystemTime::now),
                };
                (process.pid, Some(exit))
            }
            // No task (a start that failed half way) or one never started.
            other => {
                let exit = ExitRecord {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    finished_at: system_time(container.updated_at).unwrap_or(started_at),
                };
                (other.map_or(0, |p| p.pid), Some(exit))
            }
        };
        Ok(state::status(&id, spec, pid, started_at, exit, Vec::new()))
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        let container = self.existing_container(id).await?;
        let process = self.task(id, "").await?;
        self.status_of(container, process)
    }

    /// Sends `signal` to process `exec_id` of the task (its main process
    /// for ""; with `all`, every process of the container).
    async fn kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> std::result::Result<(), Status> {
        self.client
            .tasks()
            .kill(self.client.request(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal,
                all,
            }))
            .await
            .map(drop)
    }

    /// Waits up to `timeout` for process `exec_id` of the task (its main
    /// process for "") to end; its exit status if it did.
    async fn wait(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<Option<u32>> {
        let mut tasks = self.client.tasks();
        let wait = tasks.wait(self.client.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(response)) => Ok(Some(response.into_inner().exit_status)),
            // Gone meanwhile: it has ended.
            Ok(Err(status)) if client::not_found(&status) => Ok(Some(0)),
            Ok(Err(status)) => Err(call_error(id, "wait", &status)),
            Err(_) => Ok(None),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        self.existing_container(id).await?;
        match self.task(id, "").await? {
            Some(process) if is_running(&process) => {}
            _ => return Ok(()),
        }
        if let Err(status) = self.kill(id, "", SIGTERM, false).await {
            tracing::debug!(container = %id, error = %status.message(), "SIGTERM failed");
        }
        if self.wait(id, "", grace).await?.is_some() {
            return Ok(());
        }
        if let Err(status) = self.kill(id, "", SIGKILL, true).await {
            tracing::debug!(container = %id, error = %status.message(), "SIGKILL failed");
        }
        match self.wait(id, "", KILL_WAIT).await? {
            Some(_) => Ok(()),
            None => Err(runtime_error(id, "the task did not end after SIGKILL")),
        }
    }

    /// Forgets a run in containerd: its task (which must have ended), the
    /// container record and its root file system snapshot. Missing pieces
    /// are fine; the log stays.
    async fn teardown(&self, id: &str) -> Result<()> {
        let deleted = self
            .client
            .tasks()
            .delete(self.client.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        found(deleted).map_err(|status| call_error(id, "delete task", &status))?;
        let deleted = self
            .client
            .containers()
            .delete(
                self.client
                    .request(DeleteContainerRequest { id: id.to_string() }),
            )
            .await;
        found(deleted).map_err(|status| call_error(id, "delete container", &status))?;
        let removed = self
            .client
            .snapshots()
            .remove(self.client.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await;
        found(removed).map_err(|status| call_error(id, "remove snapshot", &status))?;
        Ok(())
    }

    /// Creates and starts a run; on failure the caller tears down.
    async fn start_run(&self, spec: &ContainerSpec, dir: &Path) -> Result<()> {
        let id = spec.id.as_str();
        let reference = spec
            .image
            .clone()
            .ok_or_else(|| runtime_error(id, "the containerd driver needs an image"))?;
        let image = {
            // One import at a time: containerd refuses a second writer of
            // the same blob, and the second start then finds it all there.
            let _importing = self.imports.lock().await;
            image::ensure(&self.client, &self.images, spec, &reference).await?
        };
        let input = bundle::BundleInput {
            image: image.config.config().as_ref(),
            // The shim mounts the snapshot there, in the task's bundle.
            root_path: PathBuf::from("rootfs"),
            image_dirs: &image.layer_dirs,
            cgroups_path: bundle::cgroups_path(&cgroup_name(id)),
            swap_accounting: self.swap_accounting,
        };
        let runtime_spec = bundle::runtime_spec(spec, &input)?;
        let json = |what: &str, value: serde_json::Result<Vec<u8>>| {
            value.map_err(|e| Error::container(id, format!("serialize the {what}"), e))
        };
        let container = Container {
            id: id.to_string(),
            labels: HashMap::from([(CONTAINER_LABEL.to_string(), id.to_string())]),
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(Any {
                type_url: OCI_SPEC_TYPE.to_string(),
                value: json("runtime spec", serde_json::to_vec(&runtime_spec))?,
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.to_string(),
            extensions: HashMap::from([(
                SPEC_EXTENSION.to_string(),
                Any {
                    type_url: SPEC_EXTENSION_TYPE.to_string(),
                    value: json("container spec", serde_json::to_vec(spec))?,
                },
            )]),
            ..Default::default()
        };
        // The record first: it holds the snapshot against containerd's
        // garbage collector from the moment the snapshot exists.
        self.client
            .containers()
            .create(self.client.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|status| call_error(id, "create container", &status))?;
        let mounts = self
            .client
            .snapshots()
            .prepare(self.client.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
                parent: image.top_chain_id.clone().unwrap_or_default(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|status| call_error(id, "prepare the root file system", &status))?
            .into_inner()
            .mounts;
        let mounts = match &spec.writable_layer {
            Some(layer) => on_writable_layer(id, mounts, layer)?,
            None => mounts,
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let log = format!("file://{}", dir.join("output.log").display());
        self.client
            .tasks()
            .create(self.client.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: log.clone(),
                stderr: log,
                ..Default::default()
            }))
            .await
            .map_err(|status| call_error(id, "create task", &status))?;
        let pid = self
            .client
            .tasks()
            .start(self.client.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|status| call_error(id, "start task", &status))?
            .into_inner()
            .pid;
        wait_for_exec(pid).await;
        Ok(())
    }

    /// An exec of `command` in running container `id`: its id (unique in
    /// this agent) and the process to run, the container's (user, env,
    /// cwd, capabilities...) with the command instead.
    async fn exec_process(
        &self,
        id: &str,
        command: &[String],
        terminal: bool,
    ) -> Result<(String, Any)> {
        let container = self.existing_container(id).await?;
        match self.task(id, "").await? {
            Some(process) if is_running(&process) => {}
            _ => return Err(runtime_error(id, "cannot exec: container is not running")),
        }
        if command.is_empty() {
            return Err(runtime_error(id, "exec: empty command"));
        }
        let runtime_spec: oci_spec::runtime::Spec = container
            .spec
            .as_ref()
            .ok_or_else(|| runtime_error(id, "the container record has no runtime spec"))
            .and_then(|any| {
                serde_json::from_slice(&any.value)
                    .map_err(|e| Error::container(id, "corrupt runtime spec", e))
            })?;
        let mut process = runtime_spec
            .process()
            .clone()
            .ok_or_else(|| runtime_error(id, "the runtime spec has no process"))?;
        process
            .set_args(Some(command.to_vec()))
            .set_terminal(Some(terminal));
        let process = serde_json::to_vec(&process)
            .map_err(|e| Error::container(id, "serialize the exec process", e))?;
        let exec_id = format!(
            "exec-{}-{}",
            std::process::id(),
            self.execs.fetch_add(1, Ordering::Relaxed)
        );
        let process = Any {
            type_url: OCI_PROCESS_TYPE.to_string(),
            value: process,
        };
        Ok((exec_id, process))
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let (exec_id, process) = self.exec_process(id, command, false).await?;
        let dir = self.container_dir(id)?;
        let (stdout, stderr) = (
            dir.join(format!("{exec_id}.stdout")),
            dir.join(format!("{exec_id}.stderr")),
        );
        let result = async {
            // Plain files (not FIFOs): the shim appends the command's output
            // to them and has finished once the process is deleted.
            for path in [&stdout, &stderr] {
                tokio::fs::write(path, b"")
                    .await
                    .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            }
            self.client
                .tasks()
                .exec(self.client.request(ExecProcessRequest {
                    container_id: id.to_string(),
                    stdin: String::new(),
                    stdout: stdout.display().to_string(),
                    stderr: stderr.display().to_string(),
                    terminal: false,
                    spec: Some(process),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|status| call_error(id, &format!("exec {command:?}"), &status))?;
            let result = self.run_exec(id, &exec_id, command, timeout).await;
            delete_process(&self.client, id, &exec_id).await;
            let exit_code = result?;
            let read = |path: PathBuf| async move {
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))
            };
            Ok(ExecOutput {
                exit_code,
                stdout: read(stdout.clone()).await?,
                stderr: read(stderr.clone()).await?,
            })
        }
        .await;
        for path in [&stdout, &stderr] {
            remove_path(path).await?;
        }
        result
    }

    /// Starts exec `exec_id` and waits up to `timeout` for its exit code;
    /// past it the command is killed.
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<i32> {
        self.client
            .tasks()
            .start(self.client.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|status| call_error(id, &format!("start exec {command:?}"), &status))?;
        if let Some(code) = self.wait(id, exec_id, timeout).await? {
            return Ok(i32::try_from(code).unwrap_or(i32::MAX));
        }
        if let Err(status) = self.kill(id, exec_id, SIGKILL, false).await {
            tracing::debug!(container = %id, exec = %exec_id, error = %status.message(), "could not kill a timed out exec");
        }
        self.wait(id, exec_id, KILL_WAIT).await?;
        Err(runtime_error(
            id,
            format!("exec {command:?} timed out after {timeout:?}"),
        ))
    }
}

#[async_trait]
impl state::Containers for Inner {
    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        Inner::status(self, id).await
    }

    /// The shim reports the exit before it has copied the last output; it
    /// closes the log once it has.
    async fn output_written(&self, id: &str, exit_seen_at: SystemTime) -> bool {
        let waited_enough = exit_seen_at
            .elapsed()
            .is_ok_and(|elapsed| elapsed >= OUTPUT_COPY_LIMIT);
        if waited_enough {
            return true;
        }
        let Ok(log) = self.container_dir(id).map(|dir| dir.join("output.log")) else {
            return true;
        };
        tokio::task::spawn_blocking(move || {
            // The shim's descriptor names the file by its real path.
            let log = std::fs::canonicalize(&log).unwrap_or(log);
            !shim_writes(&log)
        })
        .await
        .unwrap_or(true)
    }
}

/// Forgets exec `exec_id` of task `id` in containerd; the shim has copied
/// all its output once this returns.
async fn delete_process(client: &Client, id: &str, exec_id: &str) {
    let deleted = client
        .tasks()
        .delete_process(client.request(DeleteProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await;
    if let Err(status) = found(deleted) {
        tracing::warn!(container = %id, exec = %exec_id, error = %status.message(), "could not delete an exec process");
    }
}

/// Waits (briefly) until process `pid` is the container's program rather
/// than runc's init about to exec it, which a signal would end instead: a
/// stop right after the start must find the program.
async fn wait_for_exec(pid: u32) {
    let deadline = Instant::now() + EXEC_WAIT;
    let comm = PathBuf::from(format!("/proc/{pid}/comm"));
    while Instant::now() < deadline {
        match tokio::fs::read_to_string(&comm).await {
            Ok(name) if name.starts_with("runc:") => tokio::time::sleep(EXEC_POLL).await,
            _ => return,
        }
    }
}

/// Whether a containerd shim has `path` open (`/proc/<pid>/fd` of each
/// process named `containerd-shim*`).
fn shim_writes(path: &Path) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|process| {
        let dir = process.path();
        let is_shim = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|comm| comm.starts_with("containerd-shim"));
        is_shim
            && std::fs::read_dir(dir.join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
            })
    })
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    fn name(&self) -> &str {
        "containerd"
    }

    fn version(&self) -> String {
        self.inner.version.clone()
    }

    fn takes_network_namespace(&self) -> bool {
        true
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        let inner = &*self.inner;
        let id = spec.id.as_str();
        let dir = inner.container_dir(id)?;
        let _guard = inner.locks.hold(id).await;
        self.ensure_clock();
        if inner.container(id).await?.is_some() {
            if let Some(process) = inner.task(id, "").await?
                && is_running(&process)
            {
                return Err(runtime_error(
                    id,
                    format!("already running as pid {}", process.pid),
                ));
            }
            // A restart starts from a clean slate (a fresh writable layer),
            // as Kubernetes restarts containers.
            inner.teardown(id).await?;
        }
        if let Err(e) = inner.start_run(spec, &dir).await {
            if let Err(cleanup) = inner.teardown(id).await {
                tracing::warn!(container = %id, error = %cleanup, "cleanup after a failed start");
            }
            return Err(e);
        }
        inner.status(id).await
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.inner.status(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        let inner = &*self.inner;
        let containers = inner
            .client
            .containers()
            .list(inner.client.request(ListContainersRequest {
                filters: vec![format!("labels.\"{CONTAINER_LABEL}\"")],
            }))
            .await
            .map_err(|status| {
                Error::Invalid(format!("containerd list containers: {}", status.message()))
            })?
            .into_inner()
            .containers;
        let mut statuses = Vec::with_capacity(containers.len());
        for container in containers {
            let id = container.id.clone();
            let status = match inner.task(&id, "").await {
                Ok(process) => inner.status_of(container, process),
                Err(e) => Err(e),
            };
            match status {
                Ok(status) => statuses.push(status),
                Err(e) => tracing::warn!(container = %id, error = %e, "skipping container"),
            }
        }
        statuses.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(statuses)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let _guard = self.inner.locks.hold(id).await;
        self.inner.stop(id, grace).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let inner = &*self.inner;
        let dir = inner.container_dir(id)?;
        let _guard = inner.locks.hold(id).await;
        if inner.container(id).await?.is_some() {
            inner.stop(id, Duration::ZERO).await?;
            inner.teardown(id).await?;
        }
        remove_path(&dir).await?;
        inner.locks.forget(id);
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        self.inner.existing_container(id).await?;
        Ok(self.inner.cgroups.group(&cgroup_name(id)).usage()?)
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.inner.existing_container(id).await?;
        self.ensure_clock();
        let dir = self.inner.container_dir(id)?;
        if !dir.join("output.log").exists() {
            return Ok(futures::stream::empty().boxed());
        }
        state::clocked_logs(&self.inner, id, &dir, &options).await
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        self.inner.exec(id, command, timeout).await
    }

    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        exec::interactive(&self.inner, id, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot's writes move to the sized layer: an overlay keeps its
    /// lower layers with `upperdir`/`workdir` there; a one-layer image's
    /// bind mount becomes an overlay over it; anything else is refused.
    #[test]
    fn the_writable_layer_takes_the_snapshots_writes() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir_all(layer.join("upper/old")).unwrap();
        let upper = format!("upperdir={}", layer.join("upper").display());
        let work = format!("workdir={}", layer.join("work").display());
        let overlay = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/snap/1/work".into(),
                "upperdir=/snap/1/fs".into(),
                "lowerdir=/snap/0/fs".into(),
            ],
            ..Default::default()
        };
        let moved = on_writable_layer("c", vec![overlay], &layer).unwrap();
        assert_eq!(moved[0].r#type, "overlay");
        assert_eq!(
            moved[0].options,
            [
                "index=off".to_string(),
                "lowerdir=/snap/0/fs".into(),
                upper.clone(),
                work.clone()
            ]
        );
        assert!(
            !layer.join("upper/old").exists(),
            "an earlier run's writes go"
        );
        let bind = Mount {
            r#type: "bind".into(),
            source: "/snap/2/fs".into(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        };
        let moved = on_writable_layer("c", vec![bind], &layer).unwrap();
        assert_eq!(
            (moved[0].r#type.as_str(), moved[0].source.as_str()),
            ("overlay", "overlay")
        );
        assert_eq!(
            moved[0].options,
            ["lowerdir=/snap/2/fs".to_string(), upper, work]
        );
        let error = on_writable_layer("c", Vec::new(), &layer).unwrap_err();
        assert!(error.to_string().contains("(0 mounts)"), "{error}");
    }
}
