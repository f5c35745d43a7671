//! libivm: ivm's C API. `include/ivm.h` is its reference (every function, who owns what,
//! which threads may call); this crate implements it on the Rust API (the `ivm` crate,
//! imported here as `engine`).
//!
//! The conventions are wasmtime's C API's: opaque handles, one `_delete` per type, fallible
//! functions returning an `ivm_error_t *` (NULL on success) with results through out-pointers
//! that are written only on success. Every exported function runs its body through
//! [`boundary`] (or [`quietly`] for the few that cannot fail), so a panic becomes an error of
//! kind `IVM_ERROR_INTERNAL` instead of unwinding into C, and NULL arguments are refused by
//! the [`args`] helpers before anything is read through them.

// The C names are the header's.
#![allow(non_camel_case_types)]
// Every exported function is `unsafe` (it reads C pointers); its contract is written once, in
// ivm.h, rather than twice.
#![allow(clippy::missing_safety_doc)]

mod args;
mod bytes;
mod callback;
mod context;
mod debug;
mod error;
mod hooks;
mod isolate;
mod module;
mod reference;
mod script;
mod snapshot;
mod value;
mod workers;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use error::ivm_error_t;

/// The result of an API function's body: ivm's own error, or one made here (a NULL argument is
/// an `InvalidArgument`).
pub(crate) type Result<T, E = engine::Error> = std::result::Result<T, E>;

/// Runs the body of a fallible API function: its error, or a panic, becomes the `ivm_error_t`
/// the caller owns; success is NULL.
pub(crate) fn boundary(body: impl FnOnce() -> Result<()>) -> *mut ivm_error_t {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(error)) => ivm_error_t::boxed(error.into()),
        Err(panic) => ivm_error_t::boxed(error::Failure::panicked(panic)),
    }
}

/// Runs the body of an API function that reports no error (a query, a `_delete`): a panic
/// gives `fallback` instead of unwinding into C.
pub(crate) fn quietly<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Applies one setter to options the caller lends (`ivm_*_options_set_*`).
pub(crate) unsafe fn change<O>(options: *mut O, set: impl FnOnce(&mut O) -> Result<()>) -> *mut ivm_error_t {
    boundary(|| set(unsafe { args::borrow_mut(options, "options") }?))
}

/// Text for C: a NUL inside it (JavaScript strings may hold one) would end the C string early,
/// so it is written as U+FFFD; the full text is what ivm's Rust API returns.
pub(crate) fn c_text(text: &str) -> std::ffi::CString {
    std::ffi::CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default()
}

/// Moves a result to C: the caller owns the handle and frees it with its `_delete`.
pub(crate) fn give<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// The `_delete` of a handle type: frees what `give` gave out. NULL is ignored.
macro_rules! deleters {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(handle: *mut $ty) {
            if !handle.is_null() {
                // SAFETY: the header's contract: `handle` came from libivm and is deleted once.
                $crate::quietly((), || drop(unsafe { Box::from_raw(handle) }));
            }
        }
    )*};
}
pub(crate) use deleters;

/// The library's version, as `IVM_VERSION` in ivm.h.
#[unsafe(no_mangle)]
pub extern "C" fn ivm_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The version of the V8 inside.
#[unsafe(no_mangle)]
pub extern "C" fn ivm_v8_version() -> *const std::ffi::c_char {
    static VERSION: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();
    quietly(std::ptr::null(), || {
        VERSION.get_or_init(|| std::ffi::CString::new(engine::v8_version()).unwrap_or_default()).as_ptr()
    })
}

// ivm.h promises that every handle may be used from any thread, and from several at once.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<isolate::ivm_isolate_t>();
    shared::<isolate::ivm_isolate_options_t>();
    shared::<context::ivm_context_t>();
    shared::<context::ivm_context_options_t>();
    shared::<context::ivm_run_options_t>();
    shared::<script::ivm_script_t>();
    shared::<script::ivm_compile_options_t>();
    shared::<module::ivm_module_t>();
    shared::<reference::ivm_reference_t>();
    shared::<value::ivm_value_t>();
    shared::<callback::ivm_completion_t>();
    shared::<snapshot::ivm_snapshot_t>();
    shared::<snapshot::ivm_snapshot_options_t>();
    shared::<debug::ivm_inspector_session_t>();
    shared::<ivm_error_t>();
};
