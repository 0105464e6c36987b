use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cache::Cache;
use crate::controllers::clock::FakeClock;

fn at(rfc3339: &str) -> SystemTime {
    parse_rfc3339(rfc3339).unwrap()
}

fn minutes(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() / 60
}

/// A CronJob created at `created` with `spec` merged in.
fn cronjob(created: &str, spec: Value) -> Value {
    let mut cronjob = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "tick", "namespace": "default", "uid": "cj-uid",
            "creationTimestamp": created},
        "spec": {
            "schedule": "*/1 * * * *",
            "jobTemplate": {
                "metadata": {"labels": {"app": "tick"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}]}}},
            },
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        cronjob["spec"][key] = value.clone();
    }
    cronjob
}

/// A Job of the CronJob scheduled at `scheduled`, finished with
/// `condition` (Complete, Failed) or running (None).
fn job(scheduled: &str, condition: Option<&str>) -> Value {
    let name = format!("tick-{}", minutes(at(scheduled)));
    let mut job = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "creationTimestamp": scheduled,
            "ownerReferences": [{"kind": "CronJob", "name": "tick", "uid": "cj-uid", "controller": true}]},
        "status": {"startTime": scheduled},
    });
    if let Some(condition) = condition {
        job["status"]["conditions"] = json!([{"type": condition, "status": "True"}]);
        if condition == "Complete" {
            job["status"]["completionTime"] = json!(scheduled);
        }
    }
    job
}

fn run(cronjob: &Value, jobs: &[Value], now: &str) -> CronPlan {
    let jobs: Vec<&Value> = jobs.iter().collect();
    plan(cronjob, &jobs, at(now))
}

fn reasons(plan: &CronPlan) -> Vec<&str> {
    plan.events.iter().map(|(_, reason, _)| *reason).collect()
}

fn created_name(plan: &CronPlan) -> Option<&str> {
    plan.create
        .as_ref()
        .and_then(|job| job["metadata"]["name"].as_str())
}

#[test]
fn schedules_parse_as_kubernetes_reads_them() {
    for good in [
        "*/1 * * * *",
        "@hourly",
        "@daily",
        "0 9 * * MON-FRI",
        "15 3 1 JAN *",
    ] {
        assert!(Schedule::parse(good, None).is_ok(), "{good}");
    }
    for bad in ["61 * * * *", "* * * *", "0 0 * * * *", "hourly"] {
        let e = Schedule::parse(bad, None).unwrap_err();
        assert_eq!(e.field, "spec.schedule", "{bad}");
    }
    let e = Schedule::parse("TZ=UTC * * * * *", None).unwrap_err();
    assert!(
        e.message.contains("use timeZone field instead"),
        "{}",
        e.message
    );
    let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
    assert_eq!(e.field, "spec.timeZone");
}

#[test]
fn a_schedule_runs_on_its_time_zone_wall_clock() {
    let nine = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
    // Winter: CET is UTC+1; summer: CEST is UTC+2.
    assert_eq!(
        nine.next_after(at("2026-01-01T00:00:00Z")),
        Some(at("2026-01-01T08:00:00Z"))
    );
    assert_eq!(
        nine.next_after(at("2026-07-01T00:00:00Z")),
        Some(at("2026-07-01T07:00:00Z"))
    );
    let hourly = Schedule::parse("@hourly", None).unwrap();
    assert_eq!(
        hourly.next_after(at("2026-01-01T10:00:00Z")),
        Some(at("2026-01-01T11:00:00Z"))
    );
}

#[test]
fn day_of_month_or_day_of_week_matches_as_in_cron() {
    // The 13th, or any Friday: 2026-01-01 is a Thursday.
    let schedule = Schedule::parse("0 0 13 * 5", None).unwrap();
    assert_eq!(
        schedule.next_after(at("2026-01-01T00:00:00Z")),
        Some(at("2026-01-02T00:00:00Z"))
    );
}

