//! The supervisor against a fake driver: restarts with backoff, adoption of
//! what an earlier agent left running, removal of what is no longer
//! assigned. No root, no containers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c4m_api::agent::InstanceStatus;
use c4m_core::testing::{FakeProber, FakeRuntime};
use c4m_core::{ContainerSpec, Instance};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{RestartBackoff, Restarts, Supervisor, container_id};

/// A supervisor over `runtime` with short restart delays, and the handles a
/// test drives it with.
struct Harness {
    assignments: watch::Sender<Option<crate::session::AssignmentSet>>,
    statuses: watch::Receiver<Arc<Vec<InstanceStatus>>>,
    /// Where the volume manager asks for restarts.
    restarts: Restarts,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

const BACKOFF: RestartBackoff = RestartBackoff {
    initial: Duration::from_millis(300),
    max: Duration::from_millis(1200),
    reset: Duration::from_secs(600),
    // Long enough that ErrImagePull (shown for half the wait) outlives a
    // few of the supervisor's ticks.
    image_pull_initial: Duration::from_millis(1000),
    image_pull_max: Duration::from_millis(2000),
};

impl Harness {
    fn start(runtime: &FakeRuntime) -> Harness {
        Harness::start_probing(runtime, &FakeProber::new())
    }

    fn start_probing(runtime: &FakeRuntime, prober: &FakeProber) -> Harness {
        Harness::start_with(runtime, prober, None)
    }

    fn start_with(
        runtime: &FakeRuntime,
        prober: &FakeProber,
        volumes: Option<crate::pod_volumes::PodVolumes>,
    ) -> Harness {
        let (assignments, assignments_rx) = watch::channel(None);
        let (statuses_tx, statuses) = watch::channel(Arc::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let restarts = Restarts::default();
        let supervisor = Supervisor {
            runtimes: vec![Arc::new(runtime.clone())],
            assignments: assignments_rx,
            statuses: statuses_tx,
            directory: Arc::default(),
            dns_address: watch::channel(String::new()).1,
            network: None,
            pod_namespaces: None,
            holders: None,
            volumes,
            restarts: restarts.clone(),
            prober: Arc::new(prober.clone()),
            backoff: BACKOFF,
            pod_etc: crate::pod_etc::PodEtc::new(&std::env::temp_dir(), "cluster.local"),
        };
        let running = tokio::spawn(supervisor.run(shutdown.clone()));
        Harness {
            assignments,
            statuses,
            restarts,
            shutdown,
            running,
        }
    }

    fn assign(&self, pods: &[Instance]) {
        let set = pods.iter().cloned().map(Arc::new).collect();
        self.assignments.send_replace(Some(Arc::new(set)));
    }

    /// The statuses once `done` holds for them (at most 20 s).
    async fn wait_for(&mut self, done: impl Fn(&[InstanceStatus]) -> bool) -> Vec<InstanceStatus> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let current = self.statuses.borrow_and_update().clone();
                if done(&current) {
                    return current.to_vec();
                }
                self.statuses.changed().await.expect("the supervisor runs");
            }
        })
        .await
        .expect("the supervisor reported in time")
    }

    /// The statuses once the first instance runs.
    async fn wait_running(&mut self) -> Vec<InstanceStatus> {
        self.wait_for(|s| s.first().is_some_and(|s| s.phase == "Running"))
            .await
    }

    /// Assigns `pod` and insists it waits with CreateContainerConfigError,
    /// its message starting with `refusal`, none of its containers started.
    async fn assert_refused(&mut self, runtime: &FakeRuntime, pod: &Instance, refusal: &str) {
        self.assign(std::slice::from_ref(pod));
        let refused = self
            .wait_for(|s| {
                s.first()
                    .is_some_and(|s| s.reason == "CreateContainerConfigError")
            })
            .await;
        assert!(refused[0].message.starts_with(refusal), "{refused:?}");
        assert_eq!(runtime.starts(&container_id(pod)), 0);
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.await.expect("the supervisor does not panic");
    }
}

fn pod(name: &str) -> Instance {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "main", "command": ["serve"]}]},
    }))
    .unwrap()
}

/// Pod `web` of one container, `main`, with the spec fields of `extra`.
fn web_with(extra: serde_json::Value) -> Instance {
    let mut pod = serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
        "spec": {"containers": [{"name": "main", "command": ["serve"]}]},
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(pod).unwrap()
}

fn restarts(statuses: &[InstanceStatus]) -> i32 {
    statuses.first().map_or(0, |s| s.restart_count)
}

#[tokio::test]
async fn a_crashing_container_restarts_with_doubling_delays() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let web = pod("web");
    let id = container_id(&web);
    harness.assign(std::slice::from_ref(&web));
    harness.wait_running().await;
    assert_eq!(runtime.starts(&id), 1);

    // Each crash waits longer than the one before: 300 ms, 600 ms, 1.2 s
    // (the cap), 1.2 s. Only lower bounds are asserted: a slow machine
    // restarts later, never sooner.
    let mut delays = Vec::new();
    for crash in 1..=4 {
        assert!(
            runtime.exit(&id, 1),
            "the container runs before crash {crash}"
        );
        let crashed = Instant::now();
        let statuses = harness
            .wait_for(|s| restarts(s) == crash && s[0].phase == "Running")
            .await;
        delays.push(crashed.elapsed());
        assert_eq!(statuses[0].last_termination_reason, "Error", "{statuses:?}");
        assert_eq!(runtime.starts(&id), crash as u32 + 1);
    }
    let expected = [300, 600, 1200, 1200].map(Duration::from_millis);
    for (delay, at_least) in delays.iter().zip(expected) {
        assert!(
            *delay >= at_least,
            "restarted after {delay:?}, before its backoff of {at_least:?}: {delays:?}"
        );
    }
    harness.stop().await;
    // Containers outlive the supervisor.
    assert_eq!(runtime.ids(), [id]);
}

#[tokio::test]
async fn a_failing_start_is_retried_with_backoff() {
    let runtime = FakeRuntime::new();
    runtime.fail_next_starts(2);
    let mut harness = Harness::start(&runtime);
    let web = pod("web");
    let id = container_id(&web);
    let started = Instant::now();
    harness.assign(std::slice::from_ref(&web));
    harness.wait_running().await;
    assert_eq!(
        runtime.starts(&id),
        3,
        "two failed starts, then one that worked"
    );
    assert!(started.elapsed() >= Duration::from_millis(300 + 600));
    harness.stop().await;
}

