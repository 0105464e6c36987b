//! The object layer: Kubernetes API machinery over the key-value store.
//!
//! Objects are stored as JSON under `/registry/{plural}/{namespace}/{name}`
//! (`/registry/{plural}/{name}` when cluster-scoped). As in Kubernetes, the
//! stored JSON carries no `resourceVersion`: it is the key's `mod_revision`,
//! stamped on every read and used for compare-and-swap on every write.

use std::sync::Arc;

use c4m_api::{ApplyAction, ApplyRequest, ApplyResponse, ApplyResult};
use c4m_core::{Document, ResourceKind};
use c4m_state::{KeyValue, Op, Precondition, Store};
use serde_json::{Map, Value, json};

use c4m_plugin::{Admission, AdmissionRequest, Operation};

use crate::admission::PriorityClasses;
use crate::deletion::{DeleteOptions, Deleted, Deletion};
use crate::events::Events;
use crate::service_addresses::{Picked, ServiceRanges};
use crate::{Error, Result};

/// How many times a write that lost a compare-and-swap race is retried.
const CONFLICT_RETRIES: usize = 8;

/// Store key of one object.
pub(crate) fn key(kind: &ResourceKind, namespace: &str, name: &str) -> String {
    if kind.namespaced {
        format!("/registry/{}/{}/{}", kind.plural, namespace, name)
    } else {
        format!("/registry/{}/{}", kind.plural, name)
    }
}

/// The revision an object was written at (its resourceVersion), if it
/// carries one.
pub(crate) fn revision_of(object: &Value) -> Option<i64> {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
}

/// Store prefix of a kind's objects, in one namespace or all.
pub(crate) fn prefix(kind: &ResourceKind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kind.namespaced => format!("/registry/{}/{}/", kind.plural, ns),
        _ => format!("/registry/{}/", kind.plural),
    }
}

/// Decodes a stored object and stamps its resourceVersion.
pub(crate) fn decode(kv: &KeyValue) -> Result<Value> {
    decode_json(&kv.key, &kv.value, kv.mod_revision)
}

/// Decodes the JSON stored at `key` by the write at `revision`, and stamps
/// that revision as its resourceVersion.
pub(crate) fn decode_json(key: &str, json: &[u8], revision: i64) -> Result<Value> {
    let mut value: Value = serde_json::from_slice(json).map_err(|source| Error::Corrupt {
        key: key.to_string(),
        source,
    })?;
    stamp_revision(&mut value, revision);
    Ok(value)
}

