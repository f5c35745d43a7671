//! `ivm_value_t`: a value crossing between C and an isolate. Data is held as ivm's dynamic
//! `Value` and read or written as JSON text or MessagePack bytes (the WIT interface's mapping);
//! references, external copies and host functions are handles.

use std::ffi::c_char;
use std::ptr;

use engine::value::msgpack;
use engine::{BigInt, Callback, Error, ExternalCopy, Reference, Transferable, Transferred, Value};

use crate::bytes::ivm_bytes_t;
use crate::reference::ivm_reference_t;
use crate::{Result, args, boundary, give, quietly};

pub struct ivm_value_t(pub(crate) Held);

#[derive(Clone)]
pub(crate) enum Held {
    Data(Value),
    Reference(Reference),
    ExternalCopy(ExternalCopy),
    Function(Callback),
}

/// The kinds, as numbered in ivm.h (`IVM_VALUE_*`).
#[repr(u8)]
enum Kind {
    Undefined = 0,
    Null = 1,
    Boolean = 2,
    Number = 3,
    BigInt = 4,
    String = 5,
    Bytes = 6,
    Object = 7,
    Reference = 8,
    ExternalCopy = 9,
    Function = 10,
}

impl Held {
    /// The value as it goes into an isolate (handles are cloned: the caller keeps its own).
    pub(crate) fn transferable(&self) -> Transferable {
        match self {
            Held::Data(value) => Transferred::Value(value.clone()).into(),
            Held::Reference(r) => r.clone().into(),
            Held::ExternalCopy(c) => c.clone().into(),
            Held::Function(f) => f.clone().into(),
        }
    }

    /// The value as data: an external copy is copied out; a handle into an isolate is refused.
    pub(crate) fn data(&self) -> Result<Value> {
        match self {
            Held::Data(value) => Ok(value.clone()),
            Held::ExternalCopy(c) => c.copy::<Value>(),
            Held::Reference(_) => Err(Error::Conversion("a reference is not data: copy it with ivm_reference_copy".into())),
            Held::Function(_) => Err(Error::Conversion("a host function is not data".into())),
        }
    }
}

impl From<Transferred> for Held {
    fn from(value: Transferred) -> Held {
        match value {
            Transferred::Value(v) => Held::Data(v),
            Transferred::Reference(r) => Held::Reference(r),
            Transferred::ExternalCopy(c) => Held::ExternalCopy(c),
        }
    }
}

/// Borrowed values, as arguments for a call.
pub(crate) unsafe fn args_of(values: *const *const ivm_value_t, len: usize) -> Result<Vec<Transferable>> {
    Ok(unsafe { args::list(values, len, "args") }?.into_iter().map(|v| v.0.transferable()).collect())
}

/// A new data value.
fn data(value: Value) -> *mut ivm_value_t {
    give(ivm_value_t(Held::Data(value)))
}

crate::deleters!(ivm_value_delete: ivm_value_t);

#[unsafe(no_mangle)]
pub extern "C" fn ivm_value_new_undefined() -> *mut ivm_value_t {
    data(Value::Undefined)
}

#[unsafe(no_mangle)]
pub extern "C" fn ivm_value_new_null() -> *mut ivm_value_t {
    data(Value::Null)
}

#[unsafe(no_mangle)]
pub extern "C" fn ivm_value_new_boolean(value: bool) -> *mut ivm_value_t {
    data(Value::Bool(value))
}

#[unsafe(no_mangle)]
pub extern "C" fn ivm_value_new_number(value: f64) -> *mut ivm_value_t {
    data(Value::Number(value))
}

