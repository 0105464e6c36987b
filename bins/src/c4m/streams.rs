//! `c4m exec` and `c4m port-forward`: the same WebSocket protocols and API
//! paths as kubectl's (`c4m_api::stream`), so both go through one relay in
//! the control plane and one implementation in the agent.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use c4m_api::stream::{self as channel, ExecQuery};
use c4m_core::TerminalSize;
use clap::Args;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::commands::Connection;

/// `c4m exec`.
#[derive(Args)]
pub(crate) struct ExecArgs {
    /// Instance name.
    instance: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    command: Vec<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Run the command on a terminal (this one, put in raw mode).
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

/// Runs the command in the instance; the exit code is the command's.
pub(crate) async fn exec(args: ExecArgs, connection: &Connection) -> Result<ExitCode> {
    let query = ExecQuery {
        command: args.command,
        container: None,
        stdin: args.stdin,
        stdout: true,
        stderr: !args.tty,
        tty: args.tty,
    };
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/exec?{}",
        args.namespace,
        args.instance,
        query.to_query()
    );
    let client = connection.client()?;
    let (socket, protocol) = client.stream(&path, &channel::EXEC_PROTOCOLS).await?;
    let v5 = protocol == channel::EXEC_PROTOCOL_V5;
    let (mut sink, mut incoming) = socket.split();
    // Input and resizes reach the socket through one queue.
    let (outgoing, mut queue) = mpsc::channel::<Vec<u8>>(16);
    let raw = if args.tty {
        let raw = RawTerminal::enter()?;
        spawn_resizes(outgoing.clone());
        Some(raw)
    } else {
        None
    };
    if args.stdin {
        tokio::spawn(forward_stdin(outgoing, v5));
    } else {
        drop(outgoing);
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut exit = None;
    let mut queue_open = true;
    loop {
        tokio::select! {
            message = incoming.next() => {
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("exec stream broke: {e}"),
                };
                match channel::split_frame(&data) {
                    Some((channel::STDOUT, data)) => {
                        stdout.write_all(data).await?;
                        stdout.flush().await?;
                    }
                    Some((channel::STDERR, data)) => {
                        stderr.write_all(data).await?;
                        stderr.flush().await?;
                    }
                    Some((channel::ERROR, data)) => exit = Some(channel::exit_code_of(data)),
                    _ => {}
                }
            }
            message = queue.recv(), if queue_open => match message {
                Some(message) => sink.send(Message::Binary(message.into())).await?,
                None => queue_open = false,
            },
        }
    }
    drop(raw);
    match exit {
        Some(Ok(code)) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        Some(Err(message)) => bail!("{message}"),
        None => bail!("the exec stream ended without the command's exit status"),
    }
}

/// Sends stdin as it comes; at its end, v5 says so (v4 cannot).
async fn forward_stdin(outgoing: mpsc::Sender<Vec<u8>>, v5: bool) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if outgoing
                    .send(channel::frame(channel::STDIN, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    if v5 {
        let _ = outgoing.send(vec![channel::CLOSE, channel::STDIN]).await;
    }
}

/// Sends this terminal's size now and whenever it changes (SIGWINCH).
fn spawn_resizes(outgoing: mpsc::Sender<Vec<u8>>) {
    tokio::spawn(async move {
        let mut changes =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
        loop {
            if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
                let size = TerminalSize {
                    width: size.ws_col,
                    height: size.ws_row,
                };
                let message = channel::frame(channel::RESIZE, &channel::resize_message(size));
                if outgoing.send(message).await.is_err() {
                    return;
                }
            }
            match changes.as_mut() {
                Some(changes) => {
                    if changes.recv().await.is_none() {
                        return;
                    }
                }
                None => return,
            }
        }
    });
}

/// This terminal in raw mode (keys go to the remote terminal as typed)
/// until dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)
            .context("-t needs a terminal on stdin (or leave -t out)")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("put the terminal in raw mode")?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// `c4m port-forward`.
#[derive(Args)]
pub(crate) struct PortForwardArgs {
    /// Instance name.
    instance: String,
    /// `LOCAL:REMOTE` (or `PORT` for both): connections to 127.0.0.1:LOCAL
    /// reach the instance's containerPort REMOTE.
    ports: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
}

/// Listens locally and forwards each connection through its own stream,
/// until interrupted.
pub(crate) async fn port_forward(args: PortForwardArgs, connection: &Connection) -> Result<()> {
    let (local, remote) = match args.ports.split_once(':') {
        Some((local, remote)) => (local, remote),
        None => (args.ports.as_str(), args.ports.as_str()),
    };
    let parse = |port: &str| {
        port.parse::<u16>()
            .with_context(|| format!("{:?} is not a port (expected LOCAL:REMOTE)", args.ports))
    };
    let (local, remote) = (parse(local)?, parse(remote)?);
    if remote == 0 {
        bail!("the remote port cannot be 0");
    }
    let client = connection.client()?;
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/portforward?ports={remote}",
        args.namespace, args.instance
    );
    // Check now that the instance and port exist, as kubectl does.
    let (probe, _) = client
        .stream(&path, &[channel::PORT_FORWARD_PROTOCOL])
        .await?;
    drop(probe);
    let listener = tokio::net::TcpListener::bind((args.address, local))
        .await
        .with_context(|| format!("listen on {}:{local}", args.address))?;
    let bound = listener.local_addr()?;
    println!("Forwarding from {bound} -> {remote}");
    loop {
        let (connection, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let client = client.clone();
        let path = path.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(connection, &client, &path).await {
                eprintln!("error: forwarding to port {remote}: {e:#}");
            }
        });
    }
}

/// One local connection through one stream: the first message on each of
/// the two channels is the port header, dropped; errors are printed.
async fn forward(
    connection: tokio::net::TcpStream,
    client: &c4m_api::Client,
    path: &str,
) -> Result<()> {
    let (socket, _) = client
        .stream(path, &[channel::PORT_FORWARD_PROTOCOL])
        .await?;
    let (mut sink, mut incoming) = socket.split();
    let (mut read, mut write) = connection.into_split();
    // The two directions run apart, so one that waits never stops the other.
    let upstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await? {
                0 => return anyhow::Ok(()),
                n => {
                    let message = channel::frame(channel::PORT_DATA, &buf[..n]);
                    sink.send(Message::Binary(message.into())).await?;
                }
            }
        }
    };
    let downstream = async {
        let mut reader = channel::PortForwardReader::default();
        while let Some(message) = incoming.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => bail!("stream broke: {e}"),
            };
            match reader.read(&data) {
                Some((channel::PORT_DATA, data)) => write.write_all(data).await?,
                Some((_, message)) => bail!("{}", String::from_utf8_lossy(message)),
                None => {}
            }
        }
        write.shutdown().await.ok();
        Ok(())
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        result = &mut downstream => result,
        // The stream has no half-close: after the local end of input the
        // answer still flows until the instance closes.
        result = &mut upstream => match result {
            Ok(()) => downstream.await,
            Err(e) => Err(e),
        },
    }
}
