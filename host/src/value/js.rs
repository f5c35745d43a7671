//! Copying between V8 values and [`Value`]. Runs with the isolate locked, inside the
//! operation's timeout (a getter met while copying runs JavaScript).

use std::collections::HashMap;

use indexmap::IndexMap;

use super::{BigInt, Value};
use crate::Error;

/// Nesting deeper than this is refused rather than risking the thread's stack.
const MAX_DEPTH: usize = 1000;

/// Copies a primitive; `None` for objects and functions.
pub(crate) fn primitive(scope: &v8::PinScope<'_, '_>, value: v8::Local<v8::Value>) -> Option<Value> {
    Some(if value.is_undefined() {
        Value::Undefined
    } else if value.is_null() {
        Value::Null
    } else if value.is_boolean() {
        Value::Bool(value.is_true())
    } else if value.is_number() {
        Value::Number(value.number_value(scope).unwrap_or(f64::NAN))
    } else if value.is_string() {
        Value::String(value.to_rust_string_lossy(scope))
    } else if let Ok(big) = v8::Local::<v8::BigInt>::try_from(value) {
        let mut words = vec![0u64; big.word_count()];
        let (negative, words) = big.to_words_array(&mut words);
        Value::BigInt(BigInt::from_words(negative, words.to_vec()))
    } else {
        return None;
    })
}

/// Copies any copyable value (see the mapping in [`crate::value`]).
///
/// `Err(Error::Exception(_))` with an empty error means JavaScript threw (a getter); the caller's
/// `TryCatch` holds the real exception.
pub(crate) fn copy_out<'s>(scope: &mut v8::PinScope<'s, '_>, value: v8::Local<'s, v8::Value>) -> Result<Value, Error> {
    let mut seen = Vec::new();
    copy_out_at(scope, value, &mut seen)
}

pub(crate) fn threw() -> Error {
    Error::Exception(Default::default())
}

fn not_copyable(scope: &v8::PinScope<'_, '_>, value: v8::Local<v8::Value>) -> Error {
    let what = if value.is_function() {
        "function".to_owned()
    } else if value.is_symbol() {
        "Symbol".to_owned()
    } else if value.is_proxy() {
        "Proxy".to_owned()
    } else {
        value
            .to_object(scope)
            .map(|o| o.get_constructor_name().to_rust_string_lossy(scope))
            .unwrap_or_else(|| "value".to_owned())
    };
    Error::Conversion(format!("#<{what}> could not be cloned."))
}

fn copy_out_at<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
    seen: &mut Vec<v8::Local<'s, v8::Object>>,
) -> Result<Value, Error> {
    if let Some(p) = primitive(scope, value) {
        return Ok(p);
    }
    if value.is_function() || value.is_symbol() || value.is_proxy() {
        return Err(not_copyable(scope, value));
    }
    if let Ok(date) = v8::Local::<v8::Date>::try_from(value) {
        return Ok(Value::Date(date.value_of()));
    }
    if let Ok(view) = v8::Local::<v8::ArrayBufferView>::try_from(value) {
        let mut bytes = vec![0; view.byte_length()];
        view.copy_contents(&mut bytes);
        return Ok(Value::Bytes(bytes));
    }
    if let Ok(buffer) = v8::Local::<v8::ArrayBuffer>::try_from(value) {
        let len = buffer.byte_length();
        let bytes = match buffer.data() {
            // SAFETY: the buffer is alive (held by `value`) and `len` bytes long; no JS runs
            // while the slice exists.
            Some(ptr) if len > 0 => unsafe { std::slice::from_raw_parts(ptr.as_ptr() as *const u8, len) }.to_vec(),
            _ => Vec::new(),
        };
        return Ok(Value::Bytes(bytes));
    }
    if value.is_map() || value.is_set() || value.is_promise() || value.is_weak_map() || value.is_weak_set() {
        return Err(not_copyable(scope, value));
    }
    let object = value.to_object(scope).ok_or_else(threw)?;
    if seen.len() >= MAX_DEPTH {
        return Err(Error::Conversion(format!("the value is nested deeper than {MAX_DEPTH} levels")));
    }
    if seen.iter().any(|s| *s == object) {
        return Err(Error::Conversion("a value with a cycle cannot be copied into a Rust value".into()));
    }
    seen.push(object);
    let result = if let Ok(array) = v8::Local::<v8::Array>::try_from(value) {
        let mut items = Vec::with_capacity((array.length() as usize).min(1 << 16));
        for i in 0..array.length() {
            let item = array.get_index(scope, i).ok_or_else(threw)?;
            items.push(copy_out_at(scope, item, seen)?);
        }
        Value::Array(items)
    } else {
        let keys = object
            .get_own_property_names(
                scope,
                v8::GetPropertyNamesArgs {
                    mode: v8::KeyCollectionMode::OwnOnly,
                    property_filter: v8::PropertyFilter::ONLY_ENUMERABLE | v8::PropertyFilter::SKIP_SYMBOLS,
                    index_filter: v8::IndexFilter::IncludeIndices,
                    key_conversion: v8::KeyConversionMode::ConvertToString,
                },
            )
            .ok_or_else(threw)?;
        let mut map = IndexMap::with_capacity(keys.length() as usize);
        for i in 0..keys.length() {
            let key = keys.get_index(scope, i).ok_or_else(threw)?;
            let item = object.get(scope, key).ok_or_else(threw)?;
            map.insert(key.to_rust_string_lossy(scope), copy_out_at(scope, item, seen)?);
        }
        Value::Object(map)
    };
    seen.pop();
    Ok(result)
}

