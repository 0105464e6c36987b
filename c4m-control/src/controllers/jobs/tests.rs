use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cache::Cache;
use crate::controllers::clock::FakeClock;
use crate::objects::kind;

const T0: &str = "2026-01-01T00:00:00Z";

fn t0() -> SystemTime {
    parse_rfc3339(T0).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A Job as the API server stores it (defaulted), with `spec` merged in.
fn job(spec: Value) -> Value {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "job-uid"},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}},
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        job["spec"][key] = value.clone();
    }
    default_new_job(&mut job);
    job
}

fn started(mut job: Value, at: SystemTime) -> Value {
    job["status"]["startTime"] = json!(format_rfc3339(at));
    job
}

/// A pod of the Job: `phase`, finished at `finished` for terminal ones.
fn pod(name: &str, phase: &str, finished: Option<SystemTime>) -> Value {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "creationTimestamp": T0},
        "status": {"phase": phase},
    });
    if let Some(at) = finished {
        let code = if phase == "Succeeded" { 0 } else { 1 };
        pod["status"]["containerStatuses"] = json!([{"name": "main", "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "finishedAt": format_rfc3339(at)}}}]);
    }
    pod
}

fn indexed_pod(index: u32, phase: &str) -> Value {
    let mut pod = pod(&format!("pi-{index}"), phase, Some(t0()));
    pod["metadata"]["annotations"] = json!({COMPLETION_INDEX: index.to_string()});
    pod
}

fn run(job: &Value, pods: &[Value], now: SystemTime) -> Plan {
    run_with(job, pods, now, PodFailureBackoff::default())
}

fn run_with(job: &Value, pods: &[Value], now: SystemTime, backoff: PodFailureBackoff) -> Plan {
    let pods: Vec<&Value> = pods.iter().collect();
    let finished_at = |pod: &Value| {
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(parse_rfc3339)
    };
    plan(job, &pods, now, backoff, &finished_at)
}

/// `job` with the status a plan wrote.
fn after(mut job: Value, plan: &Plan) -> Value {
    job["status"] = plan.status.clone();
    job
}

fn condition<'a>(plan: &'a Plan, kind: &str) -> Option<&'a Value> {
    true_condition(&plan.status, kind)
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|(_, reason, _)| *reason).collect()
}

#[test]
fn a_new_job_is_defaulted_as_the_api_server_does() {
    let job = job(json!({}));
    assert_eq!(job["spec"]["parallelism"], 1);
    assert_eq!(job["spec"]["completions"], 1);
    assert_eq!(job["spec"]["backoffLimit"], 6);
    assert_eq!(job["spec"]["completionMode"], "NonIndexed");
    assert_eq!(
        job["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}})
    );
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["controller-uid"], "job-uid");
    // Parallelism without completions is a work queue: completions stays unset.
    assert!(self::job(json!({"parallelism": 3}))["spec"]["completions"].is_null());
}

#[test]
fn a_new_job_starts_parallelism_pods() {
    let job = job(json!({"completions": 5, "parallelism": 2}));
    let plan = run(&job, &[], t0());
    assert_eq!(plan.create, [None, None]);
    assert_eq!(plan.status["active"], 2);
    assert_eq!(plan.status["startTime"], T0);
    assert!(plan.delete.is_empty() && plan.events.is_empty());
}

#[test]
fn no_more_pods_than_completions_left() {
    let job = started(job(json!({"completions": 3, "parallelism": 3})), t0());
    let pods = [
        pod("a", "Succeeded", Some(t0())),
        pod("b", "Succeeded", Some(t0())),
        pod("c", "Running", None),
    ];
    let plan = run(&job, &pods, t0());
    assert!(
        plan.create.is_empty(),
        "one completion left, one pod running"
    );
    assert_eq!(plan.status["succeeded"], 2);
    assert_eq!(plan.status["active"], 1);
}

