//! Attaching to an `oci` container's main process (`kubectl attach`).
//! conmon serves the container's streams on its attach socket,
//! `<dir>/attach` (`SOCK_SEQPACKET`): each packet it sends is one read of
//! the container's output, its first byte the pipe it came from (2
//! stdout, 3 stderr); the packets it receives are written to the
//! container's stdin, which it holds only when started with one (`conmon
//! -i`, [`ContainerSpec::stdin`](c4m_core::ContainerSpec::stdin)). The end
//! of our input closes that stdin unless conmon was told to leave it open
//! (`--leave-stdin-open`, for `stdin` without `stdinOnce`).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use nix::sys::socket::{AddressFamily, Shutdown, SockFlag, SockType, UnixAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use super::{Inner, runtime_error};
use crate::state::Records;
use crate::{Error, Result};
use c4m_core::{ContainerState, ExecRequest, ExecSession};

/// conmon's pipe numbers at the start of each packet.
const STDOUT_PIPE: u8 = 2;
const STDERR_PIPE: u8 = 3;
/// conmon sends at most this much output per packet, after the pipe byte.
const PACKET_DATA: usize = 8192;
/// How much output waits for a slow client before conmon is read no more.
const BUFFERED: usize = 256 * 1024;
/// How often the container is looked at for its exit.
const EXIT_POLL: Duration = Duration::from_millis(100);

impl Inner {
    pub(super) async fn attach(
        self: &Arc<Self>,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession> {
        let record = self.load_existing(id).await?;
        let record = self.observe(id, record).await?;
        if record.exit.is_some() {
            return Err(runtime_error(
                id,
                "cannot attach: the container is not running",
            ));
        }
        if request.tty {
            return Err(runtime_error(
                id,
                "cannot attach with a terminal: the oci driver runs containers without one (tty is refused)",
            ));
        }
        if request.stdin && !record.spec.stdin {
            return Err(runtime_error(
                id,
                "cannot attach to stdin: the container was not started with stdin: true",
            ));
        }
        let path = self.container_dir(id)?.join("attach");
        let socket =
            connect(&path).map_err(|e| Error::io(format!("connect to {}", path.display()), e))?;
        let socket = Arc::new(socket);
        // Every task of the attachment ends when it is dropped (a detach)
        // or the container's output ends.
        let detached = CancellationToken::new();
        let (stdout, stdout_writer) = tokio::io::duplex(BUFFERED);
        let (stderr, stderr_writer) = tokio::io::duplex(BUFFERED);
        tokio::spawn(read_output(
            Arc::clone(&socket),
            stdout_writer,
            stderr_writer,
            detached.clone(),
        ));
        let stdin = if request.stdin {
            let (input, reader) = tokio::io::duplex(BUFFERED);
            tokio::spawn(write_input(Arc::clone(&socket), reader, detached.clone()));
            Some(Box::pin(input) as _)
        } else {
            None
        };
        let inner = Arc::clone(self);
        let id = id.to_string();
        let guard = detached.drop_guard();
        let exit = async move {
            let _detach_when_dropped = guard;
            loop {
                let status = match Inner::status(&inner, &id).await {
                    Ok(status) => status,
                    // Removed between two looks (its pod ended and is no
                    // longer assigned): the attachment has ended all the
                    // same, and an attach reports no code of its own.
                    Err(Error::ContainerNotFound(_)) => return Ok(0),
                    Err(e) => return Err(e),
                };
                if let ContainerState::Exited {
                    exit_code, signal, ..
                } = status.state
                {
                    return Ok(exit_code.unwrap_or_else(|| 128 + signal.unwrap_or(0)));
                }
                tokio::time::sleep(EXIT_POLL).await;
            }
        }
        .boxed();
        Ok(ExecSession {
            stdin,
            stdout: Box::pin(stdout),
            stderr: Some(Box::pin(stderr)),
            resize: None,
            exit,
        })
    }
}

/// A non-blocking `SOCK_SEQPACKET` connection to `path`, as a tokio
/// stream (reads and writes on it are whole packets).
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

/// conmon's packets to the client's stdout and stderr, until the socket
/// ends, both are gone, or the attachment is dropped.
async fn read_output(
    socket: Arc<UnixStream>,
    mut stdout: DuplexStream,
    mut stderr: DuplexStream,
    detached: CancellationToken,
) {
    let mut packet = vec![0u8; PACKET_DATA + 1];
    let (mut stdout_open, mut stderr_open) = (true, true);
    while stdout_open || stderr_open {
        tokio::select! {
            _ = detached.cancelled() => return,
            ready = socket.readable() => if ready.is_err() { return },
        }
        let n = match socket.try_read(&mut packet) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "attach socket read failed");
                return;
            }
        };
        let (target, open) = match packet[0] {
            STDOUT_PIPE => (&mut stdout, &mut stdout_open),
            STDERR_PIPE => (&mut stderr, &mut stderr_open),
            _ => continue,
        };
        if *open && target.write_all(&packet[1..n]).await.is_err() {
            *open = false;
        }
    }
}

/// The client's stdin to conmon, a packet per read; its end shuts our
/// side of the socket, which closes the container's stdin (`stdinOnce`).
async fn write_input(
    socket: Arc<UnixStream>,
    mut input: DuplexStream,
    detached: CancellationToken,
) {
    let mut chunk = vec![0u8; PACKET_DATA];
    loop {
        let n = tokio::select! {
            _ = detached.cancelled() => return,
            read = input.read(&mut chunk) => read.unwrap_or(0),
        };
        if n == 0 {
            let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), Shutdown::Write);
            return;
        }
        let mut sent = false;
        while !sent {
            if socket.writable().await.is_err() {
                return;
            }
            match socket.try_write(&chunk[..n]) {
                Ok(_) => sent = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}
