//! Pod-level namespaces: one holder process per pod, the kubelet's pause.
//!
//! The containers of a pod share an IPC namespace, and with
//! `shareProcessNamespace: true` a PID namespace, whatever each of them
//! does: an init container ends, a container restarts, and the namespaces
//! stay. Its `/dev/shm` likewise: a tmpfs the agent mounts at
//! `<pods dir>/<id>.shm` with the holder and unmounts with it, which every
//! container binds. A holder keeps them: the agent's own binary started again as
//! [`HOLDER_NAME`] (see [`run_pod_holder_if_asked`]). Its first stage
//! unshares a new PID and IPC namespace and starts the second, which is
//! PID 1 there and only reaps orphans until it is killed; the first stage
//! prints the second's pid and exits, so the holder is nobody's child and
//! outlives the agent, like the containers that join
//! `/proc/<pid>/ns/{ipc,pid}`.
//!
//! Its command line names the agent's pods directory and the pod's id: a
//! restarted agent finds the holders it started by reading `/proc`
//! ([`PodHolders::find_running`]) and adopts those of assigned pods; the
//! others are killed once their pod's leftover containers are removed.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The `argv[0]` a holder runs under (and shows in `ps`).
pub const HOLDER_NAME: &str = "c4m-pod-holder";
/// The first stage: unshare, start the second, print its pid.
const START: &str = "start";
/// The second stage: PID 1 of the pod's namespaces.
const HOLD: &str = "hold";
/// The size of a pod's `/dev/shm`, as the CRI runtimes make it.
const SHM_SIZE: &str = "64m";

/// Runs this process as a pod's namespace holder, and never returns, when
/// it was started as one (`argv[0]` is [`HOLDER_NAME`]); returns at once
/// otherwise. A binary named by [`crate::AgentConfig::pod_holder`] calls
/// it first thing in `main`, before it starts threads.
pub fn run_pod_holder_if_asked() {
    let mut args = std::env::args_os();
    if args.next().as_deref() != Some(OsStr::new(HOLDER_NAME)) {
        return;
    }
    let stage = args.next();
    let rest: Vec<OsString> = args.collect();
    let code = match stage.as_deref().and_then(OsStr::to_str) {
        Some(START) => start(&rest),
        Some(HOLD) => hold(),
        _ => {
            eprintln!("{HOLDER_NAME}: started by the agent only");
            2
        }
    };
    std::process::exit(code)
}

/// Unshares a PID and IPC namespace and starts the holder proper in them
/// (the first process started there is their PID 1); prints its pid.
fn start(rest: &[OsString]) -> i32 {
    use nix::sched::{CloneFlags, unshare};
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC) {
        eprintln!("{HOLDER_NAME}: unshare: {e}");
        return 1;
    }
    let spawned = std::process::Command::new("/proc/self/exe")
        .arg0(HOLDER_NAME)
        .arg(HOLD)
        .args(rest)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => {
            println!("{}", child.id());
            0
        }
        Err(e) => {
            eprintln!("{HOLDER_NAME}: starting the holder: {e}");
            1
        }
    }
}

