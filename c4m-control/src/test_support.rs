//! What unit tests share: a real store in a temporary directory.

use std::sync::Arc;

use serde_json::json;

use crate::objects::{Objects, kind};

/// A store in a fresh directory (kept alive by the returned guard) with
/// the `default` namespace created.
pub(crate) async fn store_with_default_namespace()
-> (tempfile::TempDir, Arc<dyn c4m_state::Store>, Objects) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn c4m_state::Store> =
        Arc::new(c4m_state::RedbStore::open(&dir.path().join("store.redb")).unwrap());
    let objects = Objects::new(Arc::clone(&store));
    create_default_namespace(&objects).await;
    (dir, store, objects)
}

/// Creates the `default` namespace.
pub(crate) async fn create_default_namespace(objects: &Objects) {
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    objects
        .create(kind("namespaces"), "", namespace)
        .await
        .unwrap();
}
