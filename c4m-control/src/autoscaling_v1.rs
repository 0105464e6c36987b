//! `autoscaling/v1` HorizontalPodAutoscalers: a view (`version_view.rs`)
//! of the stored `autoscaling/v2` objects, converted as the Kubernetes API
//! server converts them (`kubectl autoscale` of kubectl 1.32 writes v1).
//!
//! | autoscaling/v1 | autoscaling/v2 |
//! |---|---|
//! | `spec.targetCPUUtilizationPercentage` | a `Resource` metric on `cpu` with a `Utilization` target |
//! | `status.currentCPUUtilizationPercentage` | that metric's `currentMetrics` entry |
//! | annotation `autoscaling.alpha.kubernetes.io/metrics` | the other `spec.metrics` |
//! | annotation `autoscaling.alpha.kubernetes.io/behavior` | `spec.behavior` |
//! | annotation `autoscaling.alpha.kubernetes.io/conditions` | `status.conditions` |
//! | annotation `autoscaling.alpha.kubernetes.io/current-metrics` | the other `status.currentMetrics` |
//!
//! So what v1 cannot say survives a round trip through it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::version_view::View;

const API_VERSION: &str = "autoscaling/v1";
const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// autoscaling/v1 over the stored autoscaling/v2 HorizontalPodAutoscalers.
static AUTOSCALING_V1: View = View {
    prefix: "/apis/autoscaling/v1/",
    stored: "/apis/autoscaling/v2/",
    kind: "HorizontalPodAutoscaler",
    api_version: API_VERSION,
    to_stored: to_v2,
    to_view: to_v1,
    field_selector: str::to_string,
};

/// The layer.
pub(crate) async fn view(request: Request, next: Next) -> Response {
    crate::version_view::serve(&AUTOSCALING_V1, request, next).await
}

/// Whether a v2 metric (spec or status) is the CPU utilization one v1 has.
fn is_cpu_utilization(metric: &Value, field: &str) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"][field]["averageUtilization"].is_i64()
}

/// Moves `value` into the annotation `key` as JSON text (or removes the
/// annotation when there is nothing to keep).
fn annotate(object: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(metadata) = metadata else {
        return;
    };
    match value {
        Some(value) => {
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(key.into(), Value::String(value.to_string()));
            }
        }
        None => {
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(key);
            }
        }
    }
}

/// Takes the annotation `key` out of `object`, parsed.
fn take_annotation(object: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let annotations = object
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()?;
    let text = annotations.remove(key)?;
    serde_json::from_str(text.as_str()?).ok()
}

/// A stored v2 object as autoscaling/v1 shows it.
fn to_v1(object: &mut Map<String, Value>) {
    if object.contains_key("apiVersion") {
        object.insert("apiVersion".into(), json!(API_VERSION));
    }
    let mut spec_rest = None;
    let mut behavior = None;
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = spec.remove("metrics").and_then(|m| m.as_array().cloned());
        let (cpu, rest): (Vec<Value>, Vec<Value>) = metrics
            .unwrap_or_default()
            .into_iter()
            .partition(|m| is_cpu_utilization(m, "target"));
        if let Some(cpu) = cpu.first() {
            spec.insert(
                "targetCPUUtilizationPercentage".into(),
                cpu["resource"]["target"]["averageUtilization"].clone(),
            );
        }
        spec_rest = (!rest.is_empty()).then_some(Value::Array(rest));
        behavior = spec.remove("behavior").filter(|b| !b.is_null());
    }
    let mut conditions = None;
    let mut current_rest = None;
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        let current = status
            .remove("currentMetrics")
            .and_then(|m| m.as_array().cloned());
        let (cpu, rest): (Vec<Value>, Vec<Value>) = current
            .unwrap_or_default()
            .into_iter()
            .partition(|m| is_cpu_utilization(m, "current"));
        if let Some(cpu) = cpu.first() {
            status.insert(
                "currentCPUUtilizationPercentage".into(),
                cpu["resource"]["current"]["averageUtilization"].clone(),
            );
        }
        current_rest = (!rest.is_empty()).then_some(Value::Array(rest));
        conditions = status
            .remove("conditions")
            .filter(|c| c.as_array().is_some_and(|c| !c.is_empty()));
    }
    for (key, value) in [
        (METRICS, spec_rest),
        (BEHAVIOR, behavior),
        (CONDITIONS, conditions),
        (CURRENT_METRICS, current_rest),
    ] {
        if value.is_some() {
            annotate(object, key, value);
        }
    }
}

/// An autoscaling/v1 object (or a merge patch of one) in v2's terms.
fn to_v2(object: &mut Map<String, Value>) {
    if object.contains_key("apiVersion") {
        object.insert("apiVersion".into(), json!("autoscaling/v2"));
    }
    let metrics = take_annotation(object, METRICS);
    let behavior = take_annotation(object, BEHAVIOR);
    let conditions = take_annotation(object, CONDITIONS);
    let current = take_annotation(object, CURRENT_METRICS);
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        let mut list = Vec::new();
        if let Some(target) = spec.remove("targetCPUUtilizationPercentage") {
            list.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target}}}));
        }
        list.extend(
            metrics
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default(),
        );
        if !list.is_empty() {
            spec.insert("metrics".into(), Value::Array(list));
        }
        if let Some(behavior) = behavior {
            spec.insert("behavior".into(), behavior);
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        let mut list = Vec::new();
        if let Some(current) = status.remove("currentCPUUtilizationPercentage") {
            list.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": current}}}));
        }
        list.extend(
            current
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default(),
        );
        if !list.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(list));
        }
        if let Some(conditions) = conditions {
            status.insert("conditions".into(), conditions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_autoscale_v1_becomes_a_cpu_metric() {
        // What kubectl 1.32's `autoscale --cpu-percent=50 --min=1 --max=4` sends.
        let mut v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50}});
        to_v2(v1.as_object_mut().unwrap());
        assert_eq!(v1["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v1["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(v1["spec"].get("targetCPUUtilizationPercentage").is_none());
    }

    #[test]
    fn what_v1_cannot_say_survives_a_round_trip() {
        let stored = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {"team": "a"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 4,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "64Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": 90, "averageValue": "90m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let mut v1 = stored.clone();
        to_v1(v1.as_object_mut().unwrap());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 90);
        assert!(v1["spec"].get("metrics").is_none() && v1["spec"].get("behavior").is_none());
        assert!(v1["status"].get("conditions").is_none());
        assert_eq!(v1["metadata"]["annotations"]["team"], "a");
        assert!(v1["metadata"]["annotations"][BEHAVIOR].is_string());
        let mut back = v1.clone();
        to_v2(back.as_object_mut().unwrap());
        assert_eq!(back["spec"], stored["spec"]);
        assert_eq!(back["status"]["conditions"], stored["status"]["conditions"]);
        assert_eq!(
            back["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            90
        );
        assert_eq!(back["metadata"]["annotations"], json!({"team": "a"}));
        // A list answer converts each item; a Status passes.
        let mut list = json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2",
            "items": [stored.clone()]});
        AUTOSCALING_V1.answer(&mut list);
        assert_eq!(list["apiVersion"], "autoscaling/v1");
        assert_eq!(
            list["items"][0]["spec"]["targetCPUUtilizationPercentage"],
            50
        );
        let uri = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web?fieldManager=kubectl"
            .parse()
            .unwrap();
        assert_eq!(
            AUTOSCALING_V1.stored_uri(&uri).unwrap().to_string(),
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web?fieldManager=kubectl"
        );
    }
}
