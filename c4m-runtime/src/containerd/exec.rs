//! Interactive exec: the command's standard streams are FIFOs beside the
//! container's log that the shim copies to and from (through a terminal
//! the shim allocates, with a TTY), resizes go to ResizePty.
//!
//! The shim opens its end of an output FIFO for writing only once a reader
//! is there, so c4m opens its ends first (blocking, off the async
//! threads); output ends when the shim closes its end, after the command
//! exited and everything was copied. Standard input is opened once the
//! command started; closing it is end of file for the command.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, ExecProcessRequest, ResizePtyRequest, StartRequest,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::stat::Mode;
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use super::client::Client;
use super::{Inner, SIGKILL, call_error, delete_process};
use crate::state::{remove_path, runtime_error};
use crate::{Error, Result};
use c4m_core::{ExecRequest, ExecSession, TerminalSize};

/// How long the shim may take to open the command's streams.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The FIFOs of one exec.
struct Fifos {
    stdin: Option<PathBuf>,
    stdout: PathBuf,
    stderr: Option<PathBuf>,
}

impl Fifos {
    fn paths(&self) -> Vec<PathBuf> {
        [
            Some(&self.stdout),
            self.stdin.as_ref(),
            self.stderr.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    async fn remove(&self) {
        for path in self.paths() {
            if let Err(e) = remove_path(&path).await {
                tracing::warn!(error = %e, "could not remove an exec FIFO");
            }
        }
    }
}

fn make_fifo(id: &str, path: &Path) -> Result<()> {
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|e| Error::container(id, format!("create FIFO {}", path.display()), e))
}

/// Opens `path` for reading off the async threads; the open completes once
/// the shim opens it for writing.
fn open_reader(path: PathBuf) -> tokio::task::JoinHandle<std::io::Result<std::fs::File>> {
    tokio::task::spawn_blocking(move || std::fs::File::open(path))
}

/// Ends a pending [`open_reader`] that the shim will not complete: a writer
/// that comes and goes (the reader then reads end of file).
fn release_reader(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path);
}

async fn opened_reader(
    id: &str,
    path: &Path,
    open: tokio::task::JoinHandle<std::io::Result<std::fs::File>>,
) -> Result<pipe::Receiver> {
    let file = match tokio::time::timeout(OPEN_TIMEOUT, open).await {
        Ok(Ok(Ok(file))) => file,
        Ok(Ok(Err(e))) => return Err(Error::io(format!("open {}", path.display()), e)),
        Ok(Err(e)) => {
            return Err(Error::container(id, format!("open {}", path.display()), e));
        }
        Err(_) => {
            release_reader(path);
            return Err(runtime_error(
                id,
                format!("the shim did not open {}", path.display()),
            ));
        }
    };
    pipe::Receiver::from_file(file).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// Starts `request` in container `id` with its streams handed back.
pub(super) async fn interactive(
    inner: &Arc<Inner>,
    id: &str,
    request: ExecRequest,
) -> Result<ExecSession> {
    let (exec_id, process) = inner
        .exec_process(id, &request.command, request.tty)
        .await?;
    let dir = inner.container_dir(id)?;
    let fifos = Fifos {
        stdin: request.stdin.then(|| dir.join(format!("{exec_id}.stdin"))),
        stdout: dir.join(format!("{exec_id}.stdout")),
        stderr: (!request.tty).then(|| dir.join(format!("{exec_id}.stderr"))),
    };
    for path in fifos.paths() {
        if let Err(e) = make_fifo(id, &path) {
            fifos.remove().await;
            return Err(e);
        }
    }
    let stdout_open = open_reader(fifos.stdout.clone());
    let stderr_open = fifos.stderr.clone().map(open_reader);
    let path_text = |path: &Option<PathBuf>| {
        path.as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    };
    let client = inner.client.clone();
    let started = async {
        client
            .tasks()
            .exec(client.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: path_text(&fifos.stdin),
                stdout: fifos.stdout.display().to_string(),
                stderr: path_text(&fifos.stderr),
                terminal: request.tty,
                spec: Some(process),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|status| call_error(id, &format!("exec {:?}", request.command), &status))?;
        client
            .tasks()
            .start(client.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|status| {
                call_error(id, &format!("start exec {:?}", request.command), &status)
            })?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = started {
        release_reader(&fifos.stdout);
        if let Some(stderr) = &fifos.stderr {
            release_reader(stderr);
        }
        delete_process(&client, id, &exec_id).await;
        fifos.remove().await;
        return Err(e);
    }

    // From here on, the guard kills the command if the session is dropped
    // or setting it up fails.
    let (stdin_path, stdout_path, stderr_path) = (
        fifos.stdin.clone(),
        fifos.stdout.clone(),
        fifos.stderr.clone(),
    );
    let mut guard = KillOnDrop {
        inner: Arc::clone(inner),
        id: id.to_string(),
        exec_id: exec_id.clone(),
        fifos: Some(fifos),
    };
    let stdout = opened_reader(id, &stdout_path, stdout_open).await?;
    let stderr = match (&stderr_path, stderr_open) {
        (Some(path), Some(open)) => Some(opened_reader(id, path, open).await?),
        _ => None,
    };
    let stdin = match stdin_path {
        Some(path) => {
            let opened = tokio::time::timeout(
                OPEN_TIMEOUT,
                tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || std::fs::OpenOptions::new().write(true).open(path)
                }),
            )
            .await;
            let file = match opened {
                Ok(Ok(Ok(file))) => file,
                _ => {
                    return Err(runtime_error(
                        id,
                        format!("the shim did not open {}", path.display()),
                    ));
                }
            };
            let sender = pipe::Sender::from_file(file)
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            let stdin = Stdin {
                sender: Some(sender),
                client: inner.client.clone(),
                id: id.to_string(),
                exec_id: exec_id.clone(),
                closing: None,
                closed: false,
            };
            Some(Box::pin(stdin) as Pin<Box<dyn AsyncWrite + Send>>)
        }
        None => None,
    };
    let resize = request.tty.then(|| {
        let client = inner.client.clone();
        let (id, exec_id) = (id.to_string(), exec_id.clone());
        let handle = tokio::runtime::Handle::current();
        Box::new(move |size: TerminalSize| {
            let (client, id, exec_id) = (client.clone(), id.clone(), exec_id.clone());
            // One short call; a resize lost to a stopping agent is harmless.
            handle.spawn(async move {
                let resized = client
                    .tasks()
                    .resize_pty(client.request(ResizePtyRequest {
                        container_id: id.clone(),
                        exec_id,
                        width: u32::from(size.width),
                        height: u32::from(size.height),
                    }))
                    .await;
                if let Err(status) = resized {
                    tracing::debug!(container = %id, error = %status.message(), "resize failed");
                }
            });
            Ok(())
        }) as c4m_core::ResizeTerminal
    });
    let exit = async move {
        let code = guard
            .inner
            .wait(&guard.id, &guard.exec_id, Duration::MAX)
            .await;
        let fifos = guard.fifos.take();
        delete_process(&guard.inner.client, &guard.id, &guard.exec_id).await;
        if let Some(fifos) = fifos {
            fifos.remove().await;
        }
        let code = code?.ok_or_else(|| runtime_error(&guard.id, "exec wait ended early"))?;
        Ok(i32::try_from(code).unwrap_or(i32::MAX))
    }
    .boxed();
    Ok(ExecSession {
        stdin,
        stdout: Box::pin(stdout),
        stderr: stderr.map(|s| Box::pin(s) as Pin<Box<dyn tokio::io::AsyncRead + Send>>),
        resize,
        exit,
    })
}

