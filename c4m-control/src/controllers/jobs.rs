//! The Job controller (`batch/v1` Job), following Kubernetes' job
//! controller:
//!
//! - it keeps `min(parallelism, completions - succeeded)` pods running
//!   (NonIndexed), or one pod per index not yet succeeded (Indexed, with
//!   `JOB_COMPLETION_INDEX` and the completion-index label and annotation);
//!   without `completions`, pods run until one succeeds (a work queue);
//! - a failed pod is replaced after an exponential backoff (10 s doubling
//!   to 10 min, from the last failure since the last success), and
//!   `backoffLimit` failures (restarts, for `restartPolicy: OnFailure`)
//!   fail the Job;
//! - `podFailurePolicy` rules (FailJob, FailIndex, Ignore, Count) are
//!   matched against each failed pod's exit codes and conditions, in order;
//! - Indexed Jobs: `backoffLimitPerIndex` (each index its own failures and
//!   backoff; an index past its limit is failed, `status.failedIndexes`,
//!   and no longer run), `maxFailedIndexes`, and `successPolicy` rules
//!   (`succeededIndexes`, `succeededCount`);
//! - `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished`;
//! - conditions as Kubernetes 1.31+ sets them: `SuccessCriteriaMet` or
//!   `FailureTarget` first, and `Complete` or `Failed` once no pod of the
//!   Job runs any more;
//! - Events: SuccessfulCreate, SuccessfulDelete, Completed, Suspended,
//!   Resumed, and a Warning with the failure's reason.
//!
//! What the controller decides is a pure function of the Job, its pods and
//! the time ([`plan`]), unit-tested with a fake clock; [`JobController`]
//! carries it out and asks to be woken when a deadline, backoff or TTL
//! falls due.
//!
//! Kubernetes counts finished pods through a tracking finalizer, so a
//! deleted pod is still counted. Here the counts come from the pods present
//! and never go down (`succeeded`, `failed` and `completedIndexes` keep
//! their highest value).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use c4m_core::{format_rfc3339, parse_rfc3339};
use k8s_openapi::api::batch::v1::{JobSpec, PodFailurePolicyRule};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::latest;
use crate::Result;
use crate::cache::{Cache, ChangeFeed, Changes, ROOT};
use crate::events::{EventType, Regarding};
use crate::objects::{Objects, name_of, namespace_of, random_suffix};
use crate::pods::{is_ready, phase};

/// The label and annotation carrying an Indexed Job pod's index.
pub(crate) const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The annotation on a pod of an index with `backoffLimitPerIndex`: how
/// many pods of that index failed before it (Kubernetes' name).
pub(crate) const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The labels Kubernetes puts on a Job's pod template (and so its pods).
const CONTROLLER_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];
const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
/// Who records the Job controller's Events.
const COMPONENT: &str = "job-controller";
/// `spec.backoffLimit` when not set.
const DEFAULT_BACKOFF_LIMIT: i32 = 6;

/// The delay before a failed pod is replaced: `initial`, doubled for each
/// further failure since the last success, at most `max` (Kubernetes'
/// `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PodFailureBackoff {
    /// After the first failure.
    pub(crate) initial: Duration,
    /// The longest delay.
    pub(crate) max: Duration,
}

impl Default for PodFailureBackoff {
    fn default() -> Self {
        PodFailureBackoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(600),
        }
    }
}

