//! Deletion as Kubernetes does it: finalizers, propagation policies and
//! graceful deletion.
//!
//! Deleting an object that still has `metadata.finalizers` only marks it
//! (`deletionTimestamp`, `deletionGracePeriodSeconds: 0`); it is removed
//! when an update empties the list. The propagation policy adds the garbage
//! collector's finalizers: `orphan` (the dependents lose their owner
//! reference first) or `foregroundDeletion` (the dependents are deleted
//! first); `Background`, the default, removes the owner at once and leaves
//! its dependents to the garbage collector.
//!
//! A pod bound to a live node is deleted gracefully: it keeps its object,
//! marked with the time by which it should be gone and its grace period,
//! until its agent reports its containers stopped; then it is deleted again
//! with a grace period of 0, which removes it. An unscheduled or finished
//! pod, a pod whose node is gone, and `--grace-period=0 --force` remove it
//! at once.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use c4m_core::ResourceKind;
use serde_json::{Value, json};

use crate::objects::{Objects, kind as kind_named};
use crate::{Error, Result};

/// The finalizer of a deletion with the `Orphan` policy.
pub(crate) const ORPHAN: &str = "orphan";
/// The finalizer of a deletion with the `Foreground` policy.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer in a namespace's `spec.finalizers` that holds it, in the
/// Terminating phase, until the namespace controller has deleted its
/// content.
pub(crate) const NAMESPACE_FINALIZER: &str = "kubernetes";
/// Namespaces that may not be deleted (as in Kubernetes).
const PROTECTED_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];
/// A pod's grace period when neither the request nor the pod gives one.
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

/// What happens to an object's dependents when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// The dependents stay, without their reference to the owner.
    Orphan,
    /// The owner goes at once; the garbage collector deletes the dependents.
    Background,
    /// The dependents are deleted first; the owner waits for those that
    /// block its deletion.
    Foreground,
}

impl Propagation {
    fn parse(text: &str) -> Result<Propagation> {
        match text {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            other => Err(Error::Invalid(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// A `meta.k8s.io/v1` DeleteOptions, as far as c4m honours it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeleteOptions {
    /// `propagationPolicy` (or the deprecated `orphanDependents`); None
    /// keeps the object's own finalizers, else Background.
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`: for pods, overrides the pod's
    /// `terminationGracePeriodSeconds`; 0 removes at once.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`: delete only the object with this uid.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// Options with a propagation policy.
    pub(crate) fn propagating(propagation: Propagation) -> DeleteOptions {
        DeleteOptions {
            propagation: Some(propagation),
            ..DeleteOptions::default()
        }
    }

    /// The options of a DELETE request: its body (a DeleteOptions, or
    /// empty) and its query, the body winning.
    pub(crate) fn from_request(query: &HashMap<String, String>, body: &[u8]) -> Result<Self> {
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Error::BadRequest(format!("the DeleteOptions are not valid JSON: {e}"))
            })?
        };
        if !body.is_null() && !body.is_object() {
            return Err(Error::BadRequest(
                "the DeleteOptions must be a JSON object".into(),
            ));
        }
        let text = |field: &str| -> Result<Option<String>> {
            match &body[field] {
                Value::Null => Ok(query.get(field).cloned()),
                Value::String(text) => Ok(Some(text.clone())),
                Value::Bool(flag) => Ok(Some(flag.to_string())),
                Value::Number(number) => Ok(Some(number.to_string())),
                other => Err(Error::BadRequest(format!(
                    "DeleteOptions.{field}: expected a scalar, got {other}"
                ))),
            }
        };
        let policy = text("propagationPolicy")?;
        let orphan_dependents = text("orphanDependents")?;
        let propagation = match (policy, orphan_dependents) {
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "propagationPolicy: Invalid value: orphanDependents and deletionPropagation cannot be both set".into(),
                ));
            }
            (Some(policy), None) => Some(Propagation::parse(&policy)?),
            (None, Some(orphan)) => match orphan.as_str() {
                "true" => Some(Propagation::Orphan),
                "false" => Some(Propagation::Background),
                other => {
                    return Err(Error::BadRequest(format!(
                        "orphanDependents: invalid value {other:?}: must be true or false"
                    )));
                }
            },
            (None, None) => None,
        };
        let grace_period_seconds = text("gracePeriodSeconds")?
            .map(|grace| {
                grace.parse::<i64>().map_err(|_| {
                    Error::BadRequest(format!(
                        "gracePeriodSeconds: invalid value {grace:?}: must be an integer"
                    ))
                })
            })
            .transpose()?;
        let precondition = |field: &str| -> Result<Option<String>> {
            match &body["preconditions"][field] {
                Value::Null => Ok(None),
                Value::String(text) => Ok(Some(text.clone())),
                other => Err(Error::BadRequest(format!(
                    "DeleteOptions.preconditions.{field}: expected a string, got {other}"
                ))),
            }
        };
        Ok(DeleteOptions {
            propagation,
            grace_period_seconds,
            uid: precondition("uid")?,
            resource_version: precondition("resourceVersion")?,
        })
    }
}

