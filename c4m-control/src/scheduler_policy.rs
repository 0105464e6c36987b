//! The scheduler policy ([`c4m_sched::Policy`]) as the control plane keeps
//! it, serves it and audits its changes.
//!
//! The policy is one cluster-scoped `SchedulerPolicy` object (`c4m.io/v1`)
//! named `default`, at `/registry/schedulerpolicies/default`, so the cache
//! mirrors it and the scheduler reads it each cycle ([`current_policy`]);
//! until one is set the default policy applies, at revision 0. The kind is
//! not in [`c4m_core::KINDS`]: only `PUT /c4m/v1/scheduler/policy` writes
//! it. A PUT validates the policy (a rejected one writes nothing and is
//! logged with who and why) and writes, in the same transaction, a
//! `SchedulerPolicyChange` record: who (the access token's key id, or
//! `anonymous` in dev mode), when, the old and the new policy; the record's
//! resourceVersion is the revision the policy was set at.

use std::sync::atomic::{AtomicI64, Ordering};

use c4m_core::ResourceKind;
use c4m_sched::Policy;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::Cache;
use crate::objects::{Objects, now_rfc3339};
use crate::{Error, Result};

/// The stored policy's kind.
pub(crate) static POLICY: ResourceKind = ResourceKind {
    group: "c4m.io",
    version: "v1",
    kind: "SchedulerPolicy",
    plural: "schedulerpolicies",
    aliases: &[],
    namespaced: false,
    subresources: &[],
};

/// The kind of the audit records of policy changes.
pub(crate) static CHANGE: ResourceKind = ResourceKind {
    group: "c4m.io",
    version: "v1",
    kind: "SchedulerPolicyChange",
    plural: "schedulerpolicychanges",
    aliases: &[],
    namespaced: false,
    subresources: &[],
};

/// The one policy object's name.
const NAME: &str = "default";

/// The fields a policy object may carry in a PUT.
const OBJECT_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];

/// The last revision whose stored policy [`current_policy`] could not use,
/// so that it warns once per revision rather than once per cycle.
static REFUSED_REVISION: AtomicI64 = AtomicI64::new(0);

/// The policy the scheduler runs with: the stored one, or the default when
/// none was set. A stored policy that no longer decodes or validates (only
/// another version could have written it) gives the default too, with one
/// warning per revision. One cache lookup and a small decode: cheap enough
/// for every scheduling cycle.
pub(crate) fn current_policy(cache: &Cache) -> Policy {
    let Some(object) = cache.get(&POLICY, "", NAME) else {
        return Policy::default();
    };
    let policy = Policy::deserialize(&object["spec"])
        .map_err(c4m_core::BoxError::from)
        .and_then(|policy| policy.validate().map(|()| policy).map_err(Into::into));
    policy.unwrap_or_else(|error| {
        let revision = revision_of(&object);
        if REFUSED_REVISION.swap(revision, Ordering::Relaxed) != revision {
            tracing::warn!(revision, %error, "the stored scheduler policy is unusable; scheduling with the default policy");
        }
        Policy::default()
    })
}

fn revision_of(object: &Value) -> i64 {
    crate::objects::revision_of(object).unwrap_or(0)
}

/// A policy as the object the API serves.
fn policy_object(policy: &Value) -> Value {
    json!({
        "apiVersion": POLICY.api_version(),
        "kind": POLICY.kind,
        "metadata": {"name": NAME},
        "spec": policy,
    })
}

fn default_policy() -> Value {
    // Serialising a plain struct of strings, maps and integers cannot fail.
    serde_json::to_value(Policy::default()).unwrap_or_default()
}

/// The current policy object; the default policy at resourceVersion `0`
/// when none was ever set.
pub(crate) async fn get(objects: &Objects) -> Result<Value> {
    match objects.get(&POLICY, "", NAME).await {
        Ok(object) => Ok(object),
        Err(Error::NotFound { .. }) => {
            let mut object = policy_object(&default_policy());
            crate::json::set_path(&mut object, &["metadata", "resourceVersion"], json!("0"))?;
            Ok(object)
        }
        Err(e) => Err(e),
    }
}

/// What a PUT asks for: the policy, and the revision it was read at.
#[derive(Debug, PartialEq)]
struct Request {
    policy: Policy,
    expected: Option<i64>,
}

