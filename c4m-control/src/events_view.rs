//! `events.k8s.io/v1` Events: a view of the same stored core/v1 Events, as
//! Kubernetes serves them (one store, two API versions).
//!
//! A layer in front of the handlers rewrites a request under
//! `/apis/events.k8s.io/v1/` to the core path, renames the fields of its
//! body to core/v1's, and renames those of the answer (one object, a List,
//! or a watch stream of one event a line) back:
//!
//! | events.k8s.io/v1 | core/v1 |
//! |---|---|
//! | `regarding` | `involvedObject` |
//! | `note` | `message` |
//! | `reportingController` | `reportingComponent` |
//! | `deprecatedSource` | `source` |
//! | `deprecatedFirstTimestamp` | `firstTimestamp` |
//! | `deprecatedLastTimestamp` | `lastTimestamp` |
//! | `deprecatedCount` | `count` |
//!
//! `eventTime`, `series`, `action`, `reason`, `related`, `type` and
//! `reportingInstance` are the same in both.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::Error;

/// The group version this view serves.
const PREFIX: &str = "/apis/events.k8s.io/v1/";
const API_VERSION: &str = "events.k8s.io/v1";

/// (events.k8s.io/v1 name, core/v1 name).
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Which way fields are renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// events.k8s.io/v1 → core/v1 (request bodies).
    ToCore,
    /// core/v1 → events.k8s.io/v1 (answers).
    ToEvents,
}

/// An Event's top-level fields renamed, and its apiVersion set.
fn rename(object: &mut Map<String, Value>, direction: Direction) {
    for (events, core) in RENAMES {
        let (from, to) = match direction {
            Direction::ToCore => (events, core),
            Direction::ToEvents => (core, events),
        };
        if let Some(value) = object.remove(*from) {
            object.insert((*to).to_string(), value);
        }
    }
    if object.contains_key("apiVersion") {
        let api_version = match direction {
            Direction::ToCore => "v1",
            Direction::ToEvents => API_VERSION,
        };
        object.insert("apiVersion".into(), Value::String(api_version.into()));
    }
}

/// An answer in events.k8s.io/v1's terms: an Event, an EventList's items,
/// or a watch event's object; anything else (a Status, a Table) as it is.
fn to_events(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    match object.get("kind").and_then(Value::as_str) {
        Some("Event") => rename(object, Direction::ToEvents),
        Some("EventList") => {
            object.insert("apiVersion".into(), Value::String(API_VERSION.into()));
            if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    rename(item, Direction::ToEvents);
                }
            }
        }
        // A watch event: {"type": ..., "object": ...}.
        None if object.contains_key("type") => {
            if let Some(inner) = object.get_mut("object") {
                to_events(inner);
            }
        }
        _ => {}
    }
}

/// The core path and query for an events.k8s.io/v1 request, or None for
/// another path. Field selectors name core/v1's fields.
fn core_uri(uri: &Uri) -> Option<Uri> {
    let rest = uri.path().strip_prefix(PREFIX)?;
    let mut target = format!("/api/v1/{rest}");
    if let Some(query) = uri.query() {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("fieldSelector", selector)) => {
                    let mut selector = selector.to_string();
                    for (events, core) in RENAMES {
                        selector = selector.replace(events, core);
                    }
                    format!("fieldSelector={selector}")
                }
                _ => pair.to_string(),
            })
            .collect();
        target.push('?');
        target.push_str(&query.join("&"));
    }
    target.parse().ok()
}

/// The layer: events.k8s.io/v1 in, core/v1 underneath, events.k8s.io/v1 out.
pub(crate) async fn view(request: Request, next: Next) -> Response {
    let Some(core) = core_uri(request.uri()) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = core;
    let body = match axum::body::to_bytes(body, crate::api::MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            return Error::BadRequest(format!("reading the request body: {e}")).into_response();
        }
    };
    // A JSON body (an Event, or a merge patch of one) is renamed; others
    // (a JSON patch, YAML) go as they are.
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => {
            rename(&mut object, Direction::ToCore);
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
        let lines = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            pending.extend_from_slice(&chunk);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(mut event) => {
                        to_events(&mut event);
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
            to_events(&mut value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_renamed_both_ways() {
        let events = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web-1"}, "note": "started",
            "reportingController": "c4m/agent", "reportingInstance": "node-1",
            "deprecatedSource": {"component": "agent"}, "deprecatedCount": 3,
            "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2026-01-01T00:01:00Z",
            "eventTime": "2026-01-01T00:00:00.000001Z", "series": {"count": 3},
            "action": "Start", "reason": "Started", "type": "Normal"});
        let mut core = events.clone();
        rename(core.as_object_mut().unwrap(), Direction::ToCore);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web-1");
        assert_eq!(core["message"], "started");
        assert_eq!(core["reportingComponent"], "c4m/agent");
        assert_eq!(core["source"]["component"], "agent");
        assert_eq!(core["count"], 3);
        assert_eq!(core["firstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(core["series"]["count"], 3);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        let mut back = json!({"kind": "EventList", "apiVersion": "v1", "items": [core]});
        to_events(&mut back);
        assert_eq!(back["apiVersion"], API_VERSION);
        assert_eq!(back["items"][0], events);
        let mut watch = json!({"type": "ADDED", "object": back["items"][0].clone()});
        rename(watch["object"].as_object_mut().unwrap(), Direction::ToCore);
        to_events(&mut watch);
        assert_eq!(watch["object"], events);
    }

    #[test]
    fn paths_and_field_selectors_map_to_core() {
        let uri: Uri = "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3Dweb&limit=5"
            .parse()
            .unwrap();
        assert_eq!(
            core_uri(&uri).unwrap().to_string(),
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb&limit=5"
        );
        let uri: Uri = "/apis/events.k8s.io/v1/events".parse().unwrap();
        assert_eq!(core_uri(&uri).unwrap().to_string(), "/api/v1/events");
        assert!(core_uri(&"/api/v1/events".parse().unwrap()).is_none());
    }
}
