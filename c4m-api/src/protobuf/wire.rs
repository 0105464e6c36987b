//! JSON written straight into protobuf's wire format, led by the
//! descriptors. No `DynamicMessage` is built on the way: making one per
//! object, every string copied into it, was most of what a list of ten
//! thousand pods cost.
//!
//! Fields go out in field-number order, as Go and prost write them, so the
//! bytes are the ones a `DynamicMessage` of the same object encodes to.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

use super::{
    DURATION, FIELDS_V1, INT_OR_STRING, MICRO_TIME, QUANTITY, RAW_EXTENSION, Result, TIME,
    embedded_fields, field_error, parse_go_duration,
};

/// One field's value, ready for the wire.
enum Scalar<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Bytes(Cow<'a, [u8]>),
}

impl Scalar<'_> {
    fn wire_type(&self) -> WireType {
        match self {
            Scalar::Varint(_) => WireType::Varint,
            Scalar::Fixed32(_) => WireType::ThirtyTwoBit,
            Scalar::Fixed64(_) => WireType::SixtyFourBit,
            Scalar::Bytes(_) => WireType::LengthDelimited,
        }
    }

    /// The value without its key (as a packed list holds it).
    fn put_payload(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Varint(v) => encode_varint(*v, out),
            Scalar::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Bytes(bytes) => {
                encode_varint(bytes.len() as u64, out);
                out.extend_from_slice(bytes);
            }
        }
    }

    fn put(&self, number: u32, out: &mut Vec<u8>) {
        encode_key(number, self.wire_type(), out);
        self.put_payload(out);
    }
}

/// Writes `json` as a message of `descriptor` onto `out`; `path` names
/// where it is, for errors.
pub(super) fn write_message(
    descriptor: &MessageDescriptor,
    json: &Value,
    path: &mut String,
    out: &mut Vec<u8>,
) -> Result<()> {
    let name = descriptor.full_name();
    match name {
        INT_OR_STRING => match json {
            Value::Number(n) => {
                let value = n
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| field_error(path, format!("{n} is not a 32-bit integer")))?;
                put_named(descriptor, "type", &Scalar::Varint(0), out)?;
                put_named(
                    descriptor,
                    "intVal",
                    &Scalar::Varint(value as i64 as u64),
                    out,
                )?;
            }
            Value::String(s) => {
                put_named(descriptor, "type", &Scalar::Varint(1), out)?;
                put_named(descriptor, "strVal", &text(s), out)?;
            }
            other => {
                return Err(field_error(
                    path,
                    format!("{other} is not an integer or a string"),
                ));
            }
        },
        QUANTITY => {
            let value = match json {
                Value::String(s) => text(s),
                Value::Number(n) => Scalar::Bytes(Cow::Owned(n.to_string().into_bytes())),
                other => return Err(field_error(path, format!("{other} is not a quantity"))),
            };
            put_named(descriptor, "string", &value, out)?;
        }
        TIME | MICRO_TIME => {
            let text = json
                .as_str()
                .ok_or_else(|| field_error(path, format!("{json} is not an RFC 3339 time")))?;
            let since_epoch = c4m_core::parse_rfc3339(text)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .ok_or_else(|| field_error(path, format!("{text:?} is not an RFC 3339 time")))?;
            let seconds = i64::try_from(since_epoch.as_secs())
                .map_err(|_| field_error(path, format!("{text:?} is out of range")))?;
            put_named(descriptor, "seconds", &Scalar::Varint(seconds as u64), out)?;
            // Time keeps whole seconds, as Kubernetes' does.
            if name == MICRO_TIME {
                let nanos = i64::from(since_epoch.subsec_micros()) * 1000;
                put_named(descriptor, "nanos", &Scalar::Varint(nanos as u64), out)?;
            }
        }
        DURATION => {
            let text = json
                .as_str()
                .ok_or_else(|| field_error(path, format!("{json} is not a duration")))?;
            let nanos = parse_go_duration(text).ok_or_else(|| {
                field_error(path, format!("{text:?} is not a duration (like 1m30s)"))
            })?;
            put_named(descriptor, "duration", &Scalar::Varint(nanos as u64), out)?;
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let field = if name == FIELDS_V1 { "Raw" } else { "raw" };
            let text = serde_json::to_vec(json)
                .map_err(|e| field_error(path, format!("cannot be written as JSON: {e}")))?;
            put_named(descriptor, field, &Scalar::Bytes(Cow::Owned(text)), out)?;
        }
        _ => {
            let fields = json
                .as_object()
                .ok_or_else(|| field_error(path, format!("{json} is not an object")))?;
            // apiVersion, kind and fields the protos do not have (none for
            // an object c4m validated) have no place in the message.
            let mut present: Vec<(FieldDescriptor, Option<&String>, &Value)> = fields
                .iter()
                .filter(|(_, value)| !value.is_null())
                .filter_map(|(name, value)| {
                    Some((descriptor.get_field_by_name(name)?, Some(name), value))
                })
                .collect();
            // An embedded struct takes its fields from this object's own.
            present.extend(
                embedded_fields(descriptor)
                    .into_iter()
                    .map(|field| (field, None, json)),
            );
            present.sort_unstable_by_key(|(field, _, _)| field.number());
            for (field, name, value) in present {
                let Some(name) = name else {
                    let Kind::Message(embedded) = field.kind() else {
                        continue;
                    };
                    let mut message = Vec::new();
                    write_message(&embedded, value, path, &mut message)?;
                    if !message.is_empty() {
                        Scalar::Bytes(Cow::Owned(message)).put(field.number(), out);
                    }
                    continue;
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                let written = write_field(&field, value, path, out);
                path.truncate(len);
                written?;
            }
        }
    }
    Ok(())
}

