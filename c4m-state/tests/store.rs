//! The `Store` contract, run against every backend: the embedded redb store
//! on real files in temp dirs, and the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use c4m_state::{
    Error, EventKind, KeyValue, MemoryStore, Op, Precondition, RedbStore, Store, StoreOptions,
    WatchEvent, WatchStream,
};
use futures::StreamExt;
use tempfile::TempDir;

/// A backend under test.
trait Backend {
    /// Opens its store; for a persistent backend, again the same data.
    fn open(&self, options: StoreOptions) -> Arc<dyn Store>;
    /// Whether what was written survives the store being dropped and opened again.
    fn persistent(&self) -> bool;
}

/// [`RedbStore`] on a file in a temp dir of its own.
struct Redb(TempDir);

impl Redb {
    fn new() -> Self {
        Redb(TempDir::new().unwrap())
    }
}

impl Backend for Redb {
    fn open(&self, options: StoreOptions) -> Arc<dyn Store> {
        Arc::new(
            RedbStore::open_with(&self.0.path().join("state.redb"), options).expect("open store"),
        )
    }
    fn persistent(&self) -> bool {
        true
    }
}

/// [`MemoryStore`].
struct Memory;

impl Backend for Memory {
    fn open(&self, options: StoreOptions) -> Arc<dyn Store> {
        Arc::new(MemoryStore::with_options(&options))
    }
    fn persistent(&self) -> bool {
        false
    }
}

/// Runs each contract test against each backend, as `<backend>::<test>`.
macro_rules! contract {
    (backends: [$($backend:ident => $make:expr),* $(,)?], tests: $tests:tt $(,)?) => {
        $(contract!(@backend $backend, $make, $tests);)*
    };
    (@backend $backend:ident, $make:expr, [$($test:ident $(($flavor:ident))?),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(contract!(@test $make, $test $(, $flavor)?);)*
        }
    };
    (@test $make:expr, $test:ident) => {
        #[tokio::test]
        async fn $test() {
            super::$test(&$make).await
        }
    };
    (@test $make:expr, $test:ident, multi_thread) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            super::$test(&$make).await
        }
    };
}

contract! {
    backends: [redb => Redb::new(), memory => Memory],
    tests: [
        put_get_range_delete_keep_bookkeeping,
        multi_op_txn_bumps_revision_once_and_noop_txn_not_at_all,
        create_if_absent_conflicts_with_existing_key,
        stale_mod_revision_is_rejected_for_update_and_delete,
        failing_precondition_writes_nothing,
        malformed_transactions_are_rejected,
        usable_as_shared_trait_object,
        watch_replays_missed_events_then_follows_live_ones,
        watch_from_current_revision_sees_only_future_events,
        watchers_started_during_concurrent_writes_see_gapless_sequences (multi_thread),
        watch_from_compacted_revision_fails_with_compacted,
        slow_watcher_catches_up_from_history_without_gaps,
        slow_watcher_whose_history_was_compacted_ends_with_compacted,
        dropping_the_store_closes_watches,
        concurrent_creates_of_one_key_have_exactly_one_winner (multi_thread),
        get_many_answers_each_key_in_place,
    ],
}

