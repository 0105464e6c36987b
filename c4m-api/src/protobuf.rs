//! Kubernetes objects between the JSON c4m keeps and Kubernetes' protobuf
//! (`application/vnd.kubernetes.protobuf`),
//! by reflection over a descriptor set compiled from Kubernetes'
//! `generated.proto` files (`kubernetes.binpb`, rebuilt by
//! `scripts/kubernetes-descriptors.sh`; see docs/decisions).
//!
//! The generated protos name every field as its JSON does, so most of the
//! mapping is by name. Where Kubernetes' JSON and protobuf differ, the
//! message type says so, and these are mapped by hand:
//!
//! | message | JSON | protobuf |
//! |---|---|---|
//! | `intstr.IntOrString` | `8080` or `"http"` | `{type, intVal, strVal}` |
//! | `resource.Quantity` | `"100m"` | `{string}` |
//! | `meta.v1.Time` | `"2026-01-02T03:04:05Z"` | `{seconds, nanos}` |
//! | `meta.v1.MicroTime` | `"2026-01-02T03:04:05.000006Z"` | `{seconds, nanos}` |
//! | `meta.v1.Duration` | `"1m30s"` | `{duration}` (nanoseconds) |
//! | `runtime.RawExtension` | any JSON | `{raw}`: JSON text, or a protobuf envelope |
//! | `meta.v1.FieldsV1` | an object | `{Raw}`: JSON text |
//! | `bytes` fields (Secret `data`) | base64 | the bytes |
//! | a struct Go embeds ([`EMBEDDED`]: a Probe's handler, a Volume's source, an EphemeralContainer's container) | its fields are the parent's | one nested message |
//!
//! Go writes every non-pointer field of an object, empty or not, and its
//! JSON leaves empty ones out (`omitempty`): an empty string, a zero Time,
//! and a zero or false number or boolean (but for the fields Kubernetes
//! declares as pointers, [`POINTER_SCALARS`], where zero means something)
//! read from protobuf are left out of the JSON likewise.

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Proto,
};
use serde_json::{Map, Value, json};

mod wire;

/// Kubernetes' protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Why an object could not be read or written as protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The kind has no protobuf form (a custom or c4m kind).
    #[error(
        "{kind} ({api_version}) is served as JSON only: send it as application/json and accept application/json"
    )]
    NoProtobufForm {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// The bytes do not start with `k8s\0`.
    #[error(
        "the protobuf body does not start with Kubernetes' envelope (the bytes k8s\\0 and a runtime.Unknown)"
    )]
    NoEnvelope,
    /// The envelope names no kind.
    #[error("the protobuf envelope names no apiVersion and kind")]
    NoTypeMeta,
    /// The bytes are not a valid message of the type.
    #[error("the protobuf body is not a valid {message}: {source}")]
    Decode {
        /// The message type.
        message: String,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A value does not fit its field.
    #[error("{path}: {message}")]
    Field {
        /// Where (`spec.template.spec.containers[0].ports[0].containerPort`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The object to encode is not a JSON object with apiVersion and kind.
    #[error("an object to encode must be a JSON object with apiVersion and kind")]
    NotAnObject,
    /// The compiled-in descriptors did not load (a broken build).
    #[error("the Kubernetes protobuf descriptors did not load: {0}")]
    Descriptors(#[source] &'static prost_reflect::DescriptorError),
}

/// The four bytes every Kubernetes protobuf object starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

type Result<T, E = ProtobufError> = std::result::Result<T, E>;

static POOL: LazyLock<Result<DescriptorPool, prost_reflect::DescriptorError>> =
    LazyLock::new(|| DescriptorPool::decode(&include_bytes!("kubernetes.binpb")[..]));

fn pool() -> Result<&'static DescriptorPool> {
    POOL.as_ref().map_err(ProtobufError::Descriptors)
}

const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";
const UNKNOWN: &str = "apimachinery.pkg.runtime.Unknown";
const META_PACKAGE: &str = "apimachinery.pkg.apis.meta.v1";

/// The message type of a built-in kind, or None for a kind that has no
/// protobuf form (custom resources, c4m's own kinds).
pub fn message_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let pool = pool().ok()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "metrics.k8s.io" => "metrics.pkg.apis.metrics".to_string(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".to_string(),
        // Built-in groups are one word (apps, batch) or end in .k8s.io;
        // anything else is someone's own group, whatever its kinds are called.
        group if !group.contains('.') => format!("api.{group}"),
        group => match group.strip_suffix(".k8s.io") {
            Some(prefix) => format!("api.{}", prefix.split('.').next().unwrap_or(prefix)),
            None => return None,
        },
    };
    pool.get_message_by_name(&format!("{package}.{version}.{kind}"))
        // Status, DeleteOptions, WatchEvent, APIResourceList: meta/v1 kinds
        // any group version answers with.
        .or_else(|| pool.get_message_by_name(&format!("{META_PACKAGE}.{kind}")))
}

