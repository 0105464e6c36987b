use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// A daemon process the test started, its output in a log file. On drop
/// it is asked to stop (SIGTERM), then killed after `grace`.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

impl Daemon {
    /// Spawns `command` with its stdout and stderr in `log`.
    ///
    /// # Panics
    /// When the program cannot be started (naming the Debian package).
    pub(crate) fn spawn(
        name: &'static str,
        package: &str,
        mut command: Command,
        log: PathBuf,
        grace: Duration,
    ) -> Daemon {
        let out = File::create(&log).expect("creating the daemon's log file");
        let err = out.try_clone().expect("duplicating the daemon's log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} is required (apt-get install {package}): {e}"));
        Daemon {
            name,
            child,
            log,
            grace,
        }
    }

    /// Waits until `ready` says so; panics with the daemon's log when it
    /// exits first or takes longer than `timeout`.
    pub(crate) fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let name = self.name;
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(
            &format!("{name} to answer (log: {})", log.display()),
            timeout,
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{name} exited ({status}) before it answered; its log:\n{}",
                        tail(&log)
                    );
                }
                ready().then_some(())
            },
        );
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after the grace period.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + self.grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file, for panic messages.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether something accepts connections on the unix socket `path`.
pub(crate) fn socket_answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Runs `program args`, ignoring failures (for best-effort cleanup), and
/// returns its standard output.
pub(crate) fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Kills every process whose command line contains `needle` (shims a
/// daemon left behind), then unmounts whatever is still mounted under
/// `root`, deepest first.
pub(crate) fn reap(needle: &str, root: &Path) {
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(needle) && pid != std::process::id() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let root = root.display().to_string();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|target| target.starts_with(&root))
        .collect();
    under.sort_by_key(|target| std::cmp::Reverse(target.len()));
    for target in under {
        let _ = Command::new("umount").args(["-l", target]).status();
    }
}
