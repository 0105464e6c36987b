//! `metrics.k8s.io/v1beta1`, the resource metrics API that metrics-server
//! serves and `kubectl top` and the HorizontalPodAutoscaler read: a
//! PodMetrics per running instance and a NodeMetrics per node, from the
//! usage agents report (with each status report, and with heartbeats for
//! the node itself). Nothing is stored: like metrics-server, the API keeps
//! the latest sample of each in memory.
//!
//! As metrics-server reports them: CPU in nanocores (`n`), memory in `Ki`,
//! `timestamp` the time of the sample, `window` the interval the CPU rate
//! was measured over (a Go duration), and the object's labels those of
//! its pod or node. An instance or node shows only once it has a rate (two
//! CPU samples), and a sample older than [`STALE`] is no longer shown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use c4m_api::agent::ResourceUsage;
use dashmap::DashMap;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::cache::Cache;
use crate::objects::{kind, name_of, namespace_of};
use crate::selector::Selector;
use crate::{Error, Result};

/// The group version served.
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// How long a sample is shown after it was reported: agents report every
/// few seconds, so an older one is from an agent that stopped.
pub(crate) const STALE: Duration = Duration::from_secs(60);

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerUsage {
    pub name: String,
    pub cpu_nanocores: i64,
    pub memory_bytes: i64,
}

/// The latest usage sample of an instance or node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    /// CPU in nanocores over `window`.
    pub cpu_nanocores: i64,
    /// Memory working set in bytes.
    pub memory_bytes: i64,
    /// Each container's share; empty for a node, or when the agent
    /// measures the instance as a whole.
    pub containers: Vec<ContainerUsage>,
    /// When it was taken.
    pub timestamp: SystemTime,
    /// The interval the CPU rate covers.
    pub window: Duration,
}

impl Sample {
    /// A reported usage received at `at`, or None while it has no rate yet.
    pub(crate) fn from_report(usage: &ResourceUsage, at: SystemTime) -> Option<Sample> {
        if usage.window_millis <= 0 {
            return None;
        }
        // Agents before nanocores were reported send millicores only.
        let cpu_nanocores = match usage.cpu_nanocores {
            0 => usage.cpu_millis.saturating_mul(1_000_000),
            n => n,
        };
        Some(Sample {
            cpu_nanocores: cpu_nanocores.max(0),
            memory_bytes: usage.memory_bytes.max(0),
            containers: usage
                .containers
                .iter()
                .map(|c| ContainerUsage {
                    name: c.name.clone(),
                    cpu_nanocores: c.cpu_nanocores.max(0),
                    memory_bytes: c.memory_bytes.max(0),
                })
                .collect(),
            timestamp: at,
            window: Duration::from_millis(usage.window_millis.unsigned_abs()),
        })
    }

    /// Each container of `pod` with its usage: the agent's split when it
    /// made one, else the whole instance's on its first container.
    pub(crate) fn per_container(&self, pod: &Value) -> Vec<ContainerUsage> {
        if !self.containers.is_empty() {
            return self.containers.clone();
        }
        let first = pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        vec![ContainerUsage {
            name: first,
            cpu_nanocores: self.cpu_nanocores,
            memory_bytes: self.memory_bytes,
        }]
    }
}

/// The latest samples of every instance and node.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pods: DashMap<(String, String), (String, Sample)>,
    nodes: DashMap<String, Sample>,
}

impl Metrics {
    /// Records the usage an agent reported for the instance `namespace/name`
    /// with `uid`.
    pub(crate) fn record_pod(&self, namespace: &str, name: &str, uid: &str, sample: Sample) {
        self.pods.insert(
            (namespace.to_string(), name.to_string()),
            (uid.to_string(), sample),
        );
    }

    /// Records a node's own usage.
    pub(crate) fn record_node(&self, node: &str, sample: Sample) {
        self.nodes.insert(node.to_string(), sample);
    }

    /// The fresh sample of `pod` (matched by uid, so a namesake's old
    /// sample is not taken for it) at `now`.
    pub(crate) fn pod(&self, pod: &Value, now: SystemTime) -> Option<Sample> {
        let key = (namespace_of(pod).to_string(), name_of(pod).to_string());
        let entry = self.pods.get(&key)?;
        let (uid, sample) = entry.value();
        (pod["metadata"]["uid"] == uid.as_str() && fresh(sample, now)).then(|| sample.clone())
    }

    /// The fresh sample of the node `name` at `now`.
    pub(crate) fn node(&self, name: &str, now: SystemTime) -> Option<Sample> {
        let sample = self.nodes.get(name)?;
        fresh(&sample, now).then(|| sample.clone())
    }

