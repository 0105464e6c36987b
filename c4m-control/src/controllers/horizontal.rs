//! The HorizontalPodAutoscaler controller (`autoscaling/v2`), with
//! Kubernetes' algorithm (kube-controller-manager's podautoscaler):
//!
//! - Every sync period (15 s by default) each autoscaler reads its target's
//!   `scale` (a Deployment or Microservice) and the resource metrics of the
//!   target's pods (`metrics.rs`, what `metrics.k8s.io` serves).
//! - Each metric proposes `ceil(ready pods * usage / target)`, the usage
//!   summed over pods against their summed requests. Within the tolerance
//!   (0.1) of the target it proposes no change. Pods being deleted or
//!   Failed are ignored; Pending pods, and for CPU pods not yet ready or
//!   still initialising, count as using nothing when scaling up and are
//!   left out otherwise; pods with no metrics count as using nothing when
//!   scaling up and their full request (or the target, if higher) when
//!   scaling down. The largest proposal wins.
//! - Without `behavior`: the highest recommendation of the last 5 minutes
//!   (`--horizontal-pod-autoscaler-downscale-stabilization`), and at most
//!   `max(2 * current, 4)` replicas. With `behavior` (defaulted as the API
//!   server defaults it): each direction's stabilization window and its
//!   Pods/Percent policies per period, chosen by `selectPolicy`.
//! - Then min/maxReplicas, the `scale` written, a SuccessfulRescale Event,
//!   and the status: current/desired replicas, currentMetrics,
//!   lastScaleTime, and the conditions AbleToScale, ScalingActive and
//!   ScalingLimited with Kubernetes' reasons.
//!
//! The arithmetic is pure (`proposal`, `Normalizer`), tested against
//! Kubernetes' cases with an injected clock (`tests.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::clock::Clock;
use crate::Result;
use crate::cache::{Cache, Changes, ROOT};
use crate::events::{EventType, Regarding};
use crate::metrics::Metrics;
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{labels, phase};
use crate::selector::Selector;

/// Who records the controller's Events.
const COMPONENT: &str = "horizontal-pod-autoscaler";

/// How the controller behaves; Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AutoscalerConfig {
    /// How often each autoscaler is reconciled
    /// (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// The scale-down stabilization window when `behavior` sets none
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min).
    pub downscale_stabilization: Duration,
    /// The ratio of usage to target within which nothing changes (0.1).
    pub tolerance: f64,
    /// How long after a pod starts its CPU samples may be from start-up
    /// (`--horizontal-pod-autoscaler-cpu-initialization-period`, 5 min).
    pub cpu_initialization_period: Duration,
    /// How long after a pod starts a not-ready one counts as never ready
    /// yet (`--horizontal-pod-autoscaler-initial-readiness-delay`, 30 s).
    pub initial_readiness_delay: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// Kubernetes' defaults for a new `autoscaling/v2` autoscaler: one
/// replica at least, 80% CPU when no metric is named, and each direction
/// of a `behavior` filled in (the scale-down window is left to the
/// controller's default, as Kubernetes leaves it).
pub(crate) fn default_new_autoscaler(autoscaler: &mut Value) {
    let Some(spec) = autoscaler.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("minReplicas").or_insert(json!(1));
    let no_metrics = spec
        .get("metrics")
        .is_none_or(|m| m.as_array().is_none_or(Vec::is_empty));
    if no_metrics {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    for (direction, up) in [("scaleUp", true), ("scaleDown", false)] {
        let rules = behavior.entry(direction).or_insert(json!({}));
        let Some(rules) = rules.as_object_mut() else {
            continue;
        };
        rules.entry("selectPolicy").or_insert(json!("Max"));
        if up {
            rules
                .entry("stabilizationWindowSeconds")
                .or_insert(json!(0));
            rules.entry("policies").or_insert(json!([
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ]));
        } else {
            rules.entry("policies").or_insert(json!([
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ]));
        }
    }
}

// ---------------------------------------------------------------------------
// The replica calculator
// ---------------------------------------------------------------------------

/// One pod's usage of a resource, in milli-units (millicores, or bytes
/// times 1000), as Kubernetes' metrics client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PodMetric {
    pub value: i64,
    pub timestamp: SystemTime,
    pub window: Duration,
}

/// Usage by pod name.
pub(crate) type PodMetrics = BTreeMap<String, PodMetric>;

/// What one metric proposes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Proposal {
    pub replicas: i32,
    /// Usage as a percentage of the requests (Utilization targets).
    pub utilization: Option<i32>,
    /// The average usage per pod, in milli-units.
    pub average: i64,
}

/// A metric's target: a percentage of the requests, or an average value
/// per pod in milli-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Utilization(i32),
    AverageValue(i64),
}

/// The pods of a target, sorted as Kubernetes' `groupPods` sorts them.
#[derive(Debug, Default, PartialEq)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn time_of(value: &Value) -> Option<SystemTime> {
    value.as_str().and_then(c4m_core::parse_rfc3339)
}