/// Whether objects of this apiVersion and kind have a protobuf form.
pub fn has_protobuf_form(api_version: &str, kind: &str) -> bool {
    message_for(api_version, kind).is_some()
}

/// A JSON object (with apiVersion and kind) as Kubernetes' protobuf
/// envelope: `k8s\0` and a `runtime.Unknown` holding the message.
pub fn encode_object(object: &Value) -> Result<Vec<u8>> {
    let (api_version, kind) = type_meta(object)?;
    let descriptor = message_for(api_version, kind).ok_or_else(|| no_form(api_version, kind))?;
    let mut raw = Vec::new();
    wire::write_message(&descriptor, object, &mut String::new(), &mut raw)?;
    envelope(api_version, kind, raw)
}

/// A protobuf envelope as the JSON object it holds, with its apiVersion
/// and kind.
pub fn decode_object(bytes: &[u8]) -> Result<Value> {
    let body = bytes.strip_prefix(MAGIC).ok_or(ProtobufError::NoEnvelope)?;
    let unknown_descriptor = message(UNKNOWN)?;
    let unknown = decode_message(&unknown_descriptor, body)?;
    let type_meta = unknown.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(Proto::as_message);
    let text = |field: &str| {
        type_meta
            .and_then(|t| t.get_field_by_name(field))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if kind.is_empty() {
        return Err(ProtobufError::NoTypeMeta);
    }
    let descriptor =
        message_for(&api_version, &kind).ok_or_else(|| no_form(&api_version, &kind))?;
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let object = decode_message(&descriptor, &raw)?;
    let mut json = from_message(&object);
    if let Value::Object(fields) = &mut json {
        fields.insert("apiVersion".into(), json!(api_version));
        fields.insert("kind".into(), json!(kind));
    }
    Ok(json)
}

/// A watch event (`{"type": ..., "object": ...}`) as one protobuf watch
/// frame's content: a bare `meta.v1.WatchEvent` whose object is an envelope.
pub fn encode_watch_event(event: &Value) -> Result<Vec<u8>> {
    let event_type = event["type"].as_str().unwrap_or_default();
    let object = encode_object(&event["object"])?;
    let descriptor = message(&format!("{META_PACKAGE}.WatchEvent"))?;
    let raw_extension = message(RAW_EXTENSION)?;
    let mut extension = DynamicMessage::new(raw_extension);
    extension.set_field_by_name("raw", Proto::Bytes(object.into()));
    let mut watch_event = DynamicMessage::new(descriptor);
    watch_event.set_field_by_name("type", Proto::String(event_type.to_string()));
    watch_event.set_field_by_name("object", Proto::Message(extension));
    Ok(watch_event.encode_to_vec())
}

/// A watch frame's content back as `{"type": ..., "object": ...}`.
pub fn decode_watch_event(bytes: &[u8]) -> Result<Value> {
    let descriptor = message(&format!("{META_PACKAGE}.WatchEvent"))?;
    let event = decode_message(&descriptor, bytes)?;
    let event_type = event
        .get_field_by_name("type")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let raw = event
        .get_field_by_name("object")
        .and_then(|v| {
            v.as_message()?
                .get_field_by_name("raw")?
                .as_bytes()
                .cloned()
        })
        .unwrap_or_default();
    Ok(json!({"type": event_type, "object": decode_object(&raw)?}))
}

/// Kubernetes' envelope around an encoded message `raw` of `kind`: `k8s\0`
/// and a `runtime.Unknown` naming its apiVersion and kind.
pub fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
    let unknown_descriptor = message(UNKNOWN)?;
    let type_meta_descriptor = message("apimachinery.pkg.runtime.TypeMeta")?;
    let mut type_meta = DynamicMessage::new(type_meta_descriptor);
    type_meta.set_field_by_name("apiVersion", Proto::String(api_version.to_string()));
    type_meta.set_field_by_name("kind", Proto::String(kind.to_string()));
    let mut unknown = DynamicMessage::new(unknown_descriptor);
    unknown.set_field_by_name("typeMeta", Proto::Message(type_meta));
    unknown.set_field_by_name("raw", Proto::Bytes(raw.into()));
    let mut bytes = MAGIC.to_vec();
    unknown
        .encode(&mut bytes)
        .map_err(|e| field_error("", format!("encoding the envelope: {e}")))?;
    Ok(bytes)
}