/// What a deletion does to the stored object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Deletion {
    /// Remove it now.
    Remove,
    /// Write this version instead (marked for deletion, or with changed
    /// finalizers or grace period): something must happen first.
    Mark(Value),
    /// Leave it as it is: it is already marked and nothing changed.
    Keep,
}

/// The outcome of [`Objects::delete_with`].
#[derive(Debug, Clone)]
pub(crate) struct Deleted {
    /// The object as removed, or as it now stands marked for deletion.
    pub object: Value,
    /// The revision of the write (the object's, when nothing was written).
    pub revision: i64,
}

/// An object's `metadata.finalizers`, empty when absent.
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    strings(&object["metadata"]["finalizers"])
}

/// A namespace's `spec.finalizers`, empty when absent.
pub(crate) fn namespace_finalizers(namespace: &Value) -> Vec<String> {
    strings(&namespace["spec"]["finalizers"])
}

/// The strings of a JSON list, empty when it is not one.
fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// What a new namespace gets from the API server: the `kubernetes`
/// finalizer and the Active phase.
pub(crate) fn default_new_namespace(namespace: &mut Value) {
    let mut finalizers = namespace_finalizers(namespace);
    if !finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
        finalizers.push(NAMESPACE_FINALIZER.to_string());
    }
    if let Some(object) = namespace.as_object_mut() {
        let spec = object.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("finalizers".into(), json!(finalizers));
        }
        object.insert("status".into(), json!({"phase": "Active"}));
    }
}

/// Whether the object is marked for deletion.
pub(crate) fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

/// Whether an update leaves the object ready to go: marked for deletion,
/// no finalizer left, and no grace period still running (Kubernetes'
/// delete-during-update rule).
pub(crate) fn is_finished(object: &Value) -> bool {
    is_deleting(object)
        && finalizers(object).is_empty()
        && (object["kind"] != "Namespace" || namespace_finalizers(object).is_empty())
        && object["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            == 0
}

/// Refuses an update that adds finalizers to an object being deleted, as
/// Kubernetes' metadata validation does.
pub(crate) fn check_finalizers_update(current: &Value, updated: &Value) -> Result<()> {
    if !is_deleting(current) {
        return Ok(());
    }
    let before = finalizers(current);
    let added: Vec<String> = finalizers(updated)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
    )))
}

/// The grace period a pod's deletion gets (Kubernetes' pod strategy): the
/// request's, else the pod's `terminationGracePeriodSeconds`, else 30; 0
/// for a pod on no node, on a node that is gone, or already finished.
fn pod_grace_seconds(pod: &Value, options: &DeleteOptions, node_exists: bool) -> i64 {
    let unscheduled = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty();
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished || !node_exists {
        return 0;
    }
    let period = options.grace_period_seconds.unwrap_or_else(|| {
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
    });
    // A negative period means "the shortest" (Kubernetes makes it 1).
    if period < 0 { 1 } else { period }
}

