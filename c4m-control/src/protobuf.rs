//! Kubernetes' protobuf (`application/vnd.kubernetes.protobuf`) on the
//! API, for the built-in kinds: a layer in front of the JSON handlers.
//!
//! - A request body in protobuf (kubectl sends one for `create namespace`,
//!   `create configmap`, ...) is read into the JSON object it holds before
//!   the handler sees it.
//! - A response goes out in protobuf when the client's `Accept` header puts
//!   protobuf first and the object has a protobuf form; a watch then goes
//!   out as length-prefixed frames of `meta.v1.WatchEvent`.
//! - Kinds with no protobuf form (c4m's own, custom resources) stay JSON:
//!   a protobuf body for one is refused with 415, and a client that
//!   accepts nothing but protobuf for one gets 406, each saying so.
//!
//! The transcoding itself (behind the cargo feature `protobuf`) is
//! `c4m_api::protobuf`; without the feature every protobuf body is refused with
//! 415 and every response is JSON.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// Kubernetes' protobuf media type (as `c4m_api::protobuf::MEDIA_TYPE`,
/// which builds without the feature lack).
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Why a body could not be read or written as protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// This build has no protobuf support.
    #[error(
        "this c4m was built without Kubernetes protobuf support (c4m-control feature `protobuf`): send and accept application/json"
    )]
    NotBuiltIn,
    /// The client accepts only protobuf, which this answer cannot be.
    #[error("{path} cannot be answered in protobuf ({reason}): accept application/json")]
    NotAcceptable {
        /// The request path.
        path: String,
        /// Why not.
        reason: String,
    },
    /// The request body could not be read.
    #[error("reading the request body: {0}")]
    Body(#[source] axum::Error),
    /// A JSON answer could not be read.
    #[error("{what} is not JSON: {source}")]
    Json {
        /// What was being read.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// The object could not be transcoded.
    #[cfg(feature = "protobuf")]
    #[error(transparent)]
    Transcode(#[from] c4m_api::protobuf::ProtobufError),
}

impl ProtobufError {
    /// HTTP status code and Kubernetes reason.
    pub(crate) fn http_status(&self) -> (u16, &'static str) {
        #[cfg(feature = "protobuf")]
        use c4m_api::protobuf::ProtobufError as Transcode;
        match self {
            ProtobufError::NotBuiltIn => (415, "UnsupportedMediaType"),
            #[cfg(feature = "protobuf")]
            ProtobufError::Transcode(Transcode::NoProtobufForm { .. }) => {
                (415, "UnsupportedMediaType")
            }
            #[cfg(feature = "protobuf")]
            ProtobufError::Transcode(Transcode::Descriptors(_)) => (500, "InternalError"),
            ProtobufError::NotAcceptable { .. } => (406, "NotAcceptable"),
            _ => (400, "BadRequest"),
        }
    }
}

/// What a request's `Accept` header allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Accepted {
    /// Protobuf is the first choice (kubectl's typed clients:
    /// `application/vnd.kubernetes.protobuf,application/json`).
    protobuf_first: bool,
    /// JSON will do.
    json: bool,
}

/// The client's choices, in its order (q-values are not weighed: no
/// Kubernetes client sends them).
fn accepted(headers: &HeaderMap) -> Accepted {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if accept.is_empty() {
        return Accepted {
            protobuf_first: false,
            json: true,
        };
    }
    let mut accepted = Accepted {
        protobuf_first: false,
        json: false,
    };
    for (index, media) in accept.split(',').enumerate() {
        let mut parts = media.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or("");
        // `as=Table`, `as=APIGroupDiscoveryList`: a view c4m writes as JSON.
        let plain = !parts.any(|p| p.starts_with("as="));
        match media_type {
            PROTOBUF if index == 0 && plain => accepted.protobuf_first = true,
            "application/json" | "*/*" | "application/*" => accepted.json = true,
            _ => {}
        }
    }
    accepted
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim() == PROTOBUF))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn is_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=1" || pair == "watch=true")
    })
}

