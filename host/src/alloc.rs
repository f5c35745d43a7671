//! [`BoundedAllocator`]: a global allocator that lets ivm bound the one host-side step it
//! cannot bound otherwise, V8's serializer.
//!
//! Copying a value out of an isolate starts with V8's `ValueSerializer`, which writes into a
//! buffer it grows with plain reallocation, through Rust's global allocator, with no hook to
//! refuse. It writes a string again at every place the string is held, so a 16 MB isolate can
//! hold an array of a million references to one 1 MB string and have the serializer ask the
//! host for a terabyte. ivm bounds everything it makes of the bytes afterwards (see
//! `value::wire::Budget`); this allocator bounds the buffer itself: while ivm serializes a
//! value on a thread, an allocation on that thread larger than the value's budget fails, which
//! V8 reports as a clone error and ivm as [`Error::Conversion`](crate::Error::Conversion)
//! ("the value is too large to copy out of its isolate").
//!
//! It is opt-in, since only the final binary chooses the global allocator: the `ivm` binary
//! (and its worker processes) installs it; an embedder that copies untrusted values out of
//! isolates in process should too. Without it, the serializer's buffer is bounded only by
//! the machine (process isolation bounds it by the worker's memory ceiling).
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: ivm::BoundedAllocator = ivm::BoundedAllocator::new();
//! # fn main() {}
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, with the bound ivm sets while it serializes a value (see the
/// [module documentation](self)).
#[derive(Debug, Default, Clone, Copy)]
pub struct BoundedAllocator {
    _private: (),
}

thread_local! {
    /// The largest allocation allowed on this thread right now.
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// An allocation was refused since the limit was set.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

impl BoundedAllocator {
    pub const fn new() -> BoundedAllocator {
        BoundedAllocator { _private: () }
    }
}

/// Whether an allocation of `size` bytes may go ahead.
fn allowed(size: usize) -> bool {
    // `try_with`: a thread being torn down has no limit.
    let limit = LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    if size <= limit {
        return true;
    }
    let _ = REFUSED.try_with(|refused| refused.set(true));
    false
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with null as the
// `GlobalAlloc` contract allows. (A refused `realloc` leaves the old block in place; the
// v8 crate's serializer then frees it with the size it asked for, which `System` ignores.)
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !allowed(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as given.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` with allocations on this thread limited to `limit` bytes each (when the
/// [`BoundedAllocator`] is installed). Returns whether one was refused.
pub(crate) fn limited<R>(limit: usize, f: impl FnOnce() -> R) -> (R, bool) {
    let restore = Restore(LIMIT.replace(limit), REFUSED.replace(false));
    let result = f();
    let refused = REFUSED.get();
    drop(restore);
    (result, refused)
}

/// Runs `f` without the limit of an enclosing [`limited`] (host code called back from inside
/// it: a host function, a console sink).
pub(crate) fn unlimited<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(LIMIT.replace(usize::MAX), REFUSED.get());
    f()
}

/// Puts the outer limit back, also when `f` panics.
struct Restore(usize, bool);

impl Drop for Restore {
    fn drop(&mut self) {
        LIMIT.set(self.0);
        REFUSED.set(self.1);
    }
}
