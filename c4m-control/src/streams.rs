//! What the API proxies to the node an instance runs on: `pods/log` over
//! HTTP, `pods/exec` and `pods/portforward` over WebSocket (kubectl's
//! protocols, [`c4m_api::stream`]), relayed message for message to the
//! agent, which speaks them itself. kubectl's port forwarding is SPDY
//! tunnelled in a WebSocket: the control plane ends the SPDY session and
//! bridges each forwarded connection to an agent stream.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use c4m_api::stream::{self as channel, ExecQuery};
use c4m_core::{SpdyCodec, SpdyFrame};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as AgentMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as AgentCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::objects::kind;
use crate::{Error, Result};

/// The WebSocket subprotocol of tunnelled SPDY port forwarding.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

type Shared = State<Arc<ApiState>>;

/// How long a closed stream waits for the other side's close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The query parameters of a log request passed on to the agent.
const LOG_PARAMETERS: [&str; 8] = [
    "container",
    "follow",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
    "previous",
];

/// The instance's node and the URL of that node's agent.
async fn agent_of(
    state: &ApiState,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(String, String)> {
    let pod = state.objects.get(kind("pods"), ns, name).await?;
    if let Some(container) = container {
        check_container(&pod, name, container)?;
    }
    let node = crate::pods::node_name(&pod).ok_or_else(|| {
        Error::BadRequest(format!("instance {name} is not scheduled to a node yet"))
    })?;
    let agent_url = crate::api::agent_url(state, node).await?;
    Ok((node.to_string(), agent_url))
}

/// A `container` parameter must name one of the instance's containers
/// (app, init or ephemeral), as Kubernetes insists.
fn check_container(pod: &Value, name: &str, container: &str) -> Result<()> {
    let spec = &pod["spec"];
    let lists = [
        &spec["containers"],
        &spec["initContainers"],
        &spec["ephemeralContainers"],
    ];
    let names: Vec<&str> = lists
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    if names.contains(&container) {
        return Ok(());
    }
    Err(Error::BadRequest(format!(
        "container {container} is not valid for pod {name}"
    )))
}

/// `GET .../pods/{name}/log`: streamed from the node's agent.
pub(crate) async fn pod_log(
    State(state): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    if let Some(seconds) = query.get("sinceSeconds") {
        c4m_api::log_since_seconds(seconds, std::time::SystemTime::now())
            .map_err(Error::BadRequest)?;
    }
    let container = query.get("container").map(String::as_str);
    let (node, agent_url) = agent_of(&state, &ns, &name, container).await?;
    let forwarded: Vec<(&str, &str)> = LOG_PARAMETERS
        .iter()
        .filter_map(|key| Some((*key, query.get(*key)?.as_str())))
        .collect();
    let response = state
        .http
        .get(format!("{agent_url}/v1/instances/{ns}/{name}/log"))
        .query(&forwarded)
        .bearer_auth(&state.agent_token)
        .send()
        .await
        .map_err(|e| Error::agent_unreachable(&node, e))?;
    if !response.status().is_success() {
        let code = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        return Err(agent_refused(code, text.trim(), &node, &ns, &name));
    }
    let shutdown = state.shutdown.clone();
    let body = response
        .bytes_stream()
        .take_until(shutdown.cancelled_owned());
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}

/// An agent's refusal as the API's error.
fn agent_refused(code: u16, message: &str, node: &str, ns: &str, name: &str) -> Error {
    match code {
        404 => Error::NotFound {
            kind: "instance".into(),
            name: format!("{ns}/{name} on node {node}"),
        },
        400 => Error::BadRequest(message.to_string()),
        _ => Error::Unavailable(format!("agent of node {node} answered {code}: {message}")),
    }
}

/// `GET .../pods/{name}/exec` upgraded to WebSocket.
pub(crate) async fn pod_exec(
    state: Shared,
    path: Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let exec = ExecQuery::parse(&query.unwrap_or_default()).map_err(Error::BadRequest)?;
    relay_exec(state, path, upgrade, "exec", exec).await
}

/// `GET .../pods/{name}/attach` upgraded to WebSocket: the container's
/// own streams, in the channels of an exec.
pub(crate) async fn pod_attach(
    state: Shared,
    path: Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let attach = ExecQuery::parse_attach(&query.unwrap_or_default()).map_err(Error::BadRequest)?;
    relay_exec(state, path, upgrade, "attach", attach).await
}

async fn relay_exec(
    State(state): Shared,
    Path((ns, name)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
    path: &'static str,
    query: ExecQuery,
) -> Result<Response> {
    let upgrade = upgrade.protocols(channel::EXEC_PROTOCOLS);
    let target = Target {
        ns,
        name,
        container: query.container.clone(),
        path,
        query: query.to_query(),
    };
    relay(&state, upgrade, target).await
}

/// `GET .../pods/{name}/portforward` upgraded to WebSocket: kubectl's
/// tunnelled SPDY (`c4m_core::SpdyCodec`), or the channel protocol with `?ports=..`
/// (`c4m port-forward`), relayed to the agent.
pub(crate) async fn pod_port_forward(
    State(state): Shared,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let upgrade = upgrade.protocols([
        TUNNEL_PROTOCOL,
        channel::PORT_FORWARD_PROTOCOL,
        channel::EXEC_PROTOCOL_V4,
    ]);
    if upgrade
        .selected_protocol()
        .is_some_and(|p| p == TUNNEL_PROTOCOL)
    {
        let (_, agent_url) = agent_of(&state, &ns, &name, None).await?;
        let target = format!("{agent_url}/v1/instances/{ns}/{name}/portforward");
        let token = state.agent_token.clone();
        let shutdown = state.shutdown.clone();
        return Ok(upgrade.on_upgrade(move |client| spdy_session(client, target, token, shutdown)));
    }
    let ports =
        channel::parse_ports(query.as_deref().unwrap_or_default()).map_err(Error::BadRequest)?;
    let query = ports
        .iter()
        .map(|port| format!("ports={port}"))
        .collect::<Vec<_>>()
        .join("&");
    let target = Target {
        ns,
        name,
        container: None,
        path: "portforward",
        query,
    };
    relay(&state, upgrade, target).await
}

/// One forwarded connection of a SPDY session: its two streams, as they
/// are announced, and the queue to its bridge once both are.
#[derive(Default)]
struct SpdyForward {
    data: Option<u32>,
    error: Option<u32>,
    port: Option<u16>,
    input: Option<mpsc::Sender<Bytes>>,
}

/// Serves kubectl's tunnelled SPDY: every stream is accepted, and each
/// pair (`requestID`) is bridged to its own agent stream for its port.
async fn spdy_session(
    client: WebSocket,
    agent_target: String,
    token: String,
    shutdown: CancellationToken,
) {
    let (mut to_client, mut from_client) = client.split();
    // Everything for the client goes through one queue and its own
    // writer, so reading the client (and feeding bridges, which may wait)
    // never holds up what bridges send back.
    let (frames, mut queued) = mpsc::channel::<Vec<u8>>(64);
    let writer = async move {
        while let Some(frame) = queued.recv().await {
            if to_client.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        let _ = to_client.send(normal_close()).await;
    };
    let reader = async move {
        let mut codec = SpdyCodec::default();
        let mut forwards: HashMap<String, SpdyForward> = HashMap::new();
        let mut request_of: HashMap<u32, String> = HashMap::new();
        // Dropped with the reader: every bridge ends with it, and then the
        // writer (the queue closes).
        let mut bridges = tokio::task::JoinSet::new();
        'session: while let Some(Ok(message)) = from_client.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            codec.push(&bytes);
            loop {
                let frame = match codec.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "port-forward session ends");
                        break 'session;
                    }
                };
                let reply = match frame {
                    SpdyFrame::SynStream { stream, headers } => {
                        let header = |name: &str| {
                            headers
                                .iter()
                                .find(|(n, _)| n == name)
                                .map(|(_, v)| v.as_str())
                        };
                        let request = header("requestid").unwrap_or_default().to_string();
                        let forward = forwards.entry(request.clone()).or_default();
                        match header("streamtype") {
                            Some("data") => forward.data = Some(stream),
                            Some("error") => forward.error = Some(stream),
                            _ => {}
                        }
                        forward.port = header("port").and_then(|p| p.parse().ok());
                        request_of.insert(stream, request);
                        if let (Some(data), Some(error), Some(port), None) =
                            (forward.data, forward.error, forward.port, &forward.input)
                        {
                            let (input, input_rx) = mpsc::channel(16);
                            forward.input = Some(input);
                            let bridge = SpdyBridge {
                                url: format!("{agent_target}?ports={port}"),
                                token: token.clone(),
                                data,
                                error,
                            };
                            bridges.spawn(bridge.run(input_rx, frames.clone()));
                        }
                        Some(codec.syn_reply(stream))
                    }
                    SpdyFrame::Data { stream, data, .. } => {
                        let input = request_of
                            .get(&stream)
                            .and_then(|request| forwards.get(request))
                            .filter(|forward| forward.data == Some(stream))
                            .and_then(|forward| forward.input.clone());
                        if let Some(input) = input
                            && !data.is_empty()
                        {
                            let _ = input.send(data).await;
                        }
                        None
                    }
                    SpdyFrame::Reset { stream } => {
                        // Dropping the bridge's input ends it.
                        if let Some(request) = request_of.remove(&stream) {
                            forwards.remove(&request);
                        }
                        None
                    }
                    SpdyFrame::Ping { id } => Some(SpdyCodec::ping(id)),
                    SpdyFrame::GoAway => break 'session,
                    SpdyFrame::Ignored => None,
                };
                if let Some(reply) = reply
                    && frames.send(reply).await.is_err()
                {
                    break 'session;
                }
            }
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        _ = reader => {
            let _ = tokio::time::timeout(CLOSE_WAIT, &mut writer).await;
        }
        _ = &mut writer => {}
        _ = shutdown.cancelled() => {}
    }
}

