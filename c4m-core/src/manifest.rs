//! Manifests for `c4m apply`: parsing YAML/JSON into documents and validating
//! each one before anything is applied.
//!
//! Validation happens in three layers, each naming the field it complains
//! about:
//! 1. `apiVersion`/`kind` must be a kind c4m serves ([`KINDS`](crate::KINDS));
//! 2. a typed pass deserialises into the Kubernetes (or c4m) type, reporting
//!    type errors with their path and, as Kubernetes' strict field validation
//!    does, unknown fields;
//! 3. semantic checks (names, labels, quantities, ports, probes, selectors).
//!
//! Fields that are valid Kubernetes but that c4m does not honour yet are not
//! errors: they produce warnings, from the single [`UNHONOURED`] table.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricTarget,
};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerPort, Endpoints, Event, ExecAction, HTTPGetAction, LifecycleHandler,
    Namespace, Node, Pod, PodSpec, Probe, ResourceRequirements, Secret, Service, ServiceAccount,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::kinds::{KINDS, ResourceKind};
use crate::model::microservice::Microservice;
use crate::model::vpc::{Vpc, parse_vpc_cidr};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};

mod storage;
pub use storage::check_claim_spec;

/// One object read from a manifest, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where it was read from: a file path or `<stdin>`.
    pub source: String,
    /// 1-based position within the source (see [`parse_documents`]).
    pub index: usize,
    /// The object as written.
    pub value: Value,
}

/// A document that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Its kind.
    pub kind: &'static ResourceKind,
    /// The object exactly as written (not re-serialised); `metadata.namespace`
    /// is left for the server to default.
    pub object: Value,
    /// Fields c4m accepts but does not honour, one sentence each.
    pub warnings: Vec<String>,
}

/// Why a manifest document was rejected: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// File path or `<stdin>`.
    pub source: String,
    /// 1-based document index within the source.
    pub document: usize,
    /// Field path (`spec.template.spec.containers[1].image`); empty when the
    /// error is about the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

// Written by hand rather than with thiserror: thiserror treats a field named
// `source` as the underlying error, and here it is the file name.
impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}: ", self.source, self.document)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// A field path and what is wrong there.
type FieldError = (String, String);

fn field_error(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    (path.into(), message.into())
}

/// `parent.child`, or `child` at the root.
fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Splits manifest text into documents.
///
/// Text starting with `{` or `[` is JSON: one object, several concatenated
/// objects, or an array of objects. Anything else is YAML, documents separated
/// by `---`. A `List` (`kind: List` with `items`) or an array is expanded into
/// its items. Empty documents (a trailing `---`, comments only) are skipped.
///
/// Documents are numbered from 1 in the order they appear; an empty YAML
/// document still takes its number so that "document 3" is the third
/// `---`-separated section of the file. Text with no documents gives an empty
/// list.
///
/// # Errors
/// A syntax error, naming the document and the line.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Documents {
        source,
        list: Vec::new(),
        last_index: 0,
    };
    if text.trim_start().starts_with(['{', '[']) {
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            let value = value
                .map_err(|err| documents.error(String::new(), format!("invalid JSON: {err}")))?;
            documents.push(value);
        }
    } else {
        for yaml in serde_yaml::Deserializer::from_str(text) {
            let mut value = serde_yaml::Value::deserialize(yaml)
                .map_err(|err| documents.error(String::new(), format!("invalid YAML: {err}")))?;
            if value.is_null() {
                documents.last_index += 1;
                continue;
            }
            value
                .apply_merge()
                .map_err(|err| documents.error(String::new(), format!("invalid YAML: {err}")))?;
            let value = yaml_to_json(value, "")
                .map_err(|(path, message)| documents.error(path, message))?;
            documents.push(value);
        }
    }
    Ok(documents.list)
}

/// Documents read so far from one source.
struct Documents<'a> {
    source: &'a str,
    list: Vec<Document>,
    last_index: usize,
}

impl Documents<'_> {
    /// Adds a document, expanding arrays and `List` objects into their items.
    fn push(&mut self, value: Value) {
        let items = match value {
            Value::Array(items) => items,
            Value::Object(mut object) if is_list(&object) => match object.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            other => vec![other],
        };
        for value in items {
            self.last_index += 1;
            self.list.push(Document {
                source: self.source.to_string(),
                index: self.last_index,
                value,
            });
        }
    }

    /// An error in the document being read.
    fn error(&self, path: String, message: String) -> ManifestError {
        ManifestError {
            source: self.source.to_string(),
            document: self.last_index + 1,
            path,
            message,
        }
    }
}

/// A Kubernetes `List` (`kubectl get -o yaml` output): `kind: List` with an
/// `items` array.
fn is_list(object: &serde_json::Map<String, Value>) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("List")
        && object.get("items").is_some_and(Value::is_array)
}

/// Converts YAML to JSON as Kubernetes does: scalar keys become strings, tags
/// are dropped, and non-finite floats are rejected.
fn yaml_to_json(value: serde_yaml::Value, path: &str) -> Result<Value, FieldError> {
    use serde_yaml::Value as Yaml;
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                let float = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(float)
                    .map(Value::Number)
                    .ok_or_else(|| field_error(path, format!("{n} is not a valid JSON number")))?
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(mapping) => {
            let mut object = serde_json::Map::with_capacity(mapping.len());
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => return Err(field_error(path, "mapping keys must be scalars")),
                };
                let child = yaml_to_json(value, &join(path, &key))?;
                object.insert(key, child);
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value, path)?,
    })
}

// ---------------------------------------------------------------------------
// Validation entry points
// ---------------------------------------------------------------------------

/// Validates one document; errors carry its source and index.
///
/// # Errors
/// The first problem found, as a [`ManifestError`].
pub fn validate(doc: &Document) -> Result<Validated, ManifestError> {
    validate_value(&doc.value).map_err(|(path, message)| ManifestError {
        source: doc.source.clone(),
        document: doc.index,
        path,
        message,
    })
}

/// Validates one object (from a manifest or an API request).
///
/// # Errors
/// The first problem found, as `(field path, message)`; the path is empty when
/// the problem is the whole object.
pub fn validate_value(value: &Value) -> Result<Validated, (String, String)> {
    let object = value.as_object().ok_or_else(|| {
        field_error(
            "",
            format!("expected an object, found {}", json_type(value)),
        )
    })?;
    let api_version = required_string(object, "apiVersion")?;
    let kind_name = required_string(object, "kind")?;
    let kind = ResourceKind::from_type(api_version, kind_name).ok_or_else(|| {
        let served: Vec<String> = KINDS
            .iter()
            .map(|k| format!("{} ({})", k.kind, k.api_version()))
            .collect();
        field_error(
            "kind",
            format!(
                "unsupported kind {kind_name} (apiVersion {api_version}); c4m serves: {}",
                served.join(", ")
            ),
        )
    })?;

    let metadata = check_typed(kind, value)?;
    check_metadata(kind, &metadata)?;

    let name = metadata.name.as_deref().unwrap_or_default();
    let warnings = unhonoured_fields(kind.kind, value)
        .into_iter()
        .chain(storage::unhonoured(kind.kind, value))
        .map(|field| format!("{} {name}: {field}", kind.kind))
        .collect();
    Ok(Validated {
        kind,
        object: value.clone(),
        warnings,
    })
}

fn required_string<'a>(
    object: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, FieldError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(field_error(field, "required field is missing")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(field_error(field, "must not be empty")),
        Some(other) => Err(field_error(
            field,
            format!("expected a string, found {}", json_type(other)),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// Typed pass
// ---------------------------------------------------------------------------

/// Deserialises into the kind's type and runs its semantic checks; returns
/// the object's metadata for the checks common to every kind.
fn check_typed(kind: &ResourceKind, value: &Value) -> Result<ObjectMeta, FieldError> {
    Ok(match kind.kind {
        "Namespace" => typed::<Namespace>(value)?.metadata,
        "Node" => typed::<Node>(value)?.metadata,
        "ServiceAccount" => typed::<ServiceAccount>(value)?.metadata,
        "Event" => typed::<Event>(value)?.metadata,
        "Lease" => typed::<Lease>(value)?.metadata,
        "Pod" => {
            let pod: Pod = typed(value)?;
            let spec = pod
                .spec
                .as_ref()
                .ok_or_else(|| field_error("spec", "required field is missing"))?;
            check_pod_spec(spec, "spec")?;
            pod.metadata
        }
        "Deployment" => {
            let deployment: Deployment = typed(value)?;
            check_deployment(&deployment)?;
            deployment.metadata
        }
        "ReplicaSet" => {
            let replica_set: ReplicaSet = typed(value)?;
            if let Some(pod_spec) = replica_set
                .spec
                .as_ref()
                .and_then(|spec| spec.template.as_ref())
                .and_then(|template| template.spec.as_ref())
            {
                check_pod_spec(pod_spec, "spec.template.spec")?;
            }
            replica_set.metadata
        }
        "Service" => {
            let service: Service = typed(value)?;
            if let Some(spec) = &service.spec {
                check_service_spec(spec)?;
                check_external_name(spec)?;
            }
            service.metadata
        }
        "Endpoints" => {
            let endpoints: Endpoints = typed(value)?;
            for (i, subset) in endpoints.subsets.iter().flatten().enumerate() {
                for (j, port) in subset.ports.iter().flatten().enumerate() {
                    check_port_number(port.port, &format!("subsets[{i}].ports[{j}].port"))?;
                    check_protocol(
                        port.protocol.as_deref(),
                        &format!("subsets[{i}].ports[{j}]"),
                    )?;
                }
            }
            endpoints.metadata
        }
        "EndpointSlice" => {
            let slice: EndpointSlice = typed(value)?;
            check_endpoint_slice(&slice)?;
            slice.metadata
        }
        "ConfigMap" => {
            let config_map: ConfigMap = typed(value)?;
            check_data_keys(config_map.data.as_ref(), "data")?;
            check_data_keys(config_map.binary_data.as_ref(), "binaryData")?;
            config_map.metadata
        }
        "Secret" => {
            let secret: Secret = typed(value).map_err(|(path, message)| {
                // ByteString decodes base64 while deserialising; say so.
                if path.starts_with("data.") && !message.starts_with("invalid type") {
                    (path, format!("invalid base64: {message}"))
                } else {
                    (path, message)
                }
            })?;
            check_data_keys(secret.data.as_ref(), "data")?;
            check_data_keys(secret.string_data.as_ref(), "stringData")?;
            secret.metadata
        }
        "Microservice" => {
            let microservice: Microservice = typed(value)?;
            check_microservice(&microservice)?;
            microservice.metadata
        }
        "PriorityClass" => {
            // k8s-openapi reads a missing value as 0; Kubernetes requires it.
            if value.get("value").is_none_or(Value::is_null) {
                return Err(field_error("value", "required field is missing"));
            }
            let class: PriorityClass = typed(value)?;
            check_priority_class(&class)?;
            class.metadata
        }
        "Vpc" => {
            let vpc: Vpc = typed(value)?;
            parse_vpc_cidr(&vpc.spec.cidr).map_err(|reason| field_error("spec.cidr", reason))?;
            vpc.metadata
        }
        "DaemonSet" => {
            let daemon_set: DaemonSet = typed(value)?;
            check_daemon_set(&daemon_set)?;
            daemon_set.metadata
        }
        "StatefulSet" => {
            let stateful_set: StatefulSet = typed(value)?;
            check_stateful_set(&stateful_set)?;
            stateful_set.metadata
        }
        "Job" => {
            let job: Job = typed(value)?;
            check_job(&job)?;
            job.metadata
        }
        "CronJob" => {
            let cronjob: CronJob = typed(value)?;
            check_cronjob(&cronjob)?;
            cronjob.metadata
        }
        // The API serves autoscaling/v1 as a view of the stored v2 objects;
        // a batch apply writes what it is given, so it takes v2 only.
        "HorizontalPodAutoscaler" if kind.version != "v2" => {
            return Err(field_error(
                "apiVersion",
                "write HorizontalPodAutoscalers as autoscaling/v2 here (kubectl converts autoscaling/v1 through the API)",
            ));
        }
        "HorizontalPodAutoscaler" => {
            let autoscaler: HorizontalPodAutoscaler = typed(value)?;
            check_autoscaler(&autoscaler)?;
            autoscaler.metadata
        }
        "PodDisruptionBudget" => {
            let budget: PodDisruptionBudget = typed(value)?;
            check_disruption_budget(&budget)?;
            budget.metadata
        }
        // Their rules are validated by the control plane with c4m-mesh's
        // route model (`proxy::routes::validate`), which c4m-core cannot use.
        "Ingress" => typed::<Ingress>(value)?.metadata,
        "IngressClass" => typed::<IngressClass>(value)?.metadata,
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant" => {
            typed::<GatewayApiObject>(value)?.metadata
        }
        "PersistentVolume" => storage::check_persistent_volume(value)?,
        "PersistentVolumeClaim" => storage::check_persistent_volume_claim(value)?,
        "StorageClass" => storage::check_storage_class(value)?,
        "VolumeSnapshot" => storage::check_volume_snapshot(value)?,
        "VolumeSnapshotClass" => storage::check_volume_snapshot_class(value)?,
        "VolumeSnapshotContent" => storage::check_volume_snapshot_content(value)?,
        other => {
            return Err(field_error(
                "kind",
                format!("no validation for kind {other}"),
            ));
        }
    })
}

/// A Gateway API object as c4m-core sees it: its metadata, and a spec that
/// must be an object (checked field by field by the control plane).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayApiObject {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(rename = "spec")]
    _spec: serde_json::Map<String, Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

/// Deserialises `value` into `T`, reporting type errors and unknown fields
/// with their path.
///
/// `serde_ignored` sees every field the type skips (the derived impls and
/// k8s-openapi's hand-written ones both skip via `IgnoredAny`), and
/// `serde_path_to_error` tracks where a type error happened.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
    let mut unknown: Option<String> = None;
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        unknown.get_or_insert_with(|| ignored_path(&path));
    };
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut on_ignored));
    match (result, unknown) {
        (Err(err), _) => {
            let path = err.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err(field_error(path, err.into_inner().to_string()))
        }
        (Ok(_), Some(path)) => Err(field_error(path, "unknown field")),
        (Ok(typed), None) => Ok(typed),
    }
}

/// A `serde_ignored` path in the notation of our errors (`a.b[0].c`).
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

// ---------------------------------------------------------------------------
// Semantic checks
// ---------------------------------------------------------------------------

/// Kinds whose names end up in DNS labels (and URLs) and so may not hold dots.
const LABEL_NAMED_KINDS: &[&str] = &["Namespace", "Service", "Microservice"];