#[test]
fn reaching_completions_sets_success_criteria_met_then_complete() {
    let job = started(job(json!({"completions": 2})), t0());
    let done = [
        pod("a", "Succeeded", Some(t0())),
        pod("b", "Succeeded", Some(t0())),
    ];
    let plan = run(&job, &done, t0() + secs(5));
    let met = condition(&plan, "SuccessCriteriaMet").expect("SuccessCriteriaMet");
    assert_eq!(met["reason"], "CompletionsReached");
    assert_eq!(met["message"], "Reached expected number of succeeded pods");
    let complete = condition(&plan, "Complete").expect("Complete, no pod running");
    assert_eq!(complete["reason"], "CompletionsReached");
    assert_eq!(plan.status["completionTime"], "2026-01-01T00:00:05Z");
    assert_eq!(plan.status["succeeded"], 2);
    assert!(
        plan.status.get("active").is_none(),
        "zero counts are omitted"
    );
    assert_eq!(reasons(&plan), ["Completed"]);
    // Finished: nothing more happens.
    let again = run(&after(job, &plan), &done, t0() + secs(60));
    assert!(again.create.is_empty() && again.events.is_empty());
    assert_eq!(again.status, plan.status);
}

#[test]
fn complete_waits_for_the_remaining_pods_to_go() {
    // A work queue: one success, another pod still running.
    let job = started(job(json!({"parallelism": 2})), t0());
    assert!(job["spec"]["completions"].is_null());
    let pods = [pod("a", "Succeeded", Some(t0())), pod("b", "Running", None)];
    let plan = run(&job, &pods, t0());
    assert!(condition(&plan, "SuccessCriteriaMet").is_none());
    assert!(plan.create.is_empty(), "no new pod after a success");

    let job = started(self::job(json!({"completions": 1, "parallelism": 2})), t0());
    let plan = run(&job, &pods, t0());
    assert!(condition(&plan, "SuccessCriteriaMet").is_some());
    assert!(condition(&plan, "Complete").is_none(), "b still runs");
    assert_eq!(plan.delete, ["b"]);
    let plan = run(&after(job, &plan), &pods[..1], t0() + secs(1));
    assert!(condition(&plan, "Complete").is_some());
    assert_eq!(reasons(&plan), ["Completed"]);
}

#[test]
fn a_failed_pod_is_replaced_after_an_exponential_backoff() {
    let job = started(job(json!({"completions": 1})), t0());
    let failed_once = [pod("a", "Failed", Some(t0()))];
    let plan = run(&job, &failed_once, t0() + secs(5));
    assert!(plan.create.is_empty(), "within the 10 s backoff");
    assert_eq!(plan.wake_at, Some(t0() + secs(10)));
    assert_eq!(plan.status["failed"], 1);
    let plan = run(&job, &failed_once, t0() + secs(10));
    assert_eq!(plan.create, [None]);

    // The second failure in a row doubles the delay.
    let failed_twice = [
        pod("a", "Failed", Some(t0())),
        pod("b", "Failed", Some(t0() + secs(12))),
    ];
    let plan = run(&job, &failed_twice, t0() + secs(30));
    assert_eq!(plan.wake_at, Some(t0() + secs(32)));
    assert!(plan.create.is_empty());

    // A success since resets the count.
    let job = started(self::job(json!({"completions": 3})), t0());
    let mut pods = failed_twice.to_vec();
    pods.push(pod("c", "Succeeded", Some(t0() + secs(40))));
    pods.push(pod("d", "Failed", Some(t0() + secs(50))));
    let plan = run(&job, &pods, t0() + secs(55));
    assert_eq!(plan.wake_at, Some(t0() + secs(60)), "one failure since c");
}

#[test]
fn backoff_doubles_up_to_its_maximum() {
    let backoff = PodFailureBackoff::default();
    assert_eq!(backoff.delay(0), Duration::ZERO);
    assert_eq!(backoff.delay(1), secs(10));
    assert_eq!(backoff.delay(2), secs(20));
    assert_eq!(backoff.delay(6), secs(320));
    assert_eq!(backoff.delay(7), secs(600));
    assert_eq!(backoff.delay(1000), secs(600));
}

