//! Container records written by an earlier c4m (main at 417769b, when the
//! drivers lived in `c4m-core`: the `process` driver's `state.json` of an
//! instance of `sleep 100000`) are found by a new driver over the same
//! directory, and the container can be started again from its record.

use std::time::Duration;

use c4m_core::{ContainerRuntime, ContainerState};
use c4m_runtime::ProcessRuntime;

const ID: &str = "default_keeper-cpdq7_572559b1";

#[tokio::test]
async fn process_records_of_the_previous_release_are_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/process-417769b/default_keeper-cpdq7_572559b1"
    );
    let container_dir = dir.path().join(ID);
    std::fs::create_dir_all(&container_dir).unwrap();
    for file in ["state.json", "output.log"] {
        std::fs::copy(format!("{fixture}/{file}"), container_dir.join(file)).unwrap();
    }
    let runtime = ProcessRuntime::new(dir.path().to_path_buf(), [127, 0, 0, 1].into()).unwrap();
    let listed = runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let found = &listed[0];
    assert_eq!(found.id, ID);
    assert_eq!(found.spec.command, ["sleep", "100000"]);
    assert_eq!(found.spec.hostname.as_deref(), Some("keeper-cpdq7"));
    // The process that record names is long gone: the container is exited,
    // and starting it again from its record works.
    assert!(
        matches!(found.state, ContainerState::Exited { .. }),
        "{:?}",
        found.state
    );
    let started = runtime.start(&found.spec).await.unwrap();
    assert!(matches!(started.state, ContainerState::Running { .. }));
    runtime.stop(ID, Duration::from_secs(5)).await.unwrap();
    runtime.remove(ID).await.unwrap();
    assert!(runtime.list().await.unwrap().is_empty());
}
