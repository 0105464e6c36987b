//! The CronJob controller (`batch/v1` CronJob), following Kubernetes'
//! cronjob controller (v2):
//!
//! - the schedule is standard cron (five fields, `@hourly`, `@daily`, ...,
//!   parsed by `croner`; day of month and day of week match when either
//!   does), read on the wall clock of `spec.timeZone` (`chrono-tz`), UTC
//!   when unset;
//! - at each scheduled time it creates one Job named
//!   `NAME-<scheduled time in minutes since the epoch>`, so a time is never
//!   run twice, and records `status.lastScheduleTime` and `status.active`;
//! - a time missed by more than `startingDeadlineSeconds` is skipped
//!   (MissSchedule); only the most recent missed time runs;
//! - `concurrencyPolicy`: Allow, Forbid (skip while a Job runs), Replace
//!   (delete the running Jobs first);
//! - finished Jobs beyond `successfulJobsHistoryLimit` (3) and
//!   `failedJobsHistoryLimit` (1) are deleted, oldest first;
//! - `suspend` stops new Jobs.
//!
//! What it decides is a pure function of the CronJob, its Jobs and the time
//! ([`plan`]), unit-tested with a fake clock; [`CronJobController`] carries
//! it out and wakes each CronJob at its next scheduled time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use c4m_core::{format_rfc3339, parse_rfc3339};
use chrono::{DateTime, TimeZone, Timelike, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::latest;
use crate::Result;
use crate::cache::{Cache, ChangeFeed, Changes, ROOT};
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, kind, name_of, namespace_of};

/// The annotation holding the time a Job was scheduled for.
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Who records the CronJob controller's Events.
const COMPONENT: &str = "cronjob-controller";
/// Kubernetes' defaults for the history limits.
const DEFAULT_SUCCESSFUL_HISTORY: usize = 3;
const DEFAULT_FAILED_HISTORY: usize = 1;
/// More missed times than this are reported (TooManyMissedTimes).
const MAX_MISSED: usize = 100;

/// A parsed schedule on its time zone's wall clock.
#[derive(Debug)]
pub(crate) struct Schedule {
    cron: Cron,
    zone: chrono_tz::Tz,
}

/// Why a schedule or time zone cannot be used, with the field it is in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScheduleError {
    /// `spec.schedule` or `spec.timeZone`.
    pub(crate) field: &'static str,
    /// What is wrong.
    pub(crate) message: String,
}

impl Schedule {
    /// Parses `schedule` (five fields or a `@` shorthand) in `time_zone`
    /// (an IANA name; UTC when None).
    pub(crate) fn parse(
        schedule: &str,
        time_zone: Option<&str>,
    ) -> Result<Schedule, ScheduleError> {
        let trimmed = schedule.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(ScheduleError {
                field: "spec.schedule",
                message: format!(
                    "{schedule:?}: cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
                ),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| ScheduleError {
                field: "spec.schedule",
                message: format!("{schedule:?}: {e}"),
            })?;
        let zone = match time_zone {
            None => chrono_tz::UTC,
            Some(name) => name.parse().map_err(|e| ScheduleError {
                field: "spec.timeZone",
                message: format!("{name:?}: unknown time zone: {e}"),
            })?,
        };
        Ok(Schedule { cron, zone })
    }

    /// The first scheduled time after `after`.
    pub(crate) fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let start = self.zone.from_utc_datetime(&to_chrono(after)?.naive_utc());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(SystemTime::from(next.with_timezone(&Utc)))
    }

    /// The latest scheduled time at or before `at`.
    fn latest_until(&self, at: SystemTime) -> Option<SystemTime> {
        // Whole seconds: croner counts 12:01:00.2 as an occurrence of
        // `* * * * *` and would give it back with its fraction.
        let at = to_chrono(at)?.with_nanosecond(0)?;
        let start = self.zone.from_utc_datetime(&at.naive_utc());
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        Some(SystemTime::from(previous.with_timezone(&Utc)))
    }