/// PID 1 of a pod: reaps the processes orphaned in its namespace until
/// SIGTERM or SIGKILL. Signals are taken synchronously (blocked, then
/// waited for), so no handler runs.
fn hold() -> i32 {
    let _ = nix::unistd::setsid();
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    signals.add(Signal::SIGTERM);
    if signals.thread_block().is_err() {
        return 1;
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGTERM) => return 0,
            Ok(_) => {
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

/// Why a pod's holder could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HolderError {
    /// The holder program could not be run.
    #[error("starting {program} as the pod's namespace holder: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran but did not start the holder.
    #[error("the pod's namespace holder did not start: {0}")]
    Failed(String),
    /// The pod's `/dev/shm` could not be made.
    #[error("mounting the pod's /dev/shm at {dir}: {source}")]
    Shm {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Whether `dir` is a mount point: on another device than its parent.
fn is_mount_point(dir: &std::path::Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(dir);
    Ok(std::fs::metadata(dir)?.dev() != std::fs::metadata(parent)?.dev())
}

/// A pod's holder, by its pid on the node, and its `/dev/shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodNamespaces {
    pid: i32,
    /// The pod's shared memory (POSIX), which each container binds at its
    /// `/dev/shm`.
    pub(crate) shm: PathBuf,
}

impl PodNamespaces {
    /// The IPC namespace every container of the pod joins.
    pub(crate) fn ipc(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/ipc", self.pid))
    }

    /// The PID namespace its containers join with `shareProcessNamespace`.
    pub(crate) fn pid(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/pid", self.pid))
    }
}

/// The holders of this agent's pods, by pod id.
#[derive(Debug)]
pub(crate) struct PodHolders {
    /// The binary to start as a holder (it calls [`run_pod_holder_if_asked`]).
    program: PathBuf,
    /// The agent's pods directory: the holders' mark, on their command line.
    dir: PathBuf,
    pids: Mutex<HashMap<String, i32>>,
}

impl PodHolders {
    pub(crate) fn new(program: PathBuf, dir: PathBuf) -> Self {
        PodHolders {
            program,
            dir,
            pids: Mutex::new(HashMap::new()),
        }
    }

    fn pids(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the holders an earlier run of this agent started (by their
    /// command line in `/proc`), keeps them, and returns their pods' ids,
    /// with those of any `/dev/shm` left without a holder.
    pub(crate) fn find_running(&self) -> HashSet<String> {
        let mut found: HashSet<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some(e.file_name().to_str()?.strip_suffix(".shm")?.to_string()))
            .collect();
        found.extend(self.find_holders());
        found
    }

    /// The holders of [`PodHolders::find_running`], by their command line.
    fn find_holders(&self) -> HashSet<String> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return HashSet::new();
        };
        let mut pids = self.pids();
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(id) = self.pod_of(pid) {
                tracing::info!(pod = %id, pid, "found the namespace holder of a pod");
                pids.insert(id, pid);
            }
        }
        pids.keys().cloned().collect()
    }

    /// The id of the pod whose holder `pid` is, if it is one of ours.
    fn pod_of(&self, pid: i32) -> Option<String> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let (dir, id) = parse_cmdline(&cmdline)?;
        (dir == self.dir).then_some(id)
    }

    /// Where pod `id`'s `/dev/shm` is mounted.
    fn shm_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.shm"))
    }

    /// Mounts pod `id`'s `/dev/shm` unless it is.
    fn mount_shm(&self, id: &str) -> Result<PathBuf, HolderError> {
        use nix::mount::{MsFlags, mount};
        let dir = self.shm_of(id);
        let io = |source| HolderError::Shm {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        if !is_mount_point(&dir).map_err(io)? {
            mount(
                Some("shm"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
            )
            .map_err(|e| io(e.into()))?;
        }
        Ok(dir)
    }

    /// Unmounts pod `id`'s `/dev/shm` if it is mounted, and removes it.
    fn unmount_shm(&self, id: &str) {
        let dir = self.shm_of(id);
        if is_mount_point(&dir).unwrap_or(false)
            && let Err(e) = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)
        {
            tracing::warn!(pod = %id, error = %e, "cannot unmount the pod's /dev/shm");
            return;
        }
        let _ = std::fs::remove_dir(&dir);
    }

    /// The holder of pod `id`, started if it has none (or it died), and
    /// its `/dev/shm`, mounted if it is not.
    pub(crate) async fn ensure(&self, id: &str) -> Result<PodNamespaces, HolderError> {
        let shm = self.mount_shm(id)?;
        let known = self.pids().get(id).copied();
        if let Some(pid) = known.filter(|pid| self.pod_of(*pid).as_deref() == Some(id)) {
            return Ok(PodNamespaces { pid, shm });
        }
        let output = tokio::process::Command::new(&self.program)
            .arg0(HOLDER_NAME)
            .arg(START)
            .arg(&self.dir)
            .arg(id)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| HolderError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let pid: i32 = match text.trim().parse() {
            Ok(pid) if output.status.success() => pid,
            _ => {
                return Err(HolderError::Failed(format!(
                    "{} ({})",
                    String::from_utf8_lossy(&output.stderr).trim(),
                    output.status
                )));
            }
        };
        tracing::info!(pod = %id, pid, "started the pod's namespace holder");
        self.pids().insert(id.to_string(), pid);
        Ok(PodNamespaces { pid, shm })
    }

    /// Kills pod `id`'s holder (its namespaces go with the last process in
    /// them), unmounts its `/dev/shm` and forgets it. Call it once the
    /// pod's containers are gone.
    pub(crate) fn remove(&self, id: &str) {
        self.unmount_shm(id);
        let Some(pid) = self.pids().remove(id) else {
            return;
        };
        // Only if the pid is still our holder of that pod.
        if self.pod_of(pid).as_deref() != Some(id) {
            return;
        }
        match nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => tracing::info!(pod = %id, pid, "stopped the pod's namespace holder"),
            Err(e) => {
                tracing::warn!(pod = %id, pid, error = %e, "cannot stop the pod's namespace holder")
            }
        }
    }
}

