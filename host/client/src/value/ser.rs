//! `Serialize` → [`Value`]: how Rust data becomes JavaScript data.

use indexmap::IndexMap;
use serde::ser::{self, Serialize};

use super::{BigInt, Value, magic};
use crate::error::{Error, JsError};

/// The largest integer a JavaScript number holds exactly (2^53).
const MAX_SAFE: i128 = 9_007_199_254_740_992;

/// Converts any `Serialize` value into a [`Value`].
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Config { name: String, retries: u32 }
/// let v = ivm_client::to_value(&Config { name: "a".into(), retries: 3 }).unwrap();
/// assert_eq!(v.to_json().to_string(), r#"{"name":"a","retries":3}"#);
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    value.serialize(ValueSerializer)
}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error::Conversion(msg.to_string())
    }
}

pub fn integer_value(v: i128) -> Value {
    if (-MAX_SAFE..=MAX_SAFE).contains(&v) { Value::Number(v as f64) } else { Value::BigInt(BigInt::from(v)) }
}

struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = VariantBuilder<SeqBuilder>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = VariantBuilder<MapBuilder>;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        Ok(integer_value(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(integer_value(v.into()))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        Ok(i128::try_from(v).map_or_else(|_| Value::BigInt(BigInt::from(v)), integer_value))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Ok(Value::Number(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Undefined)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Undefined)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<Value, Error> {
        Ok(Value::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<Value, Error> {
        let inner = value.serialize(self)?;
        if name.starts_with("$ivm::") { from_magic(name, inner) } else { Ok(inner) }
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        let mut map = IndexMap::new();
        map.insert(variant.to_owned(), value.serialize(ValueSerializer)?);
        Ok(Value::Object(map))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Ok(VariantBuilder { variant, inner: SeqBuilder(Vec::with_capacity(len)) })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, Error> {
        Ok(MapBuilder { map: IndexMap::with_capacity(len.unwrap_or(0)), key: None })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<MapBuilder, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Ok(VariantBuilder { variant, inner: MapBuilder { map: IndexMap::with_capacity(len), key: None } })
    }
}

pub struct SeqBuilder(Vec<Value>);

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

pub struct MapBuilder {
    map: IndexMap<String, Value>,
    key: Option<String>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self.key.take().ok_or_else(|| Error::Conversion("map value without a key".into()))?;
        self.map.insert(key, value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Object(self.map))
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.map.insert(key.to_owned(), value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Object(self.map))
    }
}

/// An enum variant with content, externally tagged: `{ "Variant": content }`.
pub struct VariantBuilder<B> {
    variant: &'static str,
    inner: B,
}

impl<B> VariantBuilder<B> {
    fn wrap(variant: &'static str, content: Value) -> Value {
        let mut map = IndexMap::new();
        map.insert(variant.to_owned(), content);
        Value::Object(map)
    }
}

impl ser::SerializeTupleVariant for VariantBuilder<SeqBuilder> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(&mut self.inner, value)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Self::wrap(self.variant, ser::SerializeSeq::end(self.inner)?))
    }
}

impl ser::SerializeStructVariant for VariantBuilder<MapBuilder> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, value)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Self::wrap(self.variant, ser::SerializeStruct::end(self.inner)?))
    }
}

impl Serialize for Value {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::deep(self.nests(), || self.serialize_here(s))
    }
}

impl Value {
    fn serialize_here<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Undefined => s.serialize_unit_struct(magic::UNDEFINED),
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => s.serialize_f64(*n),
            Value::BigInt(b) => s.serialize_newtype_struct(magic::BIGINT, &b.to_string()),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Value::Bytes(bytes) => s.serialize_bytes(bytes),
            Value::Date(ms) => s.serialize_newtype_struct(magic::DATE, ms),
            Value::Map(entries) => s.serialize_newtype_struct(magic::MAP, entries),
            Value::Set(items) => s.serialize_newtype_struct(magic::SET, items),
            Value::RegExp { source, flags } => s.serialize_newtype_struct(magic::REGEXP, &(source, flags)),
            Value::Error(e) => s.serialize_newtype_struct(magic::ERROR, &error_fields(e)),
        }
    }
}