/// An image that cannot be pulled shows `ErrImagePull`, then
/// `ImagePullBackOff` while the next pull waits; pulls are spaced by their
/// own doubling backoff, and the container starts once the image appears,
/// without counting a restart.
#[tokio::test]
async fn an_unpullable_image_shows_err_image_pull_then_image_pull_back_off() {
    let runtime = FakeRuntime::new();
    let image = "127.0.0.1:1/nosuch:1";
    runtime.lack_image(image);
    let mut harness = Harness::start(&runtime);
    let mut web = pod("web");
    web.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    let id = container_id(&web);
    let assigned = Instant::now();
    harness.assign(std::slice::from_ref(&web));
    let reason = |s: &[InstanceStatus]| s.first().map(|s| s.reason.clone()).unwrap_or_default();
    let failed = harness.wait_for(|s| reason(s) == "ErrImagePull").await;
    assert_eq!(failed[0].phase, "Pending", "{failed:?}");
    assert!(failed[0].message.contains("manifest unknown"), "{failed:?}");
    let waiting = harness.wait_for(|s| reason(s) == "ImagePullBackOff").await;
    assert_eq!(
        waiting[0].message,
        format!("Back-off pulling image {image:?}"),
        "{waiting:?}"
    );
    assert_eq!(waiting[0].phase, "Pending");
    // The second pull fails (ErrImagePull again), the third is 1 + 2 s
    // after the first.
    harness.wait_for(|_| runtime.starts(&id) >= 3).await;
    assert!(
        assigned.elapsed() >= Duration::from_millis(1000 + 2000),
        "pulled 3 times in {:?}",
        assigned.elapsed()
    );
    runtime.publish_image(image);
    let running = harness.wait_running().await;
    assert_eq!(running[0].reason, "");
    assert_eq!(running[0].restart_count, 0, "pulls are not restarts");
    harness.stop().await;
}

/// `imagePullPolicy: Never` with the image missing waits with the
/// kubelet's `ErrImageNeverPull` (never turned into `ImagePullBackOff`) and
/// starts once the node has the image.
#[tokio::test]
async fn a_missing_image_that_may_not_be_pulled_shows_err_image_never_pull() {
    let runtime = FakeRuntime::new();
    let image = "127.0.0.1:1/local-only:1";
    runtime.lack_image(image);
    let mut harness = Harness::start(&runtime);
    let mut web = pod("web");
    let container = &mut web.spec.as_mut().unwrap().containers[0];
    container.image = Some(image.into());
    container.image_pull_policy = Some("Never".into());
    harness.assign(std::slice::from_ref(&web));
    let reason = |s: &[InstanceStatus]| s.first().map(|s| s.reason.clone()).unwrap_or_default();
    let waiting = harness.wait_for(|s| reason(s) == "ErrImageNeverPull").await;
    assert_eq!(
        waiting[0].message,
        format!("Container image {image:?} is not present with pull policy of Never")
    );
    // Still the same reason after the moment ErrImagePull would turn
    // into ImagePullBackOff (half the 1 s pull backoff).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reason(&harness.statuses.borrow()), "ErrImageNeverPull");
    runtime.publish_image(image);
    harness.wait_running().await;
    harness.stop().await;
}

/// A pod whose node's default driver shares the node's `/etc/hosts`
/// cannot have its `hostAliases`: it waits with
/// `CreateContainerConfigError` naming the field, and is not started.
#[tokio::test]
async fn fields_the_nodes_default_driver_cannot_honour_are_refused_by_name() {
    let runtime = FakeRuntime::new().named("process");
    let mut harness = Harness::start(&runtime);
    let mut web =
        web_with(serde_json::json!({"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}]}));
    let refusal = "spec.hostAliases: the process driver cannot honour it";
    harness.assert_refused(&runtime, &web, refusal).await;
    // Without the field it runs.
    web.spec.as_mut().unwrap().host_aliases = None;
    web.metadata.uid = Some("uid-web-2".into());
    harness.assign(std::slice::from_ref(&web));
    harness.wait_running().await;
    harness.stop().await;
}

/// Without a namespace holder (an embedder's agent that names no
/// `pod_holder`), `shareProcessNamespace` is refused, naming the field.
#[tokio::test]
async fn share_process_namespace_needs_a_holder() {
    let runtime = FakeRuntime::new().named("oci").taking_network_namespace();
    let mut harness = Harness::start(&runtime);
    let web = web_with(serde_json::json!({"shareProcessNamespace": true}));
    let refusal = "spec.shareProcessNamespace: this agent starts no pod namespace holder";
    harness.assert_refused(&runtime, &web, refusal).await;
    harness.stop().await;
}

/// An ephemeral container added to a running pod starts once, is never
/// restarted, is reported apart, and leaves the pod's readiness alone; a
/// driver without pod namespaces refuses it by field and runs the rest.
#[tokio::test]
async fn an_added_ephemeral_container_runs_once() {
    let runtime = FakeRuntime::new().named("oci").taking_network_namespace();
    let mut harness = Harness::start(&runtime);
    let mut web = pod("web");
    harness.assign(std::slice::from_ref(&web));
    harness.wait_running().await;
    let debugger = format!("{}_debugger", container_id(&web));
    web.spec.as_mut().unwrap().ephemeral_containers = Some(vec![serde_json::from_value(
        serde_json::json!({"name": "debugger", "command": ["sh"], "targetContainerName": "main"}),
    )
    .unwrap()]);
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness
        .wait_for(|s| {
            s.first().is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == "debugger" && c.running.is_some())
            })
        })
        .await;
    let report = &statuses[0];
    let reported = report
        .containers
        .iter()
        .find(|c| c.name == "debugger")
        .unwrap();
    assert!(reported.ephemeral && !reported.init, "{reported:?}");
    assert!(report.ready, "{report:?}");
    assert!(runtime.exit(&debugger, 0));
    harness
        .wait_for(|s| {
            s.first().is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == "debugger" && c.terminated.is_some())
            })
        })
        .await;
    tokio::time::sleep(BACKOFF.initial * 3).await;
    assert_eq!(runtime.starts(&debugger), 1, "never restarted");
    assert_eq!(runtime.starts(&container_id(&web)), 1);
    harness.stop().await;

    let runtime = FakeRuntime::new().named("process");
    let mut harness = Harness::start(&runtime);
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness
        .wait_for(|s| {
            s.first().is_some_and(|s| {
                s.phase == "Running"
                    && s.containers.iter().any(|c| {
                        c.waiting
                            .as_ref()
                            .is_some_and(|w| w.reason == "CreateContainerConfigError")
                    })
            })
        })
        .await;
    let refused = statuses[0]
        .containers
        .iter()
        .find(|c| c.name == "debugger")
        .unwrap();
    let message = &refused.waiting.as_ref().unwrap().message;
    assert!(
        message.starts_with(
            "spec.ephemeralContainers[0]: the process driver cannot run ephemeral containers"
        ),
        "{message}"
    );
    assert_eq!(runtime.starts(&debugger), 0);
    harness.stop().await;
}

