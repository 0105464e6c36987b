//! Server-side apply (`PATCH` with `application/apply-patch+yaml`), a
//! faithful subset of Kubernetes': each field manager owns the fields it
//! applied, recorded in `metadata.managedFields` as `FieldsV1`
//! (`f:NAME` for a field, `k:{"KEY":VALUE}` for an element of a list that
//! merges by key, `.` for the element itself). Applying a field another
//! manager owns with a different value is a 409 naming the field and the
//! manager, unless `force` takes it over; fields a manager stops applying
//! are removed unless another manager owns them. Lists merge by the same
//! keys strategic merge patch uses; other lists are atomic, owned whole.
//! An object that does not exist is created.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::error::{Error, FieldCause, Result};
use crate::patch::{merge_key, strategic_merge};

/// One owned field: the `FieldsV1` keys from the root (`f:spec`,
/// `f:containers`, `k:{"name":"web"}`, `f:image`).
type FieldPath = Vec<String>;
/// A manager's fields.
type FieldSet = BTreeSet<FieldPath>;

/// Fields no manager owns: identity and server-owned metadata.
const UNTRACKED: [&[&str]; 10] = [
    &["f:apiVersion"],
    &["f:kind"],
    &["f:status"],
    &["f:metadata", "f:name"],
    &["f:metadata", "f:namespace"],
    &["f:metadata", "f:uid"],
    &["f:metadata", "f:resourceVersion"],
    &["f:metadata", "f:generation"],
    &["f:metadata", "f:creationTimestamp"],
    &["f:metadata", "f:managedFields"],
];

/// A server-side apply request.
pub(crate) struct ApplyPatch<'a> {
    /// The applied configuration (YAML or JSON).
    pub body: &'a [u8],
    /// `fieldManager`.
    pub manager: &'a str,
    /// `force`: take conflicting fields from their managers.
    pub force: bool,
    /// `apiVersion` of the kind, as managedFields record it.
    pub api_version: String,
}

/// Parses the applied configuration: one object, as YAML or JSON.
pub(crate) fn parse(body: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::BadRequest("the apply patch is not UTF-8".into()))?;
    let mut documents = c4m_core::parse_documents("apply patch", text)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    match (documents.pop(), documents.is_empty()) {
        (Some(document), true) if document.value.is_object() => Ok(document.value),
        _ => Err(Error::BadRequest(
            "an apply patch must be exactly one object".into(),
        )),
    }
}

impl ApplyPatch<'_> {
    /// The object after applying to `current` (None: it is created).
    pub(crate) fn apply(&self, current: Option<&Value>) -> Result<Value> {
        if self.manager.is_empty() {
            return Err(Error::BadRequest(
                "fieldManager is required for apply requests".into(),
            ));
        }
        let applied = parse(self.body)?;
        let applied_set = field_set(&applied);
        let empty = json!({});
        let current = current.unwrap_or(&empty);
        let mut managers = Managers::read(current);
        let previous = managers.take_apply(self.manager);

        // Conflicts: fields another manager owns, applied with another value.
        let mut conflicts: Vec<(String, String, FieldPath)> = Vec::new();
        for entry in &managers.entries {
            for path in entry.fields.intersection(&applied_set) {
                if path.last().is_some_and(|p| p == ".") {
                    continue;
                }
                if value_at(current, path) != value_at(&applied, path) {
                    conflicts.push((
                        entry.manager.clone(),
                        entry.api_version.clone(),
                        path.clone(),
                    ));
                }
            }
        }
        if !conflicts.is_empty() {
            if !self.force {
                return Err(self.conflict(&conflicts));
            }
            for entry in &mut managers.entries {
                for (_, _, path) in conflicts.iter().filter(|c| c.0 == entry.manager) {
                    entry.fields.remove(path);
                }
            }
        }

        // Fields this manager stopped applying go, unless another owns them.
        let others: FieldSet = managers
            .entries
            .iter()
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let mut object = current.clone();
        let mut dropped: Vec<&FieldPath> = previous
            .iter()
            .filter(|p| !applied_set.contains(*p) && !others.contains(*p))
            .collect();
        // List elements first (outermost first: an element is found by its
        // key fields, which must still be there), then fields, deepest first.
        dropped.sort_by_key(|p| {
            if p.last().is_some_and(|s| s == ".") {
                (0, p.len())
            } else {
                (1, usize::MAX - p.len())
            }
        });
        for path in dropped {
            remove_at(&mut object, path);
        }
        strategic_merge(&mut object, &applied);

        managers.entries.retain(|e| !e.fields.is_empty());
        managers.entries.push(ManagedEntry {
            manager: self.manager.to_string(),
            operation: "Apply".into(),
            api_version: self.api_version.clone(),
            time: c4m_core::now_rfc3339(),
            fields: applied_set,
        });
        // The applied configuration may hold anything at `metadata`.
        crate::json::set_path(
            &mut object,
            &["metadata", "managedFields"],
            managers.to_json(),
        )?;
        Ok(object)
    }

    fn conflict(&self, conflicts: &[(String, String, FieldPath)]) -> Error {
        let causes: Vec<FieldCause> = conflicts
            .iter()
            .map(|(manager, api_version, path)| FieldCause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with {manager:?} using {api_version}"),
                field: display_path(path),
            })
            .collect();
        let message = match causes.as_slice() {
            [one] => format!(
                "Apply failed with 1 conflict: {}: {}",
                one.message, one.field
            ),
            many => {
                let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for cause in many {
                    by_manager
                        .entry(&cause.message)
                        .or_default()
                        .push(&cause.field);
                }
                let parts: Vec<String> = by_manager
                    .into_iter()
                    .map(|(message, fields)| {
                        let fields: Vec<String> =
                            fields.into_iter().map(|f| format!("- {f}")).collect();
                        format!(
                            "{}:\n{}",
                            message.replacen("conflict", "conflicts", 1),
                            fields.join("\n")
                        )
                    })
                    .collect();
                format!(
                    "Apply failed with {} conflicts: {}",
                    many.len(),
                    parts.join("\n")
                )
            }
        };
        Error::ApplyConflict { message, causes }
    }
}