/// Creates a V8 value from a [`Value`] in the scope's current context.
pub(crate) fn copy_in<'s>(scope: &mut v8::PinScope<'s, '_>, value: &Value) -> Result<v8::Local<'s, v8::Value>, Error> {
    let object_prototype = v8::Object::new(scope).get_prototype(scope).ok_or_else(threw)?;
    CopyIn { object_prototype, keys: HashMap::new() }.value(scope, value)
}

/// One copy into an isolate. Objects are made in one call each, with their prototype and
/// properties, and keys are internalized once per copy: rows of records share their keys.
struct CopyIn<'s, 'v> {
    object_prototype: v8::Local<'s, v8::Value>,
    keys: HashMap<&'v str, v8::Local<'s, v8::Name>>,
}

impl<'s, 'v> CopyIn<'s, 'v> {
    fn value(&mut self, scope: &mut v8::PinScope<'s, '_>, value: &'v Value) -> Result<v8::Local<'s, v8::Value>, Error> {
        let too_long = || Error::Conversion("a string is longer than V8's maximum string length".into());
        Ok(match value {
            Value::Undefined => v8::undefined(scope).into(),
            Value::Null => v8::null(scope).into(),
            Value::Bool(b) => v8::Boolean::new(scope, *b).into(),
            Value::Number(n) => v8::Number::new(scope, *n).into(),
            Value::BigInt(b) => {
                let (negative, words) = b.words();
                v8::BigInt::new_from_words(scope, negative, words).ok_or_else(threw)?.into()
            }
            Value::String(s) => v8::String::new(scope, s).ok_or_else(too_long)?.into(),
            Value::Array(items) => {
                let mut elements = Vec::with_capacity(items.len());
                for item in items {
                    elements.push(self.value(scope, item)?);
                }
                v8::Array::new_with_elements(scope, &elements).into()
            }
            Value::Object(map) => {
                let mut names = Vec::with_capacity(map.len());
                let mut values = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let name = match self.keys.get(k.as_str()) {
                        Some(name) => *name,
                        None => {
                            let name: v8::Local<v8::Name> =
                                v8::String::new_from_utf8(scope, k.as_bytes(), v8::NewStringType::Internalized)
                                    .ok_or_else(too_long)?
                                    .into();
                            self.keys.insert(k, name);
                            name
                        }
                    };
                    names.push(name);
                    values.push(self.value(scope, v)?);
                }
                v8::Object::with_prototype_and_properties(scope, self.object_prototype, &names, &values).into()
            }
            Value::Bytes(bytes) => {
                let len = bytes.len();
                let store = v8::ArrayBuffer::new_backing_store_from_vec(bytes.clone()).make_shared();
                let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
                v8::Uint8Array::new(scope, buffer, 0, len).ok_or_else(threw)?.into()
            }
            Value::Date(ms) => v8::Date::new(scope, *ms).ok_or_else(threw)?.into(),
        })
    }
}