#[test]
fn a_job_is_created_at_each_scheduled_time() {
    let cj = cronjob("2026-01-01T00:00:30Z", json!({}));
    let plan = run(&cj, &[], "2026-01-01T00:00:45Z");
    assert!(plan.create.is_none());
    assert_eq!(plan.wake_at, Some(at("2026-01-01T00:01:00Z")));

    let plan = run(&cj, &[], "2026-01-01T00:01:00Z");
    let job = plan.create.as_ref().expect("a Job at 00:01");
    let expected = format!("tick-{}", minutes(at("2026-01-01T00:01:00Z")));
    assert_eq!(job["metadata"]["name"], expected);
    assert_eq!(job["metadata"]["labels"]["app"], "tick");
    assert_eq!(
        job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
        "2026-01-01T00:01:00Z"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "cj-uid");
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(plan.status["lastScheduleTime"], "2026-01-01T00:01:00Z");
    assert_eq!(plan.wake_at, Some(at("2026-01-01T00:02:00Z")));

    // The same time is not run twice.
    let mut ran = cj.clone();
    ran["status"] = plan.status.clone();
    assert!(
        run(&ran, std::slice::from_ref(job), "2026-01-01T00:01:30Z")
            .create
            .is_none()
    );
    let running = self::job("2026-01-01T00:01:00Z", None);
    assert!(
        run(&cj, &[running], "2026-01-01T00:01:30Z")
            .create
            .is_none()
    );
}

#[test]
fn concurrency_policies_decide_about_a_running_job() {
    let mut cj = cronjob("2026-01-01T00:00:30Z", json!({}));
    cj["status"] = json!({"lastScheduleTime": "2026-01-01T00:01:00Z"});
    let running = [job("2026-01-01T00:01:00Z", None)];
    let now = "2026-01-01T00:02:00Z";

    let plan = run(&cj, &running, now);
    assert!(plan.create.is_some(), "Allow runs them side by side");
    assert_eq!(
        plan.status["active"][0]["name"],
        running[0]["metadata"]["name"]
    );

    cj["spec"]["concurrencyPolicy"] = json!("Forbid");
    let plan = run(&cj, &running, now);
    assert!(plan.create.is_none());
    assert_eq!(reasons(&plan), ["JobAlreadyActive"]);
    assert_eq!(plan.status["lastScheduleTime"], "2026-01-01T00:01:00Z");

    cj["spec"]["concurrencyPolicy"] = json!("Replace");
    let plan = run(&cj, &running, now);
    assert_eq!(
        plan.delete,
        [running[0]["metadata"]["name"].as_str().unwrap()]
    );
    assert!(plan.create.is_some());
    assert!(
        plan.status.get("active").is_none(),
        "the replaced Job is not active"
    );
}

#[test]
fn a_time_missed_beyond_the_starting_deadline_is_skipped() {
    let mut cj = cronjob(
        "2026-01-01T00:00:30Z",
        json!({"startingDeadlineSeconds": 10}),
    );
    cj["status"] = json!({"lastScheduleTime": "2026-01-01T00:01:00Z"});
    // 00:05:00 is more than 10 s ago: as in Kubernetes, times before
    // `now - startingDeadlineSeconds` are not considered at all.
    let plan = run(&cj, &[], "2026-01-01T00:05:30Z");
    assert!(plan.create.is_none());
    assert!(plan.events.is_empty());
    assert_eq!(plan.status["lastScheduleTime"], "2026-01-01T00:01:00Z");
    assert_eq!(plan.wake_at, Some(at("2026-01-01T00:06:00Z")));

    // Within the deadline, only the most recent missed time runs.
    cj["spec"]["startingDeadlineSeconds"] = json!(60);
    let plan = run(&cj, &[], "2026-01-01T00:05:30Z");
    let expected = format!("tick-{}", minutes(at("2026-01-01T00:05:00Z")));
    assert_eq!(created_name(&plan), Some(expected.as_str()));
}

#[test]
fn too_many_missed_times_are_reported_and_the_latest_runs() {
    let cj = cronjob("2026-01-01T00:00:00Z", json!({}));
    let plan = run(&cj, &[], "2026-01-02T00:00:10Z");
    assert_eq!(reasons(&plan), ["TooManyMissedTimes"]);
    let expected = format!("tick-{}", minutes(at("2026-01-02T00:00:00Z")));
    assert_eq!(created_name(&plan), Some(expected.as_str()));
}

#[test]
fn finished_jobs_beyond_the_history_limits_are_deleted_oldest_first() {
    let mut cj = cronjob(
        "2026-01-01T00:00:00Z",
        json!({"successfulJobsHistoryLimit": 1, "suspend": true}),
    );
    let jobs = [
        job("2026-01-01T00:01:00Z", Some("Complete")),
        job("2026-01-01T00:02:00Z", Some("Failed")),
        job("2026-01-01T00:03:00Z", Some("Complete")),
        job("2026-01-01T00:04:00Z", Some("Failed")),
        job("2026-01-01T00:05:00Z", Some("Complete")),
        job("2026-01-01T00:06:00Z", None),
    ];
    let name = |i: usize| jobs[i]["metadata"]["name"].as_str().unwrap().to_string();
    cj["status"] = json!({"active": [{"name": name(4)}, {"name": name(5)}]});
    let plan = run(&cj, &jobs, "2026-01-01T00:06:30Z");
    assert_eq!(plan.delete, [name(0), name(2), name(1)]);
    assert_eq!(plan.status["lastSuccessfulTime"], "2026-01-01T00:05:00Z");
    assert_eq!(plan.status["active"].as_array().unwrap().len(), 1);
    assert_eq!(plan.status["active"][0]["name"], name(5).as_str());
    assert_eq!(reasons(&plan), ["SawCompletedJob"]);
    assert_eq!(
        plan.events[0].2,
        format!("Saw completed job: {}, condition: Complete", name(4))
    );
    assert!(plan.create.is_none(), "suspended");
    assert!(plan.wake_at.is_none());
}