impl PodFailureBackoff {
    /// The delay after `failures` failures in a row (none: no delay).
    pub(crate) fn delay(&self, failures: usize) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(32);
        self.initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Defaults a new Job as Kubernetes' API server does: the selector on its
/// uid, the template labels that selector needs, and the spec defaults
/// `kubectl describe` shows. Called once, at creation, after the uid is
/// set. A `spec.manualSelector` Job keeps its own selector.
pub(crate) fn default_new_job(job: &mut Value) {
    let uid = job["metadata"]["uid"].clone();
    let name = job["metadata"]["name"].clone();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("parallelism").or_insert(json!(1));
    if !spec.contains_key("completions") || spec["completions"].is_null() {
        // A Job with neither is one pod to one completion.
        if spec["parallelism"] == json!(1) {
            spec.insert("completions".into(), json!(1));
        }
    }
    // With a limit per index, the Job-wide one is off unless set.
    let backoff_limit = if spec
        .get("backoffLimitPerIndex")
        .is_some_and(|l| !l.is_null())
    {
        i32::MAX
    } else {
        DEFAULT_BACKOFF_LIMIT
    };
    spec.entry("backoffLimit").or_insert(json!(backoff_limit));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    spec.entry("podReplacementPolicy")
        .or_insert(json!("TerminatingOrFailed"));
    let manual = spec.get("manualSelector") == Some(&json!(true));
    let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) else {
        return;
    };
    let metadata = template.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    let labels = &mut metadata["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    if !manual {
        for label in CONTROLLER_UID_LABELS {
            labels[label] = uid.clone();
        }
        for label in JOB_NAME_LABELS {
            labels[label] = name.clone();
        }
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {CONTROLLER_UID_LABELS[0]: uid}}),
        );
    }
}

/// What one reconcile of a Job does.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Pods to create: their completion index (Indexed) or None.
    pub(crate) create: Vec<Option<u32>>,
    /// With `backoffLimitPerIndex`: how many pods of each index to create
    /// failed before ([`INDEX_FAILURE_COUNT`]).
    pub(crate) index_failures: HashMap<u32, u64>,
    /// Names of pods to delete.
    pub(crate) delete: Vec<String>,
    /// The Job's new `status`.
    pub(crate) status: Value,
    /// Events about the Job (type, reason, message), besides one per pod
    /// created or deleted.
    pub(crate) events: Vec<(EventType, &'static str, String)>,
    /// When to look at the Job again even if nothing changes.
    pub(crate) wake_at: Option<SystemTime>,
    /// The Job's TTL after finishing has passed: delete it.
    pub(crate) delete_job: bool,
}

/// What [`plan`] needs of a pod.
struct PodView<'a> {
    object: &'a Value,
    name: &'a str,
    index: Option<u32>,
    /// When the pod was seen to finish (Succeeded or Failed pods).
    finished_at: Option<SystemTime>,
}

impl PodView<'_> {
    fn is_terminating(&self) -> bool {
        !self.object["metadata"]["deletionTimestamp"].is_null()
    }
}

