//! Isolates and their options: `ivm_isolate_options_t`, `ivm_isolate_t`.

use std::ffi::c_char;

use engine::{CacheKey, Isolate, IsolateOptions, Isolation};

use crate::bytes::ivm_bytes_t;
use crate::snapshot::ivm_snapshot_t;
use crate::{Result, args, boundary, give, quietly};

pub struct ivm_isolate_options_t(pub(crate) IsolateOptions);

pub struct ivm_isolate_t(pub(crate) Isolate);

crate::deleters!(ivm_isolate_options_delete: ivm_isolate_options_t, ivm_isolate_delete: ivm_isolate_t);

#[unsafe(no_mangle)]
pub extern "C" fn ivm_isolate_options_new() -> *mut ivm_isolate_options_t {
    give(ivm_isolate_options_t(IsolateOptions::default()))
}

/// Applies one setter to options the caller lends; a setter that fails leaves them as they were.
unsafe fn change(options: *mut ivm_isolate_options_t, set: impl FnOnce(IsolateOptions) -> Result<IsolateOptions>) -> *mut crate::ivm_error_t {
    let rebuild = |options: &mut ivm_isolate_options_t| {
        options.0 = set(options.0.clone())?;
        Ok(())
    };
    unsafe { crate::change(options, rebuild) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_memory_limit(options: *mut ivm_isolate_options_t, mb: u64) -> *mut crate::ivm_error_t {
    unsafe { change(options, |o| Ok(o.memory_limit(mb))) }
}

/// `IVM_ISOLATION_*`: 0 follows the IVM_ISOLATION environment variable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_isolation(options: *mut ivm_isolate_options_t, isolation: u8) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |mut o| {
            o.isolation = match isolation {
                0 => None,
                1 => Some(Isolation::InProcess),
                2 => Some(Isolation::Process),
                other => return Err(engine::Error::InvalidArgument(format!("{other} is not an IVM_ISOLATION_* value"))),
            };
            Ok(o)
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_worker_program(options: *mut ivm_isolate_options_t, path: *const c_char) -> *mut crate::ivm_error_t {
    unsafe { change(options, |o| Ok(o.pool(&crate::workers::pool_for(args::name(path, "path")?)))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_default_timeout(options: *mut ivm_isolate_options_t, ms: u64) -> *mut crate::ivm_error_t {
    unsafe { change(options, |o| Ok(o.default_timeout(args::millis(ms)))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_cpu_budget_ms(options: *mut ivm_isolate_options_t, ms: u64) -> *mut crate::ivm_error_t {
    unsafe { change(options, |o| Ok(o.cpu_budget(args::millis(ms)))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_inspector(options: *mut ivm_isolate_options_t, enabled: bool) -> *mut crate::ivm_error_t {
    unsafe {
        change(options, |mut o| {
            o.inspector = enabled;
            Ok(o)
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_code_cache_key(options: *mut ivm_isolate_options_t, secret: *const u8, len: usize) -> *mut crate::ivm_error_t {
    unsafe { change(options, |o| Ok(o.code_cache_key(CacheKey::new(args::bytes(secret, len, "secret")?)?))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_options_set_snapshot(options: *mut ivm_isolate_options_t, snapshot: *const ivm_snapshot_t) -> *mut crate::ivm_error_t {
    unsafe { change(options, |o| Ok(o.snapshot(args::borrow(snapshot, "snapshot")?.0.clone()))) }
}

/// Makes an isolate. `options` may be NULL (the defaults); it stays the caller's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_new(options: *const ivm_isolate_options_t, out: *mut *mut ivm_isolate_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let out = unsafe { args::out(out, "out") }?;
        // SAFETY: NULL or options.
        let options = unsafe { options.as_ref() }.map(|o| o.0.clone()).unwrap_or_default();
        *out = give(ivm_isolate_t(Isolate::new(options)?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_dispose(isolate: *const ivm_isolate_t) -> *mut crate::ivm_error_t {
    boundary(|| unsafe { args::borrow(isolate, "isolate") }?.0.dispose())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_is_disposed(isolate: *const ivm_isolate_t) -> bool {
    // SAFETY: the header's contract (NULL or an isolate).
    quietly(true, || unsafe { isolate.as_ref() }.is_none_or(|i| i.0.is_disposed()))
}

/// Reads a number about the isolate into `out`.
unsafe fn query<T>(isolate: *const ivm_isolate_t, out: *mut T, read: impl FnOnce(&Isolate) -> Result<T>) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (isolate, out) = unsafe { (args::borrow(isolate, "isolate")?, args::out(out, "out")?) };
        *out = read(&isolate.0)?;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_cpu_time_ns(isolate: *const ivm_isolate_t, out: *mut u64) -> *mut crate::ivm_error_t {
    unsafe { query(isolate, out, |i| Ok(i.cpu_time()?.as_nanos().try_into().unwrap_or(u64::MAX))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_wall_time_ns(isolate: *const ivm_isolate_t, out: *mut u64) -> *mut crate::ivm_error_t {
    unsafe { query(isolate, out, |i| Ok(i.wall_time()?.as_nanos().try_into().unwrap_or(u64::MAX))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_reference_count(isolate: *const ivm_isolate_t, out: *mut u64) -> *mut crate::ivm_error_t {
    unsafe { query(isolate, out, |i| Ok(i.reference_count()? as u64)) }
}

/// The worker's process id (0 for an isolate in this process).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_worker_pid(isolate: *const ivm_isolate_t) -> u32 {
    // SAFETY: the header's contract (NULL or an isolate).
    quietly(0, || unsafe { isolate.as_ref() }.and_then(|i| i.0.worker_pid()).unwrap_or(0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_sandbox(isolate: *const ivm_isolate_t, out: *mut ivm_bytes_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let isolate = unsafe { args::borrow(isolate, "isolate")? };
        let out = unsafe { args::out(out, "out") }?;
        let report = isolate.0.sandbox().map(|report| {
            let missing: Vec<_> = report.missing.iter().map(|(step, reason)| serde_json::json!({ "step": step.as_str(), "reason": reason })).collect();
            serde_json::json!({ "applied": report.applied.iter().map(|step| step.as_str()).collect::<Vec<_>>(), "missing": missing })
        });
        ivm_bytes_t::give(out, serde_json::to_vec(&report).map_err(|e| engine::Error::Conversion(e.to_string()))?);
        Ok(())
    })
}

/// ivm.h's `ivm_heap_statistics_t`.
#[repr(C)]
pub struct ivm_heap_statistics_t {
    total_heap_size: u64,
    total_heap_size_executable: u64,
    total_physical_size: u64,
    total_available_size: u64,
    used_heap_size: u64,
    heap_size_limit: u64,
    malloced_memory: u64,
    peak_malloced_memory: u64,
    externally_allocated_size: u64,
    number_of_native_contexts: u64,
    number_of_detached_contexts: u64,
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_heap_statistics(isolate: *const ivm_isolate_t, out: *mut ivm_heap_statistics_t) -> *mut crate::ivm_error_t {
    unsafe {
        query(isolate, out, |i| {
            let s = i.heap_statistics()?;
            Ok(ivm_heap_statistics_t {
                total_heap_size: s.total_heap_size as u64,
                total_heap_size_executable: s.total_heap_size_executable as u64,
                total_physical_size: s.total_physical_size as u64,
                total_available_size: s.total_available_size as u64,
                used_heap_size: s.used_heap_size as u64,
                heap_size_limit: s.heap_size_limit as u64,
                malloced_memory: s.malloced_memory as u64,
                peak_malloced_memory: s.peak_malloced_memory as u64,
                externally_allocated_size: s.externally_allocated_size as u64,
                number_of_native_contexts: s.number_of_native_contexts as u64,
                number_of_detached_contexts: s.number_of_detached_contexts as u64,
            })
        })
    }
}
