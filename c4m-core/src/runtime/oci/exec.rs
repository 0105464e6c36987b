//! Interactive exec for the `oci` driver: `runc exec` with the command's
//! streams as pipes, or, with a terminal, `runc exec --tty` on a
//! pseudo-terminal the agent holds (the process driver's): runc gives the
//! command a terminal of the container's, its controlling one, and copies
//! between the two, taking our terminal's size on SIGWINCH.

use std::path::PathBuf;
use std::process::Stdio;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;

use super::{Inner, runtime_error};
use crate::runtime::process::exec::Pty;
use crate::runtime::{ExecRequest, ExecSession, ResizeTerminal};
use crate::{Error, Result};

impl Inner {
    pub(super) async fn exec_interactive(
        &self,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession> {
        self.check_exec(id, &request.command).await?;
        let pid_dir = tempfile::tempdir()
            .map_err(|e| Error::io("create a directory for an exec's pid file", e))?;
        let pid_file = pid_dir.path().join("pid");
        let mut command = self.runtime_command();
        command.arg("exec").arg("--pid-file").arg(&pid_file);
        let pty = if request.tty {
            let pty = Pty::open().map_err(|e| Error::io("open a pseudo-terminal", e))?;
            command
                .arg("--tty")
                .stdin(pty.slave_stdio()?)
                .stdout(pty.slave_stdio()?)
                .stderr(pty.slave_stdio()?);
            Some(pty)
        } else {
            command
                .stdin(if request.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        };
        command.arg(id).args(&request.command);
        let mut child = command
            .spawn()
            .map_err(|e| runtime_error(id, format!("run {}: {e}", self.runtime.display())))?;
        let guard = KillOnDrop {
            pid_file,
            _pid_dir: pid_dir,
            done: false,
        };
        if let Some(pty) = pty {
            let (output, input, resize_ours) = pty.into_master_streams()?;
            let runc = child.id().and_then(|pid| i32::try_from(pid).ok());
            // Our terminal is not runc's controlling one: tell it of a new
            // size, which it then gives the command's terminal.
            let resize: ResizeTerminal = Box::new(move |size| {
                resize_ours(size)?;
                if let Some(pid) = runc {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGWINCH);
                }
                Ok(())
            });
            return Ok(ExecSession {
                stdin: request.stdin.then(|| Box::pin(input) as _),
                stdout: Box::pin(output),
                stderr: None,
                resize: Some(resize),
                exit: exit_of(child, guard),
            });
        }
        let missing = || runtime_error(id, "exec: the command's output pipes are missing");
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        let stdin = child.stdin.take();
        Ok(ExecSession {
            stdin: stdin.map(|s| Box::pin(s) as _),
            stdout: Box::pin(stdout),
            stderr: Some(Box::pin(stderr)),
            resize: None,
            exit: exit_of(child, guard),
        })
    }
}

/// The command's exit code (runc exits with it); dropped early, it kills
/// the command and runc.
fn exit_of(mut child: Child, mut guard: KillOnDrop) -> BoxFuture<'static, Result<i32>> {
    async move {
        let status = child
            .wait()
            .await
            .map_err(|e| Error::io("wait for the exec'd command", e))?;
        guard.disarm();
        Ok(status.code().unwrap_or(-1))
    }
    .boxed()
}

/// Kills the exec'd command (runc wrote its pid) unless it was seen to
/// exit: killing runc alone would leave it running in the container.
struct KillOnDrop {
    pid_file: PathBuf,
    _pid_dir: tempfile::TempDir,
    done: bool,
}

impl KillOnDrop {
    fn disarm(&mut self) {
        self.done = true;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|&pid| pid > 1) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
