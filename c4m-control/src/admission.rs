//! Priority admission, as Kubernetes' `Priority` admission plugin does it:
//! a new instance's `spec.priorityClassName` is resolved to `spec.priority`
//! and `spec.preemptionPolicy`.
//!
//! - A named class must exist (422 naming `spec.priorityClassName`).
//! - With no name, the class marked `globalDefault` applies (the one of
//!   lowest value if several are, as in Kubernetes).
//! - A priority or preemption policy the instance sets itself must equal
//!   what its class gives; Kubernetes refuses the instance otherwise, and
//!   so does c4m (422 naming the field; Kubernetes answers 403).
//! - With no class at all, the instance keeps the priority it states: a
//!   Microservice's `spec.priority` works without classes (Kubernetes would
//!   only accept 0 there).

use std::collections::BTreeMap;

use c4m_state::Store;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{Value, json};

use crate::objects::{decode, kind, name_of, prefix};
use crate::{Error, Result};

/// The preemption policy of a class that names none.
const DEFAULT_PREEMPTION_POLICY: &str = "PreemptLowerPriority";

/// Every PriorityClass a write may refer to: the stored ones and those
/// written in the same transaction (which win by name). Loaded once per
/// write, however many instances it creates.
pub(crate) struct PriorityClasses {
    by_name: BTreeMap<String, PriorityClass>,
}

impl PriorityClasses {
    /// Reads the stored classes (one range read) and adds `pending`.
    pub(crate) async fn load(store: &dyn Store, pending: &[&Value]) -> Result<Self> {
        let classes = kind("priorityclasses");
        let (stored, _) = store.range(&prefix(classes, None)).await?;
        let mut by_name = BTreeMap::new();
        let stored: Vec<Value> = stored.iter().filter_map(|kv| decode(kv).ok()).collect();
        let pending = pending
            .iter()
            .copied()
            .filter(|object| object["kind"] == classes.kind);
        // Pending ones come last, so they replace stored ones of their name.
        for object in stored.iter().chain(pending) {
            if let Some(class) = decode_class(object) {
                by_name.insert(name_of(object).to_owned(), class);
            }
        }
        Ok(Self { by_name })
    }

    /// Sets `pod`'s priority and preemption policy from its class (or the
    /// `globalDefault` one); an unknown class is an error naming the field.
    pub(crate) fn admit(&self, pod: &mut Value) -> Result<()> {
        let class = match pod["spec"]["priorityClassName"]
            .as_str()
            .filter(|name| !name.is_empty())
        {
            Some(name) => Some(self.by_name.get(name).cloned().ok_or_else(|| {
                Error::Invalid(format!(
                    "spec.priorityClassName: no PriorityClass with name {name} was found"
                ))
            })?),
            None => global_default(self.by_name.values().cloned()),
        };
        match class {
            Some(class) => apply_class(pod, &class),
            None => Ok(()),
        }
    }
}

/// A stored or pending PriorityClass; one that does not decode (it passed
/// validation, so only another version could have written it) is skipped.
fn decode_class(object: &Value) -> Option<PriorityClass> {
    serde_json::from_value(object.clone())
        .map_err(|e| {
            tracing::warn!(class = name_of(object), error = %e, "skipping an undecodable PriorityClass");
        })
        .ok()
}

/// The `globalDefault` class of lowest value (the first by name on a tie).
fn global_default(classes: impl Iterator<Item = PriorityClass>) -> Option<PriorityClass> {
    classes
        .filter(|class| class.global_default == Some(true))
        .fold(None, |lowest: Option<PriorityClass>, class| match lowest {
            Some(lowest) if lowest.value <= class.value => Some(lowest),
            _ => Some(class),
        })
}

