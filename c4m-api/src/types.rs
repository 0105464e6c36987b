//! Request and response bodies the control plane's API and its clients share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Kubernetes `Status` object, the body of every API error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `Status`.
    #[serde(default)]
    pub kind: String,
    /// `Success` or `Failure`.
    #[serde(default)]
    pub status: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    #[serde(default)]
    pub reason: String,
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
}

/// One object of an apply, with where it came from for error messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyObject {
    /// File path or `<stdin>`.
    pub source: String,
    /// 1-based document number within the source.
    pub document: usize,
    /// The object as written.
    pub object: Value,
}

/// `POST /c4m/v1/apply`: create or update many objects, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRequest {
    /// The objects, in order.
    pub objects: Vec<ApplyObject>,
    /// Namespace for objects that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
}

/// What an apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// It did not exist and was created.
    Created,
    /// It existed and was changed.
    Configured,
    /// It existed and was already as applied.
    Unchanged,
}

/// The outcome for one applied object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Kind of the object.
    pub kind: String,
    /// Namespace, empty for cluster-scoped kinds.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub action: ApplyAction,
}

/// Response of `POST /c4m/v1/apply`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// One result per applied object, in order.
    pub results: Vec<ApplyResult>,
    /// Fields c4m accepted but cannot honour, each naming the object and field.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One ready endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInfo {
    /// The instance serving it.
    pub instance: String,
    /// The node it runs on.
    #[serde(default)]
    pub node: String,
    /// Address to connect to.
    pub ip: String,
    /// Port name (or the port number as text when unnamed) → port to connect to.
    pub ports: BTreeMap<String, u16>,
}

/// `GET /c4m/v1/namespaces/{ns}/services/{name}/endpoints`: the registry's
/// view of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEndpoints {
    /// Namespace of the service.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Ready endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// One event of a watch stream (`?watch=1`), as Kubernetes sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The object (a `Status` for `ERROR`).
    pub object: Value,
}
