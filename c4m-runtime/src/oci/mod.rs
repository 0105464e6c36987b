//! The `oci` driver: real containers without a daemon. Each container's
//! root file system is an overlay of the image's read-only layers (from the
//! node's [`ImageStore`]) and a writable upper directory of its own; an OCI
//! runtime (`runc`, or `crun`) runs the spec that [`super::bundle`] builds, under
//! `conmon`, podman's per-container monitor.
//!
//! `conmon` double-forks away from the agent, holds the container's stdio,
//! writes its output with timestamps (`ctr.log`, Kubernetes' `k8s-file`
//! format) and its exit code to `exit/<id>`. So containers outlive the agent
//! and a new agent learns everything from files: nothing here watches a
//! child.
//!
//! Layout: `<data_dir>/containers/<id>/` holds `state.json`, the bundle's
//! `config.json`, `rootfs/` (the overlay mount), `upper/` and `work/`,
//! `ctr.log`, `exit/`, `pidfile`, `conmon.pid` and the runtime's error log
//! `runtime.log`; `<data_dir>/runtime/` is the OCI runtime's state root.

mod attach;
mod exec;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::k8s_file;
use crate::bundle;
use crate::process::procfs;
use crate::state::{self, ExitRecord, IdLocks, Records, blocking, remove_path, runtime_error};
use crate::{Error, Result};
use c4m_cgroups::{Cgroup, Cgroups};
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerStatus, ExecOutput, ExecRequest, ExecSession,
    LogOptions, ResourceUsage,
};
use c4m_image::ImageStore;

/// OCI runtimes in order of preference. `runc` first: Debian 12's `crun`
/// (1.8) refuses hybrid cgroup hosts (v1 plus a cgroup2 with a controller).
const RUNTIMES: [&str; 2] = ["runc", "crun"];
/// The container monitor.
const CONMON: &str = "conmon";
/// How long a start may take until the runtime has created the container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the container to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often files written by conmon are polled.
const POLL: Duration = Duration::from_millis(20);

/// The `oci` driver. See the module docs.
pub struct OciRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    containers_dir: PathBuf,
    runtime_root: PathBuf,
    runtime: PathBuf,
    conmon: PathBuf,
    images: Arc<ImageStore>,
    cgroups: Cgroups,
    swap_accounting: bool,
    /// Serializes each container's start, stop and remove (and the state
    /// file writes they make).
    locks: IdLocks,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    spec: ContainerSpec,
    /// Manifest digest of the image the container runs.
    image: String,
    /// Host pid of the container's first process.
    pid: u32,
    start_ticks: u64,
    conmon_pid: u32,
    conmon_start_ticks: u64,
    started_at: SystemTime,
    exit: Option<ExitRecord>,
}

