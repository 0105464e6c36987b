//! Exec and port-forward sessions over WebSocket (the channel protocols of
//! [`c4m_api::stream`]), which the control plane relays from kubectl or
//! the CLI.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use c4m_api::stream::{self as channel, ExecQuery};
use c4m_core::{ExecRequest, ExecSession};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::server::{ServerState, placement_of};
use crate::supervisor::Placement;

/// How long output may still flow once the command has exited (a
/// background child holding the pipes must not hold the session forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// `GET .../exec?command=..&stdin=..&tty=..`, upgraded to WebSocket.
pub(crate) async fn exec(
    state: State<Arc<ServerState>>,
    path: Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let parsed = ExecQuery::parse(query.as_deref().unwrap_or_default());
    exec_or_attach(state, path, upgrade, parsed, false).await
}

/// `GET .../attach`, upgraded to WebSocket: the container's own stdin,
/// stdout and stderr in the channels of an exec ([`ContainerRuntime::attach`](c4m_core::ContainerRuntime::attach)).
pub(crate) async fn attach(
    state: State<Arc<ServerState>>,
    path: Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let parsed = ExecQuery::parse_attach(query.as_deref().unwrap_or_default());
    exec_or_attach(state, path, upgrade, parsed, true).await
}

async fn exec_or_attach(
    State(state): State<Arc<ServerState>>,
    Path((ns, name)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
    parsed: Result<ExecQuery, String>,
    attach: bool,
) -> Response {
    let (query, placement) =
        match stream_target(&state, &ns, &name, parsed, |q| q.container.as_deref()) {
            Ok(target) => target,
            Err(response) => return *response,
        };
    let upgrade = upgrade.protocols(channel::EXEC_PROTOCOLS);
    let v5 = upgrade
        .selected_protocol()
        .is_some_and(|p| p == channel::EXEC_PROTOCOL_V5);
    let shutdown = state.shutdown.clone();
    upgrade.on_upgrade(move |socket| async move {
        exec_session(socket, placement, query, v5, attach, shutdown).await;
    })
}

type Sink = SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, channel_id: u8, data: &[u8]) -> bool {
    sink.send(Message::Binary(channel::frame(channel_id, data).into()))
        .await
        .is_ok()
}

/// A normal closure: client-go reports a close without a code as an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: "".into(),
    }))
}