fn type_meta(object: &Value) -> Result<(&str, &str)> {
    let api_version = object["apiVersion"].as_str();
    let kind = object["kind"].as_str();
    match (api_version, kind) {
        (Some(api_version), Some(kind)) if object.is_object() => Ok((api_version, kind)),
        _ => Err(ProtobufError::NotAnObject),
    }
}

fn no_form(api_version: &str, kind: &str) -> ProtobufError {
    ProtobufError::NoProtobufForm {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    }
}

fn message(name: &str) -> Result<MessageDescriptor> {
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| field_error("", format!("the descriptors have no message {name}")))
}

fn decode_message(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage> {
    DynamicMessage::decode(descriptor.clone(), bytes).map_err(|source| ProtobufError::Decode {
        message: descriptor.full_name().to_string(),
        source,
    })
}

fn field_error(path: &str, message: impl Into<String>) -> ProtobufError {
    ProtobufError::Field {
        path: if path.is_empty() {
            "(object)".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
}

// ---- protobuf to JSON ----

/// A message as Kubernetes' JSON for it.
fn from_message(message: &DynamicMessage) -> Value {
    let descriptor = message.descriptor();
    let number = |name: &str| {
        message
            .get_field_by_name(name)
            .map(|v| match *v {
                Proto::I64(n) => n,
                Proto::I32(n) => i64::from(n),
                _ => 0,
            })
            .unwrap_or(0)
    };
    let text = |name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let bytes = |name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default()
    };
    match descriptor.full_name() {
        INT_OR_STRING => {
            if number("type") == 1 {
                json!(text("strVal"))
            } else {
                json!(number("intVal"))
            }
        }
        QUANTITY => json!(text("string")),
        TIME | MICRO_TIME => {
            let (seconds, nanos) = (number("seconds"), number("nanos"));
            if seconds == 0 && nanos == 0 {
                return Value::Null;
            }
            format_time(seconds, nanos, descriptor.full_name() == MICRO_TIME)
                .map_or(Value::Null, Value::String)
        }
        DURATION => json!(format_go_duration(number("duration"))),
        RAW_EXTENSION => raw_to_json(&bytes("raw")),
        FIELDS_V1 => raw_to_json(&bytes("Raw")),
        _ => {
            let mut object = Map::new();
            let embedded = embedded_fields(&descriptor);
            for field in descriptor.fields() {
                let value = message.get_field(&field);
                let json = if field.is_map() {
                    let Proto::Map(map) = value.as_ref() else {
                        continue;
                    };
                    if map.is_empty() {
                        continue;
                    }
                    let entries: Map<String, Value> = map
                        .iter()
                        .map(|(key, item)| (map_key_text(key), scalar_from_proto(item)))
                        .collect();
                    Value::Object(entries)
                } else if field.is_list() {
                    let Proto::List(items) = value.as_ref() else {
                        continue;
                    };
                    // A List's items are there even when there are none.
                    if items.is_empty() && field.name() != "items" {
                        continue;
                    }
                    Value::Array(items.iter().map(scalar_from_proto).collect())
                } else {
                    if !message.has_field(&field) {
                        continue;
                    }
                    scalar_from_proto(&value)
                };
                match &json {
                    Value::Null => continue,
                    Value::String(s) if s.is_empty() => continue,
                    Value::Number(n) if n.as_f64() == Some(0.0) && !keeps_zero(field.name()) => {
                        continue;
                    }
                    Value::Bool(false) if !keeps_zero(field.name()) => continue,
                    _ => {}
                }
                // An embedded struct's fields are its parent's in JSON.
                if embedded.contains(&field)
                    && let Value::Object(fields) = json
                {
                    object.extend(fields);
                    continue;
                }
                object.insert(field.name().to_string(), json);
            }
            Value::Object(object)
        }
    }
}

/// The fields that hold a struct Go embeds (`json:""` or `json:",inline"`):
/// `(message, field)`. In JSON their fields are the parent's own
/// (a Probe's `httpGet`, a Volume's `emptyDir`, a ConfigMapKeySelector's
/// `name`); in protobuf they are one nested message.
const EMBEDDED: &[(&str, &str)] = &[
    ("Probe", "handler"),
    ("Volume", "volumeSource"),
    ("PersistentVolumeSpec", "persistentVolumeSource"),
    ("EphemeralContainer", "ephemeralContainerCommon"),
    ("SecretProjection", "localObjectReference"),
    ("ConfigMapVolumeSource", "localObjectReference"),
    ("ConfigMapProjection", "localObjectReference"),
    ("ConfigMapKeySelector", "localObjectReference"),
    ("SecretKeySelector", "localObjectReference"),
    ("ConfigMapEnvSource", "localObjectReference"),
    ("SecretEnvSource", "localObjectReference"),
    ("IngressRule", "ingressRuleValue"),
    ("NamedRuleWithOperations", "ruleWithOperations"),
    ("RuleWithOperations", "rule"),
    ("DeviceClassConfiguration", "deviceConfiguration"),
];

/// The fields of `message` that hold a struct Go embeds ([`EMBEDDED`]):
/// none for all but a few messages, found by one name compare per entry
/// rather than per field (every message of a list passes here).
fn embedded_fields(message: &MessageDescriptor) -> Vec<prost_reflect::FieldDescriptor> {
    let name = message.name();
    EMBEDDED
        .iter()
        .filter(|(parent, _)| *parent == name)
        .filter_map(|(_, field)| message.get_field_by_name(field))
        .collect()
}

/// Fields Kubernetes declares as pointers (`*int32`, `*bool`), where a zero
/// or false that was sent means something (`replicas: 0`,
/// `automountServiceAccountToken: false`). Go writes these only when set;
/// every other number or boolean it writes always, and its JSON leaves a
/// zero or false out (`omitempty`), so it is left out here too.
const POINTER_SCALARS: &[&str] = &[
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "averageUtilization",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completions",
    "defaultMode",
    "deletionGracePeriodSeconds",
    "enableServiceLinks",
    "expirationSeconds",
    "failedJobsHistoryLimit",
    "fsGroup",
    "gracePeriodSeconds",
    "hostUsers",
    "immutable",
    "manualSelector",
    "maxFailedIndexes",
    "minReplicas",
    "mode",
    "optional",
    "parallelism",
    "partition",
    "priority",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "ready",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "serving",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "stabilizationWindowSeconds",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "suspend",
    "targetCPUUtilizationPercentage",
    "terminating",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
];

fn keeps_zero(field: &str) -> bool {
    POINTER_SCALARS.contains(&field)
}

fn scalar_from_proto(value: &Proto) -> Value {
    match value {
        Proto::Bool(b) => json!(b),
        Proto::I32(n) => json!(n),
        Proto::I64(n) => json!(n),
        Proto::U32(n) => json!(n),
        Proto::U64(n) => json!(n),
        Proto::F32(n) => json!(n),
        Proto::F64(n) => json!(n),
        Proto::String(s) => json!(s),
        Proto::Bytes(b) => json!(BASE64.encode(b)),
        Proto::EnumNumber(n) => json!(n),
        Proto::Message(m) => from_message(m),
        Proto::List(items) => Value::Array(items.iter().map(scalar_from_proto).collect()),
        Proto::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (map_key_text(k), scalar_from_proto(v)))
                .collect(),
        ),
    }
}

