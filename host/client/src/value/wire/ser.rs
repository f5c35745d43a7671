//! Any `Serialize` type → wire bytes, for V8's deserializer to build in an isolate; or JSON
//! text, for V8's JSON parser, when the value is plain JSON data.
//!
//! V8 parses JSON faster than it deserializes the wire format, and its parser makes packed
//! arrays, which it later serializes faster too; so data that JSON represents exactly (no
//! `undefined`, bytes, BigInts, non-finite numbers or magic types) is written as JSON.
//!
//! The mapping is the one in the [module docs](crate::value): safe integers become numbers
//! (small ones int32s), larger ones BigInts; `()` is `undefined` and `None` `null`; structs
//! and maps are plain objects, sequences and tuples arrays, bytes a `Uint8Array`, unit enum
//! variants strings and other variants `{ Variant: content }`. [`Value`]'s magic newtypes
//! become the types they stand for.

use serde::ser::{self, Serialize};

use super::{WRITTEN_VERSION, read::error_tag, regexp_flags_bits};
use crate::error::Error;
use crate::value::ser::KeyText;
use crate::value::{BigInt, Value, magic};

/// The largest integer a JavaScript number holds exactly (2^53).
const MAX_SAFE: i128 = 9_007_199_254_740_992;
/// Rust data nested deeper than this is refused rather than risking the thread's stack.
const MAX_DEPTH: usize = 1000;

/// Writes `value` (with the header).
pub fn to_wire<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut writer = Writer { out: Vec::with_capacity(64), depth: 0, json: false };
    writer.out.extend_from_slice(&[0xFF, WRITTEN_VERSION]);
    value.serialize(&mut writer)?;
    Ok(writer.out)
}

