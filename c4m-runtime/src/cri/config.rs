//! From a [`ContainerSpec`] to the CRI requests that run it: one pod
//! sandbox per container, and the container in it.

use std::collections::HashMap;
use std::path::Path;

use super::api::{
    ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
use crate::{Error, Result};
use c4m_cgroups::{CFS_PERIOD_US, cfs_quota_us, cpu_shares};
use c4m_core::ContainerSpec;

/// The label naming the c4m container a sandbox or container belongs to.
pub(super) const CONTAINER_LABEL: &str = "io.c4m.container";
/// The annotation keeping the container's spec (JSON), so a fresh driver
/// rebuilds it from the runtime alone.
pub(super) const SPEC_ANNOTATION: &str = "io.c4m.spec";
/// The sandbox namespace (in the CRI's metadata, not a Linux namespace).
pub(super) const SANDBOX_NAMESPACE: &str = "c4m";
/// The container's log file, relative to its sandbox's log directory.
pub(super) const LOG_FILE: &str = "container.log";

/// The namespaces of every c4m sandbox and container: the node's network
/// (the CRI cannot join a network namespace the agent made), a process
/// namespace of the container's own (its command is pid 1, as with the
/// `oci` driver), IPC shared with the sandbox.
fn namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node.into(),
        pid: NamespaceMode::Container.into(),
        ipc: NamespaceMode::Pod.into(),
        ..Default::default()
    }
}

fn labels(id: &str) -> HashMap<String, String> {
    HashMap::from([(CONTAINER_LABEL.to_string(), id.to_string())])
}

/// The spec as the [`SPEC_ANNOTATION`] carries it.
fn spec_annotation(spec: &ContainerSpec) -> Result<HashMap<String, String>> {
    let json =
        serde_json::to_string(spec).map_err(|e| Error::container(&spec.id, "serialize spec", e))?;
    Ok(HashMap::from([(SPEC_ANNOTATION.to_string(), json)]))
}

/// The spec in the [`SPEC_ANNOTATION`] of runtime object `what` (of c4m
/// container `id`).
pub(super) fn spec_from(
    annotations: &HashMap<String, String>,
    id: &str,
    what: &str,
) -> Result<ContainerSpec> {
    let json = annotations
        .get(SPEC_ANNOTATION)
        .ok_or_else(|| Error::Runtime {
            id: id.to_string(),
            message: format!("{what} has no {SPEC_ANNOTATION} annotation"),
        })?;
    serde_json::from_str(json).map_err(|e| {
        Error::container(
            id,
            format!("{what}: annotation {SPEC_ANNOTATION} is not a container spec"),
            e,
        )
    })
}

/// The sandbox of container `spec.id`, logging under `log_directory`; it
/// carries the spec too, so a sandbox whose container was never created
/// (an agent that died in between) is still found and described.
pub(super) fn sandbox_config(
    spec: &ContainerSpec,
    log_directory: &Path,
) -> Result<PodSandboxConfig> {
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: spec.id.clone(),
            uid: spec.id.clone(),
            namespace: SANDBOX_NAMESPACE.to_string(),
            attempt: 0,
        }),
        log_directory: log_directory.display().to_string(),
        labels: labels(&spec.id),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                // A privileged container needs a privileged sandbox.
                privileged: spec.privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        annotations: spec_annotation(spec)?,
        ..Default::default()
    })
}

