//! Commands run in a container through the daemon's exec API.
//!
//! The API cannot kill an exec'd command, so a command that outlives its
//! caller (a timed-out `exec`, a dropped interactive session) is killed
//! by its pid, which `inspect` reports in the daemon's pid namespace: the
//! node's, for a daemon on the node.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::io::StreamReader;

use super::{DockerRuntime, container_name};
use c4m_core::{ExecOutput, ExecRequest, ExecSession, TerminalSize};

use crate::state;
use crate::{Error, Result};

/// How long an exec may take to be reported ended once its output ended.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How often the exec is inspected meanwhile.
const EXIT_POLL: Duration = Duration::from_millis(10);

type Output = std::pin::Pin<
    Box<dyn futures::Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;

fn exec_error(id: &str, message: impl Into<String>) -> Error {
    Error::Runtime {
        id: id.into(),
        message: message.into(),
    }
}

/// Creates and starts `command` in container `id`, attached.
async fn start(
    runtime: &DockerRuntime,
    id: &str,
    command: &[String],
    stdin: bool,
    tty: bool,
) -> Result<(
    String,
    Output,
    std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
)> {
    state::check_id(id)?;
    if command.is_empty() {
        return Err(exec_error(id, "exec: empty command"));
    }
    let created = runtime
        .docker
        .create_exec(
            &container_name(id),
            CreateExecOptions {
                cmd: Some(command.to_vec()),
                attach_stdin: Some(stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(tty),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| match e {
            // The daemon's 409 says why only in its text.
            DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            } if message.contains("is not running") => {
                exec_error(id, "cannot exec: container is not running")
            }
            other => runtime.error(id, other),
        })?;
    let started = runtime
        .docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| runtime.error(id, e))?;
    match started {
        StartExecResults::Attached { output, input } => Ok((created.id, output, input)),
        StartExecResults::Detached => Err(exec_error(id, "exec: the daemon did not attach")),
    }
}

/// The exit code of exec `exec_id`, once the daemon reports it ended.
async fn exit_code(runtime: &DockerRuntime, id: &str, exec_id: &str) -> Result<i32> {
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    loop {
        let inspected = runtime
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| runtime.error(id, e))?;
        if inspected.running != Some(true)
            && let Some(code) = inspected.exit_code
        {
            return Ok(i32::try_from(code).unwrap_or(-1));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(exec_error(
                id,
                format!("exec: its output ended but it still runs after {EXIT_WAIT:?}"),
            ));
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// Kills exec `exec_id` if it still runs (see the module docs).
async fn kill(runtime: &DockerRuntime, exec_id: &str) {
    let Ok(inspected) = runtime.docker.inspect_exec(exec_id).await else {
        return;
    };
    let pid = inspected
        .pid
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 1);
    if inspected.running != Some(true) {
        return;
    }
    let Some(pid) = pid else { return };
    let pid = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(exec = %exec_id, %pid, error = %e, "could not kill an exec'd command");
    }
}

/// Runs `command` in container `id` and collects its output; past
/// `timeout` the command is killed and the exec fails.
pub(super) async fn run(
    runtime: &DockerRuntime,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<ExecOutput> {
    let (exec_id, mut output, _input) = start(runtime, id, command, false, false).await?;
    let collect = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(frame) = output.next().await {
            match frame.map_err(|e| runtime.error(id, e))? {
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.extend_from_slice(&message);
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok::<_, Error>((stdout, stderr))
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(collected) => {
            let (stdout, stderr) = collected?;
            Ok(ExecOutput {
                exit_code: exit_code(runtime, id, &exec_id).await?,
                stdout,
                stderr,
            })
        }
        Err(_) => {
            kill(runtime, &exec_id).await;
            Err(exec_error(
                id,
                format!("exec {command:?} timed out after {timeout:?}"),
            ))
        }
    }
}

/// Kills the exec it names when dropped, unless disarmed: a session
/// whose `exit` is dropped unresolved takes its command with it.
struct KillOnDrop {
    runtime: DockerRuntime,
    exec_id: String,
    armed: bool,
}

impl KillOnDrop {
    /// The command ended: nothing to kill.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (runtime, exec_id) = (self.runtime.clone(), std::mem::take(&mut self.exec_id));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { kill(&runtime, &exec_id).await });
            }
            Err(_) => tracing::warn!(exec = %exec_id, "no runtime left to kill an exec'd command"),
        }
    }
}

