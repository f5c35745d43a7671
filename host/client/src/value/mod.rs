//! Values that cross between Rust and isolates.
//!
//! [`Value`] is a self-contained copy of a JavaScript value (no pointers into any isolate), so
//! it can be sent anywhere, including to another process. Rust types move in and out through
//! serde: [`to_value`] / [`from_value`], and every API that takes or returns JavaScript data
//! is generic over `Serialize` / `DeserializeOwned`.
//!
//! How JavaScript values map:
//!
//! | JavaScript | [`Value`] | serde |
//! |---|---|---|
//! | `undefined` | `Undefined` | unit (`()`), `None` |
//! | `null` | `Null` | unit, `None` |
//! | boolean | `Bool` | bool |
//! | number | `Number` (f64) | an integer type when the number is integral and in range, else f64 |
//! | BigInt | `BigInt` | i64/u64/i128/u128 when it fits, else its decimal string |
//! | string | `String` | string |
//! | Array | `Array` (holes are `undefined`) | sequence |
//! | plain object / class instance | `Object` (own enumerable string keys, in order) | map or struct |
//! | ArrayBuffer, typed array, DataView | `Bytes` (the viewed bytes) | bytes |
//! | Date | `Date` (ms since the epoch) | f64 |
//! | Map | `Map` (entries in order) | map (keys of any type) |
//! | Set | `Set` (values in order) | sequence |
//! | RegExp | `RegExp` | string `/source/flags` |
//! | Error (and subclasses) | `Error` ([`JsError`]) | map of `name`, `message`, `stack` |
//! | function, symbol, Promise, WeakMap, Proxy, ... | not copyable: [`Error::Conversion`](crate::Error::Conversion) `… could not be cloned.` | |
//!
//! In the other direction Rust integers become numbers when they are safe integers
//! (|n| ≤ 2^53) and BigInts otherwise; `()` becomes `undefined` and `None` becomes `null`.
//!
//! Values are copied straight between V8 and Rust types, with no intermediate [`Value`] tree:
//! a `T: Serialize` is written in V8's structured-clone format and V8 builds the objects; V8
//! serializes objects and a `T: DeserializeOwned` is read from the bytes (see `value::wire`).
//! A [`Value`] itself keeps every distinction above (undefined vs null, BigInt, Date, Map,
//! Set, RegExp, Error) both ways; through other serde formats it appears as the serde column
//! says. A graph with cycles cannot be copied into Rust (use a `ivm::Reference`
//! or an `ivm::ExternalCopy`); objects it shares are copied each time.

mod bigint;
mod de;
// The codecs, public for the `ivm` crate (and front ends that speak them); not part of ivm's
// documented API.
#[doc(hidden)]
pub mod msgpack;

/// Runs `f`, which reads or writes one value, first moving to a stack of its own (on the heap)
/// if this thread's is running low and the value `nests` others. Every recursion over nested
/// data goes through here: nesting is bounded (1000 levels), but a frame takes tens of KB in a
/// debug build and the thread may have a small stack (2 MB for a Rust thread), so data a
/// script or guest nested could otherwise overflow it. A leaf (most values) skips the check,
/// which would cost a copy out of many small values ~4%.
#[doc(hidden)]
#[inline(always)]
pub fn deep<R>(nests: bool, f: impl FnOnce() -> R) -> R {
    if nests { stacker::maybe_grow(256 << 10, 4 << 20, f) } else { f() }
}
mod ser;
#[doc(hidden)]
pub mod wire;

pub use bigint::BigInt;
pub use de::from_value;
pub use ser::to_value;

use indexmap::IndexMap;

use crate::error::JsError;

/// The serde names under which [`Value`] writes the JavaScript types serde has no word for.
/// ivm's own serializers recognize them and rebuild the exact value; other formats see a
/// newtype (or unit) struct around the plain form given in the module table.
#[doc(hidden)]
pub mod magic {
    /// A unit struct: `undefined`.
    pub const UNDEFINED: &str = "$ivm::Undefined";
    /// A newtype around the decimal string.
    pub const BIGINT: &str = "$ivm::BigInt";
    /// A newtype around milliseconds since the epoch.
    pub const DATE: &str = "$ivm::Date";
    /// A newtype around a sequence of `(key, value)` pairs.
    pub const MAP: &str = "$ivm::Map";
    /// A newtype around a sequence of values.
    pub const SET: &str = "$ivm::Set";
    /// A newtype around `(source, flags)`.
    pub const REGEXP: &str = "$ivm::RegExp";
    /// A newtype around a map of `name`, `message`, `stack` and `cause`.
    pub const ERROR: &str = "$ivm::Error";
}