fn map_key_text(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// A RawExtension's bytes: a nested protobuf object, JSON text, or (when
/// they are neither) the bytes as base64, so nothing is lost silently.
fn raw_to_json(raw: &Bytes) -> Value {
    if raw.is_empty() {
        return Value::Null;
    }
    if raw.starts_with(MAGIC)
        && let Ok(object) = decode_object(raw)
    {
        return object;
    }
    serde_json::from_slice(raw).unwrap_or_else(|_| json!(BASE64.encode(raw)))
}

fn format_time(seconds: i64, nanos: i64, micro: bool) -> Option<String> {
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(seconds).ok()?))?;
    let whole = c4m_core::format_rfc3339(at);
    if !micro {
        return Some(whole);
    }
    let stem = whole.strip_suffix('Z')?;
    Some(format!("{stem}.{:06}Z", nanos / 1000))
}

/// Go's `time.Duration` text (`1h2m3.5s`, `300ms`) in nanoseconds.
fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    let nanos = total.round() as i64;
    Some(if negative { -nanos } else { nanos })
}

/// Nanoseconds as Go prints a `time.Duration` (`1h2m3.5s`, `300ms`, `0s`).
pub fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (value, unit) = if n < 1_000 {
            (n as f64, "ns")
        } else if n < 1_000_000 {
            (n as f64 / 1e3, "µs")
        } else {
            (n as f64 / 1e6, "ms")
        };
        return format!("{sign}{value}{unit}");
    }
    let hours = n / 3_600_000_000_000;
    let minutes = n / 60_000_000_000 % 60;
    let seconds = (n % 60_000_000_000) as f64 / 1e9;
    let mut text = String::from(sign);
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&format!("{seconds}s"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON → protobuf envelope → JSON gives the object back.
    fn round_trip(object: Value) -> Value {
        let bytes = encode_object(&object).unwrap();
        assert!(bytes.starts_with(MAGIC));
        decode_object(&bytes).unwrap()
    }

    #[test]
    fn descriptors_load_and_name_the_built_in_kinds() {
        assert!(pool().is_ok());
        for (api_version, kind) in [
            ("v1", "Pod"),
            ("v1", "Namespace"),
            ("v1", "SecretList"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "CronJob"),
            ("events.k8s.io/v1", "Event"),
            ("coordination.k8s.io/v1", "Lease"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("metrics.k8s.io/v1beta1", "PodMetrics"),
            ("v1", "Status"),
            ("meta.k8s.io/v1", "DeleteOptions"),
        ] {
            assert!(
                has_protobuf_form(api_version, kind),
                "{api_version} {kind} has no message"
            );
        }
        assert!(!has_protobuf_form("c4m.io/v1", "Microservice"));
        // A custom group whose kind happens to share a built-in name.
        assert!(!has_protobuf_form("apps.example.com/v1", "Deployment"));
        assert!(!has_protobuf_form("v1", "Widget"));
    }

    #[test]
    fn autoscalers_and_metrics_round_trip() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "64Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10, "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 4,
                "lastScaleTime": "2026-01-01T00:00:00Z",
                "currentMetrics": [{"type": "Resource", "resource": {"name": "memory",
                    "current": {"averageValue": "12Mi"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "SucceededRescale",
                    "message": "the HPA controller was able to update the target scale to 4"}]}});
        assert_eq!(round_trip(v2.clone()), v2);
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 1, "desiredReplicas": 1,
                "currentCPUUtilizationPercentage": 73}});
        assert_eq!(round_trip(v1.clone()), v1);
        let pods = json!({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetricsList",
            "metadata": {},
            "items": [{"metadata": {"name": "web-1", "namespace": "default",
                "creationTimestamp": "2026-01-01T00:00:01Z", "labels": {"app": "web"}},
                "timestamp": "2026-01-01T00:00:00Z", "window": "1.5s",
                "containers": [{"name": "app",
                    "usage": {"cpu": "250123456n", "memory": "5120Ki"}}]}]});
        assert_eq!(round_trip(pods.clone()), pods);
        let nodes = json!({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetricsList",
            "metadata": {},
            "items": [{"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:01Z"},
                "timestamp": "2026-01-01T00:00:00Z", "window": "2s",
                "usage": {"cpu": "1000000n", "memory": "1024Ki"}}]});
        assert_eq!(round_trip(nodes.clone()), nodes);
    }

    #[test]
    fn ephemeral_containers_keep_their_inline_fields() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "bb:1"}],
                "ephemeralContainers": [{"name": "debugger-x", "image": "bb:1",
                    "command": ["sh"], "stdin": true, "targetContainerName": "app"}]},
            "status": {"ephemeralContainerStatuses": [{"name": "debugger-x", "image": "bb:1",
                "ready": false, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}});
        assert_eq!(round_trip(pod.clone()), pod);
        // In protobuf, the container's fields are in ephemeralContainerCommon.
        let bytes = encode_object(&pod).unwrap();
        let descriptor = message_for("v1", "Pod").unwrap();
        let unknown = decode_message(&message(UNKNOWN).unwrap(), &bytes[MAGIC.len()..]).unwrap();
        let raw = unknown
            .get_field_by_name("raw")
            .unwrap()
            .as_bytes()
            .unwrap()
            .clone();
        let decoded = decode_message(&descriptor, &raw).unwrap();
        let spec = decoded.get_field_by_name("spec").unwrap();
        let spec = spec.as_message().unwrap();
        let list = spec.get_field_by_name("ephemeralContainers").unwrap();
        let first = list.as_list().unwrap()[0].as_message().unwrap().clone();
        let common = first.get_field_by_name("ephemeralContainerCommon").unwrap();
        let common = common.as_message().unwrap();
        assert_eq!(
            common.get_field_by_name("name").unwrap().as_str(),
            Some("debugger-x")
        );
    }

    #[test]
    fn namespace_round_trips_with_its_type_meta() {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "x", "labels": {"team": "a"}, "resourceVersion": "12"}});
        assert_eq!(round_trip(namespace.clone()), namespace);
    }

    #[test]
    fn int_or_string_round_trips_both_ways() {
        let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "named", "port": 81, "targetPort": "http"},
        ]}});
        assert_eq!(round_trip(service.clone()), service);
        // And on the wire it is Kubernetes' {type, intVal, strVal}.
        let port = &service["spec"]["ports"][1]["targetPort"];
        let descriptor = message(INT_OR_STRING).unwrap();
        let mut bytes = Vec::new();
        wire::write_message(&descriptor, port, &mut String::new(), &mut bytes).unwrap();
        let message = decode_message(&descriptor, &bytes).unwrap();
        assert_eq!(message.get_field_by_name("type").unwrap().as_i64(), Some(1));
        assert_eq!(
            message.get_field_by_name("strVal").unwrap().as_str(),
            Some("http")
        );
    }

    /// The wire writer's bytes are those prost writes for the same message:
    /// fields in number order, each of its wire type. (Maps have one entry
    /// here: a DynamicMessage writes its map in no fixed order.) Embedded
    /// structs (a probe's handler, a volume's source, a key selector's
    /// name) come back where JSON has them.
    #[test]
    fn written_bytes_are_the_canonical_encoding() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"},
                "creationTimestamp": "2026-01-02T03:04:05Z", "generation": 3,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web", "uid": "u", "controller": true}]},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30,
                "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}],
                "containers": [{"name": "c", "image": "busybox", "args": ["sleep", "-1"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "env": [{"name": "A", "valueFrom":
                        {"configMapKeyRef": {"name": "cm", "key": "a"}}}],
                    "resources": {"limits": {"cpu": "250m"}}}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2,
                    "state": {"running": {"startedAt": "2026-01-02T03:04:06Z"}}}]}});
        let descriptor = message_for("v1", "Pod").unwrap();
        let mut written = Vec::new();
        wire::write_message(&descriptor, &pod, &mut String::new(), &mut written).unwrap();
        let decoded = decode_message(&descriptor, &written).unwrap();
        assert_eq!(decoded.encode_to_vec(), written);
        assert_eq!(round_trip(pod.clone()), pod);
    }

    #[test]
    fn quantities_round_trip_as_text() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"},
                              "requests": {"cpu": "100m"}}}]}});
        assert_eq!(round_trip(pod.clone()), pod);
        // A number where a quantity goes is taken as its text.
        let mut numeric = pod.clone();
        numeric["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!(2);
        let back = round_trip(numeric);
        assert_eq!(
            back["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "2"
        );
    }

    #[test]
    fn times_round_trip_at_their_precision() {
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default",
                         "creationTimestamp": "2026-11-21T22:53:19Z"},
            "eventTime": "2026-11-21T22:53:19.123456Z",
            "reason": "Started", "note": "started", "type": "Normal", "action": "Start",
            "reportingController": "c4m", "reportingInstance": "c4m-1"});
        assert_eq!(round_trip(event.clone()), event);
        // Time keeps whole seconds.
        let mut fine = event.clone();
        fine["metadata"]["creationTimestamp"] = json!("2026-11-21T22:53:19.9Z");
        assert_eq!(
            round_trip(fine)["metadata"]["creationTimestamp"],
            "2026-11-21T22:53:19Z"
        );
        let mut bad = event;
        bad["eventTime"] = json!("yesterday");
        let error = encode_object(&bad).unwrap_err().to_string();
        assert!(
            error.contains("eventTime") && error.contains("RFC 3339"),
            "{error}"
        );
    }

    #[test]
    fn raw_extensions_round_trip_as_json() {
        let revision = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "web-1", "namespace": "default"},
            "data": {"spec": {"template": {"metadata": {"labels": {"app": "web"}}}}},
            "revision": 1});
        assert_eq!(round_trip(revision.clone()), revision);
        let managed = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "managedFields": [{"manager": "kubectl",
                "operation": "Apply", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}}, "time": "2026-01-02T03:04:05Z"}]},
            "data": {"a": "1"}});
        assert_eq!(round_trip(managed.clone()), managed);
    }

    #[test]
    fn secret_bytes_round_trip_as_base64() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "type": "Opaque",
            "data": {"password": BASE64.encode(b"s3cr\x00t\xff")}});
        assert_eq!(round_trip(secret.clone()), secret);
        let mut bad = secret;
        bad["data"]["password"] = json!("not base64!");
        let error = encode_object(&bad).unwrap_err().to_string();
        assert!(
            error.contains("data[password]") && error.contains("base64"),
            "{error}"
        );
    }

    #[test]
    fn durations_follow_go() {
        for (text, nanos) in [
            ("1h2m3.5s", 3_723_500_000_000),
            ("300ms", 300_000_000),
            ("0s", 0),
        ] {
            assert_eq!(parse_go_duration(text), Some(nanos), "{text}");
            assert_eq!(format_go_duration(nanos), text);
        }
        assert_eq!(parse_go_duration("5 minutes"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn lists_keep_their_items_and_watch_events_nest_envelopes() {
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "7"}, "items": []});
        assert_eq!(round_trip(list.clone()), list);
        let event = json!({"type": "ADDED", "object": {"apiVersion": "apps/v1",
            "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}});
        let frame = encode_watch_event(&event).unwrap();
        // The frame is a bare WatchEvent, not an envelope; its object is one.
        assert!(!frame.starts_with(MAGIC));
        assert_eq!(decode_watch_event(&frame).unwrap(), event);
    }

    #[test]
    fn zeros_go_as_go_json_has_them() {
        // As Go writes a Deployment: every non-pointer field, zero or not.
        let written = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 0},
            "spec": {"replicas": 0, "minReadySeconds": 0, "paused": false,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 0,
                        "automountServiceAccountToken": false,
                        "containers": [{"name": "web", "image": "nginx", "stdin": false,
                            "ports": [{"containerPort": 8080, "hostPort": 0}]}]}}}});
        let read = round_trip(written);
        let spec = &read["spec"];
        // Pointers keep their zero; the rest is left out, as omitempty does.
        assert_eq!(spec["replicas"], 0);
        assert_eq!(spec["template"]["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(
            spec["template"]["spec"]["automountServiceAccountToken"],
            false
        );
        assert!(spec.get("minReadySeconds").is_none() && spec.get("paused").is_none());
        let container = &spec["template"]["spec"]["containers"][0];
        assert!(container.get("stdin").is_none());
        assert_eq!(container["ports"], json!([{"containerPort": 8080}]));
        assert!(read["metadata"].get("generation").is_none());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_object(b"{}"),
            Err(ProtobufError::NoEnvelope)
        ));
        assert!(matches!(
            decode_object(b"k8s\0\xff\xff\xff"),
            Err(ProtobufError::Decode { .. })
        ));
        let custom = encode_object(&json!({"apiVersion": "c4m.io/v1", "kind": "Microservice",
            "metadata": {"name": "m"}}))
        .unwrap_err();
        assert!(custom.to_string().contains("JSON only"), "{custom}");
        // An envelope naming a kind with no protobuf form.
        let bytes = envelope("c4m.io/v1", "Microservice", Vec::new()).unwrap();
        assert!(matches!(
            decode_object(&bytes),
            Err(ProtobufError::NoProtobufForm { .. })
        ));
        let wrong_type = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": 5}});
        let error = encode_object(&wrong_type).unwrap_err().to_string();
        assert!(
            error.starts_with("metadata.name: 5 is not a string"),
            "{error}"
        );
        assert!(matches!(
            encode_object(&json!([1])),
            Err(ProtobufError::NotAnObject)
        ));
    }
}
