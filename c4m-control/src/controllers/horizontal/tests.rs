//! The autoscaler's arithmetic against Kubernetes' cases
//! (pkg/controller/podautoscaler's replica calculator and normalization),
//! and one controller run over a real store with an injected clock.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;

const T0: &str = "2026-01-01T00:00:00Z";

fn t0() -> SystemTime {
    c4m_core::parse_rfc3339(T0).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A running, ready pod started 10 minutes before `t0`, requesting `cpu`.
fn pod(name: &str, cpu: &str) -> Value {
    let started = c4m_core::format_rfc3339(t0() - secs(600));
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
        "status": {"phase": "Running", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}]},
    })
}

fn pods(n: usize) -> Vec<Value> {
    (0..n).map(|i| pod(&format!("web-{i}"), "1")).collect()
}

/// Usage (millicores) of the first pods, one value each.
fn usage(values: &[i64]) -> PodMetrics {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            (
                format!("web-{i}"),
                PodMetric {
                    value: *value,
                    timestamp: t0() - secs(5),
                    window: secs(15),
                },
            )
        })
        .collect()
}

fn metric(resource: &str, target: Target) -> MetricSpec {
    MetricSpec {
        source: "Resource",
        resource: resource.into(),
        container: None,
        target,
    }
}

fn cpu(current: i32, percent: i32, pods: &[Value], metrics: PodMetrics) -> Proposal {
    let pods: Vec<&Value> = pods.iter().collect();
    proposal(
        current,
        &metric("cpu", Target::Utilization(percent)),
        &pods,
        metrics,
        &AutoscalerConfig::default(),
        t0(),
    )
    .unwrap()
}

#[test]
fn desired_is_ceil_of_ready_pods_times_usage_over_target() {
    // 3 pods using 90% against a 50% target: ceil(3 * 1.8) = 6.
    let p = cpu(3, 50, &pods(3), usage(&[900, 900, 900]));
    assert_eq!(p.replicas, 6);
    assert_eq!(p.utilization, Some(90));
    assert_eq!(p.average, 900);
    // Kubernetes' TestReplicaCalcScaleUp: 300, 500, 700 of 1 CPU at 30%.
    let p = cpu(3, 30, &pods(3), usage(&[300, 500, 700]));
    assert_eq!((p.replicas, p.utilization), (5, Some(50)));
    // TestReplicaCalcScaleDown: 5 pods at 100, 300, 500, 250, 250 of 1 CPU, 50%.
    let p = cpu(5, 50, &pods(5), usage(&[100, 300, 500, 250, 250]));
    assert_eq!((p.replicas, p.utilization), (3, Some(28)));
}

#[test]
fn within_the_tolerance_nothing_changes() {
    // 54% against 50%: a ratio of 1.08, within 0.1.
    let p = cpu(4, 50, &pods(4), usage(&[540, 540, 540, 540]));
    assert_eq!(p.replicas, 4);
    // 45% against 50% is 0.9: still within (inclusive).
    let p = cpu(4, 50, &pods(4), usage(&[450, 450, 450, 450]));
    assert_eq!(p.replicas, 4);
    // 44% is outside: ceil(4 * 0.88) = 4 anyway; 30% gives ceil(4 * 0.6) = 3.
    let p = cpu(4, 50, &pods(4), usage(&[300, 300, 300, 300]));
    assert_eq!(p.replicas, 3);
    // 56%: ratio 1.12, out: ceil(4 * 1.12) = 5.
    let p = cpu(4, 50, &pods(4), usage(&[560, 560, 560, 560]));
    assert_eq!(p.replicas, 5);
}

