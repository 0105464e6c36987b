//! kube-rs's streaming-list watcher (`watcher::Config::streaming_lists()`,
//! the WatchList protocol client-go 1.35 turns on by default) against an
//! in-process control plane: initial objects as one batch, ended by the
//! `k8s.io/initial-events-end` bookmark, then live changes.

use std::sync::Arc;
use std::time::Duration;

use c4m_control::{ControlPlane, ControlPlaneConfig};
use c4m_plugin::ControlPlaneExtensions;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

fn config_map(name: &str) -> ConfigMap {
    let mut config_map = ConfigMap::default();
    config_map.metadata.name = Some(name.to_string());
    config_map.data = Some([("color".to_string(), name.to_string())].into());
    config_map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_get_initial_events_then_changes() {
    let shutdown = CancellationToken::new();
    let control = ControlPlane::bind(
        ControlPlaneConfig {
            api_addr: ([127, 0, 0, 1], 0).into(),
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            dns_addr: None,
            ..ControlPlaneConfig::default()
        },
        ControlPlaneExtensions::new(Arc::new(c4m_state::MemoryStore::new())),
    )
    .await
    .unwrap();
    let url = format!("http://{}", control.api_addr());
    let running = tokio::spawn(control.run(shutdown.clone()));

    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    // The default namespace is made by the control plane as it starts.
    let mut created = false;
    for _ in 0..100 {
        if config_maps
            .create(&PostParams::default(), &config_map("a"))
            .await
            .is_ok()
        {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(created, "could not create a ConfigMap");
    config_maps
        .create(&PostParams::default(), &config_map("b"))
        .await
        .unwrap();

    let mut events = watcher::watcher(
        config_maps.clone(),
        watcher::Config::default().streaming_lists(),
    )
    .boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("the watcher waited 10 s for an event")
            .expect("the watcher failed")
            .expect("the watcher ended")
    };
    // Init, one InitApply per object, InitDone: kube-rs ends the initial
    // batch only on the bookmark that says so.
    assert!(matches!(next().await, Event::Init));
    let mut initial = Vec::new();
    loop {
        match next().await {
            Event::InitApply(object) => initial.push(object.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected event in the initial batch: {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["a", "b"]);

    // Then the changes after it.
    config_maps
        .create(&PostParams::default(), &config_map("c"))
        .await
        .unwrap();
    match next().await {
        Event::Apply(object) => assert_eq!(object.metadata.name.as_deref(), Some("c")),
        other => panic!("expected c's Apply, got {other:?}"),
    }

    shutdown.cancel();
    running.await.unwrap().unwrap();
}
