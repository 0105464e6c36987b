//! Named fail points at every step boundary, so crash tests can stop a
//! process at an exact point and `kill -9` it there.
//!
//! A process started with `C4M_STORAGE_FAIL_POINT=<name>` that reaches the
//! point `<name>` writes `c4m-storage fail point <name> reached` to stderr and
//! then stops making progress (it sleeps) until it is killed: the test that
//! started it sends `SIGKILL` as soon as it reads that line. With
//! `<name>@<K>` it stops the K-th time it reaches the point (and writes
//! `<name>@<K> reached`), so a crash can land in the middle of a batch. With
//! `C4M_STORAGE_FAIL_ACTION=kill` the process sends `SIGKILL` to itself
//! instead (for runs with no supervising test). Unset, a fail point costs one
//! load of a cached value; a value that names no fail point is reported on
//! stderr once and arms nothing.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

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

/// A fail point as [`FAIL_POINT_ENV`] arms it: `name` or `name@hit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmedFailPoint {
    /// One of [`FAIL_POINTS`].
    pub name: &'static str,
    /// The process stops the `hit`-th time it reaches the point (1 or more).
    pub hit: u32,
}

impl ArmedFailPoint {
    /// Reads `name` or `name@hit` (`hit` a positive integer; plain `name`
    /// is hit 1). The error names what is wrong: an unknown point or a bad
    /// hit count.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, hit) = match text.split_once('@') {
            None => (text, 1),
            Some((name, hit)) => match hit.parse::<u32>() {
                Ok(hit) if hit > 0 => (name, hit),
                _ => {
                    return Err(Error::invalid(
                        FAIL_POINT_ENV,
                        format!("{text:?}: the hit count after @ must be a positive integer"),
                    ));
                }
            },
        };
        let Some(name) = FAIL_POINTS.iter().copied().find(|point| *point == name) else {
            return Err(Error::invalid(
                FAIL_POINT_ENV,
                format!(
                    "{text:?}: no fail point {name:?} (known: {})",
                    FAIL_POINTS.join(", ")
                ),
            ));
        };
        Ok(Self { name, hit })
    }
}

/// `name` for the first hit, `name@hit` otherwise: what [`ArmedFailPoint::parse`] reads.
impl fmt::Display for ArmedFailPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hit == 1 {
            f.write_str(self.name)
        } else {
            write!(f, "{}@{}", self.name, self.hit)
        }
    }
}

fn armed() -> Option<ArmedFailPoint> {
    static ARMED: OnceLock<Option<ArmedFailPoint>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let text = std::env::var(FAIL_POINT_ENV).ok()?;
        ArmedFailPoint::parse(&text)
            .inspect_err(|e| eprintln!("c4m-storage: no fail point armed: {e}"))
            .ok()
    })
}

/// Stops the process here if the environment names `name` (see the module docs).
pub(crate) fn fail_point(name: &'static str) {
    debug_assert!(FAIL_POINTS.contains(&name), "unlisted fail point {name}");
    static HITS: AtomicU32 = AtomicU32::new(0);
    let Some(armed) = armed().filter(|armed| armed.name == name) else {
        return;
    };
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 != armed.hit {
        return;
    }
    eprintln!("{REACHED_PREFIX}{armed} reached");
    if std::env::var(FAIL_ACTION_ENV).as_deref() == Ok("kill") {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    // Blocks this thread (and so the operation) until the supervisor's SIGKILL.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_name_is_its_first_hit_and_name_at_k_its_kth() {
        for name in FAIL_POINTS {
            assert_eq!(
                ArmedFailPoint::parse(name).unwrap(),
                ArmedFailPoint { name, hit: 1 }
            );
            let third = ArmedFailPoint::parse(&format!("{name}@3")).unwrap();
            assert_eq!(third, ArmedFailPoint { name, hit: 3 });
            // What Display writes, parse reads back.
            assert_eq!(ArmedFailPoint::parse(&third.to_string()).unwrap(), third);
        }
        assert_eq!(
            ArmedFailPoint::parse("create.image@1").unwrap().to_string(),
            "create.image"
        );
    }

    #[test]
    fn unknown_points_and_bad_hit_counts_are_refused_by_name() {
        for (text, says) in [
            ("create.imag", "no fail point \"create.imag\""),
            ("", "no fail point \"\""),
            ("@2", "no fail point \"\""),
            ("nope@2", "no fail point \"nope\""),
            ("create.image@0", "positive integer"),
            ("create.image@", "positive integer"),
            ("create.image@-1", "positive integer"),
            ("create.image@two", "positive integer"),
            ("create.image@1@2", "positive integer"),
        ] {
            let error = ArmedFailPoint::parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("invalid {FAIL_POINT_ENV}: ")) && error.contains(says),
                "{text:?}: {error}"
            );
        }
    }
}
