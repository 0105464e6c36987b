//! The `cri` driver: containers run by a Kubernetes Container Runtime
//! Interface (`runtime.v1`) runtime, such as CRI-O or containerd's CRI
//! plugin, over its unix socket.
//!
//! Each c4m container gets a pod sandbox of its own (metadata name = the
//! container id, namespace `c4m`, label [`CONTAINER_LABEL`]) on the node's
//! network, and one container in it; its spec rides along as an annotation
//! ([`SPEC_ANNOTATION`]), so a fresh driver finds and describes every
//! container from the runtime alone (adoption). A restart replaces the
//! exited container in the same sandbox. Logs are the runtime's CRI log
//! file under `<data_dir>/logs/<id>/`, read directly (the runtime runs on
//! this node).

mod api;
mod config;
mod spdy;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use self::api::image_service_client::ImageServiceClient;
use self::api::runtime_service_client::RuntimeServiceClient;
use self::api::{
    ContainerFilter, ContainerStatsRequest, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, ImageStatusRequest, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxFilter, PodSandboxState, PullImageRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use self::config::{CONTAINER_LABEL, LOG_FILE};
use super::k8s_file;
use crate::state::{self, ExitRecord, IdLocks, runtime_error};
use crate::{Error, Result};
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerStatus, ExecOutput, ExecRequest, ExecSession,
    LogOptions, ResourceUsage,
};

/// How long connecting to the runtime's socket and its first answer may
/// take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than an exec's own timeout its call may take before
/// the driver gives up on the runtime.
const EXEC_SLACK: Duration = Duration::from_secs(5);

/// The `cri` driver. See the module docs.
#[derive(Clone)]
pub struct CriRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// `<data_dir>/logs`: one log directory per sandbox.
    logs_dir: PathBuf,
    /// The runtime's name and version, and the CRI version it speaks.
    runtime_version: String,
    /// The node address that ports of containers (on the node's network)
    /// are reached at.
    host_ip: IpAddr,
    swap_accounting: bool,
    locks: IdLocks,
}

/// A failed CRI call on container `id`.
fn call_error(id: &str, call: &str, status: &tonic::Status) -> Error {
    runtime_error(id, format!("cri {call}: {}", status.message()))
}

/// The outcome of a call that removes or stops something: already gone
/// is as good as done.
fn unless_gone<T>(id: &str, call: &str, result: Result<T, tonic::Status>) -> Result<()> {
    match result {
        Err(e) if e.code() != Code::NotFound => Err(call_error(id, call, &e)),
        _ => Ok(()),
    }
}

/// CRI times are nanoseconds since the epoch; 0 is "not set".
fn from_nanos(nanos: i64) -> Option<SystemTime> {
    u64::try_from(nanos)
        .ok()
        .filter(|n| *n > 0)
        .map(|n| SystemTime::UNIX_EPOCH + Duration::from_nanos(n))
}

/// Whole seconds, rounded up: the CRI counts timeouts in seconds and a
/// grace period must not shrink.
fn ceil_seconds(duration: Duration) -> i64 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

impl CriRuntime {
    /// Connects to the CRI runtime listening on `socket` and asks its
    /// version (so a socket that is not a CRI `runtime.v1` service fails
    /// here). Log files go under `data_dir/logs`; containers share the
    /// node's network, so their ports are reported at `host_ip`, the node's
    /// address.
    pub async fn connect(socket: &Path, data_dir: &Path, host_ip: IpAddr) -> Result<CriRuntime> {
        let daemon_error =
            |source: c4m_core::BoxError| Error::daemon_unreachable("cri", socket, source);
        let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .map_err(|e| daemon_error(Error::driver("not a usable socket path", e).into()))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
            .await
            .map_err(|_| daemon_error("connect timed out".into()))?
            .map_err(|e| daemon_error(Error::driver("connect", e).into()))?;
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let version = tokio::time::timeout(
            CONNECT_TIMEOUT,
            runtime.version(VersionRequest {
                version: "v1".into(),
            }),
        )
        .await
        .map_err(|_| daemon_error("the runtime did not answer Version".into()))?
        .map_err(|e| {
            daemon_error(
                format!(
                    "Version (is this a CRI runtime.v1 socket?): {}",
                    e.message()
                )
                .into(),
            )
        })?
        .into_inner();
        let logs_dir = data_dir.join("logs");
        std::fs::create_dir_all(&logs_dir)
            .map_err(|e| Error::io(format!("create {}", logs_dir.display()), e))?;
        Ok(CriRuntime {
            inner: Arc::new(Inner {
                socket: socket.to_path_buf(),
                runtime,
                images: ImageServiceClient::new(channel),
                logs_dir,
                runtime_version: format!(
                    "{} {}, CRI {}",
                    version.runtime_name, version.runtime_version, version.runtime_api_version
                ),
                host_ip,
                swap_accounting: c4m_cgroups::host_accounts_swap(),
                locks: IdLocks::default(),
            }),
        })
    }
}