/// Reads a PUT body: a `SchedulerPolicy` object whose `spec` is the policy
/// (what GET answers, so it can be edited and sent back). Unparsable JSON
/// is a 400; anything else wrong a 422 naming the field.
fn parse_request(body: &[u8]) -> Result<Request> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| Error::Invalid("the body must be a SchedulerPolicy object".into()))?;
    if let Some(field) = object.keys().find(|k| !OBJECT_FIELDS.contains(&k.as_str())) {
        return Err(Error::Invalid(format!("{field}: unknown field")));
    }
    for (field, expected) in [
        ("apiVersion", POLICY.api_version()),
        ("kind", POLICY.kind.to_owned()),
    ] {
        match object.get(field) {
            None => {}
            Some(Value::String(actual)) if *actual == expected => {}
            Some(actual) => {
                return Err(Error::Invalid(format!(
                    "{field}: expected {expected:?}, found {actual}"
                )));
            }
        }
    }
    let metadata = &value["metadata"];
    match &metadata["name"] {
        Value::Null => {}
        Value::String(name) if name == NAME => {}
        other => {
            return Err(Error::Invalid(format!(
                "metadata.name: the scheduler policy is named {NAME:?}, found {other}"
            )));
        }
    }
    let expected = match &metadata["resourceVersion"] {
        Value::Null => None,
        Value::String(rv) if rv.is_empty() => None,
        Value::String(rv) => Some(rv.parse::<i64>().map_err(|_| {
            Error::Invalid(format!("metadata.resourceVersion: invalid value {rv:?}"))
        })?),
        other => {
            return Err(Error::Invalid(format!(
                "metadata.resourceVersion: expected a string, found {other}"
            )));
        }
    };
    let spec = object
        .get("spec")
        .ok_or_else(|| Error::Invalid("spec: required field is missing".into()))?;
    let policy: Policy = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        Error::Invalid(format!("{field}: {}", e.into_inner()))
    })?;
    policy
        .validate()
        .map_err(|e| Error::Invalid(format!("spec.{e}")))?;
    Ok(Request { policy, expected })
}

/// Validates and stores the policy of a PUT `body`, auditing the change as
/// made by `caller`. A policy equal to the current one writes nothing.
/// Returns the policy object as stored.
pub(crate) async fn set(objects: &Objects, caller: &str, body: &[u8]) -> Result<Value> {
    let outcome = set_checked(objects, caller, body).await;
    if let Err(e) = &outcome {
        tracing::warn!(user = caller, reason = %e, "scheduler policy change rejected");
    }
    outcome
}

async fn set_checked(objects: &Objects, caller: &str, body: &[u8]) -> Result<Value> {
    let request = parse_request(body)?;
    let new =
        serde_json::to_value(&request.policy).map_err(|e| Error::Invalid(format!("spec: {e}")))?;
    let written = objects
        .write_with_records(&POLICY, "", NAME, request.expected, |current| {
            let old = current.map_or_else(default_policy, |current| current["spec"].clone());
            if old == new {
                return Ok(None);
            }
            let record = json!({
                "apiVersion": CHANGE.api_version(),
                "kind": CHANGE.kind,
                "metadata": {"generateName": format!("{NAME}-")},
                "user": caller,
                "time": now_rfc3339(),
                "oldPolicy": old,
                "newPolicy": new,
            });
            Ok(Some((policy_object(&new), vec![(&CHANGE, record)])))
        })
        .await?;
    match written {
        Some(object) => {
            tracing::info!(user = caller, revision = revision_of(&object), policy = %object["spec"], "scheduler policy set");
            Ok(object)
        }
        // Unchanged and never set: the request was the default policy.
        None => get(objects).await,
    }
}

