//! W3C Trace Context: `traceparent` is propagated with a new span id per
//! hop, and a trace is started when the request has none (or an invalid one).

use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request};
use tower::{Layer, Service};

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header, passed on untouched with a valid `traceparent`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The id of the span that sent the request (never all zero).
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// The length of a version-00 `traceparent`.
const LEN: usize = 55;

impl TraceParent {
    /// Parses a header value by the W3C rules: lowercase hex, version `ff`
    /// invalid, version `00` exactly 55 characters, a later version at
    /// least that with a `-` after the flags; all-zero ids invalid.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff
            || (version == 0 && value.len() != LEN)
            || (value.len() > LEN && value[LEN] != b'-')
        {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, b) in parent_id.iter_mut().enumerate() {
            *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace with random ids, not sampled (the proxy records no spans
    /// itself; a collector downstream decides).
    pub fn root() -> Self {
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            trace_id = fastrand::u128(..).to_be_bytes();
        }
        TraceParent {
            trace_id,
            parent_id: new_span_id(),
            flags: 0,
        }
    }

    /// The context for the next hop: the same trace and flags, this hop's
    /// new span id as parent.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: new_span_id(),
            ..*self
        }
    }

    /// The version-00 header text.
    pub fn encode(&self) -> [u8; LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; LEN];
        out[0] = b'0';
        out[1] = b'0';
        let mut put = |at: usize, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                out[at + 2 * i] = HEX[usize::from(b >> 4)];
                out[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
            }
        };
        put(3, &self.trace_id);
        put(36, &self.parent_id);
        put(53, &[self.flags]);
        out
    }

    /// The header value.
    pub fn to_header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.encode())
            .expect("hex digits and dashes are a valid header value")
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None, // Uppercase hex is invalid in traceparent.
        }
    }
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// Propagates `traceparent` to the next hop with a new span id, starting a
/// trace when there is none; an invalid `traceparent` is replaced and its
/// `tracestate` dropped, as the specification asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

/// The service of [`TraceContextLayer`].
#[derive(Clone, Debug)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for TraceContextService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        let headers = request.headers_mut();
        let next = match headers
            .get(&TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_bytes()))
        {
            Some(parent) => parent.child(),
            None => {
                headers.remove(&TRACESTATE);
                TraceParent::root()
            }
        };
        headers.insert(TRACEPARENT.clone(), next.to_header());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let t = TraceParent::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            t.trace_id,
            0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes()
        );
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7u64.to_be_bytes());
        assert_eq!(t.flags, 1);
        assert_eq!(&t.encode()[..], SAMPLE.as_bytes());
    }

    #[test]
    fn refuses_invalid_values() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with more
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_00_and_may_carry_more() {
        let t =
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .unwrap();
        assert_eq!(t.flags, 1);
        assert_eq!(
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None
        );
    }

    #[test]
    fn the_layer_keeps_the_trace_and_replaces_the_span() {
        let run = |headers: &[(&str, &str)]| {
            let mut request = Request::new(());
            for (k, v) in headers {
                request.headers_mut().append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let mut svc = TraceContextLayer.layer(tower::service_fn(|r: Request<()>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(r.headers().clone()))
            }));
            let seen = svc.call(request);
            futures::executor::block_on(seen).unwrap()
        };
        let out = run(&[("traceparent", SAMPLE), ("tracestate", "vendor=1")]);
        let next = TraceParent::parse(out[&TRACEPARENT].as_bytes()).unwrap();
        let parent = TraceParent::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!((next.trace_id, next.flags), (parent.trace_id, parent.flags));
        assert_ne!(next.parent_id, parent.parent_id);
        assert_eq!(out[&TRACESTATE], "vendor=1");

        let out = run(&[("traceparent", "garbage"), ("tracestate", "vendor=1")]);
        assert!(TraceParent::parse(out[&TRACEPARENT].as_bytes()).is_some());
        assert!(!out.contains_key(&TRACESTATE));

        let a = run(&[]);
        let b = run(&[]);
        assert_ne!(
            a[&TRACEPARENT], b[&TRACEPARENT],
            "each new trace has its own id"
        );
    }
}
