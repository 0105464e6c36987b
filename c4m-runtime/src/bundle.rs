//! The OCI runtime spec of a container, shared by the drivers that hand one
//! to a runtime (`oci` writes it as `config.json`, `containerd` sends it in
//! the container record): the image's defaults merged with the
//! [`ContainerSpec`] as Kubernetes merges them, and Docker's security
//! defaults unless the spec asks for `privileged`.

use std::path::{Path, PathBuf};

use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, UserBuilder, get_default_maskedpaths, get_default_mounts,
    get_default_readonly_paths,
};

use c4m_cgroups::{CFS_PERIOD_US, cfs_quota_us, cpu_shares};
use c4m_core::{ContainerSpec, MountPropagation};

use crate::PIDS_LIMIT;
use crate::{Error, Result};

/// `PATH` when neither the image nor the spec sets one (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `EPERM`, what denied system calls return.
const EPERM: u32 = 1;

/// Docker's default capability set.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// System calls an unprivileged container gets `EPERM` for: those that
/// change the host (modules, reboot, swap, clock, kexec), reach other
/// processes (ptrace) or rearrange mounts and namespaces. A deny list,
/// shorter than Docker's allow list, chosen so that ordinary programs run.
const DENIED_SYSCALLS: [&str; 31] = [
    "mount",
    "umount2",
    "pivot_root",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "add_key",
    "request_key",
    "keyctl",
    "bpf",
    "perf_event_open",
    "open_by_handle_at",
    "unshare",
    "setns",
    "syslog",
    "iopl",
    "ioperm",
];

/// What the runtime spec is built from besides the [`ContainerSpec`].
pub(super) struct BundleInput<'a> {
    /// The image's run defaults, if it has any.
    pub image: Option<&'a ImageConfig>,
    /// The spec's `root.path`: the mounted root file system, or a path
    /// relative to the bundle where the runtime mounts it.
    pub root_path: PathBuf,
    /// Directories holding the image's files, lowest first (the mounted
    /// root file system, or the image's unpacked layers): `/etc/passwd` and
    /// `/etc/group` are read from the highest that has them.
    pub image_dirs: &'a [PathBuf],
    /// cgroup path relative to the hierarchy roots (`/c4m/<id>`).
    pub cgroups_path: PathBuf,
    /// Whether the host accounts swap (a memory+swap limit can be set).
    pub swap_accounting: bool,
}

/// The cgroup of container `id` relative to the hierarchy roots
/// (`/c4m/<id>`), where the drivers' runtimes put it.
pub(super) fn cgroups_path(id: &str) -> PathBuf {
    std::path::Path::new("/")
        .join(c4m_cgroups::PARENT_GROUP)
        .join(id)
}

/// A fresh overlay `upper/` and `work/` under the container's writable
/// layer directory ([`ContainerSpec::writable_layer`]): what an earlier
/// run wrote goes, as a restarted container starts from its image.
pub(super) fn fresh_writable_layer(id: &str, layer: &Path) -> Result<(PathBuf, PathBuf)> {
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    for dir in [&upper, &work] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::container(id, format!("empty {}", dir.display()), e)),
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::container(id, format!("create {}", dir.display()), e))?;
    }
    Ok((upper, work))
}

