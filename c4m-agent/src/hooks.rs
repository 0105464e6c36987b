//! Lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`) as the
//! kubelet runs them: `exec` through the driver and `httpGet` to the
//! container's port, both by the node's [`Prober`] (the same paths as exec
//! and HTTP probes), and `sleep` here. The supervisor decides when: a
//! postStart right after the container starts, a preStop before every stop
//! signal, within the grace period.

use std::time::Duration;

use c4m_core::{ContainerRuntime, ContainerStatus, Instance, Prober};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

/// The least time a container gets between its stop signal and the kill,
/// whatever its preStop hook took (the kubelet's
/// `minimumGracePeriodInSeconds`).
pub(crate) const MINIMUM_STOP_GRACE: Duration = Duration::from_secs(2);

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    /// The handler `container` declares for this hook.
    pub(crate) fn of(self, container: &Container) -> Option<&LifecycleHandler> {
        let lifecycle = container.lifecycle.as_ref()?;
        match self {
            Hook::PostStart => lifecycle.post_start.as_ref(),
            Hook::PreStop => lifecycle.pre_stop.as_ref(),
        }
    }

    /// The reason of the Event its failure gives.
    pub(crate) fn failure_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// A hook to run: the handler, and whom it is for (for messages).
#[derive(Clone)]
pub(crate) struct HookRun {
    pub handler: LifecycleHandler,
    /// The container's name.
    pub container: String,
    /// The pod as the kubelet names it in messages: `name_namespace(uid)`.
    pub pod: String,
}

impl HookRun {
    /// The `hook` of container `name` of `pod`, if it has one.
    pub(crate) fn of(hook: Hook, pod: &Instance, container: &Container) -> Option<HookRun> {
        let meta = &pod.metadata;
        Some(HookRun {
            handler: hook.of(container)?.clone(),
            container: container.name.clone(),
            pod: format!(
                "{}_{}({})",
                meta.name.as_deref().unwrap_or_default(),
                meta.namespace.as_deref().unwrap_or_default(),
                meta.uid.as_deref().unwrap_or_default()
            ),
        })
    }

    /// Runs the handler against the container `status` describes (its
    /// ports where they are reached), bounded by `timeout`. `Err` says what
    /// failed in the kubelet's words: `Exec lifecycle hook ([sh -c exit 1])
    /// for Container "web" in Pod "web_shop(uid)" failed - error: ...`.
    pub(crate) async fn run(
        &self,
        prober: &dyn Prober,
        runtime: &dyn ContainerRuntime,
        status: &ContainerStatus,
        timeout: Duration,
    ) -> Result<(), String> {
        let handler = &self.handler;
        let (what, attempt) = if let Some(sleep) = &handler.sleep {
            let seconds = Duration::from_secs(sleep.seconds.max(0).unsigned_abs());
            let what = format!("Sleep lifecycle hook ({})", sleep.seconds);
            (what, futures::future::Either::Left(sleep_for(seconds)))
        } else {
            let what = match (&handler.exec, &handler.http_get) {
                (Some(exec), _) => format!(
                    "Exec lifecycle hook ({:?})",
                    exec.command.as_deref().unwrap_or_default()
                ),
                (None, Some(http)) => format!(
                    "HTTP lifecycle hook ({})",
                    http.path.as_deref().unwrap_or("/")
                ),
                (None, None) => format!("Lifecycle hook for Container {:?}", self.container),
            };
            // The prober bounds an attempt by whole seconds; the exact
            // bound is the timeout below.
            let probe = Probe {
                exec: handler.exec.clone(),
                http_get: handler.http_get.clone(),
                timeout_seconds: Some(
                    i32::try_from(timeout.as_secs().saturating_add(1)).unwrap_or(i32::MAX),
                ),
                ..Probe::default()
            };
            let attempt = async move {
                if probe.exec.is_none() && probe.http_get.is_none() {
                    return Err("no exec, httpGet or sleep handler".to_string());
                }
                prober
                    .probe_once(&probe, runtime, status)
                    .await
                    .map_err(|e| e.to_string())
            };
            (what, futures::future::Either::Right(attempt))
        };
        let error = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => format!("did not finish within {timeout:?}"),
        };
        Err(format!(
            "{what} for Container {:?} in Pod {:?} failed - error: {error}",
            self.container, self.pod
        ))
    }
}

async fn sleep_for(duration: Duration) -> Result<(), String> {
    tokio::time::sleep(duration).await;
    Ok(())
}

/// What is left of `grace` for the stop signal once a preStop hook took
/// `spent`: at least [`MINIMUM_STOP_GRACE`], as the kubelet gives.
pub(crate) fn grace_after_hook(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(MINIMUM_STOP_GRACE)
}