#[test]
fn missing_metrics_count_as_nothing_up_and_the_whole_request_down() {
    // Scale up: 2 of 4 pods report 100%, the others nothing (0%):
    // 200% / 4 pods = 50% average against 30%: ceil(4 * 50/30) = 7.
    let p = cpu(4, 30, &pods(4), usage(&[1000, 1000]));
    assert_eq!(p.replicas, 7);
    // But not past the direction the reporting pods gave: 2 pods at 40%
    // against 30% (up), the missing two at 0% make 20% (down): keep 4.
    let p = cpu(4, 30, &pods(4), usage(&[400, 400]));
    assert_eq!(p.replicas, 4);
    // Scale down: 2 of 4 pods at 10%; the missing two count as 100%:
    // (10 + 10 + 100 + 100) / 4 = 55% against 50%: within tolerance, keep 4.
    let p = cpu(4, 50, &pods(4), usage(&[100, 100]));
    assert_eq!(p.replicas, 4);
    // Against 80%: 55/80 = 0.6875, ceil(4 * 0.6875) = 3.
    let p = cpu(4, 80, &pods(4), usage(&[100, 100]));
    assert_eq!(p.replicas, 3);
    // A target above 100%: missing pods count at the target (150%).
    let p = cpu(4, 150, &pods(4), usage(&[100, 100]));
    // (10 + 10 + 150 + 150) / 4 = 80% against 150%: ceil(4 * 0.5333) = 3.
    assert_eq!(p.replicas, 3);
}

#[test]
fn unready_pods_are_ignored_up_and_left_out_down() {
    let mut all = pods(4);
    // web-3 is Pending (not started): it counts as 0% when scaling up.
    all[3]["status"] = json!({"phase": "Pending"});
    // 3 reporting pods at 90% against 50% (up): with web-3 at 0%,
    // (90 * 3) / 4 = 67% -> ratio 1.35 -> ceil(1.35 * 4) = 6.
    let p = cpu(4, 50, &all, usage(&[900, 900, 900]));
    assert_eq!(p.replicas, 6);
    // Scaling down, the Pending pod is left out: 3 pods at 10%: ceil(3 * 0.2) = 1.
    let p = cpu(4, 50, &all, usage(&[100, 100, 100]));
    assert_eq!(p.replicas, 1);
    // A pod started 1 minute ago and not ready: unready for CPU.
    let mut fresh = pods(2);
    let started = c4m_core::format_rfc3339(t0() - secs(60));
    fresh[1]["status"]["startTime"] = json!(started);
    fresh[1]["status"]["conditions"] =
        json!([{"type": "Ready", "status": "False", "lastTransitionTime": started}]);
    // web-0 at 100%, web-1 (unready) at 100% too: up with web-1 at 0%:
    // 50% against 40%: 1.25 -> ceil(2 * 1.25) = 3.
    let p = cpu(2, 40, &fresh, usage(&[1000, 1000]));
    assert_eq!(p.replicas, 3);
    // Deleted and Failed pods are ignored altogether.
    let mut gone = pods(3);
    gone[1]["metadata"]["deletionTimestamp"] = json!(T0);
    gone[2]["status"]["phase"] = json!("Failed");
    let p = cpu(3, 50, &gone, usage(&[1000, 1000, 1000]));
    assert_eq!(p.replicas, 2);
}

#[test]
fn requests_are_required_and_errors_name_the_pod() {
    let mut all = pods(2);
    all[1]["spec"]["containers"][0]["resources"] = json!({});
    let refs: Vec<&Value> = all.iter().collect();
    let error = proposal(
        2,
        &metric("cpu", Target::Utilization(50)),
        &refs,
        usage(&[500, 500]),
        &AutoscalerConfig::default(),
        t0(),
    )
    .unwrap_err();
    assert_eq!(
        error,
        "missing request for cpu in container app of Pod web-1"
    );
    let error = proposal(
        2,
        &metric("cpu", Target::Utilization(50)),
        &[],
        usage(&[]),
        &AutoscalerConfig::default(),
        t0(),
    )
    .unwrap_err();
    assert!(error.contains("no pods returned by selector"), "{error}");
}

