//! End-to-end test of `c4m port-forward`: a local port reaches an
//! instance's container port through the real CLI.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Kills the forwarding CLI when the test ends, however it ends.
struct Forwarder(std::process::Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_forward_reaches_an_instance_port() {
    let mut cluster = Cluster::start();
    cluster.start_agent("pf-node", "2", "2Gi");
    cluster.apply(
        "apiVersion: c4m.io/v1\nkind: Microservice\nmetadata: {name: pf}\nspec:\n  command: [c4m-demo, --name, pf]\n  ports: [{name: http, containerPort: 8080}]\n  readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}\n",
    );
    let instance = cluster
        .wait_ready("c4m.io/microservice=pf", 1, Duration::from_secs(60))
        .remove(0);
    let name = instance["metadata"]["name"].as_str().unwrap().to_string();

    let local = free_port();
    let mut child = Command::new(C4M)
        .args(["port-forward", &name, &format!("{local}:8080")])
        .env("C4M_ENDPOINT_URL", cluster.endpoint())
        .env("C4M_ACCESS_TOKEN", ACCESS_TOKEN)
        .env("C4M_SECRET_KEY", SECRET_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _forwarder = Forwarder(child);
    let mut first_line = String::new();
    BufReader::new(stdout).read_line(&mut first_line).unwrap();
    assert!(
        first_line.starts_with(&format!("Forwarding from 127.0.0.1:{local} -> ")),
        "{first_line:?}"
    );
    let (code, body) = http_get(&format!("127.0.0.1:{local}"), "/").expect("an answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("pf"), "{body}");

    let wrong = cluster.c4m(&["port-forward", &name, "8080"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("expected LOCAL:REMOTE"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
