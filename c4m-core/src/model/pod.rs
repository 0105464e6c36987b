//! Helpers over instances (Kubernetes Pods): building them from a
//! Microservice, which driver they need and what they request.

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, PodTemplateSpec, ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::microservice::Microservice;
use super::{annotations, labels};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};
use crate::{Error, Result};

/// The driver of host processes, which ignores a pod's image. Hollow nodes
/// offer it as their default; a real agent makes it its default only when
/// told so (`--default-driver process`) or when it offers no container
/// driver ([`AUTO_DRIVER`]).
pub const DEFAULT_DRIVER: &str = "process";

/// The default of an agent's `--default-driver`: the first of
/// [`CONTAINER_DRIVERS`] the node offers, so that a pod with an image runs
/// in a container wherever the node has a container driver; host processes
/// ([`DEFAULT_DRIVER`]) only on a node that offers none.
pub const AUTO_DRIVER: &str = "auto";

/// The drivers that run a pod's image in a container, in the order an agent
/// prefers them as its default ([`AUTO_DRIVER`]).
pub const CONTAINER_DRIVERS: [&str; 4] = ["oci", "containerd", "docker", "cri"];

/// The drivers that run one container per pod (Docker's and a CRI
/// runtime's sandbox are not shared with a second container by c4m).
pub const ONE_CONTAINER_DRIVERS: [&str; 2] = ["docker", "cri"];

/// Why a pod of several containers cannot run on `driver`.
pub fn one_container_per_pod(driver: &str) -> String {
    format!(
        "the {driver} driver runs one container per pod; use a driver that runs several (oci, containerd, process)"
    )
}

/// The default driver of a node offering `offered`, as its configuration
/// names it (`configured`): [`AUTO_DRIVER`] picks the first of
/// [`CONTAINER_DRIVERS`] offered, else [`DEFAULT_DRIVER`] if offered. `None`
/// when the driver is not offered.
pub fn resolve_default_driver<'a>(
    configured: &str,
    offered: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<&'a str> {
    let is_offered = |name: &str| offered.clone().into_iter().find(|o| *o == name);
    if configured != AUTO_DRIVER {
        return is_offered(configured);
    }
    CONTAINER_DRIVERS
        .iter()
        .find_map(|name| is_offered(name))
        .or_else(|| is_offered(DEFAULT_DRIVER))
}

/// The pod template a Microservice's instances are made from.
///
/// One container named after the microservice carries the process settings;
/// the pod's `runtimeClassName` records the driver the instance needs. The
/// microservice's labels are copied, and c4m's ownership labels override any
/// user label of the same key so that instances can always be found.
pub fn pod_template_for_microservice(ms: &Microservice) -> PodTemplateSpec {
    let name = ms.metadata.name.clone().unwrap_or_default();
    let spec = &ms.spec;

    let mut pod_labels = ms.metadata.labels.clone().unwrap_or_default();
    pod_labels.insert(labels::MICROSERVICE.to_string(), name.clone());
    pod_labels.insert(labels::OWNER.to_string(), format!("Microservice.{name}"));

    let container = Container {
        name,
        image: spec.image.clone(),
        command: non_empty(&spec.command),
        args: non_empty(&spec.args),
        env: non_empty(&spec.env),
        working_dir: spec.working_dir.clone(),
        ports: non_empty(&spec.ports),
        resources: spec.resources.clone(),
        liveness_probe: spec.liveness_probe.clone(),
        readiness_probe: spec.readiness_probe.clone(),
        volume_mounts: non_empty(&spec.volume_mounts),
        security_context: spec.user.map(|uid| SecurityContext {
            run_as_user: Some(uid),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: spec.vpc.as_ref().map(|vpc| {
                [(annotations::VPC.to_string(), vpc.clone())]
                    .into_iter()
                    .collect()
            }),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some(spec.restart_policy.clone()),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            // 0 is "unset": a PriorityClass then decides, where an explicit
            // 0 would contradict any class of another value.
            priority: (spec.priority != 0).then_some(spec.priority),
            priority_class_name: spec.priority_class_name.clone(),
            runtime_class_name: spec.driver.clone(),
            volumes: non_empty(&spec.volumes),
            ..PodSpec::default()
        }),
    }
}

/// `Some` of a copy unless empty: Kubernetes types leave empty lists unset.
fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The driver an instance asks for: its `runtimeClassName`; `None` when
/// unset or empty, and then the node's default driver runs it (so one
/// manifest runs unchanged on nodes of different drivers).
pub fn instance_driver(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.runtime_class_name.as_deref())
        .filter(|driver| !driver.is_empty())
}

