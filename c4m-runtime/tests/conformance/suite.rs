//! The cases: what the `ContainerRuntime` trait promises, checked the same
//! way for every driver.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use c4m_core::{ContainerState, Error, ExecRequest, LogOptions, Mount, MountPropagation};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kit::{Driver, Kit, exit_code, logs, run_to_exit, spec, wait_exit, wait_logs};

/// Connects a new driver instance to the node's containers.
type Connect<'a> = &'a (dyn Fn() -> BoxFuture<'static, Driver> + Sync);

/// What a case works with.
struct Case<'a> {
    name: &'static str,
    kit: &'a Kit,
    runtime: Driver,
    connect: Connect<'a>,
}

impl Case<'_> {
    /// A container id unique to this case and test process.
    fn id(&self, what: &str) -> String {
        format!("{}-{}-{what}", self.name, std::process::id())
    }
}

type CaseFn = for<'a> fn(&'a Case<'a>) -> BoxFuture<'a, ()>;

const CASES: &[(&str, CaseFn)] = &[
    ("lifecycle", |c| lifecycle(c).boxed()),
    ("image-defaults", |c| image_defaults(c).boxed()),
    ("memory-limit", |c| memory_limit(c).boxed()),
    ("logs", |c| logs_case(c).boxed()),
    ("exec", |c| exec(c).boxed()),
    ("interactive-exec", |c| interactive_exec(c).boxed()),
    ("stats", |c| stats(c).boxed()),
    ("stop", |c| stop(c).boxed()),
    ("adoption", |c| adoption(c).boxed()),
    ("missing-image", |c| missing_image(c).boxed()),
    ("volume-mounts", |c| volume_mounts(c).boxed()),
    ("writable-layer", |c| writable_layer(c).boxed()),
];

