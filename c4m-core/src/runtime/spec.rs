//! From an instance (a Pod) to the [`ContainerSpec`] a driver runs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{ContainerSpec, PortSpec, PullPolicy, ResourceLimits};
use crate::{Error, Result};

/// One of a pod's containers: `spec.containers[i]`,
/// `spec.initContainers[i]` or `spec.ephemeralContainers[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodContainer {
    /// An init container (`spec.initContainers[i]`), run before the app
    /// containers; a sidecar when its `restartPolicy` is `Always`.
    Init(usize),
    /// An app container (`spec.containers[i]`).
    App(usize),
    /// An ephemeral container (`spec.ephemeralContainers[i]`, added by
    /// `kubectl debug`): run once, never restarted.
    Ephemeral(usize),
}

impl PodContainer {
    /// The container's spec in `pod`, if it has one there (an ephemeral
    /// container's as a [`Container`], without `targetContainerName`).
    pub fn of(self, pod: &Pod) -> Option<Cow<'_, Container>> {
        let spec = pod.spec.as_ref()?;
        match self {
            PodContainer::Init(i) => spec.init_containers.as_ref()?.get(i).map(Cow::Borrowed),
            PodContainer::App(i) => spec.containers.get(i).map(Cow::Borrowed),
            PodContainer::Ephemeral(i) => {
                let ephemeral = spec.ephemeral_containers.as_ref()?.get(i)?;
                Some(Cow::Owned(as_container(ephemeral)))
            }
        }
    }

    /// The field that holds its list (`spec.containers`), as Events' `fieldPath` names
    /// a container: `spec.containers{NAME}`.
    pub fn list_field(self) -> &'static str {
        match self {
            PodContainer::Init(_) => "spec.initContainers",
            PodContainer::App(_) => "spec.containers",
            PodContainer::Ephemeral(_) => "spec.ephemeralContainers",
        }
    }
}

impl fmt::Display for PodContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodContainer::Init(i) | PodContainer::App(i) | PodContainer::Ephemeral(i) => {
                write!(f, "{}[{i}]", self.list_field())
            }
        }
    }
}

/// An ephemeral container as the container it runs as: the same fields,
/// but its target.
fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        args: e.args.clone(),
        command: e.command.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        image: e.image.clone(),
        image_pull_policy: e.image_pull_policy.clone(),
        lifecycle: e.lifecycle.clone(),
        liveness_probe: e.liveness_probe.clone(),
        name: e.name.clone(),
        ports: e.ports.clone(),
        readiness_probe: e.readiness_probe.clone(),
        resize_policy: e.resize_policy.clone(),
        resources: e.resources.clone(),
        restart_policy: e.restart_policy.clone(),
        security_context: e.security_context.clone(),
        startup_probe: e.startup_probe.clone(),
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        termination_message_path: e.termination_message_path.clone(),
        termination_message_policy: e.termination_message_policy.clone(),
        tty: e.tty,
        volume_devices: e.volume_devices.clone(),
        volume_mounts: e.volume_mounts.clone(),
        working_dir: e.working_dir.clone(),
    }
}

impl ContainerSpec {
    /// The spec of the pod's first container, with id `id`.
    ///
    /// Environment variables must have literal values: the control plane
    /// resolves `valueFrom` before the agent gets the pod. A request that is
    /// not given defaults to the limit, as the Kubernetes API server does.
    /// Errors name the field (`spec.containers[0].resources.limits.memory:
    /// invalid quantity "12Q": ...`).
    pub fn from_pod(pod: &Pod, id: String) -> Result<ContainerSpec> {
        ContainerSpec::for_container(pod, PodContainer::App(0), id)
    }

