//! The `process` driver: containers are plain host processes (like Nomad's
//! `raw_exec`), limited by cgroups where the host allows it.
//!
//! Layout under the state directory, one directory per container:
//! `<state_dir>/<id>/state.json` (what [`ContainerRuntime::list`] rebuilds
//! everything from) and `<state_dir>/<id>/output.log` (stdout and stderr).
//! Processes run in their own process group and hold none of the agent's
//! stdio, so they outlive the agent; a new agent over the same state
//! directory re-adopts them.

pub(super) mod clock;
pub(super) mod exec;
pub(super) mod logs;
pub(super) mod procfs;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::{self, ExitRecord, Records};
use crate::{Error, Result};
use c4m_cgroups::{Cgroup, Cgroups};
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerStatus, ExecOutput, ExecRequest, ExecSession,
    LogOptions, PortBinding, PortSpec, ResourceUsage,
};

/// Runs `"$@"` once released: the agent first moves the shell into the
/// container's cgroup, then writes a line to its stdin; the shell then execs
/// the command (same pid), which is thus inside the cgroup from its first
/// instruction. The agent writes to `cgroup.procs` itself because a shell
/// already running as the container's (unprivileged) user could not. If the
/// agent dies before releasing it, `read` sees end of file and nothing runs.
const GATE_SCRIPT: &str = r#"read -r _ || exit 125; exec "$@" </dev/null"#;
/// The gate of an interactive exec: the command keeps the stdin pipe, on
/// which the caller's input follows the release line.
const GATE_SCRIPT_STDIN: &str = r#"read -r _ || exit 125; exec "$@""#;
/// The gate of an exec on a terminal: stdout is the terminal; once
/// released, the command gets it as stdin too and `setsid -c` (util-linux)
/// makes it the controlling terminal of a new session, so the line
/// discipline signals (^C) and resizes (SIGWINCH) reach the command.
const GATE_SCRIPT_TTY: &str = r#"read -r _ || exit 125; exec setsid -c -- "$@" <&1"#;
/// `$0` of the gate shell, as its own error messages show it.
const GATE_NAME: &str = "c4m-start";
/// `PATH` of a container that sets none, when the agent has none either
/// (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long `stop` waits for a process to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often exits of processes that are not our children are polled.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// The `process` driver. See the module docs.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: PathBuf,
    host_ip: IpAddr,
    /// `None` when the host's cgroups are unusable; limits are then not
    /// enforced.
    cgroups: Option<Cgroups>,
    /// Serializes spawning and read-modify-write of state files.
    state_lock: tokio::sync::Mutex<()>,
    /// Exit watchers of the processes this runtime spawned, by container id.
    watchers: Mutex<HashMap<String, Watcher>>,
    /// The log clock's task (see `clock.rs`), started on first use.
    clock: clock::ClockTask,
}

/// A task waiting for one child to exit.
struct Watcher {
    pid: u32,
    /// Becomes `true` once the exit is recorded in the state file.
    exited: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    spec: ContainerSpec,
    ports: Vec<PortBinding>,
    pid: u32,
    /// `/proc/<pid>/stat` start time: a pid with another start time is a
    /// different process that reused the pid.
    start_ticks: u64,
    started_at: SystemTime,
    /// The cgroup's OOM-kill counter when this run started.
    oom_kills_at_start: Option<u64>,
    exit: Option<ExitRecord>,
}

