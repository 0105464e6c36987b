//! The real kubectl's streaming commands against c4m: `logs` (`-f`,
//! `--tail`, `--timestamps`, `--since`), `exec` (output, stdin, exit codes)
//! and `exec -it` through a real terminal (`script` gives kubectl one),
//! relayed by the control plane to the agent that runs the instance with
//! the `process` driver.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::kubectl::{Kubectl, kubectl_path};
use crate::common::{Cluster, wait_for};

/// An instance that writes three lines, waits for `go` to appear, writes
/// one more and then idles.
fn manifest(go: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: talker, labels: {{app: talker}}}}
spec:
  containers:
    - name: talker
      env: [{{name: MARK, value: talker-env}}]
      command: ["sh", "-c", "echo one; echo two; echo three; while [ ! -e {go} ]; do sleep 0.05; done; echo after; exec sleep 3600"]
"#,
        go = go.display()
    )
}

/// Lines of `text`, each split into the timestamp before the first space
/// and the rest.
fn timestamped(text: &str) -> Vec<(SystemTime, String)> {
    text.lines()
        .map(|line| {
            let (time, rest) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
            assert_eq!(
                time.len(),
                "2006-01-02T15:04:05.000000000Z".len(),
                "nine fractional digits, as Kubernetes prints them: {time}"
            );
            let time: jiff::Timestamp = time.parse().unwrap();
            (time.into(), rest.to_string())
        })
        .collect()
}

#[test]
#[ignore = "needs root + kubectl: cgroups"]
fn kubectl_logs_and_exec() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let go = cluster.dir.path().join("go");
    let started = SystemTime::now();
    cluster.apply(&manifest(&go));
    cluster.wait_ready("app=talker", 1, Duration::from_secs(30));
    wait_for("the first lines", Duration::from_secs(10), || {
        (kubectl.ok(&["logs", "talker"]) == "one\ntwo\nthree\n").then_some(())
    });

    // --tail, --timestamps (real write times, in order), -c.
    assert_eq!(kubectl.ok(&["logs", "talker", "--tail=2"]), "two\nthree\n");
    assert_eq!(
        kubectl.ok(&["logs", "talker", "--limit-bytes=6"]),
        "one\ntw"
    );
    let previous = kubectl.fails(&["logs", "talker", "--previous"]);
    assert!(
        previous.contains(r#"previous terminated container "talker" in pod"#)
            && previous.contains("not found"),
        "it has not restarted: {previous}"
    );
    assert_eq!(
        kubectl.ok(&["logs", "talker", "-c", "talker"]),
        "one\ntwo\nthree\n"
    );
    let wrong = kubectl.fails(&["logs", "talker", "-c", "nope"]);
    assert!(wrong.contains("container nope is not valid"), "{wrong}");
    let stamped = timestamped(&kubectl.ok(&["logs", "talker", "--timestamps"]));
    let lines: Vec<&str> = stamped.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, ["one", "two", "three"]);
    assert!(stamped[0].0 >= started - Duration::from_secs(1));
    assert!(stamped.windows(2).all(|w| w[0].0 <= w[1].0), "{stamped:?}");

    // -f: the lines so far, then one written after kubectl started.
    let mut follow = kubectl
        .command(&["logs", "-f", "talker", "--timestamps"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    for expected in ["one", "two", "three"] {
        line.clear();
        followed.read_line(&mut line).unwrap();
        assert!(line.ends_with(&format!(" {expected}\n")), "{line:?}");
    }
    // The first lines are three seconds old before the next is written,
    // so --since=2s tells them apart.
    std::thread::sleep(Duration::from_secs(3));
    let before_go = SystemTime::now();
    std::fs::write(&go, "").unwrap();
    line.clear();
    followed.read_line(&mut line).unwrap();
    let after = timestamped(&line);
    assert_eq!(after[0].1, "after");
    assert!(after[0].0 >= before_go, "stamped when written: {line}");
    follow.kill().unwrap();
    follow.wait().unwrap();
    // --since: only what was written after the go.
    let since = kubectl.ok(&["logs", "talker", "--since=2s"]);
    assert_eq!(since, "after\n");
    assert_eq!(cluster.ok(&["logs", "talker", "--since", "2s"]), "after\n");
    let since = kubectl.ok(&["logs", "talker", "--since=1h"]);
    assert_eq!(since, "one\ntwo\nthree\nafter\n");
    // c4m logs says the same, with the same times.
    assert_eq!(
        cluster.ok(&["logs", "talker", "--timestamps", "--since", "1h"]),
        kubectl.ok(&["logs", "talker", "--timestamps"])
    );

    // exec: output, stderr and the exit code propagated.
    assert_eq!(
        kubectl.ok(&["exec", "talker", "--", "echo", "hello"]),
        "hello\n"
    );
    let failed = kubectl.run(&[
        "exec",
        "talker",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&failed.stderr).starts_with("err\n"),
        "{failed:?}"
    );
    // It runs as the container does: its environment and cgroup.
    let env = kubectl.ok(&["exec", "talker", "--", "sh", "-c", "echo $MARK"]);
    assert_eq!(env, "talker-env\n");
    let cgroups = kubectl.ok(&["exec", "talker", "--", "cat", "/proc/self/cgroup"]);
    assert!(cgroups.contains("/c4m/"), "{cgroups}");
    // -i: stdin reaches the command and its end is end of file.
    let mut cat = kubectl
        .command(&["exec", "-i", "talker", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"piped\n").unwrap();
    let cat = cat.wait_with_output().unwrap();
    assert!(cat.status.success(), "{cat:?}");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "piped\ndone\n");
    // Megabytes both ways.
    let big = kubectl.run(&["exec", "talker", "--", "head", "-c", "3000000", "/dev/zero"]);
    assert!(big.status.success(), "{:?}", big.status);
    assert_eq!(big.stdout.len(), 3_000_000);
    let mut count = kubectl
        .command(&["exec", "-i", "talker", "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = count.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, &vec![b'x'; 2_000_000]).unwrap();
    });
    let counted = count.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&counted.stdout).trim(), "2000000");
    // An instance that does not exist.
    let missing = kubectl.fails(&["exec", "nothing", "--", "true"]);
    assert!(missing.contains("not found"), "{missing}");

    // -it through a real terminal: `script` runs kubectl on a pty sized
    // 37x91; kubectl sends that size, the shell sees it on its own
    // terminal, and the exit code comes back.
    let kubeconfig = cluster.dir.path().join("kubeconfig");
    let tty = in_terminal(&format!(
        "{} --kubeconfig {} --cache-dir {} exec -it talker -- sh -c '{TERMINAL_CHECK}'",
        kubectl_path().display(),
        kubeconfig.display(),
        cluster.dir.path().join("kubeconfig-cache").display(),
    ));
    assert_terminal_session(&tty);
}