fn group_pods(
    pods: &[&Value],
    metrics: &PodMetrics,
    resource: &str,
    config: &AutoscalerConfig,
    now: SystemTime,
) -> Groups {
    let mut groups = Groups::default();
    for pod in pods {
        let name = name_of(pod).to_string();
        if !pod["metadata"]["deletionTimestamp"].is_null() || phase(pod) == "Failed" {
            groups.ignored.insert(name);
            continue;
        }
        if phase(pod) == "Pending" {
            groups.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            groups.missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let condition = ready_condition(pod);
            let start = time_of(&pod["status"]["startTime"]);
            let unready = match (condition, start) {
                (Some(condition), Some(start)) => {
                    let ready = condition["status"] == "True";
                    let transition =
                        time_of(&condition["lastTransitionTime"]).unwrap_or(SystemTime::UNIX_EPOCH);
                    if start + config.cpu_initialization_period > now {
                        // Still initialising: unready, or no full window
                        // of samples since it turned ready.
                        !ready || metric.timestamp < transition + metric.window
                    } else {
                        // Unready and never ready since it started.
                        !ready && start + config.initial_readiness_delay > transition
                    }
                }
                _ => true,
            };
            if unready {
                groups.unready.insert(name);
                continue;
            }
        }
        groups.ready += 1;
    }
    groups
}

/// A quantity in milli-units (`MilliValue`, rounded up), for `resource`.
fn milli_value(resource: &str, quantity: &str) -> Option<i64> {
    let milli = match resource {
        "cpu" => c4m_core::parse_cpu_millis(quantity).ok()?,
        _ => c4m_core::parse_memory_bytes(quantity)
            .ok()?
            .checked_mul(1000)?,
    };
    i64::try_from(milli).ok()
}

/// Each pod's request of `resource` (summed over its containers and
/// sidecars, or `container`'s alone), in milli-units.
fn pod_requests(
    pods: &[&Value],
    container: Option<&str>,
    resource: &str,
) -> std::result::Result<BTreeMap<String, i64>, String> {
    let mut requests = BTreeMap::new();
    for pod in pods {
        let spec = &pod["spec"];
        let sidecars = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["restartPolicy"] == "Always");
        let containers = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(sidecars);
        let mut request = 0i64;
        let mut found = false;
        for c in containers {
            let name = c["name"].as_str().unwrap_or_default();
            if container.is_some_and(|wanted| wanted != name) {
                continue;
            }
            found = true;
            let quantity = c["resources"]["requests"][resource]
                .as_str()
                .ok_or_else(|| {
                    format!(
                        "missing request for {resource} in container {name} of Pod {}",
                        name_of(pod)
                    )
                })?;
            request += milli_value(resource, quantity).ok_or_else(|| {
                format!(
                    "invalid request {quantity:?} for {resource} in container {name} of Pod {}",
                    name_of(pod)
                )
            })?;
        }
        if let Some(wanted) = container
            && !found
        {
            return Err(format!(
                "container {wanted} not found in Pod {}",
                name_of(pod)
            ));
        }
        requests.insert(name_of(pod).to_string(), request);
    }
    Ok(requests)
}

/// (usage ratio, utilization %, average usage) of `metrics` against their
/// pods' `requests`, as Kubernetes computes it (the percentage truncated).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> std::result::Result<(f64, i32, i64), String> {
    let (mut usage, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (pod, metric) in metrics {
        if let Some(request) = requests.get(pod) {
            usage += metric.value;
            requested += request;
            entries += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (usage * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        usage / entries,
    ))
}

/// (usage ratio, average usage) of `metrics` against an average target.
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target as f64, average)
}

fn within(tolerance: f64, ratio: f64) -> bool {
    (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance)
}

/// The replicas one resource metric proposes for `current` replicas, from
/// the pods matching the target's selector and their metrics (Kubernetes'
/// `GetResourceReplicas` and `GetRawResourceReplicas`).
pub(crate) fn proposal(
    current: i32,
    metric: &MetricSpec,
    pods: &[&Value],
    mut metrics: PodMetrics,
    config: &AutoscalerConfig,
    now: SystemTime,
) -> std::result::Result<Proposal, String> {
    let (target, resource, container) = (
        metric.target,
        metric.resource.as_str(),
        metric.container.as_deref(),
    );
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group_pods(pods, &metrics, resource, config, now);
    for name in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(name);
    }
    // Metrics of pods that no longer match are not the target's.
    metrics.retain(|name, _| pods.iter().any(|p| name_of(p) == name));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let tolerance = config.tolerance;
    let (ratio, utilization, average, requests) = match target {
        Target::Utilization(percent) => {
            let requests = pod_requests(pods, container, resource)?;
            let (ratio, utilization, average) = utilization_ratio(&metrics, &requests, percent)?;
            (ratio, Some(utilization), average, Some(requests))
        }
        Target::AverageValue(value) => {
            let (ratio, average) = usage_ratio(&metrics, value);
            (ratio, None, average, None)
        }
    };
    let keep = Proposal {
        replicas: current,
        utilization,
        average,
    };
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within(tolerance, ratio) {
            return Ok(keep);
        }
        return Ok(Proposal {
            replicas: (ratio * groups.ready as f64).ceil() as i32,
            ..keep
        });
    }
    let zero = |metric: &PodMetric| PodMetric {
        value: 0,
        ..*metric
    };
    let template = *metrics.values().next().expect("metrics is not empty");
    if !groups.missing.is_empty() {
        for name in &groups.missing {
            let value = if ratio < 1.0 {
                // Scaling down: a pod without metrics uses its whole request
                // (or the target, if that is higher).
                match (target, &requests) {
                    (Target::Utilization(percent), Some(requests)) => {
                        requests.get(name).copied().unwrap_or(0) * i64::from(percent.max(100)) / 100
                    }
                    (Target::AverageValue(value), _) => value,
                    _ => 0,
                }
            } else if ratio > 1.0 {
                0
            } else {
                continue;
            };
            metrics.insert(name.clone(), PodMetric { value, ..template });
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), zero(&template));
        }
    }
    let new_ratio = match (target, &requests) {
        (Target::Utilization(percent), Some(requests)) => {
            utilization_ratio(&metrics, requests, percent)?.0
        }
        (Target::AverageValue(value), _) => usage_ratio(&metrics, value).0,
        _ => ratio,
    };
    if within(tolerance, new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep);
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(Proposal { replicas, ..keep })
}