/// Writes field `name` of a message Kubernetes maps by hand.
fn put_named(
    descriptor: &MessageDescriptor,
    name: &str,
    value: &Scalar,
    out: &mut Vec<u8>,
) -> Result<()> {
    let field = descriptor.get_field_by_name(name).ok_or_else(|| {
        field_error(
            "",
            format!(
                "the descriptors' {} has no field {name}",
                descriptor.full_name()
            ),
        )
    })?;
    value.put(field.number(), out);
    Ok(())
}

fn text(s: &str) -> Scalar<'_> {
    Scalar::Bytes(Cow::Borrowed(s.as_bytes()))
}

fn write_field(
    field: &FieldDescriptor,
    value: &Value,
    path: &mut String,
    out: &mut Vec<u8>,
) -> Result<()> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(field_error(path, "a map field without an entry type"));
        };
        let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let object = value
            .as_object()
            .ok_or_else(|| field_error(path, format!("{value} is not an object")))?;
        let mut pair = Vec::new();
        for (key, item) in object {
            if item.is_null() {
                continue;
            }
            let len = path.len();
            path.push_str(&format!("[{key}]"));
            pair.clear();
            text(key).put(key_field.number(), &mut pair);
            let written = scalar(&value_field.kind(), item, path)
                .map(|item| item.put(value_field.number(), &mut pair));
            path.truncate(len);
            written?;
            Scalar::Bytes(Cow::Borrowed(&pair)).put(field.number(), out);
        }
        return Ok(());
    }
    if field.is_list() {
        let items = value
            .as_array()
            .ok_or_else(|| field_error(path, format!("{value} is not an array")))?;
        let mut packed = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{index}]"));
            let converted = scalar(&field.kind(), item, path);
            path.truncate(len);
            let converted = converted?;
            if field.is_packed() {
                converted.put_payload(&mut packed);
            } else {
                converted.put(field.number(), out);
            }
        }
        if field.is_packed() && !items.is_empty() {
            Scalar::Bytes(Cow::Owned(packed)).put(field.number(), out);
        }
        return Ok(());
    }
    scalar(&field.kind(), value, path)?.put(field.number(), out);
    Ok(())
}

fn scalar<'a>(kind: &Kind, value: &'a Value, path: &mut String) -> Result<Scalar<'a>> {
    let wrong = |what: &str| field_error(path, format!("{value} is not {what}"));
    let integer = || -> Option<i64> {
        value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map(|f| f as i64)
        })
    };
    let int32 = || {
        integer()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| wrong("a 32-bit integer"))
    };
    let uint32 = || {
        integer()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| wrong("a non-negative 32-bit integer"))
    };
    let zigzag = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
    Ok(match kind {
        Kind::Message(descriptor) => {
            let mut message = Vec::new();
            write_message(descriptor, value, path, &mut message)?;
            Scalar::Bytes(Cow::Owned(message))
        }
        Kind::String => text(value.as_str().ok_or_else(|| wrong("a string"))?),
        Kind::Bool => Scalar::Varint(u64::from(
            value.as_bool().ok_or_else(|| wrong("a boolean"))?,
        )),
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(|| wrong("base64 text"))?;
            let bytes = BASE64
                .decode(text)
                .map_err(|e| field_error(path, format!("is not valid base64: {e}")))?;
            Scalar::Bytes(Cow::Owned(bytes))
        }
        Kind::Int32 => Scalar::Varint(i64::from(int32()?) as u64),
        Kind::Sint32 => Scalar::Varint(zigzag(i64::from(int32()?))),
        Kind::Sfixed32 => Scalar::Fixed32(int32()? as u32),
        Kind::Int64 => Scalar::Varint(integer().ok_or_else(|| wrong("an integer"))? as u64),
        Kind::Sint64 => Scalar::Varint(zigzag(integer().ok_or_else(|| wrong("an integer"))?)),
        Kind::Sfixed64 => Scalar::Fixed64(integer().ok_or_else(|| wrong("an integer"))? as u64),
        Kind::Uint32 => Scalar::Varint(u64::from(uint32()?)),
        Kind::Fixed32 => Scalar::Fixed32(uint32()?),
        Kind::Uint64 | Kind::Fixed64 => {
            let v = value
                .as_u64()
                .ok_or_else(|| wrong("a non-negative integer"))?;
            if matches!(kind, Kind::Uint64) {
                Scalar::Varint(v)
            } else {
                Scalar::Fixed64(v)
            }
        }
        Kind::Double => Scalar::Fixed64(value.as_f64().ok_or_else(|| wrong("a number"))?.to_bits()),
        Kind::Float => {
            Scalar::Fixed32((value.as_f64().ok_or_else(|| wrong("a number"))? as f32).to_bits())
        }
        // Kubernetes' protos have no enums (its enumerations are strings).
        Kind::Enum(_) => Scalar::Varint(i64::from(
            integer()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| wrong("an enum number"))?,
        ) as u64),
    })
}