    /// The spec of the pod's container `which`, with id `id`; as
    /// [`ContainerSpec::from_pod`] for the first.
    pub fn for_container(pod: &Pod, which: PodContainer, id: String) -> Result<ContainerSpec> {
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| invalid("spec", "missing"))?;
        let path = which.to_string();
        let container = which.of(pod).ok_or_else(|| match which {
            PodContainer::App(0) => invalid("spec.containers", "no container"),
            _ => invalid(&path, "no such container"),
        })?;
        let path = path.as_str();
        let pod_security = spec.security_context.as_ref();
        let container_security = container.security_context.as_ref();
        let user = container_security
            .and_then(|s| s.run_as_user)
            .map(|uid| (uid, "securityContext.runAsUser"))
            .or_else(|| {
                pod_security
                    .and_then(|s| s.run_as_user)
                    .map(|uid| (uid, "spec.securityContext.runAsUser"))
            });
        let group = container_security
            .and_then(|s| s.run_as_group)
            .map(|gid| (gid, "securityContext.runAsGroup"))
            .or_else(|| {
                pod_security
                    .and_then(|s| s.run_as_group)
                    .map(|gid| (gid, "spec.securityContext.runAsGroup"))
            });
        Ok(ContainerSpec {
            id,
            image: container.image.clone(),
            command: container.command.clone().unwrap_or_default(),
            args: container.args.clone().unwrap_or_default(),
            env: env(&container, path)?,
            working_dir: container.working_dir.as_ref().map(PathBuf::from),
            user: user.map(|u| id_from(u, path)).transpose()?,
            group: group.map(|g| id_from(g, path)).transpose()?,
            ports: ports(&container, path)?,
            resources: resources(&container, path)?,
            network_namespace: None,
            privileged: container_security
                .and_then(|s| s.privileged)
                .unwrap_or(false),
            read_only_root_filesystem: container_security
                .and_then(|s| s.read_only_root_filesystem)
                .unwrap_or(false),
            hostname: Some(crate::pod_etc::pod_hostname(pod)),
            pull_policy: PullPolicy::of(
                container.image_pull_policy.as_deref(),
                container.image.as_deref(),
            )
            .map_err(|e| invalid(&format!("{path}.imagePullPolicy"), e))?,
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            pull_credentials: container
                .image
                .as_deref()
                .and_then(|image| crate::registry_login(pod, image)),
            ..ContainerSpec::default()
        })
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: {message}"))
}

/// A uid or gid; `field` is relative to the container unless it starts
/// with `spec.`.
fn id_from((value, field): (i64, &str), container_path: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        let path = if field.starts_with("spec.") {
            field.to_string()
        } else {
            format!("{container_path}.{field}")
        };
        invalid(&path, format!("{value} is not a valid id"))
    })
}

fn env(container: &Container, container_path: &str) -> Result<Vec<(String, String)>> {
    let vars = container.env.as_deref().unwrap_or_default();
    vars.iter()
        .enumerate()
        .map(|(i, var)| {
            if var.value_from.is_some() {
                return Err(invalid(
                    &format!("{container_path}.env[{i}]"),
                    format!(
                        "variable {} still has valueFrom: the control plane must resolve it before the pod reaches the agent",
                        var.name
                    ),
                ));
            }
            Ok((var.name.clone(), var.value.clone().unwrap_or_default()))
        })
        .collect()
}