impl ProcessRuntime {
    /// A driver keeping its state under `state_dir` (created if missing) and
    /// binding container ports on `host_ip`. Without usable cgroups (not
    /// root, no writable hierarchy) it runs containers without limits and
    /// warns once.
    pub fn new(state_dir: PathBuf, host_ip: IpAddr) -> Result<Self> {
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| Error::io(format!("create state dir {}", state_dir.display()), e))?;
        let cgroups = match Cgroups::detect() {
            Ok(cgroups) => Some(cgroups),
            Err(e) => {
                tracing::warn!(error = %e, "cgroups unavailable: the process driver will not enforce resource limits");
                None
            }
        };
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                state_dir,
                host_ip,
                cgroups,
                state_lock: tokio::sync::Mutex::new(()),
                watchers: Mutex::new(HashMap::new()),
                clock: clock::ClockTask::default(),
            }),
        })
    }

    /// Whether this driver enforces resource limits (it found usable cgroups).
    pub fn enforces_limits(&self) -> bool {
        self.inner.cgroups.is_some()
    }

    /// Starts the log clock unless it runs. Called from async code only
    /// (`new` may run outside a tokio runtime).
    fn ensure_clock(&self) {
        self.inner
            .clock
            .ensure(Arc::downgrade(&self.inner), self.inner.state_dir.clone());
    }

    /// Starts a watcher recording the exit of `child`, our own child.
    fn watch_child(&self, id: &str, pid: u32, start_ticks: u64, mut child: Child) {
        let (exited_tx, exited_rx) = watch::channel(false);
        // Weak: a watcher must not keep a dropped runtime alive (Drop aborts
        // the watchers).
        let inner = Arc::downgrade(&self.inner);
        let task_id = id.to_string();
        let task = tokio::spawn(async move {
            let status = child.wait().await;
            if let Some(inner) = Weak::upgrade(&inner)
                && let Err(e) = inner.record_exit(&task_id, pid, start_ticks, status).await
            {
                tracing::warn!(container = %task_id, error = %e, "could not record exit");
            }
            let _ = exited_tx.send(true);
        });
        let watcher = Watcher {
            pid,
            exited: exited_rx,
            task,
        };
        if let Some(old) = self.inner.watchers().insert(id.to_string(), watcher) {
            old.task.abort();
        }
    }
}

impl state::Records for Inner {
    type Record = Record;

    fn records_dir(&self) -> &Path {
        &self.state_dir
    }
}

#[async_trait]
impl state::Containers for Inner {
    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        Inner::status(self, id).await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for watcher in self.watchers().values() {
            watcher.task.abort();
        }
    }
}