/// The container of `spec`, its `attempt`th run in its sandbox.
pub(super) fn container_config(
    spec: &ContainerSpec,
    image: &str,
    attempt: u32,
    swap_accounting: bool,
) -> Result<ContainerConfig> {
    if spec.group.is_some() && spec.user.is_none() {
        return Err(Error::Runtime {
            id: spec.id.clone(),
            message: "the cri driver needs runAsUser with runAsGroup (CRI runtimes refuse a group without a user)".into(),
        });
    }
    let id_value = |id: Option<u32>| {
        id.map(|value| Int64Value {
            value: value.into(),
        })
    };
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: spec.id.clone(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        // Kubernetes' rules: the runtime merges these with the image's
        // entrypoint and cmd.
        command: spec.command.clone(),
        args: spec.args.clone(),
        working_dir: spec
            .working_dir
            .as_ref()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default(),
        envs: spec
            .env
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        labels: labels(&spec.id),
        annotations: spec_annotation(spec)?,
        log_path: LOG_FILE.to_string(),
        mounts: spec
            .ordered_mounts()
            .into_iter()
            .map(|mount| Mount {
                container_path: mount.destination.display().to_string(),
                host_path: mount.source.display().to_string(),
                readonly: mount.read_only,
                propagation: match mount.propagation {
                    c4m_core::MountPropagation::None => MountPropagation::PropagationPrivate,
                    c4m_core::MountPropagation::HostToContainer => {
                        MountPropagation::PropagationHostToContainer
                    }
                    c4m_core::MountPropagation::Bidirectional => {
                        MountPropagation::PropagationBidirectional
                    }
                }
                .into(),
                ..Default::default()
            })
            .collect(),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(spec, swap_accounting)),
            security_context: Some(LinuxContainerSecurityContext {
                privileged: spec.privileged,
                namespace_options: Some(namespace_options()),
                run_as_user: id_value(spec.user),
                run_as_group: id_value(spec.group),
                readonly_rootfs: spec.read_only_root_filesystem,
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// Limits as the `oci` driver sets them: shares from the request, a CFS
/// quota from the limit, and memory (+swap where the host accounts it, so
/// swapping cannot hide an OOM).
fn resources(spec: &ContainerSpec, swap_accounting: bool) -> LinuxContainerResources {
    let limits = &spec.resources;
    let int = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let memory = limits.memory_limit_bytes.map_or(0, int);
    LinuxContainerResources {
        cpu_shares: int(cpu_shares(limits.cpu_request_millis)),
        cpu_period: limits.cpu_limit_millis.map_or(0, |_| int(CFS_PERIOD_US)),
        cpu_quota: limits
            .cpu_limit_millis
            .map_or(0, |millis| int(cfs_quota_us(millis))),
        memory_limit_in_bytes: memory,
        memory_swap_limit_in_bytes: if swap_accounting { memory } else { 0 },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c4m_core::ResourceLimits;

    #[test]
    fn limits_become_cgroup_values_and_the_spec_rides_along() {
        let spec = ContainerSpec {
            id: "web-1".into(),
            command: vec!["sh".into()],
            args: vec!["-c".into(), "exit 3".into()],
            env: vec![("A".into(), "1".into())],
            user: Some(1000),
            group: Some(1000),
            resources: ResourceLimits {
                cpu_request_millis: 500,
                cpu_limit_millis: Some(250),
                memory_limit_bytes: Some(64 << 20),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = container_config(&spec, "busybox", 2, true).unwrap();
        let linux = config.linux.unwrap();
        let resources = linux.resources.unwrap();
        assert_eq!(resources.cpu_shares, 512);
        assert_eq!(
            (resources.cpu_quota, resources.cpu_period),
            (25_000, 100_000)
        );
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
        assert_eq!(resources.memory_swap_limit_in_bytes, 64 << 20);
        let security = linux.security_context.unwrap();
        assert_eq!(security.run_as_user.unwrap().value, 1000);
        assert_eq!(config.metadata.unwrap().attempt, 2);
        let kept = spec_from(&config.annotations, "web-1", "the container").unwrap();
        assert_eq!(kept, spec);
        let sandbox = sandbox_config(&spec, Path::new("/logs/web-1")).unwrap();
        assert_eq!(
            spec_from(&sandbox.annotations, "web-1", "the sandbox").unwrap(),
            spec
        );
        let error = spec_from(&HashMap::new(), "web-1", "sandbox 12ab").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("sandbox 12ab has no io.c4m.spec"),
            "{error}"
        );
    }

    #[test]
    fn a_group_without_a_user_is_refused_with_a_reason() {
        let spec = ContainerSpec {
            id: "x".into(),
            group: Some(5),
            ..Default::default()
        };
        let error = container_config(&spec, "busybox", 0, false).unwrap_err();
        assert!(error.to_string().contains("runAsUser"), "{error}");
    }
}
