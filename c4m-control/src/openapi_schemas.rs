//! OpenAPI v3 schemas of the Kubernetes kinds c4m serves, for `kubectl
//! explain`: derived from the `k8s-openapi` types (their `schemars`
//! implementations carry Kubernetes' own descriptions), named as the
//! Kubernetes API names them (`io.k8s.api.apps.v1.Deployment`), each kind
//! marked with `x-kubernetes-group-version-kind`, and lists that merge by a
//! key marked with `x-kubernetes-patch-merge-key`, as kubectl's apply reads
//! them. c4m's own Microservice has no schema here.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use c4m_core::{KINDS, ResourceKind};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// Adds the schema of `kind` (and of every type it uses) to `generator`;
/// returns its schema name, or None for a kind without one.
fn add_kind(generator: &mut SchemaGenerator, kind: &ResourceKind) -> Option<String> {
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> Option<String> {
        let _: Schema = generator.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
    match kind.kind {
        "Namespace" => add::<Namespace>(generator),
        "Node" => add::<Node>(generator),
        "Pod" => add::<Pod>(generator),
        "Service" => add::<Service>(generator),
        "Endpoints" => add::<Endpoints>(generator),
        "EndpointSlice" => add::<k8s_openapi::api::discovery::v1::EndpointSlice>(generator),
        "ConfigMap" => add::<ConfigMap>(generator),
        "Secret" => add::<Secret>(generator),
        "ServiceAccount" => add::<ServiceAccount>(generator),
        "Event" if kind.group == "events.k8s.io" => {
            add::<k8s_openapi::api::events::v1::Event>(generator)
        }
        "Event" => add::<Event>(generator),
        "Lease" => add::<k8s_openapi::api::coordination::v1::Lease>(generator),
        "Deployment" => add::<Deployment>(generator),
        "ReplicaSet" => add::<ReplicaSet>(generator),
        "PriorityClass" => add::<PriorityClass>(generator),
        "PodDisruptionBudget" => add::<PodDisruptionBudget>(generator),
        "PersistentVolume" => add::<k8s_openapi::api::core::v1::PersistentVolume>(generator),
        "PersistentVolumeClaim" => {
            add::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(generator)
        }
        "StorageClass" => add::<k8s_openapi::api::storage::v1::StorageClass>(generator),
        "Ingress" => add::<k8s_openapi::api::networking::v1::Ingress>(generator),
        "IngressClass" => add::<k8s_openapi::api::networking::v1::IngressClass>(generator),
        "Job" => add::<k8s_openapi::api::batch::v1::Job>(generator),
        "DaemonSet" => add::<k8s_openapi::api::apps::v1::DaemonSet>(generator),
        "CronJob" => add::<k8s_openapi::api::batch::v1::CronJob>(generator),
        "HorizontalPodAutoscaler" if kind.version == "v1" => {
            add::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(generator)
        }
        "HorizontalPodAutoscaler" => {
            add::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(generator)
        }
        _ => None,
    }
}

/// `components.schemas` of a group version's OpenAPI v3 document, made
/// once (kubectl reads them on every `apply` and `explain`).
pub(crate) fn schemas(group: &str, version: &str) -> Map<String, Value> {
    type ByGroupVersion = HashMap<(String, String), Map<String, Value>>;
    static MADE: LazyLock<Mutex<ByGroupVersion>> = LazyLock::new(Mutex::default);
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    made.entry((group.to_string(), version.to_string()))
        .or_insert_with(|| make_schemas(group, version))
        .clone()
}

fn make_schemas(group: &str, version: &str) -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for kind in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        if let Some(name) = add_kind(&mut generator, kind) {
            kinds.push((name, kind));
        }
    }
    let mut schemas = generator.take_definitions(true);
    for (name, kind) in kinds {
        if let Some(schema) = schemas.get_mut(&name) {
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}]);
        }
    }
    for (name, schema) in schemas.iter_mut() {
        mark_merge_keys(name, schema);
    }
    schemas
}

/// Marks the lists of a schema that merge by key (the keys strategic merge
/// patch uses, `patch.rs`).
fn mark_merge_keys(schema_name: &str, schema: &mut Value) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        if property["type"] != "array" {
            continue;
        }
        // Container ports merge by containerPort, Service ports by port.
        let example = if schema_name.ends_with("Container") {
            json!({"containerPort": 0})
        } else {
            json!({})
        };
        if let Some(key) = crate::patch::merge_key(field, std::slice::from_ref(&example)) {
            property["x-kubernetes-patch-merge-key"] = json!(key);
            property["x-kubernetes-patch-strategy"] = json!("merge");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_described_schemas_with_their_group_version_kind() {
        let apps = schemas("apps", "v1");
        let deployment = &apps["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert!(
            deployment["description"]
                .as_str()
                .is_some_and(|d| d.contains("Deployment"))
        );
        // References point into the same document, as kubectl resolves them.
        let spec = &deployment["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(apps.contains_key("io.k8s.api.apps.v1.ReplicaSet"));
        assert!(apps.contains_key("io.k8s.api.core.v1.PodSpec"));
        let pod_spec = &apps["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(
            pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let container = &apps["io.k8s.api.core.v1.Container"];
        assert_eq!(
            container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        let core = schemas("", "v1");
        assert!(core.contains_key("io.k8s.api.core.v1.Pod"));
        assert_eq!(
            core["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "port"
        );
        assert!(schemas("c4m.io", "v1").is_empty());
        let networking = schemas("networking.k8s.io", "v1");
        assert!(networking.contains_key("io.k8s.api.networking.v1.Ingress"));
        assert!(networking.contains_key("io.k8s.api.networking.v1.IngressClass"));
        // Gateway API kinds are CRDs in Kubernetes: JSON, no built-in schema.
        assert!(schemas("gateway.networking.k8s.io", "v1").is_empty());
    }
}
