//! Server-side dry runs (`?dryRun=All`, what `kubectl diff` and
//! `kubectl apply --dry-run=server` send): the write goes through every
//! step a real one does (defaulting, validation, admission, preconditions)
//! and answers with the object it would have written, but nothing is kept.
//!
//! Rather than a second code path per verb, the request runs over
//! [`DryRunStore`]: a [`Store`] that reads the real store and, on a write,
//! checks the transaction's preconditions against it and then discards it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use c4m_state::{KeyValue, Op, Precondition, Store, WatchStream};

use crate::api::ApiState;
use crate::{Error, Result};

/// Whether a request asks for a dry run: `dryRun=All` in the query (the
/// only value Kubernetes takes), or in a DELETE's `DeleteOptions` body
/// (where kubectl puts it); a bad value is a 400 naming it.
pub(crate) fn requested(query: &HashMap<String, String>, body: &[u8]) -> Result<bool> {
    let unsupported = |value: &str| {
        Error::BadRequest(format!(
            "dryRun: Unsupported value: {value:?}: supported values: \"All\""
        ))
    };
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => {}
        Some("All") => return Ok(true),
        Some(other) => return Err(unsupported(other)),
    }
    let Ok(options) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(false);
    };
    let Some(values) = options.get("dryRun").and_then(serde_json::Value::as_array) else {
        return Ok(false);
    };
    let mut dry = false;
    for value in values {
        match value.as_str() {
            Some("All") => dry = true,
            Some(other) => return Err(unsupported(other)),
            None => return Err(unsupported(&value.to_string())),
        }
    }
    Ok(dry)
}

/// `state` for a dry run: its objects over a [`DryRunStore`].
pub(crate) fn state(state: &ApiState) -> ApiState {
    let store = Arc::new(DryRunStore::new(Arc::clone(state.objects.store())));
    ApiState {
        objects: state.objects.over_store(store),
        ..state.clone()
    }
}

/// A store that reads through to `real` and writes nothing: a transaction
/// whose preconditions hold on `real` answers with the revision it would
/// have been based on; one whose preconditions fail is the same Conflict
/// the real store gives.
pub(crate) struct DryRunStore {
    real: Arc<dyn Store>,
}

impl DryRunStore {
    /// A dry-run view of `real`.
    pub(crate) fn new(real: Arc<dyn Store>) -> Self {
        DryRunStore { real }
    }
}

#[async_trait]
impl Store for DryRunStore {
    async fn get(&self, key: &str) -> c4m_state::Result<Option<KeyValue>> {
        self.real.get(key).await
    }

    async fn get_many(&self, keys: &[String]) -> c4m_state::Result<Vec<Option<KeyValue>>> {
        self.real.get_many(keys).await
    }

    async fn range(&self, prefix: &str) -> c4m_state::Result<(Vec<KeyValue>, i64)> {
        self.real.range(prefix).await
    }

    async fn txn(&self, ops: Vec<Op>) -> c4m_state::Result<i64> {
        // The answer's resourceVersion: an update keeps the one it was based
        // on (as Kubernetes' dry run does, so `kubectl diff` shows no change
        // there); a create gets the store's current revision.
        let mut based_on = None;
        for op in &ops {
            let (key, precondition) = match op {
                Op::Put {
                    key, precondition, ..
                }
                | Op::Delete { key, precondition } => (key, precondition),
            };
            let actual = self.real.get(key).await?.map(|kv| kv.mod_revision);
            let holds = match precondition {
                Precondition::None => true,
                Precondition::Absent => actual.is_none(),
                Precondition::ModRevision(expected) => actual == Some(*expected),
            };
            if !holds {
                return Err(c4m_state::Error::Conflict {
                    key: key.clone(),
                    expected: *precondition,
                    actual,
                });
            }
            if based_on.is_none() {
                based_on = actual;
            }
        }
        match based_on {
            Some(revision) => Ok(revision),
            None => self.real.current_revision().await,
        }
    }

    async fn current_revision(&self) -> c4m_state::Result<i64> {
        self.real.current_revision().await
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> c4m_state::Result<WatchStream> {
        self.real.watch(prefix, after_revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Objects, Part, kind};
    use crate::test_support::store_with_default_namespace;
    use serde_json::json;

    #[test]
    fn only_all_is_taken() {
        let query = |v: &str| HashMap::from([("dryRun".to_string(), v.to_string())]);
        let none = HashMap::new();
        assert!(!requested(&none, b"").unwrap());
        assert!(requested(&query("All"), b"").unwrap());
        let error = requested(&query("Server"), b"").unwrap_err();
        assert_eq!(error.http_status().0, 400);
        assert!(error.to_string().contains("\"Server\""), "{error}");
        // kubectl delete --dry-run=server says it in the DeleteOptions.
        let options = br#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#;
        assert!(requested(&none, options).unwrap());
        assert!(!requested(&none, br#"{"propagationPolicy":"Background"}"#).unwrap());
        assert!(requested(&none, br#"{"dryRun":["Some"]}"#).is_err());
    }

    #[tokio::test]
    async fn every_verb_answers_and_stores_nothing() {
        let (_dir, store, objects) = store_with_default_namespace().await;
        let dry = Objects::new(Arc::new(DryRunStore::new(Arc::clone(&store))));
        let configmaps = kind("configmaps");
        let before = store.current_revision().await.unwrap();
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1"}});

        // Create: the would-be object, with server-set fields.
        let created = dry
            .create(configmaps, "default", config.clone())
            .await
            .unwrap();
        assert_eq!(created["metadata"]["namespace"], "default");
        assert!(created["metadata"]["uid"].is_string());
        assert!(matches!(
            objects.get(configmaps, "default", "c").await,
            Err(Error::NotFound { .. })
        ));
        // Still checked as a real create is: no such namespace.
        assert!(matches!(
            dry.create(configmaps, "nowhere", config.clone()).await,
            Err(Error::NotFound { .. })
        ));

        let stored = objects
            .create(configmaps, "default", config.clone())
            .await
            .unwrap();
        let revision = store.current_revision().await.unwrap();
        assert!(revision > before);
        // A create of an existing object is AlreadyExists, as for real.
        assert!(matches!(
            dry.create(configmaps, "default", config.clone()).await,
            Err(Error::AlreadyExists { .. })
        ));

        // Update: the merged object, resourceVersion unchanged; nothing kept.
        let mut changed = stored.clone();
        changed["data"]["a"] = json!("2");
        let replaced = dry
            .replace(configmaps, "default", "c", changed.clone(), Part::Main)
            .await
            .unwrap();
        assert_eq!(replaced["data"]["a"], "2");
        assert_eq!(
            replaced["metadata"]["resourceVersion"],
            stored["metadata"]["resourceVersion"]
        );
        // A stale resourceVersion is a Conflict, as for real.
        changed["metadata"]["resourceVersion"] = json!("1");
        assert!(matches!(
            dry.replace(configmaps, "default", "c", changed, Part::Main)
                .await,
            Err(Error::Conflict(_))
        ));

        // Delete: the object as it was; it is still there.
        let (deleted, _) = dry.delete(configmaps, "default", "c").await.unwrap();
        assert_eq!(deleted["data"]["a"], "1");
        let kept = objects.get(configmaps, "default", "c").await.unwrap();
        assert_eq!(kept["data"]["a"], "1");
        assert_eq!(store.current_revision().await.unwrap(), revision);
    }
}
