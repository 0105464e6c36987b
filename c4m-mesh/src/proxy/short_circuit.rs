//! A layer's future: the inner service's, or an answer the layer gave itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use super::body::ProxyBody;
use super::error::ProxyError;

pin_project_lite::pin_project! {
    /// Either the inner service's response future or a ready answer (a
    /// 404, 429 or redirect), without boxing either.
    pub struct ShortCircuit<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Answer { response: Option<Response<ProxyBody>> },
    }
}

impl<F> ShortCircuit<F> {
    /// The inner service's future.
    pub fn inner(future: F) -> Self {
        ShortCircuit {
            state: State::Inner { future },
        }
    }

    /// An answer of the layer's own.
    pub fn answer(response: Response<ProxyBody>) -> Self {
        ShortCircuit {
            state: State::Answer {
                response: Some(response),
            },
        }
    }
}

impl<F> Future for ShortCircuit<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = Result<Response<ProxyBody>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Answer { response } => Poll::Ready(Ok(response
                .take()
                .expect("ShortCircuit polled after completion"))),
        }
    }
}
