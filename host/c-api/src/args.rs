//! Reading C arguments: NULL where a value is required, and text that is not UTF-8, are
//! `IVM_ERROR_INVALID_ARGUMENT` errors naming the argument.

use std::ffi::{CStr, c_char};
use std::time::Duration;

use engine::Error;

use crate::Result;

fn null(name: &str) -> Error {
    Error::InvalidArgument(format!("`{name}` is NULL"))
}

/// A limit in milliseconds where 0 means none (timeouts, CPU limits and budgets).
pub(crate) fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// A handle or struct the caller lends.
pub(crate) unsafe fn borrow<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the caller passes NULL or a valid pointer (the header's contract).
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

/// A handle the caller lends for changing (options).
pub(crate) unsafe fn borrow_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: as for `borrow`.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(name))
}

/// Where a result goes: checked before the operation runs, written after it succeeded.
pub(crate) unsafe fn out<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: as for `borrow`; nothing is read through it.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(name))
}

/// `len` bytes at `ptr` (which may be NULL only when `len` is 0).
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: the caller lends `len` readable bytes at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// UTF-8 text given as a pointer and a length (code, keys, JSON: they may hold NUL).
pub(crate) unsafe fn text<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<&'a str> {
    // SAFETY: as for `bytes`.
    let bytes = unsafe { bytes(ptr.cast(), len, name) }?;
    std::str::from_utf8(bytes).map_err(|e| Error::InvalidArgument(format!("`{name}` is not UTF-8: {e}")))
}

/// UTF-8 text given NUL-terminated (names, file names, titles).
pub(crate) unsafe fn name<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: the caller lends a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|e| Error::InvalidArgument(format!("`{name}` is not UTF-8: {e}")))
}

/// A list of `len` borrowed handles.
pub(crate) unsafe fn list<'a, T>(ptr: *const *const T, len: usize, name: &str) -> Result<Vec<&'a T>> {
    let size = len.checked_mul(size_of::<*const T>()).ok_or_else(|| Error::InvalidArgument(format!("`{name}`: {len} is too many")))?;
    // SAFETY: the caller lends `len` pointers at `ptr`.
    let pointers = unsafe { bytes(ptr.cast::<u8>(), size, name) }?;
    let pointers = pointers.as_ptr().cast::<*const T>();
    (0..len)
        // SAFETY: in bounds, and each element is NULL or a handle.
        .map(|i| unsafe { borrow(pointers.add(i).read_unaligned(), name) })
        .collect()
}
