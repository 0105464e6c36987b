//! The real kubectl's streaming commands against c4m: `logs` (`-f`,
//! `--tail`, `--timestamps`, `--since`), `exec` (output, stdin, exit codes)
//! and `exec -it` through a real terminal (`script` gives kubectl one),
//! relayed by the control plane to the agent that runs the instance with
//! the `process` driver.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::kubectl::{Kubectl, kubectl_path};
use common::{Cluster, wait_for};

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
    let since = kubectl.ok(&["logs", "talker", "--since=1s"]);
    assert!(since == "after\n" || since.is_empty(), "{since:?}");
    let since = kubectl.ok(&["logs", "talker", "--since=1h"]);
    assert_eq!(since, "one\ntwo\nthree\nafter\n");

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
    let env = kubectl.ok(&["exec", "talker", "--", "sh", "-c", "echo $PATH"]);
    assert!(!env.trim().is_empty());
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
    // An instance that does not exist.
    let missing = kubectl.fails(&["exec", "nothing", "--", "true"]);
    assert!(missing.contains("not found"), "{missing}");

    // -it through a real terminal: `script` runs kubectl on a pty sized
    // 37x91; kubectl sends that size, the shell sees it on its own
    // terminal, and the exit code comes back.
    let kubeconfig = cluster.dir.path().join("kubeconfig");
    let remote = "for i in $(seq 100); do s=$(stty size); [ \"$s\" = \"37 91\" ] && break; sleep 0.05; done; echo size $s; test -t 0 && echo on-a-tty; exit 7";
    let inner = format!(
        "stty rows 37 cols 91; {} --kubeconfig {} --cache-dir {} exec -it talker -- sh -c '{remote}'",
        kubectl_path().display(),
        kubeconfig.display(),
        cluster.dir.path().join("kubeconfig-cache").display(),
    );
    let tty = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run script (bsdutils)");
    let output = String::from_utf8_lossy(&tty.stdout);
    assert!(output.contains("size 37 91\r\n"), "{output:?} {tty:?}");
    assert!(output.contains("on-a-tty\r\n"), "{output:?}");
    assert_eq!(tty.status.code(), Some(7), "{output:?} {tty:?}");
}
