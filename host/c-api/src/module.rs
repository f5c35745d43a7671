//! ES modules: `ivm_module_t`, compiled from source or made from JSON, linked with a resolver
//! callback.

use std::ffi::{CString, c_char, c_void};
use std::ptr;

use engine::{Error, ImportRequest, Module};

use crate::context::{ivm_context_t, ivm_run_options_t, run_options};
use crate::callback::returned;
use crate::error::ivm_error_t;
use crate::isolate::ivm_isolate_t;
use crate::reference::ivm_reference_t;
use crate::value::ivm_value_t;
use crate::script::{compile_options, ivm_compile_options_t, lend_cache, rejected};
use crate::{args, boundary, give, quietly};

pub struct ivm_module_t {
    pub(crate) module: Module,
    /// The module's file name, as C reads it.
    filename: CString,
}

impl ivm_module_t {
    pub(crate) fn new(module: Module) -> ivm_module_t {
        let filename = crate::c_text(module.filename());
        ivm_module_t { module, filename }
    }
}

crate::deleters!(ivm_module_delete: ivm_module_t);

/// An import's specifier for a C callback (one holding a NUL cannot be passed).
pub(crate) fn specifier(request: &ImportRequest) -> crate::Result<CString> {
    CString::new(request.specifier.as_str())
        .map_err(|_| Error::InvalidArgument(format!("the specifier '{}' holds a NUL", request.specifier.escape_default())))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_compile_module(
    isolate: *const ivm_isolate_t,
    code: *const c_char,
    len: usize,
    options: *const ivm_compile_options_t,
    out: *mut *mut ivm_module_t,
) -> *mut ivm_error_t {
    boundary(|| {
        let (isolate, code) = unsafe { (args::borrow(isolate, "isolate")?, args::text(code, len, "code")?) };
        let out = unsafe { args::out(out, "out") }?;
        *out = give(ivm_module_t::new(isolate.0.compile_module(code, &unsafe { compile_options(options) })?));
        Ok(())
    })
}

/// A module whose default export is the parsed `json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_json_module(
    isolate: *const ivm_isolate_t,
    name: *const c_char,
    json: *const c_char,
    len: usize,
    out: *mut *mut ivm_module_t,
) -> *mut ivm_error_t {
    boundary(|| {
        let (isolate, name) = unsafe { (args::borrow(isolate, "isolate")?, args::name(name, "name")?) };
        let (json, out) = unsafe { (args::text(json, len, "json")?, args::out(out, "out")?) };
        *out = give(ivm_module_t::new(isolate.0.json_module(name, json)?));
        Ok(())
    })
}

/// A module whose exports are `exports`' properties (an object value, borrowed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_data_module(
    isolate: *const ivm_isolate_t,
    name: *const c_char,
    exports: *const ivm_value_t,
    out: *mut *mut ivm_module_t,
) -> *mut ivm_error_t {
    boundary(|| {
        let (isolate, name) = unsafe { (args::borrow(isolate, "isolate")?, args::name(name, "name")?) };
        let (exports, out) = unsafe { (args::borrow(exports, "exports")?, args::out(out, "out")?) };
        *out = give(ivm_module_t::new(isolate.0.data_module(name, exports.0.data()?)?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_module_filename(module: *const ivm_module_t) -> *const c_char {
    // SAFETY: the header's contract (NULL or a module).
    unsafe { module.as_ref() }.map_or(ptr::null(), |m| m.filename.as_ptr())
}

/// Finds the module for `specifier`, imported by `referrer`: sets `*module` to a module the
/// resolver keeps owning (libivm takes a handle of its own), or returns an error.
pub type ivm_module_resolver_t = unsafe extern "C" fn(
    user_data: *mut c_void,
    specifier: *const c_char,
    referrer: *const ivm_module_t,
    module: *mut *const ivm_module_t,
) -> *mut ivm_error_t;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_module_instantiate(
    module: *const ivm_module_t,
    context: *const ivm_context_t,
    resolver: Option<ivm_module_resolver_t>,
    user_data: *mut c_void,
) -> *mut ivm_error_t {
    boundary(|| {
        let (module, context) = unsafe { (args::borrow(module, "module")?, args::borrow(context, "context")?) };
        let resolver = resolver.ok_or_else(|| Error::InvalidArgument("`resolver` is NULL".into()))?;
        module.module.instantiate(&context.0, |request, referrer| {
            let specifier = specifier(request)?;
            let referrer = ivm_module_t::new(referrer.clone());
            let mut found: *const ivm_module_t = ptr::null();
            // SAFETY: the embedder's resolver, with its data; the strings live through the call.
            unsafe { returned(resolver(user_data, specifier.as_ptr(), &referrer, &mut found)) }?;
            // SAFETY: NULL or a module the resolver lends.
            match unsafe { found.as_ref() } {
                Some(found) => Ok(found.module.clone()),
                None => Err(Error::InvalidArgument(format!("the resolver found no module for '{}'", request.specifier))),
            }
        })
    })
}

/// Runs the module graph and waits for it (top-level await included).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_module_evaluate(module: *const ivm_module_t, options: *const ivm_run_options_t) -> *mut ivm_error_t {
    boundary(|| unsafe { args::borrow(module, "module") }?.module.evaluate(&unsafe { run_options(options) }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_module_namespace(module: *const ivm_module_t, out: *mut *mut ivm_reference_t) -> *mut ivm_error_t {
    boundary(|| {
        let (module, out) = unsafe { (args::borrow(module, "module")?, args::out(out, "out")?) };
        *out = give(ivm_reference_t(module.module.namespace()?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_module_cached_data(module: *const ivm_module_t, data: *mut *const u8, len: *mut usize) -> bool {
    // SAFETY: the header's contract (NULL or a module).
    quietly(false, || unsafe { module.as_ref() }.is_some_and(|m| unsafe { lend_cache(m.module.cached_data(), data, len) }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_module_cached_data_rejected(module: *const ivm_module_t) -> i8 {
    // SAFETY: the header's contract (NULL or a module).
    quietly(-1, || unsafe { module.as_ref() }.map_or(-1, |m| rejected(m.module.cached_data_rejected())))
}
