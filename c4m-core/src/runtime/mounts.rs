//! What a pod asks of its volumes that its driver or the API must judge:
//! which drivers bind volumes into containers and bound a writable layer,
//! the checks the API server makes on `volumes` and `volumeMounts`, and
//! `subPathExpr` expansion.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::MountPropagation;

/// The drivers that bind volumes into containers ([`super::Mount`]); the
/// `process` driver runs host processes and cannot.
pub const DRIVERS_WITH_MOUNTS: [&str; 4] = ["oci", "containerd", "docker", "cri"];

/// The drivers that put a container's writable layer on a sized file
/// system, so `resources.limits.ephemeral-storage` is a hard limit.
pub const DRIVERS_WITH_WRITABLE_LIMIT: [&str; 2] = ["oci", "containerd"];

/// The resource name of a container's local disk limit.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// Every container of the pod with its field path relative to the pod
/// spec (`containers[0]`), init containers first.
pub fn pod_containers(spec: &PodSpec) -> impl Iterator<Item = (String, &Container)> {
    let init = spec.init_containers.iter().flatten().enumerate();
    let init = init.map(|(i, c)| (format!("initContainers[{i}]"), c));
    let app = spec.containers.iter().enumerate();
    init.chain(app.map(|(i, c)| (format!("containers[{i}]"), c)))
}

/// The first field of `spec` that `driver` cannot honour for volumes:
/// `volumeMounts` on a driver without [`DRIVERS_WITH_MOUNTS`], an
/// ephemeral-storage limit on one without [`DRIVERS_WITH_WRITABLE_LIMIT`].
/// As `(field relative to the pod spec, why)`. Drivers c4m does not know
/// (an embedder's) are not judged.
pub fn unsupported_volumes(driver: &str, spec: &PodSpec) -> Option<(String, String)> {
    let known = crate::CONTAINER_DRIVERS.contains(&driver) || driver == crate::DEFAULT_DRIVER;
    if !known {
        return None;
    }
    for (path, container) in pod_containers(spec) {
        let mounts = container
            .volume_mounts
            .as_ref()
            .is_some_and(|m| !m.is_empty());
        if mounts && !DRIVERS_WITH_MOUNTS.contains(&driver) {
            return Some((
                format!("{path}.volumeMounts"),
                format!(
                    "the {driver} driver cannot mount volumes: its containers are processes on the node (drivers that can: {})",
                    DRIVERS_WITH_MOUNTS.join(", ")
                ),
            ));
        }
        let limited = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key(EPHEMERAL_STORAGE));
        if limited && !DRIVERS_WITH_WRITABLE_LIMIT.contains(&driver) {
            return Some((
                format!("{path}.resources.limits.{EPHEMERAL_STORAGE}"),
                format!(
                    "the {driver} driver cannot enforce it: it cannot put the container's writable layer on a sized file system (drivers that can: {})",
                    DRIVERS_WITH_WRITABLE_LIMIT.join(", ")
                ),
            ));
        }
    }
    None
}

