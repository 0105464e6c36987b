//! Restarts asked by the node's volume manager: a volume the host cannot
//! grow while mounted is grown once its pods have given it back, so those
//! pods are restarted (containers stopped, volumes torn down, then set up
//! again, which stages the volume grown, and the containers started).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use c4m_api::agent::ContainerEvent;
use tokio::sync::Notify;

use crate::volumes::{RestartReason, RestartUsers};

/// Pods to restart, by uid, with why; shared by the volume manager (who
/// asks) and the supervisor (who restarts).
#[derive(Clone, Debug, Default)]
pub(crate) struct Restarts {
    asked: Arc<Mutex<BTreeMap<String, RestartReason>>>,
    /// Restarted pods (by instance id) whose new run is told why.
    restarted: Arc<Mutex<BTreeMap<String, RestartReason>>>,
    pub(crate) wake: Arc<Notify>,
}

impl RestartUsers for Restarts {
    fn restart(&self, pod_uids: Vec<String>, why: RestartReason) {
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        for uid in pod_uids {
            asked.insert(uid, why.clone());
        }
        drop(asked);
        self.wake.notify_one();
    }
}

impl Restarts {
    /// Takes the restart asked for pod `uid` (instance id `id`), if any,
    /// and keeps its reason for the pod's next run.
    pub(crate) fn take(&self, uid: Option<&str>, id: &str) -> bool {
        let reason = uid.and_then(|uid| {
            self.asked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(uid)
        });
        match reason {
            Some(reason) => {
                tracing::info!(instance = %id, reason = %reason.message, "restarting the pod for its volume");
                self.restarted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id.to_string(), reason);
                true
            }
            None => false,
        }
    }

    /// The Event of a pod's run after such a restart, once.
    pub(crate) fn event_for(&self, id: &str) -> Option<ContainerEvent> {
        let why = self
            .restarted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)?;
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Some(ContainerEvent {
            id: format!("{}-{at}", why.event),
            reason: why.event.into(),
            message: why.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asked_restart_is_taken_once_and_told_once() {
        let restarts = Restarts::default();
        restarts.restart(vec!["u1".into()], RestartReason::resize("pvc-1"));
        assert!(!restarts.take(Some("u2"), "shop_b_u2"));
        assert!(restarts.take(Some("u1"), "shop_a_u1"));
        assert!(!restarts.take(Some("u1"), "shop_a_u1"), "taken once");
        let event = restarts.event_for("shop_a_u1").unwrap();
        assert_eq!(event.reason, "FileSystemResizeRequired");
        assert!(event.message.contains("pvc-1"));
        assert!(restarts.event_for("shop_a_u1").is_none(), "told once");
    }
}
