//! A store written by an earlier c4m (main at 417769b, when the crate was
//! `c4m-store`: a `c4m up` that applied a Microservice and a ConfigMap)
//! opens and reads back, and takes new writes.

use c4m_state::{Precondition, RedbStore, Store};

#[tokio::test]
async fn a_store_written_by_the_previous_release_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/store-417769b.redb"
        ),
        &path,
    )
    .unwrap();
    let store = RedbStore::open(&path).unwrap();
    let revision = store.current_revision().await.unwrap();
    assert!(revision > 0);
    let (objects, read_at) = store.range("/registry/").await.unwrap();
    assert_eq!(read_at, revision);
    let keys: Vec<&str> = objects.iter().map(|kv| kv.key.as_str()).collect();
    for key in [
        "/registry/namespaces/default",
        "/registry/microservices/default/keeper",
        "/registry/configmaps/default/settings",
    ] {
        assert!(keys.contains(&key), "{key} is missing from {keys:?}");
    }
    let settings = store
        .get("/registry/configmaps/default/settings")
        .await
        .unwrap()
        .unwrap();
    let settings: serde_json::Value = serde_json::from_slice(&settings.value).unwrap();
    assert_eq!(settings["data"]["a"], "1");
    // The history a watch replays survived too.
    let mut watch = store.watch("/registry/configmaps/", 0).await.unwrap();
    let first = futures::StreamExt::next(&mut watch).await.unwrap().unwrap();
    assert_eq!(first.kv.key, "/registry/configmaps/default/settings");
    let next = store
        .put(
            "/registry/configmaps/default/more",
            "{}".into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    assert_eq!(next, revision + 1);
}