/// The API server's checks of a pod's containers' `volumeMounts` (the
/// volumes themselves are checked with the other storage fields, in
/// `manifest/storage.rs`), and c4m's rule that hostPath volumes are for
/// privileged containers: the first failure as `(field relative to the pod
/// spec, Kubernetes' message)`.
pub fn check_pod_mounts(spec: &PodSpec) -> Result<(), (String, String)> {
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    for (path, container) in pod_containers(spec) {
        let privileged = container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        let mut destinations = std::collections::HashSet::new();
        for (j, mount) in container.volume_mounts.iter().flatten().enumerate() {
            let field = format!("{path}.volumeMounts[{j}]");
            let Some((index, volume)) = volumes
                .iter()
                .enumerate()
                .find(|(_, v)| v.name == mount.name)
            else {
                return Err((
                    format!("{field}.name"),
                    format!("Not found: {:?}", mount.name),
                ));
            };
            if !mount.mount_path.starts_with('/') {
                return Err((
                    format!("{field}.mountPath"),
                    format!(
                        "Invalid value: {:?}: must be an absolute path",
                        mount.mount_path
                    ),
                ));
            }
            if !destinations.insert(mount.mount_path.trim_end_matches('/')) {
                return Err((
                    format!("{field}.mountPath"),
                    format!("Invalid value: {:?}: must be unique", mount.mount_path),
                ));
            }
            let sub_path = mount.sub_path.as_deref().filter(|s| !s.is_empty());
            let sub_path_expr = mount.sub_path_expr.as_deref().filter(|s| !s.is_empty());
            if sub_path.is_some() && sub_path_expr.is_some() {
                return Err((
                    format!("{field}.subPathExpr"),
                    "Invalid value: subPathExpr and subPath are mutually exclusive".into(),
                ));
            }
            if let Some(sub_path) = sub_path {
                relative_sub_path(sub_path).map_err(|why| (format!("{field}.subPath"), why))?;
            }
            let propagation =
                MountPropagation::of(mount.mount_propagation.as_deref()).map_err(|why| {
                    (
                        format!("{field}.mountPropagation"),
                        format!("Unsupported value: {why}"),
                    )
                })?;
            if propagation == MountPropagation::Bidirectional && !privileged {
                return Err((
                    format!("{field}.mountPropagation"),
                    "Forbidden: Bidirectional mount propagation is available only to privileged containers".into(),
                ));
            }
            if volume.host_path.is_some() && !privileged {
                return Err((
                    format!("volumes[{index}].hostPath"),
                    format!(
                        "Forbidden: hostPath volumes are for privileged containers only: {path} (\"{}\") mounts it without securityContext.privileged",
                        container.name
                    ),
                ));
            }
        }
    }
    // One nobody mounts would still be checked and made on the node
    // (`DirectoryOrCreate`): it needs a privileged container too.
    let any_privileged = pod_containers(spec).any(|(_, c)| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    if let Some(index) = volumes.iter().position(|v| v.host_path.is_some())
        && !any_privileged
    {
        return Err((
            format!("volumes[{index}].hostPath"),
            "Forbidden: hostPath volumes are for privileged containers only: no container of the pod is privileged".into(),
        ));
    }
    Ok(())
}

/// `sub_path` if it stays inside its volume: relative, without `..`
/// (Kubernetes' message otherwise).
pub fn relative_sub_path(sub_path: &str) -> Result<&str, String> {
    if sub_path.starts_with('/') {
        return Err(format!(
            "Invalid value: {sub_path:?}: must be a relative path"
        ));
    }
    if sub_path.split('/').any(|part| part == "..") {
        return Err(format!(
            "Invalid value: {sub_path:?}: must not contain '..'"
        ));
    }
    Ok(sub_path)
}

/// `expr` with each `$(NAME)` replaced by the value of `NAME` in `env`
/// (the last one wins) and `$$` by `$`, as Kubernetes expands
/// `subPathExpr`; a reference to an unknown name stays as written. The
/// result must be a relative path without `..`.
pub fn expand_sub_path_expr(expr: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    relative_sub_path(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn process_refuses_mounts_and_only_oci_and_containerd_bound_the_disk() {
        let mounts = spec(
            "{volumes: [{name: d, emptyDir: {}}], containers: [{name: a}, {name: b, volumeMounts: [{name: d, mountPath: /d}]}]}",
        );
        let (field, why) = unsupported_volumes("process", &mounts).unwrap();
        assert_eq!(field, "containers[1].volumeMounts");
        assert_eq!(
            why,
            "the process driver cannot mount volumes: its containers are processes on the node (drivers that can: oci, containerd, docker, cri)"
        );
        for driver in ["oci", "containerd", "docker", "cri", "my-own"] {
            assert_eq!(unsupported_volumes(driver, &mounts), None, "{driver}");
        }
        let disk = spec("{containers: [{name: a, resources: {limits: {ephemeral-storage: 1Gi}}}]}");
        for driver in ["docker", "cri", "process"] {
            let (field, why) = unsupported_volumes(driver, &disk).unwrap();
            assert_eq!(field, "containers[0].resources.limits.ephemeral-storage");
            assert!(why.contains("(drivers that can: oci, containerd)"), "{why}");
        }
        assert_eq!(unsupported_volumes("oci", &disk), None);
        assert_eq!(unsupported_volumes("containerd", &disk), None);
    }

    #[test]
    fn the_api_servers_checks_name_the_field() {
        let error = |yaml: &str| check_pod_mounts(&spec(yaml)).unwrap_err();
        assert_eq!(
            error("{containers: [{name: a, volumeMounts: [{name: x, mountPath: /x}]}]}"),
            (
                "containers[0].volumeMounts[0].name".into(),
                "Not found: \"x\"".into()
            )
        );
        let host = "{volumes: [{name: h, hostPath: {path: /var/log}}], containers: [{name: a, volumeMounts: [{name: h, mountPath: /h}]}]}";
        let (field, why) = error(host);
        assert_eq!(field, "volumes[0].hostPath");
        assert!(why.starts_with("Forbidden: hostPath volumes are for privileged containers only: containers[0] (\"a\")"), "{why}");
        let privileged = host.replace(
            "mountPath: /h}]",
            "mountPath: /h}], securityContext: {privileged: true}",
        );
        assert_eq!(check_pod_mounts(&spec(&privileged)), Ok(()));
        let (field, why) = error(
            "{volumes: [{name: h, hostPath: {path: /etc/made, type: DirectoryOrCreate}}], containers: [{name: a}]}",
        );
        assert_eq!(field, "volumes[0].hostPath");
        assert!(
            why.ends_with("no container of the pod is privileged"),
            "{why}"
        );
        let (field, why) = error(
            "{volumes: [{name: d, emptyDir: {}}], initContainers: [{name: i, volumeMounts: [{name: d, mountPath: /d, mountPropagation: Bidirectional}]}], containers: []}",
        );
        assert_eq!(field, "initContainers[0].volumeMounts[0].mountPropagation");
        assert!(why.contains("only to privileged containers"), "{why}");
        for (mount, field) in [
            ("{name: d, mountPath: d}", "mountPath"),
            ("{name: d, mountPath: /d, subPath: ../x}", "subPath"),
            ("{name: d, mountPath: /d, subPath: /x}", "subPath"),
            (
                "{name: d, mountPath: /d, subPath: a, subPathExpr: b}",
                "subPathExpr",
            ),
            (
                "{name: d, mountPath: /d, mountPropagation: Sideways}",
                "mountPropagation",
            ),
        ] {
            let yaml = format!(
                "{{volumes: [{{name: d, emptyDir: {{}}}}], containers: [{{name: a, volumeMounts: [{mount}]}}]}}"
            );
            assert_eq!(
                error(&yaml).0,
                format!("containers[0].volumeMounts[0].{field}"),
                "{mount}"
            );
        }
        let two = "{volumes: [{name: d, emptyDir: {}}], containers: [{name: a, volumeMounts: [{name: d, mountPath: /d}, {name: d, mountPath: /d/}]}]}";
        assert_eq!(error(two).0, "containers[0].volumeMounts[1].mountPath");
    }

    #[test]
    fn sub_path_expr_expands_as_kubernetes_does() {
        let env = [
            ("POD_NAME".to_string(), "web-0".to_string()),
            ("POD_NAME".to_string(), "web-1".to_string()),
        ];
        assert_eq!(
            expand_sub_path_expr("logs/$(POD_NAME)", &env).unwrap(),
            "logs/web-1"
        );
        assert_eq!(
            expand_sub_path_expr("$$(POD_NAME)/$(NOPE)", &env).unwrap(),
            "$(POD_NAME)/$(NOPE)"
        );
        assert_eq!(expand_sub_path_expr("a$b", &env).unwrap(), "a$b");
        let climbing = [("UP".to_string(), "..".to_string())];
        assert!(
            expand_sub_path_expr("$(UP)/etc", &climbing)
                .unwrap_err()
                .contains("'..'")
        );
        let absolute = [("ROOT".to_string(), "/etc".to_string())];
        assert!(
            expand_sub_path_expr("$(ROOT)", &absolute)
                .unwrap_err()
                .contains("relative")
        );
    }
}