/// The layer: protobuf bodies in, protobuf answers out, where asked for.
pub(crate) async fn negotiate(request: Request, next: Next) -> Response {
    match negotiated(request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn negotiated(request: Request, next: Next) -> crate::Result<Response> {
    let accept = accepted(request.headers());
    let request = if is_protobuf(request.headers()) {
        as_json_request(request).await?
    } else {
        request
    };
    let path = request.uri().path().to_string();
    let watch = is_watch(request.uri().query());
    // A client that takes nothing but protobuf, asking about a kind that has
    // none, is told so before anything is done.
    if accept.protobuf_first
        && !accept.json
        && let Some(kind) = crate::api::kind_of_path(&path)
        && !has_protobuf_form(&kind.api_version(), kind.kind)
    {
        return Err(ProtobufError::NotAcceptable {
            path,
            reason: format!("{} is served as JSON only", kind.kind),
        }
        .into());
    }
    let response = next.run(request).await;
    if !accept.protobuf_first || !is_json(response.headers()) {
        return Ok(response);
    }
    if watch {
        return Ok(as_protobuf_watch(response));
    }
    let (mut parts, body) = response.into_parts();
    let json = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(ProtobufError::Body)?;
    match encode_json(&json) {
        Ok(bytes) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
        Err(_) if accept.json => Ok(Response::from_parts(parts, Body::from(json))),
        Err(error) => Err(ProtobufError::NotAcceptable {
            path,
            reason: error.to_string(),
        }
        .into()),
    }
}

/// The request with its protobuf body read into JSON.
async fn as_json_request(request: Request) -> crate::Result<Request> {
    let (mut parts, body) = request.into_parts();
    let bytes = crate::api::read_body(body, crate::api::MAX_OBJECT_REQUEST_BYTES).await?;
    let json = decode_body(&bytes)?;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Request::from_parts(parts, Body::from(json.to_string())))
}

/// A JSON watch stream (one event a line) as protobuf frames: each a 4-byte
/// big-endian length and a `meta.v1.WatchEvent`. An event that cannot be
/// written ends the stream (after logging why): a client then re-lists.
fn as_protobuf_watch(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROTOBUF_WATCH),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut pending = Vec::new();
    let frames = body
        .into_data_stream()
        .map(move |chunk| -> Result<Bytes, std::io::Error> {
            let chunk = chunk.map_err(std::io::Error::other)?;
            pending.extend_from_slice(&chunk);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let frame = serde_json::from_slice(&line)
                    .map_err(|source| ProtobufError::Json {
                        what: "a watch event",
                        source,
                    })
                    .and_then(|event| encode_watch_event(&event))
                    .inspect_err(|error| {
                        tracing::warn!(%error, "a watch event could not be written as protobuf");
                    })
                    .map_err(std::io::Error::other)?;
                let len = u32::try_from(frame.len()).map_err(std::io::Error::other)?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&frame);
            }
            Ok(Bytes::from(out))
        });
    Response::from_parts(parts, Body::from_stream(frames))
}

#[cfg(feature = "protobuf")]
fn decode_body(bytes: &[u8]) -> Result<serde_json::Value, ProtobufError> {
    Ok(c4m_api::protobuf::decode_object(bytes)?)
}

#[cfg(not(feature = "protobuf"))]
fn decode_body(_bytes: &[u8]) -> Result<serde_json::Value, ProtobufError> {
    Err(ProtobufError::NotBuiltIn)
}

#[cfg(feature = "protobuf")]
fn encode_json(json: &[u8]) -> Result<Vec<u8>, ProtobufError> {
    let object: serde_json::Value =
        serde_json::from_slice(json).map_err(|source| ProtobufError::Json {
            what: "the answer",
            source,
        })?;
    Ok(c4m_api::protobuf::encode_object(&object)?)
}

#[cfg(not(feature = "protobuf"))]
fn encode_json(_json: &[u8]) -> Result<Vec<u8>, ProtobufError> {
    Err(ProtobufError::NotBuiltIn)
}

#[cfg(feature = "protobuf")]
fn encode_watch_event(event: &serde_json::Value) -> Result<Vec<u8>, ProtobufError> {
    Ok(c4m_api::protobuf::encode_watch_event(event)?)
}

#[cfg(not(feature = "protobuf"))]
fn encode_watch_event(_event: &serde_json::Value) -> Result<Vec<u8>, ProtobufError> {
    Err(ProtobufError::NotBuiltIn)
}

#[cfg(feature = "protobuf")]
fn has_protobuf_form(api_version: &str, kind: &str) -> bool {
    c4m_api::protobuf::has_protobuf_form(api_version, kind)
}

