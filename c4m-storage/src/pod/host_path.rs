//! hostPath volumes: a bind mount of a host path. The caller allows them for
//! privileged pods only; this module only checks the path's type.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys;

/// What the host path must be, as Kubernetes' `hostPath.type` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPathType {
    /// No check.
    #[default]
    Unset,
    /// A directory, made (mode 0755) if missing.
    DirectoryOrCreate,
    /// An existing directory.
    Directory,
    /// A file, made empty (mode 0644) if missing.
    FileOrCreate,
    /// An existing file.
    File,
    /// An existing unix socket.
    Socket,
    /// An existing character device.
    CharDevice,
    /// An existing block device.
    BlockDevice,
}

/// Checks `source` against `kind`, making it where the type says so
/// (`DirectoryOrCreate`, `FileOrCreate`), as the kubelet does before it
/// hands a hostPath to a container.
pub fn check_host_path(source: &Path, kind: HostPathType) -> Result<()> {
    check(source, kind)
}

fn check(source: &Path, kind: HostPathType) -> Result<()> {
    let wrong =
        |what: &str| Error::invalid("host path", format!("{} is not {what}", source.display()));
    match kind {
        HostPathType::DirectoryOrCreate => std::fs::create_dir_all(source)
            .map_err(|e| Error::io("create host directory", source, e))?,
        HostPathType::FileOrCreate if !source.exists() => {
            if let Some(parent) = source.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create host directory", parent, e))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(source)
                .map_err(|e| Error::io("create host file", source, e))?;
        }
        _ => {}
    }
    let meta = match std::fs::metadata(source) {
        Ok(meta) => meta,
        Err(e) if kind == HostPathType::Unset && e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(
                "host path",
                format!("{} does not exist", source.display()),
            ));
        }
        Err(e) => return Err(Error::io("stat host path", source, e)),
    };
    let file_type = meta.file_type();
    let fits = match kind {
        HostPathType::Unset => true,
        HostPathType::DirectoryOrCreate | HostPathType::Directory => file_type.is_dir(),
        HostPathType::FileOrCreate | HostPathType::File => file_type.is_file(),
        HostPathType::Socket => file_type.is_socket(),
        HostPathType::CharDevice => file_type.is_char_device(),
        HostPathType::BlockDevice => file_type.is_block_device(),
    };
    if !fits {
        return Err(wrong(match kind {
            HostPathType::Directory | HostPathType::DirectoryOrCreate => "a directory",
            HostPathType::File | HostPathType::FileOrCreate => "a regular file",
            HostPathType::Socket => "a socket",
            HostPathType::CharDevice => "a character device",
            _ => "a block device",
        }));
    }
    Ok(())
}

/// Checks `source` against `kind` (making it where the type says so) and
/// bind-mounts it at `target`. Publishing the same source there again succeeds.
pub fn publish_host_path(
    source: &Path,
    target: &Path,
    kind: HostPathType,
    read_only: bool,
) -> Result<()> {
    check(source, kind)?;
    if sys::mount_at(target)?.is_some() {
        return Ok(());
    }
    if std::fs::metadata(source)
        .map(|m| m.is_dir())
        .unwrap_or(true)
    {
        sys::ensure_dir(target)?;
    } else {
        if let Some(parent) = target.parent() {
            sys::ensure_dir(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map_err(|e| Error::io("create mount point", target, e))?;
    }
    sys::bind_mount(source, target, read_only)
}

/// Unmounts a hostPath bind mount; one not mounted succeeds.
pub fn unpublish_host_path(target: &Path) -> Result<()> {
    sys::unmount(target).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked_and_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(check(&file, HostPathType::File).is_ok());
        let err = check(&file, HostPathType::Directory).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        assert!(check(&dir.path().join("missing"), HostPathType::Unset).is_err());
        check(&dir.path().join("made/d"), HostPathType::DirectoryOrCreate).unwrap();
        check(&dir.path().join("made/f"), HostPathType::FileOrCreate).unwrap();
        assert!(dir.path().join("made/d").is_dir() && dir.path().join("made/f").is_file());
        assert!(check(&dir.path().join("made/f"), HostPathType::Socket).is_err());
    }
}