/// One `managedFields` entry.
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: FieldSet,
}

/// An object's `managedFields`.
struct Managers {
    entries: Vec<ManagedEntry>,
}

impl Managers {
    fn read(object: &Value) -> Managers {
        let entries = object["metadata"]["managedFields"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| ManagedEntry {
                        manager: e["manager"].as_str().unwrap_or_default().to_string(),
                        operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                        api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                        time: e["time"].as_str().unwrap_or_default().to_string(),
                        fields: flatten(&e["fieldsV1"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Managers { entries }
    }

    /// Removes and returns the fields `manager` applied before.
    fn take_apply(&mut self, manager: &str) -> FieldSet {
        let mut taken = FieldSet::new();
        self.entries.retain_mut(|e| {
            if e.manager == manager && e.operation == "Apply" {
                taken.append(&mut e.fields);
                false
            } else {
                true
            }
        });
        taken
    }

    fn to_json(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    json!({
                        "manager": e.manager,
                        "operation": e.operation,
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": unflatten(&e.fields),
                    })
                })
                .collect(),
        )
    }
}

/// The fields an applied configuration sets.
fn field_set(applied: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    collect(applied, &mut Vec::new(), &mut set);
    set.retain(|path| {
        !UNTRACKED.iter().any(|untracked| {
            untracked.len() <= path.len() && untracked.iter().zip(path).all(|(u, p)| u == p)
        })
    });
    set
}

fn collect(value: &Value, path: &mut FieldPath, set: &mut FieldSet) {
    let Value::Object(map) = value else {
        set.insert(path.clone());
        return;
    };
    if map.is_empty() && !path.is_empty() {
        set.insert(path.clone());
    }
    for (name, child) in map {
        path.push(format!("f:{name}"));
        match child {
            Value::Array(items) => match keyed(name, items) {
                Some(keys) => {
                    for (key, item) in keys.into_iter().zip(items) {
                        path.push(key);
                        path.push(".".into());
                        set.insert(path.clone());
                        path.pop();
                        collect(item, path, set);
                        path.pop();
                    }
                }
                None => {
                    set.insert(path.clone());
                }
            },
            Value::Object(_) => collect(child, path, set),
            _ => {
                set.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// `k:{"KEY":VALUE}` for each element of a list that merges by key; None
/// when the list is atomic (no merge key, or an element without it).
fn keyed(field: &str, items: &[Value]) -> Option<Vec<String>> {
    let key = merge_key(field, items)?;
    items
        .iter()
        .map(|item| {
            let value = item.get(key)?;
            Some(format!("k:{}", json!({ key: value })))
        })
        .collect()
}

/// `FieldsV1` JSON from flat paths.
fn unflatten(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for segment in path {
            node = node
                .entry(segment.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("nodes are objects");
        }
    }
    Value::Object(root)
}

/// Flat paths (the leaves, and `.` markers) from `FieldsV1` JSON.
fn flatten(fields: &Value) -> FieldSet {
    fn walk(value: &Value, path: &mut FieldPath, set: &mut FieldSet) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (segment, child) in map {
                    path.push(segment.clone());
                    walk(child, path, set);
                    path.pop();
                }
            }
            _ if !path.is_empty() => {
                set.insert(path.clone());
            }
            _ => {}
        }
    }
    let mut set = FieldSet::new();
    walk(fields, &mut Vec::new(), &mut set);
    set
}

/// The element of `items` a `k:{...}` segment names.
fn find_keyed(items: &[Value], segment: &str) -> Option<usize> {
    let key: Map<String, Value> = serde_json::from_str(segment.strip_prefix("k:")?).ok()?;
    items
        .iter()
        .position(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}

/// The value a field path names in `object`.
fn value_at<'a>(object: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut value = object;
    for segment in path {
        value = if let Some(name) = segment.strip_prefix("f:") {
            value.get(name)?
        } else if segment == "." {
            value
        } else {
            let items = value.as_array()?;
            &items[find_keyed(items, segment)?]
        };
    }
    Some(value)
}

/// Removes the field (or list element) a path names, if present.
fn remove_at(object: &mut Value, path: &FieldPath) {
    let (last, parents) = match path.split_last() {
        Some((last, parents)) if last == "." => match parents.split_last() {
            Some((element, parents)) => (element, parents),
            None => return,
        },
        Some(split) => split,
        None => return,
    };
    let mut value = object;
    for segment in parents {
        let next = if let Some(name) = segment.strip_prefix("f:") {
            value.get_mut(name)
        } else {
            let index = value
                .as_array()
                .and_then(|items| find_keyed(items, segment));
            index.and_then(|i| value.get_mut(i))
        };
        let Some(next) = next else {
            return;
        };
        value = next;
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(map) = value.as_object_mut() {
            map.remove(name);
        }
    } else if let Some(items) = value.as_array_mut()
        && let Some(index) = find_keyed(items, last)
    {
        items.remove(index);
    }
}

/// A field path as Kubernetes prints it in conflicts
/// (`.spec.template.spec.containers[name="web"].image`).
fn display_path(path: &FieldPath) -> String {
    let mut text = String::new();
    for segment in path {
        if let Some(name) = segment.strip_prefix("f:") {
            text.push('.');
            text.push_str(name);
        } else if let Some(key) = segment.strip_prefix("k:")
            && let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key)
        {
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(current: Option<&Value>, manager: &str, force: bool, body: &str) -> Result<Value> {
        ApplyPatch {
            body: body.as_bytes(),
            manager,
            force,
            api_version: "apps/v1".into(),
        }
        .apply(current)
    }

    const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {a: "1", b: "2"}}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - {name: web, image: x, env: [{name: A, value: "1"}, {name: B, value: "2"}]}
"#;

    #[test]
    fn fields_are_owned_conflicts_named_and_dropped_fields_removed() {
        let first = apply(None, "alice", false, WEB).unwrap();
        let fields = &first["metadata"]["managedFields"][0];
        assert_eq!(fields["manager"], "alice");
        assert_eq!(fields["operation"], "Apply");
        let v1 = &fields["fieldsV1"];
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        let container =
            &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(container["."], json!({}));
        assert_eq!(
            container["f:env"]["k:{\"name\":\"B\"}"]["f:value"],
            json!({})
        );
        assert!(v1["f:metadata"].get("f:name").is_none());

        // Another manager with another value: a conflict naming field and manager.
        let bob =
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 5}\n";
        let Err(Error::ApplyConflict {
            message, causes, ..
        }) = apply(Some(&first), "bob", false, bob)
        else {
            panic!("expected a conflict")
        };
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas"
        );
        assert_eq!(causes[0].field, ".spec.replicas");
        // The same value is shared, not a conflict; force takes the field.
        let shared = apply(Some(&first), "bob", false, &bob.replace('5', "2")).unwrap();
        assert_eq!(
            shared["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let forced = apply(Some(&first), "bob", true, bob).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let alice = &forced["metadata"]["managedFields"][0];
        assert_eq!(alice["manager"], "alice");
        assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());

        // alice stops applying label b and env B: they go; replicas (bob's) stays.
        let fewer = WEB
            .replace(", b: \"2\"", "")
            .replace(", {name: B, value: \"2\"}", "")
            .replace("  replicas: 2\n", "");
        let after = apply(Some(&forced), "alice", false, &fewer).unwrap();
        assert_eq!(after["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            after["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(after["spec"]["replicas"], 5);
    }

    #[test]
    fn an_apply_needs_a_manager_and_one_object() {
        assert!(matches!(
            apply(None, "", false, WEB),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            apply(None, "m", false, "[1, 2]"),
            Err(Error::BadRequest(_))
        ));
    }
}