/// The program and arguments, Kubernetes' way: `command` replaces the
/// image's entrypoint (and drops its cmd), `args` replace its cmd.
pub(super) fn argv(spec: &ContainerSpec, image: Option<&ImageConfig>) -> Vec<String> {
    let entrypoint = image
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_default();
    let cmd = image.and_then(|c| c.cmd().clone()).unwrap_or_default();
    match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => spec.command.iter().chain(&spec.args).cloned().collect(),
        (true, false) => entrypoint.into_iter().chain(spec.args.clone()).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// The image's environment with the spec's on top (a later value of a name
/// replaces an earlier one in place); `PATH` defaults to Docker's.
pub(super) fn environment(spec: &ContainerSpec, image: Option<&ImageConfig>) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let image_env = image.and_then(|c| c.env().clone()).unwrap_or_default();
    let image_pairs = image_env.iter().map(|entry| match entry.split_once('=') {
        Some((name, value)) => (name.to_string(), value.to_string()),
        None => (entry.clone(), String::new()),
    });
    for (name, value) in image_pairs.chain(spec.env.iter().cloned()) {
        match vars.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => vars.push((name, value)),
        }
    }
    if !vars.iter().any(|(name, _)| name == "PATH") {
        vars.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    vars.into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The text of the image's file `relative`, from the highest of `dirs`
/// holding it (empty if none does).
fn image_file(dirs: &[PathBuf], relative: &str) -> String {
    dirs.iter()
        .rev()
        .find_map(|dir| std::fs::read_to_string(dir.join(relative)).ok())
        .unwrap_or_default()
}

/// The uid and gid to run as: the spec's, else the image's `User`
/// (`uid`, `uid:gid`, `name`, `name:group`, names looked up in the image's
/// `/etc/passwd` and `/etc/group`), else root.
pub(super) fn user(
    spec: &ContainerSpec,
    image: Option<&ImageConfig>,
    image_dirs: &[PathBuf],
) -> Result<(u32, u32)> {
    let image_user = image.and_then(|c| c.user().clone()).unwrap_or_default();
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((user, group)) => (user.to_string(), Some(group.to_string())),
        None => (image_user.clone(), None),
    };
    let passwd = image_file(image_dirs, "etc/passwd");
    let group_file = image_file(image_dirs, "etc/group");
    // passwd: name:x:uid:gid:...; group: name:x:gid:...
    let lookup = |text: &str, name: &str, field: usize| -> Option<(u32, Option<u32>)> {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let matches = fields.first() == Some(&name) || fields.get(2) == Some(&name);
            if !matches {
                return None;
            }
            let id = fields.get(2)?.parse().ok()?;
            Some((id, fields.get(field).and_then(|g| g.parse().ok())))
        })
    };
    let unknown = |what: &str, name: &str| Error::Runtime {
        id: spec.id.clone(),
        message: format!("image user {image_user:?}: no {what} {name:?} in the image"),
    };
    let (image_uid, passwd_gid) = if user_part.is_empty() {
        (0, Some(0))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        (uid, lookup(&passwd, &user_part, 3).and_then(|(_, gid)| gid))
    } else {
        let (uid, gid) =
            lookup(&passwd, &user_part, 3).ok_or_else(|| unknown("user", &user_part))?;
        (uid, gid)
    };
    let image_gid = match group_part {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(&group_file, &group, 2)
                    .ok_or_else(|| unknown("group", &group))?
                    .0
            }
        },
        None => passwd_gid.unwrap_or(0),
    };
    let uid = spec.user.unwrap_or(image_uid);
    let gid = spec
        .group
        .unwrap_or(if spec.user.is_some() && spec.group.is_none() {
            // Kubernetes: runAsUser without runAsGroup runs with the image's
            // group for that user, or root's.
            lookup(&passwd, &uid.to_string(), 3)
                .and_then(|(_, g)| g)
                .unwrap_or(0)
        } else {
            image_gid
        });
    Ok((uid, gid))
}

