//! Crash safety: a child process runs a workload that passes every fail point;
//! for each point the test stops the child there, `kill -9`s it, reconciles
//! and checks that nothing leaked and fsynced data is intact (root).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use c4m_storage::testing::{
    CleanupGuard, FAIL_POINTS_AFTER_WRITE, LOCAL_PROGRAMS, WORKLOAD_DATA, WorkloadPaths,
    every_step_workload, leaks, require_root_and, tear_down_all, workload_ids,
};
use c4m_storage::{FAIL_POINT_ENV, FAIL_POINTS, LocalBackend, REACHED_PREFIX, VolumeBackend};

const POOL_ENV: &str = "C4M_CRASH_TEST_POOL";
const ROOT_ENV: &str = "C4M_CRASH_TEST_ROOT";

/// The workload. Run by itself it goes through every step and must leave
/// nothing behind; the crash test runs it as its child, on its own pool,
/// with a fail point armed.
#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs)"]
async fn workload_passes_every_step() {
    require_root_and(LOCAL_PROGRAMS).unwrap();
    let (dir, pool, root) = match (std::env::var_os(POOL_ENV), std::env::var_os(ROOT_ENV)) {
        (Some(pool), Some(root)) => (None, pool.into(), root.into()),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let (pool, root) = (dir.path().join("pool"), dir.path().join("mnt"));
            (Some(dir), pool, root)
        }
    };
    let _guard = dir
        .as_ref()
        .map(|d| CleanupGuard::new([d.path().to_path_buf()]));
    let backend = LocalBackend::open(&pool).unwrap();
    every_step_workload(&backend, &root).await.unwrap();
    assert!(leaks(&pool, &root).await.unwrap().is_empty());
    let _: &Option<tempfile::TempDir> = &dir;
}

/// Runs the workload in a child stopped at `point` and kills it there with SIGKILL.
fn crash_at(point: &str, pool: &Path, root: &Path) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "workload_passes_every_step",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FAIL_POINT_ENV, point)
        .env(POOL_ENV, pool)
        .env(ROOT_ENV, root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with(REACHED_PREFIX) {
                let _ = tx.send(line);
            }
        }
    });
    let reached = rx.recv_timeout(Duration::from_secs(120));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let line = reached
        .unwrap_or_else(|_| panic!("the child never reached fail point {point} (exit: {status})"));
    assert_eq!(line, format!("{REACHED_PREFIX}{point} reached"));
}

/// Writes a byte in `dir` on another thread: a filesystem left frozen would block it.
fn writable_within(dir: &Path, timeout: Duration) -> bool {
    let file = dir.join("after-crash");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(&file, b"x").is_ok());
    });
    rx.recv_timeout(timeout).unwrap_or(false)
}

#[tokio::test]
#[ignore = "needs root + loop devices, ext4 (e2fsprogs), fsfreeze"]
async fn kill_9_at_every_fail_point_then_reconcile_leaves_no_leak() {
    require_root_and(LOCAL_PROGRAMS).unwrap();
    for point in FAIL_POINTS {
        let dir = tempfile::tempdir().unwrap();
        let _guard = CleanupGuard::new([dir.path().to_path_buf()]);
        let (pool, root) = (dir.path().join("pool"), dir.path().join("mnt"));
        crash_at(point, &pool, &root);

        let backend = LocalBackend::open(&pool).unwrap();
        let report = backend
            .reconcile()
            .await
            .unwrap_or_else(|e| panic!("{point}: reconcile: {e}"));
        eprintln!("{point}: {report:?}");
        assert!(
            backend.reconcile().await.unwrap().is_clean(),
            "{point}: a second reconcile finds nothing"
        );

        // What the records declare is all that is mounted.
        let declared: Vec<_> = backend
            .list()
            .await
            .unwrap()
            .into_iter()
            .flat_map(|v| v.staged_at.into_iter().chain(v.published_at))
            .collect();
        let found = leaks(&pool, &root).await.unwrap();
        let mut mounted = found.mounts.clone();
        mounted.sort();
        let mut want = declared.clone();
        want.sort();
        assert_eq!(mounted, want, "{point}: mounts");
        let staged = backend
            .list()
            .await
            .unwrap()
            .iter()
            .filter(|v| v.staged_at.is_some())
            .count();
        assert_eq!(
            found.loops.len(),
            staged,
            "{point}: loop devices {:?}",
            found.loops
        );

        // Data fsynced before the crash is intact.
        let (v1, _, _) = workload_ids();
        let paths = WorkloadPaths::new(&root);
        if FAIL_POINTS_AFTER_WRITE.contains(point) && backend.volume(&v1).await.unwrap().is_some() {
            let check = root.join("check");
            let staging = backend.volume(&v1).await.unwrap().unwrap().staged_at;
            let at = match &staging {
                Some(path) => path.clone(),
                None => {
                    backend.stage(&v1, &check).await.unwrap();
                    check.clone()
                }
            };
            assert_eq!(
                std::fs::read(at.join("data")).unwrap(),
                WORKLOAD_DATA,
                "{point}: data"
            );
            assert!(
                writable_within(&at, Duration::from_secs(10)),
                "{point}: the filesystem is still frozen"
            );
            if staging.is_none() {
                backend.unstage(&v1, &check).await.unwrap();
            }
        }
        let _ = paths;

        // Everything can be taken down through the API, leaving nothing.
        tear_down_all(&backend).await.unwrap();
        let left = leaks(&pool, &root).await.unwrap();
        assert!(left.is_empty(), "{point}: leaked {left:?}");
    }
}
