//! The Docker container a [`ContainerSpec`] becomes.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, ImageConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType,
};

use super::{ID_LABEL, NODE_LABEL, SPEC_LABEL};
use c4m_cgroups::{CFS_PERIOD_US, cfs_quota_us, cpu_shares};
use c4m_core::{ContainerSpec, MountPropagation};

use crate::PIDS_LIMIT;
use crate::{Error, Result};

/// The create request for `spec` started for `node` (if the driver keeps
/// to one), running image `image` (whose run defaults are `image_config`).
///
/// Command and args merge with the image as Kubernetes merges them: the
/// daemon already does so when `Entrypoint` replaces the image's (its `Cmd`
/// is then dropped) and `Cmd` replaces the image's `Cmd`.
pub(super) fn container_body(
    spec: &ContainerSpec,
    node: Option<&str>,
    image: &str,
    image_config: Option<&ImageConfig>,
) -> Result<ContainerCreateBody> {
    let spec_json = serde_json::to_string(spec)
        .map_err(|e| Error::container(&spec.id, "serialize the spec", e))?;
    let mut labels = HashMap::from([
        (ID_LABEL.to_string(), spec.id.clone()),
        (SPEC_LABEL.to_string(), spec_json),
    ]);
    if let Some(node) = node {
        labels.insert(NODE_LABEL.to_string(), node.to_string());
    }
    let limits = &spec.resources;
    let memory = limits
        .memory_limit_bytes
        .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    let host_config = HostConfig {
        // Docker cannot join a namespace by path; see the module docs.
        network_mode: Some("host".into()),
        memory,
        // Swap counts against the limit, so swapping cannot hide an OOM.
        memory_swap: memory,
        cpu_shares: Some(i64::try_from(cpu_shares(limits.cpu_request_millis)).unwrap_or(i64::MAX)),
        cpu_period: limits
            .cpu_limit_millis
            .map(|_| i64::try_from(CFS_PERIOD_US).unwrap_or(i64::MAX)),
        cpu_quota: limits
            .cpu_limit_millis
            .map(|millis| i64::try_from(cfs_quota_us(millis)).unwrap_or(i64::MAX)),
        pids_limit: Some(PIDS_LIMIT),
        // Docker's defaults (capabilities, seccomp profile, masked /proc
        // paths) hold unless privileged; setuid programs gain nothing.
        privileged: Some(spec.privileged),
        security_opt: (!spec.privileged).then(|| vec!["no-new-privileges".to_string()]),
        readonly_rootfs: Some(spec.read_only_root_filesystem),
        binds: spec
            .resolv_conf
            .as_ref()
            .map(|path| vec![format!("{}:/etc/resolv.conf:ro", path.display())]),
        mounts: (!spec.mounts.is_empty()).then(|| mounts(spec)),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
        ),
        working_dir: spec
            .working_dir
            .as_ref()
            .map(|dir| dir.display().to_string()),
        user: user(spec, image_config),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// Docker's `User` for the spec's ids: `uid:gid`, `uid` (the daemon then
/// takes the group from the image's `/etc/passwd`, as Kubernetes does), or
/// for a group alone the image's user with that group. `None` keeps the
/// image's user.
fn user(spec: &ContainerSpec, image_config: Option<&ImageConfig>) -> Option<String> {
    match (spec.user, spec.group) {
        (Some(uid), Some(gid)) => Some(format!("{uid}:{gid}")),
        (Some(uid), None) => Some(uid.to_string()),
        (None, Some(gid)) => {
            let image_user = image_config
                .and_then(|c| c.user.as_deref())
                .and_then(|user| user.split(':').next())
                .filter(|user| !user.is_empty())
                .unwrap_or("0");
            Some(format!("{image_user}:{gid}"))
        }
        (None, None) => None,
    }
}

/// The spec's volumes as bind mounts, parents first.
fn mounts(spec: &ContainerSpec) -> Vec<Mount> {
    spec.ordered_mounts()
        .into_iter()
        .map(|mount| Mount {
            target: Some(mount.destination.display().to_string()),
            source: Some(mount.source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(mount.read_only),
            bind_options: Some(MountBindOptions {
                propagation: Some(match mount.propagation {
                    MountPropagation::None => MountBindOptionsPropagationEnum::RPRIVATE,
                    MountPropagation::HostToContainer => MountBindOptionsPropagationEnum::RSLAVE,
                    MountPropagation::Bidirectional => MountBindOptionsPropagationEnum::RSHARED,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}
