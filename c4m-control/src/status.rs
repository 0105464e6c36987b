//! Status writes checked against the kind's typed status, as Kubernetes
//! decodes a `PUT .../status` body into its Go type: a status that is not an
//! object, or a field of the wrong type (`phase: 5`, `conditions: "x"`), is a
//! 422 naming the field. Controllers read statuses as the types say they
//! are; what is not checked here is never stored.
//!
//! Fields the type does not know are kept, not refused: c4m's own controllers
//! and clients that round-trip an object may carry them, and Kubernetes
//! (without strict field validation) drops rather than refuses them.
//!
//! c4m has no CustomResourceDefinitions, so no status is checked against a
//! CRD schema; the Gateway API and snapshot kinds (served as c4m's own
//! kinds) are checked against the shapes below, those of their CRDs.

use c4m_core::ResourceKind;
use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Checks `status`, the whole `status` of an object of `kind`; a null
/// status (none sent) passes. The error is `(field path, message)`, the
/// path starting at `status`.
pub(crate) fn check(kind: &ResourceKind, status: &Value) -> Result<(), (String, String)> {
    if status.is_null() {
        return Ok(());
    }
    match checker(kind) {
        Some(check) => check(status),
        // A kind without a status type: its status must still be an object.
        None if status.is_object() => Ok(()),
        None => Err((
            "status".into(),
            format!(
                "must be an object, found {}",
                crate::json::json_type(status)
            ),
        )),
    }
}

type Checker = fn(&Value) -> Result<(), (String, String)>;

/// The typed check of `kind`'s status; None for a kind without one.
fn checker(kind: &ResourceKind) -> Option<Checker> {
    Some(match (kind.group, kind.version, kind.kind) {
        ("", _, "Namespace") => typed::<core::v1::NamespaceStatus>,
        ("", _, "Node") => typed::<core::v1::NodeStatus>,
        ("", _, "Pod") => typed::<core::v1::PodStatus>,
        ("", _, "Service") => typed::<core::v1::ServiceStatus>,
        ("", _, "PersistentVolume") => typed::<core::v1::PersistentVolumeStatus>,
        ("", _, "PersistentVolumeClaim") => typed::<core::v1::PersistentVolumeClaimStatus>,
        ("apps", _, "Deployment") => typed::<apps::v1::DeploymentStatus>,
        ("apps", _, "ReplicaSet") => typed::<apps::v1::ReplicaSetStatus>,
        ("apps", _, "DaemonSet") => typed::<apps::v1::DaemonSetStatus>,
        ("apps", _, "StatefulSet") => typed::<apps::v1::StatefulSetStatus>,
        ("c4m.io", _, "Microservice") => typed::<c4m_core::MicroserviceStatus>,
        ("batch", _, "Job") => typed::<batch::v1::JobStatus>,
        ("batch", _, "CronJob") => typed::<batch::v1::CronJobStatus>,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            typed::<autoscaling::v1::HorizontalPodAutoscalerStatus>
        }
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
            typed::<autoscaling::v2::HorizontalPodAutoscalerStatus>
        }
        ("policy", _, "PodDisruptionBudget") => typed::<policy::v1::PodDisruptionBudgetStatus>,
        ("networking.k8s.io", _, "Ingress") => typed::<networking::v1::IngressStatus>,
        ("gateway.networking.k8s.io", _, "GatewayClass") => typed::<GatewayClassStatus>,
        ("gateway.networking.k8s.io", _, "Gateway") => typed::<GatewayStatus>,
        ("gateway.networking.k8s.io", _, "HTTPRoute" | "GRPCRoute") => typed::<RouteStatus>,
        ("snapshot.storage.k8s.io", _, "VolumeSnapshot") => typed::<VolumeSnapshotStatus>,
        ("snapshot.storage.k8s.io", _, "VolumeSnapshotContent") => {
            typed::<VolumeSnapshotContentStatus>
        }
        _ => return None,
    })
}

/// Decodes `status` as `T`; a type error names its field under `status`.
fn typed<T: DeserializeOwned>(status: &Value) -> Result<(), (String, String)> {
    match serde_path_to_error::deserialize::<_, T>(status) {
        Ok(_) => Ok(()),
        Err(error) => {
            let path = error.path().to_string();
            let field = match path.as_str() {
                "." => "status".to_string(),
                _ if path.starts_with('[') => format!("status{path}"),
                _ => format!("status.{path}"),
            };
            Err((field, error.into_inner().to_string()))
        }
    }
}

// The Gateway API's statuses (gateway.networking.k8s.io/v1), the fields
// that have a type; every field optional, as a status being built is.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayClassStatus {
    #[serde(rename = "conditions")]
    _conditions: Option<Vec<Condition>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayStatus {
    #[serde(rename = "addresses")]
    _addresses: Option<Vec<GatewayStatusAddress>>,
    #[serde(rename = "conditions")]
    _conditions: Option<Vec<Condition>>,
    #[serde(rename = "listeners")]
    _listeners: Option<Vec<ListenerStatus>>,
}

#[derive(Deserialize)]
struct GatewayStatusAddress {
    #[serde(rename = "type")]
    _type: Option<String>,
    #[serde(rename = "value")]
    _value: String,
}