// ---------------------------------------------------------------------------
// Behavior: stabilization and rate limits
// ---------------------------------------------------------------------------

/// How a scaling policy measures change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyType {
    Pods,
    Percent,
}

/// One `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub kind: PolicyType,
    pub value: i32,
    pub period_seconds: i32,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Select {
    Max,
    Min,
    Disabled,
}

/// One direction's `HPAScalingRules`, defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    pub stabilization_window_seconds: i32,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// `spec.behavior`, defaulted as the API server (policies, selectPolicy,
/// the scale-up window) and the controller (the scale-down window) do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

fn rules(value: &Value, up: bool, default_window: i32) -> Rules {
    let policies: Vec<Policy> = value["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let kind = match p["type"].as_str()? {
                "Pods" => PolicyType::Pods,
                "Percent" => PolicyType::Percent,
                _ => return None,
            };
            Some(Policy {
                kind,
                value: i32::try_from(p["value"].as_i64()?).ok()?,
                period_seconds: i32::try_from(p["periodSeconds"].as_i64()?).ok()?,
            })
        })
        .collect();
    let policies = match (value["policies"].is_array(), up) {
        (true, _) => policies,
        // Doubling, or four pods, per 15 s up; everything per 15 s down.
        (false, true) => vec![
            Policy {
                kind: PolicyType::Pods,
                value: 4,
                period_seconds: 15,
            },
            Policy {
                kind: PolicyType::Percent,
                value: 100,
                period_seconds: 15,
            },
        ],
        (false, false) => vec![Policy {
            kind: PolicyType::Percent,
            value: 100,
            period_seconds: 15,
        }],
    };
    Rules {
        stabilization_window_seconds: value["stabilizationWindowSeconds"]
            .as_i64()
            .and_then(|w| i32::try_from(w).ok())
            .unwrap_or(if up { 0 } else { default_window }),
        select: match value["selectPolicy"].as_str() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        },
        policies,
    }
}

impl Behavior {
    /// The behavior of `spec.behavior`, or None when it is not set.
    pub(crate) fn of(spec: &Value, default_down_window: Duration) -> Option<Behavior> {
        let behavior = &spec["behavior"];
        if !behavior.is_object() {
            return None;
        }
        let default_window = i32::try_from(default_down_window.as_secs()).unwrap_or(i32::MAX);
        Some(Behavior {
            scale_up: rules(&behavior["scaleUp"], true, default_window),
            scale_down: rules(&behavior["scaleDown"], false, default_window),
        })
    }
}

/// A recommendation, as recorded for stabilization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recommendation {
    replicas: i32,
    at: SystemTime,
}

/// A scale change, as recorded for the rate policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    change: i32,
    at: SystemTime,
    outdated: bool,
}

/// What the controller remembers of one autoscaler between syncs.
#[derive(Debug, Default, Clone)]
pub(crate) struct History {
    recommendations: Vec<Recommendation>,
    scale_up: Vec<ScaleEvent>,
    scale_down: Vec<ScaleEvent>,
}

/// A condition to set: (type, status, reason, message).
pub(crate) type ConditionUpdate = (&'static str, bool, &'static str, String);

/// The outcome of normalizing a proposal: the replicas to scale to, and
/// the AbleToScale and ScalingLimited conditions that explain it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Normalized {
    pub replicas: i32,
    pub conditions: Vec<ConditionUpdate>,
}