/// Runs every case against the driver `connect` makes, then fails naming
/// each case that failed.
pub(crate) async fn run<F, Fut>(driver: &str, kit: &Kit, connect: F)
where
    F: Fn() -> Fut + Sync,
    Fut: Future<Output = Driver> + Send + 'static,
{
    let connect = move || connect().boxed();
    let mut failures = Vec::new();
    for (name, case) in CASES {
        let runtime = connect().await;
        assert_eq!(runtime.name(), driver, "the driver's name");
        let cx = Case {
            name,
            kit,
            runtime,
            connect: &connect,
        };
        let started = Instant::now();
        let outcome = AssertUnwindSafe(case(&cx)).catch_unwind().await;
        // Whatever the case left behind, pass or fail.
        let prefix = cx.id("");
        for status in cx.runtime.list().await.unwrap_or_default() {
            if status.id.starts_with(&prefix) {
                let _ = cx.runtime.remove(&status.id).await;
            }
        }
        match outcome {
            Ok(()) => eprintln!("conformance {driver}: {name} ok ({:?})", started.elapsed()),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("conformance {driver}: {name} FAILED: {message}");
                failures.push(format!("{name}: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the {driver} driver fails {} of {} conformance cases:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// Start, exit codes, restart, a second start refused, list, remove.
async fn lifecycle(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let exits = spec(cx.kit, &cx.id("exits"), &["sh", "-c", "echo hello; exit 3"]);
    let started = rt.start(&exits).await.expect("start");
    assert_eq!(started.id, exits.id);
    let state = wait_exit(rt, &exits.id).await;
    let ContainerState::Exited {
        exit_code,
        oom_killed,
        started_at,
        finished_at,
        ..
    } = state
    else {
        unreachable!()
    };
    assert_eq!(exit_code, Some(3), "{state:?}");
    assert!(!oom_killed);
    assert!(started_at <= finished_at, "{state:?}");
    assert_eq!(logs(rt, &exits.id, LogOptions::default()).await, "hello\n");
    let listed = rt.list().await.expect("list");
    let mine = listed
        .iter()
        .find(|s| s.id == exits.id)
        .expect("list shows the exited container");
    assert_eq!(mine.spec, exits, "list gives back the spec it started from");
    // Starting an exited id runs it again.
    rt.start(&exits).await.expect("restart");
    assert_eq!(exit_code_of(rt, &exits.id).await, Some(3));

    let sleeper = spec(cx.kit, &cx.id("sleeper"), &["sleep", "1000"]);
    let status = rt.start(&sleeper).await.expect("start");
    let ContainerState::Running { pid, .. } = status.state else {
        panic!("not running after start: {status:?}")
    };
    assert!(pid > 0);
    assert!(
        rt.start(&sleeper).await.is_err(),
        "a running id started twice"
    );
    rt.stop(&sleeper.id, Duration::ZERO).await.expect("stop");
    assert!(matches!(
        rt.status(&sleeper.id).await.expect("status").state,
        ContainerState::Exited { .. }
    ));

    for id in [&exits.id, &sleeper.id] {
        rt.remove(id).await.expect("remove");
        assert!(
            matches!(rt.status(id).await, Err(Error::ContainerNotFound(_))),
            "a removed container is not found"
        );
        rt.remove(id).await.expect("removing twice is Ok");
    }
    let listed = rt.list().await.expect("list");
    assert!(
        listed
            .iter()
            .all(|s| s.id != exits.id && s.id != sleeper.id)
    );
    rt.remove(&cx.id("never-was"))
        .await
        .expect("removing an unknown id is Ok");
}

async fn exit_code_of(rt: &dyn c4m_core::ContainerRuntime, id: &str) -> Option<i32> {
    exit_code(&wait_exit(rt, id).await)
}

/// Kubernetes' merge of command/args with the image's entrypoint/cmd; env,
/// working dir and user from the image unless the spec says otherwise.
async fn image_defaults(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let mut defaults = spec(cx.kit, &cx.id("defaults"), &[]);
    defaults.user = None;
    defaults.group = None;
    defaults.env = vec![("BAR".into(), "spec-bar".into())];
    assert_eq!(
        run_to_exit(rt, &defaults).await,
        (Some(0), "image-foo spec-bar /srv 1000:1000\n".into()),
        "the image's entrypoint, cmd, env, working dir and user"
    );
    let mut args = spec(cx.kit, &cx.id("args"), &[]);
    args.user = None;
    args.group = None;
    args.args = vec!["id -un; exit 7".into()];
    assert_eq!(
        run_to_exit(rt, &args).await,
        (Some(7), "app\n".into()),
        "args replace the image's cmd and keep its entrypoint"
    );
    let mut command = spec(cx.kit, &cx.id("command"), &["/bin/sh", "-c"]);
    command.args = vec!["echo $(pwd) $(id -u):$(id -g) $TWICE".into()];
    command.user = Some(1234);
    command.group = Some(5678);
    command.working_dir = Some("/tmp".into());
    command.env = vec![
        ("TWICE".into(), "first".into()),
        ("TWICE".into(), "second".into()),
    ];
    assert_eq!(
        run_to_exit(rt, &command).await,
        (Some(0), "/tmp 1234:5678 second\n".into()),
        "command replaces the entrypoint; the spec's user, group, working dir win; later env wins"
    );
}

/// Below the memory limit a container runs; above it the kernel kills it
/// and the driver says OOMKilled (exit 137).
async fn memory_limit(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let dd = |id: &str, size: &str| {
        let mut spec = spec(
            cx.kit,
            id,
            &[
                "dd",
                "if=/dev/zero",
                "of=/dev/null",
                &format!("bs={size}"),
                "count=1",
            ],
        );
        spec.resources.memory_limit_bytes = Some(32 << 20);
        spec
    };
    let fits = dd(&cx.id("fits"), "4M");
    assert_eq!(
        run_to_exit(rt, &fits).await.0,
        Some(0),
        "4 MiB under a 32 MiB limit"
    );
    let hog = dd(&cx.id("hog"), "96M");
    rt.start(&hog).await.expect("start");
    let state = wait_exit(rt, &hog.id).await;
    assert!(
        matches!(
            state,
            ContainerState::Exited {
                oom_killed: true,
                exit_code: Some(137),
                ..
            }
        ),
        "96 MiB under a 32 MiB limit: {state:?}"
    );
}

/// Lines in order with stdout and stderr together; follow ends when the
/// container does; tail; per-line times with `timestamps` and `since`.
async fn logs_case(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let talker = spec(
        cx.kit,
        &cx.id("talker"),
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done; echo oops >&2",
        ],
    );
    rt.start(&talker).await.expect("start");
    let all = "line1\nline2\nline3\nline4\nline5\noops\n";
    let followed = logs(
        rt,
        &talker.id,
        LogOptions {
            follow: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(followed, all, "follow reads to the container's end");
    wait_exit(rt, &talker.id).await;
    let tail = logs(
        rt,
        &talker.id,
        LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(tail, "line5\noops\n");

    let stamped = logs(
        rt,
        &talker.id,
        LogOptions {
            timestamps: true,
            ..Default::default()
        },
    )
    .await;
    let lines: Vec<(jiff::Timestamp, &str)> = stamped
        .lines()
        .map(|line| {
            let (time, text) = line.split_once(' ').expect("a time, a space, the line");
            assert!(
                time.ends_with('Z') && time.contains('.'),
                "RFC 3339 in UTC with fractional seconds: {line:?}"
            );
            (time.parse().expect("an RFC 3339 time"), text)
        })
        .collect();
    let texts: Vec<&str> = lines.iter().map(|(_, text)| *text).collect();
    assert_eq!(texts, ["line1", "line2", "line3", "line4", "line5", "oops"]);
    assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "{stamped}");
    let spread = lines[4].0.duration_since(lines[0].0);
    assert!(
        spread >= jiff::SignedDuration::from_millis(800),
        "the times are when each line was written (1.2 s apart), not when read: {stamped}"
    );
    let since = SystemTime::from(lines[3].0);
    let recent = logs(
        rt,
        &talker.id,
        LogOptions {
            since: Some(since),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(recent, "line4\nline5\noops\n", "since the time of line4");
}

/// A command in a running container: its output, its exit code, the
/// container's environment; a timeout is an error, not a hang.
async fn exec(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let mut sleeper = spec(cx.kit, &cx.id("sleeper"), &["sleep", "1000"]);
    sleeper.env = vec![("FOO".into(), "from-spec".into())];
    rt.start(&sleeper).await.expect("start");
    let command = [
        "sh",
        "-c",
        "echo out; echo err >&2; echo $FOO; cat /etc/marker; exit 4",
    ]
    .map(String::from);
    let output = rt
        .exec(&sleeper.id, &command, Duration::from_secs(30))
        .await
        .expect("exec");
    assert_eq!(
        (
            output.exit_code,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned()
        ),
        (4, "out\nfrom-spec\nfrom-image\n".into(), "err\n".into())
    );
    let started = Instant::now();
    let slow = ["sleep", "30"].map(String::from);
    assert!(
        rt.exec(&sleeper.id, &slow, Duration::from_secs(1))
            .await
            .is_err(),
        "a command outliving its timeout is an error"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout held"
    );
}

/// Standard input through to the command, and a terminal.
async fn interactive_exec(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let sleeper = spec(cx.kit, &cx.id("sleeper"), &["sleep", "1000"]);
    rt.start(&sleeper).await.expect("start");
    let request = ExecRequest {
        command: vec!["cat".into()],
        stdin: true,
        tty: false,
    };
    let session = rt.exec_interactive(&sleeper.id, request).await;
    let mut session = session.expect("interactive exec");
    let mut stdin = session.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").await.expect("write stdin");
    stdin.shutdown().await.expect("close stdin");
    drop(stdin);
    let mut echoed = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        session.stdout.read_to_string(&mut echoed),
    )
    .await
    .expect("stdout ends")
    .expect("read stdout");
    assert_eq!(echoed, "hello\n");
    assert_eq!(session.exit.await.expect("exit code"), 0);

    let request = ExecRequest {
        command: ["sh", "-c", "tty; exit 7"].map(String::from).to_vec(),
        stdin: false,
        tty: true,
    };
    let mut session = rt
        .exec_interactive(&sleeper.id, request)
        .await
        .expect("exec on a terminal");
    assert!(session.stderr.is_none(), "a terminal has one output");
    let mut output = Vec::new();
    // A terminal's output may end with an error (EIO) once the command ends.
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        session.stdout.read_to_end(&mut output),
    )
    .await
    .expect("the terminal's output ends");
    let output = String::from_utf8_lossy(&output);
    assert!(output.starts_with("/dev/pts/"), "{output:?}");
    assert_eq!(session.exit.await.expect("exit code"), 7);
}

/// Usage from the container's cgroup: CPU time grows while it spins.
async fn stats(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let mut spinner = spec(
        cx.kit,
        &cx.id("spinner"),
        &["sh", "-c", "while :; do :; done"],
    );
    spinner.resources.cpu_limit_millis = Some(500);
    rt.start(&spinner).await.expect("start");
    let first = rt.stats(&spinner.id).await.expect("stats");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = rt.stats(&spinner.id).await.expect("stats");
    assert!(
        second.cpu_nanos > first.cpu_nanos,
        "{first:?} then {second:?}"
    );
    assert!(second.memory_bytes > 0, "{second:?}");
    assert!(second.pids >= 1, "{second:?}");
}

/// Stop: SIGTERM first; SIGKILL when the grace period runs out.
async fn stop(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let polite = spec(
        cx.kit,
        &cx.id("polite"),
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
        ],
    );
    rt.start(&polite).await.expect("start");
    wait_logs(rt, &polite.id, "up").await;
    let started = Instant::now();
    rt.stop(&polite.id, Duration::from_secs(20))
        .await
        .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "TERM was honoured"
    );
    let state = rt.status(&polite.id).await.expect("status").state;
    assert_eq!(exit_code(&state), Some(0), "{state:?}");
    assert_eq!(
        logs(rt, &polite.id, LogOptions::default()).await,
        "up\nbye\n"
    );

    // pid 1 without a handler ignores SIGTERM.
    let stubborn = spec(cx.kit, &cx.id("stubborn"), &["sleep", "1000"]);
    rt.start(&stubborn).await.expect("start");
    let started = Instant::now();
    rt.stop(&stubborn.id, Duration::from_secs(1))
        .await
        .expect("stop");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the grace was given"
    );
    let state = rt.status(&stubborn.id).await.expect("status").state;
    assert!(
        matches!(
            state,
            ContainerState::Exited {
                exit_code: Some(137),
                oom_killed: false,
                ..
            }
        ),
        "{state:?}"
    );
}

/// A new driver instance (an agent restart) finds a running container and
/// can do everything with it.
async fn adoption(cx: &Case<'_>) {
    let kept = spec(
        cx.kit,
        &cx.id("kept"),
        &["sh", "-c", "echo started; exec sleep 1000"],
    );
    let status = cx.runtime.start(&kept).await.expect("start");
    let ContainerState::Running { pid, .. } = status.state else {
        panic!("not running: {status:?}")
    };
    wait_logs(cx.runtime.as_ref(), &kept.id, "started").await;
    let second = (cx.connect)().await;
    let listed = second.list().await.expect("list");
    let found = listed
        .iter()
        .find(|s| s.id == kept.id)
        .expect("the new driver lists the running container");
    assert_eq!(found.spec, kept, "with the spec it was started from");
    assert!(
        matches!(found.state, ContainerState::Running { pid: p, .. } if p == pid),
        "{:?}",
        found.state
    );
    let output = second
        .exec(
            &kept.id,
            &["cat".into(), "/etc/marker".into()],
            Duration::from_secs(30),
        )
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "from-image\n");
    assert_eq!(
        logs(second.as_ref(), &kept.id, LogOptions::default()).await,
        "started\n"
    );
    assert!(second.stats(&kept.id).await.expect("stats").pids >= 1);
    second.stop(&kept.id, Duration::ZERO).await.expect("stop");
    let state = second.status(&kept.id).await.expect("status").state;
    assert_eq!(exit_code(&state), Some(137), "{state:?}");
    assert_eq!(
        exit_code(&cx.runtime.status(&kept.id).await.expect("status").state),
        Some(137),
        "the first instance sees the same"
    );
    second.remove(&kept.id).await.expect("remove");
}

/// An image no registry has: a clear error naming it, an image error (the
/// agent shows it as ErrImagePull), and no container.
async fn missing_image(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let mut ghost = spec(cx.kit, &cx.id("ghost"), &["true"]);
    // A loopback port nothing listens on: the pull fails fast.
    ghost.image = Some("127.0.0.1:1/c4m/nope:1".into());
    let error = rt.start(&ghost).await.expect_err("no such image");
    assert!(
        matches!(error, c4m_core::Error::Image { .. }),
        "{}: {error:?}",
        rt.name()
    );
    let error = error.to_string();
    assert!(error.contains("127.0.0.1:1/c4m/nope:1"), "{error}");
    assert!(
        rt.list()
            .await
            .expect("list")
            .iter()
            .all(|s| s.id != ghost.id),
        "nothing is left of it"
    );
}

/// A node directory mounted writable shows the container's writes on the
/// node, one mounted read-only refuses them, and a mount below another
/// (parents first, whatever the order given) shows its own files.
async fn volume_mounts(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let node = cx.kit.dir().join(cx.id("volumes"));
    let (data, config, nested) = (node.join("data"), node.join("config"), node.join("nested"));
    for dir in [&data, &config, &nested] {
        std::fs::create_dir_all(dir).expect("make a volume directory");
    }
    std::fs::write(config.join("app.conf"), "from-node\n").expect("write a file");
    std::fs::write(nested.join("inner"), "nested\n").expect("write a file");
    // The refused write's message is dropped: a driver's log may put stderr
    // ahead of stdout.
    let mut mounted = spec(
        cx.kit,
        &cx.id("mounted"),
        &[
            "sh",
            "-c",
            "echo written > /data/out && cat /config/app.conf /data/nested/inner; \
             if (echo x > /config/app.conf) 2>/dev/null; then echo config-writable; fi",
        ],
    );
    let mount = |source: &std::path::Path, destination: &str, read_only: bool| Mount {
        source: source.to_path_buf(),
        destination: destination.into(),
        read_only,
        propagation: MountPropagation::None,
    };
    mounted.mounts = vec![
        mount(&nested, "/data/nested", true),
        mount(&data, "/data", false),
        mount(&config, "/config", true),
    ];
    let (code, output) = run_to_exit(rt, &mounted).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.starts_with("from-node\nnested\n"),
        "the mounted files, the nested mount over its parent: {output:?}"
    );
    assert!(
        !output.contains("config-writable"),
        "a read-only mount took a write: {output:?}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("out")).expect("the container's write on the node"),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(config.join("app.conf")).expect("read"),
        "from-node\n"
    );
}

/// With a writable layer on a sized file system (here a 4 MiB tmpfs), a
/// container's writes to its root file system stop there with ENOSPC;
/// drivers that cannot place the layer refuse the spec.
async fn writable_layer(cx: &Case<'_>) {
    let rt = cx.runtime.as_ref();
    let layer = cx.kit.dir().join(cx.id("layer"));
    std::fs::create_dir_all(&layer).expect("make the layer directory");
    let mut filler = spec(
        cx.kit,
        &cx.id("filler"),
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M count=8 2>&1; echo exit=$?",
        ],
    );
    filler.writable_layer = Some(layer.clone());
    if !["oci", "containerd"].contains(&rt.name()) {
        let error = rt
            .start(&filler)
            .await
            .expect_err("an unbounded driver took the spec");
        assert!(matches!(error, Error::Unsupported { .. }), "{error}");
        return;
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&layer)
        .status()
        .expect("mount");
    assert!(status.success(), "mount a 4 MiB tmpfs");
    let (code, output) = run_to_exit(rt, &filler).await;
    let _ = rt.remove(&filler.id).await;
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&layer)
        .status();
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("No space left on device") && !output.contains("exit=0"),
        "8 MiB into a 4 MiB layer: {output:?}"
    );
}
