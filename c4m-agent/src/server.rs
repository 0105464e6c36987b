//! The agent's HTTP server: what the control plane proxies to the node
//! (instance logs; exec and port-forward over WebSocket, in `stream.rs`;
//! the node's image store).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use c4m_core::LogOptions;
use c4m_image::ImageStore;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::supervisor::{Directory, Placement};

pub(crate) struct ServerState {
    pub directory: Directory,
    pub images: Arc<ImageStore>,
    /// Where uploaded archives wait while they are imported.
    pub work_dir: PathBuf,
    pub token: Option<String>,
    pub shutdown: CancellationToken,
    /// Instance networking, when on: where VPC instances serve their ports.
    pub network: Option<Arc<c4m_mesh::InstanceNetwork>>,
}

pub(crate) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/instances/{ns}/{name}/log", get(log))
        .route("/v1/instances/{ns}/{name}/exec", get(crate::stream::exec))
        .route(
            "/v1/instances/{ns}/{name}/attach",
            get(crate::stream::attach),
        )
        .route(
            "/v1/instances/{ns}/{name}/portforward",
            get(crate::stream::port_forward),
        )
        .route("/v1/images", get(list_images).delete(remove_image))
        .route("/v1/images/pull", post(pull_image))
        .route(
            "/v1/images/import",
            post(import_image).layer(DefaultBodyLimit::disable()),
        )
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

/// The instance `ns/name` on this node, with [`Placement::id`] the id of
/// its container named `container` (its first app container when none is
/// named); else the 404 saying it is not here, or the 400 naming a
/// container it lacks.
pub(crate) fn placement_of(
    state: &ServerState,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> Result<Placement, Box<Response>> {
    let placement = state
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(ns.to_string(), name.to_string()))
        .cloned();
    let mut placement = placement.ok_or_else(|| {
        let message = format!("instance {ns}/{name} does not run on this node\n");
        Box::new((StatusCode::NOT_FOUND, message).into_response())
    })?;
    let id = placement.container(container).map(str::to_string);
    placement.id = id.ok_or_else(|| {
        let message = format!(
            "container {} is not valid for pod {name}\n",
            container.unwrap_or_default()
        );
        Box::new((StatusCode::BAD_REQUEST, message).into_response())
    })?;
    Ok(placement)
}

/// A log request: what the driver applies, and what the agent does.
struct LogRequest {
    options: LogOptions,
    /// `limitBytes`: every driver's stream is cut the same way.
    limit: Option<u64>,
    /// `previous`: the log of the run before the current one.
    previous: bool,
}

/// Kubernetes' log parameters: `follow`, `tailLines`, `timestamps`,
/// `sinceSeconds` or `sinceTime` (RFC 3339), `limitBytes` and `previous`.
fn log_options(query: &HashMap<String, String>) -> Result<LogRequest, String> {
    let flag = |key: &str| query.get(key).is_some_and(|f| f == "true" || f == "1");
    let number = |key: &str| {
        query
            .get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key} must be a non-negative integer, not {v:?}"))
            })
            .transpose()
    };
    let since = match (query.get("sinceSeconds"), query.get("sinceTime")) {
        (Some(seconds), _) => Some(c4m_api::log_since_seconds(seconds, SystemTime::now())?),
        (None, Some(time)) => Some(
            time.parse::<jiff::Timestamp>()
                .map_err(|e| format!("sinceTime {time:?} is not an RFC 3339 time: {e}"))?
                .into(),
        ),
        (None, None) => None,
    };
    let options = LogOptions {
        follow: flag("follow"),
        tail_lines: number("tailLines")?.map(|n| n as usize),
        since,
        timestamps: flag("timestamps"),
    };
    Ok(LogRequest {
        options,
        limit: number("limitBytes")?.filter(|n| *n > 0),
        previous: flag("previous"),
    })
}

