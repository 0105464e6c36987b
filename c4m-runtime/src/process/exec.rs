//! Interactive exec for the `process` driver: the command's streams go to
//! the caller as pipes, or through a pseudo-terminal whose master side the
//! agent holds (rustix wraps the pty calls safely).

use std::os::fd::OwnedFd;
use std::process::Stdio;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::net::unix::pipe;
use tokio::process::Child;

use super::{GatedStdin, Inner, exit_code_and_signal, signal_group};
use crate::{Error, Result};
use c4m_core::{ExecRequest, ExecSession, ResizeTerminal, TerminalSize};

/// The size a terminal has until the caller says otherwise.
const DEFAULT_SIZE: TerminalSize = TerminalSize {
    width: 80,
    height: 24,
};

impl Inner {
    pub(super) async fn exec_interactive(
        &self,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession> {
        let record = self.running(id).await?;
        let argv = &request.command;
        if request.tty {
            let pty = Pty::open().map_err(|e| Error::io("open a pseudo-terminal", e))?;
            let (stdout, stderr) = (pty.slave_stdio()?, pty.slave_stdio()?);
            let child = self
                .spawn_in_container(
                    &record.spec,
                    &record.ports,
                    argv,
                    GatedStdin::Terminal,
                    |command| {
                        command.stdout(stdout).stderr(stderr);
                    },
                )
                .await?;
            let (output, input, resize) = pty.into_master_streams()?;
            Ok(ExecSession {
                stdin: request.stdin.then(|| Box::pin(input) as _),
                stdout: Box::pin(output),
                stderr: None,
                resize: Some(resize),
                exit: exit_of(child),
            })
        } else {
            let stdin = if request.stdin {
                GatedStdin::Piped
            } else {
                GatedStdin::Null
            };
            let mut child = self
                .spawn_in_container(&record.spec, &record.ports, argv, stdin, |command| {
                    command.stdout(Stdio::piped()).stderr(Stdio::piped());
                })
                .await?;
            let missing = || Error::Runtime {
                id: id.to_string(),
                message: "exec: the command's output pipes are missing".into(),
            };
            let stdout = child.stdout.take().ok_or_else(missing)?;
            let stderr = child.stderr.take().ok_or_else(missing)?;
            let stdin = child.stdin.take();
            Ok(ExecSession {
                stdin: stdin.map(|s| Box::pin(s) as _),
                stdout: Box::pin(stdout),
                stderr: Some(Box::pin(stderr)),
                resize: None,
                exit: exit_of(child),
            })
        }
    }
}

/// The exit code of `child`; dropped early, it kills the command's group.
fn exit_of(child: Child) -> BoxFuture<'static, Result<i32>> {
    let pid = child.id();
    exit_or_kill(child, move |child| {
        let _ = child.start_kill();
        if let Some(pid) = pid {
            signal_group(pid, Signal::SIGKILL);
        }
    })
}

/// The exit code of an exec's `child` (the oci driver's too); dropped
/// before the command has exited, it runs `kill`.
pub(crate) fn exit_or_kill(
    child: Child,
    kill: impl FnOnce(&mut Child) + Send + 'static,
) -> BoxFuture<'static, Result<i32>> {
    let mut guard = KillOnDrop {
        child,
        kill: Some(Box::new(kill)),
    };
    async move {
        let status = guard
            .child
            .wait()
            .await
            .map_err(|e| Error::io("wait for the exec'd command", e))?;
        guard.disarm();
        let (code, _) = exit_code_and_signal(status);
        Ok(code.unwrap_or(-1))
    }
    .boxed()
}

/// Kills an exec's command unless it has been seen to exit.
struct KillOnDrop {
    child: Child,
    kill: Option<KillCommand>,
}

/// What kills an exec's command.
type KillCommand = Box<dyn FnOnce(&mut Child) + Send>;

impl KillOnDrop {
    fn disarm(&mut self) {
        self.kill = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            kill(&mut self.child);
        }
    }
}

/// A pseudo-terminal pair (the oci driver's exec uses it too).
pub(crate) struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    pub(crate) fn open() -> std::io::Result<Pty> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        // tokio's pipe types need a non-blocking descriptor.
        let flags = rustix::fs::fcntl_getfl(&master)?;
        rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
        set_size(&master, DEFAULT_SIZE)?;
        Ok(Pty { master, slave })
    }

    /// Puts the terminal in raw mode: for a command that has a terminal of
    /// its own behind this one (the oci driver's), whose line discipline
    /// is the one that counts.
    #[cfg(feature = "oci")]
    pub(crate) fn make_raw(&self) -> std::io::Result<()> {
        let mut termios = rustix::termios::tcgetattr(&self.slave)?;
        termios.make_raw();
        rustix::termios::tcsetattr(&self.slave, rustix::termios::OptionalActions::Now, &termios)?;
        Ok(())
    }

    /// Once the command holds the slave: the terminal's output (which
    /// ends, EIO read as end of file, once the command and its children are
    /// gone, as the slave is closed here), its input and its resizer.
    pub(crate) fn into_master_streams(
        self,
    ) -> Result<(TerminalOutput, pipe::Sender, ResizeTerminal)> {
        let Pty { master, slave } = self;
        drop(slave);
        let resizer = master
            .try_clone()
            .map_err(|e| Error::io("duplicate the terminal", e))?;
        let reader = master
            .try_clone()
            .map_err(|e| Error::io("duplicate the terminal", e))?;
        let output = pipe::Receiver::from_owned_fd_unchecked(reader)
            .map_err(|e| Error::io("watch the terminal", e))?;
        let input = pipe::Sender::from_owned_fd_unchecked(master)
            .map_err(|e| Error::io("watch the terminal", e))?;
        let resize: ResizeTerminal = Box::new(move |size| {
            set_size(&resizer, size).map_err(|e| Error::io("resize the terminal", e))
        });
        Ok((TerminalOutput(output), input, resize))
    }

    pub(crate) fn slave_stdio(&self) -> Result<Stdio> {
        self.slave
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| Error::io("duplicate the terminal", e))
    }
}

fn set_size(master: &OwnedFd, size: TerminalSize) -> std::io::Result<()> {
    rustix::termios::tcsetwinsize(
        master,
        Winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

/// The master side of a terminal: Linux answers EIO once every slave
/// descriptor is closed, which is this stream's end of file.
pub(crate) struct TerminalOutput(pipe::Receiver);

impl tokio::io::AsyncRead for TerminalOutput {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e))
                if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) =>
            {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
