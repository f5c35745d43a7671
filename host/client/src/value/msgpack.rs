//! [`Value`] ↔ MessagePack, with the mapping the WIT interface documents
//! (`guest-abi/wit/isolate.wit`, `variant value`): how structured data crosses between
//! isolates and WebAssembly guests of any language.
//!
//! Ext values (Map, Set, RegExp, Error) hold MessagePack inside MessagePack. Both directions
//! work in place, in one pass: the reader reads an ext value's payload where it lies in the
//! input (no copy, no second parse), and the writer reserves each ext header and fills in its
//! length afterwards (always the 32-bit form, which every reader accepts), so nesting costs
//! nothing however deep it goes.

use indexmap::IndexMap;
use rmp::Marker;

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
/// Nesting deeper than this is refused (the input comes from a guest; see also `value::deep`).
const MAX_DEPTH: usize = 1000;
/// The largest integer a JavaScript number holds exactly (2^53).
const MAX_SAFE: f64 = 9_007_199_254_740_992.0;

/// Encodes a value.
pub fn to_msgpack(value: &Value) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    write(&mut out, value)?;
    Ok(out)
}

/// Decodes a value.
pub fn from_msgpack(bytes: &[u8]) -> Result<Value, Error> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    if reader.at != bytes.len() {
        return Err(malformed("bytes after the value"));
    }
    Ok(value)
}

fn malformed(why: &str) -> Error {
    Error::Conversion(format!("malformed MessagePack: {why}"))
}

fn too_long() -> Error {
    Error::Conversion("a value too long for MessagePack".into())
}

fn length(n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| too_long())
}

fn write(out: &mut Vec<u8>, value: &Value) -> Result<(), Error> {
    super::deep(value.nests(), || write_here(out, value))
}

fn write_here(out: &mut Vec<u8>, value: &Value) -> Result<(), Error> {
    // Writing into a `Vec` cannot fail; lengths are checked by `length`.
    match value {
        Value::Undefined => drop(rmp::encode::write_ext_meta(out, 0, EXT_UNDEFINED)),
        Value::Null => rmp::encode::write_nil(out).unwrap_or_default(),
        Value::Bool(b) => rmp::encode::write_bool(out, *b).unwrap_or_default(),
        Value::Number(n) if n.fract() == 0.0 && n.abs() <= MAX_SAFE && !(*n == 0.0 && n.is_sign_negative()) => {
            drop(rmp::encode::write_sint(out, *n as i64))
        }
        Value::Number(n) => drop(rmp::encode::write_f64(out, *n)),
        Value::BigInt(b) => {
            let text = b.to_string();
            drop(rmp::encode::write_ext_meta(out, length(text.len())?, EXT_BIGINT));
            out.extend_from_slice(text.as_bytes());
        }
        Value::String(s) => {
            drop(rmp::encode::write_str_len(out, length(s.len())?));
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            drop(rmp::encode::write_bin_len(out, length(b.len())?));
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            drop(rmp::encode::write_array_len(out, length(items.len())?));
            for item in items {
                write(out, item)?;
            }
        }
        Value::Object(map) => {
            drop(rmp::encode::write_map_len(out, length(map.len())?));
            for (key, item) in map {
                drop(rmp::encode::write_str_len(out, length(key.len())?));
                out.extend_from_slice(key.as_bytes());
                write(out, item)?;
            }
        }
        Value::Date(ms) => {
            let stamp = timestamp(*ms);
            drop(rmp::encode::write_ext_meta(out, length(stamp.len())?, EXT_TIMESTAMP));
            out.extend_from_slice(&stamp);
        }
        Value::Map(entries) => ext(out, EXT_MAP, |out| {
            drop(rmp::encode::write_array_len(out, length(entries.len())?));
            for (key, item) in entries {
                drop(rmp::encode::write_array_len(out, 2));
                write(out, key)?;
                write(out, item)?;
            }
            Ok(())
        })?,
        Value::Set(items) => ext(out, EXT_SET, |out| {
            drop(rmp::encode::write_array_len(out, length(items.len())?));
            items.iter().try_for_each(|item| write(out, item))
        })?,
        Value::RegExp { source, flags } => {
            ext(out, EXT_REGEXP, |out| write(out, &Value::Array(vec![Value::String(source.clone()), Value::String(flags.clone())])))?
        }
        Value::Error(e) => ext(out, EXT_ERROR, |out| write(out, &error_fields(e)))?,
    }
    Ok(())
}