/// What an instance asks the scheduler for, in integer units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// What the pod's containers request of CPU and memory, as Kubernetes
/// counts it: the app containers' sum plus the sidecars' (init containers
/// with `restartPolicy: Always`, which run beside them), or more if an init
/// container (with the sidecars started before it) asks more. A container
/// that sets a limit but no request for a resource requests its limit, as
/// in Kubernetes.
///
/// # Errors
/// [`Error::InvalidField`] naming the field
/// (`containers[1].resources.requests.cpu`) when a quantity does not parse,
/// [`Error::Invalid`] naming it when the sum overflows.
pub fn pod_requests(spec: &PodSpec) -> Result<Requests> {
    let mut total = Requests::default();
    for (index, container) in spec.containers.iter().enumerate() {
        let path = format!("containers[{index}].resources");
        total = total.plus(container_requests(container, &path)?, &path)?;
    }
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    let init = spec.init_containers.as_deref().unwrap_or_default();
    for (index, container) in init.iter().enumerate() {
        let path = format!("initContainers[{index}].resources");
        let requests = container_requests(container, &path)?;
        let while_it_runs = if container.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.plus(requests, &path)?;
            sidecars
        } else {
            sidecars.plus(requests, &path)?
        };
        init_peak = init_peak.max(while_it_runs);
    }
    Ok(total.plus(sidecars, "initContainers")?.max(init_peak))
}

impl Requests {
    /// Both summed; an overflow is an error naming `path`.
    fn plus(self, other: Requests, path: &str) -> Result<Requests> {
        Ok(Requests {
            cpu_millis: self
                .cpu_millis
                .checked_add(other.cpu_millis)
                .ok_or_else(|| {
                    Error::Invalid(format!("{path}.requests.cpu: total cpu overflows"))
                })?,
            memory_bytes: self
                .memory_bytes
                .checked_add(other.memory_bytes)
                .ok_or_else(|| {
                    Error::Invalid(format!("{path}.requests.memory: total memory overflows"))
                })?,
        })
    }