/// Run on the remote terminal: waits for the size the client's terminal
/// has (37x91, see [`in_terminal`]) to arrive as a resize, then reports it
/// and whether stdin is a terminal, and exits 7.
const TERMINAL_CHECK: &str = "for i in $(seq 100); do s=$(stty size); [ \"$s\" = \"37 91\" ] && break; sleep 0.05; done; echo size $s; test -t 0 && echo on-a-tty; exit 7";

/// Runs `command_line` on a real terminal of 37 rows and 91 columns
/// (`script` from bsdutils gives it one).
fn in_terminal(command_line: &str) -> std::process::Output {
    Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 37 cols 91; {command_line}"),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run script (bsdutils)")
}

fn assert_terminal_session(tty: &std::process::Output) {
    let output = String::from_utf8_lossy(&tty.stdout);
    assert!(output.contains("size 37 91\r\n"), "{output:?} {tty:?}");
    assert!(output.contains("on-a-tty\r\n"), "{output:?}");
    assert_eq!(tty.status.code(), Some(7), "{output:?} {tty:?}");
}

/// `kubectl port-forward` (SPDY tunnelled in a WebSocket), and `c4m exec`
/// and `c4m port-forward` (the same API paths, the channel protocols).
#[test]
#[ignore = "needs kubectl"]
fn port_forwards_and_c4m_exec() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "4", "4Gi");
    cluster.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
    - name: web
      command: ["c4m-demo", "--name", "forwarded"]
      ports: [{name: http, containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 1
"#,
    );
    cluster.wait_ready("app=web", 1, Duration::from_secs(30));

    let output = cluster.c4m(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    let output = cluster.c4m_with_stdin(&["exec", "-i", "web", "--", "cat"], "piped\n");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "piped\n");
    let missing = cluster.c4m(&["exec", "nothing", "--", "true"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{missing:?}"
    );

    let endpoint = cluster.endpoint();
    let tty = in_terminal(&format!(
        "C4M_ENDPOINT_URL={endpoint} C4M_ACCESS_TOKEN={} C4M_SECRET_KEY={} {} exec -it web -- sh -c '{TERMINAL_CHECK}'",
        crate::common::ACCESS_TOKEN,
        crate::common::SECRET_KEY,
        crate::common::C4M,
    ));
    assert_terminal_session(&tty);

    // kubectl port-forward, then c4m port-forward: HTTP GETs through the
    // local port reach the instance, one forwarded connection each.
    let kubectl = Kubectl::for_cluster(&cluster);
    let local = crate::common::free_port();
    let command = kubectl.command(&["port-forward", "pod/web", &format!("{local}:8080")]);
    assert_http_through(Forwarder::start(command, local, 8080));
    let local = crate::common::free_port();
    let command = cluster.c4m_command(&["port-forward", "web", &format!("{local}:8080")]);
    assert_http_through(Forwarder::start(command, local, 8080));

    // Megabytes both ways, through each.
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: bulk, labels: {{app: bulk}}}}
spec:
  containers:
    - name: bulk
      command: ["python3", "-c", {BULK_SERVER:?}]
      ports: [{{name: bulk, containerPort: 9000}}]
      readinessProbe:
        tcpSocket: {{port: bulk}}
        periodSeconds: 1
