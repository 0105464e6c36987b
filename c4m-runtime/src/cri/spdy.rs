//! The client side of a CRI streaming server's exec: the URL the runtime's
//! `Exec` answers, upgraded to SPDY/3.1 with Kubernetes' remote command
//! protocol `v4.channel.k8s.io` (what kubelet's `kubectl exec` proxy
//! speaks). The WebSocket flavour of `v4` cannot close standard input, so
//! SPDY it is: one stream each for the error (the final `Status`), stdin,
//! stdout, stderr and terminal resizes.
//!
//! The frames are [`SpdyCodec`]'s (the control plane's port-forward uses
//! the same codec as a server); flow control is not enforced by the
//! server (Go's spdystream), so no window updates are sent.

use std::pin::Pin;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use tokio_util::task::AbortOnDropHandle;

use crate::state::runtime_error;
use c4m_core::{Error, ExecRequest, ExecSession, Result, TerminalSize};
use c4m_core::{SpdyCodec, SpdyFrame};

/// The remote command protocol version asked for.
const PROTOCOL: &str = "v4.channel.k8s.io";
/// Buffer between the caller and the frame pumps.
const PIPE: usize = 64 * 1024;

/// Stream ids: the client's are odd, in the order kubectl opens them.
const ERROR: u32 = 1;
const STDIN: u32 = 3;
const STDOUT: u32 = 5;
const STDERR: u32 = 7;
const RESIZE: u32 = 9;

/// Starts `request` at the streaming server's `url` (for container `id`).
pub(super) async fn exec(id: &str, url: &str, request: &ExecRequest) -> Result<ExecSession> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| Error::container(id, format!("the runtime's exec URL {url:?}"), e))?;
    if uri.scheme_str() != Some("http") {
        return Err(runtime_error(
            id,
            format!(
                "the runtime's exec URL {url:?} is not plain http (TLS streaming is not supported)"
            ),
        ));
    }
    let authority = uri.authority().ok_or_else(|| {
        runtime_error(id, format!("the runtime's exec URL {url:?} names no host"))
    })?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut connection = TcpStream::connect(authority.as_str()).await.map_err(|e| {
        Error::container(
            id,
            format!("connect to the runtime's streaming server {authority}"),
            e,
        )
    })?;
    let upgrade = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
    );
    connection
        .write_all(upgrade.as_bytes())
        .await
        .map_err(|e| Error::container(id, "send the exec upgrade", e))?;
    let head = read_head(id, &mut connection).await?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 101 ") {
        return Err(runtime_error(
            id,
            format!("the streaming server refused the exec upgrade: {status_line}"),
        ));
    }

    let (mut reader, mut writer) = connection.into_split();
    let mut codec = SpdyCodec::default();
    let mut streams = vec![(ERROR, "error")];
    if request.stdin {
        streams.push((STDIN, "stdin"));
    }
    streams.push((STDOUT, "stdout"));
    if request.tty {
        streams.push((RESIZE, "resize"));
    } else {
        streams.push((STDERR, "stderr"));
    }
    let mut opening = Vec::new();
    for (stream, kind) in &streams {
        // The client never writes to the error stream: it is half-closed
        // from the start, as kubectl does.
        opening.extend(codec.syn_stream(*stream, *stream == ERROR, &[("streamtype", kind)]));
    }
    writer
        .write_all(&opening)
        .await
        .map_err(|e| Error::container(id, "open the exec streams", e))?;

    // Every frame the client sends after that goes through one writer
    // task, in order; it ends when every sender is gone.
    let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });

    let stdin = request.stdin.then(|| {
        let (caller, mut pump) = tokio::io::duplex(PIPE);
        let frames = frames.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; PIPE];
            loop {
                match pump.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = frames.send(SpdyCodec::data(STDIN, true, &[]));
                        break;
                    }
                    Ok(n) => {
                        if frames
                            .send(SpdyCodec::data(STDIN, false, &buf[..n]))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        Box::pin(caller) as Pin<Box<dyn AsyncWrite + Send>>
    });
    let (stdout_caller, stdout_pump) = tokio::io::duplex(PIPE);
    let (stderr_caller, stderr_pump) = tokio::io::duplex(PIPE);
    let resize = request.tty.then(|| {
        let frames = frames.clone();
        let id = id.to_string();
        Box::new(move |size: TerminalSize| {
            let json = format!(r#"{{"Width":{},"Height":{}}}"#, size.width, size.height);
            frames
                .send(SpdyCodec::data(RESIZE, false, json.as_bytes()))
                .map(drop)
                .map_err(|_| runtime_error(&id, "resize: the exec has ended"))
        }) as c4m_core::ResizeTerminal
    });

    let (done, exit) = oneshot::channel();
    let demux = Demux {
        id: id.to_string(),
        codec,
        stdout: Some(stdout_pump),
        stderr: (!request.tty).then_some(stderr_pump),
        status: Vec::new(),
        frames,
    };
    let reading = tokio::spawn(async move {
        let result = demux.run(&mut reader).await;
        let _ = done.send(result);
    });
    // Dropping the exit future ends the reader, and with it the connection
    // (the writer follows once the stdin pump and resizes are gone).
    let reading = AbortOnDropHandle::new(reading);
    let id = id.to_string();
    let exit = async move {
        let _reading = reading;
        let status = exit
            .await
            .map_err(|_| runtime_error(&id, "the exec stream ended without a status"))??;
        exit_code(&status).map_err(|message| runtime_error(&id, message))
    }
    .boxed();
    Ok(ExecSession {
        stdin,
        stdout: Box::pin(stdout_caller),
        stderr: (!request.tty).then(|| Box::pin(stderr_caller) as Pin<Box<dyn AsyncRead + Send>>),
        resize,
        exit,
    })
}

