//! `Microservice` (`c4m.io/v1`): c4m's native kind, one service run as N
//! instances of a single container.
//!
//! Built from Kubernetes pieces (ObjectMeta, EnvVar, ContainerPort,
//! ResourceRequirements, Probe) so that users write what they already know.
//! Unknown fields are ignored by serde here; manifest validation reports them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, Probe, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A microservice: desired state (`spec`) and observed state (`status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Microservice {
    /// Always `c4m.io/v1`.
    #[serde(default = "Microservice::default_api_version")]
    pub api_version: String,
    /// Always `Microservice`.
    #[serde(default = "Microservice::default_kind")]
    pub kind: String,
    /// Name, namespace, labels, annotations...
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What should run.
    #[serde(default)]
    pub spec: MicroserviceSpec,
    /// What runs, as the controller last observed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MicroserviceStatus>,
}

impl Microservice {
    /// The `apiVersion` microservices carry.
    pub const API_VERSION: &'static str = "c4m.io/v1";
    /// The `kind` microservices carry.
    pub const KIND: &'static str = "Microservice";

    /// A microservice with this name and spec, no namespace and no status.
    pub fn new(name: impl Into<String>, spec: MicroserviceSpec) -> Self {
        Microservice {
            api_version: Self::API_VERSION.to_string(),
            kind: Self::KIND.to_string(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    fn default_api_version() -> String {
        Self::API_VERSION.to_string()
    }

    fn default_kind() -> String {
        Self::KIND.to_string()
    }
}

impl Default for Microservice {
    fn default() -> Self {
        Microservice::new(String::new(), MicroserviceSpec::default())
    }
}

/// The desired state of a microservice: one container, `replicas` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MicroserviceSpec {
    /// Image reference; optional for drivers that run host processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Entrypoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables, including `valueFrom` references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Working directory of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Numeric user id to run as (a Pod's `runAsUser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<i64>,
    /// How many instances should run (default 1).
    pub replicas: i32,
    /// CPU and memory requests and limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Ports the process listens on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Restarts an instance when it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Takes an instance out of its services while it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Node labels an instance's node must carry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Scheduling priority; higher places first (default 0). With a
    /// PriorityClass (named or the global default), it must be left at 0
    /// or equal the class's value.
    pub priority: i32,
    /// The PriorityClass that sets instances' priority and preemption policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// `Always` (default), `OnFailure` or `Never`.
    pub restart_policy: String,
    /// The runtime driver instances need (their `runtimeClassName`); unset,
    /// each node's default driver runs them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The VPC instances join (default: the `default` VPC); it matters to
    /// drivers that give instances a network namespace (`oci`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// Its instances' volumes (a pod's `volumes`: `c4m run --volume` adds
    /// a `persistentVolumeClaim`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Where its container mounts them (a container's `volumeMounts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

impl Default for MicroserviceSpec {
    fn default() -> Self {
        MicroserviceSpec {
            image: None,
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            replicas: 1,
            resources: None,
            ports: Vec::new(),
            liveness_probe: None,
            readiness_probe: None,
            node_selector: BTreeMap::new(),
            priority: 0,
            priority_class_name: None,
            vpc: None,
            restart_policy: "Always".to_string(),
            driver: None,
            volumes: Vec::new(),
            volume_mounts: Vec::new(),
        }
    }
}

/// The observed state of a microservice, written by its controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MicroserviceStatus {
    /// Instances that exist.
    pub replicas: i32,
    /// Instances that pass their readiness probe.
    pub ready_replicas: i32,
    /// Instances made from the current spec.
    pub updated_replicas: i32,
    /// The `metadata.generation` this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (`Available`, `Progressing`...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_to_a_minimal_manifest() {
        let ms: Microservice = serde_json::from_value(json!({
            "apiVersion": "c4m.io/v1",
            "kind": "Microservice",
            "metadata": {"name": "web"},
            "spec": {"command": ["./web"]}
        }))
        .unwrap();
        assert_eq!(ms.spec.replicas, 1);
        assert_eq!(ms.spec.driver, None);
        assert_eq!(ms.spec.restart_policy, "Always");
        assert_eq!(ms.spec.priority, 0);
        assert!(ms.status.is_none());
    }

    #[test]
    fn round_trips_through_json() {
        let manifest = json!({
            "apiVersion": "c4m.io/v1",
            "kind": "Microservice",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "front"}},
            "spec": {
                "image": "nginx:1.27",
                "command": ["nginx"],
                "args": ["-g", "daemon off;"],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ],
                "workingDir": "/srv",
                "user": 1000,
                "replicas": 3,
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                "readinessProbe": {"tcpSocket": {"port": "http"}},
                "nodeSelector": {"disk": "ssd"},
                "priority": 10,
                "restartPolicy": "OnFailure",
                "driver": "docker"
            },
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "observedGeneration": 4}
        });
        let ms: Microservice = serde_json::from_value(manifest.clone()).unwrap();
        assert_eq!(ms.spec.user, Some(1000));
        assert_eq!(ms.status.as_ref().unwrap().ready_replicas, 2);
        assert_eq!(serde_json::to_value(&ms).unwrap(), manifest);
    }

    #[test]
    fn serialises_without_empty_fields() {
        let ms = Microservice::new("api", MicroserviceSpec::default());
        assert_eq!(
            serde_json::to_value(&ms).unwrap(),
            json!({
                "apiVersion": "c4m.io/v1",
                "kind": "Microservice",
                "metadata": {"name": "api"},
                "spec": {"replicas": 1, "priority": 0, "restartPolicy": "Always"}
            })
        );
    }
}