#[test]
fn a_containers_pod_is_the_first_three_parts_of_its_id() {
    for (container, pod) in [
        ("default_web_ab12cd34", "default_web_ab12cd34"),
        ("default_web_ab12cd34_sidecar", "default_web_ab12cd34"),
        ("default_web__sidecar", "default_web_"),
        ("default_web_", "default_web_"),
    ] {
        assert_eq!(super::pod_of_container(container), pod, "{container}");
    }
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_containers_and_removes_unassigned_ones() {
    let runtime = FakeRuntime::new();
    let web = pod("web");
    let id = container_id(&web);
    let stale = container_id(&pod("stale"));
    // What an earlier agent process left running.
    for left in [&id, &stale] {
        runtime.adopt(ContainerSpec {
            id: left.clone(),
            command: vec!["serve".into()],
            ..ContainerSpec::default()
        });
    }
    let mut harness = Harness::start(&runtime);
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness.wait_running().await;
    assert_eq!(statuses[0].name, "web");
    assert_eq!(runtime.starts(&id), 0, "adopted, not started again");
    // The container the assignment no longer names is removed.
    tokio::time::timeout(Duration::from_secs(20), async {
        while runtime.container(&stale).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the unassigned container is removed");
    assert_eq!(runtime.ids(), std::slice::from_ref(&id));

    // Unassigning the instance stops and removes it too.
    harness.assign(&[]);
    tokio::time::timeout(Duration::from_secs(20), async {
        while runtime.container(&id).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the unassigned instance is removed");
    harness.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_probe() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    prober.set_failing(true);
    let mut harness = Harness::start_probing(&runtime, &prober);
    let web: Instance = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
        "spec": {"containers": [{
            "name": "main", "command": ["serve"],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
        }]},
    }))
    .unwrap();
    harness.assign(std::slice::from_ref(&web));
    harness
        .wait_for(|s| s.first().is_some_and(|s| s.phase == "Running" && !s.ready))
        .await;
    // Running but not ready while the probe fails; ready once it passes.
    let failed_attempts = prober.attempts();
    prober.set_failing(false);
    harness
        .wait_for(|s| s.first().is_some_and(|s| s.ready))
        .await;
    assert!(prober.attempts() > failed_attempts);
    prober.set_failing(true);
    harness
        .wait_for(|s| s.first().is_some_and(|s| !s.ready))
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn a_deleted_pod_is_reported_until_its_container_is_removed() {
    use c4m_core::ContainerRuntime;
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let web = pod("web");
    harness.assign(std::slice::from_ref(&web));
    harness.wait_running().await;
    // The control plane marks it deleted; it stays in the assignment.
    let mut deleted = web.clone();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-07T00:00:00Z".parse().unwrap(),
        ));
    deleted.metadata.deletion_grace_period_seconds = Some(1);
    harness.assign(std::slice::from_ref(&deleted));
    harness.wait_for(<[InstanceStatus]>::is_empty).await;
    // Gone from the report only once its container is gone.
    assert!(runtime.list().await.unwrap().is_empty());
    harness.stop().await;
}

/// A pod of `init` containers (a name ending in `-sidecar` makes it a
/// sidecar) and `app` containers, each running `serve`.
fn pod_of(name: &str, policy: &str, init: &[&str], app: &[&str]) -> Instance {
    let container = |name: &&str| {
        let mut c = serde_json::json!({"name": name, "command": ["serve"]});
        if name.ends_with("-sidecar") {
            c["restartPolicy"] = "Always".into();
        }
        c
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {
            "restartPolicy": policy,
            "initContainers": init.iter().map(container).collect::<Vec<_>>(),
            "containers": app.iter().map(container).collect::<Vec<_>>(),
        },
    }))
    .unwrap()
}

/// The id of `pod`'s container `name`.
fn id_of(pod: &Instance, name: &str) -> String {
    super::containers_of(pod, &container_id(pod))
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.id)
        .unwrap()
}

/// The report on container `name` of the first instance.
fn container<'a>(
    statuses: &'a [InstanceStatus],
    name: &str,
) -> Option<&'a c4m_api::agent::ContainerReport> {
    statuses.first()?.containers.iter().find(|c| c.name == name)
}

/// Why container `name` of the first instance waits, if it does.
fn waiting_reason<'a>(statuses: &'a [InstanceStatus], name: &str) -> Option<&'a str> {
    let waiting = container(statuses, name)?.waiting.as_ref()?;
    Some(waiting.reason.as_str())
}

fn running(statuses: &[InstanceStatus], name: &str) -> bool {
    container(statuses, name).is_some_and(|c| c.running.is_some())
}

/// Init containers run one at a time, each to success, before a sidecar
/// that must be running before the app containers start.
#[tokio::test]
async fn init_containers_run_in_order_then_the_sidecar_then_the_app() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let web = pod_of(
        "web",
        "Always",
        &["first", "second", "log-sidecar"],
        &["app"],
    );
    let id = |name| id_of(&web, name);
    harness.assign(std::slice::from_ref(&web));

    let statuses = harness.wait_for(|s| running(s, "first")).await;
    assert_eq!(statuses[0].phase, "Pending");
    assert!(!statuses[0].initialized);
    let app = container(&statuses, "app").unwrap();
    assert_eq!(app.waiting.as_ref().unwrap().reason, "PodInitializing");
    assert_eq!(runtime.start_order(), [id("first")], "one at a time");

    runtime.exit(&id("first"), 0);
    harness.wait_for(|s| running(s, "second")).await;
    assert_eq!(runtime.start_order(), [id("first"), id("second")]);
    let statuses = harness.statuses.borrow().clone();
    let first = container(&statuses, "first").unwrap();
    assert_eq!(first.terminated.as_ref().unwrap().reason, "Completed");

    runtime.exit(&id("second"), 0);
    let statuses = harness
        .wait_for(|s| running(s, "app") && s[0].phase == "Running")
        .await;
    assert!(statuses[0].initialized);
    assert!(statuses[0].ready, "{statuses:?}");
    assert_eq!(
        runtime.start_order(),
        [id("first"), id("second"), id("log-sidecar"), id("app")]
    );
    assert!(running(&statuses, "log-sidecar"), "the sidecar stays up");
    assert!(runtime.started_at(&id("log-sidecar")) <= runtime.started_at(&id("app")));
    harness.stop().await;
}

