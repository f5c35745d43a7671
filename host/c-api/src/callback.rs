//! Host functions as C callbacks: `ivm_function_new` (synchronous) and
//! `ivm_function_new_async` (settled later, from any thread, through an `ivm_completion_t`).
//! Both become a value (`IVM_VALUE_FUNCTION`) to set on an object or pass as an argument.

use std::ffi::{c_char, c_void};
use std::ptr;
use std::sync::Arc;

use engine::{Callback, Error, Value};

use crate::error::ivm_error_t;
use crate::value::{Held, ivm_value_t};
use crate::{Result, args, boundary, give};

/// The embedder's `user_data` and its finalizer, which runs once, when the last holder lets go.
pub(crate) struct UserData {
    data: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: the header's contract: what a host function's `user_data` points at may be used from
// any thread (libivm calls the function on the threads that run JavaScript).
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

impl UserData {
    pub(crate) fn new(data: *mut c_void, finalizer: Option<unsafe extern "C" fn(*mut c_void)>) -> Arc<UserData> {
        Arc::new(UserData { data, finalizer })
    }

    pub(crate) fn get(&self) -> *mut c_void {
        self.data
    }
}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(finalizer) = self.finalizer {
            // SAFETY: the embedder's finalizer, with its data, once.
            unsafe { finalizer(self.data) }
        }
    }
}

/// A synchronous host function: it returns NULL and sets `*result` (left NULL: `undefined`),
/// or returns an error, which JavaScript gets as an exception.
pub type ivm_function_t = unsafe extern "C" fn(
    user_data: *mut c_void,
    args: *const *const ivm_value_t,
    nargs: usize,
    result: *mut *mut ivm_value_t,
) -> *mut ivm_error_t;

/// An async host function: it hands `completion` to whatever finishes the work, which calls
/// `ivm_completion_resolve` or `ivm_completion_reject` once, from any thread.
pub type ivm_async_function_t =
    unsafe extern "C" fn(user_data: *mut c_void, args: *const *const ivm_value_t, nargs: usize, completion: *mut ivm_completion_t);

/// Calls the C function with the arguments as borrowed values.
fn with_args<R>(args: Vec<Value>, call: impl FnOnce(*const *const ivm_value_t, usize) -> R) -> R {
    let values: Vec<ivm_value_t> = args.into_iter().map(|v| ivm_value_t(Held::Data(v))).collect();
    let pointers: Vec<*const ivm_value_t> = values.iter().map(|v| v as *const ivm_value_t).collect();
    call(pointers.as_ptr(), pointers.len())
}

/// What a host function gave back: data, or an error to throw.
fn outcome(error: *mut ivm_error_t, result: *mut ivm_value_t) -> Result<Value> {
    // SAFETY: the header's contract: each is NULL or given to libivm by the function.
    let (error, result) = unsafe { (taken(error), taken(result)) };
    match (error, result) {
        (Some(error), _) => Err(error.error),
        (None, None) => Ok(Value::Undefined),
        (None, Some(value)) => value.0.data(),
    }
}

/// Takes ownership of a handle the embedder gave libivm.
pub(crate) unsafe fn taken<T>(handle: *mut T) -> Option<T> {
    // SAFETY: the caller's contract: NULL or a handle libivm made and the embedder gave back.
    (!handle.is_null()).then(|| *unsafe { Box::from_raw(handle) })
}

/// Takes an error a C callback returned (NULL: none).
pub(crate) unsafe fn returned(error: *mut ivm_error_t) -> Result<()> {
    // SAFETY: the caller's contract: NULL or an error the callback gave libivm.
    match unsafe { taken(error) } {
        Some(error) => Err(error.error),
        None => Ok(()),
    }
}

