//! Wire bytes → [`Value`], keeping every distinction a `Value` has (undefined, BigInt, Date,
//! Map, Set, RegExp, Error, bytes).

use indexmap::IndexMap;

use super::{Budget, Cursor, Stores, malformed, regexp_flags_text};
use crate::error::{Error, JsError};
use crate::value::Value;

/// Decodes `bytes` (with their header) into a [`Value`], making no more than `budget`.
pub fn read_value(bytes: &[u8], stores: &dyn Stores, budget: Budget) -> Result<Value, Error> {
    let mut cursor = Cursor::new(bytes, stores, budget)?;
    value(&mut cursor)
}

/// Reads one value. Also the reader of last resort for the serde reader, for the types serde
/// has no word for.
pub(super) fn value(c: &mut Cursor<'_>) -> Result<Value, Error> {
    crate::value::deep(c.nests(), || value_here(c))
}

fn value_here(c: &mut Cursor<'_>) -> Result<Value, Error> {
    c.tick()?;
    let (start, first_id) = (c.at, c.next_id);
    let tag = c.tag()?;
    Ok(match tag {
        b'_' => Value::Undefined,
        b'0' => Value::Null,
        b'T' => Value::Bool(true),
        b'F' => Value::Bool(false),
        b'I' => Value::Number(f64::from(c.zigzag()?)),
        b'U' => Value::Number(f64::from(c.varint()?)),
        b'N' => Value::Number(c.double()?),
        b'Z' => Value::BigInt(c.bigint()?),
        b'"' | b'S' | b'c' => Value::String(c.string_body(tag)?.into_owned()),
        b'^' => {
            let id = c.varint()?;
            c.replay(id, value)?
        }
        b'o' => {
            c.open_object(start, first_id)?;
            let map = properties(c, b'{')?;
            c.varint()?;
            c.close_object();
            Value::Object(map)
        }
        b'A' => {
            let length = c.varint()?;
            c.open_object(start, first_id)?;
            let mut items = Vec::with_capacity((length as usize).min(1 << 16));
            for _ in 0..length {
                items.push(if c.eat(b'-') { Value::Undefined } else { value(c)? });
            }
            // Named properties of an array have no place in a `Value::Array`.
            properties(c, b'$')?;
            c.varint()?;
            c.varint()?;
            c.close_object();
            Value::Array(items)
        }
        b'a' => {
            let length = c.varint()?;
            c.charge_sparse(length)?;
            c.open_object(start, first_id)?;
            let mut items = vec![Value::Undefined; length as usize];
            while !c.eat(b'@') {
                let key = value(c)?;
                let item = value(c)?;
                // Elements by index; named properties of an array have no place in a `Value`.
                if let Some(slot) = index_of(&key).and_then(|i| items.get_mut(i)) {
                    *slot = item;
                }
            }
            c.varint()?;
            c.varint()?;
            c.close_object();
            Value::Array(items)
        }
        b'D' => {
            let ms = c.double()?;
            c.leaf(start, first_id)?;
            Value::Date(ms)
        }
        b'y' | b'x' | b'n' | b'z' | b's' => {
            // Boxed primitives arrive as their primitive.
            let inner = match tag {
                b'y' => Value::Bool(true),
                b'x' => Value::Bool(false),
                b'n' => Value::Number(c.double()?),
                b'z' => Value::BigInt(c.bigint()?),
                _ => Value::String(c.string()?),
            };
            c.leaf(start, first_id)?;
            inner
        }
        b'R' => {
            let source = c.string()?;
            let flags = regexp_flags_text(c.varint()?);
            c.leaf(start, first_id)?;
            Value::RegExp { source, flags }
        }
        b';' => {
            c.open_object(start, first_id)?;
            let mut entries = Vec::new();
            while !c.eat(b':') {
                let key = value(c)?;
                entries.push((key, value(c)?));
            }
            c.varint()?;
            c.close_object();
            Value::Map(entries)
        }
        b'\'' => {
            c.open_object(start, first_id)?;
            let mut items = Vec::new();
            while !c.eat(b',') {
                items.push(value(c)?);
            }
            c.varint()?;
            c.close_object();
            Value::Set(items)
        }
        b'B' | b'C' | b'~' | b't' | b'u' => {
            let bytes = c.buffer(tag, start, first_id)?;
            Value::Bytes(c.maybe_view(bytes, start, first_id)?)
        }
        b'r' => error(c, start, first_id)?,
        b'w' | b'm' => return Err(Error::Conversion("a WebAssembly module or memory cannot be copied into a Rust value".into())),
        _ => return Err(malformed()),
    })
}

/// An array index written as a property key.
pub(super) fn index_of(key: &Value) -> Option<usize> {
    match key {
        Value::Number(n) if n.fract() == 0.0 && *n >= 0.0 => Some(*n as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Key/value pairs up to the `end` tag. Keys are strings or numbers.
fn properties(c: &mut Cursor<'_>, end: u8) -> Result<IndexMap<String, Value>, Error> {
    let mut map = IndexMap::new();
    while !c.eat(end) {
        let key = match value(c)? {
            Value::String(s) => s,
            Value::Number(n) => crate::value::format_number(n),
            _ => return Err(malformed()),
        };
        map.insert(key, value(c)?);
    }
    Ok(map)
}

fn error(c: &mut Cursor<'_>, start: usize, first_id: u32) -> Result<Value, Error> {
    c.open_object(start, first_id)?;
    let mut error = JsError { name: "Error".into(), ..Default::default() };
    loop {
        match c.varint()? {
            0x45 /* E */ => error.name = "EvalError".into(),
            0x52 /* R */ => error.name = "RangeError".into(),
            0x46 /* F */ => error.name = "ReferenceError".into(),
            0x53 /* S */ => error.name = "SyntaxError".into(),
            0x54 /* T */ => error.name = "TypeError".into(),
            0x55 /* U */ => error.name = "URIError".into(),
            0x6D /* m */ => error.message = c.string()?,
            0x73 /* s */ => error.stack = Some(c.string()?),
            0x63 /* c */ => {
                error.cause = Some(Box::new(match value(c)? {
                    Value::Error(e) => *e,
                    other => JsError { message: other.to_string(), ..Default::default() },
                }))
            }
            0x2E /* . */ => break,
            _ => return Err(malformed()),
        }
    }
    c.close_object();
    Ok(Value::Error(Box::new(error)))
}

/// The error sub-tag for a class name (V8 writes none for `Error` and custom classes).
pub(super) fn error_tag(name: &str) -> Option<u8> {
    Some(match name {
        "EvalError" => b'E',
        "RangeError" => b'R',
        "ReferenceError" => b'F',
        "SyntaxError" => b'S',
        "TypeError" => b'T',
        "URIError" => b'U',
        _ => return None,
    })
}