/// Stamps `class` on `pod`, refusing what the pod states otherwise.
fn apply_class(pod: &mut Value, class: &PriorityClass) -> Result<()> {
    let priority = class.value;
    let policy = class
        .preemption_policy
        .as_deref()
        .unwrap_or(DEFAULT_PREEMPTION_POLICY);
    let spec = crate::json::object_at(pod, &["spec"])?;
    if let Some(stated) = spec.get("priority").and_then(Value::as_i64)
        && stated != i64::from(priority)
    {
        return Err(Error::Invalid(format!(
            "spec.priority: the integer value of priority ({stated}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(stated) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && stated != policy
    {
        return Err(Error::Invalid(format!(
            "spec.preemptionPolicy: the string value of PreemptionPolicy ({stated}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    spec.insert("priorityClassName".into(), json!(class.metadata.name));
    spec.insert("priority".into(), json!(priority));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use c4m_state::RedbStore;

    use super::*;
    use crate::objects::Objects;

    /// Admits `pod` as a write that also carries `pending` would.
    async fn admit_priority(store: &dyn Store, pod: &mut Value, pending: &[&Value]) -> Result<()> {
        PriorityClasses::load(store, pending).await?.admit(pod)
    }

    fn class(name: &str, value: i32, extra: Value) -> Value {
        let mut class = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value,
        });
        if let (Some(class), Some(extra)) = (class.as_object_mut(), extra.as_object()) {
            class.extend(extra.clone());
        }
        class
    }

    fn pod(spec: Value) -> Value {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "a", "command": ["sleep", "1"]}]);
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    async fn objects_with(classes: &[Value]) -> (tempfile::TempDir, Objects) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        let objects = Objects::new(Arc::new(store));
        let namespace = json!({"metadata": {"name": "default"}});
        objects
            .create(kind("namespaces"), "", namespace)
            .await
            .unwrap();
        for class in classes {
            objects
                .create(kind("priorityclasses"), "", class.clone())
                .await
                .unwrap();
        }
        (dir, objects)
    }

    async fn admitted(objects: &Objects, spec: Value) -> Result<Value> {
        let mut pod = pod(spec);
        admit_priority(objects.store().as_ref(), &mut pod, &[]).await?;
        Ok(pod["spec"].clone())
    }

    #[tokio::test]
    async fn a_named_class_sets_priority_and_preemption_policy() {
        let (_dir, objects) = objects_with(&[
            class("high", 1000, json!({"preemptionPolicy": "Never"})),
            class("low", 10, json!({})),
        ])
        .await;
        let spec = admitted(&objects, json!({"priorityClassName": "high"}))
            .await
            .unwrap();
        assert_eq!(spec["priority"], 1000);
        assert_eq!(spec["preemptionPolicy"], "Never");
        let spec = admitted(
            &objects,
            json!({"priorityClassName": "low", "priority": 10}),
        )
        .await
        .unwrap();
        assert_eq!(
            (&spec["priority"], &spec["preemptionPolicy"]),
            (&json!(10), &json!("PreemptLowerPriority"))
        );
        let error = admitted(&objects, json!({"priorityClassName": "urgent"}))
            .await
            .unwrap_err();
        assert_eq!(error.http_status().0, 422);
        assert_eq!(
            error.to_string(),
            "spec.priorityClassName: no PriorityClass with name urgent was found"
        );
    }

    #[tokio::test]
    async fn a_stated_priority_must_agree_with_the_class() {
        let (_dir, objects) = objects_with(&[class("high", 1000, json!({}))]).await;
        let error = admitted(
            &objects,
            json!({"priorityClassName": "high", "priority": 5}),
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().starts_with(
                "spec.priority: the integer value of priority (5) must not be provided"
            ),
            "{error}"
        );
        let error = admitted(
            &objects,
            json!({"priorityClassName": "high", "preemptionPolicy": "Never"}),
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().starts_with("spec.preemptionPolicy:"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_global_default_applies_to_unnamed_instances() {
        let (_dir, objects) = objects_with(&[]).await;
        // No class at all: the stated priority stays (c4m's Microservice priority).
        let spec = admitted(&objects, json!({"priority": 7})).await.unwrap();
        assert_eq!(spec["priority"], 7);
        assert!(spec["priorityClassName"].is_null());

        let (_dir, objects) = objects_with(&[
            class("normal", 100, json!({"globalDefault": true})),
            class("lowest-default", 50, json!({"globalDefault": true})),
            class("high", 1000, json!({})),
        ])
        .await;
        let spec = admitted(&objects, json!({})).await.unwrap();
        assert_eq!(spec["priorityClassName"], "lowest-default");
        assert_eq!(spec["priority"], 50);
        assert!(admitted(&objects, json!({"priority": 7})).await.is_err());
    }

    #[tokio::test]
    async fn classes_of_the_same_write_count() {
        let (_dir, objects) = objects_with(&[class("high", 1000, json!({}))]).await;
        let pending = class("high", 2000, json!({}));
        let fresh = class("fresh", 3, json!({"globalDefault": true}));
        // Re-applied without globalDefault: the stored flag no longer counts.
        let (_dir2, with_default) =
            objects_with(&[class("old", 1, json!({"globalDefault": true}))]).await;
        let mut unnamed = pod(json!({}));
        let demoted = class("old", 1, json!({}));
        admit_priority(with_default.store().as_ref(), &mut unnamed, &[&demoted])
            .await
            .unwrap();
        assert!(unnamed["spec"]["priority"].is_null());
        let mut named = pod(json!({"priorityClassName": "high"}));
        admit_priority(objects.store().as_ref(), &mut named, &[&pending])
            .await
            .unwrap();
        assert_eq!(named["spec"]["priority"], 2000);
        let mut unnamed = pod(json!({}));
        admit_priority(objects.store().as_ref(), &mut unnamed, &[&fresh])
            .await
            .unwrap();
        assert_eq!(unnamed["spec"]["priority"], 3);
    }

    #[tokio::test]
    async fn every_create_path_admits() {
        let (_dir, objects) = objects_with(&[class("high", 1000, json!({}))]).await;
        let mut bare = pod(json!({"priorityClassName": "high"}));
        bare["metadata"]["name"] = json!("bare");
        let created = objects.create(kind("pods"), "default", bare).await.unwrap();
        assert_eq!(created["spec"]["priority"], 1000);
        let mut unknown = pod(json!({"priorityClassName": "nope"}));
        unknown["metadata"]["name"] = json!("owned");
        let error = objects
            .create_many(vec![(kind("pods"), unknown)])
            .await
            .unwrap_err();
        assert_eq!(error.http_status().0, 422);
    }
}
