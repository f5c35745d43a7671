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

    /// Makes the C allocator give large freed blocks back to the system at once. Call it once
    /// at start in a host that copies hostile values out of isolates (the `ivm` binary, its
    /// workers and `ivm-bench` do).
    ///
    /// Copying a value out may take the host up to twice the isolate's memory limit for a
    /// moment (see `value::wire::Budget`), in blocks of up to that size. glibc's malloc
    /// serves such blocks from the system (`mmap`) only until one is freed: then it raises its
    /// threshold to that size and keeps later ones in its per-thread arenas, where the freed
    /// memory stays in the process. Under a mixed hostile load on a pool of threads the host's
    /// RSS then climbs for minutes (a 3-minute soak: 233 MB to 376 MB; with this call,
    /// 125 MB to 135 MB). This fixes the threshold at 256 KiB. Elsewhere (other C libraries,
    /// or a host with its own global allocator) it does nothing.
    pub fn free_large_blocks_eagerly() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            /// Blocks at least this large go straight to the system and back.
            const LARGE_BLOCK: libc::c_int = 256 << 10;
            // SAFETY: `mallopt` only changes a tuning parameter; glibc accepts it at any time.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK) };
        }
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