#[test]
fn an_average_value_target_counts_usage_per_pod() {
    let all = pods(2);
    let refs: Vec<&Value> = all.iter().collect();
    // 2 pods at 300m against an average of 200m: ceil(2 * 1.5) = 3.
    let p = proposal(
        2,
        &metric("cpu", Target::AverageValue(200)),
        &refs,
        usage(&[300, 300]),
        &AutoscalerConfig::default(),
        t0(),
    )
    .unwrap();
    assert_eq!((p.replicas, p.utilization, p.average), (3, None, 300));
}

fn behavior(value: Value) -> Behavior {
    Behavior::of(&json!({"behavior": value}), secs(300)).unwrap()
}

#[test]
fn quantities_print_as_kubernetes_prints_them() {
    assert_eq!(milli_quantity(250), "250m");
    assert_eq!(milli_quantity(1000), "1");
    assert_eq!(milli_quantity(1500), "1500m");
    assert_eq!(milli_quantity(2_000_000), "2k");
    assert_eq!(milli_quantity(67_108_864_000), "67108864");
    assert_eq!(milli_quantity(0), "0");
}

#[test]
fn a_new_autoscaler_is_defaulted_as_the_api_server_defaults_it() {
    let mut hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
        "maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}}});
    default_new_autoscaler(&mut hpa);
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"],
        4
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"],
        0
    );
    assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        10
    );
    // The defaults read back as what Behavior::of assumes for absent fields.
    assert_eq!(
        Behavior::of(&hpa["spec"], secs(300)),
        Behavior::of(
            &json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}}),
            secs(300)
        )
    );
}

#[test]
fn behavior_is_defaulted_as_the_api_server_defaults_it() {
    assert!(Behavior::of(&json!({}), secs(300)).is_none());
    let b = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 15}}));
    assert_eq!(b.scale_up.stabilization_window_seconds, 0);
    assert_eq!(b.scale_up.select, Select::Max);
    assert_eq!(
        b.scale_up.policies,
        vec![
            Policy {
                kind: PolicyType::Pods,
                value: 4,
                period_seconds: 15
            },
            Policy {
                kind: PolicyType::Percent,
                value: 100,
                period_seconds: 15
            },
        ]
    );
    assert_eq!(b.scale_down.stabilization_window_seconds, 15);
    assert_eq!(
        b.scale_down.policies,
        vec![Policy {
            kind: PolicyType::Percent,
            value: 100,
            period_seconds: 15
        }]
    );
    // The scale-down window defaults to the controller's.
    let b = behavior(json!({"scaleUp": {"selectPolicy": "Disabled"}}));
    assert_eq!(b.scale_down.stabilization_window_seconds, 300);
    assert_eq!(b.scale_up.select, Select::Disabled);
}

fn reason_of(n: &Normalized, kind: &str) -> (bool, &'static str) {
    n.conditions
        .iter()
        .find(|c| c.0 == kind)
        .map(|c| (c.1, c.2))
        .unwrap()
}

#[test]
fn the_default_window_keeps_the_highest_recommendation_for_five_minutes() {
    let mut history = History::default();
    history.record_initial(5, t0());
    // Load drops: 2 is recommended, but 5 was recommended just now.
    let n = history.normalize(5, 2, 1, 10, secs(300), t0() + secs(15));
    assert_eq!(n.replicas, 5);
    assert_eq!(reason_of(&n, "AbleToScale"), (true, "ScaleDownStabilized"));
    // Still within 5 minutes of the 5.
    let n = history.normalize(5, 2, 1, 10, secs(300), t0() + secs(299));
    assert_eq!(n.replicas, 5);
    // Past 5 minutes, only the 2s are left.
    let n = history.normalize(5, 2, 1, 10, secs(300), t0() + secs(301));
    assert_eq!(n.replicas, 2);
    assert_eq!(reason_of(&n, "AbleToScale"), (true, "ReadyForNewScale"));
    assert_eq!(
        reason_of(&n, "ScalingLimited"),
        (false, "DesiredWithinRange")
    );
    // Scaling up is at once, but at most max(2 * current, 4).
    let n = history.normalize(2, 9, 1, 10, secs(300), t0() + secs(320));
    assert_eq!(n.replicas, 4);
    assert_eq!(reason_of(&n, "ScalingLimited"), (true, "ScaleUpLimit"));
    let n = history.normalize(4, 20, 1, 6, secs(300), t0() + secs(335));
    assert_eq!(n.replicas, 6);
    assert_eq!(reason_of(&n, "ScalingLimited"), (true, "TooManyReplicas"));
}