#[derive(Deserialize)]
struct ListenerStatus {
    #[serde(rename = "name")]
    _name: String,
    #[serde(rename = "supportedKinds")]
    _supported_kinds: Option<Vec<RouteGroupKind>>,
    #[serde(rename = "attachedRoutes")]
    _attached_routes: Option<i32>,
    #[serde(rename = "conditions")]
    _conditions: Option<Vec<Condition>>,
}

#[derive(Deserialize)]
struct RouteGroupKind {
    #[serde(rename = "group")]
    _group: Option<String>,
    #[serde(rename = "kind")]
    _kind: String,
}

/// HTTPRoute's and GRPCRoute's status.
#[derive(Deserialize)]
struct RouteStatus {
    #[serde(rename = "parents")]
    _parents: Option<Vec<RouteParentStatus>>,
}

#[derive(Deserialize)]
struct RouteParentStatus {
    #[serde(rename = "parentRef")]
    _parent_ref: ParentReference,
    #[serde(rename = "controllerName")]
    _controller_name: String,
    #[serde(rename = "conditions")]
    _conditions: Option<Vec<Condition>>,
}

#[derive(Deserialize)]
struct ParentReference {
    #[serde(rename = "group")]
    _group: Option<String>,
    #[serde(rename = "kind")]
    _kind: Option<String>,
    #[serde(rename = "namespace")]
    _namespace: Option<String>,
    #[serde(rename = "name")]
    _name: String,
    #[serde(rename = "sectionName")]
    _section_name: Option<String>,
    #[serde(rename = "port")]
    _port: Option<i32>,
}

// The CSI external-snapshotter's statuses (snapshot.storage.k8s.io/v1).

#[derive(Deserialize)]
struct VolumeSnapshotStatus {
    #[serde(rename = "boundVolumeSnapshotContentName")]
    _bound_content_name: Option<String>,
    #[serde(rename = "creationTime")]
    _creation_time: Option<String>,
    #[serde(rename = "readyToUse")]
    _ready_to_use: Option<bool>,
    #[serde(rename = "restoreSize")]
    _restore_size: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    #[serde(rename = "error")]
    _error: Option<VolumeSnapshotError>,
}

#[derive(Deserialize)]
struct VolumeSnapshotContentStatus {
    #[serde(rename = "snapshotHandle")]
    _snapshot_handle: Option<String>,
    /// Nanoseconds since the epoch, as the CSI snapshotter has it.
    #[serde(rename = "creationTime")]
    _creation_time: Option<i64>,
    /// Bytes.
    #[serde(rename = "restoreSize")]
    _restore_size: Option<i64>,
    #[serde(rename = "readyToUse")]
    _ready_to_use: Option<bool>,
    #[serde(rename = "error")]
    _error: Option<VolumeSnapshotError>,
}

#[derive(Deserialize)]
struct VolumeSnapshotError {
    #[serde(rename = "time")]
    _time: Option<String>,
    #[serde(rename = "message")]
    _message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(plural: &str) -> &'static ResourceKind {
        crate::objects::kind(plural)
    }

    /// Every kind with a status subresource has a typed status: a status
    /// written through it cannot be of any shape.
    #[test]
    fn every_status_subresource_is_typed() {
        for kind in c4m_core::KINDS
            .iter()
            .filter(|k| k.has_subresource("status"))
        {
            assert!(
                checker(kind).is_some(),
                "{} {} has a status subresource but no status type",
                kind.api_version(),
                kind.kind
            );
            assert_eq!(check(kind, &json!({})), Ok(()), "{}", kind.kind);
            assert_eq!(check(kind, &Value::Null), Ok(()), "{}", kind.kind);
            let (field, message) = check(kind, &json!("boom")).unwrap_err();
            assert_eq!(field, "status", "{}", kind.kind);
            assert!(message.contains("invalid type: string"), "{message}");
        }
    }

    #[test]
    fn a_wrong_field_is_named() {
        let pods = kind("pods");
        assert_eq!(
            check(pods, &json!({"phase": 5})),
            Err((
                "status.phase".into(),
                "invalid type: integer `5`, expected a string".into()
            ))
        );
        let (field, _) = check(pods, &json!({"conditions": "x"})).unwrap_err();
        assert_eq!(field, "status.conditions");
        let (field, _) = check(
            pods,
            &json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": 1}]}),
        )
        .unwrap_err();
        assert_eq!(field, "status.conditions[1].type");
        // What the type does not know is kept.
        assert_eq!(
            check(pods, &json!({"phase": "Running", "c4m": {"x": 1}})),
            Ok(())
        );
        let (field, _) = check(
            kind("httproutes"),
            &json!({"parents": [{"parentRef": {"name": "gw"}, "controllerName": 7}]}),
        )
        .unwrap_err();
        assert_eq!(field, "status.parents[0].controllerName");
        let (field, _) = check(
            kind("volumesnapshotcontents"),
            &json!({"restoreSize": "1Gi"}),
        )
        .unwrap_err();
        assert_eq!(field, "status.restoreSize");
        // Kinds without a status subresource: any object.
        assert_eq!(check(kind("configmaps"), &json!({"a": 1})), Ok(()));
        assert!(check(kind("configmaps"), &json!([1])).is_err());
    }
}
