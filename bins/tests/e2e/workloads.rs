//! Jobs with the real kubectl: `kubectl create job` runs to Complete on a
//! real agent (the process driver runs the command), a pod failure policy
//! fails a Job on an exit code, an Indexed Job hands each pod its index,
//! and the Job controller's Events are listed.

use std::time::Duration;

use serde_json::Value;

use crate::common::kubectl::Kubectl;
use crate::common::{Cluster, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// The types of the Job's conditions that are True.
fn true_conditions(job: &Value) -> Vec<String> {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["type"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the Job `name` has the condition `wanted` (Complete or
/// Failed); returns it.
fn wait_finished(kubectl: &Kubectl, name: &str, wanted: &str) -> Value {
    wait_for(&format!("job {name} {wanted}"), WAIT, || {
        let job = kubectl.json(&["get", "job", name]);
        true_conditions(&job)
            .iter()
            .any(|c| c == wanted)
            .then_some(job)
    })
}

/// The Events about `name`, as `reason: message`.
fn events_of(kubectl: &Kubectl, name: &str) -> Vec<String> {
    kubectl.json(&["get", "events"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
#[ignore = "needs kubectl"]
fn kubectl_create_job_runs_to_complete() {
    let mut cluster = Cluster::start();
    cluster.start_agent("a", "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);

    let created = kubectl.ok(&[
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo hello from a job; exit 0",
    ]);
    assert_eq!(created.trim(), "job.batch/hello created");
    let job = wait_finished(&kubectl, "hello", "Complete");
    assert_eq!(true_conditions(&job), ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"]["completionTime"].is_string(), "{job}");
    let table = kubectl.ok(&["get", "jobs"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{table}"
    );
    assert_eq!(lines[1][..3], ["hello", "Complete", "1/1"], "{table}");
    let logs = kubectl.ok(&["logs", "job/hello"]);
    assert_eq!(logs.trim(), "hello from a job");
    // The pod is the Job's, by owner reference and labels.
    let pods = kubectl.json(&["get", "pods", "-l", "job-name=hello"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let events = wait_for("the Job's events", WAIT, || {
        let events = events_of(&kubectl, "hello");
        events
            .iter()
            .any(|e| e == "Completed: Job completed")
            .then_some(events)
    });
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    assert!(
        events.contains(&format!("SuccessfulCreate: Created pod: {pod_name}")),
        "{events:?}"
    );

    // A pod failure policy fails the Job on exit code 3, without retries.
    let failing = r#"apiVersion: batch/v1
kind: Job
metadata: {name: exits-3}
spec:
  backoffLimit: 5
  podFailurePolicy:
    rules:
      - action: FailJob
        onExitCodes: {operator: In, values: [3]}
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: busybox
          command: ["sh", "-c", "exit 3"]
"#;
    let path = cluster.dir.path().join("exits-3.yaml");
    std::fs::write(&path, failing).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    let job = wait_finished(&kubectl, "exits-3", "Failed");
    let failed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("Container main for pod default/exits-3-")
            && message.ends_with("failed with exit code 3 matching FailJob rule at index 0"),
        "{message}"
    );
    assert_eq!(job["status"]["failed"], 1);
    let table = kubectl.ok(&["get", "job", "exits-3"]);
    assert!(table.lines().nth(1).unwrap().contains("Failed"), "{table}");

    // An Indexed Job: each pod knows its index.
    let indexed = r#"apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: busybox
          command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX"]
"#;
    let path = cluster.dir.path().join("indexed.yaml");
    std::fs::write(&path, indexed).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    let job = wait_finished(&kubectl, "indexed", "Complete");
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    for index in 0..3 {
        let pods = kubectl.json(&[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-completion-index={index},job-name=indexed"),
        ]);
        let name = pods["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            kubectl.ok(&["logs", &name]).trim(),
            format!("index={index}")
        );
    }
}