/// Decides what deleting `current` (of `kind`) with `options` does, at
/// `now`. `node_exists` says whether a pod's node is still there (ignored
/// for other kinds).
pub(crate) fn plan(
    kind: &ResourceKind,
    current: &Value,
    options: &DeleteOptions,
    now: SystemTime,
    node_exists: bool,
) -> Result<Deletion> {
    let meta = &current["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    if let Some(uid) = &options.uid
        && meta["uid"].as_str() != Some(uid.as_str())
    {
        return Err(Error::Conflict(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta["uid"].as_str().unwrap_or_default()
        )));
    }
    if let Some(version) = &options.resource_version
        && meta["resourceVersion"].as_str() != Some(version.as_str())
    {
        return Err(Error::Conflict(format!(
            "Operation cannot be fulfilled on {} {name:?}: Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
            kind.plural,
            meta["resourceVersion"].as_str().unwrap_or_default()
        )));
    }
    if kind.kind == "Namespace" && PROTECTED_NAMESPACES.contains(&name) {
        return Err(Error::ForbiddenObject {
            plural: kind.plural.to_string(),
            name: name.to_string(),
            reason: "this namespace may not be deleted".into(),
        });
    }
    // A namespace with spec finalizers stays, Terminating, until its
    // controller has emptied it.
    let held = kind.kind == "Namespace" && !namespace_finalizers(current).is_empty();
    let before = finalizers(current);
    let mut after = before.clone();
    let (add, remove): (&[&str], &[&str]) = match options.propagation {
        Some(Propagation::Orphan) => (&[ORPHAN], &[FOREGROUND]),
        Some(Propagation::Foreground) => (&[FOREGROUND], &[ORPHAN]),
        Some(Propagation::Background) => (&[], &[ORPHAN, FOREGROUND]),
        None => (&[], &[]),
    };
    after.retain(|f| !remove.contains(&f.as_str()));
    for finalizer in add {
        if !after.iter().any(|f| f == finalizer) {
            after.push(finalizer.to_string());
        }
    }
    let grace = if kind.kind == "Pod" {
        pod_grace_seconds(current, options, node_exists)
    } else {
        0
    };
    let mut marked = current.clone();
    let set_finalizers = |object: &mut Value| {
        if let Some(meta) = object["metadata"].as_object_mut() {
            if after.is_empty() {
                meta.remove("finalizers");
            } else {
                meta.insert("finalizers".into(), json!(after));
            }
        }
    };
    let deadline =
        |grace: i64| c4m_core::format_rfc3339(now + Duration::from_secs(grace.max(0) as u64));
    if is_deleting(current) {
        let running = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        if grace == 0 && after.is_empty() && !held && (running == 0 || kind.kind == "Pod") {
            return Ok(Deletion::Remove);
        }
        let mut changed = after != before;
        set_finalizers(&mut marked);
        // A shorter grace period replaces a running one.
        if kind.kind == "Pod" && grace < running {
            let meta = crate::json::object_at(&mut marked, &["metadata"])?;
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            meta.insert("deletionTimestamp".into(), json!(deadline(grace)));
            changed = true;
        }
        return Ok(if changed {
            Deletion::Mark(marked)
        } else {
            Deletion::Keep
        });
    }
    if grace == 0 && after.is_empty() && !held {
        return Ok(Deletion::Remove);
    }
    set_finalizers(&mut marked);
    if kind.kind == "Namespace" {
        marked["status"] = json!({"phase": "Terminating"});
    }
    let generation = meta["generation"].as_i64();
    let meta = crate::json::object_at(&mut marked, &["metadata"])?;
    meta.insert("deletionTimestamp".into(), json!(deadline(grace)));
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if let Some(generation) = generation {
        meta.insert("generation".into(), json!(generation + 1));
    }
    Ok(Deletion::Mark(marked))
}

