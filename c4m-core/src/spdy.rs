//! The part of SPDY/3.1 that Kubernetes' streams speak, without I/O: the
//! server side of `kubectl port-forward`'s tunnelled SPDY (in the control
//! plane) and the client side of a CRI runtime's exec (the `cri` driver).
//! A stream opens with SYN_STREAM (headers such as `streamType`), is
//! accepted with SYN_REPLY; data flows in DATA frames and FIN ends a
//! direction. Header blocks are zlib streams (one per direction for the
//! whole session) primed with SPDY/3's dictionary.

use crate::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is being cancelled.
#[cfg(test)]
const CANCEL: u32 = 5;
/// Frames larger than this are refused (kubectl sends at most 32 KiB).
const MAX_FRAME: usize = 1 << 20;

/// A frame from the peer that a session acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum SpdyFrame {
    /// Stream data; `fin` ends the sender's direction.
    Data {
        /// The stream.
        stream: u32,
        /// The sender's direction ends.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// A new stream and its headers (names lower case).
    SynStream {
        /// The stream.
        stream: u32,
        /// Its headers.
        headers: Vec<(String, String)>,
    },
    /// The stream is gone.
    Reset {
        /// The stream.
        stream: u32,
    },
    /// To be answered with the same PING.
    Ping {
        /// The PING's id.
        id: u32,
    },
    /// The client ends the session.
    GoAway,
    /// Anything else (SETTINGS, WINDOW_UPDATE, HEADERS, ...): nothing to do.
    Ignored,
}