/// A failing init container is retried with backoff (restartPolicy
/// Always), its restarts counted; the app waits for its success.
#[tokio::test]
async fn a_failing_init_container_is_retried_before_the_app_starts() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let web = pod_of("web", "Always", &["migrate"], &["app"]);
    let migrate = id_of(&web, "migrate");
    harness.assign(std::slice::from_ref(&web));
    harness.wait_for(|s| running(s, "migrate")).await;
    runtime.exit(&migrate, 3);
    let statuses = harness
        .wait_for(|s| container(s, "migrate").is_some_and(|c| c.restart_count == 1))
        .await;
    assert_eq!(statuses[0].phase, "Pending");
    assert_eq!(runtime.starts(&id_of(&web, "app")), 0);
    harness.wait_for(|s| running(s, "migrate")).await;
    runtime.exit(&migrate, 0);
    let statuses = harness.wait_for(|s| running(s, "app")).await;
    let migrate = container(&statuses, "migrate").unwrap();
    assert_eq!(migrate.last_terminated.as_ref().unwrap().exit_code, 3);
    harness.stop().await;
}

/// With restartPolicy Never a failed init container fails the pod; the
/// app never starts.
#[tokio::test]
async fn a_failed_init_container_fails_a_pod_that_never_restarts() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let job = pod_of("job", "Never", &["fetch"], &["work"]);
    harness.assign(std::slice::from_ref(&job));
    harness.wait_for(|s| running(s, "fetch")).await;
    runtime.exit(&id_of(&job, "fetch"), 1);
    let statuses = harness.wait_for(|s| s[0].phase == "Failed").await;
    let fetch = container(&statuses, "fetch").unwrap();
    assert_eq!(fetch.terminated.as_ref().unwrap().exit_code, 1);
    assert_eq!(fetch.terminated.as_ref().unwrap().reason, "Error");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(runtime.starts(&id_of(&job, "work")), 0);
    assert_eq!(runtime.starts(&id_of(&job, "fetch")), 1);
    harness.stop().await;
}

/// A sidecar that crashes is restarted while the app runs; once the app
/// containers have succeeded it is stopped (not restarted) and the pod
/// succeeds, as a Job's pod must.
#[tokio::test]
async fn a_sidecar_restarts_while_the_app_runs_and_stops_after_it() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let job = pod_of("job", "Never", &["proxy-sidecar"], &["work"]);
    let (sidecar, work) = (id_of(&job, "proxy-sidecar"), id_of(&job, "work"));
    harness.assign(std::slice::from_ref(&job));
    harness.wait_for(|s| running(s, "work")).await;
    runtime.exit(&sidecar, 1);
    harness
        .wait_for(|s| {
            container(s, "proxy-sidecar").is_some_and(|c| c.restart_count == 1)
                && running(s, "proxy-sidecar")
        })
        .await;

    runtime.exit(&work, 0);
    let statuses = harness.wait_for(|s| s[0].phase == "Succeeded").await;
    let proxy = container(&statuses, "proxy-sidecar").unwrap();
    assert!(proxy.terminated.is_some(), "the sidecar stopped: {proxy:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(runtime.starts(&sidecar), 2, "not restarted once stopped");
    assert_eq!(runtime.starts(&work), 1);
    harness.stop().await;
}

/// Two app containers start together; each restarts on its own, and the
/// pod is ready only while both are.
#[tokio::test]
async fn app_containers_restart_on_their_own_and_the_pod_is_ready_when_all_are() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    let mut harness = Harness::start_probing(&runtime, &prober);
    let mut web = pod_of("web", "Always", &[], &["web", "metrics"]);
    web.spec.as_mut().unwrap().containers[1].readiness_probe = serde_json::from_value(
        serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 1}),
    )
    .unwrap();
    prober.set_failing(true);
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness
        .wait_for(|s| running(s, "web") && running(s, "metrics"))
        .await;
    assert!(!statuses[0].ready, "metrics is not ready: {statuses:?}");
    assert!(container(&statuses, "web").unwrap().ready);
    prober.set_failing(false);
    harness.wait_for(|s| s[0].ready).await;

    runtime.exit(&id_of(&web, "metrics"), 2);
    let statuses = harness
        .wait_for(|s| {
            container(s, "metrics").is_some_and(|c| c.restart_count == 1) && running(s, "metrics")
        })
        .await;
    assert_eq!(container(&statuses, "web").unwrap().restart_count, 0);
    assert_eq!(runtime.starts(&id_of(&web, "web")), 1);
    assert_eq!(
        container_id(&web),
        id_of(&web, "web"),
        "the first app container keeps the instance's id"
    );
    harness.stop().await;
}

/// A driver that runs one container per pod refuses a pod of several,
/// naming the field, and starts none of them.
#[tokio::test]
async fn a_driver_of_one_container_per_pod_refuses_several_naming_the_field() {
    let runtime = FakeRuntime::new().one_container_per_pod();
    let mut harness = Harness::start(&runtime);
    let web = pod_of("web", "Always", &["setup"], &["web"]);
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness
        .wait_for(|s| s.first().is_some_and(|s| !s.reason.is_empty()))
        .await;
    assert_eq!(statuses[0].reason, "CreateContainerConfigError");
    assert!(
        statuses[0]
            .message
            .starts_with("spec.initContainers[0]: the fake driver runs one container per pod"),
        "{statuses:?}"
    );
    assert_eq!(statuses[0].phase, "Pending");
    assert!(runtime.start_order().is_empty());
    harness.stop().await;
}

/// An init container that has already exited when its start returns (it
/// ran in an instant) is handled as any exit: it succeeded, the app
/// starts; a failed one is retried, and the pod never shows Failed.
#[tokio::test]
async fn an_init_container_that_ends_before_its_start_returns_is_handled() {
    let runtime = FakeRuntime::new();
    let web = pod_of("web", "Always", &["quick", "flaky"], &["app"]);
    runtime.exit_at_next_start(&id_of(&web, "quick"), 0);
    runtime.exit_at_next_start(&id_of(&web, "flaky"), 1);
    let mut harness = Harness::start(&runtime);
    harness.assign(std::slice::from_ref(&web));
    let not_failed = |s: &[InstanceStatus]| {
        assert_ne!(s.first().map(|s| s.phase.as_str()), Some("Failed"), "{s:?}");
    };
    // Retried after its backoff; this run ends on its own, well.
    harness
        .wait_for(|s| {
            not_failed(s);
            running(s, "flaky")
        })
        .await;
    runtime.exit(&id_of(&web, "flaky"), 0);
    let statuses = harness
        .wait_for(|s| {
            not_failed(s);
            running(s, "app")
        })
        .await;
    assert_eq!(container(&statuses, "quick").unwrap().restart_count, 0);
    assert_eq!(container(&statuses, "flaky").unwrap().restart_count, 1);
    assert_eq!(runtime.starts(&id_of(&web, "quick")), 1);
    harness.stop().await;
}

