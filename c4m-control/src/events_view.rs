//! `events.k8s.io/v1` Events: a view of the same stored core/v1 Events, as
//! Kubernetes serves them (one store, two API versions).
//!
//! A [`View`] (`version_view.rs`) rewrites a request under
//! `/apis/events.k8s.io/v1/` to the core path, renames the fields of its
//! body to core/v1's, and renames those of the answer back:
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

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value};

use crate::version_view::View;

/// The group version this view serves.
const API_VERSION: &str = "events.k8s.io/v1";

/// events.k8s.io/v1 over the stored core/v1 Events.
static EVENTS: View = View {
    prefix: "/apis/events.k8s.io/v1/",
    stored: "/api/v1/",
    kind: "Event",
    api_version: API_VERSION,
    to_stored: |object| rename(object, Direction::ToCore),
    to_view: |object| rename(object, Direction::ToEvents),
    field_selector: core_field_selector,
};

/// The layer.
pub(crate) async fn view(request: Request, next: Next) -> Response {
    crate::version_view::serve(&EVENTS, request, next).await
}

/// A field selector naming core/v1's fields.
fn core_field_selector(selector: &str) -> String {
    let mut selector = selector.to_string();
    for (events, core) in RENAMES {
        selector = selector.replace(events, core);
    }
    selector
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Uri;
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
        EVENTS.answer(&mut back);
        assert_eq!(back["apiVersion"], API_VERSION);
        assert_eq!(back["items"][0], events);
        let mut watch = json!({"type": "ADDED", "object": back["items"][0].clone()});
        rename(watch["object"].as_object_mut().unwrap(), Direction::ToCore);
        EVENTS.answer(&mut watch);
        assert_eq!(watch["object"], events);
    }

    #[test]
    fn paths_and_field_selectors_map_to_core() {
        let uri: Uri = "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3Dweb&limit=5"
            .parse()
            .unwrap();
        assert_eq!(
            EVENTS.stored_uri(&uri).unwrap().to_string(),
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb&limit=5"
        );
        let uri: Uri = "/apis/events.k8s.io/v1/events".parse().unwrap();
        assert_eq!(
            EVENTS.stored_uri(&uri).unwrap().to_string(),
            "/api/v1/events"
        );
        assert!(
            EVENTS
                .stored_uri(&"/api/v1/events".parse().unwrap())
                .is_none()
        );
    }
}
