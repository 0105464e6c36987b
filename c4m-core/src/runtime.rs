//! The container runtime seam: what the agent asks of a driver.
//!
//! A driver runs *containers* described by a [`ContainerSpec`], which the
//! agent derives from an instance (a Pod-shaped object) with
//! [`ContainerSpec::from_pod`]. Drivers own the processes they start and keep
//! enough state on disk that a restarted agent can find them again
//! ([`ContainerRuntime::list`]) instead of starting duplicates.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, Result};

pub mod mounts;
mod spec;

pub use spec::PodContainer;

/// Everything a driver needs to start one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique, file-name-safe id of the container on this node.
    pub id: String,
    /// Image reference; drivers that run host processes ignore it.
    pub image: Option<String>,
    /// Entrypoint (the Pod's `command`).
    pub command: Vec<String>,
    /// Arguments (the Pod's `args`).
    pub args: Vec<String>,
    /// Environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<PathBuf>,
    /// Numeric user id to run as.
    pub user: Option<u32>,
    /// Numeric group id to run as.
    pub group: Option<u32>,
    /// Declared ports; drivers map each to a host port.
    pub ports: Vec<PortSpec>,
    /// Resource requests and limits, in integer units.
    pub resources: ResourceLimits,
    /// An existing network namespace (`/var/run/netns/...`) for the container
    /// to join; `None` gives it a new one with only loopback. Drivers that
    /// run host processes ignore it.
    #[serde(default)]
    pub network_namespace: Option<PathBuf>,
    /// An existing IPC namespace to join (`/proc/<pid>/ns/ipc` of the
    /// pod's namespace holder), so that the pod's containers share System V
    /// IPC as Kubernetes' do; `None` gives it a new one. Drivers that run
    /// host processes ignore it.
    #[serde(default)]
    pub ipc_namespace: Option<PathBuf>,
    /// An existing PID namespace to join (`/proc/<pid>/ns/pid` of the pod's
    /// holder, whose process is its PID 1): the pod's containers see each
    /// other's processes (`shareProcessNamespace: true`). `None` gives it a
    /// new one, where its own process is PID 1.
    #[serde(default)]
    pub pid_namespace: Option<PathBuf>,
    /// A directory to bind at `/dev/shm` (the pod's, so that its containers
    /// share POSIX shared memory as they share System V IPC); `None` gives
    /// the container a tmpfs of its own there.
    #[serde(default)]
    pub shm: Option<PathBuf>,
    /// Run with every capability, no seccomp filter and unmasked `/proc`
    /// (the Pod's `securityContext.privileged`). Only when asked explicitly.
    #[serde(default)]
    pub privileged: bool,
    /// Mount the image's root file system read-only
    /// (`securityContext.readOnlyRootFilesystem`).
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// A `resolv.conf` to mount at `/etc/resolv.conf` (the agent writes one
    /// naming the instance's VPC gateway as its DNS server); drivers that
    /// run host processes ignore it.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// The container's host name (the instance's name, as Kubernetes gives
    /// a Pod its name); `None` leaves it to the driver (the id). Drivers
    /// that run host processes ignore it.
    #[serde(default)]
    pub hostname: Option<String>,
    /// A hosts file to mount at `/etc/hosts` (the kubelet's managed one,
    /// [`crate::pod_etc::hosts_file`]); drivers that run host processes
    /// ignore it.
    #[serde(default)]
    pub hosts_file: Option<PathBuf>,
    /// A file holding the host name, to mount at `/etc/hostname`.
    #[serde(default)]
    pub hostname_file: Option<PathBuf>,
    /// A host file to bind-mount writable at a path inside the container:
    /// its `terminationMessagePath`, which the agent reads when it ends (as
    /// the kubelet does). Drivers that run host processes ignore it.
    pub termination_message: Option<(PathBuf, PathBuf)>,
    /// When to pull the image (`imagePullPolicy`, defaulted as Kubernetes
    /// does: see [`PullPolicy::of`]).
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// The login for the image's registry, from the pod's
    /// `imagePullSecrets`. Never written to disk with the spec.
    #[serde(skip)]
    pub pull_credentials: Option<RegistryLogin>,
    /// Keep the main process's standard input open for attaching
    /// (`stdin: true`); without it, it reads end of file.
    #[serde(default)]
    pub stdin: bool,
    /// Close that standard input when the first attached client detaches
    /// (`stdinOnce: true`, as `kubectl run -i` asks).
    #[serde(default)]
    pub stdin_once: bool,
    /// Node directories and files bound into the container (its
    /// `volumeMounts`, resolved by the agent to paths on the node), in
    /// order; a mount under another's destination comes after it. The
    /// `process` driver cannot honour any and refuses the spec.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// A directory on a sized file system holding the container's writable
    /// layer (overlay `upper/` and `work/`), so that its writes stop at the
    /// size (`resources.limits.ephemeral-storage`); `None`: the driver's
    /// own, unbounded. Only the `oci` and `containerd` drivers honour it.
    #[serde(default)]
    pub writable_layer: Option<PathBuf>,
}