/// The shared body of the functions that take an embedder's function with its `user_data` and
/// finalizer: the data is owned at once (so that its finalizer runs also when the arguments are
/// refused), `function` (the argument called `what`) must not be NULL, then `body` uses them.
pub(crate) unsafe fn with_function<F>(
    function: Option<F>,
    what: &str,
    user_data: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(*mut c_void)>,
    body: impl FnOnce(F, Arc<UserData>) -> Result<()>,
) -> *mut ivm_error_t {
    let user_data = UserData::new(user_data, finalizer);
    boundary(|| body(function.ok_or_else(|| Error::InvalidArgument(format!("`{what}` is NULL")))?, user_data))
}

unsafe fn name_of(name: *const c_char) -> Result<String> {
    // SAFETY: NULL or a NUL-terminated string.
    Ok(if name.is_null() { String::new() } else { unsafe { args::name(name, "name") }?.to_owned() })
}

/// The shared body of the two constructors: `make` turns the embedder's function into a callback.
unsafe fn new_function<F>(
    name: *const c_char,
    function: Option<F>,
    user_data: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(*mut c_void)>,
    out: *mut *mut ivm_value_t,
    make: impl FnOnce(F, Arc<UserData>) -> Callback,
) -> *mut ivm_error_t {
    let body = |function, user_data| {
        let (name, out) = unsafe { (name_of(name)?, args::out(out, "out")?) };
        *out = give(ivm_value_t(Held::Function(make(function, user_data).name(name))));
        Ok(())
    };
    unsafe { with_function(function, "function", user_data, finalizer, body) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_function_new(
    name: *const c_char,
    function: Option<ivm_function_t>,
    user_data: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(*mut c_void)>,
    out: *mut *mut ivm_value_t,
) -> *mut ivm_error_t {
    let make = |function: ivm_function_t, user_data: Arc<UserData>| {
        Callback::new(move |args: Vec<Value>| {
            let mut result = ptr::null_mut();
            // SAFETY: the embedder's function, with its data and borrowed arguments.
            let error = with_args(args, |list, len| unsafe { function(user_data.get(), list, len, &mut result) });
            outcome(error, result)
        })
    };
    unsafe { new_function(name, function, user_data, finalizer, out, make) }
}

/// The promise of one call of an async host function.
pub struct ivm_completion_t(oneshot::Sender<Result<Value>>);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_function_new_async(
    name: *const c_char,
    function: Option<ivm_async_function_t>,
    user_data: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(*mut c_void)>,
    out: *mut *mut ivm_value_t,
) -> *mut ivm_error_t {
    let make = |function: ivm_async_function_t, user_data: Arc<UserData>| {
        Callback::new_async(move |args: Vec<Value>| {
            let (settle, settled) = oneshot::channel();
            let completion = give(ivm_completion_t(settle));
            // SAFETY: the embedder's function, with its data, borrowed arguments, and the
            // completion it now owns.
            with_args(args, |list, len| unsafe { function(user_data.get(), list, len, completion) });
            async move { settled.await.unwrap_or(Err(Error::Abandoned)) }
        })
    };
    unsafe { new_function(name, function, user_data, finalizer, out, make) }
}

/// Settles a call: `value` (taken; NULL for `undefined`) or `error` (taken), then frees the
/// completion.
unsafe fn settle(completion: *mut ivm_completion_t, outcome: Result<Value>) {
    // SAFETY: the header's contract: a completion libivm gave, settled once.
    if let Some(completion) = unsafe { taken(completion) } {
        // The run may be over (timed out, isolate disposed): nobody waits any more.
        let _ = completion.0.send(outcome);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_completion_resolve(completion: *mut ivm_completion_t, value: *mut ivm_value_t) {
    crate::quietly((), || unsafe { settle(completion, outcome(ptr::null_mut(), value)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_completion_reject(completion: *mut ivm_completion_t, error: *mut ivm_error_t) {
    let error = if error.is_null() { ivm_error_t::boxed(Error::js("Error", "rejected").into()) } else { error };
    crate::quietly((), || unsafe { settle(completion, outcome(error, ptr::null_mut())) })
}