    /// Forgets the samples of instances that are gone from `cache`, and of
    /// nodes that are, so the maps do not grow with every instance ever run.
    pub(crate) fn forget_gone(&self, cache: &Cache, now: SystemTime) {
        self.pods.retain(|(namespace, name), (_, sample)| {
            fresh(sample, now) || cache.get(kind("pods"), namespace, name).is_some()
        });
        self.nodes.retain(|name, sample| {
            fresh(sample, now) || cache.get(kind("nodes"), "", name).is_some()
        });
    }
}

fn fresh(sample: &Sample, now: SystemTime) -> bool {
    now.duration_since(sample.timestamp)
        .map_or(true, |age| age <= STALE)
}

/// CPU as metrics-server writes it, in nanocores.
fn cpu_quantity(nanocores: i64) -> String {
    format!("{nanocores}n")
}

/// Memory as metrics-server writes it, in KiB.
fn memory_quantity(bytes: i64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// The metadata metrics-server gives a metrics object: the name (and
/// namespace) and labels of what it measures, created now.
fn metadata(object: &Value, now: SystemTime) -> Value {
    let mut metadata = json!({
        "name": object["metadata"]["name"],
        "creationTimestamp": c4m_core::format_rfc3339(now),
    });
    if let Some(namespace) = object["metadata"]["namespace"].as_str() {
        metadata["namespace"] = json!(namespace);
    }
    if object["metadata"]["labels"].is_object() {
        metadata["labels"] = object["metadata"]["labels"].clone();
    }
    metadata
}

/// When and over what a sample was measured, as metrics.k8s.io writes it.
fn sampled(sample: &Sample) -> (String, String) {
    (
        c4m_core::format_rfc3339(sample.timestamp),
        c4m_api::protobuf::format_go_duration(
            i64::try_from(sample.window.as_nanos()).unwrap_or(i64::MAX),
        ),
    )
}

/// The PodMetrics of `pod` with `sample`.
pub(crate) fn pod_metrics(pod: &Value, sample: &Sample, now: SystemTime) -> Value {
    let (timestamp, window) = sampled(sample);
    let containers: Vec<Value> = sample
        .per_container(pod)
        .into_iter()
        .map(|c| {
            json!({"name": c.name, "usage": {
                "cpu": cpu_quantity(c.cpu_nanocores),
                "memory": memory_quantity(c.memory_bytes),
            }})
        })
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(pod, now),
        "timestamp": timestamp,
        "window": window,
        "containers": containers,
    })
}

/// The NodeMetrics of `node` with `sample`.
pub(crate) fn node_metrics(node: &Value, sample: &Sample, now: SystemTime) -> Value {
    let (timestamp, window) = sampled(sample);
    json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(node, now),
        "timestamp": timestamp,
        "window": window,
        "usage": {
            "cpu": cpu_quantity(sample.cpu_nanocores),
            "memory": memory_quantity(sample.memory_bytes),
        },
    })
}

/// What the handlers read: the samples and the objects they measure.
#[derive(Clone)]
pub(crate) struct MetricsState {
    pub metrics: Arc<Metrics>,
    pub cache: Arc<Cache>,
}

type Params = Query<HashMap<String, String>>;

fn list_of(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
    })
}

fn selectors(query: &HashMap<String, String>) -> Result<(Selector, Selector)> {
    let parse = |key: &str| Selector::parse(query.get(key).map_or("", String::as_str));
    Ok((parse("labelSelector")?, parse("fieldSelector")?))
}

