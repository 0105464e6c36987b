//! The `docker` driver: dockerd 20.10 on a socket of its own, pulling the
//! test image from the loopback registry (plain HTTP, which dockerd allows
//! for 127.0.0.0/8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use c4m_core::{ContainerRuntime, Error, ExecRequest, TerminalSize};
use c4m_runtime::DockerRuntime;
use c4m_testkit::Dockerd;
use tokio::io::AsyncReadExt;

use crate::kit::{Kit, WAIT, spec};
use crate::suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + dockerd"]
async fn docker_conforms() {
    let kit = Kit::new().await;
    let daemon = Dockerd::start(&kit.dir().join("dockerd"));
    let socket = daemon.socket().to_owned();
    suite::run("docker", &kit, move || {
        let socket = socket.clone();
        async move {
            Arc::new(
                DockerRuntime::connect(&socket)
                    .await
                    .expect("the docker driver connects to its dockerd"),
            ) as Arc<dyn ContainerRuntime>
        }
    })
    .await;
}

/// What only the docker driver promises, looked at from behind it with the
/// `docker` CLI: host networking and the swap limit on the container, the
/// node label keeping each agent to its own containers, exec'd commands
/// killed when their caller gives up (the API cannot), terminal resizes,
/// and a daemon that went away named by its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + dockerd"]
async fn docker_specifics() {
    let kit = Kit::new().await;
    let daemon = Dockerd::start(&kit.dir().join("dockerd"));
    let socket = daemon.socket().to_owned();
    let connect = |node: &'static str| {
        let socket = socket.clone();
        async move {
            DockerRuntime::connect(&socket)
                .await
                .expect("the docker driver connects")
                .for_node(node)
        }
    };
    let (a, b) = (connect("node-a").await, connect("node-b").await);
    let mut sleeper = spec(&kit, "specifics-sleeper", &["sleep", "1000"]);
    sleeper.resources.memory_limit_bytes = Some(64 << 20);
    a.start(&sleeper).await.expect("start");
    let other = spec(&kit, "specifics-other", &["sleep", "1000"]);
    b.start(&other).await.expect("start on node b");

    let look =
        |format: &str| daemon.docker(&["inspect", "--format", format, "c4m-specifics-sleeper"]);
    assert_eq!(look("{{.HostConfig.NetworkMode}}").trim(), "host");
    assert_eq!(
        look("{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}").trim(),
        format!("{0} {0}", 64 << 20)
    );
    assert_eq!(
        look("{{index .Config.Labels \"io.c4m.node\"}}").trim(),
        "node-a"
    );

    let ids = |statuses: Vec<c4m_core::ContainerStatus>| -> Vec<String> {
        statuses.into_iter().map(|s| s.id).collect()
    };
    assert_eq!(ids(a.list().await.expect("list a")), ["specifics-sleeper"]);
    assert_eq!(ids(b.list().await.expect("list b")), ["specifics-other"]);

    // A timed-out exec's command does not live on.
    let error = a
        .exec(
            &sleeper.id,
            &["sh".into(), "-c".into(), "exec sleep 777".into()],
            Duration::from_millis(500),
        )
        .await
        .expect_err("the exec times out");
    assert!(error.to_string().contains("timed out"), "{error}");
    wait_gone(&a, &sleeper.id, "sleep 777").await;

    // Nor does one whose interactive session was dropped.
    let session = a
        .exec_interactive(
            &sleeper.id,
            ExecRequest {
                command: ["sh", "-c", "exec sleep 888"].map(String::from).to_vec(),
                stdin: false,
                tty: false,
            },
        )
        .await
        .expect("interactive exec");
    wait_running(&a, &sleeper.id, "sleep 888").await;
    drop(session);
    wait_gone(&a, &sleeper.id, "sleep 888").await;

    // A terminal takes the size it is given (the resize reaches the daemon
    // in the background: the command waits for it).
    let mut session = a
        .exec_interactive(
            &sleeper.id,
            ExecRequest {
                command: [
                    "sh",
                    "-c",
                    "until [ \"$(stty size)\" = '27 91' ]; do sleep 0.05; done; stty size",
                ]
                .map(String::from)
                .to_vec(),
                stdin: false,
                tty: true,
            },
        )
        .await
        .expect("exec on a terminal");
    let resize = session.resize.take().expect("a terminal resizes");
    resize(TerminalSize {
        width: 91,
        height: 27,
    })
    .expect("resize");
    let mut output = Vec::new();
    let _ = tokio::time::timeout(WAIT, session.stdout.read_to_end(&mut output))
        .await
        .expect("the terminal's output ends once the size is in");
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("27 91"), "{output:?}");
    assert_eq!(session.exit.await.expect("exit code"), 0);

    drop(daemon);
    let error = a.status(&sleeper.id).await.expect_err("no daemon");
    assert!(
        matches!(&error, Error::DaemonUnreachable { socket: s, .. } if *s == socket),
        "{error:?}"
    );
}

/// Whether a process whose command line contains `needle` runs in the
/// container.
async fn runs(runtime: &DockerRuntime, id: &str, needle: &str) -> bool {
    let ps = runtime
        .exec(id, &["ps".into(), "-o".into(), "args".into()], WAIT)
        .await
        .expect("ps");
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .any(|line| line.contains(needle))
}

async fn wait_running(runtime: &DockerRuntime, id: &str, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !runs(runtime, id, needle).await {
        assert!(Instant::now() < deadline, "{needle} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_gone(runtime: &DockerRuntime, id: &str, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while runs(runtime, id, needle).await {
        assert!(Instant::now() < deadline, "{needle} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
