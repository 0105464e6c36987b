//! Linux control groups for containers: v1 (one hierarchy per controller) or
//! v2 (unified), detected from the host rather than assumed.
//!
//! Each container gets a group `c4m/<id>` (under every controller mount in
//! v1). The agent writes limits into it, moves the container's first process
//! into it before that process runs the user's command, and reads usage and
//! OOM kills back from it.
//!
//! ```no_run
//! # fn demo() -> c4m_cgroups::Result<()> {
//! use c4m_core::ResourceLimits;
//!
//! let cgroups = c4m_cgroups::Cgroups::detect()?; // root, or a delegated hierarchy
//! let group = cgroups.group("web-1");
//! group.create(&ResourceLimits {
//!     cpu_request_millis: 250,
//!     cpu_limit_millis: Some(500),
//!     memory_request_bytes: 64 << 20,
//!     memory_limit_bytes: Some(128 << 20),
//! })?;
//! group.add_process(std::process::id())?;
//! println!("{:?}", group.usage()?);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use c4m_core::{ResourceLimits, ResourceUsage};

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a cgroup file or directory failed.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The host has no cgroup hierarchy c4m can use.
    #[error(
        "no cgroup v2 at {DEFAULT_CGROUP_ROOT} and no cgroup v1 cpu, cpuacct, memory or pids mount in /proc/self/mountinfo"
    )]
    NoHierarchy,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for c4m_core::Error {
    fn from(error: Error) -> Self {
        c4m_core::Error::Driver {
            context: "cgroup".into(),
            source: Box::new(error),
        }
    }
}

/// Where cgroup2 exposes its unified hierarchy on a systemd-era host.
const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Name of the group under which every container group lives.
pub const PARENT_GROUP: &str = "c4m";
/// Whether the host accounts swap, so a memory+swap limit can be set (v2,
/// or v1 with `memory.memsw.*`).
pub fn host_accounts_swap() -> bool {
    Path::new(DEFAULT_CGROUP_ROOT)
        .join("cgroup.controllers")
        .exists()
        || Path::new(DEFAULT_CGROUP_ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists()
}

/// The CFS period c4m uses (100 ms, as Kubernetes does).
pub const CFS_PERIOD_US: u64 = 100_000;
/// The kernel rejects CFS quotas below 1 ms.
const MIN_CFS_QUOTA_US: u64 = 1_000;
/// Controllers c4m uses; v2 enables exactly these in `cgroup.subtree_control`.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// A cgroup v1 controller c4m uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    /// CPU shares and CFS quota.
    Cpu,
    /// CPU time accounting.
    Cpuacct,
    /// Memory limit, usage and OOM kills.
    Memory,
    /// Process counting.
    Pids,
}

impl Controller {
    /// Every controller c4m uses.
    pub const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
    ];

    /// The controller's name in mount options and `/proc/<pid>/cgroup`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// The cgroup hierarchies of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: each controller has its own mount (several controllers may
    /// share one, e.g. `cpu,cpuacct`). Controllers that are not mounted are
    /// absent.
    V1 {
        /// Mount point of each mounted controller.
        mounts: Vec<(Controller, PathBuf)>,
    },
    /// cgroup v2: one unified hierarchy.
    V2 {
        /// Its mount point.
        root: PathBuf,
    },
}

/// The host's cgroups, as far as c4m uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    hierarchy: Hierarchy,
}