    /// `at` as RFC 3339 on the schedule's wall clock.
    fn local_rfc3339(&self, at: SystemTime) -> String {
        to_chrono(at)
            .map(|t| {
                t.with_timezone(&self.zone)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_else(|| format_rfc3339(at))
    }
}

fn to_chrono(at: SystemTime) -> Option<DateTime<Utc>> {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    DateTime::from_timestamp(since.as_secs() as i64, since.subsec_nanos())
}

/// Checks a CronJob's schedule and time zone (what the typed validation of
/// `c4m-core` cannot: it parses no cron).
pub(crate) fn check(cronjob: &Value) -> Result<(), ScheduleError> {
    let schedule = cronjob["spec"]["schedule"].as_str().unwrap_or_default();
    Schedule::parse(schedule, cronjob["spec"]["timeZone"].as_str()).map(|_| ())
}

/// What one reconcile of a CronJob does.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct CronPlan {
    /// The Job to create, if a scheduled time has come.
    pub(crate) create: Option<Value>,
    /// Names of Jobs to delete (history beyond the limits, or replaced).
    pub(crate) delete: Vec<String>,
    /// The CronJob's new `status` (`active` without the Job to create,
    /// which is added once created, with its uid).
    pub(crate) status: Value,
    /// Events about the CronJob (type, reason, message).
    pub(crate) events: Vec<(EventType, &'static str, String)>,
    /// When to look at the CronJob again: its next scheduled time.
    pub(crate) wake_at: Option<SystemTime>,
}

fn is_finished(job: &Value) -> Option<&'static str> {
    let conditions = job["status"]["conditions"].as_array()?;
    ["Complete", "Failed"].into_iter().find(|kind| {
        conditions
            .iter()
            .any(|c| c["type"] == *kind && c["status"] == "True")
    })
}

fn object_ref(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name_of(job),
        "namespace": namespace_of(job),
        "uid": job["metadata"]["uid"],
        "resourceVersion": job["metadata"]["resourceVersion"],
    })
}