fn check_metadata(kind: &ResourceKind, metadata: &ObjectMeta) -> Result<(), FieldError> {
    let name = metadata
        .name
        .as_deref()
        .ok_or_else(|| field_error("metadata.name", "required field is missing"))?;
    let name_check = if LABEL_NAMED_KINDS.contains(&kind.kind) {
        dns1123_label(name)
    } else {
        dns1123_subdomain(name)
    };
    name_check.map_err(|reason| field_error("metadata.name", format!("{name:?} {reason}")))?;
    if let Some(namespace) = &metadata.namespace {
        dns1123_label(namespace).map_err(|reason| {
            field_error("metadata.namespace", format!("{namespace:?} {reason}"))
        })?;
    }
    check_labels(metadata.labels.as_ref(), "metadata.labels")?;
    check_annotations(metadata.annotations.as_ref(), "metadata.annotations")
}

/// The most annotations an object may carry, keys and values together,
/// as Kubernetes' `TotalAnnotationSizeLimitB`.
const ANNOTATIONS_MAX_BYTES: usize = 256 << 10;

/// Annotations as Kubernetes takes them: keys are qualified names (as
/// label keys), and all of them together at most 256 KiB.
fn check_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &str,
) -> Result<(), FieldError> {
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        label_key(&key.to_ascii_lowercase())
            .map_err(|reason| field_error(path, format!("Invalid value: {key:?}: {reason}")))?;
        total += key.len() + value.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        return Err(field_error(
            path,
            format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Result<(), FieldError> {
    for (key, value) in labels.into_iter().flatten() {
        let key_path = join(path, key);
        label_key(key)
            .map_err(|reason| field_error(&key_path, format!("invalid key: {reason}")))?;
        if !value.is_empty() {
            label_name(value).map_err(|reason| {
                field_error(&key_path, format!("invalid value {value:?}: {reason}"))
            })?;
        }
    }
    Ok(())
}

fn check_deployment(deployment: &Deployment) -> Result<(), FieldError> {
    let spec = deployment
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    if let Some(replicas) = spec.replicas {
        check_non_negative(replicas.into(), "spec.replicas")?;
    }
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    check_labels(template_labels, "spec.template.metadata.labels")?;
    check_selector(&spec.selector, template_labels)?;
    let pod_spec = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec.template.spec", "required field is missing"))?;
    check_pod_spec(pod_spec, "spec.template.spec")?;
    match pod_spec.restart_policy.as_deref() {
        None | Some("Always") => Ok(()),
        Some(other) => Err(field_error(
            "spec.template.spec.restartPolicy",
            format!("{other:?} is not allowed in a Deployment; only \"Always\" is"),
        )),
    }
}

/// A DaemonSet: a selector that selects its template, a valid pod spec
/// that restarts Always, a known update strategy.
fn check_daemon_set(daemon_set: &DaemonSet) -> Result<(), FieldError> {
    let spec = daemon_set
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    check_restarting_template(&spec.selector, &spec.template, &[])?;
    let strategy = spec.update_strategy.as_ref();
    check_one_of(
        strategy.and_then(|s| s.type_.as_deref()),
        &["OnDelete", "RollingUpdate"],
        "spec.updateStrategy.type",
    )?;
    let Some(rolling) = strategy.and_then(|s| s.rolling_update.as_ref()) else {
        return Ok(());
    };
    for (value, field) in [
        (&rolling.max_surge, "maxSurge"),
        (&rolling.max_unavailable, "maxUnavailable"),
    ] {
        if let Some(value) = value {
            check_int_or_percent(value, &format!("spec.updateStrategy.rollingUpdate.{field}"))?;
        }
    }
    let zero = |value: &Option<IntOrString>| {
        matches!(value, Some(IntOrString::Int(0)))
            || matches!(value, Some(IntOrString::String(text)) if text == "0%")
    };
    if zero(&rolling.max_surge) && zero(&rolling.max_unavailable) {
        return Err(field_error(
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "may not be 0 when maxSurge is 0",
        ));
    }
    Ok(())
}

/// A pod template of a workload that restarts its pods: selected by
/// `selector`, a valid pod spec that restarts Always.
///
/// A StatefulSet's pods also get a volume per claim template
/// (`claim_volumes`), which their mounts may name.
fn check_restarting_template(
    selector: &LabelSelector,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    claim_volumes: &[&str],
) -> Result<(), FieldError> {
    let template_labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    check_labels(template_labels, "spec.template.metadata.labels")?;
    check_selector(selector, template_labels)?;
    let pod_spec = template
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec.template.spec", "required field is missing"))?;
    let mut with_claims;
    let pod_spec = if claim_volumes.is_empty() {
        pod_spec
    } else {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};
        with_claims = pod_spec.clone();
        let volumes = with_claims.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| !claim_volumes.contains(&v.name.as_str()));
        volumes.extend(claim_volumes.iter().map(|name| Volume {
            name: name.to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: name.to_string(),
                read_only: None,
            }),
            ..Volume::default()
        }));
        &with_claims
    };
    check_pod_spec(pod_spec, "spec.template.spec")?;
    check_one_of(
        pod_spec.restart_policy.as_deref(),
        &["Always"],
        "spec.template.spec.restartPolicy",
    )
}