impl Inner {
    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watcher>> {
        // The map stays consistent even if a holder panicked.
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn group(&self, id: &str) -> Option<Cgroup> {
        self.cgroups.as_ref().map(|cgroups| cgroups.group(id))
    }

    /// Whether the record's process runs now.
    fn is_running(&self, id: &str, record: &Record) -> bool {
        if record.exit.is_some() {
            return false;
        }
        // Our own child: its watcher knows (and records the exit code).
        if let Some(watcher) = self.watchers().get(id).filter(|w| w.pid == record.pid) {
            return !*watcher.exited.borrow();
        }
        procfs::is_alive(record.pid, record.start_ticks)
    }

    fn oom_killed(&self, id: &str, record: &Record) -> bool {
        let now = self.group(id).and_then(|group| group.oom_kills());
        matches!((record.oom_kills_at_start, now), (Some(before), Some(now)) if now > before)
    }

    /// Brings the record up to date: a process that ended while nobody
    /// watched it (an adopted one) gets its exit recorded, with an unknown
    /// exit code, so that `finished_at` stays put.
    async fn observe(&self, id: &str, record: Record) -> Result<Record> {
        if record.exit.is_some() || self.is_running(id, &record) {
            return Ok(record);
        }
        let _guard = self.state_lock.lock().await;
        let Some(mut current) = self.load(id).await? else {
            return Err(Error::ContainerNotFound(id.to_string()));
        };
        if current.exit.is_none() && same_run(&current, &record) {
            current.exit = Some(ExitRecord {
                exit_code: None,
                signal: None,
                oom_killed: self.oom_killed(id, &current),
                finished_at: SystemTime::now(),
            });
            self.save(id, &current).await?;
        }
        Ok(current)
    }

    /// Records how our child `pid` ended, unless the container has moved on
    /// (removed, or restarted as another process).
    async fn record_exit(
        &self,
        id: &str,
        pid: u32,
        start_ticks: u64,
        status: std::io::Result<ExitStatus>,
    ) -> Result<()> {
        let _guard = self.state_lock.lock().await;
        let Some(mut record) = self.load(id).await? else {
            return Ok(());
        };
        if record.exit.is_some() || record.pid != pid || record.start_ticks != start_ticks {
            return Ok(());
        }
        let (exit_code, signal) = match status {
            Ok(status) => exit_code_and_signal(status),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "could not wait for container process");
                (None, None)
            }
        };
        record.exit = Some(ExitRecord {
            exit_code,
            signal,
            oom_killed: self.oom_killed(id, &record),
            finished_at: SystemTime::now(),
        });
        self.save(id, &record).await
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        Ok(to_status(id, record))
    }

    /// Waits up to `timeout` for the record's process to end; whether it did.
    async fn wait_for_exit(&self, id: &str, record: &Record, timeout: Duration) -> bool {
        let watcher = self
            .watchers()
            .get(id)
            .filter(|w| w.pid == record.pid)
            .map(|w| w.exited.clone());
        if let Some(mut exited) = watcher {
            return tokio::time::timeout(timeout, exited.wait_for(|done| *done))
                .await
                .is_ok();
        }
        let deadline = Instant::now() + timeout;
        loop {
            if !procfs::is_alive(record.pid, record.start_ticks) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// SIGKILLs every process left in the container's cgroup.
    /// Kills every process in the container's cgroup and waits (up to
    /// [`KILL_WAIT`]) until the kernel has taken them all out of it: a
    /// killed process stays listed until it has fully exited, and one forked
    /// mid-kill needs another signal.
    async fn kill_cgroup(&self, id: &str) {
        let Some(group) = self.group(id) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            let pids = match group.pids() {
                Ok(pids) => pids,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "could not list cgroup processes");
                    return;
                }
            };
            if pids.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(container = %id, ?pids, "processes still in the cgroup after SIGKILL");
                return;
            }
            for pid in pids {
                signal_process(pid, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        let was_running = record.exit.is_none();
        if was_running {
            signal_group(record.pid, Signal::SIGTERM);
            if !self.wait_for_exit(id, &record, grace).await {
                signal_group(record.pid, Signal::SIGKILL);
            }
        }
        // Children the main process left behind go too, as a container's do.
        self.kill_cgroup(id).await;
        if was_running && !self.wait_for_exit(id, &record, KILL_WAIT).await {
            return Err(Error::Runtime {
                id: id.to_string(),
                message: format!("process {} did not exit after SIGKILL", record.pid),
            });
        }
        self.observe(id, record).await.map(drop)
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id)?;
        match self.load(id).await {
            Ok(Some(_)) => self.stop(id, Duration::ZERO).await?,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "removing a container whose state is unreadable")
            }
        }
        if let Some(group) = self.group(id) {
            self.kill_cgroup(id).await;
            group.remove().await?;
        }
        let _guard = self.state_lock.lock().await;
        if let Some(watcher) = self.watchers().remove(id) {
            watcher.task.abort();
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Spawns `argv` as the container (`spec`, `ports`) would run it: its
    /// environment, working directory and user, in its cgroup, in a process
    /// group (with a terminal: a session) of its own. The caller sets up
    /// stdout and stderr; `stdin` says what the command reads.
    async fn spawn_in_container(
        &self,
        spec: &ContainerSpec,
        ports: &[PortBinding],
        argv: &[String],
        stdin: GatedStdin,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Child> {
        let runtime_error = |message: String| Error::Runtime {
            id: spec.id.clone(),
            message,
        };
        if argv.is_empty() {
            return Err(no_command(&spec.id));
        }
        let script = match stdin {
            GatedStdin::Null => GATE_SCRIPT,
            GatedStdin::Piped => GATE_SCRIPT_STDIN,
            GatedStdin::Terminal => GATE_SCRIPT_TTY,
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .arg(GATE_NAME)
            .args(argv)
            .env_clear()
            .envs(container_env(spec, ports))
            .current_dir(spec.working_dir.as_deref().unwrap_or(Path::new("/")))
            .stdin(Stdio::piped());
        // `setsid` makes its own session (and group), which it can only do
        // in a process that does not lead a group already.
        if stdin != GatedStdin::Terminal {
            command.process_group(0);
        }
        if let Some(uid) = spec.user {
            command.uid(uid);
        }
        if let Some(gid) = spec.group {
            command.gid(gid);
        }
        configure(&mut command);
        let mut child = command.spawn().map_err(|e| {
            let dir = spec.working_dir.as_deref().unwrap_or(Path::new("/"));
            Error::container(&spec.id, format!("spawn {argv:?} in {}", dir.display()), e)
        })?;
        let released = async {
            let pid = child
                .id()
                .ok_or_else(|| runtime_error("process ended before it started".into()))?;
            if let Some(group) = self.group(&spec.id) {
                group.add_process(pid)?;
            }
            let mut gate = child
                .stdin
                .take()
                .ok_or_else(|| runtime_error("no stdin pipe to release the process".into()))?;
            gate.write_all(b"go\n")
                .await
                .map_err(|e| Error::container(&spec.id, format!("release process {pid}"), e))?;
            Ok(gate)
        }
        .await;
        match released {
            Ok(gate) if stdin == GatedStdin::Piped => child.stdin = Some(gate),
            Ok(_) => {}
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e);
            }
        }
        Ok(child)
    }

    /// The record of a running container, for an exec.
    async fn running(&self, id: &str) -> Result<Record> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        if record.exit.is_some() {
            return Err(Error::Runtime {
                id: id.to_string(),
                message: "cannot exec: container is not running".into(),
            });
        }
        Ok(record)
    }

    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput> {
        let record = self.running(id).await?;
        let child = self
            .spawn_in_container(
                &record.spec,
                &record.ports,
                argv,
                GatedStdin::Null,
                |command| {
                    command
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .kill_on_drop(true);
                },
            )
            .await?;
        let pid = child.id();
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => Ok(ExecOutput {
                exit_code: output.status.code().unwrap_or(-1),
                stdout: output.stdout,
                stderr: output.stderr,
            }),
            Ok(Err(e)) => Err(Error::container(id, format!("exec {argv:?}: wait"), e)),
            Err(_) => {
                // Dropping the child killed its main process; its own
                // children go with the group.
                if let Some(pid) = pid {
                    signal_group(pid, Signal::SIGKILL);
                }
                Err(Error::Runtime {
                    id: id.to_string(),
                    message: format!("exec {argv:?} timed out after {timeout:?}"),
                })
            }
        }
    }
}