#[test]
fn more_failures_than_the_backoff_limit_fail_the_job() {
    let job = started(job(json!({"completions": 1, "backoffLimit": 1})), t0());
    let pods = [
        pod("a", "Failed", Some(t0())),
        pod("b", "Failed", Some(t0() + secs(10))),
    ];
    let plan = run(&job, &pods, t0() + secs(11));
    let target = condition(&plan, "FailureTarget").expect("FailureTarget");
    assert_eq!(target["reason"], "BackoffLimitExceeded");
    assert_eq!(
        target["message"],
        "Job has reached the specified backoff limit"
    );
    let failed = condition(&plan, "Failed").expect("Failed: no pod runs");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(plan.events[0].0, EventType::Warning);
    assert_eq!(reasons(&plan), ["BackoffLimitExceeded"]);
    assert!(
        plan.status["completionTime"].is_null(),
        "only a success completes"
    );
    assert!(plan.create.is_empty());
}

#[test]
fn on_failure_restarts_count_against_the_backoff_limit() {
    let mut job = job(json!({"backoffLimit": 2}));
    job["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    let job = started(job, t0());
    let mut running = pod("a", "Running", None);
    running["status"]["containerStatuses"] = json!([{"name": "main", "restartCount": 1}]);
    assert!(condition(&run(&job, &[running.clone()], t0()), "FailureTarget").is_none());
    running["status"]["containerStatuses"][0]["restartCount"] = json!(2);
    let plan = run(&job, &[running], t0());
    assert_eq!(
        condition(&plan, "FailureTarget").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(plan.delete, ["a"]);
    assert!(condition(&plan, "Failed").is_none(), "a still runs");
    assert_eq!(
        plan.status["failed"], 1,
        "the terminated pod counts as failed"
    );
}

#[test]
fn the_active_deadline_fails_a_running_job() {
    let job = started(job(json!({"activeDeadlineSeconds": 30})), t0());
    let running = [pod("a", "Running", None)];
    let plan = run(&job, &running, t0() + secs(10));
    assert_eq!(plan.wake_at, Some(t0() + secs(30)));
    assert!(condition(&plan, "FailureTarget").is_none());

    let plan = run(&job, &running, t0() + secs(30));
    let target = condition(&plan, "FailureTarget").unwrap();
    assert_eq!(target["reason"], "DeadlineExceeded");
    assert_eq!(
        target["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(plan.delete, ["a"]);
    let plan = run(&after(job, &plan), &[], t0() + secs(31));
    assert_eq!(
        condition(&plan, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    assert_eq!(reasons(&plan), ["DeadlineExceeded"]);
}

#[test]
fn a_finished_job_is_deleted_after_its_ttl() {
    let job = started(job(json!({"ttlSecondsAfterFinished": 60})), t0());
    let done = [pod("a", "Succeeded", Some(t0()))];
    let plan = run(&job, &done, t0() + secs(1));
    assert!(condition(&plan, "Complete").is_some());
    assert_eq!(plan.wake_at, Some(t0() + secs(61)));
    let finished = after(job, &plan);
    let plan = run(&finished, &done, t0() + secs(30));
    assert!(!plan.delete_job);
    assert_eq!(plan.wake_at, Some(t0() + secs(61)));
    assert!(run(&finished, &done, t0() + secs(61)).delete_job);
}

#[test]
fn pod_failure_policy_rules_apply_in_order() {
    let policy = json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}},
    ]});
    let job = started(
        job(json!({"completions": 1, "backoffLimit": 3, "podFailurePolicy": policy})),
        t0(),
    );
    let mut disrupted = pod("a", "Failed", Some(t0()));
    disrupted["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True"}]);
    let plan = run(&job, &[disrupted.clone()], t0());
    assert!(
        plan.status.get("failed").is_none(),
        "ignored failures do not count"
    );
    assert_eq!(plan.create, [None], "and cause no backoff");

    let mut exit_42 = pod("b", "Failed", Some(t0() + secs(1)));
    exit_42["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = json!(42);
    let plan = run(&job, &[disrupted, exit_42], t0() + secs(2));
    let target = condition(&plan, "FailureTarget").unwrap();
    assert_eq!(target["reason"], "PodFailurePolicy");
    assert_eq!(
        target["message"],
        "Container main for pod default/b failed with exit code 42 matching FailJob rule at index 1"
    );
    assert_eq!(
        condition(&plan, "Failed").unwrap()["reason"],
        "PodFailurePolicy"
    );
    assert_eq!(reasons(&plan), ["PodFailurePolicy"]);
}