/// A node path bound into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The node's directory or file.
    pub source: PathBuf,
    /// Where the container sees it (absolute).
    pub destination: PathBuf,
    /// Mounted read-only (`readOnly: true`).
    #[serde(default)]
    pub read_only: bool,
    /// How mounts below it propagate (`mountPropagation`).
    #[serde(default)]
    pub propagation: MountPropagation,
}

/// A volume mount's `mountPropagation`, Kubernetes' names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPropagation {
    /// No propagation either way (`rprivate`), the default.
    #[default]
    None,
    /// Mounts made on the node later show in the container (`rslave`).
    HostToContainer,
    /// And mounts the container makes show on the node (`rshared`); for
    /// privileged containers only.
    Bidirectional,
}

impl MountPropagation {
    /// The mode `value` names (`None` when absent); an unknown one is
    /// refused with the reason.
    pub fn of(value: Option<&str>) -> std::result::Result<MountPropagation, String> {
        match value.filter(|v| !v.is_empty()) {
            None | Some("None") => Ok(MountPropagation::None),
            Some("HostToContainer") => Ok(MountPropagation::HostToContainer),
            Some("Bidirectional") => Ok(MountPropagation::Bidirectional),
            Some(other) => Err(format!(
                "{other:?} is not one of None, HostToContainer, Bidirectional"
            )),
        }
    }

    /// The Linux mount option (`rprivate`, `rslave`, `rshared`).
    pub fn linux_option(self) -> &'static str {
        match self {
            MountPropagation::None => "rprivate",
            MountPropagation::HostToContainer => "rslave",
            MountPropagation::Bidirectional => "rshared",
        }
    }
}

impl ContainerSpec {
    /// The spec's mounts in the order to mount them: parents before what
    /// is mounted below them (by the number of path components of the
    /// destination; the pod's order otherwise), as Docker orders them.
    pub fn ordered_mounts(&self) -> Vec<&Mount> {
        let mut mounts: Vec<&Mount> = self.mounts.iter().collect();
        mounts.sort_by_key(|m| m.destination.components().count());
        mounts
    }
}

/// When a driver pulls a container's image (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Pull every time the container starts.
    Always,
    /// Pull only when the node lacks the image.
    #[default]
    IfNotPresent,
    /// Never pull: a missing image is `ErrImageNeverPull`.
    Never,
}

impl PullPolicy {
    /// The policy a container asks for (`policy`), or Kubernetes' default
    /// for `image`: `Always` when its tag is `latest` or it has neither tag
    /// nor digest, else `IfNotPresent`. An unknown policy is refused, with
    /// the reason.
    pub fn of(
        policy: Option<&str>,
        image: Option<&str>,
    ) -> std::result::Result<PullPolicy, String> {
        match policy.filter(|p| !p.is_empty()) {
            Some("Always") => Ok(PullPolicy::Always),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Never") => Ok(PullPolicy::Never),
            Some(other) => Err(format!(
                "{other:?} is not one of Always, IfNotPresent, Never"
            )),
            None => {
                let latest = image
                    .and_then(|image| crate::Reference::parse(image).ok())
                    .is_some_and(|r| match r.tag.as_deref() {
                        Some(tag) => tag == "latest",
                        None => r.digest.is_none(),
                    });
                Ok(if latest {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                })
            }
        }
    }
}

/// A user name and password for a registry (from a
/// `kubernetes.io/dockerconfigjson` Secret). Its `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A port the container listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port name (may be empty).
    pub name: String,
    /// Port inside the container.
    pub container_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

/// Requests and limits, integers only (millicores and bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// CPU request in millicores (drives CPU shares / weight).
    pub cpu_request_millis: u64,
    /// CPU limit in millicores (drives the CFS quota), if any.
    pub cpu_limit_millis: Option<u64>,
    /// Memory request in bytes.
    pub memory_request_bytes: u64,
    /// Memory limit in bytes, if any.
    pub memory_limit_bytes: Option<u64>,
}

/// Where a declared port is reachable from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Port name (may be empty).
    pub name: String,
    /// Port inside the container.
    pub container_port: u16,
    /// Host address the port is reachable at.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

/// What a container is doing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// The container's main process runs.
    Running {
        /// Host pid of the main process.
        pid: u32,
        /// When the process started.
        started_at: SystemTime,
    },
    /// The main process has ended.
    Exited {
        /// Exit code, when known (unknown if it ended while no agent watched).
        exit_code: Option<i32>,
        /// Signal that ended it, if any.
        signal: Option<i32>,
        /// The kernel's OOM killer ended it.
        oom_killed: bool,
        /// When the process started.
        started_at: SystemTime,
        /// When the end was observed.
        finished_at: SystemTime,
    },
}

