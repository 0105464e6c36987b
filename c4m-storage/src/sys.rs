//! The node's side effects: external programs (util-linux, e2fsprogs), mount
//! and unmount system calls, and what `/proc/self/mountinfo` says.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Runs `program args...` and returns its stdout; a non-zero exit is
/// [`Error::Command`] with its stderr.
pub(crate) async fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = tokio::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let command = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    Err(Error::Command {
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// `major:minor` of the mounted device.
    pub(crate) device: (u64, u64),
    /// The root of the mount within its filesystem.
    pub(crate) root: PathBuf,
    /// Where it is mounted.
    pub(crate) mount_point: PathBuf,
    /// The filesystem type.
    pub(crate) fs_type: String,
    /// The mount source (a device, `tmpfs`, a FUSE name).
    pub(crate) source: String,
}

/// Parses mountinfo text; lines that do not parse are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_owned();
    let source = unescape(right.next().unwrap_or(""));
    Some(MountEntry {
        device: (major.parse().ok()?, minor.parse().ok()?),
        root: PathBuf::from(unescape(fields.get(3)?)),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
        fs_type,
        source,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of this process's mount namespace.
pub(crate) fn mounts() -> Result<Vec<MountEntry>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    Ok(parse_mountinfo(&text))
}

/// The mount at exactly `path`, if any (the topmost when stacked).
pub(crate) fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    let path = absolute(path);
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// `path` made absolute without resolving symlinks through a dead mount.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Mounts `source` (of type `fs_type`) at `target`.
pub(crate) fn mount(
    source: &Path,
    target: &Path,
    fs_type: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(Some(source), target, Some(fs_type), flags, data).map_err(|source| {
        Error::Mount {
            op: "mount",
            path: target.to_path_buf(),
            source,
        }
    })
}

/// Bind-mounts `source` at `target`, then makes it read-only if asked (a bind
/// mount takes `MS_RDONLY` only on a remount).
pub(crate) fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::Mount {
        op: "bind mount",
        path: target.to_path_buf(),
        source: e,
    })?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::empty());
            return Err(Error::Mount {
                op: "remount read-only",
                path: target.to_path_buf(),
                source: e,
            });
        }
    }
    Ok(())
}

/// How many times an unmount that finds its mount busy is retried, 20 ms
/// apart.
const UNMOUNT_BUSY_RETRIES: u32 = 25;

/// Unmounts whatever is mounted at `target`; not mounted is success. A busy
/// mount is an error (nothing is lazily detached behind a user's back), except
/// a dead FUSE mount, which is detached.
pub(crate) fn unmount(target: &Path) -> Result<bool> {
    if mount_at(target)?.is_none() {
        return Ok(false);
    }
    // A process forked by another thread holds this process's open files
    // until it execs (close-on-exec), so a mount just written to can be
    // busy for a moment: retry EBUSY briefly, as the kubelet retries.
    let mut busy_retries = 0;
    let unmounted = loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Err(nix::Error::EBUSY) if busy_retries < UNMOUNT_BUSY_RETRIES => {
                busy_retries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other,
        }
    };
    match unmounted {
        Ok(()) => Ok(true),
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(false),
        Err(nix::Error::ENOTCONN) => nix::mount::umount2(target, MntFlags::MNT_DETACH)
            .map(|()| true)
            .map_err(|source| Error::Mount {
                op: "unmount",
                path: target.to_path_buf(),
                source,
            }),
        Err(source) => Err(Error::Mount {
            op: "unmount",
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// Creates a directory (and its parents) to mount on.
pub(crate) fn ensure_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io("create mount point", path, e))
}

/// Loop devices backed by `file` (`losetup -j`).
pub(crate) async fn loops_of(file: &Path) -> Result<Vec<PathBuf>> {
    let out = run("losetup", [OsStr::new("-j"), file.as_os_str()]).await?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(':').map(|(dev, _)| PathBuf::from(dev)))
        .collect())
}

/// Every loop device with its backing file (`losetup --list`), for loop
/// devices whose file was deleted (shown with ` (deleted)`).
pub(crate) async fn all_loops() -> Result<Vec<(PathBuf, PathBuf)>> {
    let out = run(
        "losetup",
        ["--list", "--noheadings", "--output", "NAME,BACK-FILE"],
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let (name, file) = line.trim().split_once(char::is_whitespace)?;
            let file = file.trim();
            let file = file.strip_suffix(" (deleted)").unwrap_or(file);
            Some((PathBuf::from(name), PathBuf::from(file)))
        })
        .collect())
}

/// Attaches `file` to a free loop device and returns the device.
pub(crate) async fn attach_loop(file: &Path) -> Result<PathBuf> {
    let out = run(
        "losetup",
        [OsStr::new("--find"), OsStr::new("--show"), file.as_os_str()],
    )
    .await?;
    Ok(PathBuf::from(out.trim()))
}

/// How long a detach waits for the kernel to let go of a loop device.
const DETACH_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Detaches a loop device; one already gone is success. The kernel defers
/// the detach of a device something still holds open (a file system being
/// torn down, a `blkid`), so this waits, boundedly, until it is gone:
/// callers count on no device being left behind.
pub(crate) async fn detach_loop(device: &Path) -> Result<()> {
    match run("losetup", [OsStr::new("-d"), device.as_os_str()]).await {
        Ok(_) => {}
        Err(Error::Command { stderr, .. })
            if stderr.contains("No such device") || stderr.contains("No such file") =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let Some(name) = device.file_name() else {
        return Ok(());
    };
    let backing = Path::new("/sys/block").join(name).join("loop/backing_file");
    let deadline = tokio::time::Instant::now() + DETACH_SETTLE;
    while backing.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if backing.exists() {
        tracing::warn!(device = %device.display(), "loop device still attached after its detach (held open)");
    }
    Ok(())
}

/// `major:minor` of a block device.
pub(crate) fn device_number(device: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::stat::stat(device).map_err(|e| Error::io("stat", device, e.into()))?;
    Ok((
        nix::sys::stat::major(st.st_rdev),
        nix::sys::stat::minor(st.st_rdev),
    ))
}

/// Free and total bytes of the filesystem holding `path`.
pub(crate) fn fs_space(path: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| Error::io("statvfs", path, e.into()))?;
    let unit = st.fragment_size();
    Ok((st.blocks_available() * unit, st.blocks() * unit))
}

/// Like [`run`], but the exit codes in `ok` also count as success (e2fsck
/// exits 1 when it corrected something).
pub(crate) async fn run_allowing<I, S>(program: &str, args: I, ok: &[&str]) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    match run(program, args).await {
        Err(Error::Command { status, .. })
            if ok
                .iter()
                .any(|code| status == format!("exit status: {code}")) =>
        {
            Ok(String::new())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "36 35 7:3 / /var/lib/c4m/a\\040b rw,relatime shared:1 - ext4 /dev/loop3 rw\n\
                    37 35 0:52 /sub /mnt/t rw - tmpfs tmpfs rw,size=1024k\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].device, (7, 3));
        assert_eq!(m[0].mount_point, PathBuf::from("/var/lib/c4m/a b"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, "/dev/loop3");
        assert_eq!(m[1].root, PathBuf::from("/sub"));
    }
}
