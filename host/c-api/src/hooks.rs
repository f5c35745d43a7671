//! Callbacks the embedder installs on an isolate: its catastrophic errors and unhandled
//! rejections (isolate options), and what `import()` and `import.meta` give (isolate hooks).

use std::ffi::{c_char, c_void};
use std::ptr;
use std::sync::Arc;

use engine::{Error, Isolate, JsError, Value};

use crate::callback::{UserData, returned, taken, with_function};
use crate::error::{Failure, ivm_error_t};
use crate::isolate::{ivm_isolate_options_t, ivm_isolate_t};
use crate::module::ivm_module_t;
use crate::value::ivm_value_t;
use crate::{args, c_text};

type Finalizer = Option<unsafe extern "C" fn(*mut c_void)>;

/// Hears that ivm lost control of the isolate (its worker process died, or a script did not stop
/// after its timeout): `message` says why, borrowed for the call.
pub type ivm_catastrophic_func_t = unsafe extern "C" fn(user_data: *mut c_void, message: *const c_char);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_on_catastrophic_error(
    options: *mut ivm_isolate_options_t,
    function: Option<ivm_catastrophic_func_t>,
    user_data: *mut c_void,
    finalizer: Finalizer,
) -> *mut ivm_error_t {
    let set = |function: ivm_catastrophic_func_t, user_data: Arc<UserData>| {
        let options = unsafe { args::borrow_mut(options, "options") }?;
        options.0 = options.0.clone().on_catastrophic_error(move |message: &str| {
            let message = c_text(message);
            // SAFETY: the embedder's function, with its data; the text lives through the call.
            unsafe { function(user_data.get(), message.as_ptr()) }
        });
        Ok(())
    };
    unsafe { with_function(function, "function", user_data, finalizer, set) }
}

/// Hears a promise rejection nothing handled by the end of the operation that caused it:
/// `error` (an IVM_ERROR_EXCEPTION) is borrowed for the call.
pub type ivm_rejection_func_t = unsafe extern "C" fn(user_data: *mut c_void, error: *const ivm_error_t);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_on_unhandled_rejection(
    options: *mut ivm_isolate_options_t,
    function: Option<ivm_rejection_func_t>,
    user_data: *mut c_void,
    finalizer: Finalizer,
) -> *mut ivm_error_t {
    let set = |function: ivm_rejection_func_t, user_data: Arc<UserData>| {
        let options = unsafe { args::borrow_mut(options, "options") }?;
        options.0 = options.0.clone().on_unhandled_rejection(move |rejection: JsError| {
            let error = ivm_error_t::new(Failure::Ivm(Error::Exception(Box::new(rejection))));
            // SAFETY: the embedder's function, with its data; the error lives through the call.
            unsafe { function(user_data.get(), &error) }
        });
        Ok(())
    };
    unsafe { with_function(function, "function", user_data, finalizer, set) }
}

/// Loads the module `import(specifier)` asks for in a module or script named `referrer`:
/// set `*module` to a module of `isolate` (borrowed for the call; compile it there), which
/// libivm takes, and return NULL; or return an error (given to libivm), with which the import
/// rejects. The same function resolves the static imports of what it loads.
pub type ivm_import_func_t = unsafe extern "C" fn(
    user_data: *mut c_void,
    isolate: *const ivm_isolate_t,
    specifier: *const c_char,
    referrer: *const c_char,
    module: *mut *mut ivm_module_t,
) -> *mut ivm_error_t;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_set_dynamic_import(
    isolate: *const ivm_isolate_t,
    function: Option<ivm_import_func_t>,
    user_data: *mut c_void,
    finalizer: Finalizer,
) -> *mut ivm_error_t {
    let set = |function: ivm_import_func_t, user_data: Arc<UserData>| {
        let isolate = unsafe { args::borrow(isolate, "isolate") }?;
        isolate.0.set_dynamic_import(move |isolate: &Isolate, request, referrer| {
            let specifier = crate::module::specifier(request)?;
            let (referrer, handle) = (c_text(referrer), ivm_isolate_t(isolate.clone()));
            let mut module = ptr::null_mut();
            // SAFETY: the embedder's function, with its data; the arguments live through it.
            let error = unsafe { function(user_data.get(), &handle, specifier.as_ptr(), referrer.as_ptr(), &mut module) };
            // Both are taken first: a function may set a module and still fail.
            // SAFETY: NULL or a module the function gave libivm.
            let module = unsafe { taken(module) };
            unsafe { returned(error) }?;
            match module {
                Some(module) => Ok(module.module),
                None => Err(Error::InvalidArgument(format!("the import hook gave no module for '{}'", request.specifier))),
            }
        });
        Ok(())
    };
    unsafe { with_function(function, "function", user_data, finalizer, set) }
}

/// Makes `import.meta` of the module named `filename`: set `*meta` to an object value (given to
/// libivm) and return NULL, or return an error.
pub type ivm_import_meta_func_t =
    unsafe extern "C" fn(user_data: *mut c_void, filename: *const c_char, meta: *mut *mut ivm_value_t) -> *mut ivm_error_t;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_set_import_meta(
    isolate: *const ivm_isolate_t,
    function: Option<ivm_import_meta_func_t>,
    user_data: *mut c_void,
    finalizer: Finalizer,
) -> *mut ivm_error_t {
    let set = |function: ivm_import_meta_func_t, user_data: Arc<UserData>| {
        let isolate = unsafe { args::borrow(isolate, "isolate") }?;
        isolate.0.set_import_meta(move |filename: &str| {
            let filename = c_text(filename);
            let mut meta = ptr::null_mut();
            // SAFETY: the embedder's function, with its data; the name lives through it.
            let error = unsafe { function(user_data.get(), filename.as_ptr(), &mut meta) };
            // Both are taken first: a function may set a value and still fail.
            // SAFETY: NULL or a value the function gave libivm.
            let meta = unsafe { taken(meta) };
            unsafe { returned(error) }?;
            match meta {
                Some(meta) => meta.0.data(),
                None => Ok(Value::Object(Default::default())),
            }
        });
        Ok(())
    };
    unsafe { with_function(function, "function", user_data, finalizer, set) }
}
