//! Named fail points at every step boundary, so crash tests can stop a
//! process at an exact point and `kill -9` it there.
//!
//! A process started with `C4M_STORAGE_FAIL_POINT=<name>` that reaches the
//! point `<name>` writes `c4m-storage fail point <name> reached` to stderr and
//! then stops making progress (it sleeps) until it is killed: the test that
//! started it sends `SIGKILL` as soon as it reads that line. With
//! `C4M_STORAGE_FAIL_ACTION=kill` the process sends `SIGKILL` to itself
//! instead (for runs with no supervising test). Unset, a fail point costs one
//! load of a cached value.

use std::sync::OnceLock;

/// The environment variable naming the fail point to stop at.
pub const FAIL_POINT_ENV: &str = "C4M_STORAGE_FAIL_POINT";
/// The environment variable choosing what happens there: `pause` (default) or `kill`.
pub const FAIL_ACTION_ENV: &str = "C4M_STORAGE_FAIL_ACTION";
/// What a process writes to stderr when it reaches its fail point.
pub const REACHED_PREFIX: &str = "c4m-storage fail point ";

/// Every fail point, in the order an operation reaches them.
pub const FAIL_POINTS: &[&str] = &[
    // provision: record written (creating), image file made, filesystem made
    "create.image",
    "create.format",
    // stage: loop device attached, then mounted
    "attach.loop",
    "mount.staged",
    // publish: bind mount made, not yet recorded
    "mount.published",
    // unpublish / unstage: unmounted, loop detached
    "unmount.unpublished",
    "unmount.unstaged",
    "unmount.detached",
    // delete: marked deleting, image removed
    "delete.marked",
    "delete.image",
    // snapshot: filesystem frozen, image copied
    "snapshot.frozen",
    "snapshot.copied",
    // expand: image grown, filesystem not yet resized
    "expand.grown",
    // restore: snapshot copied into the new image
    "restore.copied",
];

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(FAIL_POINT_ENV).ok())
        .as_deref()
}

/// Stops the process here if the environment names `name` (see the module docs).
pub(crate) fn fail_point(name: &'static str) {
    debug_assert!(FAIL_POINTS.contains(&name), "unlisted fail point {name}");
    if armed() != Some(name) {
        return;
    }
    eprintln!("{REACHED_PREFIX}{name} reached");
    if std::env::var(FAIL_ACTION_ENV).as_deref() == Ok("kill") {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    // Blocks this thread (and so the operation) until the supervisor's SIGKILL.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