impl Cgroups {
    /// Detects the host's cgroup version and mounts, and checks that c4m can
    /// create its groups (it needs root or a delegated, writable hierarchy).
    pub fn detect() -> Result<Cgroups> {
        let root = Path::new(DEFAULT_CGROUP_ROOT);
        let cgroups = if root.join("cgroup.controllers").exists() {
            Cgroups::new(Hierarchy::V2 {
                root: root.to_path_buf(),
            })
        } else {
            let mountinfo =
                std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Io {
                    path: "/proc/self/mountinfo".into(),
                    source,
                })?;
            let mounts = v1_mounts(&mountinfo);
            if mounts.is_empty() {
                return Err(Error::NoHierarchy);
            }
            Cgroups::new(Hierarchy::V1 { mounts })
        };
        cgroups.prepare_parent()?;
        Ok(cgroups)
    }

    /// Cgroups over a known hierarchy (tests use a fake directory tree).
    pub fn new(hierarchy: Hierarchy) -> Cgroups {
        Cgroups { hierarchy }
    }

    /// Creates the `c4m` parent group(s) and, on v2, enables the controllers
    /// for its children, so a failure (not root, read-only mount) shows at
    /// detection rather than at the first container start.
    fn prepare_parent(&self) -> Result<()> {
        match &self.hierarchy {
            Hierarchy::V1 { mounts } => {
                for mount in unique_dirs(mounts.iter().map(|(_, path)| path.clone())) {
                    let parent = mount.join(PARENT_GROUP);
                    create_dir(&parent)?;
                    probe_child_group(&parent)?;
                }
            }
            Hierarchy::V2 { root } => {
                let parent = root.join(PARENT_GROUP);
                create_dir(&parent)?;
                enable_v2_controllers(root)?;
                enable_v2_controllers(&parent)?;
                probe_child_group(&parent)?;
            }
        }
        Ok(())
    }

    /// The group of container `id` (paths only; nothing is created).
    pub fn group(&self, id: &str) -> Cgroup {
        let relative = Path::new(PARENT_GROUP).join(id);
        match &self.hierarchy {
            Hierarchy::V1 { mounts } => Cgroup::V1 {
                dirs: mounts
                    .iter()
                    .map(|(controller, mount)| (*controller, mount.join(&relative)))
                    .collect(),
            },
            Hierarchy::V2 { root } => Cgroup::V2 {
                dir: root.join(relative),
            },
        }
    }
}

/// One container's cgroup: a directory per v1 controller, or one v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1.
    V1 {
        /// The group's directory under each controller mount.
        dirs: Vec<(Controller, PathBuf)>,
    },
    /// cgroup v2.
    V2 {
        /// The group's directory.
        dir: PathBuf,
    },
}

