//! Node lifecycle: a node whose agent stops sending heartbeats turns
//! NotReady; once it has been NotReady for the eviction delay, its instances
//! are evicted: those a workload owns are deleted (and so re-created and
//! scheduled elsewhere), bare ones are marked Failed with reason NodeLost.
//!
//! Heartbeats are kept in memory only: writing each one to the store would
//! cost a durable write per node per interval for no benefit. After a control
//! plane restart every node gets a full grace period to check in again.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::json;

use super::latest;
use crate::Result;
use crate::cache::Cache;
use crate::deletion::DeleteOptions;
use crate::objects::{Objects, kind, name_of, namespace_of};
use crate::pods::{controller_uid, is_terminal, set_condition};

/// When each node's agent was last heard from, and since when it is NotReady.
#[derive(Debug)]
pub(crate) struct NodeHealth {
    last_heartbeat: DashMap<String, Instant>,
    not_ready_since: DashMap<String, Instant>,
    grace: Duration,
    eviction_delay: Duration,
}

impl NodeHealth {
    /// Nodes turn NotReady after `grace` without heartbeat; their instances
    /// are evicted after a further `eviction_delay`.
    pub(crate) fn new(grace: Duration, eviction_delay: Duration) -> Self {
        NodeHealth {
            last_heartbeat: DashMap::new(),
            not_ready_since: DashMap::new(),
            grace,
            eviction_delay,
        }
    }

    /// Records a heartbeat from `node`.
    pub(crate) fn heartbeat(&self, node: &str) {
        self.last_heartbeat.insert(node.to_string(), Instant::now());
        self.not_ready_since.remove(node);
    }

    fn last_heard(&self, node: &str) -> Instant {
        *self
            .last_heartbeat
            .entry(node.to_string())
            .or_insert_with(Instant::now)
    }

    fn not_ready_for(&self, node: &str) -> Duration {
        self.not_ready_since
            .entry(node.to_string())
            .or_insert_with(Instant::now)
            .elapsed()
    }
}

/// One pass: mark silent nodes NotReady, evict instances of nodes NotReady
/// for longer than the eviction delay.
pub(crate) async fn reconcile(
    objects: &Objects,
    cache: &Cache,
    health: &NodeHealth,
) -> Result<Option<i64>> {
    let mut written = None;
    // Readiness comes from the cache's index: this pass runs twice a
    // second over every node, and decodes none.
    for (name, ready) in cache.node_readiness() {
        let silent = health.last_heard(&name).elapsed() > health.grace;
        if ready {
            if !silent {
                continue;
            }
            tracing::warn!(node = %name, "node stopped sending heartbeats; marking it NotReady");
            written = latest(
                written,
                objects
                    .update_with(kind("nodes"), "", &name, |node| {
                        set_condition(
                            node,
                            "Ready",
                            false,
                            "NodeStatusUnknown",
                            "the agent stopped posting node status",
                        )
                    })
                    .await?,
            );
            health.not_ready_for(&name);
            continue;
        }
        if health.not_ready_for(&name) < health.eviction_delay {
            continue;
        }
        for pod in cache.pods_on_node(&name).iter().filter(|p| !is_terminal(p)) {
            written = latest(written, evict(objects, pod, &name).await?);
        }
    }
    Ok(written)
}

async fn evict(objects: &Objects, pod: &serde_json::Value, node: &str) -> Result<Option<i64>> {
    let (namespace, name) = (namespace_of(pod), name_of(pod));
    tracing::info!(instance = %name, node, "evicting instance from a NotReady node");
    if controller_uid(pod).is_some() {
        // No agent answers for the node: nothing would report the
        // instance stopped, so it is removed at once.
        let force = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        return match objects
            .delete_with(kind("pods"), namespace, name, &force)
            .await
        {
            Ok(deleted) => Ok(Some(deleted.revision)),
            Err(crate::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
    }
    objects
        .update_with(kind("pods"), namespace, name, |pod| {
            if is_terminal(pod) {
                return false;
            }
            let Some(status) = crate::json::owned_object(pod, "status") else {
                return false;
            };
            status.insert("phase".into(), json!("Failed"));
            status.insert("reason".into(), json!("NodeLost"));
            status.insert(
                "message".into(),
                json!(format!("node {node} stopped responding")),
            );
            set_condition(
                pod,
                "Ready",
                false,
                "NodeLost",
                "the node stopped responding",
            );
            true
        })
        .await
}