/// A condition of the Job's status with status True, if present.
fn true_condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// Sets a condition (type, status, reason, message) at `now`, keeping its
/// transition time when its status stays.
fn set_condition(
    status: &mut Value,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let status_text = if value { "True" } else { "False" };
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let condition = json!({
        "type": kind,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    });
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) if existing["status"] == status_text => {
            existing["reason"] = json!(reason);
            existing["message"] = json!(message);
        }
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// Decides what to do with `job` given its `pods` (those it controls) at
/// `now`. `finished_at` tells when a finished pod finished.
pub(crate) fn plan(
    job: &Value,
    pods: &[&Value],
    now: SystemTime,
    backoff: PodFailureBackoff,
    finished_at: &dyn Fn(&Value) -> Option<SystemTime>,
) -> Plan {
    let spec: JobSpec = serde_json::from_value(job["spec"].clone()).unwrap_or_default();
    let now_text = format_rfc3339(now);
    let mut status = if job["status"].is_object() {
        job["status"].clone()
    } else {
        json!({})
    };
    let mut plan = Plan::default();

    // A finished Job only waits for its TTL.
    if let Some(finished) = ["Complete", "Failed"]
        .into_iter()
        .find_map(|kind| true_condition(&status, kind))
    {
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let finished_at = status["completionTime"]
                .as_str()
                .or(finished["lastTransitionTime"].as_str())
                .and_then(parse_rfc3339)
                .unwrap_or(now);
            let expires = finished_at + Duration::from_secs(ttl.max(0) as u64);
            if now >= expires {
                plan.delete_job = true;
            } else {
                plan.wake_at = Some(expires);
            }
        }
        plan.status = status;
        return plan;
    }

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.map(|c| c.max(0) as u32);
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as u32;
    let views: Vec<PodView<'_>> = pods
        .iter()
        .map(|pod| PodView {
            object: pod,
            name: name_of(pod),
            index: pod["metadata"]["annotations"][COMPLETION_INDEX]
                .as_str()
                .and_then(|i| i.parse().ok()),
            finished_at: finished_at(pod),
        })
        .collect();
    let (mut active, mut terminating, mut succeeded, mut failed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for pod in &views {
        match phase(pod.object) {
            "Succeeded" => succeeded.push(pod),
            "Failed" => failed.push(pod),
            _ if pod.is_terminating() => terminating.push(pod),
            _ => active.push(pod),
        }
    }

    // Succeeded pods: indexes of an Indexed Job, kept with those recorded.
    let mut completed_indexes = parse_indexes(status["completedIndexes"].as_str().unwrap_or(""));
    let succeeded_count = if indexed {
        let limit = completions.unwrap_or(0);
        completed_indexes.extend(
            succeeded
                .iter()
                .filter_map(|p| p.index)
                .filter(|i| *i < limit),
        );
        completed_indexes.len() as u64
    } else {
        (succeeded.len() as u64).max(status["succeeded"].as_u64().unwrap_or(0))
    };

    // Failed pods, in the order they failed, through the pod failure policy.
    failed.sort_by_key(|p| p.finished_at);
    let mut fail_job = None;
    let mut counted_failures: Vec<&PodView<'_>> = Vec::new();
    let per_index_limit = spec
        .backoff_limit_per_index
        .filter(|_| indexed)
        .map(|limit| limit.max(0) as u64);
    let mut failed_indexes = match per_index_limit {
        Some(_) => parse_indexes(status["failedIndexes"].as_str().unwrap_or("")),
        None => BTreeSet::new(),
    };
    for pod in &failed {
        let verdict = spec
            .pod_failure_policy
            .as_ref()
            .and_then(|policy| match_failure_policy(&policy.rules, pod.object));
        match verdict {
            Some((action, message)) if action == "FailJob" => {
                fail_job.get_or_insert(message);
                counted_failures.push(pod);
            }
            Some((action, _)) if action == "FailIndex" && per_index_limit.is_some() => {
                failed_indexes.extend(pod.index);
                counted_failures.push(pod);
            }
            Some((action, _)) if action == "Ignore" => {}
            _ => counted_failures.push(pod),
        }
    }
    let failed_count = (counted_failures.len() as u64).max(status["failed"].as_u64().unwrap_or(0));
    // Each index's failures: what its newest pod carries from before, and
    // its own failure.
    let mut index_failures: HashMap<u32, u64> = HashMap::new();
    if let Some(limit) = per_index_limit {
        let counted: BTreeSet<&str> = counted_failures.iter().map(|p| p.name).collect();
        for pod in &views {
            let Some(index) = pod.index else { continue };
            let before: u64 = pod.object["metadata"]["annotations"][INDEX_FAILURE_COUNT]
                .as_str()
                .and_then(|count| count.parse().ok())
                .unwrap_or(0);
            let own = u64::from(counted.contains(pod.name));
            let count = index_failures.entry(index).or_default();
            *count = (*count).max(before + own);
        }
        failed_indexes.extend(
            index_failures
                .iter()
                .filter(|&(_, &count)| count > limit)
                .map(|(&index, _)| index),
        );
        let limit = completions.unwrap_or(0);
        failed_indexes.retain(|i| *i < limit && !completed_indexes.contains(i));
    }

    let mut target = ["SuccessCriteriaMet", "FailureTarget"]
        .into_iter()
        .find_map(|kind| true_condition(&status, kind))
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        });
    let suspended = spec.suspend == Some(true);
    let start_time = status["startTime"].as_str().and_then(parse_rfc3339);

    if target.is_none() {
        let restarts: u64 = if spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
        {
            active.iter().map(|p| restart_count(p.object)).sum::<u64>()
        } else {
            0
        };
        let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT).max(0) as u64;
        let past_restart_limit = restarts > 0 && restarts >= backoff_limit.max(1);
        let succeeded_enough = match completions {
            Some(c) => succeeded_count >= u64::from(c),
            None => succeeded_count > 0 && active.is_empty(),
        };
        let too_many_failed_indexes = spec
            .max_failed_indexes
            .filter(|_| per_index_limit.is_some())
            .is_some_and(|max| failed_indexes.len() as u64 > max.max(0) as u64);
        let all_indexes_done = indexed
            && completions.is_some_and(|c| {
                (completed_indexes.len() + failed_indexes.len()) as u64 >= u64::from(c)
            });
        target = if let Some(message) = fail_job {
            Some(("FailureTarget", "PodFailurePolicy", message))
        } else if failed_count > backoff_limit || past_restart_limit {
            Some((
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if too_many_failed_indexes {
            Some((
                "FailureTarget",
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes".to_string(),
            ))
        } else if let Some(rule) = indexed
            .then(|| matched_success_rule(&spec, &completed_indexes))
            .flatten()
        {
            Some((
                "SuccessCriteriaMet",
                "SuccessPolicy",
                format!("Matched rules at index {rule}"),
            ))
        } else if all_indexes_done && !failed_indexes.is_empty() {
            Some((
                "FailureTarget",
                "FailedIndexes",
                "Job has failed indexes".to_string(),
            ))
        } else if let Some(deadline) = spec
            .active_deadline_seconds
            .zip(start_time)
            .filter(|_| !suspended)
            .map(|(seconds, start)| start + Duration::from_secs(seconds.max(0) as u64))
        {
            if now >= deadline {
                Some((
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".to_string(),
                ))
            } else {
                plan.wake_at = Some(deadline);
                None
            }
        } else {
            None
        }
        .map(|(kind, reason, message)| (kind.to_string(), reason.to_string(), message));
        if target.is_none() && succeeded_enough {
            target = Some((
                "SuccessCriteriaMet".into(),
                "CompletionsReached".into(),
                "Reached expected number of succeeded pods".into(),
            ));
        }
        if let Some((kind, reason, message)) = &target {
            set_condition(&mut status, kind, true, reason, message, &now_text);
        }
    }

    let mut active_after;
    let mut failed_total = failed_count;
    if let Some((kind, reason, message)) = &target {
        // Done: the remaining pods go, and the terminal condition follows
        // once none runs any more.
        plan.delete
            .extend(active.iter().map(|p| p.name.to_string()));
        let success = kind == "SuccessCriteriaMet";
        if !success {
            // Kubernetes counts the pods it terminates as failed.
            failed_total += active.len() as u64;
        }
        active_after = 0;
        if active.is_empty() && terminating.is_empty() {
            plan.wake_at = None;
            if success {
                set_condition(&mut status, "Complete", true, reason, message, &now_text);
                status["completionTime"] = json!(now_text);
                plan.events
                    .push((EventType::Normal, "Completed", "Job completed".into()));
            } else {
                set_condition(&mut status, "Failed", true, reason, message, &now_text);
                plan.events
                    .push((EventType::Warning, static_reason(reason), message.clone()));
            }
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                plan.wake_at = Some(now + Duration::from_secs(ttl.max(0) as u64));
            }
        }
    } else if suspended {
        plan.delete
            .extend(active.iter().map(|p| p.name.to_string()));
        active_after = 0;
        if true_condition(&status, "Suspended").is_none() {
            set_condition(
                &mut status,
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
                &now_text,
            );
            plan.events
                .push((EventType::Normal, "Suspended", "Job suspended".into()));
        }
    } else {
        if true_condition(&status, "Suspended").is_some() {
            set_condition(
                &mut status,
                "Suspended",
                false,
                "JobResumed",
                "Job resumed",
                &now_text,
            );
            plan.events
                .push((EventType::Normal, "Resumed", "Job resumed".into()));
            status["startTime"] = json!(now_text);
        }
        if status["startTime"].is_null() {
            status["startTime"] = json!(now_text);
        }
        // Terminating pods are replaced unless the policy waits for them.
        let waits_for_terminating = spec.pod_replacement_policy.as_deref() == Some("Failed");
        let occupying = active.len()
            + if waits_for_terminating {
                terminating.len()
            } else {
                0
            };
        let want = match completions {
            Some(c) => u64::from(parallelism).min(u64::from(c).saturating_sub(succeeded_count)),
            None if succeeded_count > 0 => 0,
            None => u64::from(parallelism),
        } as usize;

        // Surplus pods go, those not ready and the newest first; so do
        // pods of an index already done or run twice.
        let mut surplus: Vec<&&PodView<'_>> = Vec::new();
        let mut running_indexes = BTreeSet::new();
        if indexed {
            active.sort_by_key(|p| std::cmp::Reverse(is_ready(p.object)));
            for pod in &active {
                let keep = pod.index.is_some_and(|i| {
                    completions.is_some_and(|c| i < c)
                        && !completed_indexes.contains(&i)
                        && !failed_indexes.contains(&i)
                        && running_indexes.insert(i)
                });
                if !keep {
                    surplus.push(pod);
                }
            }
        }
        let mut remaining: Vec<&&PodView<'_>> = active
            .iter()
            .filter(|p| !surplus.iter().any(|s| s.name == p.name))
            .collect();
        if remaining.len() > want {
            remaining.sort_by_key(|p| {
                (
                    is_ready(p.object),
                    std::cmp::Reverse(creation(p.object).to_string()),
                )
            });
            let excess = remaining.len() - want;
            surplus.extend(remaining.drain(..excess));
        }
        plan.delete
            .extend(surplus.iter().map(|p| p.name.to_string()));
        active_after = active.len() - surplus.len();

        let missing = want.saturating_sub(occupying.saturating_sub(surplus.len()));
        if missing > 0 {
            // A failure since the last success delays the next pod; with a
            // limit per index, a failure of that index delays its next pod.
            let last_success = succeeded.iter().filter_map(|p| p.finished_at).max();
            let ready_at = |index: Option<u32>| {
                let recent: Vec<SystemTime> = counted_failures
                    .iter()
                    .filter(|p| per_index_limit.is_none() || p.index == index)
                    .filter_map(|p| p.finished_at)
                    .filter(|at| per_index_limit.is_some() || last_success.is_none_or(|s| *at > s))
                    .collect();
                recent
                    .iter()
                    .max()
                    .map(|last| *last + backoff.delay(recent.len()))
                    .filter(|at| *at > now)
            };
            let mut wait = |at: SystemTime| {
                plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
            };
            if indexed {
                let limit = completions.unwrap_or(0);
                let mut due = Vec::new();
                for index in (0..limit).filter(|i| {
                    !completed_indexes.contains(i)
                        && !running_indexes.contains(i)
                        && !failed_indexes.contains(i)
                }) {
                    if due.len() == missing {
                        break;
                    }
                    match ready_at(Some(index)) {
                        Some(at) => wait(at),
                        None => due.push(index),
                    }
                }
                for index in &due {
                    if let Some(&count) = index_failures.get(index).filter(|c| **c > 0) {
                        plan.index_failures.insert(*index, count);
                    }
                }
                plan.create.extend(due.into_iter().map(Some));
            } else {
                match ready_at(None) {
                    Some(at) => wait(at),
                    None => plan.create.extend(std::iter::repeat_n(None, missing)),
                }
            }
            active_after += plan.create.len();
        }
    }

    let ready = active
        .iter()
        .filter(|p| is_ready(p.object) && !plan.delete.iter().any(|d| d == p.name))
        .count();
    status["active"] = json!(active_after);
    status["ready"] = json!(ready);
    status["succeeded"] = json!(succeeded_count);
    status["failed"] = json!(failed_total);
    status["terminating"] = json!(terminating.len());
    if indexed {
        let text = format_indexes(&completed_indexes);
        status["completedIndexes"] = json!(text);
    }
    if per_index_limit.is_some() {
        status["failedIndexes"] = json!(format_indexes(&failed_indexes));
    }
    status["uncountedTerminatedPods"] = json!({});
    // Kubernetes omits zero counts.
    if let Some(fields) = status.as_object_mut() {
        fields.retain(|key, value| !is_empty_count(key, value));
    }
    plan.status = status;
    plan
}