/// Why the peer's bytes are not a SPDY/3 stream c4m can read; the session
/// must end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpdyError {
    /// A frame is larger than c4m takes.
    #[error("a SPDY frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    /// A control frame of another SPDY version.
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    /// A control frame shorter than its kind's fixed fields.
    #[error("a SPDY control frame is cut short")]
    ControlFrameCutShort,
    /// A header block's zlib stream makes no progress.
    #[error("a SPDY header block does not inflate")]
    HeaderBlockStalled,
    /// A header block's zlib stream asks for a dictionary that does not fit.
    #[error("SPDY header dictionary: {0}")]
    Dictionary(#[source] BoxError),
    /// A header block is not a valid zlib stream.
    #[error("SPDY header block: {0}")]
    HeaderBlock(#[source] BoxError),
    /// A header block inflates to more than c4m takes.
    #[error("a SPDY header block is too large")]
    HeaderBlockTooLarge,
    /// A header block ends inside a name or value.
    #[error("a SPDY header block is cut short")]
    HeaderBlockCutShort,
}

/// Reads the peer's frames from the bytes it sent and writes ours (the
/// header compression state of both directions).
pub struct SpdyCodec {
    input: BytesMut,
    inflate: Decompress,
    deflate: Compress,
}

impl Default for SpdyCodec {
    fn default() -> Self {
        SpdyCodec {
            input: BytesMut::new(),
            inflate: Decompress::new(true),
            deflate: new_deflate(),
        }
    }
}

fn new_deflate() -> Compress {
    let mut deflate = Compress::new(Compression::default(), true);
    // Setting a dictionary on a fresh stream cannot fail.
    let _ = deflate.set_dictionary(&dictionary());
    deflate
}

impl SpdyCodec {
    /// Takes bytes that arrived from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next whole frame received, if any; `Err` for a stream that is
    /// not SPDY/3 (the session must end).
    ///
    /// # Errors
    /// [`SpdyError`] saying what in the peer's bytes is not SPDY/3.
    pub fn next_frame(&mut self) -> Result<Option<SpdyFrame>, SpdyError> {
        if self.input.len() < 8 {
            return Ok(None);
        }
        let length = usize::from(self.input[5]) << 16
            | usize::from(self.input[6]) << 8
            | usize::from(self.input[7]);
        if length > MAX_FRAME {
            return Err(SpdyError::FrameTooLarge(length));
        }
        if self.input.len() < 8 + length {
            return Ok(None);
        }
        let mut frame = self.input.split_to(8 + length).freeze();
        let word = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        if word & 0x8000_0000 == 0 {
            return Ok(Some(SpdyFrame::Data {
                stream: word & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: frame,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let need = |frame: &Bytes, n: usize| {
            if frame.len() < n {
                Err(SpdyError::ControlFrameCutShort)
            } else {
                Ok(())
            }
        };
        Ok(Some(match (word & 0xffff) as u16 {
            SYN_STREAM => {
                need(&frame, 10)?;
                let stream = frame.get_u32() & 0x7fff_ffff;
                frame.advance(6); // associated stream, priority, slot
                let headers = self.headers(&frame)?;
                SpdyFrame::SynStream { stream, headers }
            }
            RST_STREAM => {
                need(&frame, 8)?;
                SpdyFrame::Reset {
                    stream: frame.get_u32() & 0x7fff_ffff,
                }
            }
            PING => {
                need(&frame, 4)?;
                SpdyFrame::Ping {
                    id: frame.get_u32(),
                }
            }
            GOAWAY => SpdyFrame::GoAway,
            _ => SpdyFrame::Ignored,
        }))
    }

    /// Inflates one header block (the session's zlib stream continues).
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4);
        let mut input = block;
        loop {
            out.reserve(4096);
            let (before_in, before_out) = (self.inflate.total_in(), out.len());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            input = &input[consumed..];
            if consumed == 0 && out.len() == before_out && result.is_ok() && !input.is_empty() {
                return Err(SpdyError::HeaderBlockStalled);
            }
            match result {
                Ok(Status::Ok | Status::BufError) if input.is_empty() => break,
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&dictionary())
                        .map_err(|e| SpdyError::Dictionary(e.into()))?;
                }
                Err(e) => return Err(SpdyError::HeaderBlock(e.into())),
            }
            if out.len() > MAX_FRAME {
                return Err(SpdyError::HeaderBlockTooLarge);
            }
        }
        parse_header_block(&out)
    }

    /// A SYN_STREAM opening `stream` with `headers` (FIN: we will send
    /// nothing on it).
    pub fn syn_stream(&mut self, stream: u32, fin: bool, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for text in [name, value] {
                block.extend_from_slice(&(text.len() as u32).to_be_bytes());
                block.extend_from_slice(text.as_bytes());
            }
        }
        let compressed = self.compress(&block);
        let mut frame = control_header(
            SYN_STREAM,
            if fin { FLAG_FIN } else { 0 },
            10 + compressed.len(),
        );
        frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // associated stream, priority, slot
        frame.extend_from_slice(&compressed);
        frame
    }

    /// `block` through our zlib stream, sync-flushed (resumed until the
    /// flush is complete).
    fn compress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() * 2 + 128);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            // Compressing into memory with a sync flush does not fail.
            let _ = self
                .deflate
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync);
            if self.deflate.total_in() - start == block.len() as u64 && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity());
        }
    }

    /// A SYN_REPLY accepting `stream`, with no headers.
    pub fn syn_reply(&mut self, stream: u32) -> Vec<u8> {
        // Zero headers; the compressed form continues our zlib stream.
        let block = self.compress(&[0, 0, 0, 0]);
        let mut frame = control_header(SYN_REPLY, 0, 4 + block.len());
        frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        frame.extend_from_slice(&block);
        frame
    }

    /// A DATA frame.
    pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(8 + data.len());
        frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        frame.push(if fin { FLAG_FIN } else { 0 });
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(data);
        frame
    }

    /// The answer to a PING.
    pub fn ping(id: u32) -> Vec<u8> {
        let mut frame = control_header(PING, 0, 4);
        frame.extend_from_slice(&id.to_be_bytes());
        frame
    }
}

/// Cancels a stream (as a client would).
#[cfg(test)]
fn reset(stream: u32) -> Vec<u8> {
    let mut frame = control_header(RST_STREAM, 0, 8);
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(&CANCEL.to_be_bytes());
    frame
}

fn control_header(kind: u16, flags: u8, length: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + length);
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    frame
}

/// A header block: a count, then length-prefixed names and values (all
/// 32-bit big endian); several values of one name are NUL-separated.
fn parse_header_block(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let count_bytes = block.get(..4).ok_or(SpdyError::HeaderBlockCutShort)?;
    let count = u32::from_be_bytes([
        count_bytes[0],
        count_bytes[1],
        count_bytes[2],
        count_bytes[3],
    ]);
    let mut rest = &block[4..];
    let mut next = || -> Result<&[u8], SpdyError> {
        let length = rest.get(..4).ok_or(SpdyError::HeaderBlockCutShort)?;
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let value = rest
            .get(4..4 + length)
            .ok_or(SpdyError::HeaderBlockCutShort)?;
        rest = &rest[4 + length..];
        Ok(value)
    };
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(next()?).to_ascii_lowercase();
        let values = String::from_utf8_lossy(next()?).into_owned();
        for value in values.split('\0') {
            headers.push((name.clone(), value.to_string()));
        }
    }
    Ok(headers)
}

