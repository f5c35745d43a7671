//! `ivm_bytes_t`: bytes libivm gives the caller (JSON, MessagePack, profiles, sealed blobs),
//! freed with `ivm_bytes_delete`. A NUL follows the last byte (not counted in `size`), so text
//! can be used as a C string when it holds no NUL of its own.

use std::ptr;

use crate::quietly;

#[repr(C)]
pub struct ivm_bytes_t {
    pub data: *mut u8,
    pub size: usize,
}

impl ivm_bytes_t {
    /// Gives `bytes` to the caller through `out`.
    pub(crate) fn give(out: &mut ivm_bytes_t, mut bytes: Vec<u8>) {
        bytes.push(0);
        let size = bytes.len() - 1;
        *out = ivm_bytes_t { data: Box::into_raw(bytes.into_boxed_slice()).cast(), size };
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_bytes_delete(bytes: *mut ivm_bytes_t) {
    // SAFETY: the header's contract: NULL, zeroed, or filled in by libivm and deleted once.
    let Some(bytes) = (unsafe { bytes.as_mut() }) else { return };
    if bytes.data.is_null() {
        return;
    }
    let (data, size) = (bytes.data, bytes.size);
    *bytes = ivm_bytes_t { data: ptr::null_mut(), size: 0 };
    // SAFETY: made by `give`: a boxed slice of `size` bytes and the NUL after them.
    quietly((), || drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(data, size + 1)) }));
}