/// Kills and forgets an exec whose session went away before it ended.
struct KillOnDrop {
    inner: Arc<Inner>,
    id: String,
    exec_id: String,
    /// Taken once the exec has ended (nothing to kill then).
    fifos: Option<Fifos>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(fifos) = self.fifos.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, id, exec_id) = (
            Arc::clone(&self.inner),
            self.id.clone(),
            self.exec_id.clone(),
        );
        handle.spawn(async move {
            if inner.kill(&id, &exec_id, SIGKILL, false).await.is_ok() {
                let _ = inner.wait(&id, &exec_id, Duration::from_secs(10)).await;
            }
            delete_process(&inner.client, &id, &exec_id).await;
            fifos.remove().await;
        });
    }
}

/// The command's standard input. The shim holds the FIFO open for writing
/// itself until told otherwise (CloseIO), so closing this end is not end of
/// file for the command by itself: shutdown (or drop) also asks the shim.
struct Stdin {
    sender: Option<pipe::Sender>,
    client: Client,
    id: String,
    exec_id: String,
    /// The CloseIO call under way.
    closing: Option<BoxFuture<'static, ()>>,
    closed: bool,
}

fn close_stdin(client: Client, id: String, exec_id: String) -> BoxFuture<'static, ()> {
    async move {
        let closed = client
            .tasks()
            .close_io(client.request(CloseIoRequest {
                container_id: id.clone(),
                exec_id,
                stdin: true,
            }))
            .await;
        if let Err(status) = closed {
            tracing::debug!(container = %id, error = %status.message(), "closing an exec's stdin failed");
        }
    }
    .boxed()
}

fn closed_pipe() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdin is closed")
}

impl AsyncWrite for Stdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.sender.as_mut() {
            Some(sender) => Pin::new(sender).poll_write(cx, buf),
            None => Poll::Ready(Err(closed_pipe())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.sender.as_mut() {
            Some(sender) => Pin::new(sender).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        // Our end first: what was written stays in the FIFO for the shim.
        self.sender = None;
        let this = &mut *self;
        let closing = this.closing.get_or_insert_with(|| {
            close_stdin(this.client.clone(), this.id.clone(), this.exec_id.clone())
        });
        match closing.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.closing = None;
                this.closed = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        self.sender = None;
        if self.closed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(close_stdin(
                self.client.clone(),
                self.id.clone(),
                self.exec_id.clone(),
            ));
        }
    }
}