/// An error's fields as a [`Value::Object`]: `name`, `message`, and `stack`, `cause`,
/// `errors` and `omitted` when present.
pub fn error_fields(e: &JsError) -> Value {
    let mut map = IndexMap::new();
    map.insert("name".to_owned(), Value::String(e.name.clone()));
    map.insert("message".to_owned(), Value::String(e.message.clone()));
    if let Some(stack) = &e.stack {
        map.insert("stack".to_owned(), Value::String(stack.clone()));
    }
    if let Some(cause) = &e.cause {
        map.insert("cause".to_owned(), Value::Error(cause.clone()));
    }
    if !e.errors.is_empty() {
        map.insert("errors".to_owned(), Value::Array(e.errors.iter().map(|e| Value::Error(Box::new(e.clone()))).collect()));
    }
    if e.omitted > 0 {
        map.insert("omitted".to_owned(), Value::Number(e.omitted as f64));
    }
    Value::Object(map)
}

/// The inverse of [`error_fields`]; anything missing is left empty.
pub fn error_from_fields(fields: Value) -> JsError {
    let Value::Object(mut map) = fields else { return JsError::default() };
    let mut text = |key: &str| match map.shift_remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let (name, message, stack) = (text("name").unwrap_or_default(), text("message").unwrap_or_default(), text("stack"));
    let as_error = |v: Value| match v {
        Value::Error(e) => *e,
        other => error_from_fields(other),
    };
    JsError {
        name,
        message,
        stack,
        cause: map.shift_remove("cause").map(|c| Box::new(as_error(c))),
        errors: match map.shift_remove("errors") {
            Some(Value::Array(items)) => items.into_iter().map(as_error).collect(),
            _ => Vec::new(),
        },
        location: None,
        omitted: match map.shift_remove("omitted") {
            Some(Value::Number(n)) if n >= 0.0 => n as usize,
            _ => 0,
        },
    }
}

/// A Map from its plain form, `[[key, value], ...]`; `None` if an entry is not a pair.
pub fn map_from_pairs(pairs: Vec<Value>) -> Option<Value> {
    let entries = pairs.into_iter().map(|pair| match pair {
        Value::Array(kv) => <[Value; 2]>::try_from(kv).ok().map(|[key, value]| (key, value)),
        _ => None,
    });
    Some(Value::Map(entries.collect::<Option<_>>()?))
}

/// A RegExp from its plain form, `[source, flags]`; `None` if it is not two strings.
pub fn regexp_from_parts(parts: Vec<Value>) -> Option<Value> {
    match <[Value; 2]>::try_from(parts) {
        Ok([Value::String(source), Value::String(flags)]) => Some(Value::RegExp { source, flags }),
        _ => None,
    }
}

/// Rebuilds the value a [`magic`] newtype stands for from its plain form.
fn from_magic(name: &str, inner: Value) -> Result<Value, Error> {
    let malformed = || Error::Conversion(format!("malformed {name}"));
    Ok(match (name, inner) {
        (magic::DATE, Value::Number(ms)) => Value::Date(ms),
        (magic::BIGINT, Value::String(s)) => Value::BigInt(s.parse().map_err(|_| malformed())?),
        (magic::SET, Value::Array(items)) => Value::Set(items),
        (magic::MAP, Value::Array(pairs)) => map_from_pairs(pairs).ok_or_else(malformed)?,
        (magic::REGEXP, Value::Array(parts)) => regexp_from_parts(parts).ok_or_else(malformed)?,
        (magic::ERROR, fields @ Value::Object(_)) => Value::Error(Box::new(error_from_fields(fields))),
        (_, other) => other,
    })
}

/// Map keys as object property names: strings as they are, numbers, booleans and chars as
/// JavaScript would stringify them.
pub struct KeyText;

impl ser::Serializer for KeyText {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = ser::Impossible<String, Error>;
    type SerializeTuple = ser::Impossible<String, Error>;
    type SerializeTupleStruct = ser::Impossible<String, Error>;
    type SerializeTupleVariant = ser::Impossible<String, Error>;
    type SerializeMap = ser::Impossible<String, Error>;
    type SerializeStruct = ser::Impossible<String, Error>;
    type SerializeStructVariant = ser::Impossible<String, Error>;

    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_bool(self, v: bool) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<String, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<String, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_u8(self, v: u8) -> Result<String, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<String, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<String, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_f32(self, v: f32) -> Result<String, Error> {
        Ok(super::format_number(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<String, Error> {
        Ok(super::format_number(v))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<String, Error> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, Error> {
        Err(not_a_key("bytes"))
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(not_a_key("None"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(not_a_key("()"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Error> {
        Err(not_a_key("a unit struct"))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<String, Error> {
        Err(not_a_key("an enum variant with content"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_key("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_key("a tuple"))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_key("a tuple struct"))
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_key("an enum variant with content"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_key("a map"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_key("a struct"))
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_key("an enum variant with content"))
    }
}

fn not_a_key(what: &str) -> Error {
    Error::Conversion(format!("a map key must be a string or a number, not {what}"))
}