/// A pod whose container `main` has `probes` (JSON fields of a container).
fn probed(name: &str, probes: serde_json::Value) -> Instance {
    let mut main = serde_json::json!({"name": "main", "command": ["serve"]});
    main.as_object_mut()
        .unwrap()
        .extend(probes.as_object().unwrap().clone());
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [main]},
    }))
    .unwrap()
}

/// Until its startup probe has passed a container is not started and not
/// ready, and its liveness probe does not run (here it would kill it).
#[tokio::test]
async fn liveness_and_readiness_wait_for_the_startup_probe() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    prober.set_failing(true);
    let mut harness = Harness::start_probing(&runtime, &prober);
    let web = probed(
        "web",
        serde_json::json!({
            // Its first attempt is far off: startup is never decided here.
            "startupProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 3600},
            "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 1},
        }),
    );
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness.wait_for(|s| running(s, "main")).await;
    let main = container(&statuses, "main").unwrap();
    assert!(!main.started && !main.ready, "{main:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(prober.attempts(), 0, "no probe ran before startup");
    assert_eq!(runtime.starts(&id_of(&web, "main")), 1, "not killed");
    let statuses = harness.statuses.borrow().clone();
    let main = container(&statuses, "main").unwrap();
    assert!(!main.started && !main.ready, "{main:?}");
    harness.stop().await;
}

/// A startup probe that passes marks the container started; then its
/// liveness and readiness probes run (readiness failing: not ready).
#[tokio::test]
async fn a_passed_startup_probe_starts_the_other_probes() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    let mut harness = Harness::start_probing(&runtime, &prober);
    let web = probed(
        "web",
        serde_json::json!({
            "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
        }),
    );
    harness.assign(std::slice::from_ref(&web));
    let statuses = harness
        .wait_for(|s| container(s, "main").is_some_and(|c| c.started && c.ready))
        .await;
    assert_eq!(statuses[0].phase, "Running");
    assert!(statuses[0].ready);
    assert!(prober.attempts() >= 2, "startup, then readiness");
    prober.set_failing(true);
    harness
        .wait_for(|s| container(s, "main").is_some_and(|c| c.started && !c.ready))
        .await;
    harness.stop().await;
}

/// failureThreshold failed startup attempts kill the container, which
/// restarts as its policy says, shown as Unhealthy: "Startup probe failed".
#[tokio::test]
async fn a_failing_startup_probe_kills_and_restarts_the_container() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    prober.set_failing(true);
    let mut harness = Harness::start_probing(&runtime, &prober);
    let web = probed(
        "web",
        serde_json::json!({
            "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 2},
        }),
    );
    let main = id_of(&web, "main");
    harness.assign(std::slice::from_ref(&web));
    harness.wait_for(|s| running(s, "main")).await;
    let started = Instant::now();
    // Killed, it waits out its backoff showing why.
    let statuses = harness
        .wait_for(|s| waiting_reason(s, "main") == Some("Unhealthy"))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "killed after the second attempt, one period after the first"
    );
    assert!(prober.attempts() >= 2);
    let report = container(&statuses, "main").unwrap();
    assert!(!report.started);
    let message = &report.waiting.as_ref().unwrap().message;
    assert!(message.starts_with("Startup probe failed: "), "{message}");
    let last = report.last_terminated.as_ref().expect("the killed run");
    assert_eq!(last.signal, 15, "{last:?}");
    harness
        .wait_for(|s| container(s, "main").is_some_and(|c| c.restart_count == 1))
        .await;
    prober.set_failing(false);
    harness
        .wait_for(|s| container(s, "main").is_some_and(|c| c.started))
        .await;
    assert_eq!(runtime.starts(&main), 2);
    harness.stop().await;
}

/// A native sidecar lets the app start only once its startup probe passed.
#[tokio::test]
async fn the_app_waits_for_the_sidecars_startup_probe() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    prober.set_failing(true);
    let mut harness = Harness::start_probing(&runtime, &prober);
    let mut web = pod_of("web", "Always", &["proxy-sidecar"], &["app"]);
    let probe: k8s_openapi::api::core::v1::Probe = serde_json::from_value(serde_json::json!(
        {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 100}
    ))
    .unwrap();
    web.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].startup_probe = Some(probe);
    harness.assign(std::slice::from_ref(&web));
    harness.wait_for(|s| running(s, "proxy-sidecar")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(prober.attempts() >= 1);
    assert_eq!(runtime.starts(&id_of(&web, "app")), 0, "the app waits");
    let statuses = harness.statuses.borrow().clone();
    assert!(!statuses[0].initialized);
    prober.set_failing(false);
    let statuses = harness.wait_for(|s| running(s, "app")).await;
    assert!(container(&statuses, "proxy-sidecar").unwrap().started);
    harness.stop().await;
}

/// What a container of a driver with its own root file system wrote to
/// its terminationMessagePath (a host file the agent binds there, emptied
/// at each start) becomes its terminated state's message, at most 4096
/// bytes; without one the message says how the process ended.
#[tokio::test]
async fn the_termination_message_is_what_the_container_wrote() {
    let runtime = FakeRuntime::new().taking_network_namespace();
    let mut harness = Harness::start(&runtime);
    let mut job = pod_of("job-msg", "OnFailure", &[], &["work"]);
    job.spec.as_mut().unwrap().containers[0].termination_message_path = Some("/tmp/why".into());
    let work = id_of(&job, "work");
    harness.assign(std::slice::from_ref(&job));
    harness.wait_for(|s| running(s, "work")).await;
    let spec = runtime.container(&work).unwrap().spec;
    let (file, inside) = spec
        .termination_message
        .expect("a termination log is bound");
    assert_eq!(inside, std::path::PathBuf::from("/tmp/why"));
    assert_eq!(std::fs::read(&file).unwrap(), b"", "empty at the start");
    std::fs::write(&file, "x".repeat(5000)).unwrap();
    runtime.exit(&work, 2);
    let statuses = harness
        .wait_for(|s| container(s, "work").is_some_and(|c| c.restart_count == 1))
        .await;
    let last = container(&statuses, "work")
        .unwrap()
        .last_terminated
        .clone()
        .unwrap();
    assert_eq!(last.exit_code, 2);
    assert_eq!(last.message, "x".repeat(4096));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"",
        "emptied for the new run"
    );
    harness.wait_for(|s| running(s, "work")).await;
    std::fs::write(&file, "done: 42 rows\n").unwrap();
    runtime.exit(&work, 0);
    let statuses = harness.wait_for(|s| s[0].phase == "Succeeded").await;
    let terminated = container(&statuses, "work")
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(terminated.message, "done: 42 rows\n");
    harness.stop().await;
}