/// One forwarded connection: SPDY streams on one side, an agent stream
/// on the other.
struct SpdyBridge {
    url: String,
    token: String,
    data: u32,
    error: u32,
}

impl SpdyBridge {
    async fn run(self, mut input: mpsc::Receiver<Bytes>, frames: mpsc::Sender<Vec<u8>>) {
        let agent = match channel::connect(
            &self.url,
            Some(&self.token),
            &[channel::PORT_FORWARD_PROTOCOL],
        )
        .await
        {
            Ok((agent, _)) => agent,
            Err(e) => {
                let message = e.to_string();
                let _ = frames
                    .send(SpdyCodec::data(self.error, false, message.as_bytes()))
                    .await;
                self.finish(&frames).await;
                return;
            }
        };
        let (mut to_agent, mut from_agent) = agent.split();
        let mut reader = channel::PortForwardReader::default();
        loop {
            tokio::select! {
                data = input.recv() => {
                    let Some(data) = data else {
                        // kubectl reset the streams: nothing more to say.
                        let _ = to_agent.send(AgentMessage::Close(None)).await;
                        return;
                    };
                    let message = channel::frame(channel::PORT_DATA, &data);
                    if to_agent.send(AgentMessage::Binary(message.into())).await.is_err() {
                        break;
                    }
                }
                message = from_agent.next() => {
                    let message = match message {
                        Some(Ok(AgentMessage::Binary(message))) => message,
                        Some(Ok(AgentMessage::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => continue,
                    };
                    let frame = match reader.read(&message) {
                        Some((channel::PORT_DATA, data)) => SpdyCodec::data(self.data, false, data),
                        Some((_, error)) => SpdyCodec::data(self.error, false, error),
                        None => continue,
                    };
                    if frames.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
        self.finish(&frames).await;
    }

    /// Ends both streams (FIN): kubectl then closes its local connection.
    async fn finish(&self, frames: &mpsc::Sender<Vec<u8>>) {
        for stream in [self.data, self.error] {
            let _ = frames.send(SpdyCodec::data(stream, true, &[])).await;
        }
    }
}

/// Where a stream goes on the agent.
struct Target {
    ns: String,
    name: String,
    container: Option<String>,
    path: &'static str,
    query: String,
}

/// Opens the same stream to the instance's agent, then upgrades the
/// client's request and relays both ways until either side closes. The
/// agent is dialled first so that its refusal is the client's HTTP error.
async fn relay(state: &ApiState, upgrade: WebSocketUpgrade, target: Target) -> Result<Response> {
    let Target {
        ns,
        name,
        container,
        path,
        query,
    } = target;
    let protocol = upgrade.selected_protocol().cloned().ok_or_else(|| {
        Error::BadRequest(format!(
            "{path} is served over WebSocket with the {:?} subprotocols",
            [
                channel::EXEC_PROTOCOL_V5,
                channel::EXEC_PROTOCOL_V4,
                channel::PORT_FORWARD_PROTOCOL
            ]
        ))
    })?;
    let protocol = protocol
        .to_str()
        .map_err(|_| Error::BadRequest("unreadable subprotocol".into()))?
        .to_string();
    let (node, agent_url) = agent_of(state, &ns, &name, container.as_deref()).await?;
    let url = format!("{agent_url}/v1/instances/{ns}/{name}/{path}?{query}");
    let agent = match channel::connect(&url, Some(&state.agent_token), &[&protocol]).await {
        Ok((agent, _)) => agent,
        Err(c4m_api::Error::Api { code, message, .. }) => {
            return Err(agent_refused(code, &message, &node, &ns, &name));
        }
        Err(e) => return Err(Error::agent_unreachable(node, e)),
    };
    let shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |client| pipe(client, agent, shutdown)))
}

/// A normal closure: client-go reports a close without a code as an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: u16::from(CloseCode::Normal),
        reason: "".into(),
    }))
}

