//! [`Value`] → `Deserialize`: how JavaScript data becomes Rust data.

use std::any::Any;

use indexmap::IndexMap;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::{BigInt, Value};
use crate::Error;

/// Converts a [`Value`] into any `DeserializeOwned` type.
///
/// ```
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Point { x: u32, y: u32 }
/// let v = ivm_client::to_value(&serde_json::json!({ "x": 1, "y": 2 })).unwrap();
/// assert_eq!(ivm_client::from_value::<Point>(v).unwrap(), Point { x: 1, y: 2 });
/// ```
pub fn from_value<T: DeserializeOwned + 'static>(value: Value) -> Result<T, Error> {
    // A `Value` asked for as a `Value` is returned as it is (serde would lose the difference
    // between undefined and null, dates and numbers).
    match (Box::new(value) as Box<dyn Any>).downcast::<T>() {
        Ok(same) => Ok(*same),
        Err(any) => T::deserialize(*any.downcast::<Value>().expect("boxed a Value above")),
    }
}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error::Conversion(msg.to_string())
    }
}

pub fn visit_integral<'de, V: Visitor<'de>>(n: f64, visitor: V) -> Result<V::Value, Error> {
    // Integral numbers go to the integer visitors so that `u32`, `i64`... fields accept them;
    // -0 stays a float, or its sign would be lost.
    if n == 0.0 && n.is_sign_negative() {
        visitor.visit_f64(n)
    } else if n.fract() == 0.0 && n >= i64::MIN as f64 && n < i64::MAX as f64 {
        visitor.visit_i64(n as i64)
    } else if n.fract() == 0.0 && n >= 0.0 && n < u64::MAX as f64 {
        visitor.visit_u64(n as u64)
    } else {
        visitor.visit_f64(n)
    }
}

pub fn visit_bigint<'de, V: Visitor<'de>>(b: BigInt, visitor: V) -> Result<V::Value, Error> {
    if let Some(v) = b.to_i128() {
        if let Ok(small) = i64::try_from(v) {
            return visitor.visit_i64(small);
        }
        if let Ok(small) = u64::try_from(v) {
            return visitor.visit_u64(small);
        }
        return visitor.visit_i128(v);
    }
    match b.to_u128() {
        Some(v) => visitor.visit_u128(v),
        None => visitor.visit_string(b.to_string()),
    }
}

impl<'de> de::Deserializer<'de> for Value {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        super::deep(self.nests(), || self.deserialize_here(visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Undefined | Value::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Number(n) | Value::Date(n) => visitor.visit_f64(n),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Object(map) if map.len() == 1 => {
                let (variant, content) = map.into_iter().next().expect("length is 1");
                visitor.visit_enum(VariantAccess { variant, content })
            }
            other => Err(Error::Conversion(format!(
                "expected an enum (a string, or an object with one key), got {}",
                describe(&other)
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A short description of a value for error messages.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Undefined => "undefined",
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::BigInt(_) => "a BigInt",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Bytes(_) => "bytes",
        Value::Date(_) => "a Date",
        Value::Map(_) => "a Map",
        Value::Set(_) => "a Set",
        Value::RegExp { .. } => "a RegExp",
        Value::Error(_) => "an Error",
    }
}

/// Array elements deserialize through `Value`'s own rules (serde's `IntoDeserializer` needs a
/// distinct type to hang them on).
struct Element(Value);

impl<'de> IntoDeserializer<'de, Error> for Element {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self.0
    }
}

struct ObjectAccess {
    iter: indexmap::map::IntoIter<String, Value>,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for ObjectAccess {
    type Error = Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self.value.take().unwrap_or_default())
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct VariantAccess {
    variant: String,
    content: Value,
}

impl<'de> de::EnumAccess<'de> for VariantAccess {
    type Error = Error;
    type Variant = Value;
    fn variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Value), Error> {
        Ok((seed.deserialize(self.variant.into_deserializer())?, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for Value {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

impl<'de> de::Deserialize<'de> for Value {
    /// Builds a `Value` from any self-describing format (e.g. JSON). Unit and `None` become
    /// `null`.
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JavaScript-representable value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        de::Deserialize::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(super::ser::integer_value(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(super::ser::integer_value(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(super::ser::integer_value(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = IndexMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

impl Value {
    fn deserialize_here<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Undefined | Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) | Value::Date(n) => visit_integral(n, visitor),
            Value::BigInt(b) => visit_bigint(b, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) | Value::Set(items) => {
                visitor.visit_seq(items.into_iter().map(Element).collect::<Vec<_>>().into_deserializer())
            }
            Value::Object(map) => visitor.visit_map(ObjectAccess { iter: map.into_iter(), value: None }),
            Value::Bytes(bytes) => visitor.visit_byte_buf(bytes),
            Value::Map(entries) => {
                let mut access = de::value::MapDeserializer::new(entries.into_iter().map(|(k, v)| (Element(k), Element(v))));
                let out = visitor.visit_map(&mut access)?;
                access.end()?;
                Ok(out)
            }
            Value::RegExp { source, flags } => visitor.visit_string(format!("/{source}/{flags}")),
            Value::Error(e) => de::Deserializer::deserialize_any(super::ser::error_fields(&e), visitor),
        }
    }
}
