//! Fakes of the seams, for tests (feature `test-util`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::stream::BoxStream;

use crate::runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus, ExecOutput, LogOptions,
    ResourceUsage,
};
use crate::{Error, Result};

/// A container driver in memory: it runs nothing, remembers what it was
/// asked, and lets a test end a container, fail the next starts, or see an
/// earlier process's containers (adoption). Clones share one state, so a
/// test keeps a handle while an agent owns another.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    name: Option<String>,
    takes_network_namespace: bool,
    one_container_per_pod: bool,
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    containers: HashMap<String, ContainerStatus>,
    starts: HashMap<String, u32>,
    /// Every start, in order: (container id, when).
    start_log: Vec<(String, SystemTime)>,
    failing_starts: u32,
    /// Containers whose next start ends at once with this exit code
    /// (the process exited before the driver answered).
    exiting_at_start: HashMap<String, i32>,
    /// Images no registry has: starting a container of one fails to pull.
    missing_images: HashSet<String>,
    next_pid: u32,
    /// Every stop: (container id, grace period, when).
    stops: Vec<(String, Duration, SystemTime)>,
    /// What each container wrote to its log.
    logs: HashMap<String, Vec<u8>>,
}

impl FakeRuntime {
    /// A fake named `fake`, whose containers share the node's network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same fake under another driver name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Its containers join the network namespace the agent makes.
    pub fn taking_network_namespace(mut self) -> Self {
        self.takes_network_namespace = true;
        self
    }

    /// It runs one container per pod (as `docker`, `cri`): the agent
    /// refuses pods of several.
    pub fn one_container_per_pod(mut self) -> Self {
        self.one_container_per_pod = true;
        self
    }

    /// The ids of the containers started, in the order of their starts
    /// (a restart is listed again).
    pub fn start_order(&self) -> Vec<String> {
        self.state()
            .start_log
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When `id` was last started, if it was.
    pub fn started_at(&self, id: &str) -> Option<SystemTime> {
        let state = self.state();
        state
            .start_log
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, at)| *at)
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Container `id` writes `text` to its log.
    pub fn write_log(&self, id: &str, text: &str) {
        let mut state = self.state();
        let log = state.logs.entry(id.to_string()).or_default();
        log.extend_from_slice(text.as_bytes());
    }

    /// Every stop asked for: (container id, grace period, when), in order.
    pub fn stops(&self) -> Vec<(String, Duration, SystemTime)> {
        self.state().stops.clone()
    }

    /// How many times `id` was started.
    pub fn starts(&self, id: &str) -> u32 {
        self.state().starts.get(id).copied().unwrap_or(0)
    }

    /// The ids of the containers it knows, running or exited, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state().containers.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The container's status, if it knows it.
    pub fn container(&self, id: &str) -> Option<ContainerStatus> {
        self.state().containers.get(id).cloned()
    }

    /// Ends a running container's main process with `exit_code`, as if it
    /// exited on its own. False when no such container runs.
    pub fn exit(&self, id: &str, exit_code: i32) -> bool {
        let mut state = self.state();
        let Some(container) = state.containers.get_mut(id) else {
            return false;
        };
        let ContainerState::Running { started_at, .. } = container.state else {
            return false;
        };
        container.state = ContainerState::Exited {
            exit_code: Some(exit_code),
            signal: None,
            oom_killed: false,
            started_at,
            finished_at: SystemTime::now(),
        };
        true
    }

    /// Makes the next start of `id` report a process that already exited
    /// with `exit_code`, as a driver does for one that ends at once.
    pub fn exit_at_next_start(&self, id: &str, exit_code: i32) {
        self.state()
            .exiting_at_start
            .insert(id.to_string(), exit_code);
    }

    /// Makes the next `count` starts fail.
    pub fn fail_next_starts(&self, count: u32) {
        self.state().failing_starts = count;
    }

    /// Makes `image` unpullable until [`FakeRuntime::publish_image`]:
    /// starts of its containers fail with [`Error::Image`].
    pub fn lack_image(&self, image: &str) {
        self.state().missing_images.insert(image.to_string());
    }

    /// Makes an image [`FakeRuntime::lack_image`] named pullable again.
    pub fn publish_image(&self, image: &str) {
        self.state().missing_images.remove(image);
    }

    /// Adds a running container as an earlier agent process would have left
    /// it, for adoption.
    pub fn adopt(&self, spec: ContainerSpec) {
        let mut state = self.state();
        let status = running(&mut state, &spec);
        state.containers.insert(spec.id.clone(), status);
    }
}

