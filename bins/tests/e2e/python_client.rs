//! The official Kubernetes Python client (`kubernetes` on PyPI) against a
//! running c4m: the kubectl suite's core cases (CRUD, Status errors, list
//! with label and field selectors, watch, replace with optimistic
//! concurrency, patch, scale, delete), driven by `python/client_suite.py`
//! on hollow nodes.
//!
//! `scripts/test.sh` makes a virtual environment with the client at
//! `target/test-python`; `C4M_TEST_PYTHON` names another interpreter.

use std::path::PathBuf;
use std::process::Command;

use crate::common::Cluster;

fn python() -> PathBuf {
    let path = std::env::var_os("C4M_TEST_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-python/bin/python3"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "no Python with the kubernetes client at {}: run ./scripts/test.sh, which makes one \
         (python3 -m venv target/test-python && target/test-python/bin/pip install kubernetes)",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs the kubernetes Python client (scripts/test.sh makes its venv)"]
fn the_python_client_drives_c4m() {
    let python = python();
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("node", 2, "4", "4Gi");
    let kubeconfig = cluster.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.ok(&["kubeconfig"])).unwrap();
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_suite.py");
    let output = Command::new(python)
        .arg(suite)
        .arg(&kubeconfig)
        .output()
        .expect("run the Python client suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python client suite failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let cases: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    assert_eq!(
        cases,
        [
            "create", "errors", "watch", "list", "replace", "patch", "delete"
        ],
        "{stdout}"
    );
}
