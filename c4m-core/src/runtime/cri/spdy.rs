//! The client side of a CRI streaming server's exec: the URL the runtime's
//! `Exec` answers, upgraded to SPDY/3.1 with Kubernetes' remote command
//! protocol `v4.channel.k8s.io` (what kubelet's `kubectl exec` proxy
//! speaks). The WebSocket flavour of `v4` cannot close standard input, so
//! SPDY it is: one stream each for the error (the final `Status`), stdin,
//! stdout, stderr and terminal resizes.
//!
//! Only what that exchange needs is spoken: SYN_STREAM (headers compressed
//! with zlib without the SPDY dictionary, which the receiving side accepts
//! since the stream does not ask for it), DATA with FIN, PING replies.
//! Replies' headers are not read; flow control is not enforced by the
//! server (Go's spdystream), so no window updates are sent.

use std::pin::Pin;

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::runtime::{ExecRequest, ExecSession, TerminalSize};

/// The remote command protocol version asked for.
const PROTOCOL: &str = "v4.channel.k8s.io";
/// SPDY version 3 control frame marker (control bit and version).
const CONTROL: u16 = 0x8003;
const SYN_STREAM: u16 = 1;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;
/// Buffer between the caller and the frame pumps.
const PIPE: usize = 64 * 1024;
/// Largest frame accepted (the length field has 24 bits).
const MAX_FRAME: usize = 1 << 24;

/// Stream ids: the client's are odd, in the order kubectl opens them.
const ERROR: u32 = 1;
const STDIN: u32 = 3;
const STDOUT: u32 = 5;
const STDERR: u32 = 7;
const RESIZE: u32 = 9;

