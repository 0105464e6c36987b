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
        let what = match (&handler.sleep, &handler.exec, &handler.http_get) {
            (Some(sleep), _, _) => format!("Sleep lifecycle hook ({})", sleep.seconds),
            (None, Some(exec), _) => format!(
                "Exec lifecycle hook ({:?})",
                exec.command.as_deref().unwrap_or_default()
            ),
            (None, None, Some(http)) => format!(
                "HTTP lifecycle hook ({})",
                http.path.as_deref().unwrap_or("/")
            ),
            (None, None, None) => format!("Lifecycle hook for Container {:?}", self.container),
        };
        let attempt = async {
            if let Some(sleep) = &handler.sleep {
                let seconds = Duration::from_secs(sleep.seconds.max(0).unsigned_abs());
                tokio::time::sleep(seconds).await;
                return Ok(());
            }
            if handler.exec.is_none() && handler.http_get.is_none() {
                return Err("no exec, httpGet or sleep handler".to_string());
            }
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
            prober
                .probe_once(&probe, runtime, status)
                .await
                .map_err(|e| e.to_string())
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

/// What is left of `grace` for the stop signal once a preStop hook took
/// `spent`: at least [`MINIMUM_STOP_GRACE`], as the kubelet gives.
pub(crate) fn grace_after_hook(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(MINIMUM_STOP_GRACE)
}

#[cfg(test)]
mod tests {
    use c4m_core::testing::FakeRuntime;
    use c4m_core::{ContainerSpec, ContainerState, PortBinding};
    use c4m_runtime::DefaultProber;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// The hook `handler` (JSON) of container `web` in pod `web_shop(u1)`.
    fn hook(handler: serde_json::Value) -> HookRun {
        HookRun {
            handler: serde_json::from_value(handler).unwrap(),
            container: "web".into(),
            pod: "web_shop(u1)".into(),
        }
    }

    /// A running container whose port 80 is reached at 127.0.0.1:`port`.
    fn reached_at(port: u16) -> ContainerStatus {
        ContainerStatus {
            id: "web".into(),
            spec: ContainerSpec::default(),
            state: ContainerState::Running {
                pid: 1,
                started_at: std::time::SystemTime::now(),
            },
            ports: vec![PortBinding {
                name: "http".into(),
                container_port: 80,
                host_ip: "127.0.0.1".into(),
                host_port: port,
                protocol: "TCP".into(),
            }],
        }
    }

    /// An httpGet hook requests the container's port, by number or name,
    /// as an httpGet probe does; a status of 500 fails it, in the kubelet's
    /// words.
    #[tokio::test]
    async fn http_get_requests_the_containers_port_as_a_probe_does() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut paths = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 4096];
                let n = stream.read(&mut request).await.unwrap();
                let request = String::from_utf8_lossy(&request[..n]).to_string();
                let path = request.split(' ').nth(1).unwrap_or_default().to_string();
                let status = if path == "/quit" {
                    "200 OK"
                } else {
                    "500 Oops"
                };
                let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                stream.write_all(response.as_bytes()).await.unwrap();
                paths.push(path);
            }
            paths
        });
        let runtime = FakeRuntime::new();
        let status = reached_at(port);
        let timeout = Duration::from_secs(5);
        hook(serde_json::json!({"httpGet": {"path": "/quit", "port": 80}}))
            .run(&DefaultProber, &runtime, &status, timeout)
            .await
            .unwrap();
        let error = hook(serde_json::json!({"httpGet": {"path": "/broken", "port": "http"}}))
            .run(&DefaultProber, &runtime, &status, timeout)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            format!(
                "HTTP lifecycle hook (/broken) for Container \"web\" in Pod \"web_shop(u1)\" failed - error: HTTP GET http://127.0.0.1:{port}/broken: status 500"
            )
        );
        assert_eq!(server.await.unwrap(), ["/quit", "/broken"]);
    }

    /// A sleep hook sleeps its seconds, cut at the timeout (a preStop's
    /// grace period), which fails it.
    #[tokio::test]
    async fn sleep_sleeps_within_the_timeout() {
        let runtime = FakeRuntime::new();
        let status = reached_at(1);
        let began = std::time::Instant::now();
        hook(serde_json::json!({"sleep": {"seconds": 1}}))
            .run(&DefaultProber, &runtime, &status, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(began.elapsed() >= Duration::from_secs(1));
        let error = hook(serde_json::json!({"sleep": {"seconds": 60}}))
            .run(
                &DefaultProber,
                &runtime,
                &status,
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert_eq!(
            error,
            "Sleep lifecycle hook (60) for Container \"web\" in Pod \"web_shop(u1)\" failed - error: did not finish within 200ms"
        );
        assert_eq!(
            grace_after_hook(Duration::from_secs(30), Duration::from_secs(5)),
            Duration::from_secs(25)
        );
        assert_eq!(
            grace_after_hook(Duration::from_secs(3), Duration::from_secs(3)),
            MINIMUM_STOP_GRACE
        );
    }
}
