//! What every backend does before writing a transaction: check it, check its
//! preconditions, and compute the events it makes. Pure, so the embedded and
//! the in-memory store apply transactions with exactly the same semantics.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::types::{EventKind, KeyValue, Op, Precondition, WatchEvent};

/// Checks `ops` (non-empty keys, each at most once) and every precondition
/// against the current values (`current(key)`), and computes the events the
/// transaction makes at `revision`. Reads only, so a rejection changes
/// nothing. No events means the transaction changes nothing.
pub(crate) fn plan(
    ops: &[Op],
    revision: i64,
    mut current: impl FnMut(&str) -> Result<Option<KeyValue>>,
) -> Result<Vec<WatchEvent>> {
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        if op.key().is_empty() {
            return Err(Error::InvalidRequest("empty key".into()));
        }
        if !seen.insert(op.key()) {
            return Err(Error::InvalidRequest(format!(
                "key {} appears more than once in one transaction",
                op.key()
            )));
        }
    }
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        let current = current(op.key())?;
        check_precondition(op.key(), op.precondition(), current.as_ref())?;
        match (op, current) {
            (Op::Put { key, value, .. }, prev) => events.push(WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(revision, |kv| kv.create_revision),
                    mod_revision: revision,
                    version: prev.as_ref().map_or(1, |kv| kv.version + 1),
                },
                prev,
            }),
            (Op::Delete { .. }, Some(prev)) => events.push(WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: revision,
                    ..prev.clone()
                },
                prev: Some(prev),
            }),
            (Op::Delete { .. }, None) => {}
        }
    }
    Ok(events)
}

fn check_precondition(key: &str, expected: Precondition, current: Option<&KeyValue>) -> Result<()> {
    let actual = current.map(|kv| kv.mod_revision);
    let holds = match expected {
        Precondition::None => true,
        Precondition::Absent => actual.is_none(),
        Precondition::ModRevision(revision) => actual == Some(revision),
    };
    if holds {
        Ok(())
    } else {
        Err(Error::Conflict {
            key: key.to_owned(),
            expected,
            actual,
        })
    }
}
