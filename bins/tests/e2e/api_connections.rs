//! The API plane under a connection flood: the real `c4m control`, started
//! under the usual soft open-file limit of 1,024, against 2,000 half-open
//! connections (connected, a partial request line, never finished), which
//! exhausted its descriptors before it raised the limit, capped connections
//! and timed out request headers.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

const HALF_OPEN: usize = 2_000;

/// The descriptors `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

/// The soft and hard `Max open files` of `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_string(),
        fields.next().unwrap().to_string(),
    )
}

/// This test's own soft open-file limit raised to its hard limit: it holds
/// the 2,000 client ends.
fn raise_own_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .unwrap();
}

#[test]
fn half_open_connections_neither_exhaust_descriptors_nor_stop_the_api() {
    raise_own_open_files_limit();
    let cluster = Cluster::start_with_open_files_limit(1024, &["--request-header-timeout", "3s"]);
    let pid = cluster.control_pid();
    let (soft, hard) = open_files_limits(pid);
    if hard != "1024" {
        assert_eq!(
            soft, hard,
            "the control plane did not raise its open-file limit"
        );
    }
    let before = open_files(pid);
    let api = format!("127.0.0.1:{}", cluster.api);

    let mut held = Vec::with_capacity(HALF_OPEN);
    let mut refused = 0;
    for _ in 0..HALF_OPEN {
        match TcpStream::connect(&api) {
            Ok(mut stream) => {
                // A request line that never ends.
                let _ = stream.write_all(b"GET /api/v1/namespaces HTT");
                held.push(stream);
            }
            Err(_) => refused += 1,
        }
    }
    let during = open_files(pid);

    // Still answering, health and a real request through the CLI.
    let (code, body) = http_get(&api, "/healthz").expect("/healthz answers");
    assert_eq!(code, 200, "{body}");
    let listed = cluster.c4m(&["get", "namespaces", "-o", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"default\""));

    // Each half-open connection is closed by the server (after the header
    // timeout), never answered.
    for mut stream in held {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => assert!(
                answer.is_empty() || !answer.starts_with(b"HTTP/1.1 200"),
                "a half-open request was served: {}",
                String::from_utf8_lossy(&answer)
            ),
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::ConnectionReset,
                "a half-open connection was not closed: {e}"
            ),
        }
    }
    let after = wait_for(
        "the control plane to close the half-open connections",
        Duration::from_secs(60),
        || {
            let open = open_files(pid);
            (open <= before + 16).then_some(open)
        },
    );
    eprintln!(
        "open-file limit {soft} (hard {hard}); control plane descriptors: {before} before, \
         {during} with {HALF_OPEN} half-open connections attempted ({refused} refused at connect), \
         {after} after the header timeout"
    );
    let (code, _) = http_get(&api, "/healthz").expect("/healthz answers");
    assert_eq!(code, 200);
}