/// What a spawned command reads once its gate opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatedStdin {
    /// Nothing (`/dev/null`).
    Null,
    /// The pipe the gate was opened through (left in `Child::stdin`).
    Piped,
    /// Its stdout, a terminal, which also becomes its controlling terminal.
    Terminal,
}

fn no_command(id: &str) -> Error {
    Error::Runtime {
        id: id.to_string(),
        message: "no command (the process driver has no image to take one from)".into(),
    }
}

/// Whether two records describe the same run of a container.
fn same_run(a: &Record, b: &Record) -> bool {
    a.pid == b.pid && a.start_ticks == b.start_ticks
}

fn to_status(id: &str, record: Record) -> ContainerStatus {
    state::status(
        id,
        record.spec,
        record.pid,
        record.started_at,
        record.exit,
        record.ports,
    )
}

/// A signal death is reported as exit code 128 + signal, as shells and
/// Kubernetes do, with the signal alongside.
fn exit_code_and_signal(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None),
        (None, Some(signal)) => (Some(128 + signal), Some(signal)),
        (None, None) => (None, None),
    }
}

/// The container's environment: the agent's `PATH` (these are host
/// processes, which find host programs as the agent does), the spec's
/// variables, then the port variables. Port variables win: the process
/// shares the host's network, so it must listen on the allocated host port.
/// Nothing else of the agent's environment leaks in.
fn container_env(spec: &ContainerSpec, ports: &[PortBinding]) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    let mut env = vec![("PATH".to_string(), path)];
    env.extend(spec.env.iter().cloned());
    if let Some(first) = ports.first() {
        env.push(("PORT".into(), first.host_port.to_string()));
    }
    for port in ports.iter().filter(|p| !p.name.is_empty()) {
        let name = port.name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("C4M_PORT_{name}"), port.host_port.to_string()));
    }
    env
}

/// A host port for each declared port. A port declared as before (same
/// name, container port and protocol) keeps its host port, so a restarted
/// container keeps its address; others get a free port from the kernel.
fn allocate_ports(
    host_ip: IpAddr,
    declared: &[PortSpec],
    previous: &[PortBinding],
) -> std::io::Result<Vec<PortBinding>> {
    // Sockets stay open until every port is chosen, so no port is handed
    // out twice.
    let mut reserved: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut bindings = Vec::with_capacity(declared.len());
    for port in declared {
        let kept = previous.iter().find(|b| {
            b.name == port.name
                && b.container_port == port.container_port
                && b.protocol == port.protocol
        });
        let host_port = match kept {
            Some(binding) => binding.host_port,
            None if port.protocol.eq_ignore_ascii_case("UDP") => {
                let socket = UdpSocket::bind((host_ip, 0))?;
                let port = socket.local_addr()?.port();
                reserved.push(Box::new(socket));
                port
            }
            None => {
                let listener = TcpListener::bind((host_ip, 0))?;
                let port = listener.local_addr()?.port();
                reserved.push(Box::new(listener));
                port
            }
        };
        bindings.push(PortBinding {
            name: port.name.clone(),
            container_port: port.container_port,
            host_ip: host_ip.to_string(),
            host_port,
            protocol: port.protocol.clone(),
        });
    }
    Ok(bindings)
}

