//! The redb schema and the read helpers shared by the store and its watchers.

use redb::{ReadTransaction, ReadableTable, TableDefinition};

use crate::codec;
use crate::error::{Error, Result};
use crate::types::{KeyValue, WatchEvent};

/// Live keys: raw key bytes -> encoded [`KeyValue`] (keys are bytes so a damaged file cannot
/// make redb's `&str` decoding panic).
pub(crate) const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
/// History: revision -> encoded events of that revision.
pub(crate) const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
/// Store-wide counters.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Revision of the latest committed write.
pub(crate) const META_REVISION: &str = "revision";
/// Every revision at or below this one has been dropped from [`HISTORY`].
pub(crate) const META_COMPACTED: &str = "compacted";

/// The store-wide counters as of one snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub revision: i64,
    pub compacted: i64,
}

pub(crate) fn read_counters(meta: &impl ReadableTable<&'static str, i64>) -> Result<Counters> {
    let read = |name| -> Result<i64> {
        Ok(meta
            .get(name)
            .map_err(Error::storage)?
            .map(|guard| guard.value())
            .unwrap_or(0))
    };
    Ok(Counters {
        revision: read(META_REVISION)?,
        compacted: read(META_COMPACTED)?,
    })
}

pub(crate) fn snapshot_counters(txn: &ReadTransaction) -> Result<Counters> {
    read_counters(&txn.open_table(META).map_err(Error::storage)?)
}

pub(crate) fn get_key(
    keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &str,
) -> Result<Option<KeyValue>> {
    match keys.get(key.as_bytes()).map_err(Error::storage)? {
        Some(guard) => Ok(Some(codec::decode_kv(key.as_bytes(), guard.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn read_key(txn: &ReadTransaction, key: &str) -> Result<Option<KeyValue>> {
    get_key(&txn.open_table(KEYS).map_err(Error::storage)?, key)
}

/// Every key starting with `prefix`, sorted, plus the snapshot's revision.
pub(crate) fn read_prefix(txn: &ReadTransaction, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
    let revision = snapshot_counters(txn)?.revision;
    let keys = txn.open_table(KEYS).map_err(Error::storage)?;
    let mut out = Vec::new();
    for entry in keys.range(prefix.as_bytes()..).map_err(Error::storage)? {
        let (key, value) = entry.map_err(Error::storage)?;
        if !key.value().starts_with(prefix.as_bytes()) {
            break;
        }
        out.push(codec::decode_kv(key.value(), value.value())?);
    }
    Ok((out, revision))
}

/// History for revisions `after + 1 ..= through`, each entry's events filtered to `prefix`.
///
/// Fails with [`Error::Compacted`] if part of that range is gone, and with [`Error::Corrupt`] if
/// a revision is missing, so a caller never skips events silently.
pub(crate) fn read_history(
    txn: &ReadTransaction,
    prefix: &str,
    after: i64,
    through: i64,
) -> Result<Vec<(i64, Vec<WatchEvent>)>> {
    let compacted = snapshot_counters(txn)?.compacted;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            oldest: compacted,
        });
    }
    let history = txn.open_table(HISTORY).map_err(Error::storage)?;
    let mut out = Vec::new();
    let mut expected = after + 1;
    for entry in history.range(expected..=through).map_err(Error::storage)? {
        let (revision, bytes) = entry.map_err(Error::storage)?;
        let revision = revision.value();
        if revision != expected {
            break;
        }
        let mut events = codec::decode_events(revision, bytes.value())?;
        events.retain(|event| event.kv.key.starts_with(prefix));
        out.push((revision, events));
        expected += 1;
    }
    if expected <= through {
        return Err(Error::Corrupt(format!(
            "history is missing revision {expected}"
        )));
    }
    Ok(out)
}