/// SPDY/3's header compression dictionary (draft-mbelshe-httpbis-spdy-00,
/// 2.6.10.1): length-prefixed names and values, then a run of common text.
fn dictionary() -> Vec<u8> {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TEXT: &str = "100101201202205206300302303304305306307402405406407408409410411412\
413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server \
Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct \
Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,\
image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut dictionary = Vec::with_capacity(1423);
    for word in WORDS {
        dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dictionary.extend_from_slice(word.as_bytes());
    }
    dictionary.extend_from_slice(TEXT.as_bytes());
    dictionary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        // Its Adler-32 is what zlib streams primed with it name.
        let mut deflate = Compress::new(Compression::default(), true);
        assert_eq!(deflate.set_dictionary(&dictionary).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn client_frames_are_read_across_messages() {
        let mut client = SpdyCodec::default();
        let mut bytes = client.syn_stream(
            1,
            false,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        );
        bytes.extend(client.syn_stream(
            3,
            false,
            &[("streamType", "data"), ("port", "8080"), ("requestID", "0")],
        ));
        bytes.extend(SpdyCodec::data(3, false, b"GET / HTTP/1.0\r\n\r\n"));
        bytes.extend(SpdyCodec::data(3, true, b""));
        bytes.extend(SpdyCodec::ping(7));
        bytes.extend(reset(1));
        let mut codec = SpdyCodec::default();
        // Split at an awkward place: frames are read only once whole.
        let (first, second) = bytes.split_at(13);
        codec.push(first);
        assert_eq!(codec.next_frame().unwrap(), None);
        codec.push(second);
        let header = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            codec.next_frame().unwrap(),
            Some(SpdyFrame::SynStream {
                stream: 1,
                headers: header(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0")
                ]),
            })
        );
        assert_eq!(
            codec.next_frame().unwrap(),
            Some(SpdyFrame::SynStream {
                stream: 3,
                headers: header(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            })
        );
        assert_eq!(
            codec.next_frame().unwrap(),
            Some(SpdyFrame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
            })
        );
        assert_eq!(
            codec.next_frame().unwrap(),
            Some(SpdyFrame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new(),
            })
        );
        assert_eq!(codec.next_frame().unwrap(), Some(SpdyFrame::Ping { id: 7 }));
        assert_eq!(
            codec.next_frame().unwrap(),
            Some(SpdyFrame::Reset { stream: 1 })
        );
        assert_eq!(codec.next_frame().unwrap(), None);
    }

    #[test]
    fn replies_inflate_with_the_dictionary() {
        let mut codec = SpdyCodec::default();
        let mut client = Decompress::new(true);
        for stream in [1u32, 3] {
            let reply = codec.syn_reply(stream);
            assert_eq!(&reply[..4], &[0x80, 3, 0, SYN_REPLY as u8]);
            let length = u32::from_be_bytes([0, reply[5], reply[6], reply[7]]) as usize;
            assert_eq!(reply.len(), 8 + length);
            assert_eq!(&reply[8..12], &stream.to_be_bytes());
            let mut out = Vec::with_capacity(64);
            let block = &reply[12..];
            let mut consumed = 0;
            while consumed < block.len() {
                let before = client.total_in();
                match client.decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync) {
                    Ok(_) => {}
                    Err(e) if e.needs_dictionary().is_some() => {
                        client.set_dictionary(&dictionary()).unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
                consumed += (client.total_in() - before) as usize;
            }
            assert_eq!(out, [0, 0, 0, 0], "no headers");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut codec = SpdyCodec::default();
        codec.push(&[0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert!(
            codec
                .next_frame()
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let mut codec = SpdyCodec::default();
        codec.push(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0]);
        assert!(
            codec
                .next_frame()
                .unwrap_err()
                .to_string()
                .contains("cut short")
        );
        let mut codec = SpdyCodec::default();
        codec.push(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]);
        assert!(
            codec
                .next_frame()
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        // A header block that is not a zlib stream.
        let mut codec = SpdyCodec::default();
        let mut frame = control_header(SYN_STREAM, 0, 14);
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        codec.push(&frame);
        assert!(
            codec
                .next_frame()
                .unwrap_err()
                .to_string()
                .contains("header block")
        );
    }
}
