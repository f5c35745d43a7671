//! Compiled scripts and compile options (origin, the sealed code cache): `ivm_script_t`,
//! `ivm_compile_options_t`.

use std::ffi::c_char;

use engine::{CachedData, CompileOptions, Script, ScriptOrigin, Transferred};

use crate::context::{give_result, ivm_context_t, run_options, ivm_run_options_t};
use crate::isolate::ivm_isolate_t;
use crate::value::ivm_value_t;
use crate::{Result, args, boundary, give};

pub struct ivm_compile_options_t(pub(crate) CompileOptions);

pub struct ivm_script_t(Script);

crate::deleters!(ivm_compile_options_delete: ivm_compile_options_t, ivm_script_delete: ivm_script_t);

#[unsafe(no_mangle)]
pub extern "C" fn ivm_compile_options_new() -> *mut ivm_compile_options_t {
    give(ivm_compile_options_t(CompileOptions::default()))
}

unsafe fn change(options: *mut ivm_compile_options_t, set: impl FnOnce(&mut CompileOptions) -> Result<()>) -> *mut crate::ivm_error_t {
    unsafe { crate::change(options, |o| set(&mut o.0)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_compile_options_set_origin(
    options: *mut ivm_compile_options_t,
    filename: *const c_char,
    line_offset: i32,
    column_offset: i32,
) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.origin = ScriptOrigin::new(args::name(filename, "filename")?).offsets(line_offset, column_offset);
            Ok(())
        })
    }
}

/// A code cache from an earlier compile (`ivm_script_cached_data`), copied.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_compile_options_set_cached_data(options: *mut ivm_compile_options_t, data: *const u8, len: usize) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.cached_data = Some(CachedData::from_bytes(args::bytes(data, len, "data")?.to_vec()));
            Ok(())
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_compile_options_set_produce_cached_data(options: *mut ivm_compile_options_t, produce: bool) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.produce_cached_data = produce;
            Ok(())
        })
    }
}

/// Compile options the caller lends, or the defaults for NULL.
pub(crate) unsafe fn compile_options(options: *const ivm_compile_options_t) -> CompileOptions {
    // SAFETY: NULL or options.
    unsafe { options.as_ref() }.map(|o| o.0.clone()).unwrap_or_default()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_compile_script(
    isolate: *const ivm_isolate_t,
    code: *const c_char,
    len: usize,
    options: *const ivm_compile_options_t,
    out: *mut *mut ivm_script_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (isolate, code) = unsafe { (args::borrow(isolate, "isolate")?, args::text(code, len, "code")?) };
        let out = unsafe { args::out(out, "out") }?;
        *out = give(ivm_script_t(isolate.0.compile_script(code, &unsafe { compile_options(options) })?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_script_run(
    script: *const ivm_script_t,
    context: *const ivm_context_t,
    options: *const ivm_run_options_t,
    out: *mut *mut ivm_value_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (script, context) = unsafe { (args::borrow(script, "script")?, args::borrow(context, "context")?) };
        let out = unsafe { args::out(out, "out") }?;
        give_result(out, script.0.run::<Transferred>(&context.0, &unsafe { run_options(options) })?);
        Ok(())
    })
}

/// A code cache the compile produced, borrowed from its owner.
pub(crate) unsafe fn lend_cache(cache: Option<&CachedData>, data: *mut *const u8, len: *mut usize) -> bool {
    // SAFETY: the header's contract: NULL or places for the results.
    match (cache, unsafe { data.as_mut() }, unsafe { len.as_mut() }) {
        (Some(cache), Some(data), Some(len)) => {
            (*data, *len) = (cache.as_bytes().as_ptr(), cache.as_bytes().len());
            true
        }
        _ => false,
    }
}

/// -1: no cache was supplied; 0: it was used; 1: it was rejected (and the code compiled anew).
pub(crate) fn rejected(outcome: Option<bool>) -> i8 {
    outcome.map_or(-1, i8::from)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_script_cached_data(script: *const ivm_script_t, data: *mut *const u8, len: *mut usize) -> bool {
    // SAFETY: the header's contract (NULL or a script).
    crate::quietly(false, || unsafe { script.as_ref() }.is_some_and(|s| unsafe { lend_cache(s.0.cached_data(), data, len) }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_script_cached_data_rejected(script: *const ivm_script_t) -> i8 {
    // SAFETY: the header's contract (NULL or a script).
    crate::quietly(-1, || unsafe { script.as_ref() }.map_or(-1, |s| rejected(s.0.cached_data_rejected())))
}