#[test]
fn a_short_scale_down_window_scales_down_after_it() {
    let b = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 10}}));
    let mut history = History::default();
    history.record_initial(4, t0());
    let n = history.normalize_with_behavior(&b, 4, 1, 1, 4, t0() + secs(5));
    assert_eq!(n.replicas, 4);
    assert_eq!(reason_of(&n, "AbleToScale"), (true, "ScaleDownStabilized"));
    let n = history.normalize_with_behavior(&b, 4, 1, 1, 4, t0() + secs(16));
    assert_eq!(n.replicas, 1);
    assert_eq!(
        reason_of(&n, "ScalingLimited"),
        (false, "DesiredWithinRange")
    );
}

#[test]
fn pods_and_percent_policies_limit_the_rate() {
    // Up by at most 1 pod per 60 s.
    let b = behavior(
        json!({"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}),
    );
    let mut history = History::default();
    history.record_initial(2, t0());
    let n = history.normalize_with_behavior(&b, 2, 8, 1, 10, t0());
    assert_eq!(n.replicas, 3);
    assert_eq!(reason_of(&n, "ScalingLimited"), (true, "ScaleUpLimit"));
    history.record_scale(Some(&b), 2, 3, t0());
    // 30 s later the period still holds the +1: no more.
    let n = history.normalize_with_behavior(&b, 3, 8, 1, 10, t0() + secs(30));
    assert_eq!(n.replicas, 3);
    // After the period, one more.
    let n = history.normalize_with_behavior(&b, 3, 8, 1, 10, t0() + secs(61));
    assert_eq!(n.replicas, 4);

    // Down by at most 50% per 15 s, or 1 pod: Max picks the larger change.
    let b = behavior(
        json!({"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Percent", "value": 50, "periodSeconds": 15},
        {"type": "Pods", "value": 1, "periodSeconds": 15}]}}),
    );
    let mut history = History::default();
    let n = history.normalize_with_behavior(&b, 10, 1, 1, 10, t0());
    assert_eq!(n.replicas, 5);
    assert_eq!(reason_of(&n, "ScalingLimited"), (true, "ScaleDownLimit"));
    // Min picks the smaller change: 1 pod.
    let b = behavior(
        json!({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15},
            {"type": "Pods", "value": 1, "periodSeconds": 15}]}}),
    );
    let n = History::default().normalize_with_behavior(&b, 10, 1, 1, 10, t0());
    assert_eq!(n.replicas, 9);
    // Disabled: no scaling down at all.
    let b = behavior(
        json!({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}),
    );
    let n = History::default().normalize_with_behavior(&b, 10, 1, 1, 10, t0());
    assert_eq!(n.replicas, 10);
    // minReplicas still bounds a policy that would allow more.
    let b = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 0}}));
    let n = History::default().normalize_with_behavior(&b, 10, 1, 3, 10, t0());
    assert_eq!(n.replicas, 3);
    assert_eq!(reason_of(&n, "ScalingLimited"), (true, "TooFewReplicas"));
}

