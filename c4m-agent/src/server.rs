//! The agent's HTTP server: what the control plane proxies to the node
//! (instance logs).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use c4m_core::LogOptions;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Directory;

pub(crate) struct ServerState {
    pub directory: Directory,
    pub token: Option<String>,
    pub shutdown: CancellationToken,
}

pub(crate) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/instances/{ns}/{name}/log", get(log))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn authenticate(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !c4m_api::bearer_matches(header, token) {
            return (StatusCode::UNAUTHORIZED, "wrong or missing cluster token\n").into_response();
        }
    }
    next.run(request).await
}

async fn log(
    State(state): State<Arc<ServerState>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let placement = state
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(ns.clone(), name.clone()))
        .cloned();
    let Some(placement) = placement else {
        return (
            StatusCode::NOT_FOUND,
            format!("instance {ns}/{name} does not run on this node\n"),
        )
            .into_response();
    };
    let options = LogOptions {
        follow: query.get("follow").is_some_and(|f| f == "true" || f == "1"),
        tail_lines: query.get("tailLines").and_then(|t| t.parse().ok()),
    };
    match placement.runtime.logs(&placement.id, options).await {
        Ok(stream) => {
            let body = stream
                .map(|chunk| chunk.map_err(std::io::Error::other))
                .take_until(state.shutdown.clone().cancelled_owned());
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from_stream(body))
                .unwrap_or_default()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