/// A status field Kubernetes leaves out: a zero count, no index.
fn is_empty_count(key: &str, value: &Value) -> bool {
    match key {
        "active" | "ready" | "succeeded" | "failed" | "terminating" => value == &json!(0),
        "completedIndexes" | "failedIndexes" => value == &json!(""),
        _ => false,
    }
}

/// The reasons the controller records a failure under.
fn static_reason(reason: &str) -> &'static str {
    match reason {
        "PodFailurePolicy" => "PodFailurePolicy",
        "DeadlineExceeded" => "DeadlineExceeded",
        "MaxFailedIndexesExceeded" => "MaxFailedIndexesExceeded",
        "FailedIndexes" => "FailedIndexes",
        _ => "BackoffLimitExceeded",
    }
}

/// The first rule of a pod failure policy that matches a failed pod: its
/// action and, for FailJob, the message Kubernetes writes.
fn match_failure_policy(rules: &[PodFailurePolicyRule], pod: &Value) -> Option<(String, String)> {
    let pod_id = format!("{}/{}", namespace_of(pod), name_of(pod));
    for (i, rule) in rules.iter().enumerate() {
        if let Some(requirement) = &rule.on_exit_codes {
            let statuses = pod["status"]["initContainerStatuses"]
                .as_array()
                .into_iter()
                .chain(pod["status"]["containerStatuses"].as_array())
                .flatten();
            for container in statuses {
                let Some(code) = container["state"]["terminated"]["exitCode"].as_i64() else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let name = container["name"].as_str().unwrap_or_default();
                if requirement
                    .container_name
                    .as_deref()
                    .is_some_and(|wanted| wanted != name)
                {
                    continue;
                }
                let listed = requirement.values.iter().any(|v| i64::from(*v) == code);
                let matched = match requirement.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                if matched {
                    let message = format!(
                        "Container {name} for pod {pod_id} failed with exit code {code} matching {} rule at index {i}",
                        rule.action
                    );
                    return Some((rule.action.clone(), message));
                }
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let wanted = pattern.status.as_str();
            let has = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == pattern.type_.as_str() && c["status"] == wanted);
            if has {
                let message = format!(
                    "Pod {pod_id} has condition {} matching {} rule at index {i}",
                    pattern.type_, rule.action
                );
                return Some((rule.action.clone(), message));
            }
        }
    }
    None
}