#[test]
fn an_indexed_job_runs_each_index_once() {
    let job = started(
        job(json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"})),
        t0(),
    );
    let plan = run(&job, &[], t0());
    assert_eq!(plan.create, [Some(0), Some(1)]);

    let mut running_2 = indexed_pod(2, "Running");
    running_2["status"]["containerStatuses"] = json!([]);
    let pods = [
        indexed_pod(0, "Succeeded"),
        indexed_pod(1, "Succeeded"),
        running_2,
    ];
    let plan = run(&job, &pods, t0());
    assert_eq!(plan.create, [Some(3)]);
    assert_eq!(plan.status["completedIndexes"], "0,1");
    assert_eq!(plan.status["succeeded"], 2);

    let pods = [
        indexed_pod(0, "Succeeded"),
        indexed_pod(1, "Succeeded"),
        indexed_pod(2, "Succeeded"),
        indexed_pod(3, "Succeeded"),
    ];
    let plan = run(&job, &pods, t0());
    assert_eq!(plan.status["completedIndexes"], "0-3");
    assert!(condition(&plan, "Complete").is_some());
}

#[test]
fn a_pod_of_an_indexed_job_carries_its_index() {
    let job = job(json!({"completions": 2, "completionMode": "Indexed"}));
    let pod = new_pod(&job, Some(1));
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("pi-1-") && name.len() == "pi-1-".len() + 5,
        "{name}"
    );
    assert_eq!(pod["metadata"]["labels"][COMPLETION_INDEX], "1");
    assert_eq!(pod["metadata"]["annotations"][COMPLETION_INDEX], "1");
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "pi"
    );
    assert_eq!(pod["spec"]["hostname"], "pi-1");
    assert_eq!(
        pod["spec"]["containers"][0]["env"],
        json!([{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}])
    );
    assert_eq!(
        pod["metadata"]["ownerReferences"],
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job-uid",
            "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
}

/// A pod of index `index`, named `name`, that carries `failures_before`
/// earlier failures of its index; a terminal one finished at `finished`.
fn index_pod(
    name: &str,
    index: u32,
    phase: &str,
    finished: Option<SystemTime>,
    failures_before: u64,
) -> Value {
    let mut pod = pod(name, phase, finished);
    pod["metadata"]["annotations"] = json!({COMPLETION_INDEX: index.to_string()});
    if failures_before > 0 {
        pod["metadata"]["annotations"][INDEX_FAILURE_COUNT] = json!(failures_before.to_string());
    }
    pod
}

#[test]
fn a_limit_per_index_fails_that_index_alone_and_then_the_job() {
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
        "backoffLimitPerIndex": 1});
    let job = started(job(spec), t0());
    // The API server's default: no Job-wide limit unless one is set.
    assert_eq!(job["spec"]["backoffLimit"], i32::MAX);
    let running = |name: &str, index| index_pod(name, index, "Running", None, 0);

    // Index 0 failed once: its next pod waits for the backoff, then carries
    // the count; the other indexes run on.
    let first = index_pod("pi-0-a", 0, "Failed", Some(t0()), 0);
    let pods = [first.clone(), running("pi-1", 1), running("pi-2", 2)];
    let plan = run(&job, &pods, t0() + secs(5));
    assert!(plan.create.is_empty(), "{plan:?}");
    assert_eq!(plan.wake_at, Some(t0() + secs(10)));
    let plan = run(&job, &pods, t0() + secs(10));
    assert_eq!(plan.create, [Some(0)]);
    assert_eq!(plan.index_failures.get(&0), Some(&1));
    assert!(
        plan.status.get("failedIndexes").is_none(),
        "{:#}",
        plan.status
    );

    // Its second failure passes the limit: index 0 is failed, not run again.
    let second = index_pod("pi-0-b", 0, "Failed", Some(t0() + secs(20)), 1);
    let pods = [
        first.clone(),
        second.clone(),
        running("pi-1", 1),
        running("pi-2", 2),
    ];
    let plan = run(&job, &pods, t0() + secs(60));
    assert!(plan.create.is_empty(), "{plan:?}");
    assert_eq!(plan.status["failedIndexes"], "0");
    assert!(condition(&plan, "FailureTarget").is_none());

    // Once every other index has succeeded, the Job has failed indexes.
    let done = |name: &str, index| index_pod(name, index, "Succeeded", Some(t0() + secs(30)), 0);
    let pods = [first, second, done("pi-1", 1), done("pi-2", 2)];
    let plan = run(&after(job, &plan), &pods, t0() + secs(61));
    assert_eq!(
        condition(&plan, "Failed").unwrap()["reason"],
        "FailedIndexes"
    );
    assert_eq!(plan.status["completedIndexes"], "1,2");
    assert_eq!(plan.status["failedIndexes"], "0");
}

