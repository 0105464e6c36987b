//! PATCH bodies in the content types kubectl sends: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902) and strategic merge patch, the last
//! as a merge patch whose lists of named things merge by their key (the
//! `patchMergeKey`s of the Kubernetes types c4m serves) and whose `$patch`,
//! `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList`
//! directives are honoured. Server-side apply is `server_side_apply.rs`.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The kind of a PATCH body, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply
    /// (`server_side_apply.rs`), which needs the field manager.
    Apply,
}

impl PatchType {
    /// The patch type a `Content-Type` names; 415 for any other.
    pub(crate) fn from_content_type(content_type: &str) -> Result<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            other => Err(Error::UnsupportedMediaType(format!(
                "PATCH needs Content-Type application/merge-patch+json, \
                 application/json-patch+json, application/strategic-merge-patch+json \
                 or application/apply-patch+yaml, not {other:?}"
            ))),
        }
    }
}

/// `current` with the patch `body` applied. A body that is not JSON is a
/// 400, a JSON patch that cannot apply (a failed `test`, a missing path)
/// a 422; `current` is never changed.
pub(crate) fn apply(patch_type: PatchType, current: &Value, body: &[u8]) -> Result<Value> {
    if patch_type == PatchType::Apply {
        return Err(Error::UnsupportedMediaType(
            "server-side apply is served for objects, not for this subresource".into(),
        ));
    }
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the patch is not valid JSON: {e}")))?;
    let mut patched = current.clone();
    match patch_type {
        PatchType::Merge => {
            require_object(&patch)?;
            merge(&mut patched, &patch);
        }
        PatchType::Strategic => {
            require_object(&patch)?;
            strategic_merge(&mut patched, &patch);
        }
        PatchType::Apply => {} // refused above
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                Error::BadRequest(format!("the JSON patch is not a list of operations: {e}"))
            })?;
            json_patch::patch(&mut patched, &operations)
                .map_err(|e| Error::Invalid(format!("the JSON patch cannot be applied: {e}")))?;
        }
    }
    Ok(patched)
}

fn require_object(patch: &Value) -> Result<()> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(Error::BadRequest(
            "a merge patch must be a JSON object".into(),
        ))
    }
}

/// RFC 7386: objects merge key by key, null deletes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The key the elements of list `field` merge by, as Kubernetes' types
/// declare it (`patchMergeKey`); None: the list is replaced whole.
pub(crate) fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => Some("name"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" if elements.iter().any(|e| e.get("containerPort").is_some()) => {
            Some("containerPort")
        }
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// A patch value without its directives, to be stored as it is.
fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), without_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .map(without_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Strategic merge of `patch` into `target`.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = without_directives(patch);
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") || !target.is_object() {
        *target = without_directives(&Value::Object(patch.clone()));
        return;
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let removed = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|item| !removed.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        let deletes = value.get("$patch").and_then(Value::as_str) == Some("delete");
        if value.is_null() || deletes {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), value) {
            (Some(Value::Array(current)), Value::Array(patch_items)) => {
                merge_list(key, current, patch_items);
            }
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value);
            }
            _ => {
                target.insert(key.clone(), without_directives(value));
            }
        }
    }
    if let Some(retained) = patch.get("$retainKeys").and_then(Value::as_array) {
        target.retain(|key, _| retained.iter().any(|r| r == key));
    }
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(items)), Some(order)) =
                (target.get_mut(field), order.as_array())
        {
            reorder(field, items, order);
        }
    }
}

/// Merges list `field`: by its merge key when it has one and every
/// element is an object, else replaced.
fn merge_list(field: &str, current: &mut Vec<Value>, patch: &[Value]) {
    let replace = patch
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"));
    let key = merge_key(field, patch).or_else(|| merge_key(field, current));
    let mergeable = patch.iter().chain(current.iter()).all(Value::is_object);
    let Some(key) = key.filter(|_| mergeable && !replace) else {
        if let Value::Array(items) = without_directives(&Value::Array(patch.to_vec())) {
            *current = items;
        }
        return;
    };
    for item in patch {
        let Some(id) = item.get(key) else {
            current.push(without_directives(item));
            continue;
        };
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            current.retain(|existing| existing.get(key) != Some(id));
            continue;
        }
        match current
            .iter_mut()
            .find(|existing| existing.get(key) == Some(id))
        {
            Some(existing) => strategic_merge(existing, item),
            None => current.push(without_directives(item)),
        }
    }
}

