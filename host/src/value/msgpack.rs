//! [`Value`] ↔ MessagePack, with the mapping the WIT interface documents
//! (`guest-abi/wit/isolate.wit`, `variant value`): how structured data crosses between
//! isolates and WebAssembly guests of any language.

use indexmap::IndexMap;
use rmpv::Value as Msg;

use super::ser::{error_fields, error_from_fields, map_from_pairs, regexp_from_parts};
use super::{BigInt, Value};
use crate::error::{Error, JsError};

/// Ext types of the mapping.
const EXT_UNDEFINED: i8 = 0;
const EXT_BIGINT: i8 = 1;
const EXT_MAP: i8 = 2;
const EXT_SET: i8 = 3;
const EXT_REGEXP: i8 = 4;
const EXT_ERROR: i8 = 5;
/// MessagePack's own timestamp type.
const EXT_TIMESTAMP: i8 = -1;
/// Nesting deeper than this is refused (the input comes from a guest).
const MAX_DEPTH: usize = 1000;
/// The largest integer a JavaScript number holds exactly (2^53).
const MAX_SAFE: f64 = 9_007_199_254_740_992.0;

/// Encodes a value.
pub fn to_msgpack(value: &Value) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &encode(value)).map_err(|e| Error::Conversion(e.to_string()))?;
    Ok(out)
}

/// Decodes a value.
pub fn from_msgpack(bytes: &[u8]) -> Result<Value, Error> {
    let mut input = bytes;
    let msg = rmpv::decode::read_value_with_max_depth(&mut input, MAX_DEPTH).map_err(|e| malformed(&e.to_string()))?;
    if !input.is_empty() {
        return Err(malformed("bytes after the value"));
    }
    decode(msg, 0)
}

fn malformed(why: &str) -> Error {
    Error::Conversion(format!("malformed MessagePack: {why}"))
}

fn nested(value: Msg) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).map_err(|e| Error::Conversion(e.to_string()))?;
    Ok(out)
}

fn encode(value: &Value) -> Msg {
    match value {
        Value::Undefined => Msg::Ext(EXT_UNDEFINED, Vec::new()),
        Value::Null => Msg::Nil,
        Value::Bool(b) => Msg::Boolean(*b),
        Value::Number(n) if n.fract() == 0.0 && n.abs() <= MAX_SAFE && !(*n == 0.0 && n.is_sign_negative()) => Msg::from(*n as i64),
        Value::Number(n) => Msg::F64(*n),
        Value::BigInt(b) => Msg::Ext(EXT_BIGINT, b.to_string().into_bytes()),
        Value::String(s) => Msg::from(s.as_str()),
        Value::Bytes(b) => Msg::Binary(b.clone()),
        Value::Array(items) => Msg::Array(items.iter().map(encode).collect()),
        Value::Object(map) => Msg::Map(map.iter().map(|(k, v)| (Msg::from(k.as_str()), encode(v))).collect()),
        Value::Date(ms) => Msg::Ext(EXT_TIMESTAMP, timestamp(*ms)),
        Value::Map(entries) => ext(EXT_MAP, Msg::Array(entries.iter().map(|(k, v)| Msg::Array(vec![encode(k), encode(v)])).collect())),
        Value::Set(items) => ext(EXT_SET, Msg::Array(items.iter().map(encode).collect())),
        Value::RegExp { source, flags } => ext(EXT_REGEXP, Msg::Array(vec![Msg::from(source.as_str()), Msg::from(flags.as_str())])),
        Value::Error(e) => ext(EXT_ERROR, encode(&error_fields(e))),
    }
}

fn ext(kind: i8, inner: Msg) -> Msg {
    // Encoding a value built here cannot fail.
    Msg::Ext(kind, nested(inner).unwrap_or_default())
}

/// MessagePack's timestamp 96: nanoseconds (u32) then seconds (i64), big-endian.
fn timestamp(ms: f64) -> Vec<u8> {
    let seconds = (ms / 1000.0).floor();
    let nanos = ((ms - seconds * 1000.0) * 1e6).round().clamp(0.0, 999_999_999.0) as u32;
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&nanos.to_be_bytes());
    out.extend_from_slice(&(seconds as i64).to_be_bytes());
    out
}

