//! A panic is a bug, but one request or one object must not stop the
//! control plane: a request handler that panics is answered 500 (and the
//! server goes on), a reconcile that panics is retried
//! (`controllers::run`). Both are logged as errors with what they were
//! working on.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

/// A panic's message, when it has one.
pub(crate) fn message(panic: &(dyn Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

/// Middleware: a handler that panics is answered with a Kubernetes `Status`
/// 500 and logged with its request. (What a handler shares is behind locks
/// that recover from poisoning, or in the store, whose writes are whole.)
pub(crate) async fn contain(request: Request, next: Next) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = message(panic.as_ref());
            tracing::error!(%method, %uri, panic = %message, "request handler panicked");
            crate::Error::Internal(format!("the request could not be handled: {message}"))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_next_request_served() {
        async fn boom() -> &'static str {
            let stored = serde_json::json!({"metadata": 5});
            // What handlers did with input before `json::set_path`.
            let mut copy = stored.clone();
            copy["metadata"]["name"] = serde_json::json!("x");
            "unreachable"
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(contain));
        let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "InternalError");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("cannot access key \"name\" in JSON number"),
            "{status}"
        );
        let response = app.oneshot(request("/ok")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