/// The pod `pod` marked deleted with `grace` seconds, as the control plane
/// leaves it assigned until its containers have stopped.
fn deleted(pod: &Instance, grace: i64) -> Instance {
    let mut deleted = pod.clone();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-07T00:00:00Z".parse().unwrap(),
        ));
    deleted.metadata.deletion_grace_period_seconds = Some(grace);
    deleted
}

/// A supervisor over fakes, assigned pod `web` whose container `main` has
/// `fields` (JSON), with the prober's exec commands whose first word is in
/// `failing` failing and in `hanging` never ending.
struct Hooked {
    runtime: FakeRuntime,
    prober: FakeProber,
    harness: Harness,
    web: Instance,
    /// The container's id.
    id: String,
}

impl Hooked {
    fn start(fields: serde_json::Value, failing: &[&str], hanging: &[&str]) -> Hooked {
        let runtime = FakeRuntime::new();
        let prober = FakeProber::new();
        failing.iter().for_each(|word| prober.fail_command(word));
        hanging.iter().for_each(|word| prober.hang_command(word));
        let harness = Harness::start_probing(&runtime, &prober);
        let web = probed("web", fields);
        let id = id_of(&web, "main");
        harness.assign(std::slice::from_ref(&web));
        Hooked {
            runtime,
            prober,
            harness,
            web,
            id,
        }
    }
}

/// The Event reasons reported on container `name`.
fn event_reasons(statuses: &[InstanceStatus], name: &str) -> Vec<String> {
    container(statuses, name)
        .map(|c| c.events.iter().map(|e| e.reason.clone()).collect())
        .unwrap_or_default()
}

/// A sidecar's postStart hook runs before it counts as started: it is not
/// Running (ContainerCreating, the pod Pending) and the app does not start
/// until the hook returns.
#[tokio::test]
async fn post_start_holds_the_container_and_the_next_one_until_it_returns() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let mut web = pod_of("web", "Always", &["proxy-sidecar"], &["app"]);
    let spec = web.spec.as_mut().unwrap();
    spec.init_containers.as_mut().unwrap()[0].lifecycle = Some(
        serde_json::from_value(serde_json::json!({"postStart": {"sleep": {"seconds": 1}}}))
            .unwrap(),
    );
    let (sidecar, app) = (id_of(&web, "proxy-sidecar"), id_of(&web, "app"));
    harness.assign(std::slice::from_ref(&web));
    // Started by the driver (it has a container id), its hook running.
    let statuses = harness
        .wait_for(|s| container(s, "proxy-sidecar").is_some_and(|c| !c.container_id.is_empty()))
        .await;
    assert_eq!(runtime.starts(&sidecar), 1);
    let proxy = container(&statuses, "proxy-sidecar").unwrap();
    assert_eq!(
        proxy.waiting.as_ref().map(|w| w.reason.as_str()),
        Some("ContainerCreating"),
        "not Running during its postStart: {proxy:?}"
    );
    assert!(!proxy.started, "{proxy:?}");
    assert_eq!(statuses[0].phase, "Pending");
    harness.wait_for(|s| running(s, "app")).await;
    let started = |id: &str| runtime.started_at(id).unwrap();
    let gap = started(&app).duration_since(started(&sidecar)).unwrap();
    assert!(
        gap >= Duration::from_secs(1),
        "the app started {gap:?} after the sidecar"
    );
    harness.stop().await;
}

