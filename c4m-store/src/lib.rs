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
//! [`Store`] is the backend-neutral trait (usable as `Arc<dyn Store>`); [`RedbStore`] is the
//! embedded, crash-safe implementation on a single redb file.

mod codec;
mod error;
mod redb_store;
mod store;
mod tables;
mod types;
mod watch;
mod writer;

pub use error::{Error, Result};
pub use redb_store::{RedbStore, StoreOptions};
pub use store::{Store, WatchStream};
pub use types::{EventKind, KeyValue, Op, Precondition, WatchEvent};