/// A pid from a state or cgroup file, if it is safe to signal: never 0 or
/// 1 (0 would mean our own process group) and never ourselves.
fn signalable(pid: u32) -> Option<nix::unistd::Pid> {
    let raw = i32::try_from(pid).ok().filter(|&p| p > 1)?;
    (pid != std::process::id()).then(|| nix::unistd::Pid::from_raw(raw))
}

/// Signals the process group led by `pid` (containers run in their own).
fn signal_group(pid: u32, signal: Signal) {
    let Some(pid) = signalable(pid) else { return };
    if let Err(e) = nix::sys::signal::killpg(pid, signal)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(%pid, ?signal, error = %e, "could not signal process group");
    }
}

fn signal_process(pid: u32, signal: Signal) {
    let Some(pid) = signalable(pid) else { return };
    if let Err(e) = nix::sys::signal::kill(pid, signal)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(%pid, ?signal, error = %e, "could not signal process");
    }
}

#[async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn name(&self) -> &str {
        "process"
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// A pod's processes share the node's network, so each other's
    /// `localhost`.
    fn runs_several_containers_per_pod(&self) -> bool {
        true
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        crate::refuse_unsupported("process", spec, false, false)?;
        self.ensure_clock();
        let inner = &*self.inner;
        let id = spec.id.as_str();
        let dir = inner.container_dir(id)?;
        let runtime_error = |message: String| Error::Runtime {
            id: id.to_string(),
            message,
        };
        let argv: Vec<String> = spec.command.iter().chain(&spec.args).cloned().collect();
        if spec.command.is_empty() {
            return Err(no_command(id));
        }
        let _guard = inner.state_lock.lock().await;
        let previous = match inner.load(id).await {
            Ok(previous) => previous,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "ignoring unreadable previous state");
                None
            }
        };
        if let Some(previous) = &previous
            && inner.is_running(id, previous)
        {
            return Err(runtime_error(format!(
                "already running as pid {}",
                previous.pid
            )));
        }
        let previous_ports = previous.as_ref().map_or(&[][..], |p| &p.ports[..]);
        let ports = allocate_ports(inner.host_ip, &spec.ports, previous_ports).map_err(|e| {
            Error::container(id, format!("allocate host ports on {}", inner.host_ip), e)
        })?;
        let group = inner.group(id);
        if let Some(group) = &group {
            group.create(&spec.resources)?;
        }
        let oom_kills_at_start = group.as_ref().and_then(Cgroup::oom_kills);

        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let log_path = dir.join("output.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("open {}", log_path.display()), e))?;
        let log_for_stderr = log
            .try_clone()
            .map_err(|e| Error::io(format!("duplicate {}", log_path.display()), e))?;

        let started_at = SystemTime::now();
        let child = inner
            .spawn_in_container(spec, &ports, &argv, GatedStdin::Null, |command| {
                command.stdout(log).stderr(log_for_stderr);
            })
            .await?;
        let identity = child
            .id()
            .and_then(|pid| procfs::stat(pid).map(|stat| (pid, stat.start_ticks)));
        let Some((pid, start_ticks)) = identity else {
            // Exited and reaped already cannot be: we have not waited yet.
            return Err(runtime_error("cannot read the new process in /proc".into()));
        };
        let record = Record {
            spec: spec.clone(),
            ports,
            pid,
            start_ticks,
            started_at,
            oom_kills_at_start,
            exit: None,
        };
        if let Err(e) = inner.save(id, &record).await {
            // Without state the process could never be found again.
            signal_group(pid, Signal::SIGKILL);
            return Err(e);
        }
        self.watch_child(id, pid, start_ticks, child);
        Ok(to_status(id, record))
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.inner.status(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        // Containers adopted from an earlier agent get their output stamped.
        self.ensure_clock();
        state::list(&*self.inner, &self.inner.state_dir).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        self.inner.stop(id, grace).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.inner.remove(id).await
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        let record = self.inner.load_existing(id).await?;
        if let Some(group) = self.inner.group(id) {
            return Ok(group.usage()?);
        }
        Ok(if self.inner.is_running(id, &record) {
            procfs::usage(record.pid)
        } else {
            ResourceUsage::default()
        })
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.inner.load_existing(id).await?;
        self.ensure_clock();
        let dir = self.inner.container_dir(id)?;
        state::clocked_logs(&self.inner, id, &dir, &options).await
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        self.inner.exec(id, command, timeout).await
    }

    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        self.inner.exec_interactive(id, request).await
    }
}