#[test]
fn a_time_inside_a_scheduled_second_gives_that_whole_second() {
    let schedule = Schedule::parse("* * * * *", None).unwrap();
    let at = parse_rfc3339("2026-01-01T00:01:00Z").unwrap() + Duration::from_millis(200);
    assert_eq!(
        schedule.latest_until(at),
        parse_rfc3339("2026-01-01T00:01:00Z")
    );
}

#[test]
fn a_bad_schedule_is_reported_as_an_event() {
    let cj = cronjob("2026-01-01T00:00:00Z", json!({"schedule": "every minute"}));
    let plan = run(&cj, &[], "2026-01-01T00:05:00Z");
    assert_eq!(reasons(&plan), ["UnparseableSchedule"]);
    assert!(plan.create.is_none());
}

/// The controller against a real store and cache, driven by a fake
/// clock: Jobs at two scheduled times, the older one deleted once
/// finished (history limit 1).
#[tokio::test]
async fn the_controller_creates_jobs_on_schedule_and_keeps_the_history_limit() {
    let (_dir, store, objects) = crate::test_support::store_with_default_namespace().await;
    let shutdown = CancellationToken::new();
    let cache = Cache::start(Arc::clone(&store), shutdown.clone())
        .await
        .unwrap();
    let mut cj = cronjob(
        "2026-01-01T00:00:00Z",
        json!({"successfulJobsHistoryLimit": 1}),
    );
    cj["metadata"] = json!({"name": "tick", "namespace": "default"});
    let created = objects
        .create(kind("cronjobs"), "default", cj)
        .await
        .unwrap();
    // The clock starts at the CronJob's (real, whole-second) creation
    // time, so what is due does not depend on when the test runs.
    let created_at = created["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(c4m_core::parse_rfc3339)
        .unwrap();
    let clock = Arc::new(FakeClock::at(created_at));
    let controller = CronJobController::new(clock.clone());
    let everything = Changes {
        everything: true,
        ..Changes::default()
    };
    let sync = async || {
        cache
            .wait_for(store.current_revision().await.unwrap())
            .await;
        let revision = controller
            .reconcile(&objects, &cache, &everything)
            .await
            .unwrap();
        if let Some(revision) = revision {
            cache.wait_for(revision).await;
        }
    };
    sync().await;
    assert!(
        cache.list(kind("jobs"), None).is_empty(),
        "not yet scheduled"
    );
    clock.advance(Duration::from_secs(61));
    sync().await;
    let jobs = cache.list(kind("jobs"), None);
    assert_eq!(jobs.len(), 1);
    let first = name_of(&jobs[0]).to_string();
    let stored = cache.get(kind("cronjobs"), "default", "tick").unwrap();
    assert_eq!(stored["status"]["active"][0]["name"], first.as_str());
    assert!(stored["status"]["active"][0]["uid"].is_string());
    // The Job's defaults were applied as for any created Job.
    assert_eq!(jobs[0]["spec"]["backoffLimit"], 6);

    let complete = async |name: &str, started: &str| {
        let started = started.to_string();
        objects
            .update_with(kind("jobs"), "default", name, |job| {
                job["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}],
                    "startTime": started});
                true
            })
            .await
            .unwrap();
    };
    let names = || -> Vec<String> {
        cache
            .list(kind("jobs"), None)
            .iter()
            .map(|j| name_of(j).to_string())
            .collect()
    };
    complete(&first, "2026-01-01T00:00:00Z").await;
    clock.advance(Duration::from_secs(60));
    sync().await;
    // One finished Job is kept, besides the new one.
    let both = names();
    assert_eq!(both.len(), 2, "{both:?}");
    let second = both.iter().find(|n| **n != first).unwrap().clone();
    complete(&second, "2026-01-01T00:01:00Z").await;
    sync().await;
    assert_eq!(names(), [second], "the older finished Job goes");
    shutdown.cancel();
}