/// The OCI runtime and conmon binaries found on `PATH`, if both are there.
pub fn find_oci_binaries() -> Option<(PathBuf, PathBuf)> {
    let runtime = RUNTIMES.iter().find_map(|name| find_in_path(name))?;
    Some((runtime, find_in_path(CONMON)?))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl OciRuntime {
    /// A driver keeping containers under `data_dir` and taking images from
    /// `images`. Fails if no OCI runtime or conmon is installed or the
    /// host's cgroups are unusable (containers need limits).
    pub fn new(data_dir: &Path, images: Arc<ImageStore>) -> Result<OciRuntime> {
        let (runtime, conmon) = find_oci_binaries().ok_or_else(|| {
            Error::Invalid(format!(
                "the oci driver needs {} and {CONMON} on PATH",
                RUNTIMES.join(" or ")
            ))
        })?;
        let containers_dir = data_dir.join("containers");
        let runtime_root = data_dir.join("runtime");
        for dir in [&containers_dir, &runtime_root] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let cgroups = Cgroups::detect()?;
        let swap_accounting = c4m_cgroups::host_accounts_swap();
        Ok(OciRuntime {
            inner: Arc::new(Inner {
                containers_dir,
                runtime_root,
                runtime,
                conmon,
                images,
                cgroups,
                swap_accounting,
                locks: IdLocks::default(),
            }),
        })
    }
}

impl Inner {
    fn group(&self, id: &str) -> Cgroup {
        self.cgroups.group(id)
    }

    /// Errors unless `command` can be exec'd in container `id` now.
    async fn check_exec(&self, id: &str, command: &[String]) -> Result<()> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        if record.exit.is_some() {
            return Err(runtime_error(id, "cannot exec: container is not running"));
        }
        if command.is_empty() {
            return Err(runtime_error(id, "exec: empty command"));
        }
        Ok(())
    }

    /// The OCI runtime with its state root.
    fn runtime_command(&self) -> Command {
        let mut command = Command::new(&self.runtime);
        command
            .arg("--root")
            .arg(&self.runtime_root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs the OCI runtime with `args`; its stderr is the error.
    async fn run_runtime(&self, id: &str, args: &[&str]) -> Result<()> {
        let output = self
            .runtime_command()
            .args(args)
            .output()
            .await
            .map_err(|e| Error::container(id, format!("run {}", self.runtime.display()), e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(runtime_error(
            id,
            format!(
                "{} {}: {}",
                self.runtime.display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }

    /// The exit code conmon wrote, and when, if the container has exited.
    fn exit_file(&self, id: &str) -> Option<(Option<i32>, SystemTime)> {
        let path = self.container_dir(id).ok()?.join("exit").join(id);
        let text = std::fs::read_to_string(&path).ok()?;
        let finished_at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Some((text.trim().parse().ok(), finished_at))
    }

    fn oom_killed(&self, id: &str) -> bool {
        let conmon_saw_it = self
            .container_dir(id)
            .is_ok_and(|dir| dir.join("persist").join("oom").exists());
        // Each run has a fresh cgroup, so any kill in it is this run's.
        conmon_saw_it || self.group(id).oom_kills().is_some_and(|kills| kills > 0)
    }

    /// Brings the record up to date: an exit conmon has written (or a
    /// monitor that vanished without writing one) is recorded, with the
    /// OOM verdict, while the cgroup still tells it.
    async fn observe(&self, id: &str, record: Record) -> Result<Record> {
        if record.exit.is_some() {
            return Ok(record);
        }
        let exit = match self.exit_file(id) {
            Some((exit_code, finished_at)) => (exit_code, finished_at),
            None if procfs::is_alive(record.pid, record.start_ticks)
                || procfs::is_alive(record.conmon_pid, record.conmon_start_ticks) =>
            {
                return Ok(record);
            }
            None => match self.exit_file(id) {
                // Written between the two looks.
                Some(exit) => exit,
                None => (None, SystemTime::now()),
            },
        };
        let (exit_code, finished_at) = exit;
        let signal = exit_code.and_then(state::signal_of_exit_code);
        let oom_killed = self.oom_killed(id);
        let mut record = record;
        record.exit = Some(ExitRecord {
            exit_code,
            signal,
            oom_killed,
            finished_at,
        });
        self.save(id, &record).await?;
        Ok(record)
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        Ok(to_status(id, record))
    }

    /// Undoes a run: the runtime forgets the container (killing what is
    /// left), the overlay is unmounted, the cgroup removed, and the
    /// per-run files go. Logs and the state file stay.
    async fn teardown(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id)?;
        if let Err(e) = self.run_runtime(id, &["delete", "--force", id]).await {
            let message = e.to_string();
            let gone = message.contains("does not exist") || message.contains("not found");
            if !gone {
                tracing::warn!(container = %id, error = %message, "runtime delete failed");
            }
        }
        let rootfs = dir.join("rootfs");
        match nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::container(
                    id,
                    format!("unmount {}", rootfs.display()),
                    e,
                ));
            }
        }
        self.group(id).remove().await?;
        for name in ["upper", "work", "exit", "persist", "rootfs"] {
            remove_path(&dir.join(name)).await?;
        }
        for name in [
            "pidfile",
            "conmon.pid",
            "runtime.log",
            "attach",
            "ctl",
            "winsz",
        ] {
            remove_path(&dir.join(name)).await?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the container to exit; whether it did.
    async fn wait_for_exit(&self, id: &str, record: &Record, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let alive = procfs::is_alive(record.pid, record.start_ticks);
            if !alive
                && (self.exit_file(id).is_some()
                    || !procfs::is_alive(record.conmon_pid, record.conmon_start_ticks))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        if record.exit.is_some() {
            return Ok(());
        }
        if let Err(e) = self.run_runtime(id, &["kill", id, "TERM"]).await {
            tracing::debug!(container = %id, error = %e, "SIGTERM failed");
        }
        if !self.wait_for_exit(id, &record, grace).await {
            if let Err(e) = self.run_runtime(id, &["kill", "--all", id, "KILL"]).await {
                tracing::debug!(container = %id, error = %e, "SIGKILL failed");
            }
            if !self.wait_for_exit(id, &record, KILL_WAIT).await {
                return Err(runtime_error(
                    id,
                    format!("process {} did not exit after SIGKILL", record.pid),
                ));
            }
        }
        self.observe(id, record).await.map(drop)
    }

    /// Mounts the container's root file system: the image's layers (read
    /// only) under a fresh writable upper directory, on the sized file
    /// system of `writable_layer` when the spec gives one.
    fn mount_rootfs(
        &self,
        id: &str,
        dir: &Path,
        layers: &[PathBuf],
        writable_layer: Option<&Path>,
    ) -> Result<PathBuf> {
        let (upper, work) = match writable_layer {
            Some(layer) => bundle::fresh_writable_layer(id, layer)?,
            None => (dir.join("upper"), dir.join("work")),
        };
        let rootfs = dir.join("rootfs");
        let empty = dir.join("empty");
        for path in [&rootfs, &upper, &work, &empty] {
            std::fs::create_dir_all(path)
                .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        }
        // overlayfs lists the top layer first; an image without layers gets
        // an empty lower dir (overlayfs needs one).
        let lower: Vec<String> = if layers.is_empty() {
            vec![empty.display().to_string()]
        } else {
            layers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect()
        };
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| Error::container(id, format!("mount overlay on {}", rootfs.display()), e))?;
        Ok(rootfs)
    }

    /// Prepares and starts a run; on failure the caller tears down.
    async fn start_run(&self, spec: &ContainerSpec, dir: &Path) -> Result<Record> {
        let id = spec.id.as_str();
        let reference = spec
            .image
            .clone()
            .ok_or_else(|| runtime_error(id, "the oci driver needs an image"))?;
        // From resolving the image until its layers are leased, garbage
        // collection waits.
        let images = self.images.clone();
        let fence = blocking(move || images.gc_fence()).await?;
        let image = state::image_on_demand(&self.images, spec, &reference).await?;
        let images = self.images.clone();
        let holder = id.to_string();
        let (image, layers, config) = blocking(move || {
            images.lease(&holder, &image)?;
            let layers = images.layer_dirs(&image)?;
            let config = images.config(&image)?;
            Ok::<_, c4m_image::Error>((image, layers, config))
        })
        .await?;
        drop(fence);
        let rootfs = self.mount_rootfs(id, dir, &layers, spec.writable_layer.as_deref())?;
        let input = bundle::BundleInput {
            image: config.config().as_ref(),
            root_path: rootfs.clone(),
            image_dirs: std::slice::from_ref(&rootfs),
            cgroups_path: bundle::cgroups_path(id),
            swap_accounting: self.swap_accounting,
        };
        let runtime_spec = bundle::runtime_spec(spec, &input)?;
        let config_path = dir.join("config.json");
        runtime_spec
            .save(&config_path)
            .map_err(|e| Error::container(id, format!("write {}", config_path.display()), e))?;
        for sub in ["exit", "persist", "sockets"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("create {}", dir.join(sub).display()), e))?;
        }
        let (conmon_pid, conmon_start_ticks) = self.spawn_conmon(spec, dir).await?;
        let pid = self
            .wait_for_create(id, dir, conmon_pid, conmon_start_ticks)
            .await?;
        let start_ticks = procfs::stat(pid)
            .map(|s| s.start_ticks)
            .ok_or_else(|| runtime_error(id, format!("container process {pid} vanished")))?;
        let started_at = SystemTime::now();
        self.run_runtime(id, &["start", id]).await?;
        Ok(Record {
            spec: spec.clone(),
            image: image.digest,
            pid,
            start_ticks,
            conmon_pid,
            conmon_start_ticks,
            started_at,
            exit: None,
        })
    }

    /// Starts conmon, which creates the container and daemonizes; returns
    /// the monitor's pid and start time.
    async fn spawn_conmon(&self, spec: &ContainerSpec, dir: &Path) -> Result<(u32, u64)> {
        let id = spec.id.as_str();
        let path = |name: &str| dir.join(name).display().to_string();
        let conmon_log = std::fs::File::create(dir.join("conmon.log"))
            .map_err(|e| Error::io(format!("create {}", path("conmon.log")), e))?;
        // A stdin for attaching (`stdin: true`), closed when the first
        // attached client's input ends if `stdinOnce`.
        let stdin: &[&str] = match (spec.stdin, spec.stdin_once) {
            (false, _) => &[],
            (true, true) => &["--stdin"],
            (true, false) => &["--stdin", "--leave-stdin-open"],
        };
        let status = Command::new(&self.conmon)
            .args(["--api-version", "1", "-c", id, "-u", id, "-n", id])
            .args(stdin)
            .arg("-r")
            .arg(&self.runtime)
            .args(["-b", &dir.display().to_string()])
            .args(["-p", &path("pidfile"), "-P", &path("conmon.pid")])
            .args(["-l", &format!("k8s-file:{}", path("ctr.log"))])
            .args([
                "--exit-dir",
                &path("exit"),
                "--persist-dir",
                &path("persist"),
            ])
            .args(["--socket-dir-path", &path("sockets")])
            .arg(format!(
                "--runtime-arg=--root={}",
                self.runtime_root.display()
            ))
            .arg(format!("--runtime-arg=--log={}", path("runtime.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(conmon_log)
            .status()
            .await
            .map_err(|e| Error::container(id, format!("run {}", self.conmon.display()), e))?;
        if !status.success() {
            let log = std::fs::read_to_string(dir.join("conmon.log")).unwrap_or_default();
            return Err(runtime_error(
                id,
                format!("conmon failed ({status}): {}", log.trim()),
            ));
        }
        let pid_file = dir.join("conmon.pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| Error::io(format!("read {}", pid_file.display()), e))?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| runtime_error(id, format!("bad conmon pid file: {text:?}")))?;
        let ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
        Ok((pid, ticks))
    }

    /// Waits until the runtime has created the container (its pid file
    /// appears); if conmon ends first, the runtime's log says why.
    async fn wait_for_create(&self, id: &str, dir: &Path, conmon: u32, ticks: u64) -> Result<u32> {
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let pid_file = dir.join("pidfile");
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                return Ok(pid);
            }
            if !procfs::is_alive(conmon, ticks) || Instant::now() >= deadline {
                let log = std::fs::read_to_string(dir.join("runtime.log")).unwrap_or_default();
                let conmon_log =
                    std::fs::read_to_string(dir.join("conmon.log")).unwrap_or_default();
                return Err(runtime_error(
                    id,
                    format!(
                        "the runtime did not create the container: {} {}",
                        runtime_log_message(&log),
                        conmon_log.trim()
                    )
                    .trim()
                    .to_string(),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The last error message in a runc/crun log (`msg="..."` in runc's text
/// format, the whole line otherwise).
fn runtime_log_message(log: &str) -> String {
    let Some(line) = log.lines().rev().find(|l| !l.trim().is_empty()) else {
        return String::new();
    };
    match line.split_once("msg=\"") {
        Some((_, rest)) => rest.trim_end().trim_end_matches('"').replace("\\\"", "\""),
        None => line.trim().to_string(),
    }
}

fn to_status(id: &str, record: Record) -> ContainerStatus {
    // Ports are the network's business (the container's namespace).
    state::status(
        id,
        record.spec,
        record.pid,
        record.started_at,
        record.exit,
        Vec::new(),
    )
}

impl state::Records for Inner {
    type Record = Record;

    fn records_dir(&self) -> &Path {
        &self.containers_dir
    }
}

#[async_trait]
impl state::Containers for Inner {
    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        Inner::status(self, id).await
    }
}

#[async_trait]
impl ContainerRuntime for OciRuntime {
    fn name(&self) -> &str {
        "oci"
    }

    fn takes_network_namespace(&self) -> bool {
        true
    }

    fn version(&self) -> String {
        let name = self
            .inner
            .runtime
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        format!("{} ({name}, conmon)", env!("CARGO_PKG_VERSION"))
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        let inner = &*self.inner;
        let id = spec.id.as_str();
        let dir = inner.container_dir(id)?;
        let _guard = inner.locks.hold(id).await;
        let previous = match inner.load(id).await {
            Ok(previous) => previous,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "ignoring unreadable previous state");
                None
            }
        };
        if let Some(previous) = previous {
            let previous = inner.observe(id, previous).await?;
            if previous.exit.is_none() {
                return Err(runtime_error(
                    id,
                    format!("already running as pid {}", previous.pid),
                ));
            }
        }
        // A restart starts from a clean slate (a fresh writable layer), as
        // Kubernetes restarts containers.
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        inner.teardown(id).await?;
        remove_path(&dir.join("state.json")).await?;
        match inner.start_run(spec, &dir).await {
            Ok(record) => {
                if let Err(e) = inner.save(id, &record).await {
                    let _ = inner.teardown(id).await;
                    return Err(e);
                }
                Ok(to_status(id, record))
            }
            Err(e) => {
                if let Err(cleanup) = inner.teardown(id).await {
                    tracing::warn!(container = %id, error = %cleanup, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.inner.status(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        state::list(&*self.inner, &self.inner.containers_dir).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let _guard = self.inner.locks.hold(id).await;
        self.inner.stop(id, grace).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let inner = &*self.inner;
        let dir = inner.container_dir(id)?;
        let _guard = inner.locks.hold(id).await;
        if !dir.exists() {
            return Ok(());
        }
        if inner.load(id).await.ok().flatten().is_some()
            && let Err(e) = inner.stop(id, Duration::ZERO).await
        {
            tracing::warn!(container = %id, error = %e, "stop before remove failed");
        }
        inner.teardown(id).await?;
        let images = inner.images.clone();
        let holder = id.to_string();
        blocking(move || images.release(&holder)).await?;
        remove_path(&dir).await?;
        inner.locks.forget(id);
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        self.inner.load_existing(id).await?;
        Ok(self.inner.group(id).usage()?)
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.inner.load_existing(id).await?;
        let path = self.inner.container_dir(id)?.join("ctr.log");
        k8s_file::logs(&self.inner, id, path, &options).await
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let inner = &*self.inner;
        inner.check_exec(id, command).await?;
        let pid_dir = tempfile::tempdir()
            .map_err(|e| Error::io("create a directory for an exec's pid file", e))?;
        let pid_file = pid_dir.path().join("pid");
        let child = inner
            .runtime_command()
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Killing runc would leave the command running: see below.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| Error::container(id, format!("run {}", inner.runtime.display()), e))?;
        let runc = child.id().and_then(|pid| i32::try_from(pid).ok());
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => Ok(ExecOutput {
                exit_code: output.status.code().unwrap_or(-1),
                stdout: output.stdout,
                stderr: output.stderr,
            }),
            Ok(Err(e)) => Err(Error::container(id, format!("exec {command:?}: wait"), e)),
            // The command is killed inside the container; runc then ends.
            Err(_) => {
                let _ = tokio::task::spawn_blocking(move || {
                    exec::kill_command(&pid_file, pid_dir, runc)
                })
                .await;
                Err(runtime_error(
                    id,
                    format!("exec {command:?} timed out after {timeout:?}"),
                ))
            }
        }
    }

    async fn exec_interactive(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        self.inner.exec_interactive(id, request).await
    }

    async fn attach(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        self.inner.attach(id, request).await
    }
}