    /// The larger of each.
    fn max(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

/// One container's requests (`path` names its `resources`).
fn container_requests(
    container: &k8s_openapi::api::core::v1::Container,
    path: &str,
) -> Result<Requests> {
    let resources = container.resources.as_ref();
    Ok(Requests {
        cpu_millis: effective_request(resources, "cpu", path, parse_cpu_millis)?,
        memory_bytes: effective_request(resources, "memory", path, parse_memory_bytes)?,
    })
}

/// One resource's request, falling back to its limit; 0 when neither is set.
fn effective_request(
    resources: Option<&ResourceRequirements>,
    resource: &str,
    path: &str,
    parse: fn(&str) -> Result<u64>,
) -> Result<u64> {
    let found = resources.and_then(|r| {
        [
            ("requests", r.requests.as_ref()),
            ("limits", r.limits.as_ref()),
        ]
        .into_iter()
        .find_map(|(field, map)| Some((field, map?.get(resource)?)))
    });
    match found {
        None => Ok(0),
        Some((field, quantity)) => parse(&quantity.0).map_err(|err| Error::InvalidField {
            field: format!("{path}.{field}.{resource}"),
            source: Box::new(err),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::microservice::MicroserviceSpec;
    use serde_json::json;

    fn pod_spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn auto_default_prefers_a_container_driver() {
        let offered = ["process", "docker", "oci"];
        assert_eq!(resolve_default_driver(AUTO_DRIVER, offered), Some("oci"));
        assert_eq!(
            resolve_default_driver(AUTO_DRIVER, ["process", "cri", "containerd"]),
            Some("containerd")
        );
        // Host processes only where no container driver is offered.
        assert_eq!(
            resolve_default_driver(AUTO_DRIVER, ["process"]),
            Some("process")
        );
        assert_eq!(resolve_default_driver(AUTO_DRIVER, ["wasm"]), None);
        // A driver named by the operator is taken as it is, if offered.
        assert_eq!(resolve_default_driver("process", offered), Some("process"));
        assert_eq!(resolve_default_driver("docker", offered), Some("docker"));
        assert_eq!(resolve_default_driver("cri", offered), None);
    }

    #[test]
    fn template_carries_the_microservice() {
        let mut ms: Microservice = serde_json::from_value(json!({
            "apiVersion": "c4m.io/v1",
            "kind": "Microservice",
            "metadata": {"name": "web", "labels": {"tier": "front", "c4m.io/owner": "spoof"}},
            "spec": {
                "command": ["./web"], "args": ["--port", "8080"], "user": 1000,
                "env": [{"name": "A", "value": "1"}], "workingDir": "/srv",
                "ports": [{"containerPort": 8080}],
                "resources": {"requests": {"cpu": "250m"}},
                "readinessProbe": {"tcpSocket": {"port": 8080}},
                "nodeSelector": {"disk": "ssd"}, "priority": 5, "restartPolicy": "Never",
                "priorityClassName": "high"
            }
        }))
        .unwrap();
        ms.spec.driver = Some("docker".to_string());
        let template = pod_template_for_microservice(&ms);

        let template_labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(template_labels["tier"], "front");
        assert_eq!(template_labels[labels::MICROSERVICE], "web");
        assert_eq!(template_labels[labels::OWNER], "Microservice.web");

        let spec = template.spec.unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("docker"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.priority, Some(5));
        assert_eq!(spec.priority_class_name.as_deref(), Some("high"));
        assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
        let [container] = spec.containers.as_slice() else {
            panic!("expected one container");
        };
        assert_eq!(container.name, "web");
        assert_eq!(
            container.command.as_deref(),
            Some(&["./web".to_string()][..])
        );
        assert_eq!(container.args.as_ref().unwrap().len(), 2);
        assert_eq!(container.working_dir.as_deref(), Some("/srv"));
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
        assert!(container.readiness_probe.is_some());
        assert!(container.image.is_none());
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_user, Some(1000));
    }

    #[test]
    fn minimal_template_leaves_empty_lists_unset() {
        let ms = Microservice::new("api", MicroserviceSpec::default());
        let spec = pod_template_for_microservice(&ms).spec.unwrap();
        assert_eq!(spec.runtime_class_name, None, "the node's default driver");
        assert!(spec.node_selector.is_none());
        // Priority 0 is left to a PriorityClass (none named: the global default).
        assert!(spec.priority.is_none() && spec.priority_class_name.is_none());
        let container = &spec.containers[0];
        assert!(container.command.is_none() && container.env.is_none());
        assert!(container.security_context.is_none());
    }

    #[test]
    fn driver_is_the_runtime_class_or_the_nodes_default() {
        let mut pod = Pod::default();
        assert_eq!(instance_driver(&pod), None);
        pod.spec = Some(PodSpec {
            runtime_class_name: Some(String::new()),
            ..PodSpec::default()
        });
        assert_eq!(instance_driver(&pod), None);
        pod.spec.as_mut().unwrap().runtime_class_name = Some("docker".to_string());
        assert_eq!(instance_driver(&pod), Some("docker"));
    }

    #[test]
    fn requests_sum_containers_and_default_to_limits() {
        let spec = pod_spec(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                         "requests": {"memory": "128Mi"}}},
            {"name": "c"}
        ]}));
        assert_eq!(
            pod_requests(&spec).unwrap(),
            Requests {
                cpu_millis: 1250,
                memory_bytes: (64 << 20) + (128 << 20)
            }
        );
    }

    /// Kubernetes' effective requests: sidecars run beside the app, an init
    /// container beside the sidecars started before it.
    #[test]
    fn requests_count_sidecars_and_the_largest_init_container() {
        let cpu = |c: &str| json!({"requests": {"cpu": c}});
        let spec = pod_spec(json!({
            "initContainers": [
                {"name": "small", "resources": cpu("100m")},
                {"name": "proxy", "restartPolicy": "Always", "resources": cpu("200m")},
                {"name": "big", "resources": cpu("2")},
            ],
            "containers": [{"name": "app", "resources": cpu("500m")}],
        }));
        // big with the proxy beside it (2.2) is more than app + proxy (0.7).
        assert_eq!(pod_requests(&spec).unwrap().cpu_millis, 2200);
        let spec = pod_spec(json!({
            "initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "resources": cpu("200m")},
                {"name": "small", "resources": cpu("100m")},
            ],
            "containers": [{"name": "app", "resources": cpu("500m")}],
        }));
        assert_eq!(pod_requests(&spec).unwrap().cpu_millis, 700);
    }

    #[test]
    fn request_errors_name_the_field() {
        let spec = pod_spec(json!({"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"memory": "12Q"}}}
        ]}));
        let message = pod_requests(&spec).unwrap_err().to_string();
        assert_eq!(
            message,
            r#"containers[1].resources.limits.memory: invalid quantity "12Q": unknown suffix "Q""#
        );

        let spec = pod_spec(json!({"containers": [
            {"name": "a", "resources": {"requests": {"memory": "15Ei"}}},
            {"name": "b", "resources": {"requests": {"memory": "15Ei"}}}
        ]}));
        let message = pod_requests(&spec).unwrap_err().to_string();
        assert!(
            message.contains("containers[1].resources.requests.memory"),
            "{message}"
        );
    }
}
