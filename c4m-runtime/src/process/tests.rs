//! The `process` driver against real processes (and real cgroups where the
//! host has them; these tests run as root on a cgroup v1 host in CI).

use std::net::Ipv4Addr;

use futures::StreamExt;

use super::*;
use c4m_core::{ContainerState, ResourceLimits, TerminalSize};

use crate::read_to_string;

/// A runtime over a fresh state directory. Dropping it kills whatever its
/// tests left running and removes their cgroups, even when a test panicked.
struct Fixture {
    runtime: ProcessRuntime,
    state: tempfile::TempDir,
    test: String,
}

impl Fixture {
    fn new(test: &str) -> Fixture {
        let state = tempfile::tempdir().unwrap();
        let runtime =
            ProcessRuntime::new(state.path().to_path_buf(), Ipv4Addr::LOCALHOST.into()).unwrap();
        Fixture {
            runtime,
            state,
            test: test.to_string(),
        }
    }

    /// Another runtime over the same state directory (an agent restart).
    fn second_runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.state.path().to_path_buf(), Ipv4Addr::LOCALHOST.into()).unwrap()
    }

    /// A container id unique to this test and test process (cgroups are
    /// host-wide).
    fn id(&self, name: &str) -> String {
        format!("{}-{name}-{}", self.test, std::process::id())
    }

    fn spec(&self, name: &str, argv: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: self.id(name),
            image: None,
            command: vec![argv[0].to_string()],
            args: argv[1..].iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            group: None,
            ports: Vec::new(),
            resources: ResourceLimits::default(),
            network_namespace: None,
            privileged: false,
            read_only_root_filesystem: false,
            ..ContainerSpec::default()
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let inner = &self.runtime.inner;
        let Ok(entries) = std::fs::read_dir(&inner.state_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let record = std::fs::read(entry.path().join("state.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok());
            if let Some(record) = record
                && procfs::is_alive(record.pid, record.start_ticks)
            {
                signal_group(record.pid, Signal::SIGKILL);
            }
            let Some(group) = inner.group(&id) else {
                continue;
            };
            for _ in 0..40 {
                for pid in group.pids().unwrap_or_default() {
                    signal_process(pid, Signal::SIGKILL);
                }
                let dirs = group.dirs();
                if dirs
                    .iter()
                    .all(|dir| std::fs::remove_dir(dir).is_ok() || !dir.exists())
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

async fn wait_exited(runtime: &ProcessRuntime, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = runtime.status(id).await.unwrap();
        if matches!(status.state, ContainerState::Exited { .. }) {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_logs(runtime: &ProcessRuntime, id: &str, options: LogOptions) -> String {
    let mut stream = runtime.logs(id, options).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

fn exit_of(status: &ContainerStatus) -> (Option<i32>, Option<i32>, bool) {
    match status.state {
        ContainerState::Exited {
            exit_code,
            signal,
            oom_killed,
            ..
        } => (exit_code, signal, oom_killed),
        ContainerState::Running { .. } => panic!("{} still running", status.id),
    }
}

fn running_pid(status: &ContainerStatus) -> u32 {
    match status.state {
        ContainerState::Running { pid, .. } => pid,
        ContainerState::Exited { .. } => panic!("{} not running: {status:?}", status.id),
    }
}

#[tokio::test]
async fn start_status_stop_remove() {
    let fixture = Fixture::new("lifecycle");
    let runtime = &fixture.runtime;
    assert_eq!(runtime.name(), "process");
    assert_eq!(runtime.version(), env!("CARGO_PKG_VERSION"));
    let spec = fixture.spec("sleep", &["sleep", "30"]);
    let id = spec.id.clone();

    let started = runtime.start(&spec).await.unwrap();
    let pid = running_pid(&started);
    assert_eq!(runtime.status(&id).await.unwrap(), started);
    assert_eq!(runtime.list().await.unwrap(), vec![started.clone()]);
    let error = runtime.start(&spec).await.unwrap_err().to_string();
    assert!(error.contains("already running"), "{error}");
    if let Some(group) = runtime.inner.group(&id) {
        assert_eq!(group.pids().unwrap(), vec![pid], "process is in its cgroup");
    }

    runtime.stop(&id, Duration::from_secs(5)).await.unwrap();
    let stopped = runtime.status(&id).await.unwrap();
    assert_eq!(exit_of(&stopped), (Some(143), Some(15), false));
    assert!(!procfs::is_alive(pid, 0) && procfs::stat(pid).is_none());
    // Stopping an exited container is fine.
    runtime.stop(&id, Duration::from_secs(1)).await.unwrap();

    runtime.remove(&id).await.unwrap();
    assert!(matches!(
        runtime.status(&id).await,
        Err(Error::ContainerNotFound(_))
    ));
    assert!(!fixture.state.path().join(&id).exists());
    if let Some(group) = runtime.inner.group(&id) {
        assert!(group.dirs().iter().all(|dir| !dir.exists()));
    }
    assert!(runtime.list().await.unwrap().is_empty());
    // Removing an unknown id is Ok; an unsafe one is refused.
    runtime.remove(&id).await.unwrap();
    assert!(runtime.remove("../etc").await.is_err());
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let fixture = Fixture::new("sigkill");
    let runtime = &fixture.runtime;
    // Ignores SIGTERM; a background child it leaves must die too.
    let spec = fixture.spec(
        "stubborn",
        &["sh", "-c", "trap '' TERM; sleep 60 & sleep 60; wait"],
    );
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    runtime.stop(&id, Duration::from_millis(300)).await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(5));
    let status = runtime.status(&id).await.unwrap();
    assert_eq!(exit_of(&status), (Some(137), Some(9), false));
    if let Some(group) = runtime.inner.group(&id) {
        assert_eq!(group.pids().unwrap(), Vec::<u32>::new());
    }
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn env_ports_working_dir_and_user() {
    let fixture = Fixture::new("env");
    let runtime = &fixture.runtime;
    let mut spec = fixture.spec(
        "env",
        &[
            "sh",
            "-c",
            "echo $PORT $C4M_PORT_HTTP $C4M_PORT_ADMIN_API $MODE; pwd; id -u; id -g; exit 3",
        ],
    );
    spec.env = vec![("MODE".into(), "test".into())];
    spec.working_dir = Some("/tmp".into());
    spec.user = Some(65534);
    spec.group = Some(65534);
    spec.ports = vec![
        PortSpec {
            name: "http".into(),
            container_port: 8080,
            protocol: "TCP".into(),
        },
        PortSpec {
            name: "admin-api".into(),
            container_port: 9000,
            protocol: "TCP".into(),
        },
    ];
    let id = spec.id.clone();
    let started = runtime.start(&spec).await.unwrap();
    let ports: Vec<u16> = started.ports.iter().map(|p| p.host_port).collect();
    assert_eq!(ports.len(), 2);
    assert_ne!(ports[0], ports[1]);
    assert!(started.ports.iter().all(|p| p.host_ip == "127.0.0.1"));

    let exited = wait_exited(runtime, &id).await;
    assert_eq!(exit_of(&exited), (Some(3), None, false));
    let expected = format!(
        "{} {} {} test\n/tmp\n65534\n65534\n",
        ports[0], ports[0], ports[1]
    );
    assert_eq!(
        read_logs(runtime, &id, LogOptions::default()).await,
        expected
    );

    // A restart keeps the host ports; output is appended.
    let restarted = runtime.start(&spec).await.unwrap();
    assert_eq!(restarted.ports, started.ports);
    wait_exited(runtime, &id).await;
    assert_eq!(
        read_logs(runtime, &id, LogOptions::default()).await,
        format!("{expected}{expected}")
    );
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn start_errors() {
    let fixture = Fixture::new("errors");
    let runtime = &fixture.runtime;
    let mut spec = fixture.spec("x", &["true"]);
    spec.command.clear();
    spec.args = vec!["arg".into()];
    let error = runtime.start(&spec).await.unwrap_err().to_string();
    assert!(error.contains("no command"), "{error}");

    let mut spec = fixture.spec("nowd", &["true"]);
    spec.working_dir = Some("/nonexistent/dir".into());
    let error = runtime.start(&spec).await.unwrap_err().to_string();
    assert!(error.contains("/nonexistent/dir"), "{error}");

    // A missing program is the shell's error, in the logs, exit code 127.
    let spec = fixture.spec("missing", &["/no/such/program"]);
    runtime.start(&spec).await.unwrap();
    let status = wait_exited(runtime, &spec.id).await;
    assert_eq!(exit_of(&status).0, Some(127));
    let logs = read_logs(runtime, &spec.id, LogOptions::default()).await;
    assert!(logs.contains("/no/such/program"), "{logs}");
    runtime.remove(&spec.id).await.unwrap();
    for id in ["nowd", "x"] {
        runtime.remove(&fixture.id(id)).await.unwrap();
    }
}

#[tokio::test]
async fn a_restarted_agent_readopts_running_containers() {
    let fixture = Fixture::new("readopt");
    let spec = fixture.spec("sleep", &["sleep", "30"]);
    let id = spec.id.clone();
    let pid = {
        let first = fixture.second_runtime();
        let pid = running_pid(&first.start(&spec).await.unwrap());
        drop(first);
        pid
    };
    // The process outlived the runtime that started it.
    let stat = procfs::stat(pid).expect("process still there");
    assert!(procfs::is_alive(pid, stat.start_ticks));

    let second = &fixture.runtime;
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(running_pid(&listed[0]), pid);
    assert_eq!(listed[0].spec, spec);
    assert!(second.stats(&id).await.is_ok());

    second.stop(&id, Duration::from_secs(5)).await.unwrap();
    let status = second.status(&id).await.unwrap();
    // Not our child: the exit code is unknown.
    let ContainerState::Exited {
        exit_code,
        finished_at,
        ..
    } = status.state
    else {
        panic!("not stopped: {status:?}");
    };
    assert_eq!(exit_code, None);
    // The observed exit is persisted, so it does not move.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(second.status(&id).await.unwrap().state, status.state);
    assert!(finished_at <= SystemTime::now());
    second.remove(&id).await.unwrap();
}

#[tokio::test]
async fn corrupt_state_is_skipped() {
    let fixture = Fixture::new("corrupt");
    let runtime = &fixture.runtime;
    let dir = fixture.state.path().join("broken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("state.json"), "{ not json").unwrap();
    std::fs::create_dir(fixture.state.path().join("empty")).unwrap();
    let spec = fixture.spec("ok", &["sleep", "30"]);
    runtime.start(&spec).await.unwrap();
    let listed = runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, spec.id);
    let error = runtime.status("broken").await.unwrap_err().to_string();
    assert!(error.contains("corrupt state file"), "{error}");
    runtime.remove("broken").await.unwrap();
    assert!(!dir.exists());
    runtime.remove(&spec.id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: a writable cgroup hierarchy"]
async fn memory_limit_ooms() {
    let fixture = Fixture::new("oom");
    let runtime = &fixture.runtime;
    assert!(
        runtime.enforces_limits(),
        "this test needs a writable cgroup hierarchy (root)"
    );
    // The shell collects 100 MB of output in a variable.
    let mut spec = fixture.spec(
        "hog",
        &[
            "sh",
            "-c",
            r#"x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived ${#x}"#,
        ],
    );
    spec.resources.memory_limit_bytes = Some(16 << 20);
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();
    let status = wait_exited(runtime, &id).await;
    let (exit_code, signal, oom_killed) = exit_of(&status);
    assert!(oom_killed, "{status:?}");
    assert_eq!((exit_code, signal), (Some(137), Some(9)));
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn stats_of_a_busy_process() {
    let fixture = Fixture::new("stats");
    let runtime = &fixture.runtime;
    let mut spec = fixture.spec("busy", &["sh", "-c", "while :; do :; done"]);
    spec.resources.cpu_limit_millis = Some(500);
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = runtime.stats(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = runtime.stats(&id).await.unwrap();
    assert!(first.memory_bytes > 0, "{first:?}");
    assert!(first.cpu_nanos > 0, "{first:?}");
    assert!(second.cpu_nanos > first.cpu_nanos, "{first:?} {second:?}");
    assert!(second.pids >= 1, "{second:?}");
    if runtime.enforces_limits() {
        // 500m: at most half a CPU over the 500 ms (plus slack for periods).
        let used = second.cpu_nanos - first.cpu_nanos;
        assert!(
            used < 400_000_000,
            "cpu quota not applied: {used} ns in 500 ms"
        );
    }
    runtime.remove(&id).await.unwrap();
    assert!(matches!(
        runtime.stats(&id).await,
        Err(Error::ContainerNotFound(_))
    ));
}

#[tokio::test]
async fn logs_tail_and_follow() {
    let fixture = Fixture::new("logs");
    let runtime = &fixture.runtime;
    let spec = fixture.spec(
        "printer",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4; do echo line $i; sleep 0.2; done; echo err >&2",
        ],
    );
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();
    let followed = tokio::time::timeout(
        Duration::from_secs(10),
        read_logs(
            runtime,
            &id,
            LogOptions {
                follow: true,
                tail_lines: None,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("follow ends when the container exits");
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nerr\n");
    let tail = LogOptions {
        follow: false,
        tail_lines: Some(2),
        ..Default::default()
    };
    assert_eq!(read_logs(runtime, &id, tail).await, "line 4\nerr\n");
    // Tail plus follow of an exited container: the tail, then the end.
    let tail_follow = LogOptions {
        follow: true,
        tail_lines: Some(1),
        ..Default::default()
    };
    assert_eq!(read_logs(runtime, &id, tail_follow).await, "err\n");

    // Dropping a following stream mid-way is fine.
    let spec = fixture.spec("forever", &["sh", "-c", "echo hi; sleep 30"]);
    runtime.start(&spec).await.unwrap();
    let mut stream = runtime
        .logs(
            &spec.id,
            LogOptions {
                follow: true,
                tail_lines: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"hi\n");
    drop(stream);
    runtime.remove(&spec.id).await.unwrap();
    runtime.remove(&id).await.unwrap();
    assert!(runtime.logs(&id, LogOptions::default()).await.is_err());
}

#[tokio::test]
async fn exec_in_the_container() {
    let fixture = Fixture::new("exec");
    let runtime = &fixture.runtime;
    let mut spec = fixture.spec("target", &["sleep", "30"]);
    spec.env = vec![("GREETING".into(), "hello".into())];
    spec.working_dir = Some("/tmp".into());
    spec.user = Some(65534);
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();

    let argv = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let output = runtime
        .exec(
            &id,
            &argv("echo $GREETING; pwd; id -u; echo oops >&2; exit 4"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(output.exit_code, 4);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello\n/tmp\n65534\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "oops\n");

    // The exec'd process runs in the container's cgroup.
    if let Some(group) = runtime.inner.group(&id) {
        let output = runtime
            .exec(&id, &argv("cat /proc/self/cgroup"), Duration::from_secs(5))
            .await
            .unwrap();
        let cgroups = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(cgroups.contains(&format!("/c4m/{id}")), "{cgroups}");
        assert_eq!(group.pids().unwrap().len(), 1, "exec process is gone");
    }

    let began = Instant::now();
    let error = runtime
        .exec(&id, &argv("sleep 30"), Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("timed out"), "{error}");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert!(
        runtime
            .exec(&id, &[], Duration::from_secs(1))
            .await
            .is_err()
    );

    runtime.stop(&id, Duration::from_secs(1)).await.unwrap();
    let error = runtime
        .exec(&id, &argv("true"), Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not running"), "{error}");
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn interactive_exec_with_pipes() {
    use tokio::io::AsyncWriteExt;
    let fixture = Fixture::new("iexec");
    let runtime = &fixture.runtime;
    let spec = fixture.spec("target", &["sleep", "30"]);
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();

    let request = ExecRequest {
        command: vec![
            "sh".into(),
            "-c".into(),
            "read x; echo got $x; echo e >&2; exit 3".into(),
        ],
        stdin: true,
        tty: false,
    };
    let session = runtime.exec_interactive(&id, request).await.unwrap();
    assert!(session.resize.is_none());
    let mut stdin = session.stdin.expect("stdin was asked for");
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let stderr = tokio::spawn(read_to_string(
        session.stderr.expect("stderr without a tty"),
    ));
    assert_eq!(read_to_string(session.stdout).await, "got hello\n");
    assert_eq!(stderr.await.unwrap(), "e\n");
    assert_eq!(session.exit.await.unwrap(), 3);

    // Dropping the session before the command ends kills it.
    let request = ExecRequest {
        command: vec!["sh".into(), "-c".into(), "echo $$; exec sleep 30".into()],
        stdin: false,
        tty: false,
    };
    let session = runtime.exec_interactive(&id, request).await.unwrap();
    let mut stdout = tokio::io::BufReader::new(session.stdout);
    let mut pid = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut pid)
        .await
        .unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    drop(session.exit);
    let gone = async {
        while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("a dropped exec is killed");
}

#[tokio::test]
async fn interactive_exec_on_a_terminal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fixture = Fixture::new("ttyexec");
    let runtime = &fixture.runtime;
    let spec = fixture.spec("target", &["sleep", "30"]);
    let id = spec.id.clone();
    runtime.start(&spec).await.unwrap();

    let request = ExecRequest {
        command: vec!["sh".into()],
        stdin: true,
        tty: true,
    };
    let session = runtime.exec_interactive(&id, request).await.unwrap();
    assert!(session.stderr.is_none());
    let resize = session.resize.expect("a terminal can be resized");
    resize(TerminalSize {
        width: 132,
        height: 43,
    })
    .unwrap();
    let mut stdin = session.stdin.unwrap();
    // The shell sees a terminal (its controlling one) of the size set.
    stdin
        .write_all(b"test -t 0 && echo on-tty; stty size; tty >/dev/null && echo ctty-$(ps -o tty= -p $$ | tr -d ' ' | cut -c1-3); exit 5\n")
        .await
        .unwrap();
    let mut output = String::new();
    let mut stdout = session.stdout;
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            output.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the terminal's output ends when the shell exits");
    assert!(output.contains("on-tty\r\n"), "{output:?}");
    assert!(output.contains("43 132\r\n"), "{output:?}");
    assert!(output.contains("ctty-pts"), "{output:?}");
    assert_eq!(session.exit.await.unwrap(), 5);
}

#[tokio::test]
async fn logs_with_timestamps_and_since() {
    let fixture = Fixture::new("stamps");
    let runtime = &fixture.runtime;
    let spec = fixture.spec(
        "stamps",
        &[
            "sh",
            "-c",
            "echo early; sleep 0.5; echo late; printf partial",
        ],
    );
    let id = spec.id.clone();
    let started = SystemTime::now();
    runtime.start(&spec).await.unwrap();
    wait_exited(runtime, &id).await;
    let options = LogOptions {
        timestamps: true,
        ..Default::default()
    };
    let text = read_logs(runtime, &id, options).await;
    let lines: Vec<(&str, &str)> = text
        .split_inclusive('\n')
        .map(|line| line.split_once(' ').unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        ["early\n", "late\n", "partial"]
    );
    let times: Vec<SystemTime> = lines
        .iter()
        .map(|(t, _)| {
            assert_eq!(t.len(), "2023-11-14T22:13:20.000120000Z".len(), "{t}");
            t.parse::<jiff::Timestamp>().unwrap().into()
        })
        .collect();
    // Real write times: after the start, half a second apart. The first
    // line may be stamped with the log's modification time, which the
    // kernel takes from its coarse clock (up to a scheduler tick, 10 ms at
    // HZ=100, behind `SystemTime::now`).
    let coarse_clock = Duration::from_millis(10);
    assert!(times[0] + coarse_clock >= started, "{started:?} {times:?}");
    let gap = times[1].duration_since(times[0]).unwrap();
    assert!(gap >= Duration::from_millis(400), "{gap:?}");
    // Since a time between the two lines: only the late ones.
    let options = LogOptions {
        since: Some(times[0] + Duration::from_millis(200)),
        ..Default::default()
    };
    assert_eq!(read_logs(runtime, &id, options).await, "late\npartial");
}