/// Every accepted change, oldest first: a `SchedulerPolicyChangeList` whose
/// items carry `user`, `time`, `revision`, `oldPolicy` and `newPolicy`.
pub(crate) async fn history(objects: &Objects) -> Result<Value> {
    let (mut items, revision) = objects.list(&CHANGE, None).await?;
    for item in &mut items {
        item["revision"] = json!(revision_of(item));
    }
    items.sort_by_key(revision_of);
    Ok(json!({
        "apiVersion": CHANGE.api_version(),
        "kind": format!("{}List", CHANGE.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use c4m_state::{Op, Precondition, RedbStore, Store};
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        (dir, Arc::new(store))
    }

    fn invalid(body: &str) -> String {
        let error = parse_request(body.as_bytes()).unwrap_err();
        assert_eq!(error.http_status().0, 422, "{error}");
        error.to_string()
    }

    #[test]
    fn requests_map_every_problem_to_its_field() {
        let request = parse_request(
            br#"{"apiVersion": "c4m.io/v1", "kind": "SchedulerPolicy", "metadata": {"name": "default", "resourceVersion": "7", "uid": "x"}, "spec": {"defaultStrategy": "spread"}}"#,
        )
        .unwrap();
        assert_eq!(request.expected, Some(7));
        assert_eq!(request.policy.default_strategy, c4m_sched::Strategy::Spread);

        assert!(
            invalid(r#"{"spec": {"weights": {"Fti": 2}}}"#)
                .starts_with("spec.weights.Fti: unknown plugin")
        );
        assert_eq!(
            invalid(r#"{"spec": {"weights": {"Fit": 1000}}}"#),
            "spec.weights.Fit: 1000 is out of range 0 to 100"
        );
        assert!(
            invalid(r#"{"spec": {"disabledFilters": ["NodeResourcesFit"]}}"#)
                .starts_with("spec.disabledFilters: NodeResourcesFit cannot be disabled")
        );
        assert_eq!(
            invalid(r#"{"spec": {"percentageOfNodesToScore": 0}}"#),
            "spec.percentageOfNodesToScore: 0 is out of range 1 to 100"
        );
        assert!(
            invalid(r#"{"spec": {"weights": {"Fit": "heavy"}}}"#)
                .starts_with("spec.weights.Fit: invalid type")
        );
        assert!(
            invalid(r#"{"spec": {"defaultStrategy": "random"}}"#)
                .starts_with("spec.defaultStrategy: unknown variant")
        );
        let unknown = invalid(r#"{"spec": {"weight": {}}}"#);
        assert!(
            unknown.starts_with("spec.weight: unknown field `weight`"),
            "{unknown}"
        );
        assert_eq!(invalid(r#"{"policy": {}}"#), "policy: unknown field");
        assert_eq!(invalid(r#"{}"#), "spec: required field is missing");
        assert!(invalid(r#"{"kind": "Pod", "spec": {}}"#).starts_with("kind: expected"));
        assert!(
            invalid(r#"{"metadata": {"name": "other"}, "spec": {}}"#).starts_with("metadata.name:")
        );
        assert!(
            invalid(r#"{"metadata": {"resourceVersion": "x"}, "spec": {}}"#)
                .starts_with("metadata.resourceVersion:")
        );
        assert_eq!(invalid("[]"), "the body must be a SchedulerPolicy object");
        let error = parse_request(b"{spec").unwrap_err();
        assert_eq!(error.http_status().0, 400);
    }

    #[tokio::test]
    async fn changes_are_stored_audited_and_guarded() {
        let (_dir, store) = store();
        let objects = Objects::new(store);
        let initial = get(&objects).await.unwrap();
        assert_eq!(initial["metadata"]["resourceVersion"], "0");
        assert_eq!(initial["spec"], default_policy());

        // The default again: nothing to write, nothing audited.
        set(&objects, "alice", br#"{"spec": {}}"#).await.unwrap();
        assert!(
            history(&objects).await.unwrap()["items"]
                .as_array()
                .unwrap()
                .is_empty()
        );

        let spread =
            br#"{"metadata": {"resourceVersion": "0"}, "spec": {"defaultStrategy": "spread"}}"#;
        let first = set(&objects, "alice", spread).await.unwrap();
        let first_revision = revision_of(&first);
        assert!(first_revision > 0);
        assert_eq!(get(&objects).await.unwrap(), first);

        // Stale: written against revision 0, now taken.
        let stale = set(&objects, "bob", spread).await.unwrap_err();
        assert_eq!(stale.http_status().0, 409);
        let rejected = set(&objects, "bob", br#"{"spec": {"weights": {"Fit": 1000}}}"#).await;
        assert_eq!(rejected.unwrap_err().http_status().0, 422);
        assert_eq!(
            get(&objects).await.unwrap(),
            first,
            "rejected changes write nothing"
        );

        let second = set(&objects, "bob", br#"{"spec": {"weights": {"Fit": 3}}}"#)
            .await
            .unwrap();
        assert_eq!(second["metadata"]["generation"], 2);
        let history = history(&objects).await.unwrap();
        let items = history["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["user"], "alice");
        assert_eq!(items[0]["revision"], first_revision);
        assert_eq!(items[0]["oldPolicy"], default_policy());
        assert_eq!(items[0]["newPolicy"]["defaultStrategy"], "spread");
        assert!(items[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(items[1]["user"], "bob");
        assert_eq!(items[1]["oldPolicy"], items[0]["newPolicy"]);
        assert_eq!(items[1]["newPolicy"]["weights"]["Fit"], 3);
        assert_eq!(items[1]["revision"], revision_of(&second));
    }

    #[tokio::test]
    async fn the_scheduler_reads_the_policy_from_the_cache() {
        let (_dir, store) = store();
        let objects = Objects::new(Arc::clone(&store));
        let shutdown = CancellationToken::new();
        let cache = Cache::start(Arc::clone(&store), shutdown.clone())
            .await
            .unwrap();
        assert_eq!(current_policy(&cache), Policy::default());

        let set_at = set(
            &objects,
            "alice",
            br#"{"spec": {"defaultStrategy": "spread"}}"#,
        )
        .await
        .unwrap();
        cache.wait_for(revision_of(&set_at)).await;
        assert_eq!(
            current_policy(&cache).default_strategy,
            c4m_sched::Strategy::Spread
        );

        // Written by something else and unusable: the default, not a failure.
        let bad = policy_object(&json!({"weights": {"Fit": 1000}}));
        let revision = store
            .txn(vec![Op::put(
                "/registry/schedulerpolicies/default",
                serde_json::to_vec(&bad).unwrap().into(),
                Precondition::None,
            )])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), cache.wait_for(revision))
            .await
            .unwrap();
        assert_eq!(current_policy(&cache), Policy::default());
        shutdown.cancel();
    }
}