/// A failing postStart hook kills the container (Event FailedPostStartHook,
/// waiting PostStartHookError, then CrashLoopBackOff) and the restart
/// policy applies.
#[tokio::test]
async fn a_failing_post_start_kills_the_container_which_restarts_as_its_policy_says() {
    let Hooked {
        runtime,
        mut harness,
        id,
        ..
    } = Hooked::start(
        serde_json::json!({"lifecycle": {"postStart": {"exec": {"command": ["setup", "--now"]}}}}),
        &["setup"],
        &[],
    );
    let statuses = harness
        .wait_for(|s| waiting_reason(s, "main") == Some("PostStartHookError"))
        .await;
    let main = container(&statuses, "main").unwrap();
    let message = &main.waiting.as_ref().unwrap().message;
    assert!(
        message.starts_with(r#"Exec lifecycle hook (["setup", "--now"]) for Container "main" in Pod "web_default(uid-web)" failed - error: "#),
        "{message}"
    );
    assert_eq!(event_reasons(&statuses, "main"), ["FailedPostStartHook"]);
    assert_eq!(main.events[0].message, *message);
    assert!(
        runtime.stops().iter().any(|(stopped, _, _)| *stopped == id),
        "killed"
    );
    // Restarted after its backoff (policy Always), and killed again.
    harness
        .wait_for(|s| {
            container(s, "main").is_some_and(|c| c.restart_count >= 1 && c.events.len() >= 2)
        })
        .await;
    assert!(runtime.starts(&id) >= 2);
    // The error first, then (half way to the restart) the back-off.
    harness
        .wait_for(|s| waiting_reason(s, "main") == Some("CrashLoopBackOff"))
        .await;
    harness.stop().await;
}

/// On deletion the preStop hook runs while the container still runs, then
/// the stop signal, with what the hook left of the grace period.
#[tokio::test]
async fn pre_stop_runs_before_the_stop_signal_of_a_deleted_pod() {
    let Hooked {
        runtime,
        prober,
        mut harness,
        web,
        id,
    } = Hooked::start(
        serde_json::json!({"lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}),
        &[],
        &[],
    );
    harness.wait_running().await;
    assert!(prober.execs().is_empty(), "no hook ran yet");
    harness.assign(&[deleted(&web, 30)]);
    harness.wait_for(<[InstanceStatus]>::is_empty).await;
    let execs = prober.execs();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(
        (execs[0].id.as_str(), execs[0].command.as_str()),
        (id.as_str(), "drain")
    );
    assert!(execs[0].running, "the hook ran before the stop");
    let stops = runtime.stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(stops[0].2 >= execs[0].at);
    let grace = stops[0].1;
    assert!(
        grace <= Duration::from_secs(30) && grace >= Duration::from_secs(29),
        "the signal's grace is what the hook left: {grace:?}"
    );
    harness.stop().await;
}

/// A preStop hook that does not end is cut at the grace period; the stop
/// goes on (with the kubelet's 2 s minimum) and FailedPreStopHook is
/// reported while the pod stops.
#[tokio::test]
async fn a_hanging_pre_stop_is_bounded_by_the_grace_period_and_reported() {
    let Hooked {
        runtime,
        mut harness,
        web,
        ..
    } = Hooked::start(
        serde_json::json!({"lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}),
        &[],
        &["drain"],
    );
    harness.wait_running().await;
    let began = Instant::now();
    harness.assign(&[deleted(&web, 1)]);
    let statuses = harness
        .wait_for(|s| event_reasons(s, "main") == ["FailedPreStopHook"])
        .await;
    let message = &container(&statuses, "main").unwrap().events[0].message;
    assert!(message.contains("did not finish within 1s"), "{message}");
    harness.wait_for(<[InstanceStatus]>::is_empty).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the hook had its grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "bounded by the grace: {took:?}"
    );
    let stops = runtime.stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0].1, crate::hooks::MINIMUM_STOP_GRACE);
    harness.stop().await;
}

/// A container killed by its failed liveness probe runs its preStop hook
/// first.
#[tokio::test]
async fn a_liveness_failure_runs_pre_stop_before_the_kill() {
    let Hooked {
        runtime,
        prober,
        mut harness,
        id,
        ..
    } = Hooked::start(
        serde_json::json!({
            "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 1},
            "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}},
        }),
        &["check"],
        &[],
    );
    harness
        .wait_for(|s| container(s, "main").is_some_and(|c| c.restart_count >= 1))
        .await;
    let drain = prober
        .execs()
        .into_iter()
        .find(|e| e.command == "drain")
        .expect("the preStop hook ran");
    assert!(drain.running, "before the kill");
    let stop = runtime
        .stops()
        .into_iter()
        .find(|(s, _, _)| *s == id)
        .unwrap();
    assert!(stop.2 >= drain.at);
    harness.stop().await;
}

/// A sidecar stopped after the app containers ended runs its preStop hook
/// first.
#[tokio::test]
async fn a_sidecar_stopped_after_the_app_runs_its_pre_stop() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    let mut harness = Harness::start_probing(&runtime, &prober);
    let mut job = pod_of("job", "Never", &["proxy-sidecar"], &["work"]);
    job.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].lifecycle = Some(
        serde_json::from_value(serde_json::json!({"preStop": {"exec": {"command": ["flush"]}}}))
            .unwrap(),
    );
    let (sidecar, work) = (id_of(&job, "proxy-sidecar"), id_of(&job, "work"));
    harness.assign(std::slice::from_ref(&job));
    harness.wait_for(|s| running(s, "work")).await;
    runtime.exit(&work, 0);
    harness.wait_for(|s| s[0].phase == "Succeeded").await;
    let execs = prober.execs();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(
        (execs[0].id.as_str(), execs[0].command.as_str()),
        (sidecar.as_str(), "flush")
    );
    assert!(execs[0].running);
    harness.stop().await;
}

/// `terminationMessagePolicy: FallbackToLogsOnError`: a failed container
/// that wrote no message gets the end of its log (the last 80 lines, of
/// them the last 2048 bytes); one that succeeded, or wrote a message, not.
#[tokio::test]
async fn a_failed_container_without_a_message_falls_back_to_its_log() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let mut job = pod_of("job-log", "OnFailure", &[], &["work"]);
    job.spec.as_mut().unwrap().containers[0].termination_message_policy =
        Some("FallbackToLogsOnError".into());
    let work = id_of(&job, "work");
    harness.assign(std::slice::from_ref(&job));
    harness.wait_for(|s| running(s, "work")).await;
    for line in 0..100 {
        runtime.write_log(&work, &format!("line {line:03}\n"));
    }
    runtime.exit(&work, 1);
    let statuses = harness
        .wait_for(|s| container(s, "work").is_some_and(|c| c.restart_count == 1))
        .await;
    let last = container(&statuses, "work")
        .unwrap()
        .last_terminated
        .clone()
        .unwrap();
    let expected: String = (20..100).map(|line| format!("line {line:03}\n")).collect();
    assert_eq!(last.message, expected, "the last 80 lines");

    harness.wait_for(|s| running(s, "work")).await;
    runtime.write_log(&work, &"y".repeat(3000));
    runtime.exit(&work, 1);
    let statuses = harness
        .wait_for(|s| container(s, "work").is_some_and(|c| c.restart_count == 2))
        .await;
    let last = container(&statuses, "work")
        .unwrap()
        .last_terminated
        .clone()
        .unwrap();
    assert_eq!(last.message, "y".repeat(2048), "at most 2048 bytes");

    harness.wait_for(|s| running(s, "work")).await;
    runtime.exit(&work, 0);
    let statuses = harness.wait_for(|s| s[0].phase == "Succeeded").await;
    let terminated = container(&statuses, "work")
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(
        terminated.message, "the process exited with code 0",
        "a success keeps no log as its message"
    );
    harness.stop().await;
}

/// When a container restarts, the log of the run that ended is kept apart
/// (with its lines' times), for `kubectl logs --previous`; one run back.
#[tokio::test]
async fn a_restarted_container_keeps_its_previous_runs_log() {
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start(&runtime);
    let web = pod("web-previous");
    let id = id_of(&web, "main");
    let kept = crate::pod_etc::PodEtc::new(&std::env::temp_dir(), "cluster.local")
        .previous_log(&container_id(&web), "main");
    let _ = std::fs::remove_file(&kept);
    harness.assign(std::slice::from_ref(&web));
    harness.wait_running().await;
    assert!(!kept.exists(), "nothing kept before a restart");
    runtime.write_log(&id, "first run\n");
    runtime.exit(&id, 1);
    harness
        .wait_for(|s| restarts(s) == 1 && s[0].phase == "Running")
        .await;
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "first run\n");
    harness.stop().await;
}