/// The PodMetrics of the instances in `namespace` (every namespace when
/// None) that have a fresh sample and match the query's selectors.
fn list_pods(
    state: &ApiState,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Value> {
    let (labels, fields) = selectors(query)?;
    let now = SystemTime::now();
    let metrics = &state.metrics;
    let items = metrics
        .cache
        .list(kind("pods"), namespace)
        .iter()
        .filter(|pod| labels.matches(&crate::pods::labels(pod)) && fields.matches_fields(pod))
        .filter_map(|pod| {
            let sample = metrics.metrics.pod(pod, now)?;
            Some(pod_metrics(pod, &sample, now))
        })
        .collect();
    Ok(list_of("PodMetricsList", items))
}

/// `GET /apis/metrics.k8s.io/v1beta1/pods` (every namespace).
pub(crate) async fn all_pods(
    State(state): State<Arc<ApiState>>,
    Query(query): Params,
) -> Result<axum::Json<Value>> {
    list_pods(&state, None, &query).map(axum::Json)
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods`.
pub(crate) async fn namespace_pods(
    State(state): State<Arc<ApiState>>,
    Path(namespace): Path<String>,
    Query(query): Params,
) -> Result<axum::Json<Value>> {
    list_pods(&state, Some(&namespace), &query).map(axum::Json)
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}`: 404
/// for an instance without a fresh sample, as metrics-server answers.
pub(crate) async fn pod(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    let now = SystemTime::now();
    let metrics = &state.metrics;
    let not_found = || Error::NotFound {
        kind: "podmetrics".into(),
        name: format!("{namespace}/{name}"),
    };
    let pod = metrics
        .cache
        .get(kind("pods"), &namespace, &name)
        .ok_or_else(not_found)?;
    let sample = metrics.metrics.pod(&pod, now).ok_or_else(not_found)?;
    Ok(axum::Json(pod_metrics(&pod, &sample, now)))
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes`.
pub(crate) async fn nodes(
    State(state): State<Arc<ApiState>>,
    Query(query): Params,
) -> Result<axum::Json<Value>> {
    let (labels, fields) = selectors(&query)?;
    let now = SystemTime::now();
    let metrics = &state.metrics;
    let items = metrics
        .cache
        .list(kind("nodes"), None)
        .iter()
        .filter(|node| labels.matches(&crate::pods::labels(node)) && fields.matches_fields(node))
        .filter_map(|node| {
            let sample = metrics.metrics.node(name_of(node), now)?;
            Some(node_metrics(node, &sample, now))
        })
        .collect();
    Ok(axum::Json(list_of("NodeMetricsList", items)))
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes/{name}`.
pub(crate) async fn node(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>> {
    let now = SystemTime::now();
    let metrics = &state.metrics;
    let not_found = || Error::NotFound {
        kind: "nodemetrics".into(),
        name: name.clone(),
    };
    let node = metrics
        .cache
        .get(kind("nodes"), "", &name)
        .ok_or_else(not_found)?;
    let sample = metrics.metrics.node(&name, now).ok_or_else(not_found)?;
    Ok(axum::Json(node_metrics(&node, &sample, now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use c4m_api::agent;

    fn usage(cpu_nanocores: i64, window_millis: i64) -> ResourceUsage {
        ResourceUsage {
            cpu_millis: cpu_nanocores / 1_000_000,
            memory_bytes: 5 * 1024 * 1024 + 100,
            cpu_nanocores,
            window_millis,
            containers: Vec::new(),
        }
    }

    #[test]
    fn pod_metrics_read_as_metrics_server_writes_them() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(
            Sample::from_report(&usage(5, 0), at).is_none(),
            "no rate yet"
        );
        let sample = Sample::from_report(&usage(250_123_456, 1500), at).unwrap();
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
            "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]}});
        let metrics = pod_metrics(&pod, &sample, at);
        assert_eq!(metrics["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(metrics["metadata"]["labels"]["app"], "web");
        assert_eq!(metrics["metadata"]["namespace"], "shop");
        assert_eq!(metrics["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(metrics["window"], "1.5s");
        assert_eq!(
            metrics["containers"],
            json!([{"name": "app", "usage": {"cpu": "250123456n", "memory": "5120Ki"}}])
        );
        // An agent that measures containers apart names them.
        let mut split = usage(300_000_000, 1000);
        split.containers = vec![
            agent::ContainerUsage {
                name: "app".into(),
                cpu_nanocores: 200_000_000,
                memory_bytes: 2048,
            },
            agent::ContainerUsage {
                name: "sidecar".into(),
                cpu_nanocores: 100_000_000,
                memory_bytes: 1024,
            },
        ];
        let sample = Sample::from_report(&split, at).unwrap();
        let metrics = pod_metrics(&pod, &sample, at);
        assert_eq!(metrics["containers"][1]["name"], "sidecar");
        assert_eq!(metrics["containers"][1]["usage"]["cpu"], "100000000n");
        assert_eq!(metrics["containers"][1]["usage"]["memory"], "1Ki");
    }

    #[test]
    fn samples_of_a_namesake_or_too_old_are_not_shown() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let metrics = Metrics::default();
        let sample = Sample::from_report(&usage(1_000_000, 1000), at).unwrap();
        metrics.record_pod("shop", "web-1", "u1", sample.clone());
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"}});
        let namesake = json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u2"}});
        assert_eq!(metrics.pod(&pod, at), Some(sample.clone()));
        assert_eq!(metrics.pod(&namesake, at), None);
        assert_eq!(metrics.pod(&pod, at + STALE + Duration::from_secs(1)), None);
        metrics.record_node("n1", sample.clone());
        assert_eq!(metrics.node("n1", at + STALE), Some(sample));
        assert_eq!(
            metrics.node("n1", at + STALE + Duration::from_secs(1)),
            None
        );
        let node = json!({"metadata": {"name": "n1", "labels": {"role": "worker"}}});
        let shown = node_metrics(&node, &metrics.node("n1", at).unwrap(), at);
        assert_eq!(shown["kind"], "NodeMetrics");
        assert_eq!(shown["usage"]["cpu"], "1000000n");
        assert!(shown["metadata"].get("namespace").is_none());
    }
}
