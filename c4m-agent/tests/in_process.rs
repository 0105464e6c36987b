//! A control plane and a node agent in one process, over an in-memory store
//! and a fake driver: a Deployment's instances are scheduled to the node,
//! started, reported Running, restarted after a crash and removed with the
//! Deployment. No root, no daemons, no containers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use c4m_agent::{Agent, AgentConfig, RestartBackoff, StorageConfig};
use c4m_api::{ApplyObject, ApplyRequest, Client};
use c4m_control::{ControlPlane, ControlPlaneConfig};
use c4m_core::testing::FakeRuntime;
use c4m_core::{KINDS, ResourceKind};
use c4m_plugin::{ControlPlaneExtensions, NodeExtensions};
use c4m_state::MemoryStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn kind(plural: &str) -> &'static ResourceKind {
    KINDS.iter().find(|k| k.plural == plural).unwrap()
}

/// Polls `check` until it gives a value (at most 30 s).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pods(client: &Client) -> Vec<Value> {
    let list = client
        .list(kind("pods"), Some("default"), None)
        .await
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_restarts_and_goes_away_on_a_fake_node() {
    let shutdown = CancellationToken::new();
    let control = ControlPlane::bind(
        ControlPlaneConfig {
            api_addr: ([127, 0, 0, 1], 0).into(),
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            dns_addr: None,
            heartbeat_interval: Duration::from_millis(200),
            ..ControlPlaneConfig::default()
        },
        ControlPlaneExtensions::new(Arc::new(MemoryStore::new())),
    )
    .await
    .unwrap();
    let api = format!("http://{}", control.api_addr());
    let grpc = format!("http://{}", control.grpc_addr());
    let control = tokio::spawn(control.run(shutdown.clone()));

    let data_dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        node_name: "fake-node".into(),
        control_plane: grpc,
        token: None,
        data_dir: data_dir.path().to_path_buf(),
        cpu_millis: 4_000,
        memory_bytes: 4 << 30,
        max_instances: 10,
        labels: BTreeMap::new(),
        address: [127, 0, 0, 1].into(),
        listen: ([127, 0, 0, 1], 0).into(),
        default_driver: "fake".into(),
        network: None,
        docker_socket: None,
        containerd_socket: None,
        cri_socket: None,
        restart_backoff: RestartBackoff {
            initial: Duration::from_millis(100),
            ..RestartBackoff::default()
        },
        pod_holder: None,
        gateway: None,
        storage: StorageConfig::default(),
    };
    let fake = FakeRuntime::new();
    let images = Agent::image_store(&config).unwrap();
    let agent = Agent::bind(
        config,
        NodeExtensions::new().with_runtime(fake.clone()),
        images,
    )
    .await
    .unwrap();
    let agent = tokio::spawn(agent.run(shutdown.clone()));

    let client = Client::new(&api, None).unwrap();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1", "command": ["serve"]}]},
            },
        },
    });
    client
        .apply(&ApplyRequest {
            objects: vec![ApplyObject {
                source: "test".into(),
                document: 1,
                object: deployment,
            }],
            default_namespace: None,
        })
        .await
        .unwrap();

    let running = eventually("two instances Running on the fake node", async || {
        let pods = pods(&client).await;
        let running: Vec<Value> = pods
            .into_iter()
            .filter(|p| p["spec"]["nodeName"] == "fake-node" && p["status"]["phase"] == "Running")
            .collect();
        (running.len() == 2).then_some(running)
    })
    .await;
    assert_eq!(fake.ids().len(), 2, "{:?}", fake.ids());

    // A crash is restarted, and the restart reaches the API.
    let crashed = fake.ids().remove(0);
    assert!(fake.exit(&crashed, 3));
    eventually("the restart count in the instance's status", async || {
        pods(&client).await.into_iter().find(|p| {
            p["status"]["containerStatuses"][0]["restartCount"] == 1
                && p["status"]["phase"] == "Running"
        })
    })
    .await;
    assert_eq!(fake.starts(&crashed), 2);

    // Deleting the Deployment takes its instances off the node.
    client
        .delete(kind("deployments"), Some("default"), "web")
        .await
        .unwrap();
    eventually("the containers removed", async || {
        fake.ids().is_empty().then_some(())
    })
    .await;
    assert_eq!(running.len(), 2);

    shutdown.cancel();
    agent.await.unwrap().unwrap();
    control.await.unwrap().unwrap();
}