impl Objects {
    /// Deletes an object as Kubernetes does with `options`: it is removed
    /// at once, or marked for deletion while finalizers or a pod's grace
    /// period run ([`plan`]).
    pub(crate) async fn delete_with(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted> {
        // A pod's node decides its grace period; a node read a moment
        // early is harmless (the agent reports, or the pod goes at once).
        let node_exists = match kind.kind {
            "Pod" => {
                let pod = self.get(kind, namespace, name).await?;
                match pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                    Some(node) => match self.get(kind_named("nodes"), "", node).await {
                        Ok(_) => true,
                        Err(Error::NotFound { .. }) => false,
                        Err(e) => return Err(e),
                    },
                    None => false,
                }
            }
            _ => true,
        };
        self.delete_as(kind, namespace, name, |current| {
            plan(kind, current, options, SystemTime::now(), node_exists)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::kind;

    fn at(seconds: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn pod(node: &str, grace: Option<i64>) -> Value {
        let mut pod = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 1},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        });
        if let Some(grace) = grace {
            pod["spec"]["terminationGracePeriodSeconds"] = json!(grace);
        }
        pod
    }

    fn marked(deletion: Deletion) -> Value {
        match deletion {
            Deletion::Mark(value) => value,
            other => panic!("expected a marked object, got {other:?}"),
        }
    }

    #[test]
    fn options_come_from_the_body_or_the_query() {
        let mut query = HashMap::new();
        assert_eq!(
            DeleteOptions::from_request(&query, b"").unwrap(),
            DeleteOptions::default()
        );
        let body = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Orphan","gracePeriodSeconds":5,"preconditions":{"uid":"u1"}}"#;
        let options = DeleteOptions::from_request(&query, body).unwrap();
        assert_eq!(options.propagation, Some(Propagation::Orphan));
        assert_eq!(options.grace_period_seconds, Some(5));
        assert_eq!(options.uid.as_deref(), Some("u1"));
        query.insert("propagationPolicy".into(), "Foreground".into());
        query.insert("gracePeriodSeconds".into(), "0".into());
        let options = DeleteOptions::from_request(&query, b"").unwrap();
        assert_eq!(options.propagation, Some(Propagation::Foreground));
        assert_eq!(options.grace_period_seconds, Some(0));
        let orphan = DeleteOptions::from_request(&HashMap::new(), br#"{"orphanDependents":true}"#);
        assert_eq!(orphan.unwrap().propagation, Some(Propagation::Orphan));

        let status = |body: &[u8]| {
            DeleteOptions::from_request(&HashMap::new(), body)
                .unwrap_err()
                .http_status()
                .0
        };
        assert_eq!(status(b"{bad"), 400);
        assert_eq!(status(br#"{"propagationPolicy":"Sideways"}"#), 422);
        assert_eq!(
            status(br#"{"propagationPolicy":"Orphan","orphanDependents":true}"#),
            422
        );
        assert_eq!(status(br#"{"gracePeriodSeconds":"soon"}"#), 400);
    }

    #[test]
    fn an_object_without_finalizers_goes_at_once_and_one_with_them_is_marked() {
        let deployments = kind("deployments");
        let plain = json!({"metadata": {"name": "d", "uid": "u1", "generation": 3}});
        let options = DeleteOptions::default();
        assert_eq!(
            plan(deployments, &plain, &options, at(0), true).unwrap(),
            Deletion::Remove
        );

        let mut guarded = plain.clone();
        guarded["metadata"]["finalizers"] = json!(["example.com/guard"]);
        let marked = marked(plan(deployments, &guarded, &options, at(0), true).unwrap());
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            c4m_core::format_rfc3339(at(0))
        );
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(marked["metadata"]["generation"], 4);
        // Deleting again changes nothing; the finalizer still holds it.
        assert_eq!(
            plan(deployments, &marked, &options, at(9), true).unwrap(),
            Deletion::Keep
        );
    }

    #[test]
    fn a_namespace_terminates_until_its_finalizer_is_gone() {
        let namespaces = kind("namespaces");
        let options = DeleteOptions::default();
        let mut namespace = json!({"kind": "Namespace", "metadata": {"name": "shop", "uid": "u1"}});
        default_new_namespace(&mut namespace);
        assert_eq!(namespace_finalizers(&namespace), [NAMESPACE_FINALIZER]);
        assert_eq!(namespace["status"]["phase"], "Active");

        let terminating = marked(plan(namespaces, &namespace, &options, at(0), true).unwrap());
        assert_eq!(terminating["status"]["phase"], "Terminating");
        assert!(is_deleting(&terminating));
        assert!(!is_finished(&terminating));
        // Deleting again while it empties changes nothing.
        assert_eq!(
            plan(namespaces, &terminating, &options, at(5), true).unwrap(),
            Deletion::Keep
        );
        let mut emptied = terminating.clone();
        emptied["spec"]["finalizers"] = json!([]);
        assert!(is_finished(&emptied));
        assert_eq!(
            plan(namespaces, &emptied, &options, at(9), true).unwrap(),
            Deletion::Remove
        );
        // One made without the finalizer (a store from before) goes at once.
        let bare = json!({"kind": "Namespace", "metadata": {"name": "old", "uid": "u2"}});
        assert_eq!(
            plan(namespaces, &bare, &options, at(0), true).unwrap(),
            Deletion::Remove
        );
    }

    #[test]
    fn the_default_namespaces_may_not_be_deleted() {
        for name in ["default", "kube-system", "kube-public"] {
            let namespace = json!({"kind": "Namespace", "metadata": {"name": name, "uid": "u"}});
            let refused = plan(
                kind("namespaces"),
                &namespace,
                &DeleteOptions::default(),
                at(0),
                true,
            )
            .unwrap_err();
            assert_eq!(refused.http_status().0, 403, "{name}");
            assert_eq!(
                refused.to_string(),
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
            );
        }
    }

    #[test]
    fn propagation_policies_set_the_collectors_finalizers() {
        let deployments = kind("deployments");
        let object = json!({"metadata": {"name": "d", "uid": "u1"}});
        let finalizers_after = |object: &Value, propagation| {
            let options = DeleteOptions::propagating(propagation);
            match plan(deployments, object, &options, at(0), true).unwrap() {
                Deletion::Mark(marked) => finalizers(&marked),
                Deletion::Remove => Vec::new(),
                Deletion::Keep => finalizers(object),
            }
        };
        assert_eq!(finalizers_after(&object, Propagation::Orphan), [ORPHAN]);
        assert_eq!(
            finalizers_after(&object, Propagation::Foreground),
            [FOREGROUND]
        );
        assert!(finalizers_after(&object, Propagation::Background).is_empty());
        // Switching an object being orphaned to the foreground.
        let orphaning = marked(
            plan(
                deployments,
                &object,
                &DeleteOptions::propagating(Propagation::Orphan),
                at(0),
                true,
            )
            .unwrap(),
        );
        assert_eq!(
            finalizers_after(&orphaning, Propagation::Foreground),
            [FOREGROUND]
        );
    }

    #[test]
    fn a_pod_on_a_live_node_is_deleted_gracefully() {
        let pods = kind("pods");
        let options = DeleteOptions::default();
        let running = pod("n1", None);
        let marked = marked(plan(pods, &running, &options, at(0), true).unwrap());
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            c4m_core::format_rfc3339(at(30))
        );
        let own_grace = marked_grace(plan(pods, &pod("n1", Some(7)), &options, at(0), true));
        assert_eq!(own_grace, 7);
        let asked = DeleteOptions {
            grace_period_seconds: Some(3),
            ..DeleteOptions::default()
        };
        assert_eq!(
            marked_grace(plan(pods, &pod("n1", Some(7)), &asked, at(0), true)),
            3
        );
        // A shorter period replaces the running one; a longer one does not.
        let shortened = marked_grace(plan(pods, &marked, &asked, at(1), true));
        assert_eq!(shortened, 3);
        assert_eq!(
            plan(pods, &marked, &DeleteOptions::default(), at(1), true).unwrap(),
            Deletion::Keep
        );
        // The agent's report (grace 0) removes it.
        let force = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        assert_eq!(
            plan(pods, &marked, &force, at(2), true).unwrap(),
            Deletion::Remove
        );
        assert_eq!(
            plan(pods, &running, &force, at(0), true).unwrap(),
            Deletion::Remove
        );
    }

    fn marked_grace(deletion: Result<Deletion>) -> i64 {
        marked(deletion.unwrap())["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap()
    }

    #[test]
    fn a_pod_on_no_node_a_gone_node_or_finished_goes_at_once() {
        let pods = kind("pods");
        let options = DeleteOptions::default();
        assert_eq!(
            plan(pods, &pod("", None), &options, at(0), false).unwrap(),
            Deletion::Remove
        );
        assert_eq!(
            plan(pods, &pod("n1", None), &options, at(0), false).unwrap(),
            Deletion::Remove
        );
        let mut done = pod("n1", None);
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            plan(pods, &done, &options, at(0), true).unwrap(),
            Deletion::Remove
        );
        // Finalizers hold even a pod that needs no grace.
        let mut guarded = pod("", None);
        guarded["metadata"]["finalizers"] = json!(["example.com/guard"]);
        assert_eq!(
            marked_grace(plan(pods, &guarded, &options, at(0), false)),
            0
        );
    }

    #[test]
    fn preconditions_must_hold() {
        let object = json!({"metadata": {"name": "d", "uid": "u1", "resourceVersion": "5"}});
        let other_uid = DeleteOptions {
            uid: Some("u2".into()),
            ..DeleteOptions::default()
        };
        let error = plan(kind("deployments"), &object, &other_uid, at(0), true).unwrap_err();
        assert_eq!(error.http_status().0, 409);
        let stale = DeleteOptions {
            resource_version: Some("4".into()),
            ..DeleteOptions::default()
        };
        assert!(plan(kind("deployments"), &object, &stale, at(0), true).is_err());
    }

    #[test]
    fn finalizers_cannot_be_added_while_deleting_and_the_last_one_out_removes() {
        let mut object = json!({"metadata": {"name": "d", "finalizers": ["a"]}});
        let mut updated = object.clone();
        updated["metadata"]["finalizers"] = json!(["a", "b"]);
        assert!(check_finalizers_update(&object, &updated).is_ok());
        object["metadata"]["deletionTimestamp"] = json!("2026-12-07T04:00:00Z");
        object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let error = check_finalizers_update(&object, &updated).unwrap_err();
        assert!(
            error.to_string().contains("no new finalizers can be added"),
            "{error}"
        );
        assert!(!is_finished(&object));
        object["metadata"]["finalizers"] = json!([]);
        assert!(is_finished(&object));
        // A pod whose grace period runs stays for its agent.
        object["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert!(!is_finished(&object));
    }
}
