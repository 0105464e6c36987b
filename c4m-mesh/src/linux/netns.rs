//! Named network namespaces, as `ip netns` makes them: a namespace kept
//! alive by a bind mount of its nsfs file, with no process in it.
//!
//! Entering a namespace changes only the calling thread, so every entry
//! happens on a fresh thread that ends right after; sockets opened there
//! stay in the namespace they were opened in.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::{Error, Result};

/// Runs `work` on a new thread inside the network namespace at `path` and
/// returns what it returns; sockets it opens belong to that namespace.
pub fn enter_network_namespace<T, F>(path: &Path, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let namespace = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening network namespace {}", path.display()), e))?;
    let shown = path.to_path_buf();
    on_own_thread(move || {
        nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET)
            .map_err(|e| namespace_failed(&shown, "entering", e))?;
        Ok(work())
    })
}

/// Creates the namespace at `path` unless one is already mounted there.
pub(crate) fn create(path: &Path) -> Result<()> {
    if is_namespace(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::File::create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let target: PathBuf = path.to_path_buf();
    on_own_thread(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| namespace_failed(&target, "unshare", e))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| namespace_failed(&target, "bind mount", e))
    })
}

/// Creates, unless one is mounted there, a network namespace at `path`
/// with only its loopback, up: the one a pod's containers share (each
/// other's `localhost`) when the pod has no VPC address.
pub async fn create_loopback_namespace(path: &Path) -> Result<()> {
    create(path)?;
    let handle = netlink_in(path)?;
    let loopback = super::bridge::link_index(&handle, "lo")
        .await
        .map_err(|e| namespace_failed(path, "finding lo", e))?
        .ok_or_else(|| namespace_failed(path, "finding lo", "no loopback link"))?;
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(loopback).up().build())
        .execute()
        .await
        .map_err(|e| namespace_failed(path, "bringing lo up", e))
}

/// Removes the namespace [`create_loopback_namespace`] made; absent is Ok.
pub fn remove_network_namespace(path: &Path) -> Result<()> {
    remove(path)
}

/// Whether a network namespace is mounted at `path`.
pub(crate) fn is_namespace(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Unmounts and deletes the namespace at `path`; the kernel frees it (and
/// the veth ends in it) once nothing else holds it. Absent is Ok.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(namespace_failed(path, "unmount", e)),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// Opens a netlink connection inside the namespace at `path`, served by a
/// task on the current runtime that ends when the handle is dropped.
pub(crate) fn netlink_in(path: &Path) -> Result<rtnetlink::Handle> {
    let runtime = tokio::runtime::Handle::current();
    let shown = path.to_path_buf();
    let (connection, handle, _) = enter_network_namespace(path, move || {
        let _entered = runtime.enter();
        rtnetlink::new_connection()
    })?
    .map_err(|e| namespace_failed(&shown, "netlink socket", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Runs `work` on a thread of its own, so namespace changes die with it.
fn on_own_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name("c4m-netns".into())
        .spawn(work)
        .map_err(|e| Error::io("starting a network namespace thread", e))?
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Network {
                what: "namespace thread".into(),
                message: "panicked".into(),
            })
        })
}

fn namespace_failed(path: &Path, what: &str, source: impl Into<c4m_core::BoxError>) -> Error {
    Error::failed(format!("namespace {}: {what}", path.display()), source)
}
