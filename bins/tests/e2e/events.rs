//! Events as kubectl shows them: `kubectl get events` and the Events
//! section of `kubectl describe`.

use std::time::{Duration, Instant};

use crate::common::Cluster;
use crate::common::kubectl::Kubectl;

/// A pod `name` asking for `cpu` cores.
fn pod(name: &str, cpu: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
    - name: main
      image: busybox
      command: ["sleep", "infinity"]
      resources:
        requests: {{cpu: "{cpu}", memory: 32Mi}}
"#
    )
}

/// The line of `described`'s Events section whose reason is `reason`.
fn event_line<'a>(described: &'a str, reason: &str) -> Option<&'a str> {
    let (_, events) = described.split_once("\nEvents:")?;
    events
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(reason))
}

/// `kubectl describe pod NAME` once its Events section holds `reason`,
/// and that Event's line.
pub(crate) fn described_with(kubectl: &Kubectl, name: &str, reason: &str) -> (String, String) {
    let started = Instant::now();
    loop {
        let described = kubectl.ok(&["describe", "pod", name]);
        if let Some(line) = event_line(&described, reason) {
            let line = line.trim().to_string();
            return (described, line);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {reason} Event for {name}:\n{described}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_shows_the_schedulers_events() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("e", 1, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let path = cluster.dir.path().join("pods.yaml");
    let manifests = [pod("fits", "1"), pod("too-big", "64")].join("---\n");
    std::fs::write(&path, manifests).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);

    let (fits, line) = described_with(&kubectl, "fits", "Scheduled");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], ["Normal", "Scheduled"], "{fits}");
    assert!(
        line.contains("default-scheduler")
            && line.ends_with("Successfully assigned default/fits to e-0"),
        "{fits}"
    );

    let (too_big, line) = described_with(&kubectl, "too-big", "FailedScheduling");
    assert!(line.starts_with("Warning"), "{too_big}");
    assert!(line.contains("0/1 nodes are available"), "{too_big}");
    assert!(line.contains("insufficient cpu"), "{too_big}");

    // `kubectl get events`: both, with their objects.
    let events = kubectl.ok(&["get", "events"]);
    let header = events.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{events}"
    );
    for (reason, object) in [
        ("Scheduled", "pod/fits"),
        ("FailedScheduling", "pod/too-big"),
    ] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(reason) && l.contains(object)),
            "no {reason} for {object}:\n{events}"
        );
    }
    // And by field selector, as scripts ask for them.
    let warnings = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "type=Warning",
        "-o",
        "name",
    ]);
    assert_eq!(warnings.lines().count(), 1, "{warnings}");
}
