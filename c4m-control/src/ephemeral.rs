//! A pod's `ephemeralcontainers` subresource, which `kubectl debug`
//! patches: the only way to add containers to a pod that runs. As
//! Kubernetes allows it, entries may only be added; an added one names an
//! image, no ports, probes, lifecycle hooks, resources or restart policy,
//! and its `targetContainerName` (whose processes it sees) is one of the
//! pod's containers; no terminal (`tty`), as for any container. Everything
//! else of the pod stays as it was.

use std::collections::HashSet;

use c4m_core::ResourceKind;
use k8s_openapi::api::core::v1::EphemeralContainer;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::invalid::invalid_field;

/// Fields an ephemeral container may not set (Kubernetes' validation).
const FORBIDDEN: [&str; 8] = [
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// Refuses an update of the pod itself (not of this subresource) that
/// changes its ephemeral containers, as Kubernetes does.
pub(crate) fn unchanged(kind: &ResourceKind, current: &Value, updated: &Value) -> Result<()> {
    if ephemeral_containers(current) == ephemeral_containers(updated) {
        return Ok(());
    }
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    Err(invalid_field(
        kind,
        name,
        "spec.ephemeralContainers",
        "Forbidden: may only be changed through the pod's ephemeralcontainers subresource",
        None,
    ))
}

/// A pod's `spec.ephemeralContainers` as sent; an empty list when absent.
fn ephemeral_containers(pod: &Value) -> &Value {
    static NONE: Value = Value::Array(Vec::new());
    match pod["spec"].get("ephemeralContainers") {
        None | Some(Value::Null) => &NONE,
        Some(list) => list,
    }
}

/// The pod `current` with the ephemeral containers of `requested` (the
/// pod as the client wants it), or why they are refused.
pub(crate) fn with_ephemeral_containers(
    kind: &ResourceKind,
    current: &Value,
    requested: &Value,
) -> Result<Value> {
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    let invalid =
        |field: &str, message: String| invalid_field(kind, name, field, &message, Some(requested));
    let list = |pod: &Value, field: &str| -> Result<Vec<Value>> {
        match pod["spec"].get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(invalid(
                &format!("spec.{field}"),
                "Invalid value: must be a list".into(),
            )),
        }
    };
    let old = list(current, "ephemeralContainers")?;
    let new = list(requested, "ephemeralContainers")?;
    for existing in &old {
        let same_name = new.iter().find(|c| c["name"] == existing["name"]);
        let what = match same_name {
            Some(c) if c == existing => continue,
            Some(_) => "changed",
            None => "removed",
        };
        return Err(invalid(
            "spec.ephemeralContainers",
            format!(
                "Forbidden: existing ephemeral containers {} may not be {what}",
                existing["name"]
            ),
        ));
    }
    let mut names: HashSet<String> = ["containers", "initContainers"]
        .into_iter()
        .map(|field| list(current, field))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let targets = names.clone();
    names.extend(
        old.iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string)),
    );
    for (i, container) in new.iter().enumerate() {
        if old.contains(container) {
            continue;
        }
        let path = format!("spec.ephemeralContainers[{i}]");
        let typed: EphemeralContainer = serde_json::from_value(container.clone())
            .map_err(|e| invalid(&path, format!("Invalid value: {e}")))?;
        c4m_core::dns1123_label(&typed.name).map_err(|reason| {
            invalid(
                &format!("{path}.name"),
                format!("Invalid value: {:?}: {reason}", typed.name),
            )
        })?;
        if !names.insert(typed.name.clone()) {
            return Err(invalid(
                &format!("{path}.name"),
                format!("Duplicate value: {:?}", typed.name),
            ));
        }
        if typed.image.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(&format!("{path}.image"), "Required value".into()));
        }
        // Set means not empty: kubectl debug sends `resources: {}`.
        let set = |v: &Value| match v {
            Value::Null => false,
            Value::Object(map) => !map.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => true,
        };
        if let Some(field) = FORBIDDEN
            .into_iter()
            .find(|f| container.get(*f).is_some_and(set))
        {
            return Err(invalid(
                &format!("{path}.{field}"),
                "Forbidden: cannot be set for an Ephemeral Container".into(),
            ));
        }
        // As for every container (c4m_core::validate): no driver gives a
        // main process a terminal.
        if typed.tty == Some(true) {
            return Err(invalid(
                &format!("{path}.tty"),
                "is not supported: no driver gives a container's main process a terminal; attach to its stdin without one (kubectl debug -i)".into(),
            ));
        }
        let driver = current["spec"]["runtimeClassName"].as_str();
        if let Some(why) = driver.and_then(c4m_core::pod_etc::refuses_ephemeral_containers) {
            return Err(invalid(&path, why));
        }
        if let Some(target) = typed.target_container_name.as_deref()
            && !target.is_empty()
            && !targets.contains(target)
        {
            return Err(invalid(
                &format!("{path}.targetContainerName"),
                format!("Not found: {target:?}"),
            ));
        }
    }
    let mut updated = current.clone();
    let spec = updated
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::Invalid(format!("pod {name} has no spec")))?;
    spec.insert("ephemeralContainers".into(), Value::Array(new));
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "initContainers": [{"name": "setup", "image": "bb:1"}],
                "containers": [{"name": "app", "image": "bb:1"}],
            },
            "status": {"phase": "Running"},
        })
    }

    fn pods() -> &'static ResourceKind {
        ResourceKind::from_name("pods").unwrap()
    }

    fn adding(current: &Value, ephemeral: Value) -> Result<Value> {
        let mut requested = current.clone();
        requested["spec"]["ephemeralContainers"] = ephemeral;
        // What the client sends beyond them is not taken.
        requested["spec"]["containers"][0]["image"] = json!("other:9");
        with_ephemeral_containers(pods(), current, &requested)
    }

    fn refusal(result: Result<Value>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(pod) => panic!("accepted: {pod:#}"),
        }
    }

    #[test]
    fn new_ephemeral_containers_are_added_and_nothing_else_changes() {
        let debugger = json!({"name": "debugger-abc", "image": "bb:1", "targetContainerName": "app",
            "command": ["sh"], "stdin": true, "tty": false, "resources": {}});
        let pod = adding(&pod(), json!([debugger])).unwrap();
        assert_eq!(pod["spec"]["ephemeralContainers"], json!([debugger]));
        assert_eq!(pod["spec"]["containers"][0]["image"], "bb:1");
        assert_eq!(pod["status"]["phase"], "Running");
        // A second is added after it; the first stays as it was.
        let second = json!({"name": "debugger-def", "image": "bb:1"});
        let pod = adding(&pod, json!([debugger, second])).unwrap();
        assert_eq!(
            pod["spec"]["ephemeralContainers"][1]["name"],
            "debugger-def"
        );
    }

    #[test]
    fn an_update_of_the_pod_keeps_its_ephemeral_containers() {
        let debugger = json!({"name": "debugger-abc", "image": "bb:1"});
        let current = adding(&pod(), json!([debugger])).unwrap();
        let mut relabelled = current.clone();
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(unchanged(pods(), &current, &relabelled).is_ok());
        assert!(unchanged(pods(), &pod(), &pod()).is_ok());
        let mut added = current.clone();
        let list = added["spec"]["ephemeralContainers"].as_array_mut().unwrap();
        list.push(json!({"name": "more", "image": "bb:1"}));
        let refused = unchanged(pods(), &current, &added).unwrap_err().to_string();
        assert!(
            refused.contains("spec.ephemeralContainers: Forbidden: may only be changed through"),
            "{refused}"
        );
    }

    #[test]
    fn existing_entries_may_not_change_or_go() {
        let debugger = json!({"name": "debugger-abc", "image": "bb:1"});
        let pod = adding(&pod(), json!([debugger])).unwrap();
        let changed = refusal(adding(
            &pod,
            json!([{"name": "debugger-abc", "image": "bb:2"}]),
        ));
        assert!(
            changed.contains(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger-abc\" may not be changed"
            ),
            "{changed}"
        );
        let removed = refusal(adding(&pod, json!([])));
        assert!(removed.contains("may not be removed"), "{removed}");
    }

    #[test]
    fn what_an_ephemeral_container_may_not_have_is_refused_by_field() {
        for (container, expected) in [
            (
                json!({"name": "d", "image": "bb:1", "ports": [{"containerPort": 80}]}),
                "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container",
            ),
            (
                json!({"name": "d", "image": "bb:1", "readinessProbe": {"exec": {"command": ["true"]}}}),
                "spec.ephemeralContainers[0].readinessProbe: Forbidden",
            ),
            (
                json!({"name": "d", "image": "bb:1", "resources": {"limits": {"cpu": "1"}}}),
                "spec.ephemeralContainers[0].resources: Forbidden",
            ),
            (
                json!({"name": "d"}),
                "spec.ephemeralContainers[0].image: Required value",
            ),
            (
                json!({"name": "app", "image": "bb:1"}),
                "spec.ephemeralContainers[0].name: Duplicate value: \"app\"",
            ),
            (
                json!({"name": "Bad_Name", "image": "bb:1"}),
                "spec.ephemeralContainers[0].name: Invalid value",
            ),
            (
                json!({"name": "d", "image": "bb:1", "targetContainerName": "nosuch"}),
                "spec.ephemeralContainers[0].targetContainerName: Not found: \"nosuch\"",
            ),
            (
                json!({"name": "d", "image": "bb:1", "stdin": true, "tty": true}),
                "spec.ephemeralContainers[0].tty: Invalid value: true: is not supported",
            ),
            (
                json!({"name": "d", "image": "bb:1", "command": "sh"}),
                "spec.ephemeralContainers[0]: Invalid value",
            ),
        ] {
            let refused = refusal(adding(&pod(), json!([container])));
            assert!(refused.contains(expected), "{expected}: {refused}");
        }
        let refused = refusal(adding(&pod(), json!({"name": "d"})));
        assert!(refused.contains("must be a list"), "{refused}");
        // A pod that names a driver without pod namespaces.
        let mut on_process = pod();
        on_process["spec"]["runtimeClassName"] = json!("process");
        let refused = refusal(adding(&on_process, json!([{"name": "d", "image": "bb:1"}])));
        assert!(
            refused.contains(
                "spec.ephemeralContainers[0]: the process driver cannot run ephemeral containers"
            ),
            "{refused}"
        );
    }
}