/// The index of the first `successPolicy` rule the completed indexes
/// meet: all of its `succeededIndexes` (or, with `succeededCount`, that
/// many of them; with `succeededCount` alone, that many of any).
fn matched_success_rule(spec: &JobSpec, completed: &BTreeSet<u32>) -> Option<usize> {
    let rules = &spec.success_policy.as_ref()?.rules;
    rules.iter().position(|rule| {
        let (within, needed) = match rule.succeeded_indexes.as_deref() {
            Some(text) => {
                let wanted = parse_indexes(text);
                let within = wanted.intersection(completed).count();
                (
                    within,
                    rule.succeeded_count
                        .map_or(wanted.len(), |c| c.max(0) as usize),
                )
            }
            None => match rule.succeeded_count {
                Some(count) => (completed.len(), count.max(0) as usize),
                None => return false,
            },
        };
        needed > 0 && within >= needed
    })
}

fn restart_count(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .chain(pod["status"]["initContainerStatuses"].as_array())
        .flatten()
        .filter_map(|c| c["restartCount"].as_u64())
        .sum()
}

fn creation(pod: &Value) -> &str {
    pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
}

/// Indexes as Kubernetes writes `completedIndexes` (`1,3-5,7`) read back;
/// what does not parse is skipped.
fn parse_indexes(text: &str) -> BTreeSet<u32> {
    let mut indexes = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
                    indexes.extend(first..=last);
                }
            }
            None => indexes.extend(part.parse::<u32>().ok()),
        }
    }
    indexes
}