fn bytes(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

fn put(key: &str, value: &str, precondition: Precondition) -> Op {
    Op::Put {
        key: key.into(),
        value: bytes(value),
        precondition,
    }
}

async fn next(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch event within 10s")
        .expect("stream still open")
        .expect("event, not error")
}

async fn put_get_range_delete_keep_bookkeeping(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.get("/a").await.unwrap(), None);

    assert_eq!(
        store
            .put("/a", bytes("1"), Precondition::None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .put("/b/x", bytes("2"), Precondition::None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .put("/a", bytes("3"), Precondition::None)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .put("/b/y", bytes("4"), Precondition::None)
            .await
            .unwrap(),
        4
    );

    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!(
        a,
        KeyValue {
            key: "/a".into(),
            value: bytes("3"),
            create_revision: 1,
            mod_revision: 3,
            version: 2,
        }
    );

    let (listed, revision) = store.range("/b/").await.unwrap();
    assert_eq!(revision, 4);
    let keys: Vec<_> = listed.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/b/x", "/b/y"]);
    let (all, _) = store.range("").await.unwrap();
    assert_eq!(all.len(), 3);

    assert_eq!(store.delete("/a", Precondition::None).await.unwrap(), 5);
    assert_eq!(store.get("/a").await.unwrap(), None);
    // Deleting a missing key is a no-op that does not bump the revision.
    assert_eq!(store.delete("/a", Precondition::None).await.unwrap(), 5);

    // Re-creating starts the key's life over.
    assert_eq!(
        store
            .put("/a", bytes("new"), Precondition::Absent)
            .await
            .unwrap(),
        6
    );
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
    assert_eq!(store.current_revision().await.unwrap(), 6);
}

async fn multi_op_txn_bumps_revision_once_and_noop_txn_not_at_all(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    let revision = store
        .txn(vec![
            put("/a", "1", Precondition::Absent),
            put("/b", "2", Precondition::Absent),
            Op::Delete {
                key: "/missing".into(),
                precondition: Precondition::None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(revision, 1);
    for key in ["/a", "/b"] {
        let kv = store.get(key).await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 1, 1));
    }
    assert_eq!(store.txn(vec![]).await.unwrap(), 1);
    let noop = Op::Delete {
        key: "/missing".into(),
        precondition: Precondition::Absent,
    };
    assert_eq!(store.txn(vec![noop]).await.unwrap(), 1);
    assert_eq!(store.current_revision().await.unwrap(), 1);
    // History stays dense: the next write is revision 2.
    assert_eq!(
        store
            .put("/c", bytes("3"), Precondition::None)
            .await
            .unwrap(),
        2
    );
}

async fn create_if_absent_conflicts_with_existing_key(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    store
        .put("/a", bytes("1"), Precondition::Absent)
        .await
        .unwrap();
    let err = store
        .put("/a", bytes("2"), Precondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { key, expected: Precondition::Absent, actual: Some(1) } if key == "/a"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "key /a already exists at revision 1");
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, bytes("1"));
}

async fn stale_mod_revision_is_rejected_for_update_and_delete(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    let created = store
        .put("/a", bytes("1"), Precondition::Absent)
        .await
        .unwrap();
    let updated = store
        .put("/a", bytes("2"), Precondition::ModRevision(created))
        .await
        .unwrap();
    assert_eq!(updated, 2);

    let err = store
        .put("/a", bytes("3"), Precondition::ModRevision(created))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "key /a changed: expected revision 1, found 2"
    );
    let err = store
        .delete("/a", Precondition::ModRevision(created))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                actual: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .put("/nope", bytes("x"), Precondition::ModRevision(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { actual: None, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "key /nope not found: expected revision 1");

    assert_eq!(store.get("/a").await.unwrap().unwrap().value, bytes("2"));
    assert_eq!(
        store
            .delete("/a", Precondition::ModRevision(updated))
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.current_revision().await.unwrap(), 3);
}

async fn failing_precondition_writes_nothing(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    store
        .put("/a", bytes("1"), Precondition::None)
        .await
        .unwrap();
    let err = store
        .txn(vec![
            put("/b", "2", Precondition::Absent),
            Op::Delete {
                key: "/a".into(),
                precondition: Precondition::None,
            },
            put("/c", "3", Precondition::ModRevision(7)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { key, .. } if key == "/c"),
        "{err:?}"
    );
    assert_eq!(store.current_revision().await.unwrap(), 1);
    assert_eq!(store.get("/b").await.unwrap(), None);
    assert!(store.get("/a").await.unwrap().is_some());
    let (all, revision) = store.range("").await.unwrap();
    assert_eq!((all.len(), revision), (1, 1));
}

async fn malformed_transactions_are_rejected(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    let duplicate = store
        .txn(vec![
            put("/a", "1", Precondition::None),
            put("/a", "2", Precondition::None),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, Error::InvalidRequest(_)),
        "{duplicate:?}"
    );
    let empty = store
        .put("", bytes("1"), Precondition::None)
        .await
        .unwrap_err();
    assert!(matches!(empty, Error::InvalidRequest(_)), "{empty:?}");
    assert!(matches!(
        store.watch("/", -1).await,
        Err(Error::InvalidRequest(_))
    ));
    assert_eq!(store.current_revision().await.unwrap(), 0);
}

async fn usable_as_shared_trait_object(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    let writer = store.clone();
    tokio::spawn(async move { writer.put("/a", bytes("1"), Precondition::None).await })
        .await
        .unwrap()
        .unwrap();
    assert!(store.get("/a").await.unwrap().is_some());
}

async fn watch_replays_missed_events_then_follows_live_ones(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    store
        .put("/a", bytes("1"), Precondition::None)
        .await
        .unwrap(); // 1
    store
        .put("/a", bytes("2"), Precondition::None)
        .await
        .unwrap(); // 2
    store
        .put("/other", bytes("x"), Precondition::None)
        .await
        .unwrap(); // 3
    store
        .put("/b", bytes("3"), Precondition::None)
        .await
        .unwrap(); // 4
    store.delete("/a", Precondition::None).await.unwrap(); // 5

    let mut watch = store.watch("/a", 1).await.unwrap();
    let update = next(&mut watch).await;
    assert_eq!(update.kind, EventKind::Put);
    assert_eq!((update.kv.mod_revision, update.kv.version), (2, 2));
    assert_eq!(update.kv.value, bytes("2"));
    assert_eq!(update.prev.as_ref().unwrap().value, bytes("1"));

    let delete = next(&mut watch).await;
    assert_eq!(delete.kind, EventKind::Delete);
    assert_eq!(delete.kv.key, "/a");
    assert_eq!(delete.kv.mod_revision, 5);
    assert_eq!(delete.kv.value, bytes("2"));
    assert_eq!(delete.prev.as_ref().unwrap().mod_revision, 2);

    // Live events follow, still filtered to the prefix.
    store
        .put("/b", bytes("4"), Precondition::None)
        .await
        .unwrap(); // 6
    store
        .put("/a", bytes("5"), Precondition::Absent)
        .await
        .unwrap(); // 7
    let created = next(&mut watch).await;
    assert_eq!(created.kind, EventKind::Put);
    assert_eq!((created.kv.create_revision, created.kv.version), (7, 1));
    assert_eq!(created.prev, None);
}

async fn watch_from_current_revision_sees_only_future_events(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    store
        .put("/a", bytes("old"), Precondition::None)
        .await
        .unwrap();
    let now = store.current_revision().await.unwrap();
    let mut watch = store.watch("", now).await.unwrap();
    // A watch from a revision not yet reached waits for it.
    let mut future = store.watch("", now + 2).await.unwrap();
    for value in ["n1", "n2", "n3"] {
        store
            .put("/a", bytes(value), Precondition::None)
            .await
            .unwrap();
    }
    assert_eq!(next(&mut watch).await.kv.value, bytes("n1"));
    assert_eq!(next(&mut future).await.kv.value, bytes("n3"));
}

async fn watchers_started_during_concurrent_writes_see_gapless_sequences(backend: &dyn Backend) {
    const WRITERS: usize = 4;
    const KEYS_PER_WRITER: usize = 500;
    const TOTAL: i64 = (WRITERS * KEYS_PER_WRITER) as i64;

    let store = backend.open(StoreOptions::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..KEYS_PER_WRITER {
                    let key = format!("/w/{writer}/{i}");
                    store
                        .put(&key, bytes("v"), Precondition::Absent)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();

    let mut watchers = Vec::new();
    for round in 0..8 {
        // Start some watchers from "now", some from a little in the past, some from 0.
        let now = store.current_revision().await.unwrap();
        let after = match round % 3 {
            0 => now,
            1 => (now - 37).max(0),
            _ => 0,
        };
        let stream = store.watch("/w/", after).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut seen = Vec::new();
            let mut expected = after + 1;
            while expected <= TOTAL {
                let event = next(&mut stream).await;
                seen.push(event.revision());
                assert_eq!(event.revision(), expected, "after {after}: got {seen:?}");
                expected += 1;
            }
            (after, seen.len())
        }));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(store.current_revision().await.unwrap(), TOTAL);
    for watcher in watchers {
        let (after, count) = watcher.await.unwrap();
        assert_eq!(count as i64, TOTAL - after);
    }
    let (listed, _) = store.range("/w/").await.unwrap();
    assert_eq!(listed.len() as i64, TOTAL);
}

async fn watch_from_compacted_revision_fails_with_compacted(backend: &dyn Backend) {
    let options = StoreOptions {
        history_revisions: 5,
        ..StoreOptions::default()
    };
    {
        let store = backend.open(options.clone());
        for i in 0..20 {
            store
                .put("/a", bytes(&i.to_string()), Precondition::None)
                .await
                .unwrap();
        }
        let err = store.watch("/", 3).await.err().expect("compacted");
        assert!(
            matches!(
                err,
                Error::Compacted {
                    requested: 3,
                    oldest: 15
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "revision 3 has been compacted; oldest available is 15"
        );
    }
    if !backend.persistent() {
        return;
    }
    // Compaction state survives a restart, and the retained history is complete.
    let store = backend.open(options);
    assert!(matches!(
        store.watch("/", 14).await,
        Err(Error::Compacted { .. })
    ));
    let mut watch = store.watch("/", 15).await.unwrap();
    for revision in 16..=20 {
        assert_eq!(next(&mut watch).await.revision(), revision);
    }
}

/// Writes keys `/k0` to `/k{count - 1}`, one transaction each.
async fn put_many(store: &dyn Store, count: usize) {
    for i in 0..count {
        store
            .put(&format!("/k{i}"), bytes("v"), Precondition::None)
            .await
            .unwrap();
    }
}

async fn slow_watcher_catches_up_from_history_without_gaps(backend: &dyn Backend) {
    let store = backend.open(StoreOptions {
        watch_buffer: 4,
        ..StoreOptions::default()
    });
    let mut watch = store.watch("/", 0).await.unwrap();
    put_many(&*store, 50).await;
    // Far more than the live buffer was written before the watcher read anything: every
    // revision still arrives, in order, once.
    let mut revisions = Vec::new();
    while revisions.len() < 50 {
        revisions.push(next(&mut watch).await.revision());
    }
    assert_eq!(revisions, (1..=50).collect::<Vec<_>>());
    store
        .put("/after", bytes("v"), Precondition::None)
        .await
        .unwrap();
    assert_eq!(
        next(&mut watch).await.revision(),
        51,
        "and it follows live again"
    );
}

async fn slow_watcher_whose_history_was_compacted_ends_with_compacted(backend: &dyn Backend) {
    let store = backend.open(StoreOptions {
        watch_buffer: 2,
        history_revisions: 5,
        ..StoreOptions::default()
    });
    let mut watch = store.watch("/", 0).await.unwrap();
    put_many(&*store, 30).await;
    let mut revisions = Vec::new();
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
        {
            Some(Ok(event)) => revisions.push(event.revision()),
            Some(Err(err)) => break err,
            None => panic!("stream ended without an error"),
        }
    };
    assert!(matches!(outcome, Error::Compacted { .. }), "{outcome:?}");
    // Whatever was delivered before the error is a gapless prefix.
    assert_eq!(revisions, (1..=revisions.len() as i64).collect::<Vec<_>>());
    assert!(watch.next().await.is_none(), "stream ends after the error");
}

async fn dropping_the_store_closes_watches(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    let mut watch = store.watch("/", 0).await.unwrap();
    drop(store);
    let item = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    assert!(matches!(item, Some(Err(Error::Closed))), "{item:?}");
    if backend.persistent() {
        // The file is released: it can be opened again while the old stream still exists.
        let reopened = backend.open(StoreOptions::default());
        assert_eq!(reopened.current_revision().await.unwrap(), 0);
    }
}

async fn concurrent_creates_of_one_key_have_exactly_one_winner(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    let attempts: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put("/lock", bytes(&i.to_string()), Precondition::Absent)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(revision) => {
                winners += 1;
                assert_eq!(revision, 1);
            }
            Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(1)),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.current_revision().await.unwrap(), 1);
}

async fn get_many_answers_each_key_in_place(backend: &dyn Backend) {
    let store = backend.open(StoreOptions::default());
    store
        .put("/a", bytes("1"), Precondition::None)
        .await
        .unwrap();
    store
        .put("/c", bytes("3"), Precondition::None)
        .await
        .unwrap();
    let keys = ["/c", "/b", "/a"].map(String::from);
    let values: Vec<Option<String>> = store
        .get_many(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.map(|kv| String::from_utf8(kv.value.to_vec()).unwrap()))
        .collect();
    assert_eq!(values, [Some("3".into()), None, Some("1".into())]);
}

#[tokio::test]
async fn reopen_restores_keys_and_revision() {
    let backend = Redb::new();
    {
        let store = backend.open(StoreOptions::default());
        for i in 0..10 {
            store
                .put(
                    &format!("/k/{i}"),
                    bytes(&i.to_string()),
                    Precondition::None,
                )
                .await
                .unwrap();
        }
        store.delete("/k/3", Precondition::None).await.unwrap();
    }
    let store = backend.open(StoreOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), 11);
    let (listed, revision) = store.range("/k/").await.unwrap();
    assert_eq!(revision, 11);
    assert_eq!(listed.len(), 9);
    assert_eq!(store.get("/k/7").await.unwrap().unwrap().value, bytes("7"));
    assert_eq!(
        store
            .put("/k/x", bytes("x"), Precondition::None)
            .await
            .unwrap(),
        12
    );

    // History survives too: a watch from before the restart replays it.
    let mut watch = store.watch("/k/", 9).await.unwrap();
    let revisions = [
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
    ]
    .map(|event| event.revision());
    assert_eq!(revisions, [10, 11, 12]);
}