/// When a Job started (or was created), for ordering the history.
fn started_at(job: &Value) -> String {
    job["status"]["startTime"]
        .as_str()
        .or(job["metadata"]["creationTimestamp"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Decides what to do with `cronjob` given the Jobs it controls at `now`.
pub(crate) fn plan(cronjob: &Value, jobs: &[&Value], now: SystemTime) -> CronPlan {
    let spec = &cronjob["spec"];
    let mut plan = CronPlan::default();
    let mut status = if cronjob["status"].is_object() {
        cronjob["status"].clone()
    } else {
        json!({})
    };

    // Active Jobs, and those that finished since the last look.
    let was_active: BTreeSet<&str> = cronjob["status"]["active"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let mut active: Vec<&Value> = Vec::new();
    let (mut succeeded, mut failed): (Vec<&Value>, Vec<&Value>) = (Vec::new(), Vec::new());
    let mut last_success = status["lastSuccessfulTime"]
        .as_str()
        .and_then(parse_rfc3339);
    for job in jobs {
        match is_finished(job) {
            None => active.push(job),
            Some(condition) => {
                if was_active.contains(name_of(job)) {
                    plan.events.push((
                        EventType::Normal,
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, condition: {condition}",
                            name_of(job)
                        ),
                    ));
                }
                if condition == "Complete" {
                    let completed = job["status"]["completionTime"]
                        .as_str()
                        .and_then(parse_rfc3339);
                    last_success = last_success.max(completed);
                    succeeded.push(job);
                } else {
                    failed.push(job);
                }
            }
        }
    }
    active.sort_by_key(|j| name_of(j).to_string());
    if let Some(at) = last_success {
        status["lastSuccessfulTime"] = json!(format_rfc3339(at));
    }

    // History beyond the limits goes, oldest first.
    let limit = |field: &str, default: usize| {
        spec[field]
            .as_u64()
            .map_or(default, |l| usize::try_from(l).unwrap_or(usize::MAX))
    };
    for (mut finished, keep) in [
        (
            succeeded,
            limit("successfulJobsHistoryLimit", DEFAULT_SUCCESSFUL_HISTORY),
        ),
        (
            failed,
            limit("failedJobsHistoryLimit", DEFAULT_FAILED_HISTORY),
        ),
    ] {
        finished.sort_by_key(|j| started_at(j));
        let surplus = finished.len().saturating_sub(keep);
        plan.delete.extend(
            finished
                .iter()
                .take(surplus)
                .map(|j| name_of(j).to_string()),
        );
    }

    let finish = |mut plan: CronPlan, status: Value, active: &[&Value]| {
        let mut status = status;
        status["active"] = json!(active.iter().map(|j| object_ref(j)).collect::<Vec<_>>());
        if active.is_empty()
            && let Some(fields) = status.as_object_mut()
        {
            fields.remove("active");
        }
        plan.status = status;
        plan
    };

    if spec["suspend"] == true || !cronjob["metadata"]["deletionTimestamp"].is_null() {
        return finish(plan, status, &active);
    }
    let schedule = match Schedule::parse(
        spec["schedule"].as_str().unwrap_or_default(),
        spec["timeZone"].as_str(),
    ) {
        Ok(schedule) => schedule,
        Err(e) => {
            let reason = if e.field == "spec.timeZone" {
                "UnknownTimeZone"
            } else {
                "UnparseableSchedule"
            };
            plan.events.push((EventType::Warning, reason, e.message));
            return finish(plan, status, &active);
        }
    };
    plan.wake_at = schedule.next_after(now);

    // The most recent scheduled time not yet run, no earlier than the
    // starting deadline allows.
    let created = cronjob["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(now);
    let mut earliest = status["lastScheduleTime"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(created);
    let deadline = spec["startingDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs);
    if let Some(deadline) = deadline
        && let Some(start) = now.checked_sub(deadline)
    {
        earliest = earliest.max(start);
    }
    let Some(scheduled) = schedule.latest_until(now).filter(|t| *t > earliest) else {
        return finish(plan, status, &active);
    };
    let mut missed = 0;
    let mut cursor = earliest;
    while let Some(next) = schedule.next_after(cursor).filter(|t| *t <= now) {
        missed += 1;
        if missed > MAX_MISSED {
            plan.events.push((
                EventType::Warning,
                "TooManyMissedTimes",
                format!(
                    "too many missed start times: > {MAX_MISSED}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                ),
            ));
            break;
        }
        cursor = next;
    }
    if let Some(deadline) = deadline
        && scheduled + deadline < now
    {
        plan.events.push((
            EventType::Warning,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                schedule.local_rfc3339(scheduled)
            ),
        ));
        return finish(plan, status, &active);
    }
    let job_name = job_name(name_of(cronjob), scheduled);
    if jobs.iter().any(|j| name_of(j) == job_name) {
        // Already run (the status write may have been lost).
        status["lastScheduleTime"] = json!(format_rfc3339(scheduled));
        return finish(plan, status, &active);
    }
    match spec["concurrencyPolicy"].as_str().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            plan.events.push((
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid"
                    .into(),
            ));
            return finish(plan, status, &active);
        }
        "Replace" => {
            plan.delete
                .extend(active.iter().map(|j| name_of(j).to_string()));
            active.clear();
        }
        _ => {}
    }
    plan.create = Some(new_job(
        cronjob,
        &job_name,
        &schedule.local_rfc3339(scheduled),
    ));
    status["lastScheduleTime"] = json!(format_rfc3339(scheduled));
    finish(plan, status, &active)
}

/// `NAME-<scheduled time in minutes since the epoch>`, as Kubernetes names
/// a CronJob's Jobs.
fn job_name(cronjob: &str, scheduled: SystemTime) -> String {
    let minutes = scheduled
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60);
    format!("{cronjob}-{minutes}")
}

/// The Job of `cronjob` for one scheduled time.
fn new_job(cronjob: &Value, name: &str, scheduled: &str) -> Value {
    let template = &cronjob["spec"]["jobTemplate"];
    let mut metadata = if template["metadata"].is_object() {
        template["metadata"].clone()
    } else {
        json!({})
    };
    for field in ["labels", "annotations"] {
        if !metadata[field].is_object() {
            metadata[field] = json!({});
        }
    }
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(namespace_of(cronjob));
    metadata["annotations"][SCHEDULED_TIMESTAMP] = json!(scheduled);
    metadata["ownerReferences"] = json!([{
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": name_of(cronjob),
        "uid": cronjob["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template["spec"],
    })
}

/// The CronJob controlling `job` (`cronjobs/NAMESPACE/NAME`), if any.
fn controller_of(job: &Value) -> Option<(String, Option<&str>)> {
    let owner = job["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true && r["kind"] == "CronJob")?;
    Some((
        format!("cronjobs/{}/{}", namespace_of(job), owner["name"].as_str()?),
        owner["uid"].as_str(),
    ))
}

/// The CronJob controller: carries out each CronJob's [`plan`] and wakes
/// each at its next scheduled time.
#[derive(Debug)]
pub(crate) struct CronJobController {
    clock: Arc<dyn Clock>,
    /// When each CronJob (by store key) is next due.
    wakeups: super::Wakeups,
}

impl CronJobController {
    /// A controller reading `clock`.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> CronJobController {
        CronJobController {
            clock,
            wakeups: super::Wakeups::default(),
        }
    }

    /// Reconciles the CronJobs `changes` touch (each changed CronJob, the
    /// CronJob controlling each changed Job), or every one on a resync.
    pub(crate) async fn reconcile(
        &self,
        objects: &Objects,
        cache: &Cache,
        changes: &Changes,
    ) -> Result<Option<i64>> {
        let touched = super::touched_owners(cache, changes, "cronjobs", "jobs", changes.everything);
        if touched.is_empty() {
            return Ok(None);
        }
        // The Jobs of every CronJob touched, by CronJob uid.
        let mut jobs_by_owner: BTreeMap<String, Vec<Arc<Value>>> = BTreeMap::new();
        for job in cache.list(kind("jobs"), None) {
            if let Some((_, Some(uid))) = controller_of(&job) {
                jobs_by_owner
                    .entry(uid.to_string())
                    .or_default()
                    .push(Arc::clone(&job));
            }
        }
        let jobs_by_owner = &jobs_by_owner;
        super::reconcile_each("cronjobs", touched, |key| async move {
            self.reconcile_cronjob(objects, cache, jobs_by_owner, &key)
                .await
                .inspect_err(|e| tracing::warn!(cronjob = %key, error = %e, "cannot reconcile"))
        })
        .await
    }

    async fn reconcile_cronjob(
        &self,
        objects: &Objects,
        cache: &Cache,
        jobs_by_owner: &BTreeMap<String, Vec<Arc<Value>>>,
        key: &str,
    ) -> Result<Option<i64>> {
        let store_key = format!("{ROOT}{key}");
        let Some(cronjob) = key
            .strip_prefix("cronjobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(namespace, name)| cache.get(kind("cronjobs"), namespace, name))
        else {
            self.wake(&store_key, None);
            return Ok(None);
        };
        let uid = cronjob["metadata"]["uid"].as_str().unwrap_or_default();
        let jobs: Vec<&Value> = jobs_by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .map(|j| j.as_ref())
            .collect();
        let plan = plan(&cronjob, &jobs, self.clock.now());
        self.wake(&store_key, plan.wake_at);
        self.carry_out(objects, &cronjob, plan).await
    }

    async fn carry_out(
        &self,
        objects: &Objects,
        cronjob: &Value,
        plan: CronPlan,
    ) -> Result<Option<i64>> {
        let events = objects.events();
        let regarding = Regarding::of(cronjob);
        let namespace = namespace_of(cronjob);
        let mut written = None;
        for name in &plan.delete {
            match objects.delete(kind("jobs"), namespace, name).await {
                Ok((_, revision)) => {
                    written = latest(written, Some(revision));
                    events.record(
                        regarding.clone(),
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted job {name}"),
                        COMPONENT,
                    );
                }
                Err(crate::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut status = plan.status;
        if let Some(job) = plan.create {
            let name = name_of(&job).to_string();
            let created = match objects.create(kind("jobs"), namespace, job).await {
                Ok(created) => Some(created),
                Err(crate::Error::AlreadyExists { .. }) => None,
                Err(e) => {
                    events.record(
                        regarding.clone(),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating job: {e}"),
                        COMPONENT,
                    );
                    return Err(e);
                }
            };
            if let Some(created) = created {
                written = latest(written, crate::objects::revision_of(&created));
                if !status["active"].is_array() {
                    status["active"] = json!([]);
                }
                if let Some(active) = status["active"].as_array_mut() {
                    active.push(object_ref(&created));
                }
                events.record(
                    regarding.clone(),
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created job {name}"),
                    COMPONENT,
                );
            }
        }
        written = latest(
            written,
            super::write_status(objects, "cronjobs", cronjob, &status).await?,
        );
        for (event_type, reason, message) in plan.events {
            events.record(regarding.clone(), event_type, reason, message, COMPONENT);
        }
        Ok(written)
    }

    fn wake(&self, store_key: &str, at: Option<SystemTime>) {
        self.wakeups.set(store_key, at);
    }

    /// Puts the CronJobs whose time has come into `feed`, checking every
    /// `tick`, until `shutdown`.
    pub(crate) async fn run_wakeups(
        self: Arc<Self>,
        feed: Arc<ChangeFeed>,
        tick: Duration,
        shutdown: CancellationToken,
    ) {
        self.wakeups
            .run(self.clock.as_ref(), &feed, tick, shutdown)
            .await;
    }
}

#[cfg(test)]
mod tests;
