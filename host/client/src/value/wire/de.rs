//! Wire bytes → any `Deserialize` type, without an intermediate tree.
//!
//! Strings are borrowed from the bytes where they can be; fields a type does not ask for are
//! skipped without being built. The few types serde has no word for (RegExp, Error, sparse
//! arrays, boxed primitives) are read as a [`Value`](crate::value::Value) and handed on.

use serde::de::{self, DeserializeOwned, IgnoredAny, Visitor};

use super::{Budget, Cursor, Stores, malformed, read};
use crate::error::Error;
use crate::value::de::{visit_bigint, visit_integral};

/// Decodes `bytes` (with their header) into a `T`, making no more than `budget`.
pub fn from_wire<T: DeserializeOwned>(bytes: &[u8], stores: &dyn Stores, budget: Budget) -> Result<T, Error> {
    let mut cursor = Cursor::new(bytes, stores, budget)?;
    T::deserialize(Wire(&mut cursor))
}

struct Wire<'r, 'b>(&'r mut Cursor<'b>);

impl<'r, 'b> Wire<'r, 'b> {
    /// Hands the value at the cursor to the `Value` reader, then to the visitor.
    fn via_value<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(read::value(self.0)?, visitor)
    }
}

impl<'de, 'r, 'b> de::Deserializer<'de> for Wire<'r, 'b> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        crate::value::deep(self.0.nests(), || self.deserialize_here(visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.0.eat(b'_') || self.0.eat(b'0') {
            self.0.tick()?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(IgnoredAny)?;
        visitor.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let c = self.0;
        let (start, first_id) = (c.at, c.next_id);
        match c.tag()? {
            tag @ (b'"' | b'S' | b'c') => {
                let name = c.string_body(tag)?.into_owned();
                visitor.visit_enum(de::value::StringDeserializer::<Error>::new(name))
            }
            b'o' => {
                c.open_object(start, first_id)?;
                let value = visitor.visit_enum(Variant { c: &mut *c })?;
                if !c.eat(b'{') {
                    return Err(Error::Conversion("expected an enum (a string, or an object with one key)".into()));
                }
                c.varint()?;
                c.close_object();
                Ok(value)
            }
            _ => Err(Error::Conversion("expected an enum (a string, or an object with one key)".into())),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

fn skip_element(c: &mut Cursor<'_>) -> Result<(), Error> {
    if !c.eat(b'-') {
        de::Deserializer::deserialize_any(Wire(c), IgnoredAny)?;
    }
    Ok(())
}

/// Skips key/value pairs up to `end`, which is left to read.
fn skip_pairs(c: &mut Cursor<'_>, end: u8) -> Result<(), Error> {
    while c.peek() != Some(end) {
        skip_element(c)?;
        skip_element(c)?;
    }
    Ok(())
}

/// Skips key/value pairs and their `end` tag.
fn skip_entries(c: &mut Cursor<'_>, end: u8) -> Result<(), Error> {
    skip_pairs(c, end)?;
    c.tag().map(drop)
}

/// A dense array's elements (holes read as `undefined`).
struct Items<'r, 'b> {
    c: &'r mut Cursor<'b>,
    left: u32,
}

impl<'de> de::SeqAccess<'de> for &mut Items<'_, '_> {
    type Error = Error;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        if self.c.eat(b'-') {
            return seed.deserialize(de::value::UnitDeserializer::<Error>::new()).map(Some);
        }
        seed.deserialize(Wire(&mut *self.c)).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left as usize)
    }
}

/// A sparse array's elements: the pairs V8 wrote (indices in ascending order, then any named
/// properties, which are skipped), with `undefined` for the indices it did not write.
struct SparseItems<'r, 'b> {
    c: &'r mut Cursor<'b>,
    next: u32,
    length: u32,
    /// The index of the next written element, once its key was read.
    pending: Option<usize>,
}

impl<'de> de::SeqAccess<'de> for &mut SparseItems<'_, '_> {
    type Error = Error;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.next >= self.length {
            return Ok(None);
        }
        if self.pending.is_none() && self.c.peek() != Some(b'@') {
            let key = read::value(self.c)?;
            match read::index_of(&key).filter(|i| *i >= self.next as usize) {
                Some(index) => self.pending = Some(index),
                // A named property: the elements are over.
                None => {
                    skip_element(self.c)?;
                    skip_pairs(self.c, b'@')?;
                }
            }
        }
        let index = self.next as usize;
        self.next += 1;
        if self.pending == Some(index) {
            self.pending = None;
            return seed.deserialize(Wire(&mut *self.c)).map(Some);
        }
        seed.deserialize(de::value::UnitDeserializer::<Error>::new()).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some((self.length - self.next) as usize)
    }
}

/// A Set's values.
struct SetItems<'r, 'b> {
    c: &'r mut Cursor<'b>,
}

impl<'de> de::SeqAccess<'de> for SetItems<'_, '_> {
    type Error = Error;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.c.peek() == Some(b',') {
            return Ok(None);
        }
        seed.deserialize(Wire(&mut *self.c)).map(Some)
    }
}