/// The kept log of a previous run (each line `<RFC 3339 time> <text>`) as
/// `options` ask: lines since `since`, the last `tail_lines` of them, with
/// their times only if `timestamps`.
fn previous_log(kept: &[u8], options: &LogOptions) -> Vec<u8> {
    let lines = kept.split_inclusive(|b| *b == b'\n').filter_map(|line| {
        let space = line.iter().position(|b| *b == b' ')?;
        let time: jiff::Timestamp = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
        Some((SystemTime::from(time), line, &line[space + 1..]))
    });
    let lines: Vec<_> = lines
        .filter(|(time, _, _)| options.since.is_none_or(|since| *time >= since))
        .collect();
    let skip = options
        .tail_lines
        .map_or(0, |tail| lines.len().saturating_sub(tail));
    lines[skip..]
        .iter()
        .flat_map(|(_, stamped, text)| if options.timestamps { *stamped } else { *text })
        .copied()
        .collect()
}

/// Ends `stream` after `limit` bytes, if there is a limit.
fn limit_bytes(
    stream: BoxStream<'static, c4m_core::Result<Bytes>>,
    limit: Option<u64>,
) -> BoxStream<'static, c4m_core::Result<Bytes>> {
    let Some(limit) = limit else {
        return stream;
    };
    // Checked before polling: a followed log ends as soon as the limit is
    // reached, not when the container next writes.
    futures::stream::unfold((stream, limit), |(mut stream, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        match stream.next().await? {
            Ok(mut bytes) => {
                let keep = bytes
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                bytes.truncate(keep);
                Some((Ok(bytes), (stream, remaining - keep as u64)))
            }
            Err(e) => Some((Err(e), (stream, 0))),
        }
    })
    .boxed()
}

async fn log(
    State(state): State<Arc<ServerState>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let container = query.get("container").map(String::as_str);
    let placement = match placement_of(&state, &ns, &name, container) {
        Ok(placement) => placement,
        Err(response) => return *response,
    };
    let LogRequest {
        mut options,
        limit,
        previous,
    } = match log_options(&query) {
        Ok(options) => options,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let container = placement
        .containers
        .iter()
        .find(|(_, id)| *id == placement.id)
        .map_or("", |(name, _)| name.as_str());
    if previous {
        // Kept by the supervisor when the container restarted.
        let kept = match placement.previous_logs.get(container) {
            Some(path) => tokio::fs::read(path).await.ok(),
            None => None,
        };
        let Some(kept) = kept else {
            let message =
                format!("previous terminated container {container:?} in pod {name:?} not found\n");
            return (StatusCode::BAD_REQUEST, message).into_response();
        };
        let body = previous_log(&kept, &options);
        let stream = futures::stream::once(async move { Ok(Bytes::from(body)) }).boxed();
        let body = limit_bytes(stream, limit).map(|chunk| chunk.map_err(std::io::Error::other));
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from_stream(body))
            .unwrap_or_default();
    }
    // The current run's output only, as Kubernetes shows it.
    if let Some(began) = placement.runs_began.get(container) {
        options.since = Some(options.since.map_or(*began, |since| since.max(*began)));
    }
    match placement.runtime.logs(&placement.id, options).await {
        Ok(stream) => {
            let body = limit_bytes(stream, limit)
                .map(|chunk| chunk.map_err(std::io::Error::other))
                .take_until(state.shutdown.clone().cancelled_owned());
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from_stream(body))
                .unwrap_or_default()
        }
        // Not started yet (an app container while init containers run),
        // as Kubernetes answers it.
        Err(c4m_core::Error::ContainerNotFound(_)) => {
            let message = format!("container {container} in pod {name} is waiting to start\n");
            (StatusCode::BAD_REQUEST, message).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Runs image store work on a blocking thread; errors become responses
/// (404 for an unknown image, 400 for a bad archive or reference).
async fn with_store<T: serde::Serialize + Send + 'static>(
    state: &ServerState,
    work: impl FnOnce(&ImageStore) -> c4m_image::Result<T> + Send + 'static,
) -> Response {
    let images = Arc::clone(&state.images);
    match tokio::task::spawn_blocking(move || work(&images)).await {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(c4m_image::Error::NotFound(reference))) => (
            StatusCode::NOT_FOUND,
            format!("image {reference} not found on this node\n"),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn list_images(State(state): State<Arc<ServerState>>) -> Response {
    with_store(&state, |images| images.list()).await
}

/// `DELETE /v1/images?ref=REF`: untags (or, by digest, removes) the image,
/// then collects what no image or container uses any more.
async fn remove_image(
    State(state): State<Arc<ServerState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(reference) = query.get("ref").cloned() else {
        return (StatusCode::BAD_REQUEST, "missing ?ref=IMAGE\n").into_response();
    };
    with_store(&state, move |images| {
        let removed = images.remove(&reference)?;
        images.gc()?;
        Ok(removed)
    })
    .await
}

/// `POST /v1/images/import?name=NAME` with an archive (OCI layout tar or
/// docker archive) as the body.
async fn import_image(
    State(state): State<Arc<ServerState>>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    let upload = match tempfile::NamedTempFile::new_in(&state.work_dir) {
        Ok(file) => file,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("upload: {e}\n")).into_response();
        }
    };
    let mut file = tokio::fs::File::from_std(match upload.reopen() {
        Ok(file) => file,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("upload: {e}\n")).into_response();
        }
    });
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let written = match chunk {
            Ok(bytes) => tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = written {
            return (StatusCode::BAD_REQUEST, format!("upload: {e}\n")).into_response();
        }
    }
    if let Err(e) = tokio::io::AsyncWriteExt::flush(&mut file).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("upload: {e}\n")).into_response();
    }
    let name = query
        .get("name")
        .cloned()
        .unwrap_or_else(|| "imported".into());
    with_store(&state, move |images| {
        images.import(upload.path(), Some(&name))
    })
    .await
}