#[test]
fn the_scale_up_window_takes_the_lowest_recent_recommendation() {
    let b = behavior(json!({"scaleUp": {"stabilizationWindowSeconds": 60}}));
    let mut history = History::default();
    history.record_initial(2, t0());
    let n = history.normalize_with_behavior(&b, 2, 6, 1, 10, t0() + secs(10));
    assert_eq!(n.replicas, 2);
    assert_eq!(reason_of(&n, "AbleToScale"), (true, "ScaleUpStabilized"));
    let n = history.normalize_with_behavior(&b, 2, 6, 1, 10, t0() + secs(71));
    assert_eq!(n.replicas, 6);
}

mod controller {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::cache::Cache;
    use crate::controllers::clock::FakeClock;
    use crate::metrics::{Metrics, Sample};
    use crate::objects::kind;

    /// A Deployment `web` at `replicas`, its pods at `millicores` each, and
    /// an autoscaler at 50% CPU (min 1, max 4) with `behavior`.
    async fn cluster(
        replicas: usize,
        millicores: i64,
        behavior: Value,
    ) -> (
        tempfile::TempDir,
        Objects,
        Arc<Cache>,
        Arc<Metrics>,
        CancellationToken,
    ) {
        let (dir, store, objects) = crate::test_support::store_with_default_namespace().await;
        objects
            .create(
                kind("deployments"),
                "default",
                json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}),
            )
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        for mut pod in pods(replicas) {
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            let created = objects.create(kind("pods"), "default", pod).await.unwrap();
            let sample = Sample {
                cpu_nanocores: millicores * 1_000_000,
                memory_bytes: 1 << 20,
                containers: Vec::new(),
                timestamp: t0(),
                window: secs(15),
            };
            metrics.record_pod(
                "default",
                name_of(&created),
                created["metadata"]["uid"].as_str().unwrap(),
                sample,
            );
        }
        objects
            .create(kind("horizontalpodautoscalers"), "default", json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 4, "behavior": behavior,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}}]}}))
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let cache = Cache::start(store, shutdown.clone()).await.unwrap();
        (dir, objects, cache, metrics, shutdown)
    }

    async fn sync(controller: &AutoscalerController, objects: &Objects, cache: &Cache) -> Value {
        let changes = Changes {
            everything: true,
            changed: Default::default(),
        };
        if let Some(revision) = controller
            .reconcile(objects, cache, &changes)
            .await
            .unwrap()
        {
            cache.wait_for(revision).await;
        }
        cache
            .get(kind("horizontalpodautoscalers"), "default", "web")
            .unwrap()
            .as_ref()
            .clone()
    }

    /// Every pod reports `millicores` at `at`.
    fn report(metrics: &Metrics, cache: &Cache, millicores: i64, at: SystemTime) {
        for pod in cache.list(kind("pods"), Some("default")) {
            let sample = Sample {
                cpu_nanocores: millicores * 1_000_000,
                memory_bytes: 1 << 20,
                containers: Vec::new(),
                timestamp: at,
                window: secs(15),
            };
            metrics.record_pod(
                "default",
                name_of(&pod),
                pod["metadata"]["uid"].as_str().unwrap(),
                sample,
            );
        }
    }

    fn replicas(cache: &Cache) -> i64 {
        cache.get(kind("deployments"), "default", "web").unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    }

    fn condition<'a>(autoscaler: &'a Value, kind: &str) -> &'a Value {
        autoscaler["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
    }

    #[tokio::test]
    async fn scales_up_then_down_after_the_window_with_an_injected_clock() {
        // 2 pods at 100% of 1 CPU against 50%: 4.
        let (_dir, objects, cache, metrics, shutdown) = cluster(2, 1000, Value::Null).await;
        let clock = Arc::new(FakeClock::at(t0()));
        let controller = AutoscalerController::new(
            clock.clone(),
            Arc::clone(&metrics),
            AutoscalerConfig::default(),
        );
        let autoscaler = sync(&controller, &objects, &cache).await;
        assert_eq!(replicas(&cache), 4);
        assert_eq!(autoscaler["status"]["desiredReplicas"], 4);
        assert_eq!(autoscaler["status"]["currentReplicas"], 2);
        assert_eq!(autoscaler["status"]["lastScaleTime"], T0);
        assert_eq!(
            autoscaler["status"]["currentMetrics"][0]["resource"]["current"],
            json!({"averageUtilization": 100, "averageValue": "1"})
        );
        assert_eq!(
            condition(&autoscaler, "AbleToScale")["reason"],
            "SucceededRescale"
        );
        assert_eq!(
            condition(&autoscaler, "ScalingActive")["reason"],
            "ValidMetricFound"
        );
        assert_eq!(condition(&autoscaler, "ScalingLimited")["status"], "False");

        // The load stops: the pods report 1% (only the two pods exist:
        // nothing runs the Deployment's controller here).
        for at in [15, 295] {
            clock.advance(secs(if at == 15 { 15 } else { 280 }));
            report(&metrics, &cache, 10, t0() + secs(at));
            let autoscaler = sync(&controller, &objects, &cache).await;
            assert_eq!(replicas(&cache), 4, "held by the 5-minute window at {at} s");
            assert_eq!(
                condition(&autoscaler, "AbleToScale")["reason"],
                "ScaleDownStabilized"
            );
            assert_eq!(autoscaler["status"]["desiredReplicas"], 4);
        }
        clock.advance(secs(10));
        report(&metrics, &cache, 10, t0() + secs(305));
        let autoscaler = sync(&controller, &objects, &cache).await;
        assert_eq!(replicas(&cache), 1, "after the window");
        assert_eq!(autoscaler["status"]["desiredReplicas"], 1);
        assert_eq!(
            autoscaler["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            1
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_short_scale_down_window_from_behavior() {
        let behavior = json!({"scaleDown": {"stabilizationWindowSeconds": 10}});
        let (_dir, objects, cache, metrics, shutdown) = cluster(2, 1000, behavior).await;
        let clock = Arc::new(FakeClock::at(t0()));
        let controller = AutoscalerController::new(
            clock.clone(),
            Arc::clone(&metrics),
            AutoscalerConfig::default(),
        );
        sync(&controller, &objects, &cache).await;
        assert_eq!(replicas(&cache), 4);
        clock.advance(secs(5));
        report(&metrics, &cache, 10, t0() + secs(5));
        sync(&controller, &objects, &cache).await;
        assert_eq!(replicas(&cache), 4, "within the 10 s window");
        clock.advance(secs(10));
        report(&metrics, &cache, 10, t0() + secs(15));
        let autoscaler = sync(&controller, &objects, &cache).await;
        assert_eq!(replicas(&cache), 1);
        assert_eq!(
            condition(&autoscaler, "ScalingLimited")["reason"],
            "DesiredWithinRange"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_missing_target_is_reported_in_able_to_scale() {
        let (_dir, objects, cache, metrics, shutdown) = cluster(1, 100, Value::Null).await;
        objects
            .delete(kind("deployments"), "default", "web")
            .await
            .unwrap();
        let controller = AutoscalerController::new(
            Arc::new(FakeClock::at(t0())),
            metrics,
            AutoscalerConfig::default(),
        );
        // The cache may still hold the Deployment for a moment.
        let mut autoscaler = sync(&controller, &objects, &cache).await;
        for _ in 0..50 {
            if condition(&autoscaler, "AbleToScale")["status"] == "False" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            autoscaler = sync(&controller, &objects, &cache).await;
        }
        let able = condition(&autoscaler, "AbleToScale");
        assert_eq!(
            (&able["status"], &able["reason"]),
            (&json!("False"), &json!("FailedGetScale"))
        );
        assert!(
            able["message"]
                .as_str()
                .unwrap()
                .contains("deployments web not found"),
            "{able}"
        );
        shutdown.cancel();
    }
}
