//! The Events a kubelet records about a pod's containers (`Created`,
//! `Started`, `BackOff`, `Failed`, `OOMKilling`), told from what changed
//! between two of an agent's reports on the pod, so that `kubectl describe
//! pod` shows what a Kubernetes user expects.
//!
//! The agent reports states, not events: an Event is recorded when a
//! container's state moves (a new run started, a waiting reason appeared,
//! a run ended out of memory). The recorder folds repeats into one Event
//! with a count, so a crash loop shows `BackOff` with a growing count.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use c4m_api::agent::InstanceStatus;
use serde_json::Value;

use crate::events::{EventType, Events, Regarding};
use crate::objects::{name_of, namespace_of};

/// The component agents' Events are reported as, as Kubernetes' kubelet.
const KUBELET: &str = "kubelet";
/// Ids of reported Events remembered; the oldest are forgotten first.
const REMEMBERED: usize = 4096;

/// One Event about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerEvent {
    /// The container's name (the Event's `spec.containers{name}`).
    pub(crate) container: String,
    /// Where its spec is: `spec.containers`, `spec.initContainers` or
    /// `spec.ephemeralContainers`.
    pub(crate) list: &'static str,
    pub(crate) event_type: EventType,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// Records the Events of the move from `before` to `after` (the same pod,
/// as stored and as an agent's report leaves it).
pub(crate) fn record(events: &Events, before: &Value, after: &Value) {
    for event in container_events(before, after) {
        record_one(
            events,
            after,
            event.list,
            &event.container,
            event.event_type,
            event.reason,
            event.message,
        );
    }
}

fn record_one(
    events: &Events,
    pod: &Value,
    list: &str,
    container: &str,
    event_type: EventType,
    reason: &str,
    message: String,
) {
    let mut regarding = Regarding::of(pod);
    if regarding.api_version.is_empty() {
        regarding.api_version = "v1".into();
        regarding.kind = "Pod".into();
    }
    regarding.field_path = Some(format!("{list}{{{container}}}"));
    events.record(regarding, event_type, reason, message, KUBELET);
}

/// The Events agents report as such (a failed lifecycle hook, which no
/// state shows), each recorded once although reports repeat it: the ids
/// recorded, the oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct ReportedEvents {
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl ReportedEvents {
    /// Whether `key` was not seen before; it is remembered, and the oldest
    /// key forgotten beyond [`REMEMBERED`].
    fn first_time(&self, key: String) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *seen;
        if !set.insert(key.clone()) {
            return false;
        }
        order.push_back(key);
        if order.len() > REMEMBERED
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }

    /// Records the Events in `report` about `pod` not recorded before, all
    /// as warnings (the kubelet's hook failures are); returns how many.
    pub(crate) fn record(&self, events: &Events, pod: &Value, report: &InstanceStatus) -> usize {
        let uid = report.uid.as_str();
        let mut recorded = 0;
        for container in &report.containers {
            for event in &container.events {
                if !self.first_time(format!("{uid}/{}/{}", container.name, event.id)) {
                    continue;
                }
                let list = if container.init {
                    "spec.initContainers"
                } else {
                    "spec.containers"
                };
                record_one(
                    events,
                    pod,
                    list,
                    &container.name,
                    EventType::Warning,
                    &event.reason,
                    event.message.clone(),
                );
                recorded += 1;
            }
        }
        recorded
    }
}

/// What happened to the containers between `before` and `after`, in the
/// words the kubelet uses.
pub(crate) fn container_events(before: &Value, after: &Value) -> Vec<ContainerEvent> {
    let mut out = Vec::new();
    for (field, list) in [
        ("initContainerStatuses", "spec.initContainers"),
        ("containerStatuses", "spec.containers"),
        ("ephemeralContainerStatuses", "spec.ephemeralContainers"),
    ] {
        list_events(before, after, field, list, &mut out);
    }
    out
}

