//! c4m's state store: an etcd-v3-shaped key-value store.
//!
//! - One global `i64` revision, bumped once per successful write transaction; every key carries
//!   `create_revision`, `mod_revision` (the Kubernetes `resourceVersion`) and `version`.
//! - All-or-nothing transactions of puts and deletes with compare-and-swap [`Precondition`]s;
//!   a failed precondition is [`Error::Conflict`] (HTTP 409).
//! - Prefix watches that replay history after a given revision and then follow live writes, in
//!   order, without gaps or duplicates; a watcher that falls behind the live events catches up
//!   from history, and one whose history was compacted ends with [`Error::Compacted`] (HTTP 410).
//!
//! [`Store`] is the backend-neutral trait (usable as `Arc<dyn Store>`); `RedbStore` (feature
//! `redb`, on by default) is the embedded, crash-safe implementation on a single redb file;
//! `MemoryStore` (feature `test-util`) keeps the same contract in memory. Without features the
//! crate is the trait and its types alone.
//!
//! ```
//! # #[cfg(feature = "redb")]
//! # async fn demo() -> Result<(), c4m_state::Error> {
//! use c4m_state::{Precondition, RedbStore, Store};
//!
//! let dir = std::env::temp_dir().join(format!("c4m-state-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let store = RedbStore::open(&dir.join("state.redb"))?;
//! let created = store.put("/registry/demo", "v1".into(), Precondition::Absent).await?;
//! // Compare-and-swap on the revision the write returned.
//! store.put("/registry/demo", "v2".into(), Precondition::ModRevision(created)).await?;
//! assert!(store.put("/registry/demo", "v3".into(), Precondition::ModRevision(created)).await.is_err());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! # #[cfg(feature = "redb")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

#[cfg(feature = "redb")]
mod codec;
mod error;
#[cfg(feature = "test-util")]
mod memory;
mod options;
#[cfg(any(feature = "redb", feature = "test-util"))]
mod plan;
#[cfg(feature = "redb")]
mod redb_store;
mod store;
#[cfg(feature = "redb")]
mod tables;
mod types;
#[cfg(any(feature = "redb", feature = "test-util"))]
mod watch;
#[cfg(feature = "redb")]
mod writer;

pub use error::{Error, Result};
#[cfg(feature = "test-util")]
pub use memory::MemoryStore;
pub use options::StoreOptions;
#[cfg(feature = "redb")]
pub use redb_store::RedbStore;
pub use store::{Store, WatchStream};
pub use types::{EventKind, KeyValue, Op, Precondition, WatchEvent};