/// What `POST /v1/images/pull` takes.
#[derive(serde::Deserialize)]
struct PullRequest {
    reference: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /v1/images/pull` with `{"reference": ..., "username": ...,
/// "password": ...}`: pulls the image from its registry into the store.
async fn pull_image(
    State(state): State<Arc<ServerState>>,
    axum::Json(request): axum::Json<PullRequest>,
) -> Response {
    let credentials = request
        .username
        .map(|username| c4m_image::RegistryCredentials {
            username,
            password: request.password.unwrap_or_default(),
        });
    match c4m_image::pull(&state.images, &request.reference, credentials.as_ref()).await {
        Ok(image) => axum::Json(image).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept log is served as the current one is: since, tail, and times
    /// only when asked.
    #[test]
    fn a_previous_log_is_served_as_asked() {
        let kept = b"2026-12-07T10:00:00.000000001Z one\n\
                     2026-12-07T10:00:01.000000000Z two\n\
                     2026-12-07T10:00:02.000000000Z three";
        let all = LogOptions::default();
        assert_eq!(previous_log(kept, &all), b"one\ntwo\nthree");
        let tail = LogOptions {
            tail_lines: Some(2),
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            String::from_utf8(previous_log(kept, &tail)).unwrap(),
            "2026-12-07T10:00:01.000000000Z two\n2026-12-07T10:00:02.000000000Z three"
        );
        let since = LogOptions {
            since: Some(
                "2026-12-07T10:00:00.5Z"
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .into(),
            ),
            ..LogOptions::default()
        };
        assert_eq!(previous_log(kept, &since), b"two\nthree");
    }

    /// `sinceSeconds` beyond what a duration holds (which panicked the
    /// handler) is refused with a reason, as is zero; a sensible one is a
    /// time that far back.
    #[test]
    fn since_seconds_is_refused_when_it_overflows() {
        let query = |seconds: &str| HashMap::from([("sinceSeconds".to_string(), seconds.into())]);
        let Err(message) = log_options(&query("9223372036854775807")) else {
            panic!("an overflowing sinceSeconds was taken");
        };
        assert!(
            message.contains("sinceSeconds must be an integer from 1"),
            "{message}"
        );
        assert!(log_options(&query("18446744073709551616")).is_err());
        assert!(log_options(&query("0")).is_err());
        assert!(log_options(&query("-5")).is_err());
        let since = log_options(&query("60")).unwrap().options.since.unwrap();
        let ago = SystemTime::now().duration_since(since).unwrap();
        assert!(ago >= std::time::Duration::from_secs(60), "{ago:?}");
    }
}