/// A container as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The container id ([`ContainerSpec::id`]).
    pub id: String,
    /// The spec it was started from.
    pub spec: ContainerSpec,
    /// Running or exited.
    pub state: ContainerState,
    /// Host bindings of the declared ports.
    pub ports: Vec<PortBinding>,
}

/// Resource usage counters of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// Total CPU time consumed, in nanoseconds (monotonic counter).
    pub cpu_nanos: u64,
    /// Current memory usage in bytes.
    pub memory_bytes: u64,
    /// Number of processes/threads in the container.
    pub pids: u64,
}

/// How to read a container's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming as the container writes.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Start each line with the time it was written (RFC 3339 with
    /// nanoseconds, UTC, then a space), as Kubernetes does.
    pub timestamps: bool,
}

/// Result of a non-interactive exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code (-1 when killed by a signal).
    pub exit_code: i32,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
}

/// What an interactive exec runs, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Whether the caller sends standard input.
    pub stdin: bool,
    /// Run the command on a terminal (stdout and stderr are then both the
    /// terminal's output).
    pub tty: bool,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// Resizes the terminal of an exec.
pub type ResizeTerminal = Box<dyn Fn(TerminalSize) -> Result<()> + Send + Sync>;

/// A running interactive exec. Dropping [`ExecSession::exit`] before it
/// resolves kills the command and what it started.
pub struct ExecSession {
    /// The command's standard input, when [`ExecRequest::stdin`] was set;
    /// closing it is end of file for the command.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Standard output (the terminal's output with a TTY).
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// Standard error; `None` with a TTY.
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Resizes the terminal; `None` without a TTY.
    pub resize: Option<ResizeTerminal>,
    /// Resolves to the exit code (128 + signal when a signal ended it).
    pub exit: BoxFuture<'static, Result<i32>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("stdin", &self.stdin.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

/// A container driver: what the agent asks of `process`, `oci`, `docker`,
/// `containerd` and `cri` (the `c4m-runtime` crate), or of an embedder's own.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The driver's name as manifests select it (`process`, ...).
    fn name(&self) -> &str;

    /// The driver's version, for node fingerprints.
    fn version(&self) -> String;

    /// Whether containers of this driver join the network namespace the
    /// agent makes for them ([`ContainerSpec::network_namespace`]), so the
    /// agent attaches each to its VPC first. Drivers whose containers share
    /// the node's network (`process`) say no.
    fn takes_network_namespace(&self) -> bool {
        false
    }

    /// Whether this driver runs a pod of several containers (app, init and
    /// sidecar containers) so that they share its network: drivers that
    /// take the agent's network namespace do, each container of the pod
    /// joining the same one. The agent refuses such pods on other drivers,
    /// naming the field.
    fn runs_several_containers_per_pod(&self) -> bool {
        self.takes_network_namespace()
    }

    /// Starts a container. Starting an id whose previous process exited
    /// starts it again (a restart); starting one that runs is an error.
    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus>;

    /// The container's current status.
    async fn status(&self, id: &str) -> Result<ContainerStatus>;

    /// Every container this driver knows on this node, running or exited,
    /// including those started by an earlier agent process.
    async fn list(&self) -> Result<Vec<ContainerStatus>>;

    /// Stops the container: SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;

    /// Stops (if needed) and forgets the container, releasing its resources
    /// (cgroups, ports, state); its logs go too. Removing an unknown id is Ok.
    async fn remove(&self, id: &str) -> Result<()>;

    /// Current resource usage.
    async fn stats(&self, id: &str) -> Result<ResourceUsage>;

    /// The container's output (stdout and stderr interleaved as written).
    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes>>>;

    /// Runs a command in the container's context and waits for it.
    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput>;

    /// Starts a command in the container's context with its standard
    /// streams handed to the caller (`kubectl exec`, `c4m exec`), on a
    /// terminal when [`ExecRequest::tty`] is set. Drivers without it answer
    /// [`Error::Unsupported`].
    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        let _ = (id, request);
        Err(Error::Unsupported {
            driver: self.name().to_string(),
            operation: "interactive exec",
        })
    }

    /// Attaches to the container's main process (`kubectl attach`): its
    /// output from now on and, when it was started with one
    /// ([`ContainerSpec::stdin`]), its standard input ([`ExecRequest::command`]
    /// is empty). `exit` resolves when the process ends; dropping the
    /// session before that detaches, leaving it running. Drivers without
    /// it answer [`Error::Unsupported`].
    async fn attach(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        let _ = (id, request);
        Err(Error::Unsupported {
            driver: self.name().to_string(),
            operation: "attach",
        })
    }
}