fn from_timestamp(data: &[u8]) -> Result<f64, Error> {
    let (seconds, nanos) = match data.len() {
        4 => (u32::from_be_bytes(data.try_into().expect("4 bytes")) as i64, 0u32),
        8 => {
            let raw = u64::from_be_bytes(data.try_into().expect("8 bytes"));
            ((raw & 0x3_ffff_ffff) as i64, (raw >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().expect("8 bytes")),
            u32::from_be_bytes(data[..4].try_into().expect("4 bytes")),
        ),
        _ => return Err(malformed("a timestamp of the wrong size")),
    };
    Ok(seconds as f64 * 1000.0 + f64::from(nanos) / 1e6)
}

fn decode(msg: Msg, depth: usize) -> Result<Value, Error> {
    // Ext values nest MessagePack in MessagePack: count the depth across them too.
    if depth > MAX_DEPTH {
        return Err(malformed("nested too deeply"));
    }
    let decode = |msg| decode(msg, depth + 1);
    Ok(match msg {
        Msg::Nil => Value::Null,
        Msg::Boolean(b) => Value::Bool(b),
        Msg::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(v), _) if (v as f64).abs() <= MAX_SAFE => Value::Number(v as f64),
            (Some(v), _) => Value::BigInt(BigInt::from(v)),
            (_, Some(v)) => Value::BigInt(BigInt::from(v)),
            _ => return Err(malformed("an integer out of range")),
        },
        Msg::F32(f) => Value::Number(f.into()),
        Msg::F64(f) => Value::Number(f),
        Msg::String(s) => Value::String(s.into_str().ok_or_else(|| malformed("a string that is not UTF-8"))?),
        Msg::Binary(b) => Value::Bytes(b),
        Msg::Array(items) => Value::Array(items.into_iter().map(&decode).collect::<Result<_, _>>()?),
        Msg::Map(entries) => {
            let mut map = IndexMap::with_capacity(entries.len());
            for (k, v) in entries {
                let Msg::String(key) = k else { return Err(malformed("a map key that is not a string (use ext type 2 for a Map)")) };
                map.insert(key.into_str().ok_or_else(|| malformed("a key that is not UTF-8"))?, decode(v)?);
            }
            Value::Object(map)
        }
        Msg::Ext(EXT_UNDEFINED, _) => Value::Undefined,
        Msg::Ext(EXT_BIGINT, text) => {
            let text = String::from_utf8(text).map_err(|_| malformed("a BigInt that is not text"))?;
            Value::BigInt(text.parse().map_err(|_| malformed("a BigInt that is not a decimal integer"))?)
        }
        Msg::Ext(EXT_TIMESTAMP, data) => Value::Date(from_timestamp(&data)?),
        Msg::Ext(kind @ (EXT_MAP | EXT_SET | EXT_REGEXP | EXT_ERROR), data) => {
            let inner = decode(from_nested(&data)?)?;
            match (kind, inner) {
                (EXT_MAP, Value::Array(pairs)) => {
                    map_from_pairs(pairs).ok_or_else(|| malformed("a Map entry that is not a [key, value] pair"))?
                }
                (EXT_SET, Value::Array(items)) => Value::Set(items),
                (EXT_REGEXP, Value::Array(parts)) => regexp_from_parts(parts).ok_or_else(|| malformed("a RegExp that is not [source, flags]"))?,
                (EXT_ERROR, fields @ Value::Object(_)) => Value::Error(Box::new(JsError { ..error_from_fields(fields) })),
                _ => return Err(malformed("an ext value of the wrong shape")),
            }
        }
        Msg::Ext(kind, _) => return Err(malformed(&format!("unknown ext type {kind}"))),
    })
}

fn from_nested(data: &[u8]) -> Result<Msg, Error> {
    let mut input = data;
    rmpv::decode::read_value_with_max_depth(&mut input, MAX_DEPTH).map_err(|e| malformed(&e.to_string()))
}
