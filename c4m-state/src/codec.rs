//! On-disk encodings of key-values and history entries.
//!
//! Little-endian and length-prefixed. Every decode is bounds-checked so a damaged file yields
//! [`Error::Corrupt`] instead of a panic.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::types::{EventKind, KeyValue, WatchEvent};

const PUT_TAG: u8 = 0;
const DELETE_TAG: u8 = 1;

/// Encodes the value stored in the key table: bookkeeping header, then the raw value.
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(24 + kv.value.len());
    buf.extend_from_slice(&kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&kv.mod_revision.to_le_bytes());
    buf.extend_from_slice(&kv.version.to_le_bytes());
    buf.extend_from_slice(&kv.value);
    buf
}

/// Decodes a key-table entry (raw key bytes and encoded value).
pub(crate) fn decode_kv(key: &[u8], bytes: &[u8]) -> Result<KeyValue> {
    let key = decode_key(key)?;
    let mut reader = Reader::new(bytes, &key);
    let create_revision = reader.i64()?;
    let mod_revision = reader.i64()?;
    let version = reader.i64()?;
    let value = Bytes::copy_from_slice(reader.rest());
    Ok(KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
        version,
    })
}

fn decode_key(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|_| Error::Corrupt("key is not valid utf-8".into()))
}

/// Encodes the events of one revision for the history table.
///
/// A delete stores only the previous key-value; its `kv` is rebuilt from it on decode.
pub(crate) fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut buf = Vec::new();
    put_u32(&mut buf, events.len());
    for event in events {
        match event.kind {
            EventKind::Put => {
                buf.push(PUT_TAG);
                put_bytes(&mut buf, event.kv.key.as_bytes());
                put_kv_body(&mut buf, &event.kv);
                match &event.prev {
                    Some(prev) => {
                        buf.push(1);
                        put_kv_body(&mut buf, prev);
                    }
                    None => buf.push(0),
                }
            }
            EventKind::Delete => {
                buf.push(DELETE_TAG);
                put_bytes(&mut buf, event.kv.key.as_bytes());
                // A delete event always has a previous value; fall back to `kv` defensively.
                put_kv_body(&mut buf, event.prev.as_ref().unwrap_or(&event.kv));
            }
        }
    }
    buf
}

/// Decodes the events stored for `revision`.
pub(crate) fn decode_events(revision: i64, bytes: &[u8]) -> Result<Vec<WatchEvent>> {
    let context = format!("history entry {revision}");
    let mut reader = Reader::new(bytes, &context);
    let count = reader.u32()?;
    let mut events = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let tag = reader.u8()?;
        let key = decode_key(reader.bytes()?)?;
        let event = match tag {
            PUT_TAG => {
                let kv = reader.kv_body(&key)?;
                let prev = match reader.u8()? {
                    0 => None,
                    _ => Some(reader.kv_body(&key)?),
                };
                WatchEvent {
                    kind: EventKind::Put,
                    kv,
                    prev,
                }
            }
            DELETE_TAG => {
                let prev = reader.kv_body(&key)?;
                let kv = KeyValue {
                    mod_revision: revision,
                    ..prev.clone()
                };
                WatchEvent {
                    kind: EventKind::Delete,
                    kv,
                    prev: Some(prev),
                }
            }
            other => {
                return Err(Error::Corrupt(format!(
                    "{context}: unknown event tag {other}"
                )));
            }
        };
        events.push(event);
    }
    Ok(events)
}

fn put_u32(buf: &mut Vec<u8>, len: usize) {
    // Values are bounded well below 4 GiB by redb itself (3 GiB per value).
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(buf, bytes.len());
    buf.extend_from_slice(bytes);
}

fn put_kv_body(buf: &mut Vec<u8>, kv: &KeyValue) {
    buf.extend_from_slice(&kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&kv.mod_revision.to_le_bytes());
    buf.extend_from_slice(&kv.version.to_le_bytes());
    put_bytes(buf, &kv.value);
}

/// A bounds-checked cursor over encoded bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    context: &'a str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], context: &'a str) -> Self {
        Reader { bytes, context }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < len {
            return Err(Error::Corrupt(format!(
                "{}: truncated record",
                self.context
            )));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()?;
        self.take(len)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn kv_body(&mut self, key: &str) -> Result<KeyValue> {
        Ok(KeyValue {
            key: key.to_owned(),
            create_revision: self.i64()?,
            mod_revision: self.i64()?,
            version: self.i64()?,
            value: Bytes::copy_from_slice(self.bytes()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_owned()),
            create_revision: 1,
            mod_revision: rev,
            version: rev,
        }
    }

    #[test]
    fn events_round_trip() {
        let events = vec![
            WatchEvent {
                kind: EventKind::Put,
                kv: kv("/a", "new", 3),
                prev: Some(kv("/a", "old", 2)),
            },
            WatchEvent {
                kind: EventKind::Put,
                kv: kv("/b", "", 3),
                prev: None,
            },
            WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: 3,
                    ..kv("/c", "gone", 1)
                },
                prev: Some(kv("/c", "gone", 1)),
            },
        ];
        assert_eq!(decode_events(3, &encode_events(&events)).unwrap(), events);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let encoded = encode_events(&[WatchEvent {
            kind: EventKind::Put,
            kv: kv("/a", "value", 2),
            prev: None,
        }]);
        for len in 0..encoded.len() {
            assert!(decode_events(2, &encoded[..len]).is_err(), "len {len}");
        }
        assert!(decode_kv(b"/a", &[0; 10]).is_err());
        assert!(decode_kv(&[0xff], &[0; 24]).is_err());
    }
}