impl Cgroup {
    /// Every distinct directory of this group (v1 controllers that share a
    /// mount share a directory).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1 { dirs } => unique_dirs(dirs.iter().map(|(_, dir)| dir.clone())),
            Cgroup::V2 { dir } => vec![dir.clone()],
        }
    }

    fn v1_dir(&self, controller: Controller) -> Option<&Path> {
        match self {
            Cgroup::V1 { dirs } => dirs
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, dir)| dir.as_path()),
            Cgroup::V2 { .. } => None,
        }
    }

    /// Creates the group if needed and writes its limits. Limits that are
    /// absent are reset to unlimited, so an id restarted with a new spec does
    /// not keep old limits.
    pub fn create(&self, limits: &ResourceLimits) -> Result<()> {
        for dir in self.dirs() {
            create_dir(&dir)?;
        }
        let shares = cpu_shares(limits.cpu_request_millis);
        let quota = limits.cpu_limit_millis.map(cfs_quota_us);
        match self {
            Cgroup::V1 { .. } => {
                if let Some(dir) = self.v1_dir(Controller::Memory) {
                    let value = limits
                        .memory_limit_bytes
                        .map_or_else(|| "-1".to_string(), |b| b.to_string());
                    write_v1_memory_limit(dir, &value)?;
                }
                if let Some(dir) = self.v1_dir(Controller::Cpu) {
                    write_file(&dir.join("cpu.shares"), &shares.to_string())?;
                    write_file(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    let quota = quota.map_or_else(|| "-1".to_string(), |q| q.to_string());
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota)?;
                }
            }
            Cgroup::V2 { dir } => {
                let memory_max = limits
                    .memory_limit_bytes
                    .map_or_else(|| "max".to_string(), |b| b.to_string());
                write_file(&dir.join("memory.max"), &memory_max)?;
                // No swap under a limit, so swapping cannot hide an OOM (as
                // v1's memsw limit does); only where the kernel has swap
                // accounting.
                let swap_max = dir.join("memory.swap.max");
                if swap_max.exists() {
                    let value = if limits.memory_limit_bytes.is_some() {
                        "0"
                    } else {
                        "max"
                    };
                    write_file(&swap_max, value)?;
                }
                write_file(
                    &dir.join("cpu.weight"),
                    &shares_to_weight(shares).to_string(),
                )?;
                let quota = quota.map_or_else(|| "max".to_string(), |q| q.to_string());
                write_file(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process must be written to to join this
    /// group.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` into this group.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for file in self.procs_files() {
            write_file(&file, &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids of every process in the group (empty if the group does not exist).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let mut pids = BTreeSet::new();
        for file in self.procs_files() {
            let Some(text) = read_optional(&file)? else {
                continue;
            };
            pids.extend(
                text.lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
        }
        Ok(pids.into_iter().collect())
    }

    /// Current usage. Counters the host does not provide read as zero.
    pub fn usage(&self) -> Result<ResourceUsage> {
        let read_u64 = |path: PathBuf| -> Result<u64> {
            Ok(read_optional(&path)?
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0))
        };
        match self {
            Cgroup::V1 { .. } => {
                let in_dir = |controller, file: &str| {
                    self.v1_dir(controller)
                        .map_or(Ok(0), |dir| read_u64(dir.join(file)))
                };
                Ok(ResourceUsage {
                    cpu_nanos: in_dir(Controller::Cpuacct, "cpuacct.usage")?,
                    memory_bytes: in_dir(Controller::Memory, "memory.usage_in_bytes")?,
                    pids: in_dir(Controller::Pids, "pids.current")?,
                })
            }
            Cgroup::V2 { dir } => {
                let cpu_stat = read_optional(&dir.join("cpu.stat"))?.unwrap_or_default();
                let usage_usec = keyed_value(&cpu_stat, "usage_usec").unwrap_or(0);
                Ok(ResourceUsage {
                    cpu_nanos: usage_usec.saturating_mul(1000),
                    memory_bytes: read_u64(dir.join("memory.current"))?,
                    pids: read_u64(dir.join("pids.current"))?,
                })
            }
        }
    }

    /// How many processes the OOM killer has killed in this group, if the
    /// kernel reports it (v1 `memory.oom_control`, v2 `memory.events`).
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self {
            Cgroup::V1 { .. } => self.v1_dir(Controller::Memory)?.join("memory.oom_control"),
            Cgroup::V2 { dir } => dir.join("memory.events"),
        };
        let text = read_optional(&file).ok().flatten()?;
        keyed_value(&text, "oom_kill")
    }

    /// Removes the group's directories. The kernel refuses while processes
    /// remain (they may still be exiting), so this retries for about a second.
    pub async fn remove(&self) -> Result<()> {
        const ATTEMPTS: u32 = 20;
        for dir in self.dirs() {
            let mut attempt = 0;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if attempt + 1 < ATTEMPTS => {
                        tracing::debug!(dir = %dir.display(), error = %e, "cgroup busy, retrying removal");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(source) => return Err(Error::Io { path: dir, source }),
                }
            }
        }
        Ok(())
    }
}

/// v1 refuses a memory limit above the memory+swap limit, and the reverse,
/// so the two are written in whichever order the current values allow.
fn write_v1_memory_limit(dir: &Path, value: &str) -> Result<()> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        return write_file(&limit, value);
    }
    // Lowering: limit first, then memsw. Raising: memsw first, then limit.
    if write_file(&limit, value).is_ok() {
        write_file(&memsw, value)
    } else {
        write_file(&memsw, value)?;
        write_file(&limit, value)
    }
}

/// How many tasks the pids controller counts in the cgroup of process
/// `pid`, which another runtime placed (a CRI container's), as this host
/// shows it; `None` when it does not (no such process, no pids controller).
pub fn pids_in_group_of(pid: u32) -> Option<u64> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    let dir = if root.join("cgroup.controllers").exists() {
        let path = membership
            .lines()
            .find_map(|line| line.strip_prefix("0::"))?;
        root.join(path.trim_start_matches('/'))
    } else {
        let path = membership.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers.split(',').any(|c| c == "pids").then_some(path)
        })?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let (_, mount) = v1_mounts(&mountinfo)
            .into_iter()
            .find(|(controller, _)| *controller == Controller::Pids)?;
        mount.join(path.trim_start_matches('/'))
    };
    read_optional(&dir.join("pids.current"))
        .ok()
        .flatten()?
        .trim()
        .parse()
        .ok()
}