/// Moves messages between the client and the agent until one side ends.
async fn pipe(client: WebSocket, agent: channel::Connection, shutdown: CancellationToken) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_agent, mut from_agent) = agent.split();
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            let message = match message {
                Message::Binary(data) => AgentMessage::Binary(data),
                Message::Text(text) => AgentMessage::text(text.as_str()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            // Read on even when the agent is gone, until the client closes.
            let _ = to_agent.send(message).await;
        }
        let _ = to_agent
            .send(AgentMessage::Close(Some(AgentCloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    };
    let downstream = async {
        while let Some(Ok(message)) = from_agent.next().await {
            let message = match message {
                AgentMessage::Binary(data) => Message::Binary(data),
                AgentMessage::Text(text) => Message::text(text.as_str()),
                AgentMessage::Close(_) => break,
                _ => continue,
            };
            if to_client.send(message).await.is_err() {
                break;
            }
        }
        let _ = to_client.send(normal_close()).await;
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        _ = &mut upstream => {}
        _ = &mut downstream => {
            // Wait for the client's close: dropping the connection with its
            // messages unread would reset it, and it would lose what it
            // has not read yet (the exit status).
            let _ = tokio::time::timeout(CLOSE_WAIT, &mut upstream).await;
        }
        _ = shutdown.cancelled() => {}
    }
}
