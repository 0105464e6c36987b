//! The one body type of requests and responses through the proxy: an enum
//! rather than a boxed trait object, so no request pays an allocation for it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::pool::Checkin;

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's body failed (reset, closed early, malformed).
    #[error("body stream failed")]
    Stream(#[source] hyper::Error),
    /// The request a mirror copies failed or outran the mirror's buffer.
    #[error("mirrored request body was cut short")]
    MirrorCut,
}

/// A request or response body passing through the proxy.
#[derive(Debug, Default)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug, Default)]
enum Kind {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    Tee(Tee),
    Mirror(MirrorBody),
    Upstream(UpstreamBody),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody { kind: Kind::Empty }
    }

    /// A body of one chunk.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody {
            kind: if bytes.is_empty() {
                Kind::Empty
            } else {
                Kind::Full(Some(bytes))
            },
        }
    }

    /// A body read from hyper, upstream's response with the HTTP/1
    /// connection it arrived on, returned to its pool once read to the end.
    pub(crate) fn upstream(inner: Incoming, checkin: Option<Checkin>) -> Self {
        let mut body = UpstreamBody { inner, checkin };
        if body.inner.is_end_stream() {
            body.check_in();
        }
        ProxyBody {
            kind: Kind::Upstream(body),
        }
    }

    /// Splits off a copy of this body for a mirror: frames are passed on
    /// unchanged and copied (a reference count, not the bytes) into a
    /// buffer of `capacity` frames. If the mirror falls behind, its copy is
    /// cut short; the original never waits for it.
    pub(crate) fn tee(&mut self, capacity: usize) -> ProxyBody {
        let original = std::mem::take(self);
        match original.kind {
            Kind::Empty => ProxyBody::empty(),
            Kind::Full(bytes) => {
                *self = ProxyBody {
                    kind: Kind::Full(bytes.clone()),
                };
                ProxyBody {
                    kind: Kind::Full(bytes),
                }
            }
            kind => {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                let complete = Arc::new(AtomicBool::new(false));
                let source = Box::new(ProxyBody { kind });
                *self = ProxyBody {
                    kind: Kind::Tee(Tee {
                        inner: source,
                        tx: Some(tx),
                        complete: complete.clone(),
                    }),
                };
                ProxyBody {
                    kind: Kind::Mirror(MirrorBody { rx, complete }),
                }
            }
        }
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody {
            kind: Kind::Incoming(body),
        }
    }
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::full(bytes)
    }
}

impl From<&'static str> for ProxyBody {
    fn from(text: &'static str) -> Self {
        ProxyBody::full(Bytes::from_static(text.as_bytes()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Stream),
            Kind::Tee(tee) => tee.poll_frame(cx),
            Kind::Mirror(mirror) => mirror.poll_frame(cx),
            Kind::Upstream(upstream) => upstream.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Tee(tee) => tee.inner.is_end_stream(),
            Kind::Mirror(_) => false,
            Kind::Upstream(upstream) => upstream.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) => body.size_hint(),
            Kind::Tee(tee) => tee.inner.size_hint(),
            Kind::Mirror(_) => SizeHint::default(),
            Kind::Upstream(upstream) => upstream.inner.size_hint(),
        }
    }
}

/// The original side of a mirrored body.
#[derive(Debug)]
struct Tee {
    inner: Box<ProxyBody>,
    tx: Option<mpsc::Sender<Frame<Bytes>>>,
    complete: Arc<AtomicBool>,
}

impl Tee {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = ready!(Pin::new(&mut *self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(tx) = &self.tx {
                    let copy = if let Some(data) = frame.data_ref() {
                        Some(Frame::data(data.clone()))
                    } else {
                        frame.trailers_ref().map(|t| Frame::trailers(t.clone()))
                    };
                    if let Some(copy) = copy
                        && tx.try_send(copy).is_err()
                    {
                        self.tx = None; // The mirror fell behind: its copy ends cut short.
                    }
                }
            }
            Some(Err(_)) => self.tx = None,
            None => {
                if self.tx.take().is_some() {
                    self.complete.store(true, Ordering::Release);
                }
            }
        }
        Poll::Ready(frame)
    }
}

/// The mirror's side: the frames copied, then the end, or an error if the
/// copy was cut short.
#[derive(Debug)]
struct MirrorBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    complete: Arc<AtomicBool>,
}

impl MirrorBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match ready!(self.rx.poll_recv(cx)) {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None if self.complete.load(Ordering::Acquire) => Poll::Ready(None),
            None => Poll::Ready(Some(Err(BodyError::MirrorCut))),
        }
    }
}

/// An upstream response body; its HTTP/1 connection goes back to the pool
/// when the body has been read to the end (a body dropped before its end
/// closes the connection, as hyper does).
#[derive(Debug)]
struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl UpstreamBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.check_in();
        }
        Poll::Ready(frame.map(|f| f.map_err(BodyError::Stream)))
    }

    fn check_in(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.release();
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.check_in();
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_full_body_is_copied_to_its_mirror() {
        let mut body = ProxyBody::full("hello");
        let mirror = body.tee(4);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(mirror.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_streamed_body_reaches_its_mirror_or_cuts_it_short() {
        let stream = |n: usize| {
            let (tx, rx) = mpsc::channel(n);
            for i in 0..n {
                tx.try_send(Frame::data(Bytes::from(format!("{i};"))))
                    .unwrap();
            }
            let complete = Arc::new(AtomicBool::new(true));
            ProxyBody {
                kind: Kind::Mirror(MirrorBody { rx, complete }),
            }
        };
        let mut body = stream(3);
        let mirror = body.tee(8);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "0;1;2;");
        assert_eq!(mirror.collect().await.unwrap().to_bytes(), "0;1;2;");

        // A mirror with room for one frame falls behind: the original is
        // whole, the copy ends with an error rather than looking complete.
        let mut body = stream(3);
        let mirror = body.tee(1);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "0;1;2;");
        assert!(matches!(mirror.collect().await, Err(BodyError::MirrorCut)));
    }
}
