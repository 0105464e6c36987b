//! Crash durability: every write acknowledged before `kill -9` is present after reopening.
//!
//! The test re-executes its own binary with `C4M_STORE_CRASH_CHILD` set; in that mode the
//! `crash_child` test becomes a writer that prints each acknowledged key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use c4m_state::{Precondition, RedbStore, Store};

const CHILD_ENV: &str = "C4M_STORE_CRASH_CHILD";
const ACK_PREFIX: &str = "acked ";
const CHILD_WRITERS: usize = 4;
/// A cap so an orphaned child cannot write forever.
const CHILD_MAX_KEYS_PER_WRITER: usize = 50_000;
/// Acknowledgements to see before killing the child.
const KILL_AFTER: usize = 400;

#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Normal test runs: nothing to do.
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = std::sync::Arc::new(RedbStore::open(path.as_ref()).unwrap());
        let writers: Vec<_> = (0..CHILD_WRITERS)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..CHILD_MAX_KEYS_PER_WRITER {
                        let key = format!("/crash/{writer}/{i}");
                        let value = Bytes::from(vec![b'x'; 512]);
                        store.put(&key, value, Precondition::Absent).await.unwrap();
                        // println! goes through a line-buffered stdout: flushed per line.
                        println!("{ACK_PREFIX}{key}");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("crash.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut killed = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(key) = line.strip_prefix(ACK_PREFIX) {
            acked.push(key.to_owned());
        }
        if !killed && acked.len() >= KILL_AFTER {
            // Child::kill is SIGKILL on Unix; keep reading what it printed before dying.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "child exited before being killed: {status:?}");
    assert!(!status.success(), "child was killed");

    let store = RedbStore::open(&path).unwrap();
    let revision = store.current_revision().await.unwrap();
    assert!(
        revision >= acked.len() as i64,
        "revision {revision} < {} acked",
        acked.len()
    );
    for key in &acked {
        assert!(
            store.get(key).await.unwrap().is_some(),
            "acknowledged key {key} lost"
        );
    }
    // The store is consistent: every revision is one key, and it accepts new writes.
    let (listed, at) = store.range("/crash/").await.unwrap();
    assert_eq!(listed.len() as i64, at);
    store
        .put(
            "/after-crash",
            Bytes::from_static(b"ok"),
            Precondition::Absent,
        )
        .await
        .unwrap();
}
