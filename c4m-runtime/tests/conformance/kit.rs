//! What every case gets: a scratch directory and a loopback registry
//! holding the busybox test image, which no driver has pulled yet.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c4m_core::{ContainerRuntime, ContainerSpec, ContainerState, LogOptions};
use c4m_image::write_busybox_image;
use c4m_testkit::Registry;
use futures::StreamExt;
use oci_spec::image::ConfigBuilder;

/// How long a container gets to reach a state.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The suite's scratch space and image.
pub(crate) struct Kit {
    dir: tempfile::TempDir,
    registry: Registry,
    /// The test image in the registry (`127.0.0.1:PORT/c4m/busybox:1`):
    /// busybox with `/etc/marker` (`from-image`), user `app` (1000:1000),
    /// entrypoint `/bin/sh -c`, a cmd printing `$FOO $BAR $(pwd) uid:gid`,
    /// env `FOO=image-foo BAR=image-bar`, working dir `/srv`, user `app`.
    pub image: String,
}

impl Kit {
    /// Builds the image and pushes it to a fresh loopback registry.
    pub(crate) async fn new() -> Kit {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox is missing: apt-get install busybox-static"
        );
        let config = ConfigBuilder::default()
            .entrypoint(vec!["/bin/sh".to_string(), "-c".to_string()])
            .cmd(vec![
                r#"echo "$FOO $BAR $(pwd) $(id -u):$(id -g)""#.to_string(),
            ])
            .env(vec![
                "PATH=/bin".to_string(),
                "FOO=image-foo".to_string(),
                "BAR=image-bar".to_string(),
            ])
            .working_dir("/srv")
            .user("app")
            .build()
            .expect("image config");
        let layout = dir.path().join("image-layout");
        write_busybox_image(busybox, &layout, "1", config).expect("the busybox image");
        let registry = Registry::start(&dir.path().join("registry"));
        registry.push_oci_layout(&layout, "1", "c4m/busybox:1");
        let image = format!("{}/c4m/busybox:1", registry.host());
        Kit {
            dir,
            registry,
            image,
        }
    }

    /// The scratch directory (daemons and driver state go under it).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry, for drivers whose daemon must be told about it.
    #[allow(dead_code)] // not every driver's daemon needs it
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// A spec running `command` in the test image as root.
pub(crate) fn spec(kit: &Kit, id: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        id: id.to_string(),
        image: Some(kit.image.clone()),
        command: command.iter().map(|s| s.to_string()).collect(),
        user: Some(0),
        group: Some(0),
        ..ContainerSpec::default()
    }
}

/// Waits until the container has exited and returns its state.
pub(crate) async fn wait_exit(runtime: &dyn ContainerRuntime, id: &str) -> ContainerState {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = runtime.status(id).await.expect("status");
        if matches!(status.state, ContainerState::Exited { .. }) {
            return status.state;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The exit code of an exited state.
pub(crate) fn exit_code(state: &ContainerState) -> Option<i32> {
    match state {
        ContainerState::Exited { exit_code, .. } => *exit_code,
        ContainerState::Running { .. } => panic!("still running: {state:?}"),
    }
}

/// Reads the container's logs to the end of the stream.
pub(crate) async fn logs(runtime: &dyn ContainerRuntime, id: &str, options: LogOptions) -> String {
    let mut stream = runtime.logs(id, options).await.expect("logs");
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the log stream stalled")
    {
        text.extend_from_slice(&chunk.expect("a log chunk"));
    }
    String::from_utf8(text).expect("utf-8 logs")
}

/// Waits until the container's logs contain `needle`.
pub(crate) async fn wait_logs(runtime: &dyn ContainerRuntime, id: &str, needle: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = logs(runtime, id, LogOptions::default()).await;
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never logged {needle:?}; it logged {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the container and returns its exit code and logs once it ends.
pub(crate) async fn run_to_exit(
    runtime: &dyn ContainerRuntime,
    spec: &ContainerSpec,
) -> (Option<i32>, String) {
    runtime.start(spec).await.expect("start");
    let state = wait_exit(runtime, &spec.id).await;
    (
        exit_code(&state),
        logs(runtime, &spec.id, LogOptions::default()).await,
    )
}

/// A driver behind an `Arc`, as the agent holds it.
pub(crate) type Driver = Arc<dyn ContainerRuntime>;