"#
    ));
    cluster.wait_ready("app=bulk", 1, Duration::from_secs(30));
    let local = crate::common::free_port();
    let command = kubectl.command(&["port-forward", "pod/bulk", &format!("{local}:9000")]);
    assert_bulk_through(Forwarder::start(command, local, 9000));
    let local = crate::common::free_port();
    let command = cluster.c4m_command(&["port-forward", "bulk", &format!("{local}:9000")]);
    assert_bulk_through(Forwarder::start(command, local, 9000));

    // A port the instance does not declare is refused up front.
    let refused = cluster.c4m(&["port-forward", "web", "9999"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("declares no TCP containerPort 9999"),
        "{message}"
    );
}

/// A TCP server on `$PORT`: per connection, reads 2,000,000 bytes, then
/// sends 3,000,000 and closes (probes connect and leave: nothing for them).
const BULK_SERVER: &str = "import os, socket
server = socket.create_server(('127.0.0.1', int(os.environ['PORT'])))
while True:
    connection, _ = server.accept()
    try:
        received = 0
        while received < 2000000:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += len(chunk)
        if received == 2000000:
            connection.sendall(b'd' * 3000000)
    except OSError:
        pass
    connection.close()
";

/// A running port forwarder (kubectl or c4m) on a local port.
struct Forwarder {
    child: std::process::Child,
    /// Kept open: a Go program writing to a closed stdout dies of SIGPIPE.
    _stdout: BufReader<std::process::ChildStdout>,
    local: u16,
}

impl Forwarder {
    /// Starts `command` (which forwards `local` to `remote`) and waits
    /// until it says it listens.
    fn start(mut command: Command, local: u16, remote: u16) -> Forwarder {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut announced = String::new();
        stdout.read_line(&mut announced).unwrap();
        assert_eq!(
            announced,
            format!("Forwarding from 127.0.0.1:{local} -> {remote}\n")
        );
        Forwarder {
            child,
            _stdout: stdout,
            local,
        }
    }

    /// Stops it; what it said on stderr.
    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        let stderr = self.child.wait_with_output().unwrap().stderr;
        String::from_utf8_lossy(&stderr).into_owned()
    }
}

/// Three HTTP GETs through `forwarder` reach the c4m-demo instance named
/// `forwarded`.
fn assert_http_through(forwarder: Forwarder) {
    let answers: Vec<_> = (0..3)
        .map(|_| crate::common::http_get(&format!("127.0.0.1:{}", forwarder.local), "/"))
        .collect();
    let said = forwarder.stop();
    for answer in answers {
        let Some((code, body)) = answer else {
            panic!("no answer through the forwarded port; the forwarder said: {said}");
        };
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("forwarded"), "{body}");
    }
}

/// Through `forwarder` to [`BULK_SERVER`]: 2,000,000 bytes up, then
/// 3,000,000 down.
fn assert_bulk_through(forwarder: Forwarder) {
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", forwarder.local)).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut connection, &vec![b'u'; 2_000_000]).unwrap();
    let mut answer = Vec::new();
    let read = std::io::Read::read_to_end(&mut connection, &mut answer);
    let said = forwarder.stop();
    assert!(read.is_ok(), "{read:?}: {said}");
    assert_eq!(answer.len(), 3_000_000, "{said}");
}