/// The Events of the containers in the status list `field` (their specs
/// in `list`).
fn list_events(
    before: &Value,
    after: &Value,
    field: &str,
    list: &'static str,
    out: &mut Vec<ContainerEvent>,
) {
    let empty = Vec::new();
    let statuses =
        |pod: &Value| -> Vec<Value> { pod["status"][field].as_array().unwrap_or(&empty).clone() };
    let old = statuses(before);
    for new in statuses(after) {
        let Some(name) = new["name"].as_str() else {
            continue;
        };
        let previous = old
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .cloned()
            .unwrap_or(Value::Null);
        let image = new["image"].as_str().unwrap_or_default();
        let mut push = |event_type, reason, message: String| {
            out.push(ContainerEvent {
                container: name.to_string(),
                list,
                event_type,
                reason,
                message,
            });
        };
        // Each run not seen before was created and started, also one that
        // began and ended between two reports (seen only as terminated).
        let runs = |status: &Value| -> Vec<Value> {
            [
                &status["state"]["running"]["startedAt"],
                &status["state"]["terminated"]["startedAt"],
                &status["lastState"]["terminated"]["startedAt"],
            ]
            .into_iter()
            .filter(|started| started.as_str().is_some_and(|s| !s.is_empty()))
            .cloned()
            .collect()
        };
        let seen = runs(&previous);
        let mut new_runs = runs(&new);
        new_runs.dedup();
        for _ in new_runs.iter().filter(|run| !seen.contains(run)) {
            push(
                EventType::Normal,
                "Created",
                format!("Created container: {name}"),
            );
            push(
                EventType::Normal,
                "Started",
                format!("Started container {name}"),
            );
        }
        let waiting = &new["state"]["waiting"];
        let reason = waiting["reason"].as_str().unwrap_or_default();
        let message = waiting["message"].as_str().unwrap_or_default();
        if !reason.is_empty() && *waiting != previous["state"]["waiting"] {
            match reason {
                "CrashLoopBackOff" => push(
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {name} in pod {}_{}({})",
                        name_of(after),
                        namespace_of(after),
                        after["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ),
                "ErrImagePull" => {
                    push(
                        EventType::Warning,
                        "Failed",
                        format!("Failed to pull image {image:?}: {message}"),
                    );
                    push(EventType::Warning, "Failed", "Error: ErrImagePull".into());
                }
                "ImagePullBackOff" => {
                    push(
                        EventType::Normal,
                        "BackOff",
                        format!("Back-off pulling image {image:?}"),
                    );
                    push(
                        EventType::Warning,
                        "Failed",
                        "Error: ImagePullBackOff".into(),
                    );
                }
                "ErrImageNeverPull" => {
                    push(EventType::Warning, "ErrImageNeverPull", message.to_string());
                    push(
                        EventType::Warning,
                        "Failed",
                        "Error: ErrImageNeverPull".into(),
                    );
                }
                // A liveness or startup probe failed: the agent killed the
                // container ("Startup probe failed: ...").
                "Unhealthy" => {
                    push(EventType::Warning, "Unhealthy", message.to_string());
                    let probe = message.split(' ').next().unwrap_or_default();
                    push(
                        EventType::Normal,
                        "Killing",
                        format!(
                            "Container {name} failed {} probe, will be restarted",
                            probe.to_lowercase()
                        ),
                    );
                }
                // Its postStart hook failed: the agent killed it (the
                // hook's own Event, FailedPostStartHook, it reports apart).
                "PostStartHookError" => push(
                    EventType::Normal,
                    "Killing",
                    "FailedPostStartHook".to_string(),
                ),
                "CreateContainerError" | "CreateContainerConfigError" => {
                    push(EventType::Warning, "Failed", format!("Error: {message}"))
                }
                _ => {}
            }
        }
        let ended_out_of_memory = |status: &Value| {
            [
                &status["state"]["terminated"],
                &status["lastState"]["terminated"],
            ]
            .iter()
            .any(|t| t["reason"] == "OOMKilled")
        };
        if ended_out_of_memory(&new)
            && (!ended_out_of_memory(&previous) || new["restartCount"] != previous["restartCount"])
        {
            push(
                EventType::Warning,
                "OOMKilling",
                format!("Container {name} was killed: it ran out of memory"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(container: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "status": {"containerStatuses": [container]},
        })
    }

    fn reasons(events: &[ContainerEvent]) -> Vec<(&'static str, String)> {
        events
            .iter()
            .map(|e| (e.reason, e.message.clone()))
            .collect()
    }

    /// A run that began and ended between two reports was still created
    /// and started.
    #[test]
    fn a_run_seen_only_once_ended_was_started() {
        let pending = pod(
            json!({"name": "main", "image": "bb:1", "state": {"waiting": {"reason": "ContainerCreating"}}}),
        );
        let crashed = pod(json!({"name": "main", "image": "bb:1",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "startedAt": "2026-01-01T00:00:00Z"}}}));
        let seen: Vec<&str> = container_events(&pending, &crashed)
            .iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(seen, ["Created", "Started", "BackOff"]);
        assert!(
            container_events(&crashed, &crashed).is_empty(),
            "the same run again is no new start"
        );
    }

    /// Each Event's container, where its spec is, and its reason.
    fn placed(events: &[ContainerEvent]) -> Vec<(&str, &str, &str)> {
        events
            .iter()
            .map(|e| (e.list, e.container.as_str(), e.reason))
            .collect()
    }

    /// Init containers' Events name them under `spec.initContainers`.
    #[test]
    fn init_containers_have_their_own_field_path() {
        let pending = json!({"metadata": {"name": "web"}, "status": {
            "initContainerStatuses": [{"name": "setup", "state": {"waiting": {"reason": "PodInitializing"}}}],
        }});
        let running = json!({"metadata": {"name": "web"}, "status": {
            "initContainerStatuses": [{"name": "setup", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}],
        }});
        let events = container_events(&pending, &running);
        assert_eq!(
            placed(&events),
            [
                ("spec.initContainers", "setup", "Created"),
                ("spec.initContainers", "setup", "Started"),
            ]
        );
    }

    /// So do ephemeral containers' (`kubectl debug`), under
    /// `spec.ephemeralContainers`.
    #[test]
    fn ephemeral_containers_have_their_own_field_path() {
        let before = json!({"metadata": {"name": "web"}, "status": {
            "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
        }});
        let mut after = before.clone();
        after["status"]["ephemeralContainerStatuses"] = json!([{"name": "debugger-x",
            "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]);
        let events = container_events(&before, &after);
        assert_eq!(
            placed(&events),
            [
                ("spec.ephemeralContainers", "debugger-x", "Created"),
                ("spec.ephemeralContainers", "debugger-x", "Started"),
            ]
        );
    }

    #[test]
    fn a_new_run_is_created_and_started() {
        let pending =
            pod(json!({"name": "main", "image": "bb:1", "state": {"waiting": {"reason": ""}}}));
        let running = pod(
            json!({"name": "main", "image": "bb:1", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}),
        );
        let events = container_events(&pending, &running);
        assert_eq!(
            reasons(&events),
            [
                ("Created", "Created container: main".to_string()),
                ("Started", "Started container main".to_string())
            ]
        );
        assert!(events.iter().all(|e| e.container == "main"));
        // The same run reported again is nothing new.
        assert!(container_events(&running, &running).is_empty());
    }

    #[test]
    fn a_crash_loop_backs_off_and_an_unpullable_image_fails() {
        let running = pod(
            json!({"name": "main", "image": "bb:1", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}),
        );
        let looping = pod(
            json!({"name": "main", "image": "bb:1", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}),
        );
        let events = container_events(&running, &looping);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::Warning);
        assert_eq!(
            events[0].message,
            "Back-off restarting failed container main in pod web_shop(u1)"
        );

        let image = "127.0.0.1:5000/nosuch:1";
        let pulling = pod(
            json!({"name": "main", "image": image, "state": {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}}),
        );
        let backing_off = pod(
            json!({"name": "main", "image": image, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}),
        );
        let failed = container_events(&Value::Null, &pulling);
        assert_eq!(
            reasons(&failed),
            [
                (
                    "Failed",
                    format!("Failed to pull image {image:?}: manifest unknown")
                ),
                ("Failed", "Error: ErrImagePull".to_string())
            ]
        );
        let backoff = container_events(&pulling, &backing_off);
        assert_eq!(
            reasons(&backoff),
            [
                ("BackOff", format!("Back-off pulling image {image:?}")),
                ("Failed", "Error: ImagePullBackOff".to_string())
            ]
        );
        assert_eq!(backoff[0].event_type, EventType::Normal);
    }

    /// The Events of a running container `main` that the agent killed,
    /// leaving it waiting for `reason` with `message`.
    fn killed(reason: &str, message: &str) -> Vec<ContainerEvent> {
        let running = pod(
            json!({"name": "main", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}),
        );
        let killed = pod(
            json!({"name": "main", "state": {"waiting": {"reason": reason, "message": message}}}),
        );
        container_events(&running, &killed)
    }

    /// A container killed by its failed startup (or liveness) probe.
    #[test]
    fn a_failed_probe_is_unhealthy_and_kills() {
        let events = killed("Unhealthy", "Startup probe failed: exit 1");
        assert_eq!(
            reasons(&events),
            [
                ("Unhealthy", "Startup probe failed: exit 1".to_string()),
                (
                    "Killing",
                    "Container main failed startup probe, will be restarted".to_string()
                )
            ]
        );
        assert_eq!(events[0].event_type, EventType::Warning);
    }

    /// A failed hook an agent reports is recorded once, however often the
    /// report is sent again; another occurrence is recorded again.
    #[test]
    fn reported_events_are_recorded_once_per_id() {
        use c4m_api::agent::{ContainerEvent as Reported, ContainerReport};
        let report = |ids: &[&str]| InstanceStatus {
            uid: "u1".into(),
            containers: vec![ContainerReport {
                name: "main".into(),
                events: ids
                    .iter()
                    .map(|id| Reported {
                        id: id.to_string(),
                        reason: "FailedPreStopHook".into(),
                        message: "Exec lifecycle hook failed".into(),
                    })
                    .collect(),
                ..ContainerReport::default()
            }],
            ..InstanceStatus::default()
        };
        let seen = ReportedEvents::default();
        let events = Events::disabled();
        let pod = pod(json!({"name": "main"}));
        assert_eq!(seen.record(&events, &pod, &report(&["a"])), 1);
        assert_eq!(seen.record(&events, &pod, &report(&["a"])), 0);
        assert_eq!(seen.record(&events, &pod, &report(&["a", "b"])), 1);
    }

    /// A container killed because its postStart hook failed: Killing, as
    /// the kubelet words it.
    #[test]
    fn a_failed_post_start_hook_kills() {
        let events = killed("PostStartHookError", "Exec lifecycle hook ([false]) ...");
        assert_eq!(
            reasons(&events),
            [("Killing", "FailedPostStartHook".to_string())]
        );
    }

    #[test]
    fn a_run_ended_out_of_memory_is_told_once() {
        let running = pod(
            json!({"name": "main", "restartCount": 0, "state": {"running": {"startedAt": "t1"}}}),
        );
        let restarted = pod(
            json!({"name": "main", "restartCount": 1, "state": {"running": {"startedAt": "t2"}}, "lastState": {"terminated": {"reason": "OOMKilled"}}}),
        );
        let events = container_events(&running, &restarted);
        assert!(
            events.iter().any(|e| e.reason == "OOMKilling"),
            "{events:?}"
        );
        assert!(
            !container_events(&restarted, &restarted)
                .iter()
                .any(|e| e.reason == "OOMKilling")
        );
    }
}