/// Makes a value from checked input: the fallible constructors' shared body.
unsafe fn make(out: *mut *mut ivm_value_t, value: impl FnOnce() -> Result<Value>) -> *mut crate::ivm_error_t {
    boundary(|| {
        let out = unsafe { args::out(out, "out") }?;
        *out = data(value()?);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_new_string(text: *const c_char, len: usize, out: *mut *mut ivm_value_t) -> *mut crate::ivm_error_t {
    unsafe { make(out, || Ok(Value::String(args::text(text, len, "text")?.to_owned()))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_new_bigint(decimal: *const c_char, out: *mut *mut ivm_value_t) -> *mut crate::ivm_error_t {
    unsafe {
        make(out, || {
            let text = args::name(decimal, "decimal")?;
            let value: BigInt = text.parse().map_err(|_| Error::InvalidArgument(format!("'{text}' is not a decimal BigInt")))?;
            Ok(Value::BigInt(value))
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_new_bytes(bytes: *const u8, len: usize, out: *mut *mut ivm_value_t) -> *mut crate::ivm_error_t {
    unsafe { make(out, || Ok(Value::Bytes(args::bytes(bytes, len, "bytes")?.to_vec()))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_new_json(json: *const c_char, len: usize, out: *mut *mut ivm_value_t) -> *mut crate::ivm_error_t {
    unsafe {
        make(out, || {
            let parsed: serde_json::Value = serde_json::from_str(args::text(json, len, "json")?)
                .map_err(|e| Error::InvalidArgument(format!("`json` is not JSON: {e}")))?;
            engine::to_value(&parsed)
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_new_msgpack(bytes: *const u8, len: usize, out: *mut *mut ivm_value_t) -> *mut crate::ivm_error_t {
    unsafe { make(out, || msgpack::from_msgpack(args::bytes(bytes, len, "bytes")?)) }
}

/// A value for a reference (which the caller keeps).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_new_reference(reference: *const ivm_reference_t) -> *mut ivm_value_t {
    // SAFETY: the header's contract (NULL or a reference).
    quietly(ptr::null_mut(), || match unsafe { reference.as_ref() } {
        Some(r) => give(ivm_value_t(Held::Reference(r.0.clone()))),
        None => ptr::null_mut(),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_clone(value: *const ivm_value_t) -> *mut ivm_value_t {
    // SAFETY: the header's contract (NULL or a value).
    quietly(ptr::null_mut(), || unsafe { value.as_ref() }.map_or(ptr::null_mut(), |v| give(ivm_value_t(v.0.clone()))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_kind(value: *const ivm_value_t) -> u8 {
    // SAFETY: the header's contract (NULL or a value).
    let Some(value) = (unsafe { value.as_ref() }) else { return Kind::Undefined as u8 };
    (match &value.0 {
        Held::Data(Value::Undefined) => Kind::Undefined,
        Held::Data(Value::Null) => Kind::Null,
        Held::Data(Value::Bool(_)) => Kind::Boolean,
        Held::Data(Value::Number(_)) => Kind::Number,
        Held::Data(Value::BigInt(_)) => Kind::BigInt,
        Held::Data(Value::String(_)) => Kind::String,
        Held::Data(Value::Bytes(_)) => Kind::Bytes,
        Held::Data(_) => Kind::Object,
        Held::Reference(_) => Kind::Reference,
        Held::ExternalCopy(_) => Kind::ExternalCopy,
        Held::Function(_) => Kind::Function,
    }) as u8
}

/// The data inside `value`, if it holds data.
unsafe fn data_of<'a>(value: *const ivm_value_t) -> Option<&'a Value> {
    // SAFETY: the header's contract (NULL or a value).
    match unsafe { value.as_ref() } {
        Some(ivm_value_t(Held::Data(v))) => Some(v),
        _ => None,
    }
}

/// Writes the primitive `pick` finds in `value` to `out`; false if it finds none.
unsafe fn read<T>(value: *const ivm_value_t, out: *mut T, pick: impl FnOnce(&Value) -> Option<T>) -> bool {
    // SAFETY: the header's contract (NULL or a value; NULL or a place for the result).
    match (unsafe { data_of(value) }.and_then(pick), unsafe { out.as_mut() }) {
        (Some(found), Some(out)) => {
            *out = found;
            true
        }
        _ => false,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_get_boolean(value: *const ivm_value_t, out: *mut bool) -> bool {
    unsafe { read(value, out, |v| if let Value::Bool(b) = v { Some(*b) } else { None }) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_get_number(value: *const ivm_value_t, out: *mut f64) -> bool {
    unsafe { read(value, out, Value::as_f64) }
}

/// A string's UTF-8 bytes, borrowed from the value (not NUL-terminated).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_get_string(value: *const ivm_value_t, data: *mut *const c_char, len: *mut usize) -> bool {
    match (unsafe { data_of(value) }, unsafe { data.as_mut() }, unsafe { len.as_mut() }) {
        (Some(Value::String(s)), Some(data), Some(len)) => {
            (*data, *len) = (s.as_ptr().cast(), s.len());
            true
        }
        _ => false,
    }
}

/// A new handle to the reference inside `value`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_get_reference(value: *const ivm_value_t, out: *mut *mut ivm_reference_t) -> bool {
    // SAFETY: the header's contract (NULL or a value; NULL or a place for the handle).
    quietly(false, || match (unsafe { value.as_ref() }, unsafe { out.as_mut() }) {
        (Some(ivm_value_t(Held::Reference(r))), Some(out)) => {
            *out = give(ivm_reference_t(r.clone()));
            true
        }
        _ => false,
    })
}

/// Writes the value as data in one of the two text forms.
unsafe fn encode(value: *const ivm_value_t, out: *mut ivm_bytes_t, encode: fn(&Value) -> Result<Vec<u8>>) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (value, out) = unsafe { (args::borrow(value, "value")?, args::out(out, "out")?) };
        let bytes = encode(&value.0.data()?)?;
        ivm_bytes_t::give(out, bytes);
        Ok(())
    })
}

/// JSON as `JSON.stringify` writes it (`undefined` at the top is `null`, BigInts are decimal
/// strings, bytes are arrays of numbers, dates are milliseconds).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_to_json(value: *const ivm_value_t, out: *mut ivm_bytes_t) -> *mut crate::ivm_error_t {
    unsafe {
        encode(value, out, |v| serde_json::to_vec(&v.to_json()).map_err(|e| Error::Conversion(e.to_string())))
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_value_to_msgpack(value: *const ivm_value_t, out: *mut ivm_bytes_t) -> *mut crate::ivm_error_t {
    unsafe { encode(value, out, msgpack::to_msgpack) }
}
