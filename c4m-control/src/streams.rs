//! What the API proxies to the node an instance runs on: `pods/log` over
//! HTTP, `pods/exec` and `pods/portforward` over WebSocket (kubectl's
//! protocols, [`c4m_api::stream`]), relayed message for message to the
//! agent, which speaks them itself.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::header;
use axum::response::Response;
use c4m_api::stream::{self as channel, ExecQuery};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as AgentMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as AgentCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::objects::kind;
use crate::{Error, Result};

type Shared = State<Arc<ApiState>>;

/// The query parameters of a log request passed on to the agent.
const LOG_PARAMETERS: [&str; 5] = [
    "follow",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
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
    let node_object = state.objects.get(kind("nodes"), "", node).await?;
    let agent_url = node_object["metadata"]["annotations"][c4m_core::annotations::AGENT_URL]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::Unavailable(format!("node {node} has no agent address")))?;
    Ok((node.to_string(), agent_url.to_string()))
}

/// A `container` parameter must name the instance's container, as
/// Kubernetes insists.
fn check_container(pod: &Value, name: &str, container: &str) -> Result<()> {
    let containers = pod["spec"]["containers"].as_array();
    let names: Vec<&str> = containers
        .into_iter()
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
        .map_err(|e| Error::Unavailable(format!("cannot reach the agent of node {node}: {e}")))?;
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
    State(state): Shared,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let query = query.unwrap_or_default();
    let exec = ExecQuery::parse(&query).map_err(Error::BadRequest)?;
    let upgrade = upgrade.protocols(channel::EXEC_PROTOCOLS);
    let target = Target {
        ns,
        name,
        container: exec.container.clone(),
        path: "exec",
        query: exec.to_query(),
    };
    relay(&state, upgrade, target).await
}

/// `GET .../pods/{name}/portforward?ports=..` upgraded to WebSocket.
pub(crate) async fn pod_port_forward(
    State(state): Shared,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let ports =
        channel::parse_ports(query.as_deref().unwrap_or_default()).map_err(Error::BadRequest)?;
    let query = ports
        .iter()
        .map(|port| format!("ports={port}"))
        .collect::<Vec<_>>()
        .join("&");
    let upgrade = upgrade.protocols([channel::PORT_FORWARD_PROTOCOL, channel::EXEC_PROTOCOL_V4]);
    let target = Target {
        ns,
        name,
        container: None,
        path: "portforward",
        query,
    };
    relay(&state, upgrade, target).await
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
        Err(e) => {
            return Err(Error::Unavailable(format!(
                "cannot reach the agent of node {node}: {e}"
            )));
        }
    };
    let shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |client| pipe(client, agent, shutdown)))
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
            if to_agent.send(message).await.is_err() {
                break;
            }
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
        // client-go reports a close without a code as an error.
        let _ = to_client
            .send(Message::Close(Some(CloseFrame {
                code: u16::from(CloseCode::Normal),
                reason: "".into(),
            })))
            .await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = shutdown.cancelled() => {}
    }
}
