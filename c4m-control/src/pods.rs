//! Reading instances (Pod-shaped JSON) the way controllers need to.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::objects::now_rfc3339;

/// `status.phase`, `Pending` when absent.
pub(crate) fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

/// Succeeded or Failed: the instance will not run again.
pub(crate) fn is_terminal(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The node the instance is bound to, if any.
pub(crate) fn node_name(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

/// The status of a condition (`"True"`, `"False"`, ...), if present.
pub(crate) fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Whether the Ready condition is True.
pub(crate) fn is_ready(object: &Value) -> bool {
    condition(object, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Sets a condition, keeping its transition time when the status stays.
/// Returns whether anything changed.
pub(crate) fn set_condition(
    object: &mut Value,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> bool {
    let status_text = if status { "True" } else { "False" };
    let Some(object_status) = crate::json::owned_object(object, "status") else {
        return false;
    };
    let conditions = object_status
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(conditions) = conditions.as_array_mut() else {
        return false;
    };
    let now = now_rfc3339();
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            if existing["status"] == status_text
                && existing["reason"] == reason
                && existing["message"] == message
            {
                return false;
            }
            if existing["status"] != status_text {
                existing["lastTransitionTime"] = json!(now);
            }
            existing["status"] = json!(status_text);
            existing["reason"] = json!(reason);
            existing["message"] = json!(message);
        }
        None => conditions.push(json!({
            "type": kind,
            "status": status_text,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
        })),
    }
    true
}

/// uid of the controller owning this object, if any.
pub(crate) fn controller_uid(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

/// `metadata.labels` as a map.
pub(crate) fn labels(object: &Value) -> BTreeMap<String, String> {
    string_map(&object["metadata"]["labels"])
}

/// A JSON object of strings as a map (other values are skipped).
pub(crate) fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every key/value of `selector` is among `labels` (an empty
/// selector matches nothing, as a Service without selector selects nothing).
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A port binding the agent reported (from the `c4m.io/ports` annotation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReportedPort {
    #[serde(default)]
    pub name: String,
    pub container_port: u16,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default)]
    pub protocol: String,
}

/// The instance's reported port bindings.
pub(crate) fn reported_ports(pod: &Value) -> Vec<ReportedPort> {
    pod["metadata"]["annotations"][c4m_core::annotations::PORTS]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// FNV-1a: a stable hash (unlike std's) for template hashes that must not
/// change between builds.
pub(crate) fn stable_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")[..10].to_string()
}