/// What the runtime says about one c4m container.
struct Found {
    /// The runtime's container id.
    container_id: String,
    running: bool,
}

impl Inner {
    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// `<logs_dir>/<id>`, the sandbox's log directory (the id checked to
    /// be a file name).
    fn log_dir(&self, id: &str) -> Result<PathBuf> {
        state::container_dir(&self.logs_dir, id)
    }

    /// The runtime's sandboxes of c4m container `id`, newest first; every
    /// c4m sandbox for `None`.
    async fn sandboxes(&self, id: Option<&str>) -> Result<Vec<api::PodSandbox>> {
        let filter = id.map(|id| PodSandboxFilter {
            label_selector: [(CONTAINER_LABEL.to_string(), id.to_string())].into(),
            ..Default::default()
        });
        let response = self
            .runtime()
            .list_pod_sandbox(ListPodSandboxRequest { filter })
            .await
            .map_err(|e| call_error(id.unwrap_or_default(), "ListPodSandbox", &e))?;
        let mut sandboxes: Vec<_> = response
            .into_inner()
            .items
            .into_iter()
            .filter(|s| s.labels.contains_key(CONTAINER_LABEL))
            .collect();
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sandboxes)
    }

    /// The runtime's containers of c4m container `id`, newest first; every
    /// c4m container for `None`.
    async fn containers(&self, id: Option<&str>) -> Result<Vec<api::Container>> {
        let filter = id.map(|id| ContainerFilter {
            label_selector: [(CONTAINER_LABEL.to_string(), id.to_string())].into(),
            ..Default::default()
        });
        let response = self
            .runtime()
            .list_containers(ListContainersRequest { filter })
            .await
            .map_err(|e| call_error(id.unwrap_or_default(), "ListContainers", &e))?;
        let mut containers: Vec<_> = response
            .into_inner()
            .containers
            .into_iter()
            .filter(|c| c.labels.contains_key(CONTAINER_LABEL))
            .collect();
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(containers)
    }

    /// The current (newest) runtime container of `id`.
    async fn current(&self, id: &str) -> Result<Option<Found>> {
        let containers = self.containers(Some(id)).await?;
        Ok(containers.into_iter().next().map(|c| Found {
            running: c.state == i32::from(api::ContainerState::ContainerRunning),
            container_id: c.id,
        }))
    }

    async fn current_existing(&self, id: &str) -> Result<Found> {
        self.current(id)
            .await?
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
    }

    /// The status of runtime container `container_id`, which is c4m's `id`.
    async fn describe(&self, id: &str, container_id: &str) -> Result<ContainerStatus> {
        let response = self
            .runtime()
            .container_status(ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: true,
            })
            .await
            .map_err(|e| match e.code() {
                Code::NotFound => Error::ContainerNotFound(id.to_string()),
                _ => call_error(id, "ContainerStatus", &e),
            })?
            .into_inner();
        let status = response
            .status
            .ok_or_else(|| runtime_error(id, "cri ContainerStatus: the runtime sent no status"))?;
        let spec = config::spec_from(
            &status.annotations,
            id,
            &format!("runtime container {container_id}"),
        )?;
        // The pid is not part of the CRI; runtimes put it in the verbose
        // info (containerd: `info.pid`, CRI-O: `info.pid` too).
        let pid = response
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info.get("pid")?.as_u64())
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0);
        let started_at = from_nanos(status.started_at)
            .or_else(|| from_nanos(status.created_at))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let running = status.state == i32::from(api::ContainerState::ContainerRunning);
        let exit = (!running).then(|| {
            // A container created but never started (or in an unknown
            // state) is not running either; it has no exit code.
            let exited = status.state == i32::from(api::ContainerState::ContainerExited);
            let exit_code = exited.then_some(status.exit_code);
            ExitRecord {
                exit_code,
                signal: exit_code.and_then(state::signal_of_exit_code),
                oom_killed: status.reason == "OOMKilled",
                // The runtime may note a fast exit before the start.
                finished_at: from_nanos(status.finished_at)
                    .map_or(started_at, |finished| finished.max(started_at)),
            }
        });
        Ok(self.status_of(id, spec, pid, started_at, exit))
    }

    /// A status with the spec's ports where containers on the node's
    /// network have them.
    fn status_of(
        &self,
        id: &str,
        spec: ContainerSpec,
        pid: u32,
        started_at: SystemTime,
        exit: Option<ExitRecord>,
    ) -> ContainerStatus {
        let ports = state::host_port_bindings(&spec, &self.host_ip.to_string());
        state::status(id, spec, pid, started_at, exit, ports)
    }

    /// The status of a sandbox whose container was never created: it
    /// never ran, so it has exited, with no exit code.
    fn sandbox_status(&self, id: &str, sandbox: &api::PodSandbox) -> Result<ContainerStatus> {
        let spec = config::spec_from(
            &sandbox.annotations,
            id,
            &format!("runtime sandbox {}", sandbox.id),
        )?;
        let created = from_nanos(sandbox.created_at).unwrap_or(SystemTime::UNIX_EPOCH);
        let exit = ExitRecord {
            exit_code: None,
            signal: None,
            oom_killed: false,
            finished_at: created,
        };
        Ok(self.status_of(id, spec, 0, created, Some(exit)))
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        if let Some(found) = self.current(id).await? {
            return self.describe(id, &found.container_id).await;
        }
        match self.sandboxes(Some(id)).await?.first() {
            Some(sandbox) => self.sandbox_status(id, sandbox),
            None => Err(Error::ContainerNotFound(id.to_string())),
        }
    }

    /// Makes sure the runtime has `image`, pulled as `container`'s
    /// `imagePullPolicy` says (with its registry login, if any).
    async fn ensure_image(
        &self,
        container: &ContainerSpec,
        image: &str,
        sandbox: &PodSandboxConfig,
    ) -> Result<()> {
        let id = container.id.as_str();
        let spec = ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        let present = container.pull_policy != c4m_core::PullPolicy::Always
            && self
                .images
                .clone()
                .image_status(ImageStatusRequest {
                    image: Some(spec.clone()),
                    verbose: false,
                })
                .await
                .map_err(|e| call_error(id, &format!("ImageStatus {image}"), &e))?
                .into_inner()
                .image
                .is_some();
        if present {
            return Ok(());
        }
        if container.pull_policy == c4m_core::PullPolicy::Never {
            return Err(Error::ImageNeverPull {
                reference: image.to_string(),
            });
        }
        let auth = container
            .pull_credentials
            .as_ref()
            .map(|login| api::AuthConfig {
                username: login.username.clone(),
                password: login.password.clone(),
                ..Default::default()
            });
        self.images
            .clone()
            .pull_image(PullImageRequest {
                image: Some(spec),
                auth,
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map_err(|e| match e.code() {
                // The runtime itself did not answer: not the image's fault.
                tonic::Code::Unavailable => {
                    runtime_error(id, format!("pulling image {image}: {}", e.message()))
                }
                // The kubelet's ErrImagePull, then ImagePullBackOff.
                _ => Error::Image {
                    reference: image.to_string(),
                    source: format!("not on this node and pulling it failed: {}", e.message())
                        .into(),
                },
            })?;
        Ok(())
    }

    /// A ready sandbox for `spec`; stale ones (stopped, or made for a
    /// container of other privileges, which the runtime would refuse in
    /// it) are removed, and a new one is made when none is left. Whether it
    /// is new, with its id.
    async fn sandbox(
        &self,
        spec: &ContainerSpec,
        config: &PodSandboxConfig,
    ) -> Result<(String, bool)> {
        let id = spec.id.as_str();
        let mut ready = None;
        for sandbox in self.sandboxes(Some(id)).await? {
            let fits = sandbox.state == i32::from(PodSandboxState::SandboxReady)
                && config::spec_from(&sandbox.annotations, id, "sandbox")
                    .is_ok_and(|made_for| made_for.privileged == spec.privileged);
            if ready.is_none() && fits {
                ready = Some(sandbox.id);
            } else {
                self.remove_sandbox(id, &sandbox.id).await?;
            }
        }
        if let Some(ready) = ready {
            return Ok((ready, false));
        }
        tokio::fs::create_dir_all(&config.log_directory)
            .await
            .map_err(|e| Error::io(format!("create {}", config.log_directory), e))?;
        let sandbox_id = self
            .runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| call_error(id, "RunPodSandbox", &e))?
            .into_inner()
            .pod_sandbox_id;
        Ok((sandbox_id, true))
    }

    /// Stops and removes sandbox `sandbox_id` (of `id`) with its
    /// containers; one already gone is fine.
    async fn remove_sandbox(&self, id: &str, sandbox_id: &str) -> Result<()> {
        let mut runtime = self.runtime();
        let sandbox = || sandbox_id.to_string();
        let stopped = runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox(),
            })
            .await;
        unless_gone(id, "StopPodSandbox", stopped)?;
        let removed = runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox(),
            })
            .await;
        unless_gone(id, "RemovePodSandbox", removed)
    }

    async fn remove_container(&self, id: &str, container_id: &str) -> Result<()> {
        let removed = self
            .runtime()
            .remove_container(RemoveContainerRequest {
                container_id: container_id.to_string(),
            })
            .await;
        unless_gone(id, "RemoveContainer", removed)
    }

    /// Creates and starts the container in `sandbox_id`.
    async fn run_container(
        &self,
        spec: &ContainerSpec,
        image: &str,
        attempt: u32,
        sandbox_id: &str,
        sandbox: &PodSandboxConfig,
    ) -> Result<()> {
        let id = spec.id.as_str();
        let config = config::container_config(spec, image, attempt, self.swap_accounting)?;
        let container_id = self
            .runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map_err(|e| call_error(id, "CreateContainer", &e))?
            .into_inner()
            .container_id;
        if let Err(e) = self
            .runtime()
            .start_container(StartContainerRequest {
                container_id: container_id.clone(),
            })
            .await
        {
            if let Err(cleanup) = self.remove_container(id, &container_id).await {
                tracing::warn!(container = %id, error = %cleanup, "cleanup after a failed start");
            }
            return Err(call_error(id, "StartContainer", &e));
        }
        Ok(())
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        crate::refuse_unsupported("cri", spec, true, false)?;
        let id = spec.id.as_str();
        let log_dir = self.log_dir(id)?;
        let image = spec
            .image
            .as_deref()
            .ok_or_else(|| runtime_error(id, "the cri driver needs an image"))?;
        let _guard = self.locks.hold(id).await;
        let previous = self.containers(Some(id)).await?;
        if previous
            .iter()
            .any(|c| c.state == i32::from(api::ContainerState::ContainerRunning))
        {
            return Err(runtime_error(id, "already running"));
        }
        let sandbox_config = config::sandbox_config(spec, &log_dir)?;
        // The image first: a missing one leaves no sandbox behind.
        self.ensure_image(spec, image, &sandbox_config).await?;
        let (sandbox_id, new_sandbox) = self.sandbox(spec, &sandbox_config).await?;
        // A restart replaces the exited container in the same sandbox (the
        // log file goes on).
        let attempt = previous
            .iter()
            .filter_map(|c| c.metadata.as_ref())
            .map(|m| m.attempt + 1)
            .max()
            .unwrap_or(0);
        for container in &previous {
            self.remove_container(id, &container.id).await?;
        }
        if let Err(e) = self
            .run_container(spec, image, attempt, &sandbox_id, &sandbox_config)
            .await
        {
            if new_sandbox && let Err(cleanup) = self.remove_sandbox(id, &sandbox_id).await {
                tracing::warn!(container = %id, error = %cleanup, "cleanup after a failed start");
            }
            return Err(e);
        }
        self.status(id).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(found) = self.current(id).await? else {
            // Known (a sandbox without its container) or not found.
            return self.status(id).await.map(drop);
        };
        if !found.running {
            return Ok(());
        }
        self.runtime()
            .stop_container(StopContainerRequest {
                container_id: found.container_id,
                timeout: ceil_seconds(grace),
            })
            .await
            .map_err(|e| call_error(id, "StopContainer", &e))?;
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let log_dir = self.log_dir(id)?;
        for sandbox in self.sandboxes(Some(id)).await? {
            self.remove_sandbox(id, &sandbox.id).await?;
        }
        // Containers whose sandbox went without them.
        for container in self.containers(Some(id)).await? {
            self.remove_container(id, &container.id).await?;
        }
        state::remove_path(&log_dir).await
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        let found = self.current_existing(id).await?;
        let pid = match self.describe(id, &found.container_id).await?.state {
            c4m_core::ContainerState::Running { pid, .. } => pid,
            c4m_core::ContainerState::Exited { .. } => 0,
        };
        let stats = self
            .runtime()
            .container_stats(ContainerStatsRequest {
                container_id: found.container_id,
            })
            .await
            .map_err(|e| call_error(id, "ContainerStats", &e))?
            .into_inner()
            .stats
            .unwrap_or_default();
        let value = |v: Option<api::UInt64Value>| v.map_or(0, |v| v.value);
        Ok(ResourceUsage {
            cpu_nanos: value(stats.cpu.and_then(|cpu| cpu.usage_core_nano_seconds)),
            memory_bytes: value(stats.memory.and_then(|memory| memory.working_set_bytes)),
            // The CRI's container stats have no process count (and
            // containerd 1.6 leaves the sandbox's out): the runtime runs on
            // this node, so its cgroup says, found from the main process.
            pids: (pid > 0)
                .then(|| c4m_cgroups::pids_in_group_of(pid))
                .flatten()
                .unwrap_or(0),
        })
    }

    /// The running runtime container of `id`, for an exec of `command`.
    async fn exec_target(&self, id: &str, command: &[String]) -> Result<String> {
        if command.is_empty() {
            return Err(runtime_error(id, "exec: empty command"));
        }
        let found = self.current_existing(id).await?;
        if !found.running {
            return Err(runtime_error(id, "cannot exec: container is not running"));
        }
        Ok(found.container_id)
    }

    /// An exec through the runtime's streaming server (`Exec` gives its
    /// URL), over SPDY.
    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        let container_id = self.exec_target(id, &request.command).await?;
        let url = self
            .runtime()
            .exec(api::ExecRequest {
                container_id,
                cmd: request.command.clone(),
                tty: request.tty,
                stdin: request.stdin,
                stdout: true,
                stderr: !request.tty,
            })
            .await
            .map_err(|e| call_error(id, "Exec", &e))?
            .into_inner()
            .url;
        spdy::exec(id, &url, &request).await
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let container_id = self.exec_target(id, command).await?;
        let mut runtime = self.runtime();
        let call = runtime.exec_sync(ExecSyncRequest {
            container_id,
            cmd: command.to_vec(),
            timeout: ceil_seconds(timeout),
        });
        let timed_out =
            || runtime_error(id, format!("exec {command:?} timed out after {timeout:?}"));
        let response = match tokio::time::timeout(timeout + EXEC_SLACK, call).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) if e.code() == Code::DeadlineExceeded || e.message().contains("timeout") => {
                return Err(timed_out());
            }
            Ok(Err(e)) => return Err(call_error(id, "ExecSync", &e)),
            Ok(Ok(response)) => response.into_inner(),
        };
        Ok(ExecOutput {
            exit_code: response.exit_code,
            stdout: response.stdout,
            stderr: response.stderr,
        })
    }
}