/// Indexes in Kubernetes' compressed form: `1,3-5,7`.
fn format_indexes(indexes: &BTreeSet<u32>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &i in indexes {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => ranges.push((i, i)),
        }
    }
    ranges
        .iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            // Two in a row are written as a list, as Kubernetes does.
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A new pod of `job`, with the completion index `index` for an Indexed
/// Job.
pub(crate) fn new_pod(job: &Value, index: Option<u32>) -> Value {
    let template = &job["spec"]["template"];
    let mut metadata = if template["metadata"].is_object() {
        template["metadata"].clone()
    } else {
        json!({})
    };
    let job_name = name_of(job);
    let uid = job["metadata"]["uid"].clone();
    metadata["name"] = json!(match index {
        Some(i) => format!("{job_name}-{i}-{}", random_suffix()),
        None => format!("{job_name}-{}", random_suffix()),
    });
    metadata["namespace"] = json!(namespace_of(job));
    for field in ["labels", "annotations"] {
        if !metadata[field].is_object() {
            metadata[field] = json!({});
        }
    }
    let mut spec = template["spec"].clone();
    if let Some(index) = index {
        let index = index.to_string();
        metadata["labels"][COMPLETION_INDEX] = json!(index);
        metadata["annotations"][COMPLETION_INDEX] = json!(index);
        let env = json!({
            "name": "JOB_COMPLETION_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath":
                format!("metadata.annotations['{COMPLETION_INDEX}']")}},
        });
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_array_mut().into_iter().flatten() {
                if !container["env"].is_array() {
                    container["env"] = json!([]);
                }
                if let Some(vars) = container["env"].as_array_mut() {
                    vars.retain(|v| v["name"] != "JOB_COMPLETION_INDEX");
                    vars.push(env.clone());
                }
            }
        }
        if spec["hostname"].is_null() && spec.is_object() {
            spec["hostname"] = json!(format!("{job_name}-{index}"));
        }
    }
    metadata["ownerReferences"] = json!([{
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job_name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": "Pending"},
    })
}

