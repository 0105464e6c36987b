//! The namespace controller: empties a namespace being deleted, then lets
//! it go.
//!
//! Deleting a namespace only marks it (Terminating) while its
//! `spec.finalizers` hold the `kubernetes` finalizer
//! ([`crate::deletion`]); creates in it are refused from then on. This
//! controller deletes everything in it, as its owners would (pods
//! gracefully, objects with finalizers when those are done), reports what
//! remains in the namespace's conditions, and when nothing is left removes
//! the finalizer and the namespace.

use std::sync::Arc;

use c4m_core::KINDS;
use serde_json::{Value, json};

use super::{latest, reconcile_each};
use crate::Result;
use crate::cache::Cache;
use crate::deletion::{
    DeleteOptions, NAMESPACE_FINALIZER, finalizers, is_deleting, namespace_finalizers,
};
use crate::objects::{Objects, kind, name_of};

/// What is left in a namespace being deleted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Remaining {
    /// Objects per kind's plural (still there, deleting or not).
    by_kind: Vec<(&'static str, usize)>,
    /// Objects held by finalizers, per finalizer.
    by_finalizer: Vec<(String, usize)>,
}

impl Remaining {
    fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    /// The namespace's conditions, as Kubernetes' namespace controller
    /// writes them (those `kubectl describe namespace` shows).
    fn conditions(&self, now: &str) -> Value {
        let condition = |kind: &str, active: bool, reason: &str, message: String| {
            json!({
                "type": kind,
                "status": if active { "True" } else { "False" },
                "lastTransitionTime": now,
                "reason": reason,
                "message": message,
            })
        };
        let content = self
            .by_kind
            .iter()
            .map(|(plural, n)| format!("{plural} has {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ");
        let held = self
            .by_finalizer
            .iter()
            .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ");
        json!([
            if content.is_empty() {
                condition(
                    "NamespaceContentRemaining",
                    false,
                    "ContentDeleted",
                    "All content successfully removed".into(),
                )
            } else {
                condition(
                    "NamespaceContentRemaining",
                    true,
                    "SomeResourcesRemain",
                    format!("Some resources are remaining: {content}"),
                )
            },
            if held.is_empty() {
                condition(
                    "NamespaceFinalizersRemaining",
                    false,
                    "ContentHasNoFinalizers",
                    "All content-preserving finalizers finished".into(),
                )
            } else {
                condition(
                    "NamespaceFinalizersRemaining",
                    true,
                    "SomeFinalizersRemain",
                    format!("Some content in the namespace has finalizers remaining: {held}"),
                )
            },
        ])
    }
}

/// Deletes what is left in each namespace being deleted; removes those
/// that are empty.
pub(crate) async fn reconcile(objects: &Objects, cache: &Cache) -> Result<Option<i64>> {
    let terminating: Vec<Arc<Value>> = cache
        .list(kind("namespaces"), None)
        .into_iter()
        .filter(|namespace| is_deleting(namespace))
        .collect();
    reconcile_each("namespaces", terminating, |namespace| async move {
        let outcome = empty(objects, cache, &namespace).await;
        if let Err(e) = &outcome {
            tracing::warn!(namespace = name_of(&namespace), error = %e, "cannot finish deleting the namespace");
        }
        outcome
    })
    .await
}

/// One namespace being deleted: deletes its content, or, when none is left,
/// the namespace itself.
async fn empty(objects: &Objects, cache: &Cache, namespace: &Value) -> Result<Option<i64>> {
    let name = name_of(namespace);
    let mut written = None;
    let mut remaining = Remaining::default();
    for kind in KINDS.iter().filter(|k| k.namespaced) {
        let items = cache.list(kind, Some(name));
        if items.is_empty() {
            continue;
        }
        remaining.by_kind.push((kind.plural, items.len()));
        for item in &items {
            for finalizer in finalizers(item) {
                match remaining
                    .by_finalizer
                    .iter_mut()
                    .find(|(f, _)| *f == finalizer)
                {
                    Some((_, n)) => *n += 1,
                    None => remaining.by_finalizer.push((finalizer, 1)),
                }
            }
            if is_deleting(item) {
                continue;
            }
            match objects
                .delete_with(kind, name, name_of(item), &DeleteOptions::default())
                .await
            {
                Ok(deleted) => written = latest(written, Some(deleted.revision)),
                Err(crate::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if !remaining.is_empty() {
        let conditions = remaining.conditions(&c4m_core::now_rfc3339());
        let same = |current: &Value| {
            let strip = |conditions: &Value| -> Vec<(Value, Value)> {
                conditions
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (c["type"].clone(), c["message"].clone()))
                    .collect()
            };
            strip(&current["status"]["conditions"]) == strip(&conditions)
        };
        let updated = objects
            .update_with(kind("namespaces"), "", name, |current| {
                if !is_deleting(current) || same(current) {
                    return false;
                }
                current["status"] = json!({"phase": "Terminating", "conditions": conditions});
                true
            })
            .await?;
        return Ok(latest(written, updated));
    }
    // Empty: drop the finalizer, then the namespace (which goes unless
    // other finalizers still hold it).
    let uid = namespace["metadata"]["uid"].clone();
    let released = objects
        .update_with(kind("namespaces"), "", name, |current| {
            let finalizers = namespace_finalizers(current);
            if current["metadata"]["uid"] != uid
                || !finalizers.iter().any(|f| f == NAMESPACE_FINALIZER)
            {
                return false;
            }
            let kept: Vec<String> = finalizers
                .into_iter()
                .filter(|f| f != NAMESPACE_FINALIZER)
                .collect();
            current["spec"]["finalizers"] = json!(kept);
            true
        })
        .await?;
    written = latest(written, released);
    match objects
        .delete_with(kind("namespaces"), "", name, &DeleteOptions::default())
        .await
    {
        Ok(deleted) => Ok(latest(written, Some(deleted.revision))),
        Err(crate::Error::NotFound { .. }) => Ok(written),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_what_remains_and_what_holds_it() {
        let remaining = Remaining {
            by_kind: vec![("pods", 2), ("configmaps", 1)],
            by_finalizer: vec![("example.com/hold".into(), 1)],
        };
        let conditions = remaining.conditions("2026-12-07T00:00:00Z");
        assert_eq!(conditions[0]["type"], "NamespaceContentRemaining");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(
            conditions[0]["message"],
            "Some resources are remaining: pods has 2 resource instances, configmaps has 1 resource instances"
        );
        assert_eq!(conditions[1]["status"], "True");
        assert_eq!(
            conditions[1]["message"],
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        let none = Remaining::default().conditions("2026-12-07T00:00:00Z");
        assert_eq!(none[0]["status"], "False");
        assert_eq!(none[1]["status"], "False");
    }
}