fn ports(container: &Container, container_path: &str) -> Result<Vec<PortSpec>> {
    let ports = container.ports.as_deref().unwrap_or_default();
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let container_port = u16::try_from(port.container_port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| {
                    invalid(
                        &format!("{container_path}.ports[{i}].containerPort"),
                        format!("{} is not a port number", port.container_port),
                    )
                })?;
            Ok(PortSpec {
                name: port.name.clone().unwrap_or_default(),
                container_port,
                protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect()
}

fn resources(container: &Container, container_path: &str) -> Result<ResourceLimits> {
    let resources = container.resources.as_ref();
    let empty = BTreeMap::new();
    let limits = resources.and_then(|r| r.limits.as_ref()).unwrap_or(&empty);
    let requests = resources
        .and_then(|r| r.requests.as_ref())
        .unwrap_or(&empty);
    let quantity = |map: &BTreeMap<String, Quantity>,
                    section: &str,
                    name: &str,
                    parse: fn(&str) -> Result<u64>|
     -> Result<Option<u64>> {
        map.get(name)
            .map(|q| {
                parse(&q.0).map_err(|e| {
                    invalid(&format!("{container_path}.resources.{section}.{name}"), e)
                })
            })
            .transpose()
    };
    let cpu_limit = quantity(limits, "limits", "cpu", crate::parse_cpu_millis)?;
    let memory_limit = quantity(limits, "limits", "memory", crate::parse_memory_bytes)?;
    let cpu_request = quantity(requests, "requests", "cpu", crate::parse_cpu_millis)?;
    let memory_request = quantity(requests, "requests", "memory", crate::parse_memory_bytes)?;
    Ok(ResourceLimits {
        cpu_request_millis: cpu_request.or(cpu_limit).unwrap_or(0),
        cpu_limit_millis: cpu_limit,
        memory_request_bytes: memory_request.or(memory_limit).unwrap_or(0),
        memory_limit_bytes: memory_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn takes_the_first_container() {
        let pod = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: web
    image: nginx:1.27
    command: [/usr/bin/web]
    args: [--verbose]
    workingDir: /srv
    env:
    - {name: MODE, value: prod}
    - {name: EMPTY}
    ports:
    - {containerPort: 8080, name: http}
    - {containerPort: 9000, protocol: UDP}
    securityContext: {runAsUser: 65534}
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: "1", memory: 128Mi}
  - name: sidecar
    image: busybox
"#);
        let spec = ContainerSpec::from_pod(&pod, "web-0".into()).unwrap();
        assert_eq!(
            spec,
            ContainerSpec {
                id: "web-0".into(),
                image: Some("nginx:1.27".into()),
                command: vec!["/usr/bin/web".into()],
                args: vec!["--verbose".into()],
                env: vec![
                    ("MODE".into(), "prod".into()),
                    ("EMPTY".into(), String::new())
                ],
                working_dir: Some("/srv".into()),
                user: Some(65534),
                group: Some(1000),
                ports: vec![
                    PortSpec {
                        name: "http".into(),
                        container_port: 8080,
                        protocol: "TCP".into()
                    },
                    PortSpec {
                        name: String::new(),
                        container_port: 9000,
                        protocol: "UDP".into()
                    },
                ],
                resources: ResourceLimits {
                    cpu_request_millis: 250,
                    cpu_limit_millis: Some(1000),
                    memory_request_bytes: 64 << 20,
                    memory_limit_bytes: Some(128 << 20),
                },
                network_namespace: None,
                privileged: false,
                read_only_root_filesystem: false,
                hostname: Some("web-0".into()),
                pull_policy: PullPolicy::IfNotPresent,
                ..ContainerSpec::default()
            }
        );
    }

    #[test]
    fn requests_default_to_limits() {
        let pod = pod(r#"
spec:
  containers:
  - name: a
    resources: {limits: {cpu: 500m, memory: 1Gi}}
"#);
        let spec = ContainerSpec::from_pod(&pod, "a".into()).unwrap();
        assert_eq!(spec.resources.cpu_request_millis, 500);
        assert_eq!(spec.resources.memory_request_bytes, 1 << 30);
        assert_eq!(spec.user, None);
        assert!(spec.command.is_empty());
    }

    #[test]
    fn pull_policy_defaults_as_kubernetes_does() {
        let policy = |image: &str, policy: &str| {
            let policy = if policy.is_empty() {
                String::new()
            } else {
                format!(", imagePullPolicy: {policy}")
            };
            ContainerSpec::from_pod(
                &pod(&format!(
                    "spec: {{containers: [{{name: a, image: {image:?}{policy}}}]}}"
                )),
                "a".into(),
            )
            .map(|spec| spec.pull_policy)
        };
        assert_eq!(policy("busybox", "").unwrap(), PullPolicy::Always);
        assert_eq!(policy("busybox:latest", "").unwrap(), PullPolicy::Always);
        assert_eq!(
            policy("127.0.0.1:5000/bb:latest", "").unwrap(),
            PullPolicy::Always
        );
        assert_eq!(
            policy("busybox:1.36", "").unwrap(),
            PullPolicy::IfNotPresent
        );
        let digest = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(policy(&digest, "").unwrap(), PullPolicy::IfNotPresent);
        assert_eq!(
            policy("busybox", "IfNotPresent").unwrap(),
            PullPolicy::IfNotPresent
        );
        assert_eq!(policy("busybox:1", "Always").unwrap(), PullPolicy::Always);
        assert_eq!(policy("busybox:1", "Never").unwrap(), PullPolicy::Never);
        assert_eq!(
            policy("busybox:1", "Sometimes").unwrap_err().to_string(),
            "spec.containers[0].imagePullPolicy: \"Sometimes\" is not one of Always, IfNotPresent, Never"
        );
        let named = pod("metadata: {name: web-0}\nspec: {hostname: db, containers: [{name: a}]}");
        let spec = ContainerSpec::from_pod(&named, "a".into()).unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db"));
    }

    #[test]
    fn errors_name_the_field() {
        let error = |yaml: &str| {
            ContainerSpec::from_pod(&pod(yaml), "x".into())
                .unwrap_err()
                .to_string()
        };
        let message = error("spec: {containers: [{name: a, resources: {limits: {memory: 12Q}}}]}");
        assert!(
            message.starts_with(
                "spec.containers[0].resources.limits.memory: invalid quantity \"12Q\""
            ),
            "{message}"
        );
        let message = error(
            "spec: {containers: [{name: a, env: [{name: A, value: b}, {name: SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]}",
        );
        assert!(
            message.starts_with("spec.containers[0].env[1]: variable SECRET still has valueFrom"),
            "{message}"
        );
        let message = error("spec: {containers: [{name: a, ports: [{containerPort: 70000}]}]}");
        assert_eq!(
            message,
            "spec.containers[0].ports[0].containerPort: 70000 is not a port number"
        );
        let message = error("spec: {securityContext: {runAsUser: -1}, containers: [{name: a}]}");
        assert_eq!(
            message,
            "spec.securityContext.runAsUser: -1 is not a valid id"
        );
        assert_eq!(
            error("spec: {containers: []}"),
            "spec.containers: no container"
        );
        assert_eq!(error("metadata: {name: a}"), "spec: missing");
    }

    /// Any container of the pod, init containers too; errors name it.
    #[test]
    fn takes_any_container_and_errors_name_it() {
        let pod = pod(r#"
metadata: {name: web}
spec:
  initContainers:
  - {name: setup, image: bb:1, command: [sh, -c, "true"]}
  - {name: bad, image: bb:1, ports: [{containerPort: 0}]}
  containers:
  - {name: web, image: web:1}
  - {name: metrics, image: m:1, args: [--port, "9090"]}
"#);
        let spec = |which| ContainerSpec::for_container(&pod, which, "id".into());
        assert_eq!(
            spec(PodContainer::Init(0)).unwrap().command,
            ["sh", "-c", "true"]
        );
        assert_eq!(spec(PodContainer::App(1)).unwrap().args, ["--port", "9090"]);
        assert_eq!(
            spec(PodContainer::App(1)).unwrap().hostname.as_deref(),
            Some("web")
        );
        assert_eq!(
            spec(PodContainer::Init(1)).unwrap_err().to_string(),
            "spec.initContainers[1].ports[0].containerPort: 0 is not a port number"
        );
        assert_eq!(
            spec(PodContainer::App(2)).unwrap_err().to_string(),
            "spec.containers[2]: no such container"
        );
        assert_eq!(PodContainer::Init(1).to_string(), "spec.initContainers[1]");
    }
}