/// The Job controller: carries out each Job's [`plan`] and wakes Jobs
/// whose deadline, backoff or TTL falls due.
#[derive(Debug)]
pub(crate) struct JobController {
    clock: Arc<dyn Clock>,
    backoff: PodFailureBackoff,
    /// When each Job (by store key) wants a look although nothing changed.
    wakeups: super::Wakeups,
    /// When the controller first saw each finished pod that reports no
    /// finish time, by Job (`jobs/NAMESPACE/NAME`) and pod uid.
    seen_finished: Mutex<HashMap<String, HashMap<String, SystemTime>>>,
}

impl JobController {
    /// A controller reading `clock`, replacing failed pods after `backoff`.
    pub(crate) fn new(clock: Arc<dyn Clock>, backoff: PodFailureBackoff) -> JobController {
        JobController {
            clock,
            backoff,
            wakeups: super::Wakeups::default(),
            seen_finished: Mutex::default(),
        }
    }

    /// Reconciles the Jobs `changes` touch (each changed Job, the Job
    /// controlling each changed pod), or every Job on a resync.
    pub(crate) async fn reconcile(
        &self,
        objects: &Objects,
        cache: &Cache,
        changes: &Changes,
    ) -> Result<Option<i64>> {
        let touched = super::touched_owners(cache, changes, "jobs", "pods", changes.everything);
        super::reconcile_each("jobs", touched, |job| async move {
            self.reconcile_job(objects, cache, &job)
                .await
                .inspect_err(|e| tracing::warn!(%job, error = %e, "cannot reconcile the job"))
        })
        .await
    }

