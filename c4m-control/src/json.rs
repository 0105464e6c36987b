//! Writing into JSON that came from outside (a request body, a stored
//! object a client wrote): `value["a"]["b"] = x` panics when `a` holds a
//! string or a number, so code that writes into such a value goes through
//! [`set_path`], which answers a non-object with an error naming the field.
//! Why a helper and not a lint: decision
//! [0035](../../docs/decisions/0035-json-writes-through-set-path.md).

use serde_json::{Map, Value};

/// A field on the way to a write is not an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}must be an object, found {found}", field_prefix(field))]
pub(crate) struct NotAnObject {
    /// The field's path (`metadata`, `status.conditions`); empty for the
    /// value itself.
    pub field: String,
    /// What it holds instead (`a string`).
    pub found: &'static str,
}

/// `FIELD: ` before a message about a field; nothing for the value itself.
fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl From<NotAnObject> for crate::Error {
    fn from(error: NotAnObject) -> Self {
        crate::Error::Invalid(error.to_string())
    }
}

/// Sets `path` in `value` to `new`, making each missing (or null) object on
/// the way; fails, changing nothing, when `value` or a field on the way
/// holds something other than an object.
pub(crate) fn set_path(value: &mut Value, path: &[&str], new: Value) -> Result<(), NotAnObject> {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return Ok(());
    };
    object_at(value, parents)?.insert((*last).to_string(), new);
    Ok(())
}

/// The object at `path` in `value`, made (as empty objects) where it or a
/// field on the way is missing or null. A failure changes nothing: only a
/// field that exists can hold a non-object, and nothing is made before the
/// walk has passed every field that exists.
pub(crate) fn object_at<'a>(
    value: &'a mut Value,
    path: &[&str],
) -> Result<&'a mut Map<String, Value>, NotAnObject> {
    let mut current = value;
    for (depth, field) in path.iter().enumerate() {
        if current.is_null() {
            *current = Value::Object(Map::new());
        }
        current = match current {
            Value::Object(map) => map.entry((*field).to_string()).or_insert(Value::Null),
            other => return Err(not_an_object(&path[..depth], other)),
        };
    }
    if current.is_null() {
        *current = Value::Object(Map::new());
    }
    match current {
        Value::Object(map) => Ok(map),
        other => Err(not_an_object(path, other)),
    }
}

/// The object at `field` of `value`, made empty when it holds anything
/// else: for a field the caller owns, such as a controller's `status`
/// (one stored wrong, before status writes were checked, is replaced
/// rather than stopping the controller). None when `value` is not an
/// object.
pub(crate) fn owned_object<'a>(
    value: &'a mut Value,
    field: &str,
) -> Option<&'a mut Map<String, Value>> {
    owned_member(value.as_object_mut()?, field)
}

/// [`owned_object`] of a member of `map` (always Some).
pub(crate) fn owned_member<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(field).or_insert(Value::Null);
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

fn not_an_object(path: &[&str], found: &Value) -> NotAnObject {
    NotAnObject {
        field: path.join("."),
        found: json_type(found),
    }
}

