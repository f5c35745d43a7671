//! Startup snapshots: `ivm_snapshot_options_t` (scripts and limits), `ivm_snapshot_t` (a sealed
//! snapshot, made in a worker process or opened from bytes).

use std::ffi::c_char;

use engine::{CacheKey, ScriptOrigin, Snapshot, SnapshotBuilder};

use crate::bytes::ivm_bytes_t;
use crate::{Result, args, boundary, give};

pub struct ivm_snapshot_options_t(SnapshotBuilder);

pub struct ivm_snapshot_t(pub(crate) Snapshot);

crate::deleters!(ivm_snapshot_options_delete: ivm_snapshot_options_t, ivm_snapshot_delete: ivm_snapshot_t);

#[unsafe(no_mangle)]
pub extern "C" fn ivm_snapshot_options_new() -> *mut ivm_snapshot_options_t {
    give(ivm_snapshot_options_t(Snapshot::builder()))
}

/// Applies one setter to options the caller lends; a setter that fails leaves them as they were.
unsafe fn change(options: *mut ivm_snapshot_options_t, set: impl FnOnce(SnapshotBuilder) -> Result<SnapshotBuilder>) -> *mut crate::ivm_error_t {
    let rebuild = |options: &mut ivm_snapshot_options_t| {
        options.0 = set(options.0.clone())?;
        Ok(())
    };
    unsafe { crate::change(options, rebuild) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_options_add_script(
    options: *mut ivm_snapshot_options_t,
    code: *const c_char,
    len: usize,
    filename: *const c_char,
) -> *mut crate::ivm_error_t {
    unsafe { change(options, |b| Ok(b.script(args::text(code, len, "code")?, ScriptOrigin::new(args::name(filename, "filename")?)))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_options_set_warmup(options: *mut ivm_snapshot_options_t, code: *const c_char, len: usize) -> *mut crate::ivm_error_t {
    unsafe { change(options, |b| Ok(b.warmup(args::text(code, len, "code")?))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_options_set_memory_limit(options: *mut ivm_snapshot_options_t, mb: u64) -> *mut crate::ivm_error_t {
    unsafe { change(options, |b| Ok(b.memory_limit(mb))) }
}

/// 0: no limit.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_options_set_timeout_ms(options: *mut ivm_snapshot_options_t, ms: u64) -> *mut crate::ivm_error_t {
    unsafe { change(options, |b| Ok(b.timeout(args::millis(ms)))) }
}

/// The key the snapshot is sealed with (at least 32 bytes); default: this process's key.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_options_set_key(options: *mut ivm_snapshot_options_t, secret: *const u8, len: usize) -> *mut crate::ivm_error_t {
    unsafe { change(options, |b| Ok(b.key(CacheKey::new(args::bytes(secret, len, "secret")?)?))) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_options_set_worker_program(options: *mut ivm_snapshot_options_t, path: *const c_char) -> *mut crate::ivm_error_t {
    unsafe { change(options, |b| Ok(b.pool(&crate::workers::pool_for(args::name(path, "path")?)))) }
}

/// Runs the scripts in a new worker process and seals what they left. `options` stays the
/// caller's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_new(options: *const ivm_snapshot_options_t, out: *mut *mut ivm_snapshot_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (options, out) = unsafe { (args::borrow(options, "options")?, args::out(out, "out")?) };
        *out = give(ivm_snapshot_t(options.0.clone().create()?));
        Ok(())
    })
}

/// The key `secret` names, or this process's key for NULL.
unsafe fn key(secret: *const u8, len: usize) -> Result<CacheKey> {
    if secret.is_null() { CacheKey::for_this_process() } else { CacheKey::new(unsafe { args::bytes(secret, len, "secret") }?) }
}

/// Opens a snapshot `ivm_snapshot_sealed` gave, checking its seal under the key.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_open(
    sealed: *const u8,
    len: usize,
    secret: *const u8,
    secret_len: usize,
    out: *mut *mut ivm_snapshot_t,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (sealed, out) = unsafe { (args::bytes(sealed, len, "sealed")?, args::out(out, "out")?) };
        *out = give(ivm_snapshot_t(Snapshot::open(sealed, &unsafe { key(secret, secret_len) }?)?));
        Ok(())
    })
}

/// The sealed snapshot, to store (a copy).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_snapshot_sealed(snapshot: *const ivm_snapshot_t, out: *mut ivm_bytes_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (snapshot, out) = unsafe { (args::borrow(snapshot, "snapshot")?, args::out(out, "out")?) };
        ivm_bytes_t::give(out, snapshot.0.sealed().to_vec());
        Ok(())
    })
}