/// The pods directory and pod id of a holder's command line
/// (`c4m-pod-holder hold DIR ID`, NUL-separated), or `None` for any other.
fn parse_cmdline(cmdline: &[u8]) -> Option<(PathBuf, String)> {
    let mut args = cmdline.split(|b| *b == 0);
    if args.next()? != HOLDER_NAME.as_bytes() || args.next()? != HOLD.as_bytes() {
        return None;
    }
    let dir = PathBuf::from(OsStr::from_bytes(args.next()?));
    let id = std::str::from_utf8(args.next()?).ok()?.to_string();
    (!id.is_empty() && matches!(args.next(), None | Some(b""))).then_some((dir, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holders_command_line_names_its_directory_and_pod() {
        assert_eq!(
            parse_cmdline(b"c4m-pod-holder\0hold\0/var/lib/c4m/pods\0default_web_ab12cd34\0"),
            Some((
                PathBuf::from("/var/lib/c4m/pods"),
                "default_web_ab12cd34".to_string()
            ))
        );
        for other in [
            &b"c4m-pod-holder\0start\0/d\0p\0"[..],
            b"sleep\0hold\0/d\0p\0",
            b"c4m-pod-holder\0hold\0/d\0",
            b"c4m-pod-holder\0hold\0/d\0\0",
            b"c4m-pod-holder\0hold\0/d\0p\0extra\0",
            b"",
        ] {
            assert_eq!(parse_cmdline(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_directory_on_its_parents_device_is_no_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("x.shm");
        std::fs::create_dir(&inner).unwrap();
        assert!(!is_mount_point(&inner).unwrap());
        assert!(is_mount_point(std::path::Path::new("/proc")).unwrap());
        assert!(is_mount_point(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn namespaces_are_the_holders() {
        let ns = PodNamespaces {
            pid: 42,
            shm: PathBuf::from("/d/p.shm"),
        };
        assert_eq!(ns.ipc(), PathBuf::from("/proc/42/ns/ipc"));
        assert_eq!(ns.pid(), PathBuf::from("/proc/42/ns/pid"));
    }

    #[test]
    fn only_holders_of_this_directory_are_found() {
        let holders = PodHolders::new(
            PathBuf::from("/proc/self/exe"),
            PathBuf::from("/nonexistent/c4m-test-pods"),
        );
        // No process on this machine holds pods of that directory.
        assert!(holders.find_running().is_empty());
        assert_eq!(holders.pod_of(std::process::id() as i32), None);
    }
}
