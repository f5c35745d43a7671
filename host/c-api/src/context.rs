//! Contexts and runs: `ivm_context_options_t`, `ivm_context_t`, `ivm_run_options_t`, eval and
//! eval-closure.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use engine::{ConsoleLevel, Context, ContextOptions, EvalOptions, ScriptOrigin, Transfer, Transferred};

use crate::callback::{UserData, with_function};
use crate::isolate::ivm_isolate_t;
use crate::reference::ivm_reference_t;
use crate::value::{self, Held, ivm_value_t};
use crate::{Result, args, boundary, give};

pub struct ivm_context_options_t(ContextOptions);

pub struct ivm_context_t(pub(crate) Context);

pub struct ivm_run_options_t(pub(crate) EvalOptions);

crate::deleters!(
    ivm_context_options_delete: ivm_context_options_t,
    ivm_context_delete: ivm_context_t,
    ivm_run_options_delete: ivm_run_options_t,
);

/// Where console output goes: `level` is an `IVM_CONSOLE_*`, `text` the line (`len` bytes).
pub type ivm_console_func_t = unsafe extern "C" fn(user_data: *mut c_void, level: u8, text: *const c_char, len: usize);

#[unsafe(no_mangle)]
pub extern "C" fn ivm_context_options_new() -> *mut ivm_context_options_t {
    give(ivm_context_options_t(ContextOptions::default()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_context_options_set_name(options: *mut ivm_context_options_t, name: *const c_char) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (options, name) = unsafe { (args::borrow_mut(options, "options")?, args::name(name, "name")?) };
        options.0.name = Some(name.to_owned());
        Ok(())
    })
}

/// Gives the context a `console` whose lines go to `sink`, on any thread, one at a time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_context_options_set_console(
    options: *mut ivm_context_options_t,
    sink: Option<ivm_console_func_t>,
    user_data: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(*mut c_void)>,
) -> *mut crate::ivm_error_t {
    let body = |sink: ivm_console_func_t, user_data: Arc<UserData>| {
        let options = unsafe { args::borrow_mut(options, "options") }?;
        let console = move |level: ConsoleLevel, line: &str| {
            let level = match level {
                ConsoleLevel::Log => 0,
                ConsoleLevel::Warn => 1,
                ConsoleLevel::Error => 2,
            };
            // SAFETY: the embedder's function, with the data it gave for it.
            unsafe { sink(user_data.get(), level, line.as_ptr().cast(), line.len()) }
        };
        options.0 = std::mem::take(&mut options.0).console(console);
        Ok(())
    };
    unsafe { with_function(sink, "sink", user_data, finalizer, body) }
}

/// Makes a context. `options` may be NULL; it stays the caller's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_create_context(
    isolate: *const ivm_isolate_t,
    options: *const ivm_context_options_t,
    out: *mut *mut ivm_context_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (isolate, out) = unsafe { (args::borrow(isolate, "isolate")?, args::out(out, "out")?) };
        // SAFETY: NULL or options.
        let options = unsafe { options.as_ref() }.map(|o| o.0.clone()).unwrap_or_default();
        *out = give(ivm_context_t(isolate.0.create_context_with(options)?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_context_global(context: *const ivm_context_t, out: *mut *mut ivm_reference_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (context, out) = unsafe { (args::borrow(context, "context")?, args::out(out, "out")?) };
        *out = give(ivm_reference_t(context.0.global()?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn ivm_run_options_new() -> *mut ivm_run_options_t {
    give(ivm_run_options_t(EvalOptions::default()))
}

/// Applies one setter to run options the caller lends.
unsafe fn change(options: *mut ivm_run_options_t, set: impl FnOnce(&mut EvalOptions) -> Result<()>) -> *mut crate::ivm_error_t {
    unsafe { crate::change(options, |o| set(&mut o.0)) }
}

/// 0: no timeout of the run's own (the isolate's default timeout applies).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_run_options_set_timeout_ms(options: *mut ivm_run_options_t, ms: u64) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.timeout = args::millis(ms);
            Ok(())
        })
    }
}

/// 0: no CPU limit of the run's own (the isolate's CPU budget, if any, applies).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_run_options_set_cpu_limit_ms(options: *mut ivm_run_options_t, ms: u64) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.cpu_limit = args::millis(ms);
            Ok(())
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_run_options_set_promise(options: *mut ivm_run_options_t, promise: bool) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.promise = promise;
            Ok(())
        })
    }
}

/// `IVM_TRANSFER_*` as a Rust `Transfer`.
pub(crate) fn transfer(transfer: u8) -> Result<Transfer> {
    Ok(match transfer {
        0 => Transfer::Auto,
        1 => Transfer::Copy,
        2 => Transfer::ExternalCopy,
        3 => Transfer::Reference,
        other => return Err(engine::Error::InvalidArgument(format!("{other} is not an IVM_TRANSFER_* value"))),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_run_options_set_transfer(options: *mut ivm_run_options_t, how: u8) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.transfer = transfer(how)?;
            Ok(())
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_run_options_set_filename(options: *mut ivm_run_options_t, filename: *const c_char) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |o| {
            o.origin = ScriptOrigin::new(args::name(filename, "filename")?);
            Ok(())
        })
    }
}

/// Run options the caller lends, or the defaults for NULL.
pub(crate) unsafe fn run_options(options: *const ivm_run_options_t) -> EvalOptions {
    // SAFETY: NULL or options.
    unsafe { options.as_ref() }.map(|o| o.0.clone()).unwrap_or_default()
}

/// Gives a run's result to the caller.
pub(crate) fn give_result(out: &mut *mut ivm_value_t, result: Transferred) {
    *out = give(ivm_value_t(Held::from(result)));
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_context_eval(
    context: *const ivm_context_t,
    code: *const c_char,
    len: usize,
    options: *const ivm_run_options_t,
    out: *mut *mut ivm_value_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (context, code) = unsafe { (args::borrow(context, "context")?, args::text(code, len, "code")?) };
        let out = unsafe { args::out(out, "out") }?;
        give_result(out, context.0.eval_with::<Transferred>(code, &unsafe { run_options(options) })?);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_context_eval_closure(
    context: *const ivm_context_t,
    code: *const c_char,
    len: usize,
    args: *const *const ivm_value_t,
    nargs: usize,
    options: *const ivm_run_options_t,
    out: *mut *mut ivm_value_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (context, code) = unsafe { (args::borrow(context, "context")?, args::text(code, len, "code")?) };
        let (list, out) = unsafe { (value::args_of(args, nargs)?, args::out(out, "out")?) };
        give_result(out, context.0.eval_closure::<Transferred>(code, list, &unsafe { run_options(options) })?);
        Ok(())
    })
}