/// Orders `items` as `$setElementOrder` lists them (by merge key), those
/// it does not name last in their current order.
fn reorder(field: &str, items: &mut [Value], order: &[Value]) {
    let Some(key) = merge_key(field, order) else {
        return;
    };
    let position = |item: &Value| {
        item.get(key)
            .and_then(|id| order.iter().position(|o| o.get(key) == Some(id)))
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(position);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply_text(patch_type: PatchType, current: &Value, patch: &str) -> Result<Value> {
        apply(patch_type, current, patch.as_bytes())
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json").unwrap(),
            PatchType::Strategic
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml").unwrap(),
            PatchType::Apply
        );
        let error = apply(PatchType::Apply, &json!({}), b"{}").unwrap_err();
        assert_eq!(error.http_status().0, 415);
        assert_eq!(
            PatchType::from_content_type("text/plain")
                .unwrap_err()
                .http_status()
                .0,
            415
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386, section 3.
        let target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"], "content": "This will be unchanged"});
        let patch = r#"{"title": "Hello!", "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null}, "tags": ["example"]}"#;
        assert_eq!(
            apply_text(PatchType::Merge, &target, patch).unwrap(),
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
        assert_eq!(
            apply_text(
                PatchType::Merge,
                &json!({"a": [{"b": "c"}]}),
                r#"{"a": [1]}"#
            )
            .unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(
            apply_text(
                PatchType::Merge,
                &json!({"a": "b"}),
                r#"{"a": {"bb": {"ccc": null}}}"#
            )
            .unwrap(),
            json!({"a": {"bb": {}}})
        );
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let current = json!({"spec": {"replicas": 1, "list": ["a"]}});
        let patch = r#"[{"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/list/-", "value": "b"},
            {"op": "remove", "path": "/spec/list/0"}]"#;
        assert_eq!(
            apply_text(PatchType::Json, &current, patch).unwrap(),
            json!({"spec": {"replicas": 3, "list": ["b"]}})
        );
        let failed_test = r#"[{"op": "test", "path": "/spec/replicas", "value": 2}]"#;
        let error = apply_text(PatchType::Json, &current, failed_test).unwrap_err();
        assert_eq!(error.http_status().0, 422, "{error}");
        let missing = r#"[{"op": "remove", "path": "/spec/nothing"}]"#;
        assert_eq!(
            apply_text(PatchType::Json, &current, missing)
                .unwrap_err()
                .http_status()
                .0,
            422
        );
        let not_ops = r#"{"op": "remove"}"#;
        assert_eq!(
            apply_text(PatchType::Json, &current, not_ops)
                .unwrap_err()
                .http_status()
                .0,
            400
        );
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        let current = json!({"a": 1});
        for patch_type in [PatchType::Merge, PatchType::Strategic, PatchType::Json] {
            let error = apply_text(patch_type, &current, "{not json").unwrap_err();
            assert_eq!(error.http_status().0, 400, "{error}");
        }
        let error = apply_text(PatchType::Merge, &current, "[1]").unwrap_err();
        assert_eq!(error.http_status().0, 400);
    }

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1",
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "ports": [{"containerPort": 80}, {"containerPort": 81}]},
            {"name": "sidecar", "image": "side:1"},
        ], "volumes": [{"name": "data", "emptyDir": {}}]}}}})
    }

    #[test]
    fn strategic_merge_merges_named_lists() {
        let patch = r#"{"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
             "ports": [{"containerPort": 81, "name": "metrics"}]},
            {"name": "new", "image": "new:1"}]}}}}"#;
        let patched = apply_text(PatchType::Strategic, &deployment(), patch).unwrap();
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().unwrap().len(), 3);
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 81, "name": "metrics"}])
        );
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(containers[2]["name"], "new");
        // A merge patch replaces the whole list instead.
        let merged = apply_text(PatchType::Merge, &deployment(), patch).unwrap();
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn strategic_merge_directives() {
        // What kubectl apply sends when a container and an env var go away.
        let patch = r#"{"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
            "containers": [{"name": "web", "$setElementOrder/env": [{"name": "A"}],
                            "env": [{"$patch": "delete", "name": "B"}]}],
            "volumes": [{"$patch": "replace"}, {"name": "cache", "emptyDir": {}}]}}}}"#;
        let patched = apply_text(PatchType::Strategic, &deployment(), patch).unwrap();
        let spec = &patched["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["name"], "sidecar");
        assert_eq!(
            spec["containers"][1]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(spec["volumes"], json!([{"name": "cache", "emptyDir": {}}]));
        assert!(!patched.to_string().contains('$'), "{patched}");
        let deleted = apply_text(
            PatchType::Strategic,
            &json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]}}),
            r#"{"metadata": {"labels": {"a": null}, "$deleteFromPrimitiveList/finalizers": ["x"]}}"#,
        )
        .unwrap();
        assert_eq!(
            deleted,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]}})
        );
        let retained = apply_text(
            PatchType::Strategic,
            &json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
            r#"{"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}"#,
        )
        .unwrap();
        assert_eq!(retained, json!({"strategy": {"type": "Recreate"}}));
    }
}