fn seconds(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

impl History {
    /// The first recommendation is the replicas found at the first sync.
    pub(crate) fn record_initial(&mut self, current: i32, now: SystemTime) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// Keeps `replicas` as the newest recommendation, in the place of one
    /// older than `obsolete` if there is one.
    fn remember(&mut self, replicas: i32, now: SystemTime, obsolete: impl Fn(SystemTime) -> bool) {
        let new = Recommendation { replicas, at: now };
        match self.recommendations.iter().rposition(|r| obsolete(r.at)) {
            Some(i) => self.recommendations[i] = new,
            None => self.recommendations.push(new),
        }
    }

    /// Without behavior: the highest recommendation within the downscale
    /// window, then at most `max(2 * current, 4)` and within min/max.
    pub(crate) fn normalize(
        &mut self,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        window: Duration,
        now: SystemTime,
    ) -> Normalized {
        let cutoff = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let stabilized = self
            .recommendations
            .iter()
            .filter(|r| r.at >= cutoff)
            .map(|r| r.replicas)
            .fold(desired, i32::max);
        self.remember(desired, now, |at| at < cutoff);
        let conditions = vec![if stabilized != desired {
            ("AbleToScale", true, "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation".to_string())
        } else {
            (
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".to_string(),
            )
        }];
        let scale_up_limit = (2.0 * f64::from(current)).max(4.0) as i32;
        let (maximum, limit_reason, limit_message) = upper_bound(scale_up_limit, max);
        let limited = if stabilized < min {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        } else if stabilized > maximum {
            (maximum, limit_reason, limit_message)
        } else {
            within_range(stabilized)
        };
        limited_to(conditions, stabilized, limited)
    }

    /// With behavior: stabilized within each direction's window, then held
    /// to the policies' rate and to min/max.
    pub(crate) fn normalize_with_behavior(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: SystemTime,
    ) -> Normalized {
        let up_cutoff = now
            .checked_sub(seconds(behavior.scale_up.stabilization_window_seconds))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let down_cutoff = now
            .checked_sub(seconds(behavior.scale_down.stabilization_window_seconds))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (mut up, mut down) = (desired, desired);
        for r in &self.recommendations {
            if r.at > up_cutoff {
                up = up.min(r.replicas);
            }
            if r.at > down_cutoff {
                down = down.max(r.replicas);
            }
        }
        let stabilized = current.max(up).min(down);
        self.remember(desired, now, |at| at < up_cutoff && at < down_cutoff);
        let conditions = vec![if stabilized == desired {
            (
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".to_string(),
            )
        } else if desired >= current {
            ("AbleToScale", true, "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation".to_string())
        } else {
            ("AbleToScale", true, "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation".to_string())
        }];
        let limited = if stabilized > current {
            let limit =
                scale_up_limit(current, &self.scale_up, &behavior.scale_up, now).max(current);
            let (maximum, reason, message) = upper_bound(limit, max);
            if stabilized > maximum {
                (maximum, reason, message)
            } else {
                within_range(stabilized)
            }
        } else if stabilized < current {
            let limit =
                scale_down_limit(current, &self.scale_down, &behavior.scale_down, now).min(current);
            let (minimum, reason, message) = lower_bound(limit, min);
            if stabilized < minimum {
                (minimum, reason, message)
            } else {
                within_range(stabilized)
            }
        } else {
            within_range(stabilized)
        };
        limited_to(conditions, stabilized, limited)
    }

    /// Records a scale from `from` to `to` for the rate policies (only
    /// with behavior, as Kubernetes does), reusing an outdated slot.
    pub(crate) fn record_scale(
        &mut self,
        behavior: Option<&Behavior>,
        from: i32,
        to: i32,
        now: SystemTime,
    ) {
        let Some(behavior) = behavior else {
            return;
        };
        let (events, rules, change) = if to > from {
            (&mut self.scale_up, &behavior.scale_up, to - from)
        } else {
            (&mut self.scale_down, &behavior.scale_down, from - to)
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0);
        let cutoff = now
            .checked_sub(seconds(longest))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for event in events.iter_mut() {
            if event.at < cutoff {
                event.outdated = true;
            }
        }
        let new = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match events.iter().rposition(|e| e.outdated) {
            Some(i) => events[i] = new,
            None => events.push(new),
        }
    }
}

/// The replicas changed within the last `period_seconds`.
fn changed_within(events: &[ScaleEvent], period_seconds: i32, now: SystemTime) -> i32 {
    let cutoff = now
        .checked_sub(seconds(period_seconds))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

fn scale_up_limit(current: i32, events: &[ScaleEvent], rules: &Rules, now: SystemTime) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select {
        Select::Disabled => return current,
        Select::Min => i32::min,
        Select::Max => i32::max,
    };
    let mut result = match rules.select {
        Select::Min => i32::MAX,
        _ => i32::MIN,
    };
    for policy in &rules.policies {
        let start = current - changed_within(events, policy.period_seconds, now);
        let proposed = match policy.kind {
            PolicyType::Pods => start + policy.value,
            PolicyType::Percent => {
                (f64::from(start) * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i32
            }
        };
        result = pick(result, proposed);
    }
    result
}

fn scale_down_limit(current: i32, events: &[ScaleEvent], rules: &Rules, now: SystemTime) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select {
        Select::Disabled => return current,
        Select::Min => i32::max,
        Select::Max => i32::min,
    };
    let mut result = match rules.select {
        Select::Min => i32::MIN,
        _ => i32::MAX,
    };
    for policy in &rules.policies {
        let start = current + changed_within(events, policy.period_seconds, now);
        let proposed = match policy.kind {
            PolicyType::Pods => start - policy.value,
            PolicyType::Percent => {
                (f64::from(start) * (1.0 - f64::from(policy.value) / 100.0)) as i32
            }
        };
        result = pick(result, proposed);
    }
    result
}

// ---------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------

/// Sets the condition `kind` in `conditions`: its time changes only when
/// its status does.
fn set_condition(conditions: &mut Vec<Value>, update: &ConditionUpdate, now: &str) {
    let (kind, status, reason, message) = update;
    let status = if *status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c["type"] == *kind) {
        Some(existing) => {
            if existing["status"] != status {
                existing["lastTransitionTime"] = json!(now);
            }
            existing["status"] = json!(status);
            existing["reason"] = json!(reason);
            existing["message"] = json!(message);
        }
        None => conditions.push(json!({"type": kind, "status": status,
            "lastTransitionTime": now, "reason": reason, "message": message})),
    }
}