/// Reads an HTTP response head (to the blank line), byte by byte so
/// nothing of the SPDY frames after it is consumed.
async fn read_head(id: &str, connection: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(runtime_error(
                id,
                "the streaming server's response head is too long",
            ));
        }
        let byte = connection
            .read_u8()
            .await
            .map_err(|e| Error::container(id, "read the exec upgrade response", e))?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Sorts the server's frames into the caller's streams.
struct Demux {
    /// The c4m container the exec runs in.
    id: String,
    /// Parses what the server sends (the session's header state).
    codec: SpdyCodec,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    /// What the error stream carried: the final `Status`.
    status: Vec<u8>,
    frames: mpsc::UnboundedSender<Vec<u8>>,
}

impl Demux {
    /// Reads frames until the error stream ends (the command's status) or
    /// the connection does; the status's JSON.
    async fn run(mut self, reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; PIPE];
        loop {
            let frame = self
                .codec
                .next_frame()
                .map_err(|e| Error::container(&self.id, "the exec stream", e))?;
            let Some(frame) = frame else {
                let read = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::container(&self.id, "read the exec stream", e))?;
                if read == 0 {
                    return Ok(self.status);
                }
                self.codec.push(&buf[..read]);
                continue;
            };
            match frame {
                SpdyFrame::Data { stream, fin, data } => {
                    if stream == ERROR {
                        self.status.extend_from_slice(&data);
                        if fin {
                            return Ok(self.status);
                        }
                        continue;
                    }
                    let pipe = match stream {
                        STDOUT => &mut self.stdout,
                        STDERR => &mut self.stderr,
                        _ => continue,
                    };
                    // A caller that stopped reading loses the rest, not
                    // the exit code.
                    if let Some(pipe) = pipe
                        && pipe.write_all(&data).await.is_err()
                    {
                        self.close(stream);
                    }
                    if fin {
                        self.close(stream);
                    }
                }
                SpdyFrame::Ping { id } => {
                    let _ = self.frames.send(SpdyCodec::ping(id));
                }
                // The server resets what is left as it closes, which may
                // come after the status without a FIN.
                SpdyFrame::Reset { stream: ERROR } | SpdyFrame::GoAway => {
                    return Ok(self.status);
                }
                SpdyFrame::Reset { stream } => self.close(stream),
                // SYN_REPLY and the rest: nothing to do.
                SpdyFrame::SynStream { .. } | SpdyFrame::Ignored => {}
            }
        }
    }

    fn close(&mut self, id: u32) {
        match id {
            STDOUT => self.stdout = None,
            STDERR => self.stderr = None,
            _ => {}
        }
    }
}

/// The exit code a `v4` status says: `Success` is 0; a failure with cause
/// `ExitCode` is that code; any other failure is an error with its message.
fn exit_code(status: &[u8]) -> std::result::Result<i32, String> {
    if status.is_empty() {
        return Err("the exec ended without a status".into());
    }
    let status: serde_json::Value = serde_json::from_slice(status)
        .map_err(|e| format!("the exec's status is not JSON: {e}"))?;
    if status["status"] == "Success" {
        return Ok(0);
    }
    let code = status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|cause| cause["reason"] == "ExitCode")
        .and_then(|cause| cause["message"].as_str()?.parse().ok());
    code.ok_or_else(|| {
        format!(
            "exec failed: {}",
            status["message"].as_str().unwrap_or("no message")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_exit_codes() {
        assert_eq!(exit_code(br#"{"status":"Success"}"#), Ok(0));
        let failed = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(exit_code(failed), Ok(7));
        let broken = br#"{"status":"Failure","message":"no such container"}"#;
        assert!(exit_code(broken).unwrap_err().contains("no such container"));
        assert!(exit_code(b"").is_err());
    }
}