/// A reader fed by a channel: what the pump sends, then end of file once
/// the sender is gone.
fn channel_reader() -> (
    mpsc::UnboundedSender<Bytes>,
    std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let stream = UnboundedReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    (tx, Box::pin(StreamReader::new(stream)))
}

/// Moves the exec's output frames to the stdout and stderr readers. Ends
/// with the output (the command ended or the session was dropped, which
/// kills it) or once no reader is left.
async fn pump(
    mut output: Output,
    stdout: mpsc::UnboundedSender<Bytes>,
    stderr: Option<mpsc::UnboundedSender<Bytes>>,
) {
    while let Some(frame) = output.next().await {
        let sent = match frame {
            Ok(LogOutput::StdErr { message }) => match &stderr {
                Some(stderr) => stderr.send(message).is_ok(),
                None => stdout.send(message).is_ok(),
            },
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                stdout.send(message).is_ok()
            }
            Ok(LogOutput::StdIn { .. }) => true,
            Err(e) => {
                tracing::debug!(error = %e, "exec output ended with an error");
                return;
            }
        };
        let readers_gone = stdout.is_closed() && stderr.as_ref().is_none_or(|s| s.is_closed());
        if !sent && readers_gone {
            return;
        }
    }
}

/// Starts `request` in container `id` with its streams handed over.
pub(super) async fn interactive(
    runtime: &DockerRuntime,
    id: &str,
    request: ExecRequest,
) -> Result<ExecSession> {
    let (exec_id, output, input) =
        start(runtime, id, &request.command, request.stdin, request.tty).await?;
    let mut guard = KillOnDrop {
        runtime: runtime.clone(),
        exec_id: exec_id.clone(),
        armed: true,
    };
    let (stdout_tx, stdout) = channel_reader();
    let (stderr_tx, stderr) = if request.tty {
        (None, None)
    } else {
        let (tx, reader) = channel_reader();
        (Some(tx), Some(reader))
    };
    let pumped = tokio::spawn(pump(output, stdout_tx, stderr_tx));
    let resize = request
        .tty
        .then(|| resizer(runtime.clone(), id, exec_id.clone()));
    let (runtime, id) = (runtime.clone(), id.to_string());
    let exit = async move {
        // Output ends when the command does; its exit code follows.
        if let Err(e) = pumped.await {
            return Err(Error::container(&id, "exec output task failed", e));
        }
        let code = exit_code(&runtime, &id, &exec_id).await;
        guard.disarm();
        code
    };
    Ok(ExecSession {
        stdin: request.stdin.then_some(input),
        stdout,
        stderr,
        resize,
        exit: exit.boxed(),
    })
}

/// Resizes the exec's terminal; the API call runs in the background (the
/// trait's resize is synchronous).
fn resizer(runtime: DockerRuntime, id: &str, exec_id: String) -> c4m_core::ResizeTerminal {
    let id = id.to_string();
    Box::new(move |size: TerminalSize| {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| exec_error(&id, "resize: no async runtime"))?;
        let (runtime, exec_id) = (runtime.clone(), exec_id.clone());
        handle.spawn(async move {
            let options = ResizeExecOptions {
                height: size.height,
                width: size.width,
            };
            if let Err(e) = runtime.docker.resize_exec(&exec_id, options).await {
                tracing::debug!(exec = %exec_id, error = %e, "terminal resize failed");
            }
        });
        Ok(())
    })
}