/// A copy of a JavaScript value. See the [module docs](self) for the mapping.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `undefined`
    #[default]
    Undefined,
    /// `null`
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A BigInt.
    BigInt(BigInt),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object's own enumerable string-keyed properties, in property order.
    Object(IndexMap<String, Value>),
    /// The bytes of an ArrayBuffer, typed array or DataView (arrives as a `Uint8Array`).
    Bytes(Vec<u8>),
    /// A Date, as milliseconds since the Unix epoch.
    Date(f64),
    /// A Map's entries, in insertion order.
    Map(Vec<(Value, Value)>),
    /// A Set's values, in insertion order.
    Set(Vec<Value>),
    /// A regular expression.
    RegExp {
        /// The pattern (`RegExp.prototype.source`).
        source: String,
        /// The flags, e.g. `gi` (`RegExp.prototype.flags`).
        flags: String,
    },
    /// An Error object (not thrown: a value), with its class name, message, stack and cause.
    Error(Box<JsError>),
}

impl Value {
    /// Whether this is a primitive (`undefined`, `null`, boolean, number, BigInt or string):
    /// the values that isolated-vm transfers without being asked to copy.
    pub fn is_primitive(&self) -> bool {
        matches!(
            self,
            Value::Undefined
                | Value::Null
                | Value::Bool(_)
                | Value::Number(_)
                | Value::BigInt(_)
                | Value::String(_)
        )
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether the value holds other values (reading or writing it recurses).
    #[inline(always)]
    pub fn nests(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Object(_) | Value::Map(_) | Value::Set(_) | Value::Error(_))
    }

    /// This value as JSON, the way `JSON.stringify` would write it, except that `undefined`
    /// at the top level is `null`, BigInts are decimal strings (JSON has no BigInt), bytes are
    /// arrays of numbers, dates are milliseconds since the epoch and Errors are
    /// `{"name":...,"message":...}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        deep(self.nests(), || match self {
            Value::Undefined | Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::BigInt(b) => J::String(b.to_string()),
            Value::String(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Object(map) => J::Object(
                map.iter()
                    // JSON.stringify leaves out undefined properties.
                    .filter(|(_, v)| !matches!(v, Value::Undefined))
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            Value::Bytes(bytes) => J::Array(bytes.iter().map(|b| J::from(*b)).collect()),
            Value::Date(ms) => J::Number(
                serde_json::Number::from_f64(*ms).unwrap_or_else(|| serde_json::Number::from(0)),
            ),
            // As JSON.stringify writes them: no own enumerable properties.
            Value::Map(_) | Value::Set(_) | Value::RegExp { .. } => J::Object(Default::default()),
            Value::Error(e) => serde_json::json!({ "name": e.name, "message": e.message }),
        })
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        // Integral numbers print without a trailing `.0`, as in JavaScript.
        serde_json::Value::from(n as i64)
    } else {
        // NaN and the infinities are `null` in JSON.
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// Formats a number the way JavaScript's `String(number)` does.
#[doc(hidden)]
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if n == 0.0 {
        return "0".into();
    }
    let abs = n.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust's shortest round-trip representation matches JavaScript's in this range.
        return format!("{n}");
    }
    // Exponent form: JavaScript writes `1e+21`, `1.5e-7`.
    let formatted = format!("{n:e}");
    match formatted.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => formatted,
    }
}

impl std::fmt::Display for Value {
    /// JavaScript's `String(value)` for primitives; JSON for objects and arrays.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Undefined => f.write_str("undefined"),
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => f.write_str(&format_number(*n)),
            Value::BigInt(b) => write!(f, "{b}"),
            Value::String(s) => f.write_str(s),
            Value::RegExp { source, flags } => write!(f, "/{source}/{flags}"),
            Value::Error(e) => write!(f, "{e}"),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(v.into()) }
        })*
    };
}

value_from! {
    bool => Bool, f64 => Number, f32 => Number, i32 => Number, u32 => Number,
    String => String, &str => String, Vec<Value> => Array, BigInt => BigInt,
}