/// Stamps `revision` as the object's resourceVersion (every object the
/// store takes has its metadata an object; anything else is left alone).
fn stamp_revision(value: &mut Value, revision: i64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// Encodes an object for the store, without its resourceVersion.
fn encode(value: &Value) -> bytes::Bytes {
    encode_owned(value.clone())
}

/// [`encode`] of a value the caller gives up, saving a copy.
fn encode_owned(mut value: Value) -> bytes::Bytes {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

/// The largest object the API stores, encoded: Kubernetes' limit (etcd's
/// default request size, 1.5 MiB).
pub(crate) const MAX_OBJECT_BYTES: usize = 3 << 19;

/// [`encode`] of an object a client sent (or changed), refused (413) when
/// larger than [`MAX_OBJECT_BYTES`].
fn encode_sent(kind: &ResourceKind, value: &Value) -> Result<bytes::Bytes> {
    let bytes = encode(value);
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(Error::TooLarge(format!(
            "{} {:?} is too large: {} bytes, the limit is {MAX_OBJECT_BYTES}",
            kind.plural,
            name_of(value),
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub(crate) use c4m_core::now_rfc3339;

/// `metadata.name` of an object.
pub(crate) fn name_of(value: &Value) -> &str {
    value["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace` of an object.
pub(crate) fn namespace_of(value: &Value) -> &str {
    value["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn metadata_mut(value: &mut Value) -> Result<&mut Map<String, Value>> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| Error::BadRequest("the body must be a JSON object".into()))?;
    let meta = object.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| Error::Invalid("metadata: must be an object".into()))
}

/// Everything of an object but its metadata and status: what a change to
/// bumps `generation`.
fn spec_part(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("metadata");
        object.remove("status");
    }
    value
}

/// Which part of an object a replace writes (the status subresource, or the
/// rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Everything but `status`.
    Main,
    /// Only `status`.
    Status,
}

/// The object layer over a [`Store`].
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    /// The embedder's admission hooks, in order.
    admission: Arc<[Arc<dyn Admission>]>,
    /// Where the control plane's parts record Events.
    events: Events,
    /// Where Services' cluster IPs and node ports come from.
    ranges: Arc<ServiceRanges>,
}

impl Objects {
    /// Objects kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Objects {
            store,
            admission: Arc::new([]),
            events: Events::disabled(),
            ranges: Arc::new(ServiceRanges::default()),
        }
    }

    /// Services take their addresses from `ranges`.
    pub(crate) fn with_service_ranges(mut self, ranges: ServiceRanges) -> Self {
        self.ranges = Arc::new(ranges);
        self
    }

    /// The record writes that go with writing `value`, a Service created
    /// (`current` None) or replacing `current`: its addresses allocated,
    /// those it gave up released. Nothing for other kinds.
    async fn address_ops(
        &self,
        kind: &ResourceKind,
        current: Option<&Value>,
        value: &mut Value,
        picked: &mut Picked,
    ) -> Result<Vec<Op>> {
        if kind.kind != "Service" {
            return Ok(Vec::new());
        }
        let name = name_of(value).to_string();
        let ops = self
            .ranges
            .prepare(self.store.as_ref(), current, value, picked)
            .await
            .map_err(|e| crate::invalid::for_object(e, kind, &name))?;
        // The generation was bumped before the addresses and defaults kept
        // were filled in: a write that leaves the spec as it was keeps it.
        if let Some(current) = current
            && spec_part(value) == spec_part(current)
        {
            let generation = current["metadata"]["generation"].clone();
            crate::json::set_path(value, &["metadata", "generation"], generation)?;
        }
        Ok(ops)
    }

    /// Events recorded through [`Objects::events`] go to `events`.
    pub(crate) fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Where to record Events.
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// Every create and update also passes `hooks`, in order.
    pub fn with_admission(mut self, hooks: Vec<Arc<dyn Admission>>) -> Self {
        self.admission = hooks.into();
        self
    }

    /// Runs the admission hooks over a write of `object`: a denial refuses
    /// it (403), a hook may change it.
    async fn admit(
        &self,
        operation: Operation,
        kind: &ResourceKind,
        namespace: &str,
        old: Option<&Value>,
        object: &mut Value,
    ) -> Result<()> {
        let request = AdmissionRequest {
            operation,
            kind,
            namespace,
            old,
        };
        for hook in self.admission.iter() {
            hook.admit(request, object).await?;
        }
        Ok(())
    }

    /// The same objects over another store (a dry run's), with the same
    /// admission hooks; Events are not recorded from there.
    pub(crate) fn over_store(&self, store: Arc<dyn Store>) -> Self {
        Objects {
            store,
            admission: Arc::clone(&self.admission),
            events: Events::disabled(),
            ranges: Arc::clone(&self.ranges),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Kubernetes' NotFound: the name without its namespace, as in
    /// `pods "web-1" not found`.
    fn not_found(kind: &ResourceKind, name: &str) -> Error {
        Error::NotFound {
            kind: kind.plural.to_string(),
            name: name.to_string(),
        }
    }

    /// Commits `op`, whose precondition pins the revision it was computed
    /// from: Some(new revision), or None when another writer got there first
    /// and the caller should read again.
    async fn commit_if_unchanged(&self, ops: Vec<Op>) -> Result<Option<i64>> {
        match self.store.txn(ops).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A write pinned to a resourceVersion the object no longer has.
    fn modified(kind: &ResourceKind, name: &str) -> Error {
        Error::Conflict(format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            kind.plural
        ))
    }

    fn keeps_changing(kind: &ResourceKind, name: &str) -> Error {
        Error::Conflict(format!(
            "{} {name:?} keeps changing; try again",
            kind.plural
        ))
    }

    /// Reads one object.
    pub async fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Result<Value> {
        match self.store.get(&key(kind, namespace, name)).await? {
            Some(kv) => decode(&kv),
            None => Err(Self::not_found(kind, name)),
        }
    }

    /// Lists a kind's objects (one namespace or all) and the revision read at.
    pub async fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, i64)> {
        let (kvs, revision) = self.store.range(&prefix(kind, namespace)).await?;
        let items = kvs.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok((items, revision))
    }

    /// Fills in what the server owns on a new object: namespace, uid,
    /// creation time, generation; checks apiVersion/kind and the name. An
    /// instance is admitted here, the one place every create passes
    /// (API, apply, controllers): its priority comes from its PriorityClass,
    /// looked up in the store or among `pending`, the objects written with it.
    async fn prepare_create(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        mut value: Value,
        classes: Option<&PriorityClasses>,
    ) -> Result<Value> {
        check_type(kind, &mut value)?;
        let meta = metadata_mut(&mut value)?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            let base = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if base.is_empty() {
                return Err(Error::Invalid("metadata.name: Required value".into()));
            }
            meta.insert(
                "name".into(),
                Value::String(format!("{base}{}", random_suffix())),
            );
        }
        if kind.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(Error::BadRequest(format!(
                        "metadata.namespace: the namespace of the object ({ns}) does not match the namespace of the request ({namespace})"
                    )));
                }
                _ => {
                    meta.insert("namespace".into(), Value::String(namespace.to_string()));
                }
            }
        } else {
            meta.remove("namespace");
        }
        meta.remove("resourceVersion");
        // A new object is not being deleted, whatever the request says.
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        if kind.kind == "Vpc" {
            self.check_vpc_overlap(&value).await?;
        }
        if kind.kind == "Job" {
            crate::controllers::jobs::default_new_job(&mut value);
        }
        if kind.kind == "StatefulSet" {
            crate::controllers::statefulsets::default_new_stateful_set(&mut value);
        }
        if kind.kind == "Namespace" {
            crate::deletion::default_new_namespace(&mut value);
        }
        if kind.kind == "HorizontalPodAutoscaler" {
            crate::controllers::horizontal::default_new_autoscaler(&mut value);
        }
        if kind.kind == "Ingress" {
            crate::controllers::edge::default_ingress_class(self.store.as_ref(), &mut value)
                .await?;
        }
        crate::controllers::volumes::admission::default_new(
            self.store.as_ref(),
            kind.kind,
            &mut value,
        )
        .await?;
        // The API server's default (kubectl create secret generic sends none).
        if kind.kind == "Secret"
            && value["type"].as_str().is_none_or(str::is_empty)
            && let Some(secret) = value.as_object_mut()
        {
            secret.insert("type".into(), json!("Opaque"));
        }
        if kind.kind == "Pod" {
            match classes {
                Some(classes) => classes.admit(&mut value)?,
                None => PriorityClasses::load(self.store.as_ref(), &[])
                    .await?
                    .admit(&mut value)?,
            }
            if value.get("status").is_none_or(Value::is_null) {
                value["status"] = json!({"phase": "Pending"});
            }
            // The API server's default, which clients read without a
            // check (`kubectl debug` crashes without it).
            if let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut)
                && spec.get("securityContext").is_none_or(Value::is_null)
            {
                spec.insert("securityContext".into(), json!({}));
            }
        }
        self.admit(Operation::Create, kind, namespace, None, &mut value)
            .await?;
        Ok(value)
    }

    /// Merges a replacement into the current object: the server-owned
    /// metadata stays, `part` says whether spec or status is taken; then
    /// the admission hooks judge the result.
    async fn prepare_replace(
        &self,
        kind: &ResourceKind,
        current: &Value,
        value: Value,
        part: Part,
    ) -> Result<Value> {
        let mut merged = Self::merge_replacement(kind, current, value, part)?;
        crate::controllers::volumes::admission::check_update(
            self.store.as_ref(),
            kind.kind,
            current,
            &merged,
        )
        .await?;
        self.admit(
            Operation::Update,
            kind,
            namespace_of(current),
            Some(current),
            &mut merged,
        )
        .await?;
        Ok(merged)
    }

    /// The merge of [`Objects::prepare_replace`].
    fn merge_replacement(
        kind: &ResourceKind,
        current: &Value,
        mut value: Value,
        part: Part,
    ) -> Result<Value> {
        check_type(kind, &mut value)?;
        let mut merged = match part {
            Part::Main => {
                let mut merged = value.clone();
                match current.get("status") {
                    Some(status) => {
                        crate::json::set_path(&mut merged, &["status"], status.clone())?
                    }
                    None => {
                        if let Some(object) = merged.as_object_mut() {
                            object.remove("status");
                        }
                    }
                }
                merged
            }
            Part::Status => {
                let status = value.get("status").cloned().unwrap_or(Value::Null);
                crate::status::check(kind, &status).map_err(|(field, message)| {
                    crate::invalid::invalid_field(
                        kind,
                        name_of(current),
                        &field,
                        &message,
                        Some(&value),
                    )
                })?;
                let mut merged = current.clone();
                crate::json::set_path(&mut merged, &["status"], status)?;
                merged
            }
        };
        // A namespace's finalizers change only through `finalize`.
        if kind.kind == "Namespace"
            && part == Part::Main
            && let Some(finalizers) = current["spec"].get("finalizers")
        {
            crate::json::set_path(&mut merged, &["spec", "finalizers"], finalizers.clone())?;
        }
        // Nodes carve their slices and allocations out of a VPC's range:
        // it cannot move under them (and so never comes to overlap).
        if kind.kind == "Vpc" && merged["spec"]["cidr"] != current["spec"]["cidr"] {
            return Err(Error::Invalid(format!(
                "spec.cidr: field is immutable (is {})",
                current["spec"]["cidr"]
            )));
        }
        if kind.kind == "StatefulSet" {
            crate::controllers::statefulsets::default_new_stateful_set(&mut merged);
            crate::controllers::statefulsets::check_update(current, &merged)
                .map_err(Error::Invalid)?;
        }
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
        let bumped = if spec_part(&merged) != spec_part(current) {
            generation + 1
        } else {
            generation
        };
        let current_meta = current["metadata"].as_object().cloned().unwrap_or_default();
        crate::deletion::check_finalizers_update(current, &merged)?;
        let meta = metadata_mut(&mut merged)?;
        for owned in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match current_meta.get(owned) {
                Some(v) => meta.insert(owned.into(), v.clone()),
                None => meta.remove(owned),
            };
        }
        meta.insert("generation".into(), json!(bumped));
        meta.remove("resourceVersion");
        Ok(merged)
    }

    /// Creates an object; fails if it exists.
    pub async fn create(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        value: Value,
    ) -> Result<Value> {
        let value = self.prepare_create(kind, namespace, value, None).await?;
        let name = name_of(&value).to_string();
        if kind.namespaced && kind.kind != "Namespace" {
            self.require_namespace(kind, namespace, &name).await?;
        }
        let key = key(kind, namespace, &name);
        let prepared = value;
        for _ in 0..crate::service_addresses::PICK_RETRIES {
            let mut value = prepared.clone();
            let mut ops = self
                .address_ops(kind, None, &mut value, &mut Picked::default())
                .await?;
            ops.insert(
                0,
                Op::put(&key, encode_sent(kind, &value)?, Precondition::Absent),
            );
            match self.store.txn(ops).await {
                Ok(revision) => {
                    stamp_revision(&mut value, revision);
                    return Ok(value);
                }
                // An address taken meanwhile: pick again.
                Err(c4m_state::Error::Conflict { key: taken, .. }) if taken != key => continue,
                Err(e) if e.is_conflict() => {
                    return Err(Error::AlreadyExists {
                        kind: kind.plural.to_string(),
                        name,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Self::keeps_changing(kind, &name))
    }

    /// Fails unless `namespace` exists and is not being deleted.
    async fn require_namespace(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        let ns_kind = crate::objects::kind("namespaces");
        match self.store.get(&key(ns_kind, "", namespace)).await? {
            None => Err(Self::not_found(ns_kind, namespace)),
            Some(kv) => Self::refuse_if_terminating(&decode(&kv)?, kind, name),
        }
    }

    /// New content in a namespace being deleted would outlive it: refused,
    /// as Kubernetes' NamespaceLifecycle admission refuses it.
    fn refuse_if_terminating(namespace: &Value, kind: &ResourceKind, name: &str) -> Result<()> {
        if !crate::deletion::is_deleting(namespace) {
            return Ok(());
        }
        Err(Error::ForbiddenObject {
            plural: kind.plural.to_string(),
            name: name.to_string(),
            reason: format!(
                "unable to create new content in namespace {} because it is being terminated",
                name_of(namespace)
            ),
        })
    }

    /// Replaces an object. When `value` carries a resourceVersion, the write
    /// succeeds only if the object still has it (optimistic concurrency).
    pub(crate) async fn replace(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        value: Value,
        part: Part,
    ) -> Result<Value> {
        let expected = value["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
            .map(|rv| {
                rv.parse::<i64>().map_err(|_| {
                    Error::BadRequest(format!("metadata.resourceVersion: invalid value {rv:?}"))
                })
            })
            .transpose()?;
        if !name_of(&value).is_empty() && name_of(&value) != name {
            return Err(Error::BadRequest(format!(
                "metadata.name: the name of the object ({}) does not match the name in the URL ({name})",
                name_of(&value)
            )));
        }
        let key = key(kind, namespace, name);
        for _ in 0..CONFLICT_RETRIES {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| Self::not_found(kind, name))?;
            if let Some(expected) = expected
                && expected != kv.mod_revision
            {
                return Err(Self::modified(kind, name));
            }
            let current = decode(&kv)?;
            let mut merged = self
                .prepare_replace(kind, &current, value.clone(), part)
                .await?;
            let precondition = Precondition::ModRevision(kv.mod_revision);
            // The update that takes the last finalizer off an object being
            // deleted removes it.
            let ops = if crate::deletion::is_finished(&merged) {
                let mut ops = vec![Op::delete(&key, precondition)];
                if kind.kind == "Service" {
                    ops.extend(crate::service_addresses::release(&current));
                }
                ops
            } else {
                let mut ops = match part {
                    Part::Main => {
                        self.address_ops(kind, Some(&current), &mut merged, &mut Picked::default())
                            .await?
                    }
                    Part::Status => Vec::new(),
                };
                ops.insert(0, Op::put(&key, encode_sent(kind, &merged)?, precondition));
                ops
            };
            match self.commit_if_unchanged(ops).await? {
                Some(revision) => {
                    stamp_revision(&mut merged, revision);
                    return Ok(merged);
                }
                None if expected.is_some() => return Err(Self::keeps_changing(kind, name)),
                None => continue,
            }
        }
        Err(Self::keeps_changing(kind, name))
    }

    /// A read-modify-write through `change` (a PATCH, a scale): the result
    /// replaces the object's `part`, pinned to the revision read. A lost
    /// race is retried from a fresh read, unless `change` itself named a
    /// different resourceVersion (the client's optimistic lock).
    pub(crate) async fn modify(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        part: Part,
        change: impl Fn(&Value) -> Result<Value>,
    ) -> Result<Value> {
        for _ in 0..CONFLICT_RETRIES {
            let current = self.get(kind, namespace, name).await?;
            let mut changed = change(&current)?;
            let read = current["metadata"]["resourceVersion"].clone();
            let pinned_by_client = match &changed["metadata"]["resourceVersion"] {
                Value::Null => false,
                version => *version != read,
            };
            if !pinned_by_client {
                // A change whose metadata is not an object is refused by
                // the replace, which names the field.
                let _ = crate::json::set_path(&mut changed, &["metadata", "resourceVersion"], read);
            }
            match self.replace(kind, namespace, name, changed, part).await {
                Err(Error::Conflict(_)) if !pinned_by_client => continue,
                result => return result,
            }
        }
        Err(Self::keeps_changing(kind, name))
    }

    /// Changes an object in place with `change`, retrying on conflicts.
    /// `change` returns false to leave the object as it is. Returns the new
    /// revision, or None when nothing was written (no change, or no object).
    pub(crate) async fn update_with(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        mut change: impl FnMut(&mut Value) -> bool,
    ) -> Result<Option<i64>> {
        let key = key(kind, namespace, name);
        for _ in 0..CONFLICT_RETRIES {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(None);
            };
            let mut value = decode(&kv)?;
            if !change(&mut value) {
                return Ok(None);
            }
            let op = Op::put(
                &key,
                encode(&value),
                Precondition::ModRevision(kv.mod_revision),
            );
            if let Some(revision) = self.commit_if_unchanged(vec![op]).await? {
                return Ok(Some(revision));
            }
        }
        Err(Self::keeps_changing(kind, name))
    }

    /// An audited write: sets the object `name` (creating it when absent)
    /// to what `change` makes of the current one, and creates the records
    /// `change` returns with it, in one transaction. `expected` pins the
    /// revision the caller read (0: absent), a mismatch being a Conflict;
    /// without it a lost race is retried from a fresh read. `change`
    /// returns None to write nothing; the answer is then the current object.
    pub(crate) async fn write_with_records<F>(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        expected: Option<i64>,
        mut change: F,
    ) -> Result<Option<Value>>
    where
        F: FnMut(Option<&Value>) -> Result<Option<(Value, Vec<(&'static ResourceKind, Value)>)>>,
    {
        let key = key(kind, namespace, name);
        for _ in 0..CONFLICT_RETRIES {
            let kv = self.store.get(&key).await?;
            let read_at = kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if expected.is_some_and(|expected| expected != read_at) {
                return Err(Self::modified(kind, name));
            }
            let current = kv.as_ref().map(decode).transpose()?;
            let Some((value, records)) = change(current.as_ref())? else {
                return Ok(current);
            };
            let (mut written, precondition) = match &current {
                None => (
                    self.prepare_create(kind, namespace, value, None).await?,
                    Precondition::Absent,
                ),
                Some(current) => (
                    self.prepare_replace(kind, current, value, Part::Main)
                        .await?,
                    Precondition::ModRevision(read_at),
                ),
            };
            let mut ops = vec![Op::put(&key, encode_sent(kind, &written)?, precondition)];
            for (record_kind, record) in records {
                let record_namespace = namespace_of(&record).to_string();
                let record = self
                    .prepare_create(record_kind, &record_namespace, record, None)
                    .await?;
                let record_key = self::key(record_kind, &record_namespace, name_of(&record));
                ops.push(Op::put(&record_key, encode(&record), Precondition::Absent));
            }
            match self.store.txn(ops).await {
                Ok(revision) => {
                    stamp_revision(&mut written, revision);
                    return Ok(Some(written));
                }
                Err(e) if e.is_conflict() && expected.is_some() => {
                    return Err(Self::modified(kind, name));
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Self::keeps_changing(kind, name))
    }

    /// A new VPC's range may not share an address with another VPC's
    /// (422 naming `spec.cidr` and the other VPC).
    async fn check_vpc_overlap(&self, vpc: &Value) -> Result<()> {
        let text = vpc["spec"]["cidr"].as_str().unwrap_or_default();
        let cidr = c4m_core::parse_vpc_cidr(text)
            .map_err(|reason| Error::Invalid(format!("spec.cidr: {reason}")))?;
        if let Ok(services) = c4m_core::parse_vpc_cidr(&self.ranges.cidr())
            && c4m_core::cidrs_overlap(&cidr, &services)
        {
            return Err(Error::Invalid(format!(
                "spec.cidr: {cidr} overlaps the Service CIDR ({services})"
            )));
        }
        let (stored, _) = self.store.range(&prefix(kind("vpcs"), None)).await?;
        for other in stored.iter().filter_map(|kv| decode(kv).ok()) {
            if name_of(&other) == name_of(vpc) {
                continue;
            }
            let theirs = other["spec"]["cidr"].as_str().unwrap_or_default();
            if let Ok(theirs) = c4m_core::parse_vpc_cidr(theirs)
                && c4m_core::cidrs_overlap(&cidr, &theirs)
            {
                return Err(Error::Invalid(format!(
                    "spec.cidr: {cidr} overlaps vpc {} ({theirs})",
                    name_of(&other)
                )));
            }
        }
        Ok(())
    }

    /// Fails when the Service CIDR overlaps a stored VPC's range: cluster
    /// IPs and instance addresses would be confused.
    pub(crate) async fn check_service_cidr(&self) -> Result<()> {
        let Ok(services) = c4m_core::parse_vpc_cidr(&self.ranges.cidr()) else {
            return Ok(());
        };
        let (stored, _) = self.store.range(&prefix(kind("vpcs"), None)).await?;
        for vpc in stored.iter().filter_map(|kv| decode(kv).ok()) {
            let text = vpc["spec"]["cidr"].as_str().unwrap_or_default();
            if let Ok(theirs) = c4m_core::parse_vpc_cidr(text)
                && c4m_core::cidrs_overlap(&services, &theirs)
            {
                return Err(Error::Invalid(format!(
                    "the Service CIDR {services} overlaps vpc {} ({theirs}): choose another --service-cidr",
                    name_of(&vpc)
                )));
            }
        }
        Ok(())
    }

    /// A VPC in use (named by a Microservice or an instance, or the default
    /// VPC while an instance names none) is not deleted: 409 naming a user.
    async fn check_vpc_unused(&self, name: &str) -> Result<()> {
        let (microservices, _) = self
            .store
            .range(&prefix(kind("microservices"), None))
            .await?;
        for ms in microservices.iter().filter_map(|kv| decode(kv).ok()) {
            if ms["spec"]["vpc"].as_str().unwrap_or(c4m_core::DEFAULT_VPC) == name {
                return Err(Error::Conflict(format!(
                    "vpc {name} is used by microservice {}/{}",
                    namespace_of(&ms),
                    name_of(&ms)
                )));
            }
        }
        let (pods, _) = self.store.range(&prefix(kind("pods"), None)).await?;
        for pod in pods.iter().filter_map(|kv| decode(kv).ok()) {
            let vpc = pod["metadata"]["annotations"][c4m_core::annotations::VPC]
                .as_str()
                .unwrap_or(c4m_core::DEFAULT_VPC);
            if vpc == name {
                return Err(Error::Conflict(format!(
                    "vpc {name} is used by instance {}/{}",
                    namespace_of(&pod),
                    name_of(&pod)
                )));
            }
        }
        Ok(())
    }

    /// Deletes an object with the default options (see
    /// [`crate::deletion`]): returns it as it was removed, or as it now
    /// stands marked for deletion, and the write's revision.
    pub async fn delete(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<(Value, i64)> {
        let deleted = self
            .delete_with(kind, namespace, name, &DeleteOptions::default())
            .await?;
        Ok((deleted.object, deleted.revision))
    }

    /// Deletes an object as `plan` decides from the stored version: removes
    /// it, writes the marked version `plan` returns, or leaves it.
    pub(crate) async fn delete_as(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        mut plan: impl FnMut(&Value) -> Result<Deletion>,
    ) -> Result<Deleted> {
        if kind.kind == "Vpc" {
            self.check_vpc_unused(name).await?;
        }
        let key = key(kind, namespace, name);
        for _ in 0..CONFLICT_RETRIES {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| Self::not_found(kind, name))?;
            let current = decode(&kv)?;
            let precondition = Precondition::ModRevision(kv.mod_revision);
            let (ops, mut object, gone) = match plan(&current)? {
                Deletion::Remove => {
                    let mut ops = vec![Op::delete(&key, precondition)];
                    if kind.kind == "Service" {
                        ops.extend(crate::service_addresses::release(&current));
                    }
                    (ops, current, true)
                }
                Deletion::Mark(marked) => (
                    vec![Op::put(&key, encode(&marked), precondition)],
                    marked,
                    false,
                ),
                Deletion::Keep => {
                    return Ok(Deleted {
                        object: current,
                        revision: kv.mod_revision,
                    });
                }
            };
            if let Some(revision) = self.commit_if_unchanged(ops).await? {
                if !gone {
                    stamp_revision(&mut object, revision);
                }
                return Ok(Deleted { object, revision });
            }
        }
        Err(Self::keeps_changing(kind, name))
    }

    /// Writes many new objects in one transaction (used by controllers).
    pub(crate) async fn create_many(
        &self,
        objects: Vec<(&'static ResourceKind, Value)>,
    ) -> Result<i64> {
        let mut ops = Vec::with_capacity(objects.len());
        let mut checked = std::collections::HashSet::new();
        for (kind, value) in objects {
            let namespace = namespace_of(&value).to_string();
            let value = self.prepare_create(kind, &namespace, value, None).await?;
            // Controllers create only beside an owner, in a namespace that
            // exists; one being deleted gets nothing new.
            if kind.namespaced && checked.insert(namespace.clone()) {
                let ns_key = key(crate::objects::kind("namespaces"), "", &namespace);
                if let Some(kv) = self.store.get(&ns_key).await? {
                    Self::refuse_if_terminating(&decode(&kv)?, kind, name_of(&value))?;
                }
            }
            ops.push(Op::put(
                &key(kind, &namespace, name_of(&value)),
                encode(&value),
                Precondition::Absent,
            ));
        }
        Ok(self.store.txn(ops).await?)
    }

    /// Creates `created` and replaces `updated` (pinned to the
    /// resourceVersion it carries) in one transaction: both or neither (a
    /// Conflict when either moved). A controller records a new object and
    /// what points at it this way (a PersistentVolume and its claim).
    pub(crate) async fn create_and_replace(
        &self,
        created: (&'static ResourceKind, Value),
        updated: (&'static ResourceKind, Value),
    ) -> Result<i64> {
        let (kind, value) = created;
        let namespace = namespace_of(&value).to_string();
        let value = self.prepare_create(kind, &namespace, value, None).await?;
        let create = Op::put(
            &key(kind, &namespace, name_of(&value)),
            encode(&value),
            Precondition::Absent,
        );
        let (kind, value) = updated;
        let revision = revision_of(&value).ok_or_else(|| {
            Error::BadRequest(format!(
                "{} {}: no resourceVersion",
                kind.plural,
                name_of(&value)
            ))
        })?;
        let update = Op::put(
            &key(kind, namespace_of(&value), name_of(&value)),
            encode_owned(value),
            Precondition::ModRevision(revision),
        );
        Ok(self.store.txn(vec![create, update]).await?)
    }

    /// Writes changed objects in one transaction; each must carry the
    /// resourceVersion it was read at, which the write must still match.
    pub(crate) async fn write_many(
        &self,
        objects: Vec<(&'static ResourceKind, Value)>,
    ) -> Result<i64> {
        let mut ops = Vec::with_capacity(objects.len());
        for (kind, value) in objects {
            let revision = value["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "{} {}: no resourceVersion",
                        kind.plural,
                        name_of(&value)
                    ))
                })?;
            let key = key(kind, namespace_of(&value), name_of(&value));
            ops.push(Op::put(
                &key,
                encode_owned(value),
                Precondition::ModRevision(revision),
            ));
        }
        Ok(self.store.txn(ops).await?)
    }

    /// Creates or updates every object of `request` in one all-or-nothing
    /// transaction. Every object is validated first; one invalid object fails
    /// the whole apply and nothing is written.
    pub async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse> {
        let default_ns = request
            .default_namespace
            .as_deref()
            .unwrap_or("default")
            .to_string();
        let mut warnings = Vec::new();
        let mut items = Vec::with_capacity(request.objects.len());
        let mut keys = std::collections::HashSet::with_capacity(request.objects.len());
        for object in request.objects {
            let document = Document {
                source: object.source,
                index: object.document,
                value: object.object,
            };
            let validated =
                c4m_core::validate(&document).map_err(|e| Error::Invalid(e.to_string()))?;
            crate::controllers::edge::check(&document.value).map_err(|(field, message)| {
                Error::Invalid(format!(
                    "{}: document {}: {field}: {message}",
                    document.source, document.index
                ))
            })?;
            warnings.extend(validated.warnings);
            let namespace = match namespace_of(&validated.object) {
                "" => default_ns.clone(),
                ns => ns.to_string(),
            };
            let name = name_of(&validated.object).to_string();
            let key = key(validated.kind, &namespace, &name);
            if !keys.insert(key.clone()) {
                return Err(Error::Invalid(format!(
                    "{}: document {}: {} {name:?} appears twice in this apply",
                    document.source, document.index, validated.kind.kind
                )));
            }
            items.push((key, validated.kind, namespace, name, validated.object));
        }
        let new_namespaces: Vec<&str> = items
            .iter()
            .filter(|(_, kind, ..)| kind.kind == "Namespace")
            .map(|(_, _, _, name, _)| name.as_str())
            .collect();
        let mut namespaces_checked = std::collections::BTreeSet::new();
        for (_, kind, namespace, name, _) in &items {
            if kind.namespaced
                && !new_namespaces.contains(&namespace.as_str())
                && namespaces_checked.insert(namespace.clone())
            {
                self.require_namespace(kind, namespace, name).await?;
            }
        }
        // Instances may name a PriorityClass created by this same apply.
        let pending_classes: Vec<&Value> = items
            .iter()
            .filter(|(_, kind, ..)| kind.kind == "PriorityClass")
            .map(|(.., object)| object)
            .collect();
        let classes = PriorityClasses::load(self.store.as_ref(), &pending_classes).await?;
        for _ in 0..CONFLICT_RETRIES {
            let mut ops = Vec::with_capacity(items.len());
            let mut results = Vec::with_capacity(items.len());
            let mut picked = Picked::default();
            let keys: Vec<String> = items.iter().map(|(key, ..)| key.clone()).collect();
            let stored = self.store.get_many(&keys).await?;
            for ((key, kind, namespace, name, object), stored) in items.iter().zip(stored) {
                let (op, action) = match stored {
                    None => {
                        let mut value = self
                            .prepare_create(kind, namespace, object.clone(), Some(&classes))
                            .await?;
                        ops.extend(
                            self.address_ops(kind, None, &mut value, &mut picked)
                                .await?,
                        );
                        (
                            Some(Op::put(
                                key,
                                encode_sent(kind, &value)?,
                                Precondition::Absent,
                            )),
                            ApplyAction::Created,
                        )
                    }
                    Some(kv) => {
                        let current = decode(&kv)?;
                        let mut desired = object.clone();
                        if let Some(meta) =
                            desired.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            meta.remove("resourceVersion");
                        }
                        let mut merged = self
                            .prepare_replace(kind, &current, desired, Part::Main)
                            .await?;
                        ops.extend(
                            self.address_ops(kind, Some(&current), &mut merged, &mut picked)
                                .await?,
                        );
                        let mut current_cmp = current.clone();
                        current_cmp["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("resourceVersion"));
                        if merged == current_cmp {
                            (None, ApplyAction::Unchanged)
                        } else {
                            let precondition = Precondition::ModRevision(kv.mod_revision);
                            (
                                Some(Op::put(key, encode_sent(kind, &merged)?, precondition)),
                                ApplyAction::Configured,
                            )
                        }
                    }
                };
                ops.extend(op);
                results.push(ApplyResult {
                    kind: kind.kind.to_string(),
                    namespace: if kind.namespaced {
                        namespace.clone()
                    } else {
                        String::new()
                    },
                    name: name.clone(),
                    action,
                });
            }
            if ops.is_empty() {
                return Ok(ApplyResponse { results, warnings });
            }
            match self.store.txn(ops).await {
                Ok(_) => return Ok(ApplyResponse { results, warnings }),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(
            "the applied objects keep changing; try again".into(),
        ))
    }
}

/// Checks (and fills in when absent) `apiVersion` and `kind`.
fn check_type(kind: &ResourceKind, value: &mut Value) -> Result<()> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| Error::BadRequest("the body must be a JSON object".into()))?;
    let api_version = kind.api_version();
    for (field, expected) in [("apiVersion", api_version.as_str()), ("kind", kind.kind)] {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => {
                object.insert(field.into(), Value::String(expected.into()));
            }
            Some(actual) if actual != expected => {
                return Err(Error::BadRequest(format!(
                    "{field}: expected {expected:?} for {}, got {actual:?}",
                    kind.plural
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The registered kind with this plural.
pub(crate) fn kind(plural: &str) -> &'static ResourceKind {
    c4m_core::KINDS
        .iter()
        .find(|k| k.plural == plural)
        .unwrap_or_else(|| panic!("kind {plural} is not registered"))
}

/// Five random lowercase alphanumerics, as Kubernetes' generateName adds.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