/// An object's properties or a Map's entries, up to `end`.
struct Entries<'r, 'b> {
    c: &'r mut Cursor<'b>,
    end: u8,
}

impl<'de> de::MapAccess<'de> for Entries<'_, '_> {
    type Error = Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        if self.c.peek() == Some(self.end) {
            return Ok(None);
        }
        seed.deserialize(Key(&mut *self.c)).map(Some)
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Wire(&mut *self.c))
    }
}

/// A property key: numeric keys (array indices) read as their decimal text.
struct Key<'r, 'b>(&'r mut Cursor<'b>);

impl<'de> de::Deserializer<'de> for Key<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.peek() {
            Some(b'I' | b'U' | b'N') => match read::value(self.0)? {
                crate::value::Value::Number(n) => visitor.visit_string(crate::value::format_number(n)),
                _ => Err(malformed()),
            },
            _ => de::Deserializer::deserialize_any(Wire(self.0), visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// `{ Variant: content }`, after its `o` tag.
struct Variant<'r, 'b> {
    c: &'r mut Cursor<'b>,
}

impl<'de, 'r, 'b> de::EnumAccess<'de> for Variant<'r, 'b> {
    type Error = Error;
    type Variant = Wire<'r, 'b>;
    fn variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Wire<'r, 'b>), Error> {
        let name = seed.deserialize(Key(&mut *self.c))?;
        Ok((name, Wire(self.c)))
    }
}

impl<'de> de::VariantAccess<'de> for Wire<'_, '_> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        de::Deserializer::deserialize_any(self, IgnoredAny).map(drop)
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

impl Wire<'_, '_> {
    fn deserialize_here<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let c = self.0;
        let (start, first_id) = (c.at, c.next_id);

        let tag = c.tag()?;
        match tag {
            b'_' | b'0' => {
                c.tick()?;
                visitor.visit_unit()
            }
            b'T' | b'F' => {
                c.tick()?;
                visitor.visit_bool(tag == b'T')
            }
            b'I' => {
                c.tick()?;
                visitor.visit_i64(c.zigzag()?.into())
            }
            b'U' => {
                c.tick()?;
                visitor.visit_u64(c.varint()?.into())
            }
            b'N' => {
                c.tick()?;
                visit_integral(c.double()?, visitor)
            }
            b'Z' => {
                c.tick()?;
                visit_bigint(c.bigint()?, visitor)
            }
            b'"' | b'S' | b'c' => {
                c.tick()?;
                match c.string_body(tag)? {
                    std::borrow::Cow::Borrowed(s) => visitor.visit_str(s),
                    std::borrow::Cow::Owned(s) => visitor.visit_string(s),
                }
            }
            b'^' => {
                let id = c.varint()?;
                c.replay(id, |c| de::Deserializer::deserialize_any(Wire(c), visitor))
            }
            b'o' => {
                c.tick()?;
                c.open_object(start, first_id)?;
                let value = visitor.visit_map(Entries { c: &mut *c, end: b'{' })?;
                skip_entries(c, b'{')?;
                c.varint()?;
                c.close_object();
                Ok(value)
            }
            b'A' => {
                c.tick()?;
                let length = c.varint()?;
                c.open_object(start, first_id)?;
                let mut items = Items { c: &mut *c, left: length };
                let value = visitor.visit_seq(&mut items)?;
                for _ in 0..items.left {
                    skip_element(c)?;
                }
                skip_entries(c, b'$')?;
                c.varint()?;
                c.varint()?;
                c.close_object();
                Ok(value)
            }
            b'a' => {
                c.tick()?;
                let length = c.varint()?;
                c.charge_sparse(length)?;
                c.open_object(start, first_id)?;
                let mut items = SparseItems { c: &mut *c, next: 0, length, pending: None };
                let value = visitor.visit_seq(&mut items)?;
                if items.pending.is_some() {
                    skip_element(c)?;
                }
                skip_entries(c, b'@')?;
                c.varint()?;
                c.varint()?;
                c.close_object();
                Ok(value)
            }
            b'D' => {
                c.tick()?;
                let ms = c.double()?;
                c.leaf(start, first_id)?;
                visitor.visit_f64(ms)
            }
            b';' => {
                c.tick()?;
                c.open_object(start, first_id)?;
                let value = visitor.visit_map(Entries { c: &mut *c, end: b':' })?;
                skip_entries(c, b':')?;
                c.varint()?;
                c.close_object();
                Ok(value)
            }
            b'\'' => {
                c.tick()?;
                c.open_object(start, first_id)?;
                let value = visitor.visit_seq(SetItems { c: &mut *c })?;
                while !c.eat(b',') {
                    skip_element(c)?;
                }
                c.varint()?;
                c.close_object();
                Ok(value)
            }
            b'B' | b'C' | b'~' | b't' | b'u' => {
                c.tick()?;
                let bytes = c.buffer(tag, start, first_id)?;
                visitor.visit_byte_buf(c.maybe_view(bytes, start, first_id)?)
            }
            _ => {
                c.at = start;
                Wire(c).via_value(visitor)
            }
        }
    }
}