/// An ext value whose payload `payload` writes: the header (ext 32) is written first and its
/// length filled in afterwards.
fn ext(out: &mut Vec<u8>, kind: i8, payload: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>) -> Result<(), Error> {
    out.push(Marker::Ext32.to_u8());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    payload(out)?;
    let len = length(out.len() - at - 5)?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
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

/// The containers, which hold values.
enum Container {
    Array,
    Map,
    Ext,
}

/// Reads MessagePack from a slice, ext payloads included, without copying.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], Error> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| malformed("it ends too soon"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn uint(&mut self, width: usize) -> Result<u64, Error> {
        Ok(self.take(width)?.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    fn len(&mut self, width: usize) -> Result<usize, Error> {
        usize::try_from(self.uint(width)?).map_err(|_| too_long())
    }

    fn string(&mut self, len: usize) -> Result<String, Error> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string that is not UTF-8"))
    }

    fn number(n: i128) -> Value {
        if (n as f64).abs() <= MAX_SAFE { Value::Number(n as f64) } else { Value::BigInt(BigInt::from(n)) }
    }

    /// One value. Only containers recurse, and this frame stays small: the scalars are read
    /// in a function of their own (in debug builds, one frame of a big match here took 64 KB).
    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        // Ext values nest MessagePack in MessagePack: the depth counts across them too.
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        self.value_here(depth)
    }

    fn value_here(&mut self, depth: usize) -> Result<Value, Error> {
        let marker = Marker::from_u8(self.take(1)?[0]);
        let (kind, len) = match marker {
            Marker::FixArray(n) => (Container::Array, usize::from(n)),
            Marker::Array16 => (Container::Array, self.len(2)?),
            Marker::Array32 => (Container::Array, self.len(4)?),
            Marker::FixMap(n) => (Container::Map, usize::from(n)),
            Marker::Map16 => (Container::Map, self.len(2)?),
            Marker::Map32 => (Container::Map, self.len(4)?),
            Marker::FixExt1 => (Container::Ext, 1),
            Marker::FixExt2 => (Container::Ext, 2),
            Marker::FixExt4 => (Container::Ext, 4),
            Marker::FixExt8 => (Container::Ext, 8),
            Marker::FixExt16 => (Container::Ext, 16),
            Marker::Ext8 => (Container::Ext, self.len(1)?),
            Marker::Ext16 => (Container::Ext, self.len(2)?),
            Marker::Ext32 => (Container::Ext, self.len(4)?),
            scalar => return self.scalar(scalar),
        };
        super::deep(true, || match kind {
            Container::Array => self.array(len, depth),
            Container::Map => self.map(len, depth),
            Container::Ext => self.ext(len, depth),
        })
    }

    #[inline(never)]
    fn scalar(&mut self, marker: Marker) -> Result<Value, Error> {
        Ok(match marker {
            Marker::Null => Value::Null,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(n) => Value::Number(f64::from(n)),
            Marker::FixNeg(n) => Value::Number(f64::from(n)),
            Marker::U8 => Reader::number(self.uint(1)?.into()),
            Marker::U16 => Reader::number(self.uint(2)?.into()),
            Marker::U32 => Reader::number(self.uint(4)?.into()),
            Marker::U64 => Reader::number(self.uint(8)?.into()),
            Marker::I8 => Reader::number((self.uint(1)? as u8 as i8).into()),
            Marker::I16 => Reader::number((self.uint(2)? as u16 as i16).into()),
            Marker::I32 => Reader::number((self.uint(4)? as u32 as i32).into()),
            Marker::I64 => Reader::number((self.uint(8)? as i64).into()),
            Marker::F32 => Value::Number(f32::from_bits(self.uint(4)? as u32).into()),
            Marker::F64 => Value::Number(f64::from_bits(self.uint(8)?)),
            Marker::FixStr(n) => Value::String(self.string(n.into())?),
            Marker::Str8 => { let n = self.len(1)?; Value::String(self.string(n)?) },
            Marker::Str16 => { let n = self.len(2)?; Value::String(self.string(n)?) },
            Marker::Str32 => { let n = self.len(4)?; Value::String(self.string(n)?) },
            Marker::Bin8 => { let n = self.len(1)?; Value::Bytes(self.take(n)?.to_vec()) },
            Marker::Bin16 => { let n = self.len(2)?; Value::Bytes(self.take(n)?.to_vec()) },
            Marker::Bin32 => { let n = self.len(4)?; Value::Bytes(self.take(n)?.to_vec()) },
            _ => return Err(malformed("a reserved byte")),
        })
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Value, Error> {
        // Each element takes at least a byte: a claimed length past the input is malformed
        // before anything is reserved for it.
        if len > self.bytes.len() - self.at {
            return Err(malformed("it ends too soon"));
        }
        let items = (0..len).map(|_| self.value(depth + 1)).collect::<Result<_, _>>()?;
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, Error> {
        if len > self.bytes.len() - self.at {
            return Err(malformed("it ends too soon"));
        }
        let mut map = IndexMap::with_capacity(len);
        for _ in 0..len {
            let Value::String(key) = self.value(depth + 1)? else {
                return Err(malformed("a map key that is not a string (use ext type 2 for a Map)"));
            };
            map.insert(key, self.value(depth + 1)?);
        }
        Ok(Value::Object(map))
    }

    fn ext(&mut self, len: usize, depth: usize) -> Result<Value, Error> {
        let kind = self.take(1)?[0] as i8;
        let data = self.take(len)?;
        Ok(match kind {
            EXT_UNDEFINED => Value::Undefined,
            EXT_BIGINT => {
                let text = std::str::from_utf8(data).map_err(|_| malformed("a BigInt that is not text"))?;
                Value::BigInt(text.parse().map_err(|_| malformed("a BigInt that is not a decimal integer"))?)
            }
            EXT_TIMESTAMP => Value::Date(from_timestamp(data)?),
            EXT_MAP | EXT_SET | EXT_REGEXP | EXT_ERROR => {
                // The payload, read where it lies.
                let mut inner = Reader { bytes: data, at: 0 };
                let value = inner.value(depth + 1)?;
                if inner.at != data.len() {
                    return Err(malformed("bytes after an ext value's payload"));
                }
                match (kind, value) {
                    (EXT_MAP, Value::Array(pairs)) => {
                        map_from_pairs(pairs).ok_or_else(|| malformed("a Map entry that is not a [key, value] pair"))?
                    }
                    (EXT_SET, Value::Array(items)) => Value::Set(items),
                    (EXT_REGEXP, Value::Array(parts)) => regexp_from_parts(parts).ok_or_else(|| malformed("a RegExp that is not [source, flags]"))?,
                    (EXT_ERROR, fields @ Value::Object(_)) => Value::Error(Box::new(JsError { ..error_from_fields(fields) })),
                    _ => return Err(malformed("an ext value of the wrong shape")),
                }
            }
            kind => return Err(malformed(&format!("unknown ext type {kind}"))),
        })
    }
}