/// `value`, when set, is one of `supported` (Kubernetes' wording).
fn check_one_of(value: Option<&str>, supported: &[&str], path: &str) -> Result<(), FieldError> {
    match value {
        Some(other) if !supported.contains(&other) => {
            let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
            Err(field_error(
                path,
                format!(
                    "Unsupported value: {other:?}: supported values: {}",
                    supported.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// A StatefulSet: a selector that selects its template, a pod spec that
/// restarts Always, a DNS label as `serviceName`, known policies and
/// strategies, counts not negative, claim templates with unique DNS-label
/// names that ask for storage.
fn check_stateful_set(stateful_set: &StatefulSet) -> Result<(), FieldError> {
    let spec = stateful_set
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    // Each name once: a duplicate template is reported below.
    let mut claim_volumes: Vec<&str> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|claim| claim.metadata.name.as_deref())
        .collect();
    claim_volumes.sort_unstable();
    claim_volumes.dedup();
    check_restarting_template(&spec.selector, &spec.template, &claim_volumes)?;
    for (value, path) in [
        (spec.replicas, "spec.replicas"),
        (spec.min_ready_seconds, "spec.minReadySeconds"),
        (spec.revision_history_limit, "spec.revisionHistoryLimit"),
        (
            spec.ordinals.as_ref().and_then(|o| o.start),
            "spec.ordinals.start",
        ),
    ] {
        if let Some(value) = value {
            check_non_negative(value.into(), path)?;
        }
    }
    if let Some(service) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        dns1123_label(service).map_err(|reason| field_error("spec.serviceName", reason))?;
    }
    check_one_of(
        spec.pod_management_policy.as_deref(),
        &["OrderedReady", "Parallel"],
        "spec.podManagementPolicy",
    )?;
    let strategy = spec.update_strategy.as_ref();
    let strategy_type = strategy.and_then(|s| s.type_.as_deref());
    check_one_of(
        strategy_type,
        &["OnDelete", "RollingUpdate"],
        "spec.updateStrategy.type",
    )?;
    if let Some(rolling) = strategy.and_then(|s| s.rolling_update.as_ref()) {
        if strategy_type == Some("OnDelete") {
            return Err(field_error(
                "spec.updateStrategy.rollingUpdate",
                "only allowed for updateStrategy 'RollingUpdate'",
            ));
        }
        if let Some(partition) = rolling.partition {
            check_non_negative(
                partition.into(),
                "spec.updateStrategy.rollingUpdate.partition",
            )?;
        }
    }
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        for (value, field) in [
            (&policy.when_deleted, "whenDeleted"),
            (&policy.when_scaled, "whenScaled"),
        ] {
            check_one_of(
                value.as_deref(),
                &["Retain", "Delete"],
                &format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
            )?;
        }
    }
    let mut names = HashSet::new();
    for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let path = format!("spec.volumeClaimTemplates[{i}]");
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        dns1123_label(name)
            .map_err(|reason| field_error(format!("{path}.metadata.name"), reason))?;
        if !names.insert(name) {
            return Err(field_error(
                format!("{path}.metadata.name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        let storage = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        if storage.is_none() {
            return Err(field_error(
                format!("{path}.spec.resources[storage]"),
                "Required value",
            ));
        }
    }
    Ok(())
}

fn check_job(job: &Job) -> Result<(), FieldError> {
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    check_job_spec(spec, "spec")
}

/// A CronJob: a schedule (its syntax is checked by the control plane,
/// which parses cron), a known concurrency policy, limits not negative,
/// and a valid Job template.
fn check_cronjob(cronjob: &CronJob) -> Result<(), FieldError> {
    let spec = cronjob
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    if spec.schedule.trim().is_empty() {
        return Err(field_error("spec.schedule", "required value"));
    }
    match spec.concurrency_policy.as_deref() {
        None | Some("Allow" | "Forbid" | "Replace") => {}
        Some(other) => {
            return Err(field_error(
                "spec.concurrencyPolicy",
                format!(
                    "unsupported value {other:?}: supported values: \"Allow\", \"Forbid\", \"Replace\""
                ),
            ));
        }
    }
    for (value, field) in [
        (
            spec.starting_deadline_seconds,
            "spec.startingDeadlineSeconds",
        ),
        (
            spec.successful_jobs_history_limit.map(i64::from),
            "spec.successfulJobsHistoryLimit",
        ),
        (
            spec.failed_jobs_history_limit.map(i64::from),
            "spec.failedJobsHistoryLimit",
        ),
    ] {
        if let Some(value) = value {
            check_non_negative(value, field)?;
        }
    }
    let job_spec = spec
        .job_template
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec.jobTemplate.spec", "required field is missing"))?;
    check_job_spec(job_spec, "spec.jobTemplate.spec")
}

/// A Job's spec (also a CronJob's `spec.jobTemplate.spec`) as Kubernetes
/// checks it: counts not negative, a deadline above zero, a known
/// completion mode (Indexed needs `completions`), a pod template whose
/// restartPolicy is Never or OnFailure (Never with a podFailurePolicy).
fn check_job_spec(spec: &JobSpec, path: &str) -> Result<(), FieldError> {
    let at = |field: &str| join(path, field);
    for (value, field) in [
        (spec.parallelism, "parallelism"),
        (spec.completions, "completions"),
        (spec.backoff_limit, "backoffLimit"),
        (spec.backoff_limit_per_index, "backoffLimitPerIndex"),
        (spec.max_failed_indexes, "maxFailedIndexes"),
        (spec.ttl_seconds_after_finished, "ttlSecondsAfterFinished"),
    ] {
        if let Some(value) = value {
            check_non_negative(value.into(), &at(field))?;
        }
    }
    if let Some(deadline) = spec.active_deadline_seconds
        && deadline <= 0
    {
        return Err(field_error(
            at("activeDeadlineSeconds"),
            format!("invalid value {deadline}: must be greater than 0"),
        ));
    }
    match spec.completion_mode.as_deref() {
        None | Some("NonIndexed") => {}
        Some("Indexed") if spec.completions.is_none() => {
            return Err(field_error(
                at("completions"),
                "required value: when completionMode is Indexed",
            ));
        }
        Some("Indexed") => {}
        Some(other) => {
            return Err(field_error(
                at("completionMode"),
                format!(
                    "unsupported value {other:?}: supported values: \"NonIndexed\", \"Indexed\""
                ),
            ));
        }
    }
    check_job_indexes(spec, path)?;
    let template_path = at("template.spec");
    let pod_spec = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| field_error(&template_path, "required field is missing"))?;
    check_labels(
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()),
        &at("template.metadata.labels"),
    )?;
    check_pod_spec(pod_spec, &template_path)?;
    let restart_path = join(&template_path, "restartPolicy");
    match pod_spec.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => {}
        None => {
            return Err(field_error(
                restart_path,
                "required value: valid values: \"OnFailure\", \"Never\"",
            ));
        }
        Some(other) => {
            return Err(field_error(
                restart_path,
                format!("unsupported value {other:?}: supported values: \"OnFailure\", \"Never\""),
            ));
        }
    }
    if let Some(policy) = &spec.pod_failure_policy {
        if pod_spec.restart_policy.as_deref() != Some("Never") {
            return Err(field_error(
                at("podFailurePolicy"),
                "only allowed when spec.template.spec.restartPolicy is \"Never\"",
            ));
        }
        for (i, rule) in policy.rules.iter().enumerate() {
            let rule_path = format!("{}[{i}]", at("podFailurePolicy.rules"));
            if !matches!(
                rule.action.as_str(),
                "FailJob" | "Ignore" | "Count" | "FailIndex"
            ) {
                return Err(field_error(
                    join(&rule_path, "action"),
                    format!(
                        "unsupported value {:?}: supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                        rule.action
                    ),
                ));
            }
            if let Some(codes) = &rule.on_exit_codes
                && !matches!(codes.operator.as_str(), "In" | "NotIn")
            {
                return Err(field_error(
                    join(&rule_path, "onExitCodes.operator"),
                    format!(
                        "unsupported value {:?}: supported values: \"In\", \"NotIn\"",
                        codes.operator
                    ),
                ));
            }
            if rule.action == "FailIndex" && spec.backoff_limit_per_index.is_none() {
                return Err(field_error(
                    join(&rule_path, "action"),
                    "\"FailIndex\": is only supported when backoffLimitPerIndex is set",
                ));
            }
            if rule.on_exit_codes.is_some() == rule.on_pod_conditions.is_some() {
                return Err(field_error(
                    rule_path,
                    "specifying one of onExitCodes and onPodConditions is required",
                ));
            }
        }
    }
    Ok(())
}

/// What only an Indexed Job may have (`backoffLimitPerIndex`,
/// `maxFailedIndexes`, `successPolicy`), checked as the API server does.
fn check_job_indexes(spec: &JobSpec, path: &str) -> Result<(), FieldError> {
    let at = |field: &str| join(path, field);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(0);
    if spec.backoff_limit_per_index.is_some() && !indexed {
        return Err(field_error(
            at("backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
    if let Some(max) = spec.max_failed_indexes {
        if spec.backoff_limit_per_index.is_none() {
            return Err(field_error(
                at("maxFailedIndexes"),
                "cannot set maxFailedIndexes when backoffLimitPerIndex is not set",
            ));
        }
        if max > completions {
            return Err(field_error(
                at("maxFailedIndexes"),
                format!("invalid value {max}: must be less than or equal to completions"),
            ));
        }
    }
    let Some(policy) = &spec.success_policy else {
        return Ok(());
    };
    if !indexed {
        return Err(field_error(
            at("successPolicy"),
            "requires indexed completion mode",
        ));
    }
    if policy.rules.is_empty() || policy.rules.len() > 20 {
        return Err(field_error(
            at("successPolicy.rules"),
            "must have between 1 and 20 rules",
        ));
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let rule_path = format!("{}[{i}]", at("successPolicy.rules"));
        if rule.succeeded_indexes.is_none() && rule.succeeded_count.is_none() {
            return Err(field_error(
                rule_path,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut listed = None;
        if let Some(text) = &rule.succeeded_indexes {
            let indexes = parse_index_list(text, completions).map_err(|reason| {
                field_error(
                    join(&rule_path, "succeededIndexes"),
                    format!("{text:?}: {reason}"),
                )
            })?;
            listed = Some(indexes);
        }
        if let Some(count) = rule.succeeded_count {
            let most = listed.unwrap_or(u64::from(completions.max(0) as u32));
            if count < 0 || u64::from(count as u32) > most {
                return Err(field_error(
                    join(&rule_path, "succeededCount"),
                    format!(
                        "invalid value {count}: must be between 0 and {most} (the indexes it counts)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// How many indexes a list like `0,2-4` names, each below `completions`
/// and in increasing order, as Kubernetes requires.
fn parse_index_list(text: &str, completions: i32) -> Result<u64, String> {
    let mut count = 0u64;
    let mut next = 0i64;
    for part in text.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let parse = |n: &str| {
            n.parse::<i64>()
                .map_err(|_| format!("{part:?} is not an index or a range of indexes"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first < next || last < first {
            return Err("indexes must be in increasing order, without repeats".into());
        }
        if last >= i64::from(completions) {
            return Err(format!(
                "index {last} must be less than completions ({completions})"
            ));
        }
        count += (last - first + 1) as u64;
        next = last + 1;
    }
    Ok(count)
}

/// A Deployment's selector must be non-empty and select its own template.
fn check_selector(
    selector: &LabelSelector,
    template_labels: Option<&BTreeMap<String, String>>,
) -> Result<(), FieldError> {
    let empty = BTreeMap::new();
    let template_labels = template_labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && expressions.is_empty() {
        return Err(field_error("spec.selector", "must not be empty"));
    }
    check_label_selector(selector, "spec.selector")?;
    for (key, value) in match_labels.into_iter().flatten() {
        if template_labels.get(key) != Some(value) {
            return Err(field_error(
                "spec.selector.matchLabels",
                format!(
                    "{key}={value} does not match the template labels (spec.template.metadata.labels)"
                ),
            ));
        }
    }
    for (i, requirement) in expressions.iter().enumerate() {
        let label = template_labels.get(&requirement.key);
        let values = requirement.values.as_deref().unwrap_or_default();
        let selected = match requirement.operator.as_str() {
            "In" => label.is_some_and(|l| values.contains(l)),
            "NotIn" => label.is_none_or(|l| !values.contains(l)),
            "Exists" => label.is_some(),
            // DoesNotExist: check_label_selector allowed no other operator.
            _ => label.is_none(),
        };
        if !selected {
            return Err(field_error(
                format!("spec.selector.matchExpressions[{i}]"),
                "does not match the template labels (spec.template.metadata.labels)",
            ));
        }
    }
    Ok(())
}

/// A label selector's syntax, as Kubernetes checks it: valid label keys and
/// values, known operators, values exactly where the operator takes them.
fn check_label_selector(selector: &LabelSelector, path: &str) -> Result<(), FieldError> {
    check_labels(selector.match_labels.as_ref(), &join(path, "matchLabels"))?;
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    for (i, requirement) in expressions.iter().enumerate() {
        let path = format!("{}[{i}]", join(path, "matchExpressions"));
        label_key(&requirement.key)
            .map_err(|reason| field_error(join(&path, "key"), format!("invalid key: {reason}")))?;
        let values = requirement.values.as_deref().unwrap_or_default();
        let takes_values = match requirement.operator.as_str() {
            "In" | "NotIn" => true,
            "Exists" | "DoesNotExist" => false,
            other => {
                return Err(field_error(
                    join(&path, "operator"),
                    format!(
                        "unknown operator {other:?}; expected In, NotIn, Exists or DoesNotExist"
                    ),
                ));
            }
        };
        match (takes_values, values.is_empty()) {
            (true, true) => {
                return Err(field_error(
                    join(&path, "values"),
                    format!(
                        "must be specified when operator is {}",
                        requirement.operator
                    ),
                ));
            }
            (false, false) => {
                return Err(field_error(
                    join(&path, "values"),
                    format!(
                        "may not be specified when operator is {}",
                        requirement.operator
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The largest value of a user-defined PriorityClass, as in Kubernetes;
/// higher values are for the system's own classes.
const HIGHEST_USER_PRIORITY: i32 = 1_000_000_000;

/// The preemption policies Kubernetes defines.
const PREEMPTION_POLICIES: &[&str] = &["PreemptLowerPriority", "Never"];

fn check_preemption_policy(policy: Option<&str>, path: &str) -> Result<(), FieldError> {
    match policy {
        Some(policy) if !PREEMPTION_POLICIES.contains(&policy) => Err(field_error(
            path,
            format!(
                "{policy:?} is not one of {}",
                PREEMPTION_POLICIES.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

fn check_priority_class(class: &PriorityClass) -> Result<(), FieldError> {
    let name = class.metadata.name.as_deref().unwrap_or_default();
    if name.starts_with("system-") {
        return Err(field_error(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    }
    if class.value > HIGHEST_USER_PRIORITY {
        return Err(field_error(
            "value",
            format!(
                "must be no greater than {HIGHEST_USER_PRIORITY}, found {}",
                class.value
            ),
        ));
    }
    check_preemption_policy(class.preemption_policy.as_deref(), "preemptionPolicy")
}

/// `minAvailable`/`maxUnavailable`: a non-negative integer, or a percentage
/// from 0% to 100%.
fn check_int_or_percent(value: &IntOrString, path: &str) -> Result<(), FieldError> {
    match value {
        IntOrString::Int(number) => check_non_negative((*number).into(), path),
        IntOrString::String(text) => match text.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(percent)) if percent <= 100 => Ok(()),
            Some(Ok(_)) => Err(field_error(
                path,
                format!("{text:?} must not be greater than 100%"),
            )),
            _ => Err(field_error(
                path,
                format!("{text:?} must be an integer or a percentage (e.g. \"50%\")"),
            )),
        },
    }
}

fn check_disruption_budget(budget: &PodDisruptionBudget) -> Result<(), FieldError> {
    let Some(spec) = &budget.spec else {
        return Ok(());
    };
    if let (Some(_), Some(_)) = (&spec.min_available, &spec.max_unavailable) {
        return Err(field_error(
            "spec.minAvailable",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(min_available) = &spec.min_available {
        check_int_or_percent(min_available, "spec.minAvailable")?;
    }
    if let Some(max_unavailable) = &spec.max_unavailable {
        check_int_or_percent(max_unavailable, "spec.maxUnavailable")?;
    }
    match &spec.selector {
        Some(selector) => check_label_selector(selector, "spec.selector"),
        None => Ok(()),
    }
}

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];

fn check_restart_policy(policy: Option<&str>, path: &str) -> Result<(), FieldError> {
    match policy {
        Some(policy) if !RESTART_POLICIES.contains(&policy) => Err(field_error(
            path,
            format!("{policy:?} is not one of Always, OnFailure, Never"),
        )),
        _ => Ok(()),
    }
}

fn check_pod_spec(spec: &PodSpec, path: &str) -> Result<(), FieldError> {
    if spec.containers.is_empty() {
        return Err(field_error(
            join(path, "containers"),
            "at least one container is required",
        ));
    }
    let mut names = HashSet::new();
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let all = [
        ("containers", &spec.containers[..]),
        ("initContainers", init_containers),
    ];
    for (field, containers) in all {
        for (i, container) in containers.iter().enumerate() {
            let container_path = format!("{}[{i}]", join(path, field));
            let name_path = join(&container_path, "name");
            dns1123_label(&container.name).map_err(|reason| {
                field_error(&name_path, format!("{:?} {reason}", container.name))
            })?;
            if !names.insert(container.name.as_str()) {
                return Err(field_error(
                    name_path,
                    format!("duplicate container name {:?}", container.name),
                ));
            }
            check_process(&ProcessFields {
                path: &container_path,
                image: container.image.as_deref(),
                command: container.command.as_deref().unwrap_or_default(),
                ports: container.ports.as_deref().unwrap_or_default(),
                resources: container.resources.as_ref(),
                probes: [
                    ("livenessProbe", container.liveness_probe.as_ref()),
                    ("readinessProbe", container.readiness_probe.as_ref()),
                    ("startupProbe", container.startup_probe.as_ref()),
                ],
                user: container
                    .security_context
                    .as_ref()
                    .and_then(|s| s.run_as_user)
                    .map(|uid| ("securityContext.runAsUser", uid)),
            })?;
            check_container_restart_policy(
                container.restart_policy.as_deref(),
                field == "initContainers",
                &join(&container_path, "restartPolicy"),
            )?;
            check_startup_probe(
                container.startup_probe.as_ref(),
                field == "initContainers" && container.restart_policy.is_none(),
                &join(&container_path, "startupProbe"),
            )?;
            if let Some(lifecycle) = &container.lifecycle {
                let path = join(&container_path, "lifecycle");
                for (hook, handler) in [
                    ("postStart", lifecycle.post_start.as_ref()),
                    ("preStop", lifecycle.pre_stop.as_ref()),
                ] {
                    if let Some(handler) = handler {
                        check_lifecycle_handler(handler, &join(&path, hook))?;
                    }
                }
            }
        }
    }
    if let Some(uid) = spec.security_context.as_ref().and_then(|s| s.run_as_user) {
        check_non_negative(uid, &join(path, "securityContext.runAsUser"))?;
    }
    check_labels(spec.node_selector.as_ref(), &join(path, "nodeSelector"))?;
    check_priority_class_name(
        spec.priority_class_name.as_deref(),
        &join(path, "priorityClassName"),
    )?;
    check_preemption_policy(
        spec.preemption_policy.as_deref(),
        &join(path, "preemptionPolicy"),
    )?;
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(field_error(
            join(path, "ephemeralContainers"),
            "Forbidden: cannot be set here: kubectl debug adds them to a running pod through its ephemeralcontainers subresource",
        ));
    }
    check_pod_dns_and_pulls(spec, path)?;
    storage::check_pod_volumes(spec, path)?;
    crate::mounts::check_pod_mounts(spec)
        .map_err(|(field, why)| field_error(join(path, &field), why))?;
    check_restart_policy(spec.restart_policy.as_deref(), &join(path, "restartPolicy"))
}

/// What the kubelet reads for a pod's `/etc` files and image pulls, checked
/// as the API server checks it, and refused when the driver the pod names
/// cannot honour it ([`crate::pod_etc::unsupported_by_driver`]).
fn check_pod_dns_and_pulls(spec: &PodSpec, path: &str) -> Result<(), FieldError> {
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            dns1123_label(value)
                .map_err(|reason| field_error(join(path, field), format!("{value:?} {reason}")))?;
        }
    }
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if !["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"].contains(&policy) {
        return Err(field_error(
            join(path, "dnsPolicy"),
            format!(
                "{policy:?} is not one of ClusterFirst, ClusterFirstWithHostNet, Default, None"
            ),
        ));
    }
    let config = spec.dns_config.as_ref();
    let nameservers = config
        .and_then(|c| c.nameservers.as_deref())
        .unwrap_or_default();
    if policy == "None" && nameservers.is_empty() {
        return Err(field_error(
            join(path, "dnsConfig.nameservers"),
            "must provide at least one DNS nameserver when dnsPolicy is None",
        ));
    }
    if nameservers.len() > crate::pod_etc::MAX_NAMESERVERS {
        return Err(field_error(
            join(path, "dnsConfig.nameservers"),
            format!(
                "must not have more than {} nameservers",
                crate::pod_etc::MAX_NAMESERVERS
            ),
        ));
    }
    for (i, nameserver) in nameservers.iter().enumerate() {
        if nameserver.parse::<std::net::IpAddr>().is_err() {
            return Err(field_error(
                format!("{}[{i}]", join(path, "dnsConfig.nameservers")),
                format!("{nameserver:?} must be a valid IP address"),
            ));
        }
    }
    let searches = config
        .and_then(|c| c.searches.as_deref())
        .unwrap_or_default();
    if searches.len() > crate::pod_etc::MAX_SEARCHES {
        return Err(field_error(
            join(path, "dnsConfig.searches"),
            format!(
                "must not have more than {} search paths",
                crate::pod_etc::MAX_SEARCHES
            ),
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        dns1123_subdomain(search.strip_suffix('.').unwrap_or(search)).map_err(|reason| {
            field_error(
                format!("{}[{i}]", join(path, "dnsConfig.searches")),
                format!("{search:?} {reason}"),
            )
        })?;
    }
    for (i, option) in config
        .and_then(|c| c.options.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if option.name.as_deref().is_none_or(str::is_empty) {
            return Err(field_error(
                format!("{}[{i}].name", join(path, "dnsConfig.options")),
                "must not be empty",
            ));
        }
    }
    for (i, alias) in spec
        .host_aliases
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let alias_path = format!("{}[{i}]", join(path, "hostAliases"));
        if alias.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(field_error(
                join(&alias_path, "ip"),
                format!("{:?} must be a valid IP address", alias.ip),
            ));
        }
        for (j, hostname) in alias
            .hostnames
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            dns1123_subdomain(hostname).map_err(|reason| {
                field_error(
                    format!("{}[{j}]", join(&alias_path, "hostnames")),
                    format!("{hostname:?} {reason}"),
                )
            })?;
        }
    }
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    for (field, containers) in [
        ("containers", &spec.containers[..]),
        ("initContainers", init_containers),
    ] {
        for (i, container) in containers.iter().enumerate() {
            crate::PullPolicy::of(container.image_pull_policy.as_deref(), None).map_err(
                |reason| {
                    field_error(
                        format!("{}[{i}].imagePullPolicy", join(path, field)),
                        reason,
                    )
                },
            )?;
            if container.tty == Some(true) {
                return Err(field_error(
                    format!("{}[{i}].tty", join(path, field)),
                    "is not supported: no driver gives a container's main process a terminal; attach to its stdin without one (stdin: true, kubectl run -i)",
                ));
            }
        }
    }
    if let Some(driver) = spec.runtime_class_name.as_deref() {
        let second = if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            Some("initContainers[0]")
        } else {
            (spec.containers.len() > 1).then_some("containers[1]")
        };
        if let Some(second) = second
            && crate::ONE_CONTAINER_DRIVERS.contains(&driver)
        {
            return Err(field_error(
                join(path, second),
                crate::one_container_per_pod(driver),
            ));
        }
        if let Some((field, why)) = crate::pod_etc::unsupported_by_driver(driver, spec) {
            return Err(field_error(join(path, field), why));
        }
        if let Some((field, why)) = crate::mounts::unsupported_volumes(driver, spec) {
            return Err(field_error(join(path, &field), why));
        }
    }
    Ok(())
}

/// A container's own `restartPolicy`: only `Always`, and only on an init
/// container (which makes it a sidecar), as Kubernetes allows.
fn check_container_restart_policy(
    policy: Option<&str>,
    init: bool,
    path: &str,
) -> Result<(), FieldError> {
    match policy {
        None | Some("Always") if init => Ok(()),
        None => Ok(()),
        Some(policy) if init => Err(field_error(
            path,
            format!("{policy:?}: only \"Always\" is allowed (a sidecar)"),
        )),
        Some(_) => Err(field_error(
            path,
            "may be set only on an init container (spec.initContainers)",
        )),
    }
}

/// A `startupProbe`, as Kubernetes allows it: not on an init container that
/// is not a sidecar (it runs to completion), and `successThreshold` 1.
fn check_startup_probe(
    probe: Option<&Probe>,
    plain_init: bool,
    path: &str,
) -> Result<(), FieldError> {
    let Some(probe) = probe else {
        return Ok(());
    };
    if plain_init {
        return Err(field_error(
            path,
            "may not be set for init containers without restartPolicy=Always",
        ));
    }
    match probe.success_threshold {
        Some(threshold) if threshold != 1 => Err(field_error(
            join(path, "successThreshold"),
            format!("{threshold}: must be 1"),
        )),
        _ => Ok(()),
    }
}

/// A PriorityClass name an instance refers to (empty means none).
fn check_priority_class_name(name: Option<&str>, path: &str) -> Result<(), FieldError> {
    match name.filter(|name| !name.is_empty()) {
        Some(name) => dns1123_subdomain(name)
            .map_err(|reason| field_error(path, format!("{name:?} {reason}"))),
        None => Ok(()),
    }
}

fn check_microservice(ms: &Microservice) -> Result<(), FieldError> {
    let spec = &ms.spec;
    check_non_negative(spec.replicas.into(), "spec.replicas")?;
    check_process(&ProcessFields {
        path: "spec",
        image: spec.image.as_deref(),
        command: &spec.command,
        ports: &spec.ports,
        resources: spec.resources.as_ref(),
        probes: [
            ("livenessProbe", spec.liveness_probe.as_ref()),
            ("readinessProbe", spec.readiness_probe.as_ref()),
            ("startupProbe", None),
        ],
        user: spec.user.map(|uid| ("user", uid)),
    })?;
    check_labels(Some(&spec.node_selector), "spec.nodeSelector")?;
    check_priority_class_name(
        spec.priority_class_name.as_deref(),
        "spec.priorityClassName",
    )?;
    check_restart_policy(Some(&spec.restart_policy), "spec.restartPolicy")?;
    for (i, mount) in spec.volume_mounts.iter().enumerate() {
        if !spec.volumes.iter().any(|v| v.name == mount.name) {
            return Err(field_error(
                format!("spec.volumeMounts[{i}].name"),
                format!("Not found: {:?}", mount.name),
            ));
        }
    }
    if let Some(vpc) = &spec.vpc {
        dns1123_label(vpc)
            .map_err(|reason| field_error("spec.vpc", format!("{vpc:?} {reason}")))?;
    }
    match &spec.driver {
        Some(driver) => dns1123_label(driver)
            .map_err(|reason| field_error("spec.driver", format!("{driver:?} {reason}"))),
        None => Ok(()),
    }
}

/// What a Pod container and a Microservice have in common: one process to
/// run. `path` is where these fields live; the other paths are relative to it.
struct ProcessFields<'a> {
    path: &'a str,
    image: Option<&'a str>,
    command: &'a [String],
    ports: &'a [ContainerPort],
    resources: Option<&'a ResourceRequirements>,
    probes: [(&'static str, Option<&'a Probe>); 3],
    /// The uid to run as, with its field name.
    user: Option<(&'static str, i64)>,
}

fn check_process(fields: &ProcessFields<'_>) -> Result<(), FieldError> {
    let path = fields.path;
    if fields.image.is_none_or(str::is_empty) && fields.command.is_empty() {
        return Err(field_error(path, "either image or command is required"));
    }
    let mut port_names = HashSet::new();
    for (i, port) in fields.ports.iter().enumerate() {
        let port_path = format!("{}[{i}]", join(path, "ports"));
        check_port_number(port.container_port, &join(&port_path, "containerPort"))?;
        if let Some(host_port) = port.host_port {
            check_port_number(host_port, &join(&port_path, "hostPort"))?;
        }
        check_protocol(port.protocol.as_deref(), &port_path)?;
        if let Some(name) = &port.name {
            let name_path = join(&port_path, "name");
            port_name(name).map_err(|reason| field_error(&name_path, reason))?;
            if !port_names.insert(name.as_str()) {
                return Err(field_error(
                    name_path,
                    format!("duplicate port name {name:?}"),
                ));
            }
        }
    }
    check_resources(fields.resources, &join(path, "resources"))?;
    for (field, probe) in fields.probes {
        if let Some(probe) = probe {
            check_probe(probe, &join(path, field))?;
        }
    }
    if let Some((field, uid)) = fields.user {
        check_non_negative(uid, &join(path, field))?;
    }
    Ok(())
}

/// Every quantity parses, and no request exceeds its limit.
fn check_resources(resources: Option<&ResourceRequirements>, path: &str) -> Result<(), FieldError> {
    let Some(resources) = resources else {
        return Ok(());
    };
    let requests = parse_quantities(resources.requests.as_ref(), &join(path, "requests"))?;
    let limits = parse_quantities(resources.limits.as_ref(), &join(path, "limits"))?;
    for (resource, request) in &requests {
        if let Some(limit) = limits.get(resource).filter(|limit| request > limit) {
            return Err(field_error(
                format!("{path}.requests.{resource}"),
                format!(
                    "must not exceed the limit ({})",
                    resources_limit_text(resources, resource, *limit)
                ),
            ));
        }
    }
    Ok(())
}

/// Parses every quantity of a `requests` or `limits` map at `path`.
fn parse_quantities<'a>(
    quantities: Option<&'a BTreeMap<String, Quantity>>,
    path: &str,
) -> Result<BTreeMap<&'a str, u64>, FieldError> {
    let mut parsed = BTreeMap::new();
    for (resource, quantity) in quantities.into_iter().flatten() {
        // CPU is in cores; every other resource (memory, storage, devices) is
        // a count of bytes or units.
        let parse = if resource == "cpu" {
            parse_cpu_millis
        } else {
            parse_memory_bytes
        };
        let amount =
            parse(&quantity.0).map_err(|err| field_error(join(path, resource), err.to_string()))?;
        parsed.insert(resource.as_str(), amount);
    }
    Ok(parsed)
}

/// The limit as the user wrote it, for messages.
fn resources_limit_text(resources: &ResourceRequirements, resource: &str, parsed: u64) -> String {
    resources
        .limits
        .as_ref()
        .and_then(|limits| limits.get(resource))
        .map_or_else(|| parsed.to_string(), |quantity| quantity.0.clone())
}

fn check_probe(probe: &Probe, path: &str) -> Result<(), FieldError> {
    exactly_one_handler(
        path,
        &[
            ("exec", probe.exec.is_some()),
            ("httpGet", probe.http_get.is_some()),
            ("tcpSocket", probe.tcp_socket.is_some()),
            ("grpc", probe.grpc.is_some()),
        ],
    )?;
    check_exec_and_http_get(probe.exec.as_ref(), probe.http_get.as_ref(), path)?;
    if let Some(tcp) = &probe.tcp_socket {
        check_port_ref(&tcp.port, &join(path, "tcpSocket.port"))?;
    }
    if let Some(grpc) = &probe.grpc {
        check_port_number(grpc.port, &join(path, "grpc.port"))?;
    }
    let durations = [
        (
            "initialDelaySeconds",
            probe.initial_delay_seconds.map(i64::from),
        ),
        ("periodSeconds", probe.period_seconds.map(i64::from)),
        ("timeoutSeconds", probe.timeout_seconds.map(i64::from)),
        ("successThreshold", probe.success_threshold.map(i64::from)),
        ("failureThreshold", probe.failure_threshold.map(i64::from)),
        (
            "terminationGracePeriodSeconds",
            probe.termination_grace_period_seconds,
        ),
    ];
    for (field, value) in durations {
        if let Some(value) = value {
            check_non_negative(value, &join(path, field))?;
        }
    }
    Ok(())
}

/// An exec handler has a command; an httpGet handler a port.
fn check_exec_and_http_get(
    exec: Option<&ExecAction>,
    http_get: Option<&HTTPGetAction>,
    path: &str,
) -> Result<(), FieldError> {
    if let Some(exec) = exec
        && exec.command.as_deref().unwrap_or_default().is_empty()
    {
        return Err(field_error(join(path, "exec.command"), "must not be empty"));
    }
    if let Some(http) = http_get {
        check_port_ref(&http.port, &join(path, "httpGet.port"))?;
    }
    Ok(())
}

/// Exactly one of the `handlers` (name, set) is set.
fn exactly_one_handler(path: &str, handlers: &[(&str, bool)]) -> Result<(), FieldError> {
    let set: Vec<&str> = handlers
        .iter()
        .filter_map(|&(name, set)| set.then_some(name))
        .collect();
    if set.len() == 1 {
        return Ok(());
    }
    let names: Vec<&str> = handlers.iter().map(|(name, _)| *name).collect();
    let (last, first) = names.split_last().unwrap_or((&"", &[]));
    let found = if set.is_empty() {
        "none".to_string()
    } else {
        set.join(", ")
    };
    Err(field_error(
        path,
        format!(
            "exactly one of {} or {last} is required, found {found}",
            first.join(", ")
        ),
    ))
}

/// A `postStart` or `preStop` handler: exactly one of exec, httpGet or
/// sleep. tcpSocket (deprecated, and never run by the kubelet) is refused
/// naming it.
fn check_lifecycle_handler(handler: &LifecycleHandler, path: &str) -> Result<(), FieldError> {
    exactly_one_handler(
        path,
        &[
            ("exec", handler.exec.is_some()),
            ("httpGet", handler.http_get.is_some()),
            ("sleep", handler.sleep.is_some()),
            ("tcpSocket", handler.tcp_socket.is_some()),
        ],
    )?;
    if handler.tcp_socket.is_some() {
        return Err(field_error(
            join(path, "tcpSocket"),
            "is deprecated and not supported; use exec, httpGet or sleep",
        ));
    }
    check_exec_and_http_get(handler.exec.as_ref(), handler.http_get.as_ref(), path)?;
    if let Some(sleep) = &handler.sleep {
        check_non_negative(sleep.seconds, &join(path, "sleep.seconds"))?;
    }
    Ok(())
}

fn check_service_spec(spec: &ServiceSpec) -> Result<(), FieldError> {
    const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if let Some(type_) = spec.type_.as_deref().filter(|t| !TYPES.contains(t)) {
        return Err(field_error(
            "spec.type",
            format!("{type_:?} is not one of {}", TYPES.join(", ")),
        ));
    }
    check_service_policies(spec)?;
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        check_port_number(port.port, &join(&path, "port"))?;
        if let Some(target) = &port.target_port {
            check_port_ref(target, &join(&path, "targetPort"))?;
        }
        if let Some(node_port) = port.node_port {
            check_port_number(node_port, &join(&path, "nodePort"))?;
        }
        check_protocol(port.protocol.as_deref(), &path)?;
        let name = port.name.as_deref().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            return Err(field_error(
                join(&path, "name"),
                "required when a service has more than one port",
            ));
        }
        if !name.is_empty() && !names.insert(name) {
            return Err(field_error(
                join(&path, "name"),
                format!("duplicate port name {name:?}"),
            ));
        }
    }
    Ok(())
}

/// A Service's session affinity and traffic policies, as Kubernetes
/// validates them: known values, a ClientIP timeout within (0, 86400], and
/// an `externalName` for an ExternalName Service. (A policy the type does
/// not use is dropped when the Service is written, as Kubernetes drops the
/// fields of a former type.)
fn check_service_policies(spec: &ServiceSpec) -> Result<(), FieldError> {
    let one_of = |path: &str, value: Option<&str>, allowed: &[&str]| match value {
        Some(value) if !allowed.contains(&value) => Err(field_error(
            path,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    };
    one_of(
        "spec.sessionAffinity",
        spec.session_affinity.as_deref(),
        &["None", "ClientIP"],
    )?;
    one_of(
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
    )?;
    one_of(
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
        &["Cluster", "Local"],
    )?;
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if let Some(timeout) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|config| config.client_ip.as_ref())
        .and_then(|client_ip| client_ip.timeout_seconds)
        && !(1..=86400).contains(&timeout)
    {
        return Err(field_error(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            format!("must be greater than 0 and less than 86400, found {timeout}"),
        ));
    }
    if type_ == "ExternalName" && spec.external_name.as_deref().is_none_or(str::is_empty) {
        return Err(field_error(
            "spec.externalName",
            "required field is missing",
        ));
    }
    Ok(())
}

/// An EndpointSlice as Kubernetes validates one: a known `addressType`,
/// at most 1000 endpoints of 1 to 100 addresses each, valid port numbers
/// and protocols, at most 20000 ports.
fn check_endpoint_slice(slice: &EndpointSlice) -> Result<(), FieldError> {
    const TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
    if !TYPES.contains(&slice.address_type.as_str()) {
        return Err(field_error(
            "addressType",
            format!(
                "{:?} is not one of {}",
                slice.address_type,
                TYPES.join(", ")
            ),
        ));
    }
    if slice.endpoints.len() > 1000 {
        return Err(field_error(
            "endpoints",
            format!(
                "must have at most 1000 items, found {}",
                slice.endpoints.len()
            ),
        ));
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        if !(1..=100).contains(&endpoint.addresses.len()) {
            return Err(field_error(
                format!("endpoints[{i}].addresses"),
                format!(
                    "must have 1 to 100 items, found {}",
                    endpoint.addresses.len()
                ),
            ));
        }
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > 20000 {
        return Err(field_error(
            "ports",
            format!("must have at most 20000 items, found {}", ports.len()),
        ));
    }
    for (i, port) in ports.iter().enumerate() {
        let path = format!("ports[{i}]");
        if let Some(number) = port.port {
            check_port_number(number, &join(&path, "port"))?;
        }
        check_protocol(port.protocol.as_deref(), &path)?;
    }
    Ok(())
}

/// ConfigMap and Secret keys become file names: `[-._a-zA-Z0-9]+`.
fn check_data_keys<V>(data: Option<&BTreeMap<String, V>>, path: &str) -> Result<(), FieldError> {
    for key in data.into_iter().flat_map(BTreeMap::keys) {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(field_error(
                join(path, key),
                "invalid key: must consist of alphanumerics, '-', '_' or '.'",
            ));
        }
    }
    Ok(())
}

fn check_port_number(port: i32, path: &str) -> Result<(), FieldError> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(field_error(
            path,
            format!("must be between 1 and 65535, found {port}"),
        ))
    }
}

/// A port given as a number or as the name of a container port.
fn check_port_ref(port: &IntOrString, path: &str) -> Result<(), FieldError> {
    match port {
        IntOrString::Int(number) => check_port_number(*number, path),
        IntOrString::String(name) => port_name(name).map_err(|reason| field_error(path, reason)),
    }
}

fn check_protocol(protocol: Option<&str>, port_path: &str) -> Result<(), FieldError> {
    match protocol {
        None | Some("TCP" | "UDP" | "SCTP") => Ok(()),
        Some(other) => Err(field_error(
            join(port_path, "protocol"),
            format!("{other:?} is not one of TCP, UDP, SCTP"),
        )),
    }
}

/// A HorizontalPodAutoscaler as Kubernetes validates one: a target with a
/// kind and name, 1 <= minReplicas <= maxReplicas, resource metrics (cpu,
/// memory) with a positive Utilization or AverageValue target, and
/// behavior rules within Kubernetes' bounds. Other metric types need
/// metrics APIs c4m does not serve, and are refused naming the field.
fn check_autoscaler(autoscaler: &HorizontalPodAutoscaler) -> Result<(), FieldError> {
    let spec = autoscaler
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "required field is missing"))?;
    let target = &spec.scale_target_ref;
    if target.kind.is_empty() {
        return Err(field_error("spec.scaleTargetRef.kind", "required value"));
    }
    if target.name.is_empty() {
        return Err(field_error("spec.scaleTargetRef.name", "required value"));
    }
    let min = spec.min_replicas.unwrap_or(1);
    if min < 1 {
        return Err(field_error(
            "spec.minReplicas",
            format!("must be greater than or equal to 1, found {min}"),
        ));
    }
    if spec.max_replicas < 1 {
        return Err(field_error(
            "spec.maxReplicas",
            format!("must be greater than 0, found {}", spec.max_replicas),
        ));
    }
    if spec.max_replicas < min {
        return Err(field_error(
            "spec.maxReplicas",
            format!(
                "must be greater than or equal to `minReplicas` ({min}), found {}",
                spec.max_replicas
            ),
        ));
    }
    for (i, metric) in spec.metrics.iter().flatten().enumerate() {
        check_metric(metric, &format!("spec.metrics[{i}]"))?;
    }
    if let Some(behavior) = &spec.behavior {
        for (rules, path) in [
            (&behavior.scale_up, "spec.behavior.scaleUp"),
            (&behavior.scale_down, "spec.behavior.scaleDown"),
        ] {
            if let Some(rules) = rules {
                check_scaling_rules(rules, path)?;
            }
        }
    }
    Ok(())
}

fn check_metric(metric: &MetricSpec, path: &str) -> Result<(), FieldError> {
    let (source, name, target) = match metric.type_.as_str() {
        "Resource" => {
            let source = metric.resource.as_ref().ok_or_else(|| {
                field_error(join(path, "resource"), "must be set for type Resource")
            })?;
            ("resource", &source.name, &source.target)
        }
        "ContainerResource" => {
            let source = metric.container_resource.as_ref().ok_or_else(|| {
                field_error(
                    join(path, "containerResource"),
                    "must be set for type ContainerResource",
                )
            })?;
            if source.container.is_empty() {
                return Err(field_error(
                    join(path, "containerResource.container"),
                    "required value",
                ));
            }
            ("containerResource", &source.name, &source.target)
        }
        "Pods" | "Object" | "External" => {
            return Err(field_error(
                join(path, "type"),
                format!(
                    "{:?} metrics are not supported: c4m serves resource metrics (metrics.k8s.io) only; use Resource or ContainerResource",
                    metric.type_
                ),
            ));
        }
        other => {
            return Err(field_error(
                join(path, "type"),
                format!(
                    "unsupported value {other:?}: supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\""
                ),
            ));
        }
    };
    let source_path = join(path, source);
    if name != "cpu" && name != "memory" {
        return Err(field_error(
            join(&source_path, "name"),
            format!("unsupported value {name:?}: supported values: \"cpu\", \"memory\""),
        ));
    }
    check_metric_target(target, &join(&source_path, "target"))
}

fn check_metric_target(target: &MetricTarget, path: &str) -> Result<(), FieldError> {
    match target.type_.as_str() {
        "Utilization" => match target.average_utilization {
            Some(percent) if percent > 0 => Ok(()),
            Some(percent) => Err(field_error(
                join(path, "averageUtilization"),
                format!("must be greater than 0, found {percent}"),
            )),
            None => Err(field_error(
                join(path, "averageUtilization"),
                "must be set for type Utilization",
            )),
        },
        "AverageValue" => {
            let value = target.average_value.as_ref().ok_or_else(|| {
                field_error(
                    join(path, "averageValue"),
                    "must be set for type AverageValue",
                )
            })?;
            // Kubernetes' quantity syntax: a CPU (`500m`) or memory (`64Mi`) form.
            let positive = parse_cpu_millis(&value.0).is_ok_and(|m| m > 0)
                || parse_memory_bytes(&value.0).is_ok_and(|b| b > 0);
            match positive {
                true => Ok(()),
                _ => Err(field_error(
                    join(path, "averageValue"),
                    format!("must be a positive quantity, found {:?}", value.0),
                )),
            }
        }
        other => Err(field_error(
            join(path, "type"),
            format!(
                "unsupported value {other:?}: a resource metric's target must be \"Utilization\" or \"AverageValue\""
            ),
        )),
    }
}

fn check_scaling_rules(rules: &HPAScalingRules, path: &str) -> Result<(), FieldError> {
    if let Some(window) = rules.stabilization_window_seconds
        && !(0..=3600).contains(&window)
    {
        return Err(field_error(
            join(path, "stabilizationWindowSeconds"),
            format!("must be between 0 and 3600 (one hour), found {window}"),
        ));
    }
    if let Some(select) = rules.select_policy.as_deref()
        && !matches!(select, "Max" | "Min" | "Disabled")
    {
        return Err(field_error(
            join(path, "selectPolicy"),
            format!(
                "unsupported value {select:?}: supported values: \"Disabled\", \"Max\", \"Min\""
            ),
        ));
    }
    for (i, policy) in rules.policies.iter().flatten().enumerate() {
        let policy_path = format!("{path}.policies[{i}]");
        if !matches!(policy.type_.as_str(), "Pods" | "Percent") {
            return Err(field_error(
                join(&policy_path, "type"),
                format!(
                    "unsupported value {:?}: supported values: \"Percent\", \"Pods\"",
                    policy.type_
                ),
            ));
        }
        if policy.value <= 0 {
            return Err(field_error(
                join(&policy_path, "value"),
                format!("must be greater than 0, found {}", policy.value),
            ));
        }
        if !(1..=1800).contains(&policy.period_seconds) {
            return Err(field_error(
                join(&policy_path, "periodSeconds"),
                format!(
                    "must be between 1 and 1800 (30 minutes), found {}",
                    policy.period_seconds
                ),
            ));
        }
    }
    Ok(())
}

fn check_non_negative(value: i64, path: &str) -> Result<(), FieldError> {
    if value < 0 {
        Err(field_error(
            path,
            format!("must not be negative, found {value}"),
        ))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Name syntax (Kubernetes' validation rules)
// ---------------------------------------------------------------------------

/// Lowercase alphanumerics and '-', starting and ending alphanumeric.
fn is_label_like(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(|c| alnum(c) || c == '-')
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and
/// ending alphanumeric.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be at most 63 characters".to_string());
    }
    if !is_label_like(s) {
        return Err(
            "must consist of lowercase alphanumerics or '-', and start and end with an alphanumeric"
                .to_string(),
        );
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels.
fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be at most 253 characters".to_string());
    }
    if !s.split('.').all(is_label_like) {
        return Err("must consist of lowercase alphanumerics, '-' or '.', and start and end with an alphanumeric".to_string());
    }
    Ok(())
}

/// `spec.externalName` of an ExternalName Service: required, a DNS-1123
/// subdomain with an optional trailing dot (the CNAME cluster DNS answers).
fn check_external_name(spec: &ServiceSpec) -> Result<(), FieldError> {
    if spec.type_.as_deref() != Some("ExternalName") {
        return Ok(());
    }
    let name = spec.external_name.as_deref().unwrap_or_default();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(field_error(
            "spec.externalName",
            "required for a Service of type ExternalName",
        ));
    }
    dns1123_subdomain(name).map_err(|reason| field_error("spec.externalName", reason))
}

/// A label key: `[prefix/]name`, the prefix a DNS-1123 subdomain.
fn label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|reason| format!("prefix {prefix:?} {reason}"))?;
            name
        }
        None => key,
    };
    label_name(name).map_err(|reason| format!("name {name:?} {reason}"))
}

/// A label name or value: at most 63 alphanumerics, '-', '_' or '.',
/// starting and ending alphanumeric.
fn label_name(s: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if s.len() > 63 {
        return Err("must be at most 63 characters".to_string());
    }
    if !(s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.')))
    {
        return Err(
            "must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
                .to_string(),
        );
    }
    Ok(())
}

/// A port name (IANA service name): at most 15 lowercase alphanumerics or
/// '-', with at least one letter.
fn port_name(name: &str) -> Result<(), String> {
    if name.len() <= 15 && is_label_like(name) && name.contains(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid port name (at most 15 lowercase alphanumerics or '-', with a letter)"
        ))
    }
}

// ---------------------------------------------------------------------------
// Fields c4m accepts but does not honour
// ---------------------------------------------------------------------------

/// Where a row of [`UNHONOURED`] applies.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Every pod spec: a Pod's `spec`, a Deployment's `spec.template.spec`.
    PodSpec,
    /// Objects of this kind, from the object's root.
    Kind(&'static str),
}

const IGNORED: &str = "is not supported and will be ignored";
const SECURITY_IGNORED: &str =
    "is not supported and will be ignored (only runAsUser and runAsGroup are honoured)";

/// Fields that are valid Kubernetes but that c4m does not honour, with the
/// note a warning gives. Patterns are `.`-separated keys where:
/// - `key[*]` descends into every element of an array, `key[1:]` into every
///   element but the first;
/// - `*` matches any key and `!a|b` any key but `a` and `b`;
/// - a trailing `=value` matches only fields set to that value.
///
/// A field matches when it is set (not null, `""`, `[]` or `{}`).
const UNHONOURED: &[(Scope, &str, &str)] = &[
    // Volume sources c4m's nodes cannot set up (iscsi, rbd, cephfs, the
    // clouds' disks, inline csi and nfs, gitRepo, image); projected service
    // account tokens are left out of the files (c4m issues no tokens).
    (
        Scope::PodSpec,
        "volumes[*].!name|emptyDir|hostPath|configMap|secret|projected|downwardAPI|persistentVolumeClaim|ephemeral",
        IGNORED,
    ),
    (
        Scope::PodSpec,
        "volumes[*].projected.sources[*].!configMap|secret|downwardAPI",
        IGNORED,
    ),
    (
        Scope::PodSpec,
        "containers[*].securityContext.!runAsUser|runAsGroup",
        SECURITY_IGNORED,
    ),
    (
        Scope::PodSpec,
        "securityContext.!runAsUser|runAsGroup",
        SECURITY_IGNORED,
    ),
    // Node and inter-instance affinity, tolerations and spread constraints
    // are honoured by the scheduler, but for these refinements.
    (
        Scope::PodSpec,
        "topologySpreadConstraints[*].minDomains",
        IGNORED,
    ),
    (
        Scope::PodSpec,
        "topologySpreadConstraints[*].nodeAffinityPolicy",
        IGNORED,
    ),
    (
        Scope::PodSpec,
        "topologySpreadConstraints[*].nodeTaintsPolicy",
        IGNORED,
    ),
    (Scope::PodSpec, "hostNetwork=true", IGNORED),
    (Scope::PodSpec, "hostPID=true", IGNORED),
    (Scope::PodSpec, "hostIPC=true", IGNORED),
    (
        Scope::PodSpec,
        "serviceAccountName",
        "is accepted but has no effect",
    ),
    (
        Scope::PodSpec,
        "serviceAccount",
        "is accepted but has no effect",
    ),
    (
        Scope::Kind("Deployment"),
        "spec.strategy.type=Recreate",
        "is not supported; RollingUpdate is used",
    ),
    (
        Scope::Kind("Deployment"),
        "spec.strategy.rollingUpdate",
        "is not supported; the default rolling update parameters are used",
    ),
    (
        Scope::Kind("ReplicaSet"),
        "spec.template",
        "is not run: c4m keeps ReplicaSets as the revisions of Deployments; use a Deployment",
    ),
    (
        Scope::Kind("PodDisruptionBudget"),
        "spec.unhealthyPodEvictionPolicy",
        "is not supported; instances that are not ready count as disrupted",
    ),
];

/// Where each kind keeps its pod spec, as a JSON pointer and a field path.
const POD_SPEC_LOCATIONS: &[(&str, &str, &str)] = &[
    ("Pod", "/spec", "spec"),
    ("Deployment", "/spec/template/spec", "spec.template.spec"),
    ("ReplicaSet", "/spec/template/spec", "spec.template.spec"),
    ("Job", "/spec/template/spec", "spec.template.spec"),
    ("DaemonSet", "/spec/template/spec", "spec.template.spec"),
    ("StatefulSet", "/spec/template/spec", "spec.template.spec"),
    (
        "CronJob",
        "/spec/jobTemplate/spec/template/spec",
        "spec.jobTemplate.spec.template.spec",
    ),
];

/// `"<path> <note>"` for every field of `object` in [`UNHONOURED`].
fn unhonoured_fields(kind: &str, object: &Value) -> Vec<String> {
    let pod_spec = POD_SPEC_LOCATIONS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .and_then(|(_, pointer, path)| Some((object.pointer(pointer)?, *path)));
    let mut warnings = Vec::new();
    for &(scope, pattern, note) in UNHONOURED {
        let root = match scope {
            Scope::PodSpec => pod_spec,
            Scope::Kind(k) => (k == kind).then_some((object, "")),
        };
        let Some((root, root_path)) = root else {
            continue;
        };
        let (keys, expected) = match pattern.split_once('=') {
            Some((keys, expected)) => (keys, Some(expected)),
            None => (pattern, None),
        };
        let segments: Vec<&str> = keys.split('.').collect();
        let mut matches = Vec::new();
        find_fields(
            root,
            &segments,
            expected,
            root_path.to_string(),
            &mut matches,
        );
        warnings.extend(matches.into_iter().map(|field| format!("{field} {note}")));
    }
    warnings
}

/// Collects the paths under `value` that match `segments` (see
/// [`UNHONOURED`]), as `path` or `path=value` when a value is expected.
fn find_fields(
    value: &Value,
    segments: &[&str],
    expected: Option<&str>,
    path: String,
    found: &mut Vec<String>,
) {
    let Some((segment, rest)) = segments.split_first() else {
        match expected {
            None if is_set(value) => found.push(path),
            Some(expected) if scalar_text(value).as_deref() == Some(expected) => {
                found.push(format!("{path}={expected}"));
            }
            _ => {}
        }
        return;
    };
    let (key, first_index) = match segment.split_once('[') {
        Some((key, "*]")) => (key, Some(0)),
        Some((key, range)) => (
            key,
            range
                .strip_suffix(":]")
                .and_then(|start| start.parse::<usize>().ok()),
        ),
        None => (*segment, None),
    };
    let Some(object) = value.as_object() else {
        return;
    };
    for (name, child) in object.iter().filter(|(name, _)| key_matches(key, name)) {
        let child_path = join(&path, name);
        match (first_index, child) {
            (None, _) => find_fields(child, rest, expected, child_path, found),
            (Some(start), Value::Array(items)) => {
                for (i, item) in items.iter().enumerate().skip(start) {
                    find_fields(item, rest, expected, format!("{child_path}[{i}]"), found);
                }
            }
            (Some(_), _) => {}
        }
    }
}

fn key_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_prefix('!') {
        Some(excluded) => !excluded.split('|').any(|e| e == key),
        None => pattern == "*" || pattern == key,
    }
}

fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(object) => !object.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_one(yaml: &str) -> Value {
        let mut documents = parse_documents("test.yaml", yaml).unwrap();
        assert_eq!(documents.len(), 1);
        documents.remove(0).value
    }

    fn error_of(yaml: &str) -> (String, String) {
        validate_value(&parse_one(yaml)).unwrap_err()
    }

    const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports: [{containerPort: 80, name: http}]
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: "1", memory: 128Mi}
          readinessProbe:
            httpGet: {path: /, port: http}
"#;

    /// The Deployment above with one edit applied at a JSON pointer.
    fn deployment_with(pointer: &str, value: Value) -> Value {
        let mut deployment = parse_one(DEPLOYMENT);
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = deployment.pointer_mut(parent).unwrap();
        match parent {
            Value::Object(object) => {
                object.insert(key.to_string(), value);
            }
            Value::Array(items) => items.push(value),
            _ => panic!("bad pointer {pointer}"),
        }
        deployment
    }

    const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  completions: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
"#;

    #[test]
    fn a_daemon_set_rolling_update_needs_room_to_move() {
        let daemon_set = |rolling: &str| {
            format!(
                r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {rolling}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec: {{containers: [{{name: main, image: busybox}}]}}
"#
            )
        };
        assert!(
            validate_value(&parse_one(&daemon_set("{maxSurge: 1, maxUnavailable: 0}"))).is_ok()
        );
        assert!(validate_value(&parse_one(&daemon_set("{maxSurge: '25%'}"))).is_ok());
        for (rolling, path, message) in [
            (
                "{maxSurge: 0, maxUnavailable: '0%'}",
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "may not be 0 when maxSurge is 0",
            ),
            (
                "{maxSurge: '150%'}",
                "spec.updateStrategy.rollingUpdate.maxSurge",
                "must not be greater than 100%",
            ),
        ] {
            let (error_path, error) = error_of(&daemon_set(rolling));
            assert_eq!(error_path, path, "{rolling}: {error}");
            assert!(error.contains(message), "{rolling}: {error}");
        }
    }

    /// A StatefulSet is checked as Kubernetes checks it: its selector,
    /// serviceName, policies, strategy and claim templates.
    #[test]
    fn a_stateful_set_is_validated() {
        const SET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: main, image: redis, volumeMounts: [{name: data, mountPath: /data}]}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;
        let with = |pointer: &str, value: Value| {
            let mut set = parse_one(SET);
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            set.pointer_mut(parent).unwrap()[key] = value;
            set
        };
        assert!(validate_value(&parse_one(SET)).is_ok());
        let data = serde_json::json!({"metadata": {"name": "data"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        for (pointer, value, path, message) in [
            (
                "/spec/selector",
                serde_json::json!({"matchLabels": {"app": "db"}}),
                "spec.selector.matchLabels",
                "app=db does not match the template labels",
            ),
            (
                "/spec/serviceName",
                serde_json::json!("Web_1"),
                "spec.serviceName",
                "",
            ),
            (
                "/spec/podManagementPolicy",
                serde_json::json!("Sometimes"),
                "spec.podManagementPolicy",
                r#"Unsupported value: "Sometimes": supported values: "OrderedReady", "Parallel""#,
            ),
            (
                "/spec/updateStrategy",
                serde_json::json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}}),
                "spec.updateStrategy.rollingUpdate",
                "only allowed for updateStrategy 'RollingUpdate'",
            ),
            (
                "/spec/updateStrategy",
                serde_json::json!({"rollingUpdate": {"partition": -1}}),
                "spec.updateStrategy.rollingUpdate.partition",
                "must not be negative",
            ),
            (
                "/spec/persistentVolumeClaimRetentionPolicy",
                serde_json::json!({"whenScaled": "Keep"}),
                "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
                r#"supported values: "Retain", "Delete""#,
            ),
            (
                "/spec/volumeClaimTemplates",
                serde_json::json!([data.clone(), data]),
                "spec.volumeClaimTemplates[1].metadata.name",
                r#"Duplicate value: "data""#,
            ),
            (
                "/spec/volumeClaimTemplates",
                serde_json::json!([{"metadata": {"name": "data"}, "spec": {}}]),
                "spec.volumeClaimTemplates[0].spec.resources[storage]",
                "Required value",
            ),
            (
                "/spec/template/spec/restartPolicy",
                serde_json::json!("Never"),
                "spec.template.spec.restartPolicy",
                r#"Unsupported value: "Never": supported values: "Always""#,
            ),
        ] {
            let (error_path, error) = validate_value(&with(pointer, value)).unwrap_err();
            assert_eq!(error_path, path, "{pointer}: {error}");
            assert!(error.contains(message), "{pointer}: {error}");
        }
    }

    /// A container's own restartPolicy is only for init containers (a
    /// sidecar), only `Always`; init containers and sidecars warn no more.
    #[test]
    fn only_an_init_container_may_be_a_sidecar() {
        let with = |init: &str, app: &str| {
            JOB.replace(
                "      containers: [{name: main, image: busybox}]",
                &format!("      initContainers: [{{name: side, image: busybox{init}}}]\n      containers: [{{name: main, image: busybox{app}}}]"),
            )
        };
        let validated = validate_value(&parse_one(&with(", restartPolicy: Always", ""))).unwrap();
        assert!(validated.warnings.is_empty(), "{:?}", validated.warnings);
        let (path, message) = error_of(&with(", restartPolicy: OnFailure", ""));
        assert_eq!(path, "spec.template.spec.initContainers[0].restartPolicy");
        assert!(message.contains("only \"Always\""), "{message}");
        let (path, message) = error_of(&with("", ", restartPolicy: Always"));
        assert_eq!(path, "spec.template.spec.containers[0].restartPolicy");
        assert!(message.contains("only on an init container"), "{message}");
    }

    /// A startupProbe is honoured (no warning) on app containers and
    /// sidecars; refused on a plain init container and with a
    /// successThreshold other than 1.
    #[test]
    fn a_startup_probe_is_checked_as_kubernetes_checks_it() {
        let probe = r#", startupProbe: {exec: {command: ["true"]}}"#;
        let with = |init: &str, app: &str| {
            JOB.replace(
                "      containers: [{name: main, image: busybox}]",
                &format!("      initContainers: [{{name: side, image: busybox{init}}}]\n      containers: [{{name: main, image: busybox{app}}}]"),
            )
        };
        let sidecar = format!(", restartPolicy: Always{probe}");
        let validated = validate_value(&parse_one(&with(&sidecar, probe))).unwrap();
        assert!(validated.warnings.is_empty(), "{:?}", validated.warnings);
        let (path, message) = error_of(&with(probe, ""));
        assert_eq!(path, "spec.template.spec.initContainers[0].startupProbe");
        assert!(message.contains("restartPolicy=Always"), "{message}");
        let (path, message) = error_of(&with(
            "",
            r#", startupProbe: {exec: {command: ["true"]}, successThreshold: 2}"#,
        ));
        assert_eq!(
            path,
            "spec.template.spec.containers[0].startupProbe.successThreshold"
        );
        assert!(message.contains("must be 1"), "{message}");
    }

    #[test]
    fn jobs_and_cronjobs_are_checked_as_kubernetes_checks_them() {
        assert!(validate_value(&parse_one(JOB)).is_ok());
        let (path, message) =
            error_of(&JOB.replace("restartPolicy: Never", "restartPolicy: Always"));
        assert_eq!(path, "spec.template.spec.restartPolicy");
        assert!(message.contains("\"OnFailure\", \"Never\""), "{message}");
        let (path, _) = error_of(&JOB.replace("      restartPolicy: Never\n", ""));
        assert_eq!(path, "spec.template.spec.restartPolicy");
        let (path, _) = error_of(&JOB.replace("completions: 2", "completions: -1"));
        assert_eq!(path, "spec.completions");
        let (path, _) = error_of(&JOB.replace("completions: 2", "completionMode: Indexed"));
        assert_eq!(path, "spec.completions");
        let (path, _) = error_of(&JOB.replace("completions: 2", "activeDeadlineSeconds: 0"));
        assert_eq!(path, "spec.activeDeadlineSeconds");
        let policy = "podFailurePolicy: {rules: [{action: Explode, onExitCodes: {operator: In, values: [1]}}]}";
        let (path, _) = error_of(&JOB.replace("completions: 2", policy));
        assert_eq!(path, "spec.podFailurePolicy.rules[0].action");

        // What only an Indexed Job has.
        let indexed = |extra: &str| {
            JOB.replace(
                "completions: 2",
                &format!("completions: 3\n  completionMode: Indexed\n  {extra}"),
            )
        };
        for (job, path, message) in [
            (
                JOB.replace("completions: 2", "backoffLimitPerIndex: 1"),
                "spec.backoffLimitPerIndex",
                "requires indexed completion mode",
            ),
            (
                indexed("maxFailedIndexes: 1"),
                "spec.maxFailedIndexes",
                "when backoffLimitPerIndex is not set",
            ),
            (
                indexed("backoffLimitPerIndex: 1\n  maxFailedIndexes: 4"),
                "spec.maxFailedIndexes",
                "less than or equal to completions",
            ),
            (
                indexed(
                    "podFailurePolicy: {rules: [{action: FailIndex, onExitCodes: {operator: In, values: [3]}}]}",
                ),
                "spec.podFailurePolicy.rules[0].action",
                "only supported when backoffLimitPerIndex is set",
            ),
            (
                indexed("successPolicy: {rules: [{succeededIndexes: '0,5'}]}"),
                "spec.successPolicy.rules[0].succeededIndexes",
                "index 5 must be less than completions (3)",
            ),
            (
                indexed("successPolicy: {rules: [{succeededIndexes: '2,0-1'}]}"),
                "spec.successPolicy.rules[0].succeededIndexes",
                "increasing order",
            ),
            (
                indexed("successPolicy: {rules: [{succeededIndexes: '0-1', succeededCount: 3}]}"),
                "spec.successPolicy.rules[0].succeededCount",
                "between 0 and 2",
            ),
            (
                indexed("successPolicy: {rules: [{}]}"),
                "spec.successPolicy.rules[0]",
                "at least one of succeededCount or succeededIndexes",
            ),
            (
                JOB.replace(
                    "completions: 2",
                    "successPolicy: {rules: [{succeededCount: 1}]}",
                ),
                "spec.successPolicy",
                "requires indexed completion mode",
            ),
        ] {
            let (error_path, error) = error_of(&job);
            assert_eq!(error_path, path, "{job}: {error}");
            assert!(error.contains(message), "{job}: {error}");
        }
        let good = indexed(
            "backoffLimitPerIndex: 1\n  maxFailedIndexes: 1\n  successPolicy: {rules: [{succeededIndexes: '0-1', succeededCount: 1}]}",
        );
        assert!(validate_value(&parse_one(&good)).is_ok(), "{good}");

        let cronjob = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/5 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: main, image: busybox}]
"#;
        assert!(validate_value(&parse_one(cronjob)).is_ok());
        let (path, _) = error_of(&cronjob.replace("Forbid", "Sometimes"));
        assert_eq!(path, "spec.concurrencyPolicy");
        let (path, _) = error_of(&cronjob.replace("OnFailure", "Always"));
        assert_eq!(path, "spec.jobTemplate.spec.template.spec.restartPolicy");
    }

    #[test]
    fn valid_deployment_passes_without_warnings() {
        let value = parse_one(DEPLOYMENT);
        let validated = validate_value(&value).unwrap();
        assert_eq!(validated.kind.kind, "Deployment");
        assert_eq!(validated.object, value);
        assert!(validated.warnings.is_empty(), "{:?}", validated.warnings);
    }

    #[test]
    fn bad_quantity_in_second_container_names_its_path() {
        let value = deployment_with(
            "/spec/template/spec/containers/1",
            json!({"name": "sidecar", "command": ["sleep", "1"],
                   "resources": {"limits": {"memory": "12Q"}}}),
        );
        let (path, message) = validate_value(&value).unwrap_err();
        assert_eq!(
            path,
            "spec.template.spec.containers[1].resources.limits.memory"
        );
        assert_eq!(message, r#"invalid quantity "12Q": unknown suffix "Q""#);
    }

    #[test]
    fn numeric_quantities_are_accepted() {
        // YAML users write `cpu: 1` or `memory: 67108864` unquoted.
        let value = deployment_with(
            "/spec/template/spec/containers/0/resources",
            json!({"requests": {"cpu": 0.5, "memory": 67108864}, "limits": {"cpu": 1}}),
        );
        assert!(validate_value(&value).is_ok());
    }

    #[test]
    fn misspelled_field_is_unknown() {
        let value = deployment_with("/spec/replica", json!(3));
        assert_eq!(
            validate_value(&value).unwrap_err(),
            ("spec.replica".to_string(), "unknown field".to_string())
        );
        // Deep inside k8s-openapi's hand-written impls, and in a list.
        let value = deployment_with("/spec/template/spec/containers/0/imagee", json!("x"));
        assert_eq!(
            validate_value(&value).unwrap_err().0,
            "spec.template.spec.containers[0].imagee"
        );
        // And in c4m's own derived types.
        let (path, message) = error_of(
            "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: api}\nspec: {command: [x], replica: 2}\n",
        );
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("spec.replica", "unknown field")
        );
    }

    #[test]
    fn wrong_type_names_its_path() {
        let value = deployment_with("/spec/replicas", json!("three"));
        assert_eq!(
            validate_value(&value).unwrap_err(),
            (
                "spec.replicas".to_string(),
                r#"invalid type: string "three", expected i32"#.to_string()
            )
        );
        let value = deployment_with(
            "/spec/template/spec/containers/0/ports/0/containerPort",
            json!("80"),
        );
        assert_eq!(
            validate_value(&value).unwrap_err().0,
            "spec.template.spec.containers[0].ports[0].containerPort"
        );
    }

    #[test]
    fn unsupported_kind_lists_served_kinds() {
        let (path, message) = error_of("apiVersion: x/v1\nkind: Foo\nmetadata: {name: a}\n");
        assert_eq!(path, "kind");
        assert!(
            message.starts_with(
                "unsupported kind Foo (apiVersion x/v1); c4m serves: Namespace (v1), "
            ),
            "{message}"
        );
        assert!(
            message.contains("Deployment (apps/v1)")
                && message.contains("Microservice (c4m.io/v1)")
        );
        let (path, _) = error_of("apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n");
        assert_eq!(path, "kind");
        assert_eq!(error_of("kind: Pod\n").0, "apiVersion");
        assert_eq!(error_of("apiVersion: v1\n").0, "kind");
        assert_eq!(
            validate_value(&json!([1])).unwrap_err().1,
            "expected an object, found an array"
        );
    }

    #[test]
    fn selector_must_match_template() {
        let value = deployment_with("/spec/selector/matchLabels", json!({"app": "api"}));
        let (path, message) = validate_value(&value).unwrap_err();
        assert_eq!(path, "spec.selector.matchLabels");
        assert!(
            message.starts_with("app=api does not match the template labels"),
            "{message}"
        );

        let value = deployment_with(
            "/spec/selector",
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}),
        );
        assert_eq!(
            validate_value(&value).unwrap_err().0,
            "spec.selector.matchExpressions[0]"
        );
        let value = deployment_with(
            "/spec/selector",
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
        );
        assert!(validate_value(&value).is_ok());
        let value = deployment_with("/spec/selector", json!({}));
        assert_eq!(validate_value(&value).unwrap_err().1, "must not be empty");
    }

    #[test]
    fn names_and_labels_follow_kubernetes_rules() {
        let value = deployment_with("/metadata/name", json!("Web"));
        assert_eq!(validate_value(&value).unwrap_err().0, "metadata.name");
        let value = deployment_with("/metadata/name", json!("web.v2"));
        assert!(validate_value(&value).is_ok());
        let (path, _) = error_of("apiVersion: v1\nkind: Service\nmetadata: {name: web.v2}\n");
        assert_eq!(path, "metadata.name");
        let (path, _) = error_of("apiVersion: v1\nkind: Namespace\nmetadata: {}\n");
        assert_eq!(path, "metadata.name");
        let value = deployment_with("/metadata/namespace", json!("a.b"));
        assert_eq!(validate_value(&value).unwrap_err().0, "metadata.namespace");
        let value = deployment_with("/metadata/labels", json!({"example.com/app": "web_1.x"}));
        assert!(validate_value(&value).is_ok());
        let value = deployment_with("/metadata/labels", json!({"bad key": "x"}));
        assert_eq!(
            validate_value(&value).unwrap_err().0,
            "metadata.labels.bad key"
        );
        let value = deployment_with("/metadata/labels", json!({"app": "-web"}));
        assert!(
            validate_value(&value)
                .unwrap_err()
                .1
                .starts_with("invalid value \"-web\"")
        );
        let long = "a".repeat(64);
        let value = deployment_with("/metadata/labels", json!({"app": long}));
        assert!(validate_value(&value).is_err());
    }

    #[test]
    fn pod_spec_rules() {
        let cases = [
            ("/spec/replicas", json!(-1), "spec.replicas"),
            (
                "/spec/template/spec/containers",
                json!([]),
                "spec.template.spec.containers",
            ),
            (
                "/spec/template/spec/containers/1",
                json!({"name": "web", "image": "x"}),
                "spec.template.spec.containers[1].name",
            ),
            (
                "/spec/template/spec/containers/1",
                json!({"name": "side"}),
                "spec.template.spec.containers[1]",
            ),
            (
                "/spec/template/spec/containers/0/ports/0/containerPort",
                json!(70000),
                "spec.template.spec.containers[0].ports[0].containerPort",
            ),
            (
                "/spec/template/spec/containers/0/readinessProbe/tcpSocket",
                json!({"port": 80}),
                "spec.template.spec.containers[0].readinessProbe",
            ),
            (
                "/spec/template/spec/containers/0/livenessProbe",
                json!({"periodSeconds": 5}),
                "spec.template.spec.containers[0].livenessProbe",
            ),
            (
                "/spec/template/spec/containers/0/resources/requests/cpu",
                json!("2"),
                "spec.template.spec.containers[0].resources.requests.cpu",
            ),
            (
                "/spec/template/spec/restartPolicy",
                json!("Never"),
                "spec.template.spec.restartPolicy",
            ),
        ];
        for (pointer, value, expected_path) in cases {
            let (path, message) = validate_value(&deployment_with(pointer, value)).unwrap_err();
            assert_eq!(path, expected_path, "{pointer}: {message}");
        }
        let value = deployment_with(
            "/spec/template/spec/containers/0/readinessProbe/tcpSocket",
            json!({"port": 80}),
        );
        assert_eq!(
            validate_value(&value).unwrap_err().1,
            "exactly one of exec, httpGet, tcpSocket or grpc is required, found httpGet, tcpSocket"
        );
    }

    /// Lifecycle hooks: one handler each, a port for httpGet, seconds of
    /// sleep not negative; tcpSocket is refused by name. They are honoured,
    /// so no warning.
    #[test]
    fn lifecycle_hooks_are_checked_and_tcp_socket_is_refused() {
        let pod = |lifecycle: &str| {
            parse_one(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{initContainers: [{{name: i, image: bb:1}}], containers: [{{name: a, image: bb:1, lifecycle: {lifecycle}}}]}}"
            ))
        };
        let valid = pod(
            "{postStart: {exec: {command: [sh, -c, 'echo hi']}}, preStop: {sleep: {seconds: 2}}}",
        );
        let validated = validate_value(&valid).unwrap();
        assert!(validated.warnings.is_empty(), "{:?}", validated.warnings);
        validate_value(&pod("{preStop: {httpGet: {path: /quit, port: 8080}}}")).unwrap();
        let cases = [
            (
                "{postStart: {}}",
                "spec.containers[0].lifecycle.postStart",
                "exactly one of exec, httpGet, sleep or tcpSocket is required, found none",
            ),
            (
                "{preStop: {exec: {command: ['true']}, sleep: {seconds: 1}}}",
                "spec.containers[0].lifecycle.preStop",
                "exactly one of exec, httpGet, sleep or tcpSocket is required, found exec, sleep",
            ),
            (
                "{preStop: {tcpSocket: {port: 80}}}",
                "spec.containers[0].lifecycle.preStop.tcpSocket",
                "is deprecated and not supported; use exec, httpGet or sleep",
            ),
            (
                "{postStart: {exec: {command: []}}}",
                "spec.containers[0].lifecycle.postStart.exec.command",
                "must not be empty",
            ),
            (
                "{postStart: {httpGet: {port: 0}}}",
                "spec.containers[0].lifecycle.postStart.httpGet.port",
                "",
            ),
            (
                "{preStop: {sleep: {seconds: -1}}}",
                "spec.containers[0].lifecycle.preStop.sleep.seconds",
                "",
            ),
        ];
        for (lifecycle, path, message) in cases {
            let (got_path, got) = validate_value(&pod(lifecycle)).unwrap_err();
            assert_eq!(got_path, path, "{lifecycle}: {got}");
            if !message.is_empty() {
                assert_eq!(got, message, "{lifecycle}");
            }
        }
    }

    #[test]
    fn pod_dns_hosts_and_pulls_are_checked_as_kubernetes_checks_them() {
        let pod = |spec: &str| {
            parse_one(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: a, image: bb:1}}], {spec}}}"
            ))
        };
        let valid = validate_value(&pod(
            "hostname: db, subdomain: nodes, hostAliases: [{ip: 10.0.0.1, hostnames: [foo.local]}], dnsPolicy: None, dnsConfig: {nameservers: [1.1.1.1], searches: [a.example.], options: [{name: ndots, value: '2'}]}, imagePullSecrets: [{name: regcred}]",
        ))
        .unwrap();
        assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
        for (spec, path, message) in [
            ("hostname: Db", "spec.hostname", "\"Db\" must consist of"),
            (
                "subdomain: a.b",
                "spec.subdomain",
                "\"a.b\" must consist of",
            ),
            (
                "dnsPolicy: Cluster",
                "spec.dnsPolicy",
                "\"Cluster\" is not one of",
            ),
            (
                "dnsPolicy: None",
                "spec.dnsConfig.nameservers",
                "must provide at least one",
            ),
            (
                "dnsConfig: {nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4]}",
                "spec.dnsConfig.nameservers",
                "must not have more than 3",
            ),
            (
                "dnsConfig: {nameservers: [dns.example]}",
                "spec.dnsConfig.nameservers[0]",
                "must be a valid IP",
            ),
            (
                "dnsConfig: {searches: [UP.example]}",
                "spec.dnsConfig.searches[0]",
                "\"UP.example\" must consist",
            ),
            (
                "dnsConfig: {options: [{value: '1'}]}",
                "spec.dnsConfig.options[0].name",
                "must not be empty",
            ),
            (
                "hostAliases: [{ip: 10.0.0.300, hostnames: [a]}]",
                "spec.hostAliases[0].ip",
                "must be a valid IP",
            ),
            (
                "hostAliases: [{ip: 10.0.0.3, hostnames: [a, -b]}]",
                "spec.hostAliases[0].hostnames[1]",
                "\"-b\" must consist",
            ),
            (
                "initContainers: [{name: i, image: bb:1, imagePullPolicy: always}]",
                "spec.initContainers[0].imagePullPolicy",
                "\"always\" is not one of Always, IfNotPresent, Never",
            ),
            (
                "runtimeClassName: process, hostAliases: [{ip: 10.0.0.3, hostnames: [a]}]",
                "spec.hostAliases",
                "the process driver cannot honour it",
            ),
            (
                "runtimeClassName: docker, setHostnameAsFQDN: true",
                "spec.setHostnameAsFQDN",
                "the docker driver cannot honour it",
            ),
            (
                "runtimeClassName: cri, initContainers: [{name: i, image: bb:1}]",
                "spec.initContainers[0]",
                "the cri driver runs one container per pod",
            ),
            (
                "initContainers: [{name: i, image: bb:1, tty: true}]",
                "spec.initContainers[0].tty",
                "is not supported",
            ),
            (
                "ephemeralContainers: [{name: d, image: bb:1}]",
                "spec.ephemeralContainers",
                "Forbidden: cannot be set here: kubectl debug adds them",
            ),
            (
                "runtimeClassName: process, shareProcessNamespace: true",
                "spec.shareProcessNamespace",
                "the process driver cannot honour it",
            ),
        ] {
            let (error_path, error) = validate_value(&pod(spec)).unwrap_err();
            assert_eq!(error_path, path, "{spec}: {error}");
            assert!(error.contains(message), "{spec}: {error}");
        }
        assert!(
            validate_value(&pod(
                "runtimeClassName: oci, hostAliases: [{ip: 10.0.0.3, hostnames: [a]}]"
            ))
            .is_ok()
        );
    }

    #[test]
    fn pod_and_microservice_need_something_to_run() {
        let (path, message) = error_of(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n",
        );
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("spec.containers[0]", "either image or command is required")
        );
        let (path, message) = error_of(
            "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: api}\nspec: {replicas: 2}\n",
        );
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("spec", "either image or command is required")
        );
        let (path, _) = error_of(
            "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: api}\nspec: {command: [x], replicas: -1}\n",
        );
        assert_eq!(path, "spec.replicas");
        let (path, _) = error_of(
            "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: api}\nspec: {command: [x], restartPolicy: Sometimes}\n",
        );
        assert_eq!(path, "spec.restartPolicy");
        let (path, _) = error_of(
            "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: api}\nspec: {command: [x], resources: {requests: {cpu: lots}}}\n",
        );
        assert_eq!(path, "spec.resources.requests.cpu");
    }

    #[test]
    fn service_ports_are_checked() {
        let service = |ports: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}, "ports": ports}})
        };
        assert!(validate_value(&service(json!([{"port": 80, "targetPort": "http"}]))).is_ok());
        let (path, _) = validate_value(&service(json!([{"port": 0}]))).unwrap_err();
        assert_eq!(path, "spec.ports[0].port");
        let (path, _) =
            validate_value(&service(json!([{"port": 80, "targetPort": 65536}]))).unwrap_err();
        assert_eq!(path, "spec.ports[0].targetPort");
        let (path, _) =
            validate_value(&service(json!([{"port": 80, "name": "a"}, {"port": 81}]))).unwrap_err();
        assert_eq!(path, "spec.ports[1].name");
        let (path, _) =
            validate_value(&service(json!([{"port": 80, "protocol": "HTTP"}]))).unwrap_err();
        assert_eq!(path, "spec.ports[0].protocol");
    }

    #[test]
    fn an_external_name_must_be_a_dns_name() {
        let service = |spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mail"}, "spec": spec});
        for name in ["smtp.example.com", "smtp.example.com.", "db"] {
            let external = service(json!({"type": "ExternalName", "externalName": name}));
            let validated = validate_value(&external).unwrap();
            assert!(
                validated.warnings.is_empty(),
                "{name}: {:?}",
                validated.warnings
            );
        }
        for spec in [
            json!({"type": "ExternalName"}),
            json!({"type": "ExternalName", "externalName": "."}),
            json!({"type": "ExternalName", "externalName": "smtp..example.com"}),
            json!({"type": "ExternalName", "externalName": "Smtp_1.example.com"}),
            json!({"type": "ExternalName", "externalName": "http://example.com"}),
        ] {
            let (path, message) = validate_value(&service(spec.clone())).unwrap_err();
            assert_eq!(path, "spec.externalName", "{spec}: {message}");
        }
        // Only an ExternalName Service's is checked.
        let other = service(json!({"ports": [{"port": 80}], "externalName": "not a name"}));
        assert!(validate_value(&other).is_ok());
    }

    #[test]
    fn secret_data_must_be_base64() {
        let secret = |data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": data});
        assert!(validate_value(&secret(json!({"password": "aHVudGVyMg=="}))).is_ok());
        let (path, message) = validate_value(&secret(json!({"password": "hunter2!"}))).unwrap_err();
        assert_eq!(path, "data.password");
        assert!(message.starts_with("invalid base64"), "{message}");
        let (path, _) = validate_value(&secret(json!({"bad/key": "YQ=="}))).unwrap_err();
        assert_eq!(path, "data.bad/key");
    }

    #[test]
    fn affinity_tolerations_and_spread_are_honoured_min_domains_is_not() {
        let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  tolerations: [{key: dedicated, operator: Exists}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: p}}}
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, minDomains: 3}
  containers: [{name: c, command: [sleep, "1"]}]