/// The complete runtime spec.
pub(super) fn runtime_spec(spec: &ContainerSpec, input: &BundleInput<'_>) -> Result<Spec> {
    let fail = |e: oci_spec::OciSpecError| Error::container(&spec.id, "build the runtime spec", e);
    let args = argv(spec, input.image);
    if args.is_empty() {
        return Err(Error::Runtime {
            id: spec.id.clone(),
            message: "no command: neither the spec nor the image gives one".into(),
        });
    }
    let (uid, gid) = user(spec, input.image, input.image_dirs)?;
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| {
            input
                .image
                .and_then(|c| c.working_dir().clone())
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/"));
    let capabilities: std::collections::HashSet<Capability> = if spec.privileged {
        all_capabilities()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        .build()
        .map_err(fail)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(environment(spec, input.image))
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(fail)?,
        )
        .capabilities(capabilities)
        .no_new_privileges(!spec.privileged)
        .build()
        .map_err(fail)?;

    // A new namespace of each kind, or the pod's, joined by path.
    let mut namespaces = Vec::new();
    for (typ, path) in [
        (LinuxNamespaceType::Pid, &spec.pid_namespace),
        (LinuxNamespaceType::Mount, &None),
        (LinuxNamespaceType::Uts, &None),
        (LinuxNamespaceType::Ipc, &spec.ipc_namespace),
        (LinuxNamespaceType::Network, &spec.network_namespace),
    ] {
        let mut namespace = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(path) = path {
            namespace = namespace.path(path.clone());
        }
        namespaces.push(namespace.build().map_err(fail)?);
    }

    let limits = &spec.resources;
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(bytes) = limits.memory_limit_bytes {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        // Swap counts against the limit, so swapping cannot hide an OOM.
        memory = memory.limit(bytes);
        if input.swap_accounting {
            memory = memory.swap(bytes);
        }
    }
    let mut cpu = LinuxCpuBuilder::default().shares(cpu_shares(limits.cpu_request_millis));
    if let Some(millis) = limits.cpu_limit_millis {
        cpu = cpu
            .quota(i64::try_from(cfs_quota_us(millis)).unwrap_or(i64::MAX))
            .period(CFS_PERIOD_US);
    }
    let resources = LinuxResourcesBuilder::default()
        .memory(memory.build().map_err(fail)?)
        .cpu(cpu.build().map_err(fail)?)
        .pids(
            LinuxPidsBuilder::default()
                .limit(PIDS_LIMIT)
                .build()
                .map_err(fail)?,
        )
        .build()
        .map_err(fail)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(input.cgroups_path.clone());
    // A propagating volume needs a root that passes mounts on, as Docker
    // and containerd's CRI set it.
    let propagations: Vec<MountPropagation> = spec.mounts.iter().map(|m| m.propagation).collect();
    if propagations.contains(&MountPropagation::Bidirectional) {
        linux = linux.rootfs_propagation("rshared");
    } else if propagations.contains(&MountPropagation::HostToContainer) {
        linux = linux.rootfs_propagation("rslave");
    }
    if !spec.privileged {
        linux = linux
            .masked_paths(get_default_maskedpaths())
            .readonly_paths(get_default_readonly_paths())
            .seccomp(seccomp().map_err(fail)?);
    }
    let root = RootBuilder::default()
        .path(input.root_path.clone())
        .readonly(spec.read_only_root_filesystem)
        .build()
        .map_err(fail)?;
    let mut mounts = get_default_mounts();
    // The pod's shared memory instead of the container's own.
    if let Some(shm) = &spec.shm {
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(
            MountBuilder::default()
                .destination("/dev/shm")
                .typ("bind")
                .source(shm.clone())
                .options(
                    ["rbind", "rw", "nosuid", "nodev", "noexec"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .map_err(fail)?,
        );
    }
    // The files the agent writes for the pod, as the kubelet does: its DNS
    // (the VPC gateway, which relays to c4m's DNS), hosts and host name.
    let pod_files = [
        ("/etc/resolv.conf", &spec.resolv_conf),
        ("/etc/hosts", &spec.hosts_file),
        ("/etc/hostname", &spec.hostname_file),
    ];
    for (destination, source) in pod_files {
        let Some(source) = source else { continue };
        mounts.push(
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source.clone())
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .map_err(fail)?,
        );
    }
    if let Some((source, destination)) = &spec.termination_message {
        mounts.push(
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_string(), "rw".to_string()])
                .build()
                .map_err(fail)?,
        );
    }
    // The pod's volumes, parents first.
    for mount in spec.ordered_mounts() {
        let access = if mount.read_only { "ro" } else { "rw" };
        mounts.push(
            MountBuilder::default()
                .destination(&mount.destination)
                .typ("bind")
                .source(&mount.source)
                .options(
                    ["rbind", access, mount.propagation.linux_option()]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .map_err(fail)?,
        );
    }
    let mut runtime_spec = Spec::default();
    runtime_spec
        .set_process(Some(process))
        .set_root(Some(root))
        .set_hostname(Some(
            spec.hostname.clone().unwrap_or_else(|| spec.id.clone()),
        ))
        .set_mounts(Some(mounts))
        .set_linux(Some(linux.build().map_err(fail)?));
    Ok(runtime_spec)
}

/// Allow everything but [`DENIED_SYSCALLS`].
fn seccomp() -> std::result::Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let denied = LinuxSyscallBuilder::default()
        .names(
            DENIED_SYSCALLS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .build()?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![denied])
        .build()
}

/// Every capability the agent itself holds (its bounding set), as Docker
/// gives a privileged container: asking for more makes the runtime fail.
fn all_capabilities() -> std::collections::HashSet<Capability> {
    use Capability::*;
    // In kernel numbering (capability.h).
    let numbered = [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ];
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    numbered
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| bounding >> bit & 1 == 1)
        .map(|(_, capability)| capability)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use c4m_core::Mount;

    /// Volumes become bind mounts with their access and propagation, a
    /// parent before what is mounted below it.
    #[test]
    fn volumes_become_bind_mounts_parents_first() {
        let spec = ContainerSpec {
            id: "web".into(),
            command: vec!["sh".into()],
            mounts: vec![
                Mount {
                    source: "/node/pods/u/volumes/cache/logs".into(),
                    destination: "/data/logs".into(),
                    read_only: true,
                    propagation: MountPropagation::HostToContainer,
                },
                Mount {
                    source: "/node/pods/u/volumes/data".into(),
                    destination: "/data".into(),
                    read_only: false,
                    propagation: MountPropagation::None,
                },
            ],
            ..ContainerSpec::default()
        };
        let input = BundleInput {
            image: None,
            root_path: "rootfs".into(),
            image_dirs: &[],
            cgroups_path: cgroups_path("web"),
            swap_accounting: false,
        };
        let built = runtime_spec(&spec, &input).unwrap();
        let binds: Vec<(String, String, Vec<String>)> = built
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.destination().starts_with("/data"))
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.source().as_ref().unwrap().display().to_string(),
                    m.options().clone().unwrap_or_default(),
                )
            })
            .collect();
        let options = |list: [&str; 3]| list.map(String::from).to_vec();
        assert_eq!(
            binds,
            [
                (
                    "/data".into(),
                    "/node/pods/u/volumes/data".into(),
                    options(["rbind", "rw", "rprivate"])
                ),
                (
                    "/data/logs".into(),
                    "/node/pods/u/volumes/cache/logs".into(),
                    options(["rbind", "ro", "rslave"])
                ),
            ]
        );
    }
}