#[cfg(not(feature = "protobuf"))]
fn has_protobuf_form(_api_version: &str, _kind: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Accepted {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        accepted(&headers)
    }

    #[test]
    fn accept_headers_as_clients_send_them() {
        let kubectl = accept("application/vnd.kubernetes.protobuf,application/json");
        assert_eq!(
            kubectl,
            Accepted {
                protobuf_first: true,
                json: true
            }
        );
        let only = accept("application/vnd.kubernetes.protobuf");
        assert!(only.protobuf_first && !only.json);
        let table = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json");
        assert!(!table.protobuf_first && table.json);
        let protobuf_table = accept(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json",
        );
        assert!(!protobuf_table.protobuf_first);
        assert!(accepted(&HeaderMap::new()).json);
        assert!(accept("*/*").json);
    }

    #[test]
    fn watches_are_recognised() {
        assert!(is_watch(Some("watch=1&resourceVersion=5")));
        assert!(is_watch(Some("labelSelector=a&watch=true")));
        assert!(!is_watch(Some("watch=false")));
        assert!(!is_watch(None));
    }

    /// The layer around a stand-in handler, driven as a client would.
    #[cfg(feature = "protobuf")]
    mod layer {
        use axum::Router;
        use axum::http::{Method, StatusCode};
        use c4m_api::protobuf::{decode_object, decode_watch_event, encode_object};
        use serde_json::{Value, json};
        use tower::ServiceExt;

        use super::super::*;

        const KUBECTL: &str = "application/vnd.kubernetes.protobuf,application/json";

        fn microservice() -> Value {
            json!({"apiVersion": "c4m.io/v1", "kind": "Microservice",
                "metadata": {"name": "m", "namespace": "default"}})
        }

        fn config_map(name: &str) -> Value {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"}, "data": {"a": "1"}})
        }

        /// Echoes a JSON body; answers a watch with two events and a GET
        /// with a Microservice (a kind with no protobuf form).
        async fn handler(request: Request) -> Response {
            let json = ([(header::CONTENT_TYPE, "application/json")],);
            if is_watch(request.uri().query()) {
                let events = [config_map("a"), config_map("b")]
                    .map(|o| format!("{}\n", json!({"type": "ADDED", "object": o})))
                    .concat();
                return (json, events).into_response();
            }
            if request.method() == Method::GET {
                return (json, microservice().to_string()).into_response();
            }
            assert_eq!(
                request.headers()[header::CONTENT_TYPE],
                "application/json",
                "the handler must see JSON"
            );
            let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            (StatusCode::CREATED, json, body).into_response()
        }

        async fn send(method: Method, path: &str, accept: &str, body: Option<Vec<u8>>) -> Response {
            let app = Router::new()
                .fallback(handler)
                .layer(axum::middleware::from_fn(negotiate));
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::ACCEPT, accept);
            if body.is_some() {
                request = request.header(header::CONTENT_TYPE, PROTOBUF);
            }
            let request = request.body(Body::from(body.unwrap_or_default())).unwrap();
            app.oneshot(request).await.unwrap()
        }

        async fn body(response: Response) -> Vec<u8> {
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec()
        }

        #[tokio::test]
        async fn protobuf_in_and_out() {
            let object = config_map("c");
            let sent = encode_object(&object).unwrap();
            let path = "/api/v1/namespaces/default/configmaps";
            let response = send(Method::POST, path, KUBECTL, Some(sent)).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(response.headers()[header::CONTENT_TYPE], PROTOBUF);
            assert_eq!(decode_object(&body(response).await).unwrap(), object);
            // JSON out when JSON is asked for.
            let sent = encode_object(&object).unwrap();
            let response = send(Method::POST, path, "application/json", Some(sent)).await;
            let answer: Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(answer, object);
        }

        #[tokio::test]
        async fn kinds_without_a_protobuf_form_are_refused_clearly() {
            let path = "/apis/c4m.io/v1/namespaces/default/microservices";
            // An envelope naming a Microservice: 415, saying JSON only.
            let renamed =
                c4m_api::protobuf::envelope("c4m.io/v1", "Microservice", Vec::new()).unwrap();
            let response = send(Method::POST, path, KUBECTL, Some(renamed)).await;
            assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
            let status: Value = serde_json::from_slice(&body(response).await).unwrap();
            assert!(
                status["message"].as_str().unwrap().contains("JSON only"),
                "{status}"
            );
            // Garbage: 400.
            let response = send(Method::POST, path, KUBECTL, Some(b"k8s\0\xff".to_vec())).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            // A client that takes only protobuf: 406; one that takes JSON too: JSON.
            let one = format!("{path}/m");
            let response = send(Method::GET, &one, PROTOBUF, None).await;
            assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
            let response = send(Method::GET, &one, KUBECTL, None).await;
            assert_eq!(response.status(), StatusCode::OK);
            let answer: Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(answer, microservice());
        }

        #[tokio::test]
        async fn watches_go_out_as_length_prefixed_frames() {
            let path = "/api/v1/namespaces/default/configmaps?watch=1";
            let response = send(Method::GET, path, KUBECTL, None).await;
            assert_eq!(response.headers()[header::CONTENT_TYPE], PROTOBUF_WATCH);
            let bytes = body(response).await;
            let mut rest = &bytes[..];
            let mut names = Vec::new();
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                let event = decode_watch_event(&rest[4..4 + len]).unwrap();
                assert_eq!(event["type"], "ADDED");
                names.push(
                    event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
                rest = &rest[4 + len..];
            }
            assert_eq!(names, ["a", "b"]);
        }
    }
}