#[async_trait]
impl state::Containers for Inner {
    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        Inner::status(self, id).await
    }
}

#[async_trait]
impl ContainerRuntime for CriRuntime {
    fn name(&self) -> &str {
        "cri"
    }

    fn version(&self) -> String {
        format!(
            "{} ({})",
            env!("CARGO_PKG_VERSION"),
            self.inner.runtime_version
        )
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        self.inner.start(spec).await
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.inner.status(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        let mut statuses: Vec<ContainerStatus> = Vec::new();
        // Newest first: the first container seen of an id is its current one.
        for container in self.inner.containers(None).await? {
            let id = container.labels[CONTAINER_LABEL].clone();
            if statuses.iter().any(|s| s.id == id) {
                continue;
            }
            match self.inner.describe(&id, &container.id).await {
                Ok(status) => statuses.push(status),
                // Removed since it was listed.
                Err(Error::ContainerNotFound(_)) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "skipping container"),
            }
        }
        // Sandboxes whose container was never created.
        for sandbox in self.inner.sandboxes(None).await? {
            let id = &sandbox.labels[CONTAINER_LABEL];
            if statuses.iter().any(|s| &s.id == id) {
                continue;
            }
            match self.inner.sandbox_status(id, &sandbox) {
                Ok(status) => statuses.push(status),
                Err(e) => tracing::warn!(container = %id, error = %e, "skipping sandbox"),
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
        let _guard = self.inner.locks.hold(id).await;
        self.inner.remove(id).await?;
        self.inner.locks.forget(id);
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        self.inner.stats(id).await
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.inner.status(id).await?;
        let path = self.inner.log_dir(id)?.join(LOG_FILE);
        k8s_file::logs(&self.inner, id, path, &options).await
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        self.inner.exec(id, command, timeout).await
    }

    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        self.inner.exec_interactive(id, request).await
    }
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("socket", &self.inner.socket)
            .field("runtime", &self.inner.runtime_version)
            .finish_non_exhaustive()
    }
}