/// One metric of `spec.metrics`, as the controller reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricSpec {
    /// `Resource` or `ContainerResource`.
    pub source: &'static str,
    pub resource: String,
    pub container: Option<String>,
    pub target: Target,
}

fn metric_specs(spec: &Value) -> std::result::Result<Vec<MetricSpec>, String> {
    let Some(metrics) = spec["metrics"].as_array() else {
        // The API server's default: 80% CPU.
        return Ok(vec![MetricSpec {
            source: "Resource",
            resource: "cpu".into(),
            container: None,
            target: Target::Utilization(80),
        }]);
    };
    metrics
        .iter()
        .map(|metric| {
            let (source, body) = match metric["type"].as_str() {
                Some("Resource") => ("Resource", &metric["resource"]),
                Some("ContainerResource") => ("ContainerResource", &metric["containerResource"]),
                other => return Err(format!("unknown metric source type {:?}", other.unwrap_or(""))),
            };
            let resource = body["name"].as_str().unwrap_or("cpu").to_string();
            let target = &body["target"];
            let target = match (target["type"].as_str(), target["averageUtilization"].as_i64()) {
                (Some("Utilization"), Some(percent)) => {
                    Target::Utilization(i32::try_from(percent).unwrap_or(i32::MAX))
                }
                _ => {
                    let value = target["averageValue"].as_str().and_then(|q| milli_value(&resource, q));
                    match value {
                        Some(value) if value > 0 => Target::AverageValue(value),
                        _ => return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into()),
                    }
                }
            };
            Ok(MetricSpec {
                source,
                resource,
                container: body["container"].as_str().map(str::to_string),
                target,
            })
        })
        .collect()
}

/// A metric's `currentMetrics` entry.
fn metric_status(metric: &MetricSpec, proposal: &Proposal) -> Value {
    let mut current = json!({"averageValue": milli_quantity(proposal.average)});
    if let Some(utilization) = proposal.utilization {
        current["averageUtilization"] = json!(utilization);
    }
    match metric.source {
        "ContainerResource" => json!({"type": "ContainerResource", "containerResource": {
            "name": metric.resource, "container": metric.container, "current": current}}),
        _ => json!({"type": "Resource", "resource": {"name": metric.resource, "current": current}}),
    }
}

/// A milli-value as Kubernetes prints a DecimalSI quantity made with
/// `NewMilliQuantity`: `250m`, `1`, `1500m`, `2k`, `67108864`.
fn milli_quantity(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut value = milli / 1000;
    let mut suffix = "";
    for next in ["k", "M", "G", "T", "P", "E"] {
        if value == 0 || value % 1000 != 0 {
            break;
        }
        value /= 1000;
        suffix = next;
    }
    format!("{value}{suffix}")
}

/// The usage of `resource` of each pod with a sample, in milli-units.
fn pod_metrics(
    metrics: &Metrics,
    pods: &[&Value],
    resource: &str,
    container: Option<&str>,
    now: SystemTime,
) -> PodMetrics {
    pods.iter()
        .filter_map(|pod| {
            let sample = metrics.pod(pod, now)?;
            let containers = sample.per_container(pod);
            let mut value = 0i64;
            let mut found = false;
            for c in containers
                .iter()
                .filter(|c| container.is_none_or(|w| w == c.name))
            {
                found = true;
                value += match resource {
                    // Nanocores as MilliValue reads them: rounded up.
                    "cpu" => (c.cpu_nanocores + 999_999) / 1_000_000,
                    // What metrics.k8s.io shows (whole KiB), in milli-bytes.
                    _ => c.memory_bytes / 1024 * 1024 * 1000,
                };
            }
            found.then(|| {
                (
                    name_of(pod).to_string(),
                    PodMetric {
                        value,
                        timestamp: sample.timestamp,
                        window: sample.window,
                    },
                )
            })
        })
        .collect()
}

/// The HorizontalPodAutoscaler controller: what it remembers between syncs.
pub(crate) struct AutoscalerController {
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: AutoscalerConfig,
    histories: Mutex<HashMap<String, History>>,
}