/// How long a closed stream waits for the client's close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Closes the stream, then reads until the client closes too: dropping
/// the connection with its messages unread would reset it, and the client
/// would lose what it has not read yet (the exit status).
async fn close(mut sink: Sink, mut incoming: SplitStream<WebSocket>) {
    let _ = sink.send(normal_close()).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn finish(mut sink: Sink, incoming: SplitStream<WebSocket>, status: serde_json::Value) {
    send(&mut sink, channel::ERROR, status.to_string().as_bytes()).await;
    close(sink, incoming).await;
}

/// Runs a stream's two directions until the client leaves (`upstream`
/// ends), the agent stops, or `downstream` is done; when it closed the
/// stream (`true`), waits for the client's close (see [`close`]).
async fn both_directions(
    upstream: impl Future<Output = ()>,
    downstream: impl Future<Output = bool>,
    shutdown: &CancellationToken,
) {
    tokio::pin!(upstream, downstream);
    tokio::select! {
        _ = &mut upstream => {}
        finished = &mut downstream => {
            if finished {
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut upstream).await;
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

/// What a stream request names: its parsed query and where the instance
/// runs; else the HTTP error to answer.
fn stream_target<T>(
    state: &ServerState,
    ns: &str,
    name: &str,
    query: Result<T, String>,
    container: impl FnOnce(&T) -> Option<&str>,
) -> Result<(T, Placement), Box<Response>> {
    let query =
        query.map_err(|e| Box::new((StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()))?;
    let placement = placement_of(state, ns, name, container(&query))?;
    Ok((query, placement))
}

async fn exec_session(
    socket: WebSocket,
    placement: Placement,
    query: ExecQuery,
    v5: bool,
    attach: bool,
    shutdown: CancellationToken,
) {
    let (mut sink, mut incoming) = socket.split();
    let request = ExecRequest {
        command: query.command.clone(),
        stdin: query.stdin,
        tty: query.tty,
    };
    let session = if attach {
        placement.runtime.attach(&placement.id, request).await
    } else {
        placement
            .runtime
            .exec_interactive(&placement.id, request)
            .await
    };
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            finish(sink, incoming, channel::failure_status(&e.to_string())).await;
            return;
        }
    };
    let ExecSession {
        stdin,
        stdout,
        stderr,
        resize,
        mut exit,
    } = session;

    // Client to command: stdin, resizes, the end of stdin. Its own future,
    // so a command that does not read stdin never holds up its output.
    let mut stdin = stdin;
    let upstream = async {
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            match channel::split_frame(&data) {
                Some((channel::STDIN, data)) => {
                    if let Some(input) = &mut stdin
                        && input.write_all(data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some((channel::RESIZE, data)) => {
                    if let (Some(resize), Some(size)) = (&resize, channel::parse_resize(data))
                        && let Err(e) = resize(size)
                    {
                        tracing::debug!(error = %e, "resize failed");
                    }
                }
                // Dropping stdin is its end of file.
                Some((channel::CLOSE, [channel::STDIN])) if v5 => stdin = None,
                _ => {}
            }
        }
    };

    // Command to client: its output, then its exit status. `false` when
    // the client is gone.
    let output = |reader: std::pin::Pin<Box<dyn AsyncRead + Send>>, id: u8, wanted: bool| {
        ReaderStream::new(reader).map(move |chunk| (id, wanted, chunk))
    };
    let mut outputs = futures::stream::select(
        output(stdout, channel::STDOUT, query.stdout || query.tty).boxed(),
        match stderr {
            Some(stderr) => output(stderr, channel::STDERR, query.stderr).boxed(),
            None => futures::stream::empty().boxed(),
        },
    );
    let downstream = async {
        let mut exit_code: Option<c4m_core::Result<i32>> = None;
        let mut outputs_done = false;
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);
        while !(outputs_done && exit_code.is_some()) {
            tokio::select! {
                chunk = outputs.next(), if !outputs_done => match chunk {
                    Some((id, wanted, Ok(data))) => {
                        if wanted && !send(&mut sink, id, &data).await {
                            return false;
                        }
                    }
                    Some((_, _, Err(e))) => {
                        tracing::debug!(error = %e, "exec output ended with an error");
                    }
                    None => outputs_done = true,
                },
                code = &mut exit, if exit_code.is_none() => {
                    exit_code = Some(code);
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = &mut drain_deadline, if exit_code.is_some() => outputs_done = true,
            }
        }
        let status = match exit_code {
            // An attach ends in success whatever the container's code, as
            // the kubelet's does: the client reads the code from the pod.
            Some(Ok(_)) if attach => channel::exit_status(0),
            Some(Ok(code)) => channel::exit_status(code),
            Some(Err(e)) => channel::failure_status(&e.to_string()),
            None => return false,
        };
        send(&mut sink, channel::ERROR, status.to_string().as_bytes()).await;
        let _ = sink.send(normal_close()).await;
        true
    };
    both_directions(upstream, downstream, &shutdown).await;
    // Returning drops `exit`: unfinished, that kills the command (the
    // client left, or the agent stops); an attach only detaches.
}

/// `GET .../portforward?ports=..`, upgraded to WebSocket: one TCP
/// connection per requested port to where the instance serves it.
pub(crate) async fn port_forward(
    State(state): State<Arc<ServerState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let parsed = channel::parse_ports(query.as_deref().unwrap_or_default());
    let (ports, placement) = match stream_target(&state, &ns, &name, parsed, |_| None) {
        Ok(target) => target,
        Err(response) => return *response,
    };
    let status = match placement.runtime.status(&placement.id).await {
        Ok(status) => status,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let pod_ip = match &state.network {
        Some(network) if placement.runtime.takes_network_namespace() => {
            network.address(&placement.id).await
        }
        _ => None,
    };
    let bindings = crate::supervisor::port_bindings(&status, pod_ip);
    let mut targets = Vec::with_capacity(ports.len());
    for port in &ports {
        let binding = bindings
            .iter()
            .find(|b| b.container_port == *port && b.protocol.eq_ignore_ascii_case("TCP"));
        let Some(binding) = binding else {
            let message = format!("instance {ns}/{name} declares no TCP containerPort {port}\n");
            return (StatusCode::BAD_REQUEST, message).into_response();
        };
        targets.push((*port, format!("{}:{}", binding.host_ip, binding.host_port)));
    }
    let shutdown = state.shutdown.clone();
    upgrade
        .protocols([channel::PORT_FORWARD_PROTOCOL, channel::EXEC_PROTOCOL_V4])
        .on_upgrade(move |socket| forward_session(socket, targets, shutdown))
}

async fn forward_session(
    socket: WebSocket,
    targets: Vec<(u16, String)>,
    shutdown: CancellationToken,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut writers = Vec::with_capacity(targets.len());
    let mut readers = futures::stream::SelectAll::new();
    for (index, (port, address)) in targets.iter().enumerate() {
        let data = channel::port_data_channel(index);
        let error = data + 1;
        for id in [data, error] {
            if sink
                .send(Message::Binary(channel::port_header(id, *port).into()))
                .await
                .is_err()
            {
                return;
            }
        }
        match TcpStream::connect(address).await {
            Ok(connection) => {
                let (read, write) = connection.into_split();
                readers.push(
                    ReaderStream::new(read)
                        .map(move |chunk| (data, chunk))
                        .boxed(),
                );
                writers.push(Some(write));
            }
            Err(e) => {
                let message = format!("cannot connect to port {port} ({address}): {e}");
                send(&mut sink, error, message.as_bytes()).await;
                writers.push(None);
            }
        }
    }
    // The two directions run apart, so one that waits (an instance not
    // reading) never stops the other.
    let downstream = async {
        // Ends when the instance closes (or breaks) every connection.
        while let Some((id, Ok(data))) = readers.next().await {
            if !send(&mut sink, id, &data).await {
                return false;
            }
        }
        let _ = sink.send(normal_close()).await;
        true
    };
    let upstream = async {
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((id, data)) = channel::split_frame(&data) else {
                continue;
            };
            let writer = (id % 2 == 0)
                .then(|| writers.get_mut(usize::from(id / 2)))
                .flatten()
                .and_then(Option::as_mut);
            if let Some(writer) = writer
                && writer.write_all(data).await.is_err()
            {
                // Read on: the client's close is still to come.
                writers[usize::from(id / 2)] = None;
            }
        }
    };
    both_directions(upstream, downstream, &shutdown).await;
}