/// CPU shares for a request, as Kubernetes computes them (minimum 2).
pub fn cpu_shares(request_millis: u64) -> u64 {
    (request_millis.saturating_mul(1024) / 1000).max(2)
}

/// CFS quota in microseconds per [`CFS_PERIOD_US`] for a limit in millicores.
pub fn cfs_quota_us(limit_millis: u64) -> u64 {
    (limit_millis.saturating_mul(CFS_PERIOD_US) / 1000).max(MIN_CFS_QUOTA_US)
}

/// v2 `cpu.weight` for v1 shares, the conversion runc uses.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Enables c4m's controllers for the children of v2 group `dir`, as far as
/// `dir` has them.
fn enable_v2_controllers(dir: &Path) -> Result<()> {
    let available = read_optional(&dir.join("cgroup.controllers"))?.unwrap_or_default();
    let available: BTreeSet<&str> = available.split_whitespace().collect();
    let enable: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| available.contains(*c))
        .map(|c| format!("+{c}"))
        .collect();
    if enable.is_empty() {
        return Ok(());
    }
    write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))
}

/// Mount points of the v1 controllers c4m uses, from `/proc/self/mountinfo`.
fn v1_mounts(mountinfo: &str) -> Vec<(Controller, PathBuf)> {
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after = after.split_whitespace();
        if after.next() != Some("cgroup") {
            continue;
        }
        let (Some(mount_point), Some(super_options)) =
            (before.split_whitespace().nth(4), after.nth(1))
        else {
            continue;
        };
        let options: Vec<&str> = super_options.split(',').collect();
        for controller in Controller::ALL {
            if options.contains(&controller.name()) && !mounts.iter().any(|(c, _)| *c == controller)
            {
                mounts.push((controller, PathBuf::from(unescape_mount_path(mount_point))));
            }
        }
    }
    mounts.sort();
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key value` lines as in `cpu.stat`, `memory.events`, `memory.oom_control`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn unique_dirs(dirs: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// Creates and removes a group under `parent`: an existing parent made by
/// root does not mean this process may add groups to it.
fn probe_child_group(parent: &Path) -> Result<()> {
    let probe = parent.join(format!(".probe-{}", std::process::id()));
    create_dir(&probe)?;
    std::fs::remove_dir(&probe).map_err(|source| Error::Io {
        path: probe,
        source,
    })
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a cgroup file; a missing file or group is `None`.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ResourceLimits {
        ResourceLimits {
            cpu_request_millis: 250,
            cpu_limit_millis: Some(500),
            memory_request_bytes: 64 << 20,
            memory_limit_bytes: Some(128 << 20),
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn conversions_match_kubernetes_and_runc() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(250), 256);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cfs_quota_us(500), 50_000);
        assert_eq!(cfs_quota_us(2000), 200_000);
        assert_eq!(cfs_quota_us(1), MIN_CFS_QUOTA_US);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn v1_mounts_come_from_mountinfo() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/my\\040pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let mounts = v1_mounts(mountinfo);
        assert_eq!(
            mounts,
            vec![
                (Controller::Cpu, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")),
                (
                    Controller::Cpuacct,
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
                ),
                (Controller::Memory, PathBuf::from("/sys/fs/cgroup/memory")),
                (Controller::Pids, PathBuf::from("/sys/fs/cgroup/my pids")),
            ]
        );
        let group = Cgroups::new(Hierarchy::V1 { mounts }).group("web-1");
        assert_eq!(
            group.procs_files(),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c4m/web-1/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/memory/c4m/web-1/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/my pids/c4m/web-1/cgroup.procs"),
            ]
        );
    }

    /// A tempdir laid out like a cgroup2 mount: the kernel's files are plain
    /// files here, so the test checks exactly what c4m writes.
    #[tokio::test]
    async fn v2_writes_limits_and_reads_usage_in_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::create_dir(root.join("c4m")).unwrap();
        std::fs::write(root.join("c4m/cgroup.controllers"), "cpu memory\n").unwrap();
        let cgroups = Cgroups::new(Hierarchy::V2 {
            root: root.to_path_buf(),
        });
        cgroups.prepare_parent().unwrap();
        assert_eq!(
            read(&root.join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(&root.join("c4m/cgroup.subtree_control")),
            "+cpu +memory"
        );

        let group = cgroups.group("api-0");
        let dir = root.join("c4m/api-0");
        assert_eq!(group.dirs(), vec![dir.clone()]);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("memory.swap.max"), "max").unwrap();
        group.create(&limits()).unwrap();
        assert_eq!(read(&dir.join("memory.max")), (128u64 << 20).to_string());
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("cpu.weight")), "10");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");

        group.create(&ResourceLimits::default()).unwrap();
        assert_eq!(read(&dir.join("memory.max")), "max");
        assert_eq!(read(&dir.join("memory.swap.max")), "max");
        assert_eq!(read(&dir.join("cpu.weight")), "1");
        assert_eq!(read(&dir.join("cpu.max")), "max 100000");

        group.add_process(4242).unwrap();
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");
        std::fs::write(dir.join("cgroup.procs"), "12\n7\n").unwrap();
        assert_eq!(group.pids().unwrap(), vec![7, 12]);

        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .unwrap();
        std::fs::write(dir.join("memory.current"), "8192\n").unwrap();
        std::fs::write(dir.join("pids.current"), "3\n").unwrap();
        assert_eq!(
            group.usage().unwrap(),
            ResourceUsage {
                cpu_nanos: 1_500_000,
                memory_bytes: 8192,
                pids: 3
            }
        );
        assert_eq!(group.oom_kills(), None);
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(group.oom_kills(), Some(1));

        for file in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
        group.remove().await.unwrap();
        assert!(!dir.exists());
        // Removing a group that is gone is fine.
        group.remove().await.unwrap();
    }

    #[test]
    fn v1_writes_limits_in_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let mount = |name: &str| root.path().join(name);
        let cgroups = Cgroups::new(Hierarchy::V1 {
            mounts: vec![
                (Controller::Cpu, mount("cpu")),
                (Controller::Cpuacct, mount("cpuacct")),
                (Controller::Memory, mount("memory")),
            ],
        });
        let group = cgroups.group("db-0");
        group.create(&limits()).unwrap();
        let memory = mount("memory/c4m/db-0");
        let cpu = mount("cpu/c4m/db-0");
        assert_eq!(
            read(&memory.join("memory.limit_in_bytes")),
            (128u64 << 20).to_string()
        );
        assert!(!memory.join("memory.memsw.limit_in_bytes").exists());
        assert_eq!(read(&cpu.join("cpu.shares")), "256");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        std::fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(group.oom_kills(), Some(2));
        // pids is not mounted: reads as zero.
        std::fs::write(mount("cpuacct/c4m/db-0/cpuacct.usage"), "77\n").unwrap();
        assert_eq!(group.usage().unwrap().cpu_nanos, 77);
        assert_eq!(group.usage().unwrap().pids, 0);
    }

    /// Kills the test's process and removes its group even if the test
    /// panics.
    struct RealGroup {
        group: Cgroup,
        child: std::process::Child,
    }

    impl Drop for RealGroup {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            for dir in self.group.dirs() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    /// The real hierarchy of this host (root, v1 or v2): create, limit, join,
    /// read and remove a group.
    #[tokio::test]
    #[ignore = "needs root: a writable cgroup hierarchy"]
    async fn real_hierarchy_round_trip() {
        let cgroups =
            Cgroups::detect().expect("this test needs a writable cgroup hierarchy (root)");
        let group = cgroups.group(&format!("cgroup-test-{}", std::process::id()));
        group.create(&limits()).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut real = RealGroup { group, child };
        let pid = real.child.id();
        real.group.add_process(pid).unwrap();
        assert_eq!(real.group.pids().unwrap(), vec![pid]);
        // v1 does not move memory charges with a task, so memory may read 0
        // here; the counters must be readable.
        real.group.usage().unwrap();
        assert_eq!(real.group.oom_kills(), Some(0));
        real.child.kill().unwrap();
        real.child.wait().unwrap();
        real.group.remove().await.unwrap();
        assert!(real.group.dirs().iter().all(|dir| !dir.exists()));
    }
}
