//! What a store keeps and how much memory it may use.

/// Tuning for `RedbStore::open_with` and `MemoryStore::with_options`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many of the latest revisions to keep in history for watches; older ones are
    /// compacted automatically. Must be at least 1. Default 10 000.
    pub history_revisions: i64,
    /// How many revisions a live watcher may fall behind before it catches up from history
    /// instead (slower: it reads the database). Between 1 and 2^24. Default 256: the
    /// buffer keeps that many recent transactions in memory whatever their size.
    pub watch_buffer: usize,
    /// Memory redb may use to cache pages, in bytes. The control plane keeps
    /// every object decoded in its own cache, so the store's page cache
    /// mostly serves history replays. Default 32 MiB (redb's own default of
    /// 1 GiB would make the store the largest part of the process).
    pub cache_bytes: usize,
    /// Verify every page checksum when opening (reads the whole file). Without it a file
    /// damaged outside redb may make the open panic. Default off.
    pub verify_on_open: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            history_revisions: 10_000,
            watch_buffer: 256,
            cache_bytes: 32 << 20,
            verify_on_open: false,
        }
    }
}