/// What a JSON value is, in words (`a string`).
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use serde_json::json;

    /// Where chained writes may stay for now: controllers and the
    /// scheduler write into objects they build, or into fields of stored
    /// objects that were checked on write, and a panic there is contained
    /// and retried by `controllers::run` (decision 0035). Everything else
    /// in this crate takes input and goes through [`set_path`].
    const NOT_YET_GUARDED: [&str; 3] = ["controllers/", "scheduler/", "scheduler.rs"];
    /// Converted, and guarded from now on.
    const GUARDED_CONTROLLERS: [&str; 1] = ["controllers/nodes.rs"];

    /// The guard: no chained write into JSON (`value["a"]["b"] = x`, which
    /// panics when `a` is not an object) in the crate's code outside
    /// [`NOT_YET_GUARDED`]. clippy cannot lint it (`disallowed-methods`
    /// does not see the index operator): this test does.
    #[test]
    fn no_chained_json_writes_where_input_is_handled() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for file in rust_files(&src) {
            let relative = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let exempt = NOT_YET_GUARDED.iter().any(|p| relative.starts_with(p))
                && !GUARDED_CONTROLLERS.contains(&relative.as_str());
            if exempt || relative.ends_with("tests.rs") || relative.contains("/tests/") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            // Tests (the module at the end of a file) build their own values.
            let code = text
                .rsplit_once("#[cfg(test)]\nmod tests")
                .map_or(text.as_str(), |(code, _)| code);
            for (number, line) in code.lines().enumerate() {
                if !line.trim_start().starts_with("//") && chained_write(line) {
                    found.push(format!("{relative}:{}: {}", number + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "chained writes into JSON (use crate::json::set_path, object_at or owned_object): {found:#?}"
        );
    }

    /// The check itself, on what it must and must not find.
    #[test]
    fn chained_writes_are_told_from_the_rest() {
        assert!(chained_write(
            r#"    pod["status"]["phase"] = json!("Failed");"#
        ));
        assert!(chained_write(
            r#"v["spec"]["ports"][i]["nodePort"]=json!(1);"#
        ));
        assert!(!chained_write(r#"    pod["status"] = json!({});"#));
        assert!(!chained_write(
            r#"    if pod["status"]["phase"] == "Failed" {"#
        ));
        assert!(!chained_write(
            r#"    let a = pod["status"]["phase"].clone();"#
        ));
        assert!(!chained_write(r#"    x[0][1] != y["a"]["b"]"#));
        assert!(!chained_write(
            r#"    let kept: [&[&str]; 2] = [&["a"], &["b"]];"#
        ));
    }

    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// Whether `line` assigns to a place reached through two or more
    /// index operations (`a[x][y] = ...`).
    fn chained_write(line: &str) -> bool {
        let bytes = line.as_bytes();
        (0..bytes.len()).any(|at| {
            let assigns = bytes[at] == b'='
                && bytes
                    .get(at + 1)
                    .is_none_or(|next| !matches!(next, b'=' | b'>'))
                && at > 0
                && !matches!(
                    bytes[at - 1],
                    b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/'
                );
            assigns && trailing_indexes(line[..at].trim_end()) >= 2
        })
    }

    /// How many `[...]` groups end `place`, preceded by a name or a
    /// closing bracket or parenthesis (an indexed place, not an array type
    /// or literal).
    fn trailing_indexes(place: &str) -> usize {
        let mut rest = place;
        let mut count = 0;
        while rest.ends_with(']') {
            let mut depth = 0;
            let mut open = None;
            for (at, c) in rest.char_indices().rev() {
                match c {
                    ']' => depth += 1,
                    '[' => {
                        depth -= 1;
                        if depth == 0 {
                            open = Some(at);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(open) = open else {
                return count;
            };
            rest = &rest[..open];
            let indexed = rest
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | ']' | ')'));
            if !indexed {
                return count;
            }
            count += 1;
        }
        count
    }

    #[test]
    fn fields_are_set_and_missing_objects_made() {
        let mut value = json!({"metadata": {"name": "a"}, "status": null});
        set_path(&mut value, &["metadata", "resourceVersion"], json!("7")).unwrap();
        set_path(&mut value, &["status", "phase"], json!("Failed")).unwrap();
        set_path(&mut value, &["spec", "template", "replicas"], json!(2)).unwrap();
        assert_eq!(
            value,
            json!({"metadata": {"name": "a", "resourceVersion": "7"},
                "status": {"phase": "Failed"}, "spec": {"template": {"replicas": 2}}})
        );
        let mut null = Value::Null;
        set_path(&mut null, &["a"], json!(1)).unwrap();
        assert_eq!(null, json!({"a": 1}));
    }

    /// What panics with `value["metadata"]["name"] = ...` is an error
    /// naming the field, and the value is left as it was.
    #[test]
    fn a_non_object_on_the_way_is_an_error_and_changes_nothing() {
        let mut value = json!({"metadata": 5, "status": "boom", "spec": {"a": [1]}});
        let before = value.clone();
        let error = set_path(&mut value, &["metadata", "name"], json!("x")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "metadata: must be an object, found a number"
        );
        let error = set_path(&mut value, &["status", "phase"], json!("Failed")).unwrap_err();
        assert_eq!(error.field, "status");
        let error = set_path(&mut value, &["spec", "a", "b"], json!(1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec.a: must be an object, found an array"
        );
        assert_eq!(value, before);
        // A field the caller owns is replaced instead.
        assert!(owned_object(&mut value, "status").unwrap().is_empty());
        assert_eq!(value["status"], json!({}));
        assert!(owned_object(&mut json!([]), "status").is_none());
        let mut text = json!("boom");
        let error = set_path(&mut text, &["metadata"], json!({})).unwrap_err();
        assert_eq!((error.field.as_str(), error.found), ("", "a string"));
        assert!(matches!(
            crate::Error::from(error),
            crate::Error::Invalid(message) if message == "must be an object, found a string"
        ));
    }
}
