//! Kubernetes' streaming protocols over WebSocket, as `kubectl exec` (and
//! `c4m exec`, `c4m port-forward`) speak them to the control plane, which
//! relays each message unchanged to the node's agent.
//!
//! Every binary message is one *channel* byte then data. For exec
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io`): 0 stdin, 1 stdout, 2 stderr,
//! 3 error (one `Status` JSON at the end: `Success`, or `Failure` with an
//! `ExitCode` cause), 4 resize (`{"Width":..,"Height":..}`), and in v5 255
//! close (data: the channel the sender will not write again, stdin). For
//! port forwarding (`portforward.k8s.io`), port number *i* of the request
//! has data channel 2*i* and error channel 2*i*+1, and the first message
//! the server sends on each carries the port, 2 bytes little endian.

use c4m_core::TerminalSize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::{Error, Result};

/// A WebSocket opened with [`connect`].
pub type Connection =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (`http://` or `ws://`), presenting `bearer`
/// and offering `protocols`; returns it with the protocol the server
/// chose. A refused upgrade is an error carrying the server's message.
pub async fn connect(
    url: &str,
    bearer: Option<&str>,
    protocols: &[&str],
) -> Result<(Connection, String)> {
    let error = |source: c4m_core::BoxError| Error::Stream {
        url: url.to_string(),
        source,
    };
    let ws_url = match url.split_once("://") {
        Some(("http" | "ws", rest)) => format!("ws://{rest}"),
        _ => {
            return Err(error(
                "streams are opened over http:// (the control plane's and agents' plain HTTP)"
                    .into(),
            ));
        }
    };
    let mut request = ws_url.into_client_request().map_err(|e| error(e.into()))?;
    let headers = request.headers_mut();
    let offered = HeaderValue::from_str(&protocols.join(", ")).map_err(|e| error(e.into()))?;
    headers.insert("Sec-WebSocket-Protocol", offered);
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| error("the token is not a valid header value".into()))?;
        headers.insert("Authorization", value);
    }
    let (connection, response) = match tokio_tungstenite::connect_async(request).await {
        Ok(connected) => connected,
        Err(tungstenite::Error::Http(response)) => {
            let code = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let message = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|status| status["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
            return Err(Error::Api {
                code,
                reason: String::new(),
                message,
            });
        }
        Err(e) => return Err(error(e.into())),
    };
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !protocols.contains(&chosen.as_str()) {
        return Err(error(
            format!("the server chose subprotocol {chosen:?}, not one of {protocols:?}").into(),
        ));
    }
    Ok((connection, chosen))
}

/// Exec subprotocols, most preferred first.
pub const EXEC_PROTOCOLS: [&str; 2] = [EXEC_PROTOCOL_V5, EXEC_PROTOCOL_V4];
/// Exec subprotocol version 5: version 4 plus the close channel.
pub const EXEC_PROTOCOL_V5: &str = "v5.channel.k8s.io";
/// Exec subprotocol version 4: the exit code in the error channel's Status.
pub const EXEC_PROTOCOL_V4: &str = "v4.channel.k8s.io";
/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Channel of the command's standard input (client to server).
pub const STDIN: u8 = 0;
/// Channel of the command's standard output.
pub const STDOUT: u8 = 1;
/// Channel of the command's standard error.
pub const STDERR: u8 = 2;
/// Channel of the final `Status`.
pub const ERROR: u8 = 3;
/// Channel of terminal resizes (client to server).
pub const RESIZE: u8 = 4;
/// v5: the sender closes the channel named in the data.
pub const CLOSE: u8 = 255;

/// A message: `channel` then `data`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message
}

/// A message's channel and data; `None` for an empty message.
pub fn split_frame(message: &[u8]) -> Option<(u8, &[u8])> {
    message
        .split_first()
        .map(|(channel, data)| (*channel, data))
}

/// The error channel's `Status` for an exit code, as the kubelet writes
/// it: `Success` for 0, else `NonZeroExitCode` with an `ExitCode` cause.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error channel's `Status` for a command that could not run.
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

/// The exit code an error channel's `Status` reports; `Err` with its
/// message for a failure that is not an exit code.
pub fn exit_code_of(status: &[u8]) -> Result<i32, String> {
    let status: Value =
        serde_json::from_slice(status).map_err(|e| format!("unreadable exec status: {e}"))?;
    if status["status"] == "Success" {
        return Ok(0);
    }
    let exit_code = status["details"]["causes"].as_array().and_then(|causes| {
        causes
            .iter()
            .find(|cause| cause["reason"] == "ExitCode")
            .and_then(|cause| cause["message"].as_str()?.parse().ok())
    });
    exit_code.ok_or_else(|| {
        status["message"]
            .as_str()
            .unwrap_or("exec failed")
            .to_string()
    })
}

