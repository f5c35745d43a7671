//! `ivm_reference_t`: a value left in its isolate (isolated-vm's `Reference`), with
//! isolated-vm's safety rules: own properties only, getters and setters never run.

use std::ffi::{CStr, c_char};

use engine::{ExternalCopy, Reference, Transfer, Transferred, Value};

use crate::context::{give_result, ivm_run_options_t, run_options, transfer};
use crate::value::{self, ivm_value_t};
use crate::{args, boundary, give, quietly};

pub struct ivm_reference_t(pub(crate) Reference);

crate::deleters!(ivm_reference_delete: ivm_reference_t);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_clone(reference: *const ivm_reference_t) -> *mut ivm_reference_t {
    // SAFETY: the header's contract (NULL or a reference).
    quietly(std::ptr::null_mut(), || unsafe { reference.as_ref() }.map_or(std::ptr::null_mut(), |r| give(ivm_reference_t(r.0.clone()))))
}

/// `typeof` as isolated-vm reports it, as a static string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_type_of(reference: *const ivm_reference_t) -> *const c_char {
    // SAFETY: the header's contract (NULL or a reference).
    let Some(reference) = (unsafe { reference.as_ref() }) else { return std::ptr::null() };
    let name: &'static CStr = match reference.0.type_of() {
        "undefined" => c"undefined",
        "null" => c"null",
        "boolean" => c"boolean",
        "number" => c"number",
        "bigint" => c"bigint",
        "string" => c"string",
        "function" => c"function",
        _ => c"object",
    };
    name.as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_get(
    reference: *const ivm_reference_t,
    key: *const c_char,
    len: usize,
    how: u8,
    out: *mut *mut ivm_value_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (reference, key) = unsafe { (args::borrow(reference, "reference")?, args::text(key, len, "key")?) };
        let out = unsafe { args::out(out, "out") }?;
        let r = &reference.0;
        let result = match transfer(how)? {
            Transfer::Copy => Transferred::Value(r.get::<Value>(key)?),
            Transfer::ExternalCopy => Transferred::ExternalCopy(r.get::<ExternalCopy>(key)?),
            Transfer::Reference => Transferred::Reference(r.get::<Reference>(key)?),
            _ => r.get::<Transferred>(key)?,
        };
        give_result(out, result);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_set(
    reference: *const ivm_reference_t,
    key: *const c_char,
    len: usize,
    value: *const ivm_value_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (reference, key) = unsafe { (args::borrow(reference, "reference")?, args::text(key, len, "key")?) };
        let value = unsafe { args::borrow(value, "value") }?;
        reference.0.set(key, value.0.transferable())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_delete_property(reference: *const ivm_reference_t, key: *const c_char, len: usize) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (reference, key) = unsafe { (args::borrow(reference, "reference")?, args::text(key, len, "key")?) };
        reference.0.delete(key)
    })
}

/// Calls the function with `receiver` as `this` (NULL: `undefined`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_apply(
    reference: *const ivm_reference_t,
    receiver: *const ivm_value_t,
    args: *const *const ivm_value_t,
    nargs: usize,
    options: *const ivm_run_options_t,
    out: *mut *mut ivm_value_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (reference, list) = unsafe { (args::borrow(reference, "reference")?, value::args_of(args, nargs)?) };
        let out = unsafe { args::out(out, "out") }?;
        // SAFETY: NULL or a value.
        let receiver = unsafe { receiver.as_ref() }.map_or_else(|| Transferred::Value(Value::Undefined).into(), |v| v.0.transferable());
        give_result(out, reference.0.apply::<Transferred>(receiver, list, &unsafe { run_options(options) })?);
        Ok(())
    })
}

/// A copy of the value, as data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_reference_copy(reference: *const ivm_reference_t, out: *mut *mut ivm_value_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (reference, out) = unsafe { (args::borrow(reference, "reference")?, args::out(out, "out")?) };
        give_result(out, Transferred::Value(reference.0.copy::<Value>()?));
        Ok(())
    })
}