"#;
        let warnings = validate_value(&parse_one(yaml)).unwrap().warnings;
        assert_eq!(
            warnings,
            [
                "Pod p: spec.topologySpreadConstraints[0].minDomains is not supported and will be ignored"
            ]
        );
    }

    #[test]
    fn unhonoured_fields_are_warnings() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  strategy: {type: Recreate}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      hostNetwork: false
      tolerations: []
      securityContext: {runAsUser: 1000, fsGroup: 2000}
      volumes: [{name: data, emptyDir: {}}]
      containers:
        - name: web
          image: nginx
          volumeMounts: [{name: data, mountPath: /data}]
          securityContext: {runAsGroup: 10, privileged: true}
        - name: side
          image: busybox
"#;
        let validated = validate_value(&parse_one(yaml)).unwrap();
        let mut warnings = validated.warnings;
        warnings.sort();
        let prefix = "Deployment web: ";
        let mut expected: Vec<String> = [
            "spec.strategy.type=Recreate is not supported; RollingUpdate is used",
            "spec.template.spec.containers[0].securityContext.privileged is not supported and will be ignored (only runAsUser and runAsGroup are honoured)",
            "spec.template.spec.securityContext.fsGroup is not supported and will be ignored (only runAsUser and runAsGroup are honoured)",
            "spec.template.spec.serviceAccountName is accepted but has no effect",
        ]
        .iter()
        .map(|w| format!("{prefix}{w}"))
        .collect();
        expected.sort();
        assert_eq!(warnings, expected);

        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                             "spec": {"type": "LoadBalancer", "ports": [{"port": 80}],
                                      "externalIPs": ["192.0.2.1"], "sessionAffinity": "ClientIP"}});
        // Programmed on every node (c4m-mesh's ServiceRules): no warning.
        assert!(validate_value(&service).unwrap().warnings.is_empty());
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"hostNetwork": true, "containers": [{"name": "c", "command": ["x"]}]}});
        assert_eq!(
            validate_value(&pod).unwrap().warnings,
            ["Pod p: spec.hostNetwork=true is not supported and will be ignored"]
        );
    }

    #[test]
    fn service_policies_are_checked_as_kubernetes_checks_them() {
        let error = |spec: Value| {
            let service = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web"}, "spec": spec});
            let (path, message) = validate_value(&service).map(|_| ()).unwrap_err();
            format!("{path}: {message}")
        };
        assert!(
            error(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}))
            .contains("spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be greater than 0 and less than 86400, found 0")
        );
        assert!(
            error(json!({"ports": [{"port": 80}], "internalTrafficPolicy": "Nearby"}))
                .contains("spec.internalTrafficPolicy: \"Nearby\" is not one of Cluster, Local")
        );
        assert!(error(json!({"type": "ExternalName"})).contains("spec.externalName"));
        let fine = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}], "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}});
        assert!(validate_value(&fine).is_ok());
    }

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\n";
        let documents = parse_documents("ns.yaml", text).unwrap();
        let indexes: Vec<usize> = documents.iter().map(|d| d.index).collect();
        assert_eq!(indexes, [1, 3]);
        assert_eq!(documents[1].value["metadata"]["name"], "b");
        assert_eq!(documents[1].source, "ns.yaml");
        assert!(parse_documents("empty.yaml", "").unwrap().is_empty());
        assert!(parse_documents("empty.yaml", "---\n").unwrap().is_empty());
    }

    #[test]
    fn json_lists_and_arrays_expand() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}
        ]}"#;
        let documents = parse_documents("<stdin>", list).unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!(
            (documents[1].index, &documents[1].value["metadata"]["name"]),
            (2, &json!("b"))
        );
        for document in &documents {
            validate(document).unwrap();
        }

        let array = r#"[{"kind": "Namespace"}, {"kind": "Pod"}, {"kind": "Service"}]"#;
        assert_eq!(parse_documents("a.json", array).unwrap().len(), 3);
        let stream = "{\"kind\": \"Namespace\"}\n{\"kind\": \"Pod\"}\n";
        assert_eq!(parse_documents("a.json", stream).unwrap()[1].index, 2);
        let yaml_list = "apiVersion: v1\nkind: List\nitems:\n- {kind: A}\n- {kind: B}\n";
        assert_eq!(parse_documents("l.yaml", yaml_list).unwrap().len(), 2);

        let err = parse_documents("a.json", "{\"kind\": }").unwrap_err();
        assert_eq!(err.document, 1);
        assert!(
            err.message.starts_with("invalid JSON") && err.message.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn yaml_syntax_error_reports_document_and_line() {
        let text = "kind: A\n---\nkind: B\n  bad: [\n";
        let err = parse_documents("app.yaml", text).unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.message.contains("line 4"), "{err}");
        assert!(
            err.to_string()
                .starts_with("app.yaml: document 2: invalid YAML: "),
            "{err}"
        );
    }

    #[test]
    fn yaml_is_converted_like_kubernetes_does() {
        let value = parse_one("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n1: one\ntrue: yes\nf: 1.5\n");
        assert_eq!(
            value,
            json!({"a": {"b": 1}, "c": {"b": 1, "d": 2}, "1": "one", "true": "yes", "f": 1.5})
        );
        let err = parse_documents("x.yaml", "a: .nan\n").unwrap_err();
        assert_eq!(err.path, "a");
        let err = parse_documents("x.yaml", "? [a]\n: b\n").unwrap_err();
        assert_eq!(err.message, "mapping keys must be scalars");
    }

    #[test]
    fn manifest_error_display() {
        let mut err = ManifestError {
            source: "app.yaml".to_string(),
            document: 2,
            path: "spec.replicas".to_string(),
            message: "must not be negative, found -1".to_string(),
        };
        assert_eq!(
            err.to_string(),
            "app.yaml: document 2: spec.replicas: must not be negative, found -1"
        );
        err.path.clear();
        assert_eq!(
            err.to_string(),
            "app.yaml: document 2: must not be negative, found -1"
        );
        let document = Document {
            source: "<stdin>".to_string(),
            index: 4,
            value: json!({"kind": "Foo"}),
        };
        let err = validate(&document).unwrap_err();
        assert_eq!(
            (err.source.as_str(), err.document, err.path.as_str()),
            ("<stdin>", 4, "apiVersion")
        );
        let err: crate::Error = err.into();
        assert!(
            err.to_string()
                .starts_with("<stdin>: document 4: apiVersion: ")
        );
    }

    #[test]
    fn microservice_round_trips_through_validation() {
        let yaml = r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  command: [./api, --port, "8080"]
  replicas: 3
  user: 1000
  resources: {requests: {cpu: 250m, memory: 64Mi}, limits: {memory: 128Mi}}
  ports: [{name: http, containerPort: 8080}]
  livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 10}
  readinessProbe: {grpc: {port: 8080}}
  env: [{name: DB, valueFrom: {secretKeyRef: {name: db, key: url}}}]
  nodeSelector: {disk: ssd}
  driver: process