/// What one reconcile of an autoscaler decided.
struct Outcome {
    status: Value,
    /// The target and the replicas to scale it to.
    rescale: Option<(i32, String)>,
    /// Warning Events: (reason, message).
    warnings: Vec<(&'static str, String)>,
}

impl AutoscalerController {
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: AutoscalerConfig,
    ) -> Self {
        AutoscalerController {
            clock,
            metrics,
            config,
            histories: Mutex::default(),
        }
    }

    fn histories(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.histories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reconciles every autoscaler on a resync (every sync period), and on
    /// a change only those not synced yet (new ones): like Kubernetes'
    /// queue, an autoscaler is looked at once per period.
    pub(crate) async fn reconcile(
        &self,
        objects: &Objects,
        cache: &Cache,
        changes: &Changes,
    ) -> Result<Option<i64>> {
        let autoscalers = cache.list(kind("horizontalpodautoscalers"), None);
        let keys: BTreeSet<String> = autoscalers.iter().map(|a| key(a)).collect();
        let changed: BTreeSet<&str> = changes
            .changed
            .keys()
            .filter_map(|k| {
                k.strip_prefix(ROOT)?
                    .strip_prefix("horizontalpodautoscalers/")
            })
            .collect();
        let due: Vec<Arc<Value>> = {
            let mut histories = self.histories();
            histories.retain(|k, _| keys.contains(k));
            autoscalers
                .into_iter()
                .filter(|a| {
                    let key = key(a);
                    changes.everything
                        || (!histories.contains_key(&key) && changed.contains(key.as_str()))
                })
                .collect()
        };
        if changes.everything {
            self.metrics.forget_gone(cache, self.clock.now());
        }
        super::reconcile_each("horizontalpodautoscalers", due, |autoscaler| async move {
            self.reconcile_one(objects, cache, &autoscaler)
                .await
                .inspect_err(|e| {
                    tracing::warn!(autoscaler = %key(&autoscaler), error = %e, "cannot reconcile");
                })
        })
        .await
    }

    async fn reconcile_one(
        &self,
        objects: &Objects,
        cache: &Cache,
        autoscaler: &Value,
    ) -> Result<Option<i64>> {
        let now = self.clock.now();
        let outcome = self.decide(cache, autoscaler, now);
        let mut written = None;
        let mut status = outcome.status;
        for (reason, message) in &outcome.warnings {
            objects.events().record(
                Regarding::of(autoscaler),
                EventType::Warning,
                reason,
                message.clone(),
                COMPONENT,
            );
        }
        if let Some((replicas, reason)) = outcome.rescale {
            let spec = &autoscaler["spec"];
            let target = &spec["scaleTargetRef"];
            let target_kind = scale_kind(target).expect("decide checked the target");
            let namespace = namespace_of(autoscaler);
            let name = target["name"].as_str().unwrap_or_default();
            let scaled = objects
                .update_with(target_kind, namespace, name, |object| {
                    object["spec"]["replicas"] = json!(replicas);
                    true
                })
                .await;
            let current = status["currentReplicas"].as_i64().unwrap_or(0) as i32;
            let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
            let stamp = c4m_core::format_rfc3339(now);
            match scaled {
                Ok(revision) => {
                    written = revision;
                    set_condition(
                        &mut conditions,
                        &(
                            "AbleToScale",
                            true,
                            "SucceededRescale",
                            format!(
                                "the HPA controller was able to update the target scale to {replicas}"
                            ),
                        ),
                        &stamp,
                    );
                    objects.events().record(
                        Regarding::of(autoscaler),
                        EventType::Normal,
                        "SuccessfulRescale",
                        format!("New size: {replicas}; reason: {reason}"),
                        COMPONENT,
                    );
                    let behavior = Behavior::of(spec, self.config.downscale_stabilization);
                    self.histories()
                        .entry(key(autoscaler))
                        .or_default()
                        .record_scale(behavior.as_ref(), current, replicas, now);
                    status["desiredReplicas"] = json!(replicas);
                    status["lastScaleTime"] = json!(stamp);
                }
                Err(e) => {
                    objects.events().record(
                        Regarding::of(autoscaler),
                        EventType::Warning,
                        "FailedRescale",
                        format!("New size: {replicas}; reason: {reason}; error: {e}"),
                        COMPONENT,
                    );
                    set_condition(
                        &mut conditions,
                        &(
                            "AbleToScale",
                            false,
                            "FailedUpdateScale",
                            format!(
                                "the HPA controller was unable to update the target scale: {e}"
                            ),
                        ),
                        &stamp,
                    );
                }
            }
            status["conditions"] = json!(conditions);
        }
        let status_written =
            super::write_status(objects, "horizontalpodautoscalers", autoscaler, &status).await?;
        Ok(super::latest(written, status_written))
    }

    /// What one sync of `autoscaler` does at `now`: its new status, and
    /// whether to rescale its target.
    fn decide(&self, cache: &Cache, autoscaler: &Value, now: SystemTime) -> Outcome {
        let spec = &autoscaler["spec"];
        let previous = &autoscaler["status"];
        let stamp = c4m_core::format_rfc3339(now);
        let mut conditions = previous["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut warnings = Vec::new();
        let mut status = json!({
            "currentReplicas": previous["currentReplicas"].as_i64().unwrap_or(0),
            "desiredReplicas": previous["desiredReplicas"].as_i64().unwrap_or(0),
        });
        if !previous["lastScaleTime"].is_null() {
            status["lastScaleTime"] = previous["lastScaleTime"].clone();
        }
        let target_ref = &spec["scaleTargetRef"];
        let target = scale_kind(target_ref).ok_or_else(|| {
            format!(
                "the server could not find the requested resource: {}/{} has no scale subresource c4m serves (Deployment, Microservice)",
                target_ref["apiVersion"].as_str().unwrap_or(""),
                target_ref["kind"].as_str().unwrap_or("")
            )
        });
        let target = target.and_then(|kind| {
            let name = target_ref["name"].as_str().unwrap_or_default();
            cache
                .get(kind, namespace_of(autoscaler), name)
                .ok_or_else(|| format!("{} {name} not found", kind.plural))
        });
        let target = match target {
            Ok(target) => target,
            Err(message) => {
                warnings.push(("FailedGetScale", message.clone()));
                set_condition(
                    &mut conditions,
                    &(
                        "AbleToScale",
                        false,
                        "FailedGetScale",
                        format!(
                            "the HPA controller was unable to get the target's current scale: {message}"
                        ),
                    ),
                    &stamp,
                );
                status["conditions"] = json!(conditions);
                return Outcome {
                    status,
                    rescale: None,
                    warnings,
                };
            }
        };
        set_condition(
            &mut conditions,
            &(
                "AbleToScale",
                true,
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale".into(),
            ),
            &stamp,
        );
        let current = target["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
        let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
        let max = spec["maxReplicas"].as_i64().unwrap_or(1) as i32;
        let key = key(autoscaler);
        let mut histories = self.histories();
        let history = histories.entry(key).or_default();
        history.record_initial(current, now);
        status["currentReplicas"] = json!(current);
        let mut rescale_reason = String::new();
        let desired;
        let mut rescale = true;
        if current == 0 && min != 0 {
            desired = 0;
            rescale = false;
            set_condition(
                &mut conditions,
                &(
                    "ScalingActive",
                    false,
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero".into(),
                ),
                &stamp,
            );
        } else if current > max {
            rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
        } else if current < min {
            rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let computed = self.compute_replicas(
                cache,
                autoscaler,
                &target,
                current,
                now,
                &mut conditions,
                &stamp,
            );
            match computed {
                Err(message) => {
                    warnings.push(("FailedComputeMetricsReplicas", message));
                    status["conditions"] = json!(conditions);
                    return Outcome {
                        status,
                        rescale: None,
                        warnings,
                    };
                }
                Ok((proposed, metric_name, statuses)) => {
                    status["currentMetrics"] = json!(statuses);
                    if proposed > current {
                        rescale_reason = format!("{metric_name} above target");
                    } else if proposed < current {
                        rescale_reason = "All metrics below target".into();
                    }
                    let normalized = match Behavior::of(spec, self.config.downscale_stabilization) {
                        None => history.normalize(
                            current,
                            proposed,
                            min,
                            max,
                            self.config.downscale_stabilization,
                            now,
                        ),
                        Some(behavior) => history
                            .normalize_with_behavior(&behavior, current, proposed, min, max, now),
                    };
                    for update in &normalized.conditions {
                        set_condition(&mut conditions, update, &stamp);
                    }
                    desired = normalized.replicas;
                    rescale = desired != current;
                }
            }
        }
        status["desiredReplicas"] = json!(if rescale { desired } else { current });
        status["conditions"] = json!(conditions);
        Outcome {
            status,
            rescale: rescale.then_some((desired, rescale_reason)),
            warnings,
        }
    }

    /// The largest proposal of the autoscaler's metrics, the metric it came
    /// from, and each metric's status; ScalingActive set either way.
    #[allow(clippy::too_many_arguments)]
    fn compute_replicas(
        &self,
        cache: &Cache,
        autoscaler: &Value,
        target: &Value,
        current: i32,
        now: SystemTime,
        conditions: &mut Vec<Value>,
        stamp: &str,
    ) -> std::result::Result<(i32, String, Vec<Value>), String> {
        let selector = &target["spec"]["selector"];
        let selector = if selector.is_object() {
            serde_json::from_value(selector.clone())
                .ok()
                .and_then(|s| Selector::from_label_selector(&s).ok())
        } else if target["kind"] == "Microservice" {
            // A Microservice's instances carry its name in a label.
            let label = c4m_core::labels::MICROSERVICE;
            Selector::parse(&format!("{label}={}", name_of(target))).ok()
        } else {
            None
        };
        let Some(selector) = selector else {
            set_condition(
                conditions,
                &(
                    "ScalingActive",
                    false,
                    "InvalidSelector",
                    "the HPA target's scale is missing a selector".into(),
                ),
                stamp,
            );
            return Err("selector is required".into());
        };
        let pods = cache.list(kind("pods"), Some(namespace_of(autoscaler)));
        let pods: Vec<&Value> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| selector.matches(&labels(p)))
            .collect();
        let specs = metric_specs(&autoscaler["spec"]);
        let specs = match specs {
            Ok(specs) => specs,
            Err(message) => {
                set_condition(
                    conditions,
                    &(
                        "ScalingActive",
                        false,
                        "InvalidMetricSourceType",
                        format!("the HPA was unable to compute the replica count: {message}"),
                    ),
                    stamp,
                );
                return Err(message);
            }
        };
        let mut best: Option<(i32, String)> = None;
        let mut statuses = Vec::new();
        let mut first_error: Option<(String, &'static str)> = None;
        let mut invalid = 0;
        for metric in &specs {
            let container = metric.container.as_deref();
            let samples = pod_metrics(&self.metrics, &pods, &metric.resource, container, now);
            let computed = if samples.is_empty() && !pods.is_empty() {
                Err(format!(
                    "unable to get metrics for resource {}: no metrics returned from resource metrics API",
                    metric.resource
                ))
            } else {
                proposal(current, metric, &pods, samples, &self.config, now)
            };
            let reason = match metric.source {
                "ContainerResource" => "FailedGetContainerResourceMetric",
                _ => "FailedGetResourceMetric",
            };
            match computed {
                Ok(proposal) => {
                    statuses.push(metric_status(metric, &proposal));
                    let name = match metric.target {
                        Target::Utilization(_) if metric.source == "ContainerResource" => {
                            format!(
                                "{} container resource utilization (percentage of request)",
                                metric.resource
                            )
                        }
                        Target::Utilization(_) => format!(
                            "{} resource utilization (percentage of request)",
                            metric.resource
                        ),
                        Target::AverageValue(_) => format!("{} resource", metric.resource),
                    };
                    if best
                        .as_ref()
                        .is_none_or(|(replicas, _)| proposal.replicas > *replicas)
                    {
                        best = Some((proposal.replicas, name));
                    }
                }
                Err(message) => {
                    invalid += 1;
                    let message =
                        format!("failed to get {} utilization: {message}", metric.resource);
                    first_error.get_or_insert((message, reason));
                }
            }
        }
        // All metrics invalid, or some invalid and the rest would scale
        // down: no scaling (Kubernetes will not scale down on partial data).
        let scale_down_on_partial = invalid > 0 && best.as_ref().is_some_and(|(r, _)| *r < current);
        if let Some((message, reason)) = first_error.clone()
            && (invalid >= specs.len() || scale_down_on_partial)
        {
            set_condition(
                conditions,
                &(
                    "ScalingActive",
                    false,
                    reason,
                    format!("the HPA was unable to compute the replica count: {message}"),
                ),
                stamp,
            );
            return Err(message);
        }
        let (replicas, name) = best.expect("at least one metric is valid");
        set_condition(
            conditions,
            &(
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!("the HPA was able to successfully calculate a replica count from {name}"),
            ),
            stamp,
        );
        Ok((replicas, name, statuses))
    }
}

/// `NAMESPACE/NAME` of an autoscaler.
fn key(autoscaler: &Value) -> String {
    format!("{}/{}", namespace_of(autoscaler), name_of(autoscaler))
}

/// The kind a `scaleTargetRef` names, if it has a scale subresource.
fn scale_kind(target: &Value) -> Option<&'static c4m_core::ResourceKind> {
    let api_version = target["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    c4m_core::KINDS
        .iter()
        .find(|k| k.group == group && target["kind"] == k.kind && k.has_subresource("scale"))
}

/// The highest count allowed: the rate's `limit`, or `max` when that is
/// lower, with the reason ScalingLimited gives when it holds.
fn upper_bound(limit: i32, max: i32) -> (i32, &'static str, &'static str) {
    if max > limit {
        (
            limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    }
}

/// The lowest count allowed: the rate's `limit`, or `min` when that is
/// higher, with the reason ScalingLimited gives when it holds.
fn lower_bound(limit: i32, min: i32) -> (i32, &'static str, &'static str) {
    if min < limit {
        (
            limit,
            "ScaleDownLimit",
            "the desired replica count is decreasing faster than the maximum scale rate",
        )
    } else {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    }
}

/// A stabilized count that no bound held back.
fn within_range(stabilized: i32) -> (i32, &'static str, &'static str) {
    (
        stabilized,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    )
}

/// The outcome of normalizing: `stabilized` held to `limited` (the count,
/// and why), with the ScalingLimited condition saying whether it was.
fn limited_to(
    mut conditions: Vec<ConditionUpdate>,
    stabilized: i32,
    (replicas, reason, message): (i32, &'static str, &'static str),
) -> Normalized {
    conditions.push((
        "ScalingLimited",
        replicas != stabilized,
        reason,
        message.to_string(),
    ));
    Normalized {
        replicas,
        conditions,
    }
}

#[cfg(test)]
mod tests;
