//! Cross-namespace references (ReferenceGrant), Secrets and label selectors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::action::ObjectRef;
use super::super::error::{Problem, RouteError};
use crate::proxy::api::{GROUP, ReferenceGrant};

/// The ReferenceGrants of the cluster, for permission checks.
pub(super) struct Grants<'a> {
    grants: &'a [ReferenceGrant],
}

impl<'a> Grants<'a> {
    pub(super) fn new(grants: &'a [ReferenceGrant]) -> Self {
        Grants { grants }
    }

    /// Whether a `from_kind` (of the Gateway API group) in `from_namespace`
    /// may refer to `to_kind` `to_name` of the core group in `to_namespace`.
    pub(super) fn permits(
        &self,
        from_kind: &str,
        from_namespace: &str,
        to_kind: &str,
        to_namespace: &str,
        to_name: &str,
    ) -> bool {
        if from_namespace == to_namespace {
            return true;
        }
        self.grants
            .iter()
            .filter(|g| g.metadata.namespace.as_deref() == Some(to_namespace))
            .any(|g| {
                g.spec.from.iter().any(|f| {
                    f.group == GROUP && f.kind == from_kind && f.namespace == from_namespace
                }) && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
            })
    }
}

/// The PEM chain and key of a `kubernetes.io/tls` Secret.
pub(super) fn tls_secret<'s>(
    secrets: &'s [Secret],
    namespace: &str,
    name: &str,
    referrer: &ObjectRef,
    field: &str,
) -> Result<(ObjectRef, &'s [u8], &'s [u8]), RouteError> {
    let secret_ref = ObjectRef::new("Secret", namespace, name);
    let secret = secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
        .ok_or_else(|| {
            RouteError::new(referrer, field, Problem::NotFound(secret_ref.to_string()))
        })?;
    if let Some(kind) = secret.type_.as_deref()
        && kind != "kubernetes.io/tls"
    {
        return Err(RouteError::new(
            referrer,
            field,
            Problem::Invalid(format!(
                "{secret_ref} has type {kind:?}, not kubernetes.io/tls"
            )),
        ));
    }
    let data = secret.data.as_ref();
    let get = |key: &str| {
        data.and_then(|d| d.get(key))
            .map(|v| v.0.as_slice())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                RouteError::new(
                    referrer,
                    field,
                    Problem::Invalid(format!("{secret_ref} has no data {key:?}")),
                )
            })
    };
    let chain = get("tls.crt")?;
    let key = get("tls.key")?;
    Ok((secret_ref, chain, key))
}

/// Whether `labels` satisfy a label selector (matchLabels and
/// matchExpressions with In, NotIn, Exists, DoesNotExist).
pub(super) fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, String> {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    for (k, v) in selector.match_labels.iter().flatten() {
        if get(k) != Some(v) {
            return Ok(false);
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = get(&expr.key);
        let holds = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("unknown selector operator {other:?}")),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}