"#;
        let value = parse_one(yaml);
        let validated = validate_value(&value).unwrap();
        assert_eq!(validated.kind.kind, "Microservice");
        assert!(validated.warnings.is_empty());
        let ms: Microservice = serde_json::from_value(validated.object.clone()).unwrap();
        assert_eq!(ms.spec.replicas, 3);
        let reparsed = validate_value(&serde_json::to_value(&ms).unwrap()).unwrap();
        let again: Microservice = serde_json::from_value(reparsed.object).unwrap();
        assert_eq!(again, ms);
    }

    #[test]
    fn priority_classes_follow_kubernetes_rules() {
        let class = |extra: &str| {
            format!(
                "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: high}}\n{extra}"
            )
        };
        let validated = validate_value(&parse_one(&class(
            "value: 1000\nglobalDefault: true\npreemptionPolicy: Never\n",
        )))
        .unwrap();
        assert_eq!(validated.kind.plural, "priorityclasses");
        assert_eq!(error_of(&class("")).0, "value");
        let (path, message) = error_of(&class("value: 1000000001\n"));
        assert_eq!(
            (path.as_str(), message.as_str()),
            (
                "value",
                "must be no greater than 1000000000, found 1000000001"
            )
        );
        assert_eq!(
            error_of(&class("value: 1\npreemptionPolicy: Sometimes\n")).0,
            "preemptionPolicy"
        );
        let (path, message) = error_of(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: system-x}\nvalue: 1\n",
        );
        assert_eq!(path, "metadata.name");
        assert!(message.contains("reserved"), "{message}");
        // Instances name classes by DNS subdomain.
        let (path, _) = error_of(
            "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: a}\nspec: {command: [x], priorityClassName: Hi}\n",
        );
        assert_eq!(path, "spec.priorityClassName");
        let value = deployment_with("/spec/template/spec/preemptionPolicy", json!("Maybe"));
        assert_eq!(
            validate_value(&value).unwrap_err().0,
            "spec.template.spec.preemptionPolicy"
        );
    }

    #[test]
    fn edge_kinds_are_checked_up_to_what_c4m_core_knows() {
        let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n\
            spec: {rules: [{host: a.test, http: {paths: [{path: /, pathType: Prefix, \
            backend: {service: {name: web, port: {number: 80}}}}]}}]}\n";
        assert_eq!(
            validate_value(&parse_one(ingress)).unwrap().kind.plural,
            "ingresses"
        );
        let bad = ingress.replace("pathType", "pathKind");
        assert_eq!(
            validate_value(&parse_one(&bad)).unwrap_err().0,
            "spec.rules[0].http.paths[0].pathKind"
        );
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
            metadata: {name: web, labels: {app: web}}\nspec: {hostnames: [a.test]}\n";
        assert_eq!(
            validate_value(&parse_one(route)).unwrap().kind.plural,
            "httproutes"
        );
        let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                     metadata: {name: g}\n";
        for (manifest, path, message) in [
            (
                route.replace("spec: {hostnames: [a.test]}", "spec: [1]"),
                "spec",
                "invalid type",
            ),
            (route.replace("spec:", "spek: {}\nspec:"), "spek", "unknown"),
            (
                route.replace("app: web", "app: \"a b\""),
                "metadata.labels",
                "",
            ),
            (grant.to_string(), "", "missing field `spec`"),
        ] {
            let (at, why) = validate_value(&parse_one(&manifest)).unwrap_err();
            assert!(
                at.starts_with(path) && why.contains(message),
                "{manifest}: {at}: {why}"
            );
        }
    }

    #[test]
    fn disruption_budgets_follow_kubernetes_rules() {
        let budget = |spec: &str| {
            format!(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\nspec: {spec}\n"
            )
        };
        let validated = validate_value(&parse_one(&budget(
            "{minAvailable: \"50%\", selector: {matchLabels: {app: web}}}",
        )))
        .unwrap();
        assert_eq!(validated.kind.plural, "poddisruptionbudgets");
        assert!(validated.warnings.is_empty());
        assert!(validate_value(&parse_one(&budget("{maxUnavailable: 1, selector: {}}"))).is_ok());
        let cases = [
            (
                "{minAvailable: 1, maxUnavailable: 1}",
                "spec.minAvailable",
                "cannot be both set",
            ),
            (
                "{minAvailable: -1}",
                "spec.minAvailable",
                "must not be negative",
            ),
            (
                "{maxUnavailable: \"101%\"}",
                "spec.maxUnavailable",
                "greater than 100%",
            ),
            (
                "{maxUnavailable: \"half\"}",
                "spec.maxUnavailable",
                "percentage",
            ),
            (
                "{selector: {matchExpressions: [{key: app, operator: In}]}}",
                "spec.selector.matchExpressions[0].values",
                "must be specified",
            ),
            (
                "{selector: {matchExpressions: [{key: app, operator: Exists, values: [a]}]}}",
                "spec.selector.matchExpressions[0].values",
                "may not be specified",
            ),
            (
                "{selector: {matchExpressions: [{key: app, operator: Near}]}}",
                "spec.selector.matchExpressions[0].operator",
                "unknown operator",
            ),
            (
                "{minAvailable: 1, maxUnavailabel: 1}",
                "spec.maxUnavailabel",
                "unknown field",
            ),
        ];
        for (spec, expected_path, expected_message) in cases {
            let (path, message) = error_of(&budget(spec));
            assert_eq!(path, expected_path, "{spec}");
            assert!(message.contains(expected_message), "{spec}: {message}");
        }
        let warned = validate_value(&parse_one(&budget(
            "{maxUnavailable: 0, unhealthyPodEvictionPolicy: AlwaysAllow}",
        )))
        .unwrap();
        assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
    }

    #[test]
    fn autoscalers_are_checked_as_kubernetes_checks_them() {
        let hpa = |spec: &str| {
            format!(
                "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: web}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n{spec}"
            )
        };
        let good = hpa(
            "  minReplicas: 1\n  maxReplicas: 4\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}}]\n  behavior: {scaleDown: {stabilizationWindowSeconds: 10, policies: [{type: Pods, value: 1, periodSeconds: 60}]}}\n",
        );
        assert!(validate_value(&parse_one(&good)).is_ok());
        let cases = [
            (
                "  minReplicas: 5\n  maxReplicas: 4\n",
                "spec.maxReplicas",
                "must be greater than or equal to `minReplicas` (5), found 4",
            ),
            (
                "  minReplicas: 0\n  maxReplicas: 4\n",
                "spec.minReplicas",
                "must be greater than or equal to 1, found 0",
            ),
            (
                "  maxReplicas: 2\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 0}}}]\n",
                "spec.metrics[0].resource.target.averageUtilization",
                "must be greater than 0, found 0",
            ),
            (
                "  maxReplicas: 2\n  metrics: [{type: Resource, resource: {name: gpu, target: {type: Utilization, averageUtilization: 50}}}]\n",
                "spec.metrics[0].resource.name",
                "unsupported value \"gpu\": supported values: \"cpu\", \"memory\"",
            ),
            (
                "  maxReplicas: 2\n  metrics: [{type: Pods, pods: {metric: {name: qps}, target: {type: AverageValue, averageValue: 10}}}]\n",
                "spec.metrics[0].type",
                "\"Pods\" metrics are not supported: c4m serves resource metrics (metrics.k8s.io) only; use Resource or ContainerResource",
            ),
            (
                "  maxReplicas: 2\n  behavior: {scaleUp: {stabilizationWindowSeconds: 4000}}\n",
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
                "must be between 0 and 3600 (one hour), found 4000",
            ),
            (
                "  maxReplicas: 2\n  behavior: {scaleDown: {policies: [{type: Pods, value: 1, periodSeconds: 0}]}}\n",
                "spec.behavior.scaleDown.policies[0].periodSeconds",
                "must be between 1 and 1800 (30 minutes), found 0",
            ),
            (
                "  maxReplicas: 2\n  behavior: {scaleDown: {selectPolicy: Fastest}}\n",
                "spec.behavior.scaleDown.selectPolicy",
                "unsupported value \"Fastest\": supported values: \"Disabled\", \"Max\", \"Min\"",
            ),
        ];
        for (spec, path, message) in cases {
            assert_eq!(
                error_of(&hpa(spec)),
                (path.to_string(), message.to_string()),
                "{spec}"
            );
        }
        let v1 = "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {maxReplicas: 2}\n";
        assert_eq!(error_of(v1).0, "apiVersion");
    }

    #[test]
    fn hostile_input_does_not_panic() {
        for text in [
            "[",
            "{",
            "- - - -",
            "a: [",
            "\t",
            "!!binary foo",
            "*x",
            "{\"a\": 1e999}",
            ": :",
        ] {
            if let Ok(documents) = parse_documents("x", text) {
                for document in documents {
                    let _ = validate(&document);
                }
            }
        }
        for value in [
            json!(null),
            json!({"apiVersion": 1, "kind": "Pod"}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": 5}),
        ] {
            assert!(validate_value(&value).is_err());
        }
    }
}