#[test]
fn more_failed_indexes_than_allowed_fail_the_job_at_once() {
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
        "backoffLimitPerIndex": 0, "maxFailedIndexes": 0});
    let job = started(job(spec), t0());
    let pods = [
        index_pod("pi-0", 0, "Failed", Some(t0()), 0),
        index_pod("pi-1", 1, "Running", None, 0),
    ];
    let plan = run(&job, &pods, t0() + secs(1));
    let target = condition(&plan, "FailureTarget").unwrap();
    assert_eq!(target["reason"], "MaxFailedIndexesExceeded");
    assert_eq!(plan.delete, ["pi-1"]);
    assert!(plan.create.is_empty());
}

#[test]
fn fail_index_in_the_pod_failure_policy_fails_the_index_without_retries() {
    let spec = json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed",
        "backoffLimitPerIndex": 5, "podFailurePolicy": {"rules": [
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}}]}});
    let job = started(job(spec), t0());
    let pods = [
        index_pod("pi-0", 0, "Failed", Some(t0()), 0),
        index_pod("pi-1", 1, "Running", None, 0),
    ];
    let plan = run(&job, &pods, t0() + secs(600));
    assert!(plan.create.is_empty(), "{plan:?}");
    assert_eq!(plan.status["failedIndexes"], "0");
}

#[test]
fn a_success_policy_completes_the_job_early() {
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
        "successPolicy": {"rules": [{"succeededIndexes": "2"}, {"succeededIndexes": "0-1", "succeededCount": 1}]}});
    let job = started(job(spec), t0());
    let pods = [
        index_pod("pi-0", 0, "Running", None, 0),
        index_pod("pi-1", 1, "Succeeded", Some(t0()), 0),
        index_pod("pi-2", 2, "Running", None, 0),
    ];
    let plan = run(&job, &pods, t0() + secs(1));
    let met = condition(&plan, "SuccessCriteriaMet").unwrap();
    assert_eq!(met["reason"], "SuccessPolicy");
    assert_eq!(met["message"], "Matched rules at index 1");
    let mut deleted = plan.delete.clone();
    deleted.sort();
    assert_eq!(deleted, ["pi-0", "pi-2"]);
    assert!(
        condition(&plan, "Complete").is_none(),
        "waits for its pods to go"
    );

    let pods = [index_pod("pi-1", 1, "Succeeded", Some(t0()), 0)];
    let plan = run(&after(job, &plan), &pods, t0() + secs(2));
    assert_eq!(
        condition(&plan, "Complete").unwrap()["reason"],
        "SuccessPolicy"
    );
}

#[test]
fn indexes_read_and_write_in_kubernetes_compressed_form() {
    let indexes = parse_indexes("1,3-5,7,9");
    assert_eq!(
        indexes.iter().copied().collect::<Vec<_>>(),
        [1, 3, 4, 5, 7, 9]
    );
    assert_eq!(format_indexes(&indexes), "1,3-5,7,9");
    assert_eq!(format_indexes(&parse_indexes("0,1")), "0,1");
    assert!(parse_indexes("x,-,").is_empty());
}

