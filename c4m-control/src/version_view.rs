//! One store, two API versions: a layer in front of the handlers that
//! serves a group version as a view of objects stored in another, as the
//! Kubernetes API server converts between the versions of a kind.
//!
//! A request under the view's path is rewritten to the stored version's
//! path, its JSON body converted to the stored version, and the answer (one
//! object, a List, or a watch stream of one event a line) converted back.
//! Other bodies (a JSON patch, YAML) and answers (a Status, a Table) pass
//! as they are. Views: `events_view.rs` (`events.k8s.io/v1` over core/v1
//! Events) and `autoscaling_v1.rs` (`autoscaling/v1` over `autoscaling/v2`
//! HorizontalPodAutoscalers).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::Error;

/// A group version served over another's stored objects.
pub(crate) struct View {
    /// The path prefix of the view (`/apis/events.k8s.io/v1/`).
    pub prefix: &'static str,
    /// The path prefix of the stored version (`/api/v1/`).
    pub stored: &'static str,
    /// The kind viewed (`Event`); its list is `{kind}List`.
    pub kind: &'static str,
    /// The view's apiVersion.
    pub api_version: &'static str,
    /// One object of a request body, in the stored version's terms.
    pub to_stored: fn(&mut Map<String, Value>),
    /// One stored object, in the view's terms.
    pub to_view: fn(&mut Map<String, Value>),
    /// A field selector, in the stored version's terms.
    pub field_selector: fn(&str) -> String,
}

impl View {
    /// The stored version's path and query for a request under the view,
    /// or None for another path.
    pub(crate) fn stored_uri(&self, uri: &Uri) -> Option<Uri> {
        let rest = uri.path().strip_prefix(self.prefix)?;
        let mut target = format!("{}{rest}", self.stored);
        if let Some(query) = uri.query() {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("fieldSelector", selector)) => {
                        format!("fieldSelector={}", (self.field_selector)(selector))
                    }
                    _ => pair.to_string(),
                })
                .collect();
            target.push('?');
            target.push_str(&query.join("&"));
        }
        target.parse().ok()
    }

    /// An answer in the view's terms: an object of the kind, a List's
    /// items, or a watch event's object; anything else as it is.
    pub(crate) fn answer(&self, value: &mut Value) {
        let Some(object) = value.as_object_mut() else {
            return;
        };
        let list_kind = format!("{}List", self.kind);
        match object.get("kind").and_then(Value::as_str) {
            Some(kind) if kind == self.kind => (self.to_view)(object),
            Some(kind) if kind == list_kind => {
                object.insert("apiVersion".into(), Value::String(self.api_version.into()));
                if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        (self.to_view)(item);
                    }
                }
            }
            // A watch event: {"type": ..., "object": ...}.
            None if object.contains_key("type") => {
                if let Some(inner) = object.get_mut("object") {
                    self.answer(inner);
                }
            }
            _ => {}
        }
    }
}

/// The layer: the view's version in, the stored one underneath, the view's
/// version out.
pub(crate) async fn serve(view: &'static View, request: Request, next: Next) -> Response {
    let Some(stored) = view.stored_uri(request.uri()) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = stored;
    let body = match crate::api::read_body(body, crate::api::MAX_OBJECT_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    // A JSON body (an object, or a merge patch of one) is converted;
    // others (a JSON patch, YAML) go as they are.
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => {
            (view.to_stored)(&mut object);
            parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(Value::Object(object).to_string())
        }
        _ => body,
    };
    let watch = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=1" || p == "watch=true"));
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if watch {
        let mut pending = Vec::new();
        let answer = |event: &mut Value| view.answer(event);
        let lines = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            pending.extend_from_slice(&chunk);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(mut event) => {
                        answer(&mut event);
                        out.extend_from_slice(event.to_string().as_bytes());
                        out.push(b'\n');
                    }
                    Err(_) => out.extend_from_slice(&line),
                }
            }
            Ok::<_, std::io::Error>(Bytes::from(out))
        });
        return Response::from_parts(parts, Body::from_stream(lines));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return Error::Unavailable(format!("reading the answer: {e}")).into_response(),
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            view.answer(&mut value);
            Bytes::from(value.to_string())
        }
        Err(_) => bytes,
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}