/// Two sidecars stop after the app, the last started first, the other
/// only once it has stopped (here after its preStop hook had its grace).
#[tokio::test]
async fn sidecars_stop_one_after_the_other_last_started_first() {
    let runtime = FakeRuntime::new();
    let prober = FakeProber::new();
    prober.hang_command("flush");
    let mut harness = Harness::start_probing(&runtime, &prober);
    let mut job = pod_of(
        "job-two",
        "Never",
        &["log-sidecar", "proxy-sidecar"],
        &["work"],
    );
    let spec = job.spec.as_mut().unwrap();
    spec.termination_grace_period_seconds = Some(1);
    spec.init_containers.as_mut().unwrap()[1].lifecycle = Some(
        serde_json::from_value(serde_json::json!({"preStop": {"exec": {"command": ["flush"]}}}))
            .unwrap(),
    );
    let (log, proxy) = (id_of(&job, "log-sidecar"), id_of(&job, "proxy-sidecar"));
    harness.assign(std::slice::from_ref(&job));
    harness.wait_for(|s| running(s, "work")).await;
    runtime.exit(&id_of(&job, "work"), 0);
    harness.wait_for(|s| s[0].phase == "Succeeded").await;
    let stops = runtime.stops();
    let order: Vec<&str> = stops.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(order, [proxy.as_str(), log.as_str()]);
    let flushed = prober.execs()[0].at;
    assert!(
        stops[1].2.duration_since(flushed).unwrap() >= Duration::from_secs(1),
        "the log sidecar waited for the proxy's stop: {stops:?}"
    );
    harness.stop().await;
}

/// A pod's volumes are set up before its container starts, which gets them
/// as mounts; a newer assignment's files change in place, the container
/// not restarted; a volume that cannot be set up yet keeps the pod in
/// ContainerCreating with its reason, told as a FailedMount Event.
#[tokio::test]
async fn volumes_are_mounted_updated_in_place_or_waited_for() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let volumes = crate::pod_volumes::PodVolumes::open(
        dir.path(),
        Arc::new(crate::pod_volumes::tests::FakeClaims::default()),
        1 << 30,
    )
    .await;
    let runtime = FakeRuntime::new();
    let mut harness = Harness::start_with(&runtime, &FakeProber::new(), Some(volumes));
    let with_files = |resolved: serde_json::Value| {
        let mut pod = web_with(serde_json::json!({
            "volumes": [
                {"name": "config", "configMap": {"name": "app"}},
                {"name": "scratch", "emptyDir": {}},
            ],
            "containers": [{
                "name": "main",
                "command": ["serve"],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/app", "readOnly": true},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }],
        }));
        pod.metadata.annotations.get_or_insert_default().insert(
            c4m_core::annotations::RESOLVED_VOLUMES.into(),
            resolved.to_string(),
        );
        pod
    };
    let files = |text: &str| {
        serde_json::json!({"config": {"kind": "files", "files": [{
            "path": "app.conf",
            "base64": base64::engine::general_purpose::STANDARD.encode(text),
            "mode": 0o644,
        }]}})
    };

    let waiting = with_files(serde_json::json!({
        "config": {"kind": "waiting", "message": "configmap \"app\" not found"},
    }));
    let id = container_id(&waiting);
    harness.assign(std::slice::from_ref(&waiting));
    let statuses = harness
        .wait_for(|s| s.first().is_some_and(|s| s.reason == "ContainerCreating"))
        .await;
    assert_eq!(statuses[0].message, "configmap \"app\" not found");
    let events = &statuses[0].containers[0].events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason, "FailedMount");
    assert_eq!(runtime.starts(&id), 0);

    harness.assign(&[with_files(files("v1"))]);
    harness.wait_running().await;
    let spec = runtime.container(&id).unwrap().spec;
    let base = dir.path().join("pod-volumes").join(&id).join("volumes");
    let mounts: Vec<(String, PathBuf, bool)> = spec
        .mounts
        .iter()
        .map(|m| {
            (
                m.destination.display().to_string(),
                m.source.clone(),
                m.read_only,
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("/etc/app".to_string(), base.join("config"), true),
            ("/scratch".to_string(), base.join("scratch"), false),
        ]
    );
    let conf = base.join("config/app.conf");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "v1");

    harness.assign(&[with_files(files("v2"))]);
    tokio::time::timeout(Duration::from_secs(10), async {
        while std::fs::read_to_string(&conf).unwrap() != "v2" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the file changed in place");
    assert_eq!(runtime.starts(&id), 1, "no restart for new files");

    harness.assign(&[]);
    tokio::time::timeout(Duration::from_secs(10), async {
        while dir.path().join("pod-volumes").join(&id).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the pod's volumes go with it");
    harness.stop().await;
}

#[tokio::test]
async fn a_pod_whose_volume_must_grow_offline_restarts_and_says_why() {
    use crate::volumes::RestartUsers;

    let runtime = FakeRuntime::new();
    let mut h = Harness::start(&runtime);
    let (web, other) = (pod("web"), pod("other"));
    h.assign(&[web.clone(), other.clone()]);
    h.wait_for(|s| s.len() == 2 && s.iter().all(|s| s.phase == "Running"))
        .await;
    let (id, other_id) = (container_id(&web), container_id(&other));
    assert_eq!((runtime.starts(&id), runtime.starts(&other_id)), (1, 1));

    h.restarts.restart(
        vec!["uid-web".into()],
        crate::volumes::RestartReason::resize("pvc-1"),
    );
    let statuses = h
        .wait_for(|s| {
            runtime.starts(&id) == 2
                && s.iter().any(|s| {
                    s.name == "web"
                        && s.phase == "Running"
                        && s.containers.iter().any(|c| !c.events.is_empty())
                })
        })
        .await;
    let web_status = statuses.iter().find(|s| s.name == "web").unwrap();
    let event = &web_status.containers[0].events[0];
    assert_eq!(event.reason, "FileSystemResizeRequired");
    assert!(
        event
            .message
            .starts_with("volume pvc-1 must be unmounted to grow")
    );
    assert_eq!(
        runtime.starts(&other_id),
        1,
        "a pod not using the volume keeps running"
    );
    h.stop().await;
}

/// A pod with volumeMounts on a node whose default driver is `process`
/// (it names none), or with an ephemeral-storage limit on `docker`, waits
/// with CreateContainerConfigError naming the field and the drivers that
/// can; nothing starts.
#[tokio::test]
async fn what_the_default_driver_cannot_mount_is_refused_naming_the_field() {
    for (driver, extra, refusal) in [
        (
            "process",
            serde_json::json!({
                "volumes": [{"name": "d", "emptyDir": {}}],
                "containers": [{"name": "main", "command": ["serve"],
                    "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
            }),
            "spec.containers[0].volumeMounts: the process driver cannot mount volumes",
        ),
        (
            "docker",
            serde_json::json!({
                "containers": [{"name": "main", "command": ["serve"],
                    "resources": {"limits": {"ephemeral-storage": "1Gi"}}}],
            }),
            "spec.containers[0].resources.limits.ephemeral-storage: the docker driver cannot enforce it",
        ),
    ] {
        let runtime = FakeRuntime::new().named(driver);
        let mut harness = Harness::start(&runtime);
        harness
            .assert_refused(&runtime, &web_with(extra), refusal)
            .await;
        harness.stop().await;
    }
}