/// Writes `value` as JSON text, if JSON represents it exactly; `Ok(None)` if not.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Option<Vec<u8>>, Error> {
    let mut writer = Writer { out: Vec::with_capacity(64), depth: 0, json: true };
    match value.serialize(&mut writer) {
        Ok(()) => Ok(Some(writer.out)),
        Err(e) if is_not_json(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error that stops the JSON writer at something JSON cannot say.
fn not_json() -> Error {
    Error::Conversion(NOT_JSON.into())
}

const NOT_JSON: &str = "\0not JSON";

fn is_not_json(error: &Error) -> bool {
    matches!(error, Error::Conversion(m) if m == NOT_JSON)
}

struct Writer {
    out: Vec<u8>,
    depth: usize,
    /// Writing JSON text instead of the wire format.
    json: bool,
}

impl Writer {
    /// JSON's separator before the second and later items of a container.
    fn separate(&mut self, c: &Container) {
        if self.json && c.count > 0 {
            self.out.push(b',');
        }
    }

    fn json_text<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        serde_json::to_writer(&mut self.out, value).map_err(|e| Error::Conversion(e.to_string()))
    }

    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                self.out.push(byte);
                return;
            }
            self.out.push(byte | 0x80);
        }
    }

    fn string(&mut self, s: &str) {
        if self.json {
            // Escaping a `str` cannot fail.
            let _ = self.json_text(s);
            return;
        }
        // ASCII is also Latin-1: V8 keeps it as a one-byte string without decoding.
        self.out.push(if s.is_ascii() { b'"' } else { b'S' });
        self.varint(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn double(&mut self, v: f64) -> Result<(), Error> {
        if self.json {
            // JSON has no NaN or infinities.
            return if v.is_finite() { self.json_text(&v) } else { Err(not_json()) };
        }
        self.out.push(b'N');
        self.out.extend_from_slice(&v.to_ne_bytes());
        Ok(())
    }

    fn integer(&mut self, v: i128) -> Result<(), Error> {
        if self.json {
            return if (-MAX_SAFE..=MAX_SAFE).contains(&v) { self.json_text(&(v as i64)) } else { Err(not_json()) };
        }
        if let Ok(small) = i32::try_from(v) {
            self.out.push(b'I');
            self.varint(((small << 1) ^ (small >> 31)) as u32 as u64);
        } else if (-MAX_SAFE..=MAX_SAFE).contains(&v) {
            self.double(v as f64)?;
        } else {
            self.bigint(&BigInt::from(v))?;
        }
        Ok(())
    }

    fn bigint(&mut self, b: &BigInt) -> Result<(), Error> {
        if self.json {
            return Err(not_json());
        }
        let (negative, words) = b.words();
        self.out.push(b'Z');
        self.varint(((words.len() as u64 * 8) << 1) | u64::from(negative));
        for word in words {
            self.out.extend_from_slice(&word.to_le_bytes());
        }
        Ok(())
    }

    fn nest(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::Conversion(format!("the value is nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// Starts a dense array whose length is known.
    fn begin_array(&mut self, len: usize) -> Result<Container, Error> {
        self.nest()?;
        if self.json {
            self.out.push(b'[');
        } else {
            self.out.push(b'A');
            self.varint(len as u64);
        }
        Ok(Container { count: 0, length_at: None })
    }

    fn end_array(&mut self, c: Container) {
        self.depth -= 1;
        if self.json {
            self.out.push(b']');
            return;
        }
        if let Some(at) = c.length_at {
            // The length was not known up front: put it in now.
            let mut length = Writer { out: Vec::new(), depth: 0, json: false };
            length.varint(c.count as u64);
            self.out.splice(at..at, length.out);
        }
        self.out.push(b'$');
        self.varint(0);
        self.varint(c.count as u64);
    }

    fn begin_object(&mut self) -> Result<Container, Error> {
        self.nest()?;
        self.out.push(if self.json { b'{' } else { b'o' });
        Ok(Container { count: 0, length_at: None })
    }

    fn end_object(&mut self, c: Container) {
        self.depth -= 1;
        if self.json {
            self.out.push(b'}');
            return;
        }
        self.out.push(b'{');
        self.varint(c.count as u64);
    }

    /// A property name (followed by its value).
    fn key(&mut self, c: &Container, key: &str) {
        self.separate(c);
        self.string(key);
        if self.json {
            self.out.push(b':');
        }
    }

    /// Writes the JavaScript value a [`magic`] newtype stands for, from its plain form.
    fn magic(&mut self, name: &str, inner: Value) -> Result<(), Error> {
        if self.json {
            return Err(not_json());
        }
        let malformed = || Error::Conversion(format!("malformed {name}"));
        match (name, inner) {
            (magic::DATE, Value::Number(ms)) => {
                self.out.push(b'D');
                self.out.extend_from_slice(&ms.to_ne_bytes());
            }
            (magic::BIGINT, Value::String(s)) => self.bigint(&s.parse().map_err(|_| malformed())?)?,
            (magic::MAP, Value::Array(pairs)) => {
                self.nest()?;
                self.out.push(b';');
                for pair in &pairs {
                    let Value::Array(kv) = pair else { return Err(malformed()) };
                    let [k, v] = kv.as_slice() else { return Err(malformed()) };
                    k.serialize(&mut *self)?;
                    v.serialize(&mut *self)?;
                }
                self.out.push(b':');
                self.varint(2 * pairs.len() as u64);
                self.depth -= 1;
            }
            (magic::SET, Value::Array(items)) => {
                self.nest()?;
                self.out.push(b'\'');
                for item in &items {
                    item.serialize(&mut *self)?;
                }
                self.out.push(b',');
                self.varint(items.len() as u64);
                self.depth -= 1;
            }
            (magic::REGEXP, Value::Array(parts)) => {
                let [Value::String(source), Value::String(flags)] = parts.as_slice() else { return Err(malformed()) };
                self.out.push(b'R');
                self.string(source);
                let bits = regexp_flags_bits(flags)?;
                self.varint(bits.into());
            }
            (magic::ERROR, fields @ Value::Object(_)) => {
                let e = crate::value::ser::error_from_fields(fields);
                self.nest()?;
                self.out.push(b'r');
                if let Some(tag) = error_tag(&e.name) {
                    self.varint(tag.into());
                }
                self.varint(b'm'.into());
                self.string(&e.message);
                if let Some(cause) = e.cause {
                    self.varint(b'c'.into());
                    Value::Error(cause).serialize(&mut *self)?;
                }
                if let Some(stack) = &e.stack {
                    self.varint(b's'.into());
                    self.string(stack);
                }
                self.varint(b'.'.into());
                self.depth -= 1;
            }
            _ => return Err(malformed()),
        }
        Ok(())
    }
}

/// An array or object being written.
struct Container {
    count: usize,
    /// Where an array's length goes, when it was not known up front.
    length_at: Option<usize>,
}

/// A container and the writer it writes to.
struct Compound<'w> {
    w: &'w mut Writer,
    c: Container,
}

impl<'w> ser::Serializer for &'w mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w>;
    type SerializeTuple = Compound<'w>;
    type SerializeTupleStruct = Compound<'w>;
    type SerializeTupleVariant = Compound<'w>;
    type SerializeMap = Compound<'w>;
    type SerializeStruct = Compound<'w>;
    type SerializeStructVariant = Compound<'w>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        match (self.json, v) {
            (true, v) => self.out.extend_from_slice(if v { b"true" } else { b"false" }),
            (false, v) => self.out.push(if v { b'T' } else { b'F' }),
        }
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.integer(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.integer(v.into())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        match i128::try_from(v) {
            Ok(v) => self.integer(v),
            Err(_) => self.bigint(&BigInt::from(v)),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.double(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.double(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        if self.json {
            return Err(not_json());
        }
        // An ArrayBuffer and a Uint8Array over all of it.
        self.out.push(b'B');
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
        self.out.extend_from_slice(b"VB");
        self.varint(0);
        self.varint(v.len() as u64);
        self.varint(0);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        if self.json {
            self.out.extend_from_slice(b"null");
        } else {
            self.out.push(b'0');
        }
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        if self.json {
            // `undefined`: JSON has no word for it.
            return Err(not_json());
        }
        self.out.push(b'_');
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.string(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<(), Error> {
        if name.starts_with("$ivm::") {
            // The plain forms are small, or `Value`s already.
            let inner = crate::value::to_value(value)?;
            self.magic(name, inner)
        } else {
            value.serialize(self)
        }
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let c = self.begin_object()?;
        self.key(&c, variant);
        value.serialize(&mut *self)?;
        self.end_object(Container { count: 1, ..c });
        Ok(())
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'w>, Error> {
        let c = match len {
            Some(len) => self.begin_array(len)?,
            None => {
                let mut c = self.begin_array(0)?;
                if !self.json {
                    // Drop the placeholder length; `end_array` inserts the real one here.
                    self.out.pop();
                    c.length_at = Some(self.out.len());
                }
                c
            }
        };
        Ok(Compound { w: self, c })
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound<'w>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, variant: &'static str, len: usize) -> Result<Compound<'w>, Error> {
        // `{ Variant: [...] }`: the object is closed in `end`.
        let outer = self.begin_object()?;
        self.key(&outer, variant);
        let c = self.begin_array(len)?;
        Ok(Compound { w: self, c })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w>, Error> {
        let c = self.begin_object()?;
        Ok(Compound { w: self, c })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'w>, Error> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Compound<'w>, Error> {
        // `{ Variant: {...} }`: the outer object is closed in `end`.
        let outer = self.begin_object()?;
        self.key(&outer, variant);
        let c = self.begin_object()?;
        Ok(Compound { w: self, c })
    }
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.w.separate(&self.c);
        self.value(value)
    }

    /// A value after its key (no separator).
    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.w)?;
        self.c.count += 1;
        Ok(())
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.w.key(&self.c, key);
        self.value(value)
    }

    /// Closes the wrapping `{ Variant: ... }` object of a variant with content.
    fn end_variant(self) {
        self.w.end_object(Container { count: 1, length_at: None });
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.w.end_array(self.c);
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        let Compound { w, c } = self;
        w.end_array(c);
        Compound { w, c: Container { count: 0, length_at: None } }.end_variant();
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let text = key.serialize(KeyText)?;
        self.w.key(&self.c, &text);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.value(value)
    }
    fn end(self) -> Result<(), Error> {
        self.w.end_object(self.c);
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeMap::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        let Compound { w, c } = self;
        w.end_object(c);
        Compound { w, c: Container { count: 0, length_at: None } }.end_variant();
        Ok(())
    }
}