/// Starts `request` at the streaming server's `url` (for container `id`);
/// a setup error is a message for the caller to put in context.
pub(super) async fn exec(
    id: &str,
    url: &str,
    request: &ExecRequest,
) -> Result<ExecSession, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("the runtime's exec URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "the runtime's exec URL {url:?} is not plain http (TLS streaming is not supported)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("the runtime's exec URL {url:?} names no host"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut connection = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("connect to the runtime's streaming server {authority}: {e}"))?;
    let upgrade = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
    );
    connection
        .write_all(upgrade.as_bytes())
        .await
        .map_err(|e| format!("send the exec upgrade: {e}"))?;
    let head = read_head(&mut connection).await?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 101 ") {
        return Err(format!(
            "the streaming server refused the exec upgrade: {status_line}"
        ));
    }

    let (mut reader, mut writer) = connection.into_split();
    let mut headers = HeaderCompressor::new();
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
    for (id, kind) in &streams {
        // The client never writes to the error stream: it is half-closed
        // from the start, as kubectl does.
        let flags = if *id == ERROR { FLAG_FIN } else { 0 };
        opening.extend(syn_stream(
            *id,
            flags,
            &headers.block(&[("streamtype", kind)])?,
        ));
    }
    writer
        .write_all(&opening)
        .await
        .map_err(|e| format!("open the exec streams: {e}"))?;

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
                        let _ = frames.send(data(STDIN, FLAG_FIN, &[]));
                        break;
                    }
                    Ok(n) => {
                        if frames.send(data(STDIN, 0, &buf[..n])).is_err() {
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
                .send(data(RESIZE, 0, json.as_bytes()))
                .map(drop)
                .map_err(|_| runtime(&id, "resize: the exec has ended"))
        }) as crate::runtime::ResizeTerminal
    });

    let (done, exit) = oneshot::channel();
    let demux = Demux {
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
    let abort = reading.abort_handle();
    let guard = scopeguard(move || abort.abort());
    let id = id.to_string();
    let exit = async move {
        let _guard = guard;
        let status = exit
            .await
            .map_err(|_| runtime(&id, "the exec stream ended without a status"))?
            .map_err(|message| runtime(&id, message))?;
        exit_code(&status).map_err(|message| runtime(&id, message))
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

fn runtime(id: &str, message: impl Into<String>) -> crate::Error {
    crate::Error::Runtime {
        id: id.to_string(),
        message: message.into(),
    }
}

/// Runs `cleanup` when dropped.
fn scopeguard(cleanup: impl FnOnce() + Send + 'static) -> impl Send + 'static {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(cleanup) = self.0.take() {
                cleanup();
            }
        }
    }
    Guard(Some(cleanup))
}

/// Reads an HTTP response head (to the blank line), byte by byte so
/// nothing of the SPDY frames after it is consumed.
async fn read_head(connection: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("the streaming server's response head is too long".into());
        }
        let byte = connection
            .read_u8()
            .await
            .map_err(|e| format!("read the exec upgrade response: {e}"))?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// SPDY/3 header blocks, compressed with one zlib stream per connection
/// direction (sync-flushed after each block).
struct HeaderCompressor(Compress);

impl HeaderCompressor {
    fn new() -> Self {
        HeaderCompressor(Compress::new(Compression::fast(), true))
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, String> {
        let mut plain = Vec::new();
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        plain.extend(len(headers.len()));
        for (name, value) in headers {
            for text in [name, value] {
                plain.extend(len(text.len()));
                plain.extend(text.as_bytes());
            }
        }
        // Room for the worst case of deflate plus the flush marker; grown
        // and resumed if a call still fills it.
        let mut out = Vec::with_capacity(plain.len() * 2 + 128);
        let start = self.0.total_in();
        loop {
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            self.0
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| format!("compress exec stream headers: {e}"))?;
            let all_in = self.0.total_in() - start == plain.len() as u64;
            if all_in && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        Ok(out)
    }
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend(CONTROL.to_be_bytes());
    frame.extend(kind.to_be_bytes());
    frame.push(flags);
    frame.extend(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes()[1..]);
    frame.extend(payload);
    frame
}

fn syn_stream(id: u32, flags: u8, header_block: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(10 + header_block.len());
    payload.extend(id.to_be_bytes());
    payload.extend(0u32.to_be_bytes()); // associated stream
    payload.extend([0, 0]); // priority, slot
    payload.extend(header_block);
    control_frame(SYN_STREAM, flags, &payload)
}

fn data(id: u32, flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + bytes.len());
    frame.extend((id & 0x7fff_ffff).to_be_bytes());
    frame.push(flags);
    frame.extend(&u32::try_from(bytes.len()).unwrap_or(0).to_be_bytes()[1..]);
    frame.extend(bytes);
    frame
}

/// Sorts the server's frames into the caller's streams.
struct Demux {
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    /// What the error stream carried: the final `Status`.
    status: Vec<u8>,
    frames: mpsc::UnboundedSender<Vec<u8>>,
}

impl Demux {
    /// Reads frames until the error stream ends (the command's status) or
    /// the connection does; the status's JSON.
    async fn run(mut self, reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, String> {
        let mut buf = BytesMut::with_capacity(PIPE);
        loop {
            let Some((header, payload)) = next_frame(reader, &mut buf).await? else {
                return Ok(self.status);
            };
            let flags = header[4];
            if header[0] & 0x80 != 0 {
                let kind = u16::from_be_bytes([header[2], header[3]]);
                match kind {
                    PING => {
                        let _ = self.frames.send(control_frame(PING, 0, &payload));
                    }
                    RST_STREAM => {
                        let id = stream_id(&payload);
                        // The server resets what is left as it closes, which
                        // may come after the status without a FIN.
                        if id == ERROR {
                            return Ok(self.status);
                        }
                        self.close(id);
                    }
                    GOAWAY => return Ok(self.status),
                    // SYN_REPLY, SETTINGS, WINDOW_UPDATE, ...: nothing to do.
                    _ => {}
                }
                continue;
            }
            let id = stream_id(&header);
            match id {
                ERROR => self.status.extend_from_slice(&payload),
                STDOUT | STDERR => {
                    let pipe = if id == STDOUT {
                        &mut self.stdout
                    } else {
                        &mut self.stderr
                    };
                    // A caller that stopped reading loses the rest, not the
                    // exit code.
                    if let Some(pipe) = pipe
                        && pipe.write_all(&payload).await.is_err()
                    {
                        self.close(id);
                    }
                }
                _ => {}
            }
            if flags & FLAG_FIN != 0 {
                if id == ERROR {
                    return Ok(self.status);
                }
                self.close(id);
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

fn stream_id(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff
}

/// The next frame's 8-byte header and payload; `None` at a clean end of
/// the connection.
async fn next_frame(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<Option<([u8; 8], Vec<u8>)>, String> {
    loop {
        if buf.len() >= 8 {
            let length = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
            if length >= MAX_FRAME {
                return Err("the streaming server sent an oversized frame".into());
            }
            if buf.len() >= 8 + length {
                let mut header = [0u8; 8];
                header.copy_from_slice(&buf[..8]);
                buf.advance(8);
                let payload = buf.split_to(length).to_vec();
                return Ok(Some((header, payload)));
            }
        }
        let read = reader
            .read_buf(buf)
            .await
            .map_err(|e| format!("read the exec stream: {e}"))?;
        if read == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("the exec stream ended inside a frame".into())
            };
        }
    }
}

/// The exit code a `v4` status says: `Success` is 0; a failure with cause
/// `ExitCode` is that code; any other failure is an error with its message.
fn exit_code(status: &[u8]) -> Result<i32, String> {
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
    fn frames_have_spdy3_layout() {
        let frame = data(5, FLAG_FIN, b"hi");
        assert_eq!(frame, [0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
        let block = HeaderCompressor::new()
            .block(&[("streamtype", "stdout")])
            .unwrap();
        let syn = syn_stream(5, 0, &block);
        assert_eq!(&syn[..4], &[0x80, 0x03, 0, 1]);
        assert_eq!(usize::from(syn[7]), 10 + block.len());
        // The block inflates back to the SPDY name/value layout.
        let mut plain = Vec::with_capacity(256);
        flate2::Decompress::new(true)
            .decompress_vec(&block, &mut plain, flate2::FlushDecompress::Sync)
            .unwrap();
        let mut expected = vec![0, 0, 0, 1, 0, 0, 0, 10];
        expected.extend(b"streamtype");
        expected.extend([0, 0, 0, 6]);
        expected.extend(b"stdout");
        assert_eq!(plain, expected);
    }

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