/// A resize message's size; `None` when it is not one.
pub fn parse_resize(data: &[u8]) -> Option<TerminalSize> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let size: Size = serde_json::from_slice(data).ok()?;
    Some(TerminalSize {
        width: size.width,
        height: size.height,
    })
}

/// A resize message's data.
pub fn resize_message(size: TerminalSize) -> Vec<u8> {
    json!({"Width": size.width, "Height": size.height})
        .to_string()
        .into_bytes()
}

/// What an exec request asks for (its query string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecQuery {
    /// The command and its arguments (`command`, repeated).
    pub command: Vec<String>,
    /// The container (`container`); instances have one.
    pub container: Option<String>,
    /// The caller sends stdin (`stdin`).
    pub stdin: bool,
    /// The caller wants stdout (`stdout`).
    pub stdout: bool,
    /// The caller wants stderr (`stderr`).
    pub stderr: bool,
    /// Run on a terminal (`tty`).
    pub tty: bool,
}

impl ExecQuery {
    /// Reads a query string; `Err` names what is wrong.
    pub fn parse(query: &str) -> Result<ExecQuery, String> {
        let parsed = ExecQuery::read(query);
        if parsed.command.is_empty() {
            return Err("exec needs a command (the command parameter)".into());
        }
        parsed.check_streams("exec")?;
        Ok(parsed)
    }

    /// Reads the query string of an attach (`pods/attach`): the streams
    /// and the container, no command.
    pub fn parse_attach(query: &str) -> Result<ExecQuery, String> {
        let parsed = ExecQuery::read(query);
        if !parsed.command.is_empty() {
            return Err("attach takes no command".into());
        }
        parsed.check_streams("attach")?;
        Ok(parsed)
    }

    fn check_streams(&self, what: &str) -> Result<(), String> {
        if self.stdin || self.stdout || self.stderr {
            Ok(())
        } else {
            Err(format!(
                "{what} needs at least one of stdin, stdout and stderr"
            ))
        }
    }

    fn read(query: &str) -> ExecQuery {
        let mut parsed = ExecQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let flag = || matches!(&*value, "1" | "true" | "True");
            match &*key {
                "command" => parsed.command.push(value.into_owned()),
                "container" => parsed.container = Some(value.into_owned()),
                "stdin" | "input" => parsed.stdin = flag(),
                "stdout" | "output" => parsed.stdout = flag(),
                "stderr" | "error" => parsed.stderr = flag(),
                "tty" => parsed.tty = flag(),
                _ => {}
            }
        }
        parsed
    }

    /// The query string saying the same.
    pub fn to_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for argument in &self.command {
            query.append_pair("command", argument);
        }
        if let Some(container) = &self.container {
            query.append_pair("container", container);
        }
        for (key, value) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            if value {
                query.append_pair(key, "true");
            }
        }
        query.finish()
    }
}

/// The ports of a port-forward request (`ports`, repeated or
/// comma-separated), in order: port *i* uses channels 2*i* and 2*i*+1.
pub fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "ports" {
            continue;
        }
        for port in value.split(',') {
            match port.trim().parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {port:?} in the ports parameter")),
            }
        }
    }
    if ports.is_empty() {
        return Err("port forwarding needs a port (the ports parameter)".into());
    }
    if ports.len() > 127 {
        return Err("at most 127 ports can be forwarded at once".into());
    }
    Ok(ports)
}

/// The data channel of port number `index` of a request.
pub fn port_data_channel(index: usize) -> u8 {
    (index * 2) as u8
}

/// The first message on a port's channel: the channel, then the port.
pub fn port_header(channel: u8, port: u16) -> Vec<u8> {
    frame(channel, &port.to_le_bytes())
}

/// The data channel of a one-port forward.
pub const PORT_DATA: u8 = 0;
/// The error channel of a one-port forward.
pub const PORT_ERROR: u8 = 1;

/// The client side of a one-port forward: drops the port header that
/// starts each of its two channels.
#[derive(Debug, Default)]
pub struct PortForwardReader {
    headers_seen: [bool; 2],
}