#[test]
fn lowering_parallelism_deletes_the_surplus_newest_first() {
    let job = started(job(json!({"completions": 10, "parallelism": 1})), t0());
    let mut older = pod("old", "Running", None);
    older["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    let mut newer = pod("new", "Running", None);
    newer["metadata"]["creationTimestamp"] = json!("2026-01-01T00:01:00Z");
    newer["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    let plan = run(&job, &[older, newer], t0());
    assert_eq!(plan.delete, ["new"]);
    assert_eq!(plan.status["active"], 1);
    assert_eq!(plan.status["ready"], 1);
}

#[test]
fn a_suspended_job_runs_nothing_and_resumes() {
    let job = started(job(json!({"suspend": true, "completions": 2})), t0());
    let plan = run(&job, &[pod("a", "Running", None)], t0());
    assert_eq!(plan.delete, ["a"]);
    assert!(plan.create.is_empty());
    assert_eq!(
        condition(&plan, "Suspended").unwrap()["reason"],
        "JobSuspended"
    );
    assert_eq!(reasons(&plan), ["Suspended"]);

    let mut resumed = after(job, &plan);
    resumed["spec"]["suspend"] = json!(false);
    let plan = run(&resumed, &[], t0() + secs(100));
    assert_eq!(plan.create, [None]);
    assert_eq!(reasons(&plan), ["Resumed"]);
    assert_eq!(plan.status["startTime"], "2026-01-01T00:01:40Z");
    assert!(condition(&plan, "Suspended").is_none());
}

/// The controller against a real store and cache: it creates the Job's
/// pods with their owner reference, counts them as they finish, records
/// Complete, and deletes the Job when its TTL (driven by a fake clock)
/// has passed.
#[tokio::test]
async fn the_controller_runs_a_job_to_complete_and_deletes_it_after_its_ttl() {
    let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
    let shutdown = CancellationToken::new();
    let cache = Cache::start(Arc::clone(&store), shutdown.clone())
        .await
        .unwrap();
    let clock = Arc::new(FakeClock::at(t0()));
    let controller = JobController::new(clock.clone(), PodFailureBackoff::default());
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default"},
        "spec": {"completions": 2, "parallelism": 2, "ttlSecondsAfterFinished": 5,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}});
    let created = objects.create(kind("jobs"), "default", job).await.unwrap();
    let everything = Changes {
        everything: true,
        ..Changes::default()
    };
    let sync = async |controller: &JobController| {
        let revision = controller
            .reconcile(&objects, &cache, &everything)
            .await
            .unwrap();
        if let Some(revision) = revision {
            cache.wait_for(revision).await;
        }
    };
    cache
        .wait_for(crate::objects::revision_of(&created).unwrap())
        .await;
    sync(&controller).await;
    let pods = cache.list(kind("pods"), Some("default"));
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(
            crate::pods::controller_uid(pod),
            created["metadata"]["uid"].as_str()
        );
        assert_eq!(pod["metadata"]["labels"]["job-name"], "pi");
    }
    let stored = cache.get(kind("jobs"), "default", "pi").unwrap();
    assert_eq!(stored["status"]["active"], 2);

    for pod in &pods {
        objects
            .update_with(kind("pods"), "default", name_of(pod), |p| {
                p["status"]["phase"] = json!("Succeeded");
                true
            })
            .await
            .unwrap();
    }
    let revision = objects
        .update_with(kind("jobs"), "default", "pi", |_| false)
        .await
        .unwrap();
    assert!(revision.is_none());
    cache
        .wait_for(store.current_revision().await.unwrap())
        .await;
    sync(&controller).await;
    let stored = cache.get(kind("jobs"), "default", "pi").unwrap();
    assert_eq!(stored["status"]["succeeded"], 2);
    assert_eq!(
        table_status(&stored),
        ["SuccessCriteriaMet", "Complete"],
        "{stored}"
    );

    clock.advance(secs(5));
    sync(&controller).await;
    assert!(cache.get(kind("jobs"), "default", "pi").is_none());
    // Its pods are garbage now.
    sync(&controller).await;
    assert!(cache.list(kind("pods"), Some("default")).is_empty());
    shutdown.cancel();
}

fn table_status(job: &Value) -> Vec<&str> {
    job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap())
        .collect()
}