    /// Reconciles one Job (`jobs/NAMESPACE/NAME`): pods controlled by a
    /// Job of that name that is gone (or was recreated) are deleted.
    async fn reconcile_job(
        &self,
        objects: &Objects,
        cache: &Cache,
        job_key: &str,
    ) -> Result<Option<i64>> {
        let (job, mine, mut written) = super::owner_and_pods(objects, cache, job_key).await;
        let store_key = format!("{ROOT}{job_key}");
        let Some(job) = job else {
            self.wake(&store_key, None);
            self.forget_finished(job_key, &[]);
            return Ok(written);
        };
        let now = self.clock.now();
        let finished_at = |pod: &Value| self.finished_at(job_key, pod, now);
        let mine: Vec<&Value> = mine.iter().map(|p| p.as_ref()).collect();
        let plan = plan(&job, &mine, now, self.backoff, &finished_at);
        self.forget_finished(job_key, &mine);
        self.wake(&store_key, plan.wake_at);
        written = latest(written, self.carry_out(objects, &job, plan).await?);
        Ok(written)
    }

    async fn carry_out(&self, objects: &Objects, job: &Value, plan: Plan) -> Result<Option<i64>> {
        let events = objects.events();
        let regarding = Regarding::of(job);
        let mut written = None;
        if plan.delete_job {
            return Ok(super::delete_object(objects, "jobs", job).await);
        }
        let pods = plan
            .create
            .iter()
            .map(|index| {
                let mut pod = new_pod(job, *index);
                if let Some(count) = index.and_then(|i| plan.index_failures.get(&i)) {
                    pod["metadata"]["annotations"][INDEX_FAILURE_COUNT] = json!(count.to_string());
                }
                pod
            })
            .collect();
        written = latest(
            written,
            super::create_pods(objects, job, pods, COMPONENT).await?,
        );
        written = latest(
            written,
            super::delete_pods(objects, job, &plan.delete, COMPONENT).await?,
        );
        written = latest(
            written,
            super::write_status(objects, "jobs", job, &plan.status).await?,
        );
        for (event_type, reason, message) in plan.events {
            events.record(regarding.clone(), event_type, reason, message, COMPONENT);
        }
        Ok(written)
    }

    /// When a finished pod of the Job `job_key` finished: the latest
    /// `finishedAt` its containers report, else when this controller first
    /// saw it finished.
    fn finished_at(&self, job_key: &str, pod: &Value, now: SystemTime) -> Option<SystemTime> {
        if !matches!(phase(pod), "Succeeded" | "Failed") {
            return None;
        }
        let reported = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["state"]["terminated"]["finishedAt"].as_str())
            .filter_map(parse_rfc3339)
            .max();
        if reported.is_some() {
            return reported;
        }
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let mut seen = self.seen_finished.lock().unwrap_or_else(|e| e.into_inner());
        let of_job = seen.entry(job_key.to_string()).or_default();
        Some(*of_job.entry(uid.to_string()).or_insert(now))
    }

    /// Keeps the remembered finish times of the Job's pods in `pods` only
    /// (none when the Job is gone).
    fn forget_finished(&self, job_key: &str, pods: &[&Value]) {
        let mut seen = self.seen_finished.lock().unwrap_or_else(|e| e.into_inner());
        let Some(of_job) = seen.get_mut(job_key) else {
            return;
        };
        let present: BTreeSet<&str> = pods
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str())
            .collect();
        of_job.retain(|uid, _| present.contains(uid.as_str()));
        if of_job.is_empty() {
            seen.remove(job_key);
        }
    }

    fn wake(&self, store_key: &str, at: Option<SystemTime>) {
        self.wakeups.set(store_key, at);
    }

    /// Puts the Jobs whose wake-up time has come into `feed`, checking
    /// every `tick`, until `shutdown`.
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