fn running(state: &mut FakeState, spec: &ContainerSpec) -> ContainerStatus {
    state.next_pid += 1;
    ContainerStatus {
        id: spec.id.clone(),
        spec: spec.clone(),
        state: ContainerState::Running {
            pid: 100_000 + state.next_pid,
            started_at: SystemTime::now(),
        },
        ports: Vec::new(),
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("fake")
    }

    fn version(&self) -> String {
        "fake 1".into()
    }

    fn takes_network_namespace(&self) -> bool {
        self.takes_network_namespace
    }

    fn runs_several_containers_per_pod(&self) -> bool {
        !self.one_container_per_pod
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        let mut state = self.state();
        if let Some(ContainerStatus {
            state: ContainerState::Running { .. },
            ..
        }) = state.containers.get(&spec.id)
        {
            return Err(Error::Runtime {
                id: spec.id.clone(),
                message: "already running".into(),
            });
        }
        *state.starts.entry(spec.id.clone()).or_default() += 1;
        if let Some(image) = spec
            .image
            .as_ref()
            .filter(|image| state.missing_images.contains(*image))
        {
            if spec.pull_policy == crate::PullPolicy::Never {
                return Err(Error::ImageNeverPull {
                    reference: image.clone(),
                });
            }
            return Err(Error::Image {
                reference: image.clone(),
                source: "manifest unknown (as the test asked)".into(),
            });
        }
        if state.failing_starts > 0 {
            state.failing_starts -= 1;
            return Err(Error::Runtime {
                id: spec.id.clone(),
                message: "start failed (as the test asked)".into(),
            });
        }
        let mut status = running(&mut state, spec);
        if let Some(exit_code) = state.exiting_at_start.remove(&spec.id) {
            status.state = ContainerState::Exited {
                exit_code: Some(exit_code),
                signal: None,
                oom_killed: false,
                started_at: SystemTime::now(),
                finished_at: SystemTime::now(),
            };
        }
        state.containers.insert(spec.id.clone(), status.clone());
        state.start_log.push((spec.id.clone(), SystemTime::now()));
        Ok(status)
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.container(id)
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self.state().containers.values().cloned().collect())
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let mut state = self.state();
        state.stops.push((id.to_string(), grace, SystemTime::now()));
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))?;
        if let ContainerState::Running { started_at, .. } = container.state {
            container.state = ContainerState::Exited {
                exit_code: Some(143),
                signal: Some(15),
                oom_killed: false,
                started_at,
                finished_at: SystemTime::now(),
            };
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.state().containers.remove(id);
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<ResourceUsage> {
        self.status(id).await?;
        Ok(ResourceUsage {
            cpu_nanos: 1_000_000,
            memory_bytes: 4 << 20,
            pids: 1,
        })
    }

    /// What the container wrote ([`FakeRuntime::write_log`]), its last
    /// `tail_lines` lines if asked; the other options are not applied.
    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.status(id).await?;
        let log = self.state().logs.get(id).cloned().unwrap_or_default();
        let lines: Vec<&[u8]> = log.split_inclusive(|b| *b == b'\n').collect();
        let skip = options
            .tail_lines
            .map_or(0, |tail| lines.len().saturating_sub(tail));
        let text = lines[skip..].concat();
        if text.is_empty() {
            return Ok(Box::pin(Empty));
        }
        Ok(Box::pin(Once(Some(Bytes::from(text)))))
    }

    async fn exec(&self, id: &str, command: &[String], _timeout: Duration) -> Result<ExecOutput> {
        self.status(id).await?;
        Ok(ExecOutput {
            exit_code: 0,
            stdout: command.join(" ").into_bytes(),
            stderr: Vec::new(),
        })
    }
}

/// A stream of one chunk (futures-core has none).
struct Once(Option<Bytes>);

impl futures_core::Stream for Once {
    type Item = Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.take().map(Ok))
    }
}

/// A stream that ends at once (futures-core has none).
struct Empty;

impl futures_core::Stream for Empty {
    type Item = Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(None)
    }
}

/// A prober whose attempts succeed or fail as the test says (all succeed
/// until told otherwise), counting them. Clones share one state.
#[derive(Clone, Default)]
pub struct FakeProber {
    state: Arc<Mutex<ProberState>>,
}

#[derive(Default)]
struct ProberState {
    failing: bool,
    attempts: u64,
    /// Exec attempts whose command's first word is here fail.
    failing_commands: HashSet<String>,
    /// Exec attempts whose command's first word is here never end (the
    /// caller's timeout ends them).
    hanging_commands: HashSet<String>,
    /// Every exec attempt: the container, its command, whether the
    /// container was running then.
    execs: Vec<ProbedExec>,
}

/// One exec attempt a [`FakeProber`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedExec {
    /// The container's id.
    pub id: String,
    /// The command, words joined by spaces.
    pub command: String,
    /// The driver said the container was running when the attempt began.
    pub running: bool,
    /// When the attempt began.
    pub at: SystemTime,
}

impl FakeProber {
    /// A prober whose attempts succeed.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, ProberState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on attempts fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Exec attempts of commands starting with `word` fail with exit code 1.
    pub fn fail_command(&self, word: &str) {
        self.state().failing_commands.insert(word.to_string());
    }

    /// Exec attempts of commands starting with `word` never end.
    pub fn hang_command(&self, word: &str) {
        self.state().hanging_commands.insert(word.to_string());
    }

    /// How many attempts ran.
    pub fn attempts(&self) -> u64 {
        self.state().attempts
    }

    /// Every exec attempt so far, in order.
    pub fn execs(&self) -> Vec<ProbedExec> {
        self.state().execs.clone()
    }
}

#[async_trait]
impl crate::Prober for FakeProber {
    async fn probe_once(
        &self,
        probe: &k8s_openapi::api::core::v1::Probe,
        runtime: &dyn ContainerRuntime,
        status: &ContainerStatus,
    ) -> std::result::Result<(), crate::ProbeFailure> {
        let command = probe
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .unwrap_or_default();
        let running = matches!(
            runtime.status(&status.id).await.map(|s| s.state),
            Ok(ContainerState::Running { .. })
        );
        let first = command.first().cloned().unwrap_or_default();
        let hangs = {
            let mut state = self.state();
            state.attempts += 1;
            if probe.exec.is_some() {
                state.execs.push(ProbedExec {
                    id: status.id.clone(),
                    command: command.join(" "),
                    running,
                    at: SystemTime::now(),
                });
            }
            if state.failing || state.failing_commands.contains(&first) {
                return Err(crate::ProbeFailure(format!(
                    "{}: failing (as the test asked)",
                    status.id
                )));
            }
            state.hanging_commands.contains(&first)
        };
        if hangs {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}