impl PortForwardReader {
    /// The channel ([`PORT_DATA`] or [`PORT_ERROR`]) and data of a
    /// message; `None` for a port header or another channel.
    pub fn read<'a>(&mut self, message: &'a [u8]) -> Option<(u8, &'a [u8])> {
        let (channel, data) = split_frame(message)?;
        let seen = self.headers_seen.get_mut(usize::from(channel))?;
        if !*seen {
            *seen = true;
            return None;
        }
        Some((channel, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let message = frame(STDOUT, b"hello");
        assert_eq!(message, b"\x01hello");
        assert_eq!(split_frame(&message), Some((STDOUT, &b"hello"[..])));
        assert_eq!(split_frame(&[CLOSE, STDIN]), Some((CLOSE, &[STDIN][..])));
        assert_eq!(split_frame(&[RESIZE]), Some((RESIZE, &[][..])));
        assert_eq!(split_frame(&[]), None);
    }

    #[test]
    fn exit_codes_in_statuses() {
        let encode = |code| exit_status(code).to_string().into_bytes();
        assert_eq!(exit_code_of(&encode(0)), Ok(0));
        assert_eq!(exit_code_of(&encode(3)), Ok(3));
        assert_eq!(exit_code_of(&encode(137)), Ok(137));
        let status = exit_status(3);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        let failure = failure_status("no such container").to_string();
        assert_eq!(
            exit_code_of(failure.as_bytes()),
            Err("no such container".into())
        );
        assert!(exit_code_of(b"not json").is_err());
    }

    #[test]
    fn resizes() {
        let size = TerminalSize {
            width: 132,
            height: 43,
        };
        assert_eq!(parse_resize(&resize_message(size)), Some(size));
        assert_eq!(
            parse_resize(br#"{"Width":80,"Height":24}"#),
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(parse_resize(b"{}"), None);
        assert_eq!(parse_resize(b"garbage"), None);
    }

    #[test]
    fn exec_queries() {
        let query =
            "command=sh&command=-c&command=exit%203&container=app&stdin=true&stdout=true&tty=1";
        let parsed = ExecQuery::parse(query).unwrap();
        assert_eq!(parsed.command, ["sh", "-c", "exit 3"]);
        assert_eq!(parsed.container.as_deref(), Some("app"));
        assert!(parsed.stdin && parsed.stdout && parsed.tty && !parsed.stderr);
        assert_eq!(ExecQuery::parse(&parsed.to_query()).unwrap(), parsed);
        assert!(
            ExecQuery::parse("stdout=true")
                .unwrap_err()
                .contains("command")
        );
        assert!(
            ExecQuery::parse("command=ls")
                .unwrap_err()
                .contains("stdout")
        );
    }

    #[test]
    fn attach_queries() {
        let parsed = ExecQuery::parse_attach("container=app&stdin=true&stdout=true").unwrap();
        assert_eq!(parsed.container.as_deref(), Some("app"));
        assert!(parsed.stdin && parsed.stdout && !parsed.stderr && parsed.command.is_empty());
        assert_eq!(ExecQuery::parse_attach(&parsed.to_query()).unwrap(), parsed);
        assert_eq!(
            ExecQuery::parse_attach("command=ls&stdout=true").unwrap_err(),
            "attach takes no command"
        );
        assert_eq!(
            ExecQuery::parse_attach("container=app").unwrap_err(),
            "attach needs at least one of stdin, stdout and stderr"
        );
    }

    #[test]
    fn port_forward_channels() {
        assert_eq!(parse_ports("ports=8080"), Ok(vec![8080]));
        assert_eq!(
            parse_ports("ports=80,443&ports=8080"),
            Ok(vec![80, 443, 8080])
        );
        assert!(parse_ports("").is_err());
        assert!(parse_ports("ports=0").is_err());
        assert!(parse_ports("ports=http").is_err());
        assert_eq!(port_data_channel(0), 0);
        assert_eq!(port_data_channel(2), 4);
        // 8080 = 0x1f90, little endian after the channel byte.
        assert_eq!(port_header(1, 8080), [1, 0x90, 0x1f]);

        let mut reader = PortForwardReader::default();
        assert_eq!(reader.read(&port_header(PORT_DATA, 8080)), None);
        assert_eq!(reader.read(&port_header(PORT_ERROR, 8080)), None);
        assert_eq!(reader.read(b"\x00hi"), Some((PORT_DATA, &b"hi"[..])));
        // Two bytes after the header are data, not another header.
        assert_eq!(
            reader.read(b"\x00\x90\x1f"),
            Some((PORT_DATA, &b"\x90\x1f"[..]))
        );
        assert_eq!(
            reader.read(b"\x01refused"),
            Some((PORT_ERROR, &b"refused"[..]))
        );
        assert_eq!(reader.read(b"\x02other"), None);
        assert_eq!(reader.read(b""), None);
    }
}
