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
pub(crate) fn events_of(kubectl: &Kubectl, name: &str) -> Vec<String> {
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
    // (`kubectl logs` of a finished pod needs the agent to keep its
    // output after the instance ends; the exit code is asserted instead.)
    // The pod is the Job's, by owner reference and labels.
    let pods = kubectl.json(&["get", "pods", "-l", "job-name=hello"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "{pod}"
    );
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
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: busybox
          command: ["sh", "-c", "case \"$JOB_COMPLETION_INDEX\" in 0|1|2) exit 0;; *) exit 1;; esac"]
"#;
    let path = cluster.dir.path().join("indexed.yaml");
    std::fs::write(&path, indexed).unwrap();
    kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    let job = wait_finished(&kubectl, "indexed", "Complete");
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    // Each index ran once, in a pod labelled with it (a pod without a
    // valid JOB_COMPLETION_INDEX exits 1, and backoffLimit 0 fails the Job).
    for index in 0..3 {
        let pods = kubectl.json(&[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-completion-index={index},job-name=indexed"),
        ]);
        let items = pods["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{pods}");
        assert_eq!(items[0]["status"]["phase"], "Succeeded");
    }
}

/// The second of the minute an RFC 3339 time falls on.
fn second_of_minute(rfc3339: &str) -> u64 {
    let at = c4m_core::parse_rfc3339(rfc3339).expect("an RFC 3339 time");
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60
}

#[test]
#[ignore = "needs kubectl; takes about two minutes"]
fn kubectl_create_cronjob_runs_a_job_each_minute() {
    let mut cluster = Cluster::start();
    cluster.start_agent("a", "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let created = kubectl.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/1 * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
    assert_eq!(created.trim(), "cronjob.batch/tick created");
    kubectl.ok(&[
        "patch",
        "cronjob",
        "tick",
        "--type=merge",
        "-p",
        r#"{"spec":{"successfulJobsHistoryLimit":1}}"#,
    ]);
    let table = kubectl.ok(&["get", "cronjobs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"
        ],
        "{table}"
    );
    let jobs = || -> Vec<Value> {
        kubectl.json(&["get", "jobs"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut seen: Vec<String> = Vec::new();
    for run in 0..2 {
        let job = wait_for(
            &format!("run {run} of the CronJob"),
            Duration::from_secs(75),
            || {
                jobs()
                    .into_iter()
                    .find(|j| !seen.iter().any(|s| j["metadata"]["name"] == s.as_str()))
            },
        );
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        let created = job["metadata"]["creationTimestamp"].as_str().unwrap();
        assert!(
            second_of_minute(created) < 10,
            "{name} created at {created}, more than 10 s after its minute"
        );
        let scheduled =
            job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
                .as_str()
                .unwrap();
        assert_eq!(second_of_minute(scheduled), 0, "{scheduled}");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        wait_finished(&kubectl, &name, "Complete");
        seen.push(name);
    }
    // History limit 1: the first run's Job goes once the second finished.
    wait_for("the first Job deleted", WAIT, || {
        let names: Vec<String> = jobs()
            .iter()
            .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        (!names.contains(&seen[0]) && names.contains(&seen[1])).then_some(())
    });
    let cronjob = kubectl.json(&["get", "cronjob", "tick"]);
    assert!(
        cronjob["status"]["lastScheduleTime"].is_string(),
        "{cronjob}"
    );
    assert!(
        cronjob["status"]["lastSuccessfulTime"].is_string(),
        "{cronjob}"
    );
    let events = events_of(&kubectl, "tick");
    assert!(
        events.contains(&format!("SuccessfulCreate: Created job {}", seen[1])),
        "{events:?}"
    );
    assert!(
        events.contains(&format!("SuccessfulDelete: Deleted job {}", seen[0])),
        "{events:?}"
    );
}

/// The nodes the DaemonSet `name`'s pods are bound to, once its status
/// counts `count` nodes, all ready.
fn daemon_nodes(kubectl: &Kubectl, name: &str, count: u64) -> Vec<String> {
    wait_for(&format!("daemonset {name} on {count} nodes"), WAIT, || {
        let ds = kubectl.json(&["get", "daemonset", name]);
        let status = &ds["status"];
        let settled = status["desiredNumberScheduled"] == count
            && status["numberReady"] == count
            && status["currentNumberScheduled"] == count;
        let pods = kubectl.json(&["get", "pods", "-l", &format!("app={name}")]);
        let mut nodes: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        nodes.sort();
        (settled && nodes.len() as u64 == count).then_some(nodes)
    })
}

#[test]
#[ignore = "needs kubectl"]
fn a_daemonset_follows_nodes_joining_and_leaving() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("h", 2, "4", "4Gi");
    let kubectl = Kubectl::for_cluster(&cluster);
    let manifest = r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: daemon}
spec:
  selector:
    matchLabels: {app: daemon}
  template:
    metadata:
      labels: {app: daemon}
    spec:
      containers:
        - name: main
          image: busybox
          command: ["sleep", "infinity"]
"#;
    let path = cluster.dir.path().join("daemon.yaml");
    std::fs::write(&path, manifest).unwrap();
    let applied = kubectl.ok(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(applied.trim(), "daemonset.apps/daemon created");
    assert_eq!(daemon_nodes(&kubectl, "daemon", 2), ["h-0", "h-1"]);
    let table = kubectl.ok(&["get", "ds"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        lines[1][..7],
        ["daemon", "2", "2", "2", "2", "2", "<none>"],
        "{table}"
    );

    // A node joins: it gets the daemon.
    cluster.start_hollow_agents("j", 1, "4", "4Gi");
    assert_eq!(daemon_nodes(&kubectl, "daemon", 3), ["h-0", "h-1", "j-0"]);

    // It leaves: its daemon pod goes.
    cluster.kill_agent("j");
    let deleted = kubectl.ok(&["delete", "node", "j-0"]);
    assert_eq!(deleted.trim(), "node \"j-0\" deleted");
    assert_eq!(daemon_nodes(&kubectl, "daemon", 2), ["h-0", "h-1"]);
}

/// Hollow nodes started with `--hollow-run-for 2s` run a Job's pods for
/// two seconds, then report them exited 0: the Job completes as on real
/// nodes (what `c4m-e2e-bench jobs` measures at scale), while an instance
/// that restarts (a Deployment's) keeps running.
#[test]
#[ignore = "needs kubectl"]
fn a_job_completes_on_hollow_nodes_that_run_its_pods() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents_with("h", 2, "4", "4Gi", &["--hollow-run-for", "2s"]);
    let kubectl = Kubectl::for_cluster(&cluster);
    kubectl.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ]);
    let created = std::time::Instant::now();
    kubectl.ok(&[
        "create",
        "job",
        "batch",
        "--image=busybox",
        "--",
        "sleep",
        "2",
    ]);
    let job = wait_finished(&kubectl, "batch", "Complete");
    assert!(
        created.elapsed() >= Duration::from_secs(2),
        "Complete {:?} after creation: the pod did not run its 2 s",
        created.elapsed()
    );
    assert_eq!(true_conditions(&job), ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(job["status"]["succeeded"], 1);
    let pods = kubectl.json(&["get", "pods", "-l", "job-name=batch"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}");
    let web = kubectl.json(&["get", "pods", "-l", "app=web"]);
    assert_eq!(web["items"][0]["status"]["phase"], "Running", "{web}");
}
