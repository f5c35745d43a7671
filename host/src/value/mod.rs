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
//! | function, symbol, Map, Set, Promise, Proxy, ... | not copyable: [`Error::Conversion`](crate::Error::Conversion) | |
//!
//! In the other direction Rust integers become numbers when they are safe integers
//! (|n| ≤ 2^53) and BigInts otherwise; `()` becomes `undefined` and `None` becomes `null`.

mod bigint;
mod de;
pub(crate) mod js;
mod ser;

pub use bigint::BigInt;
pub use de::from_value;
pub use ser::to_value;

use indexmap::IndexMap;

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

    /// This value as JSON, the way `JSON.stringify` would write it, except that `undefined`
    /// at the top level is `null`, BigInts are decimal strings (JSON has no BigInt), bytes are
    /// arrays of numbers and dates are ISO-8601 strings when representable.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
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
        }
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
pub(crate) fn format_number(n: f64) -> String {
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
