//! Interactive exec for the `oci` driver: `runc exec` with the command's
//! streams as pipes, or, with a terminal, `runc exec --tty` on a
//! pseudo-terminal the agent holds (the process driver's): runc gives the
//! command a terminal of the container's, its controlling one, and copies
//! between the two, taking our terminal's size on SIGWINCH.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Inner, runtime_error};
use crate::process::exec::{Pty, exit_or_kill};
use crate::{Error, Result};
use c4m_core::{ExecRequest, ExecSession, ResizeTerminal};

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
            // runc makes it raw too, but only once the command may have
            // written: output would be translated twice.
            pty.make_raw()
                .map_err(|e| Error::io("make the terminal raw", e))?;
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
        // Killing runc would leave the command running: see kill_command.
        command.arg(id).args(&request.command).kill_on_drop(false);
        let mut child = command
            .spawn()
            .map_err(|e| Error::container(id, format!("run {}", self.runtime.display()), e))?;
        let runc = child.id().and_then(|pid| i32::try_from(pid).ok());
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // runc's exit code is the command's; dropped early, the command is
        // killed, and runc then ends by itself.
        let exit = exit_or_kill(child, move |_| {
            std::thread::spawn(move || kill_command(&pid_file, pid_dir, runc));
        });
        if let Some(pty) = pty {
            let (output, input, resize_ours) = pty.into_master_streams()?;
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
                exit,
            });
        }
        let (stdin, Some(stdout), Some(stderr)) = pipes else {
            return Err(runtime_error(
                id,
                "exec: the command's output pipes are missing",
            ));
        };
        Ok(ExecSession {
            stdin: stdin.map(|s| Box::pin(s) as _),
            stdout: Box::pin(stdout),
            stderr: Some(Box::pin(stderr)),
            resize: None,
            exit,
        })
    }
}

/// How long runc has to write an exec's pid file.
const PID_FILE_WAIT: Duration = Duration::from_secs(2);

/// Kills an exec'd command, by the pid runc writes just after starting it
/// (so this waits for it a little); killing runc alone would leave the
/// command running in the container. Without a pid file in time (runc is
/// stuck), runc is killed. Blocks: drops call it on a thread of its own.
pub(super) fn kill_command(pid_file: &Path, pid_dir: tempfile::TempDir, runc: Option<i32>) {
    let deadline = Instant::now() + PID_FILE_WAIT;
    let pid = loop {
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .filter(|&pid| pid > 1);
        if pid.is_some() || Instant::now() >= deadline {
            break pid.or(runc);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(pid) = pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    drop(pid_dir);
}
