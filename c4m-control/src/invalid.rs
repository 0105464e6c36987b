//! Invalid objects reported as Kubernetes reports them: a 422 `Status`
//! whose `details` name the kind and the object and list one cause per
//! field, which kubectl prints as `The Deployment "x" is invalid: FIELD:
//! MESSAGE`.

use c4m_core::ResourceKind;
use serde_json::Value;

use crate::error::{Error, FieldCause};

/// The error for an object of `kind` named `name` whose `field` is wrong;
/// `object` is what was sent, for the value Kubernetes quotes.
pub(crate) fn invalid_field(
    kind: &ResourceKind,
    name: &str,
    field: &str,
    message: &str,
    object: Option<&Value>,
) -> Error {
    Error::InvalidObject {
        kind: kind.kind.to_string(),
        group: kind.group.to_string(),
        name: name.to_string(),
        causes: vec![cause(field, message, object)],
    }
}

/// `error` as the failure of a request on the object `name` of `kind`: an
/// `Invalid` message (`FIELD: MESSAGE`) becomes an [`Error::InvalidObject`];
/// anything else stays as it is.
pub(crate) fn for_object(error: Error, kind: &ResourceKind, name: &str) -> Error {
    match error {
        Error::Invalid(message) => {
            let (field, detail) = split_field(&message);
            invalid_field(kind, name, field, detail, None)
        }
        other => other,
    }
}

/// `("spec.replicas", "must ...")` from `"spec.replicas: must ..."`; the
/// whole message and no field when it does not start with a field path.
fn split_field(message: &str) -> (&str, &str) {
    match message.split_once(": ") {
        Some((field, detail))
            if !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-[]/*=".contains(c)) =>
        {
            (field, detail)
        }
        _ => ("", message),
    }
}

/// A cause in Kubernetes' words: its reason, and for an invalid value the
/// value itself (`Invalid value: -1: ...`) when `object` has it.
fn cause(field: &str, message: &str, object: Option<&Value>) -> FieldCause {
    const KNOWN: [(&str, &str); 7] = [
        ("Required value", "FieldValueRequired"),
        ("Too long", "FieldValueTooLong"),
        ("Not found", "FieldValueNotFound"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Invalid value", "FieldValueInvalid"),
    ];
    let (reason, message) =
        if let Some((_, reason)) = KNOWN.iter().find(|(prefix, _)| message.starts_with(prefix)) {
            (*reason, message.to_string())
        } else if message == "required field is missing" {
            ("FieldValueRequired", "Required value".to_string())
        } else if let Some(value) = object.and_then(|o| value_at(o, field)) {
            (
                "FieldValueInvalid",
                format!("Invalid value: {value}: {message}"),
            )
        } else {
            ("FieldValueInvalid", message.to_string())
        };
    FieldCause {
        reason: reason.to_string(),
        message,
        field: field.to_string(),
    }
}

/// The value at a field path (`spec.template.spec.containers[0].image`).
fn value_at<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    if field.is_empty() {
        return None;
    }
    let mut value = object;
    for segment in field.split('.') {
        let (key, indices) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            value = value.get(key)?;
        }
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            value = value.get(index.strip_suffix(']')?.parse::<usize>().ok()?)?;
        }
    }
    // Only scalars are quoted, as Kubernetes does for most fields.
    (!value.is_object() && !value.is_array()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> &'static ResourceKind {
        ResourceKind::from_name("deployments").unwrap()
    }

    #[test]
    fn invalid_values_are_quoted_with_their_field() {
        let object = json!({"spec": {"replicas": -1,
            "template": {"spec": {"containers": [{"name": "a"}, {"name": "B_"}]}}}});
        let error = invalid_field(
            deployments(),
            "web",
            "spec.replicas",
            "must not be negative, found -1",
            Some(&object),
        );
        assert_eq!(
            error.to_string(),
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must not be negative, found -1"
        );
        let Error::InvalidObject { causes, .. } = invalid_field(
            deployments(),
            "web",
            "spec.template.spec.containers[1].name",
            "must be a DNS label",
            Some(&object),
        ) else {
            panic!("not InvalidObject")
        };
        assert_eq!(
            causes,
            [FieldCause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"B_\": must be a DNS label".into(),
                field: "spec.template.spec.containers[1].name".into(),
            }]
        );
    }

    #[test]
    fn messages_become_causes() {
        let pods = ResourceKind::from_name("pods").unwrap();
        let error = for_object(
            Error::Invalid("metadata.name: Required value".into()),
            pods,
            "",
        );
        let Error::InvalidObject { causes, kind, .. } = &error else {
            panic!("not InvalidObject: {error}")
        };
        assert_eq!(kind, "Pod");
        assert_eq!(causes[0].reason, "FieldValueRequired");
        assert_eq!(causes[0].field, "metadata.name");
        let whole = for_object(
            Error::Invalid("the JSON patch cannot be applied: test failed".into()),
            deployments(),
            "web",
        );
        let Error::InvalidObject { causes, .. } = &whole else {
            panic!("not InvalidObject: {whole}")
        };
        assert_eq!(causes[0].field, "");
        assert_eq!(
            whole.to_string(),
            "Deployment.apps \"web\" is invalid: the JSON patch cannot be applied: test failed"
        );
        assert!(matches!(
            for_object(Error::Conflict("x".into()), deployments(), "web"),
            Error::Conflict(_)
        ));
    }
}
