//! The memory limit: three guards that together keep an isolate inside its budget without
//! letting V8 abort the process.
//!
//! 1. **Heap.** V8's old generation is capped at the limit. When V8 comes near it, the
//!    near-heap-limit callback marks the isolate as over its limit, asks V8 to terminate the
//!    running script and grants temporary headroom, so that V8 unwinds instead of calling
//!    `FatalProcessOutOfMemory`. The isolate is disposed once the call returns.
//! 2. **ArrayBuffers.** Backing stores come from a counting allocator that refuses an
//!    allocation which would take heap + buffers over the limit; V8 turns the refusal into
//!    `RangeError: Array buffer allocation failed`.
//! 3. **After each full GC** the heap plus external memory (ArrayBuffers and WebAssembly
//!    memories) is compared with the limit, which catches a heap that stays over it and
//!    WebAssembly memories, which V8 reserves itself, outside the allocator. Growing a
//!    WebAssembly memory raises V8's external-memory count, which brings on that GC.
//!
//! A WebAssembly memory is reserved without asking the allocator, so it can briefly exceed the
//! limit: V8 schedules the GC when the memory is announced and the script is terminated at its
//! next interrupt check, before it can write to the memory.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Headroom granted each time V8 reaches the heap limit while termination is pending.
const HEADROOM_STEP: usize = 256 << 20;
/// Most headroom granted in total; past it V8 would have to abort, so it gets no more. Builtins
/// that ignore termination (`Array.prototype.fill` on a huge dictionary array) need about
/// 512 MiB before they give up with a RangeError.
const HEADROOM_MAX: usize = 2 << 30;
/// Small ArrayBuffer allocations are never refused: V8 does not expect them to fail in every
/// path. Going over the limit with one terminates the script instead (isolated-vm does the same).
const ALWAYS_GRANTED: usize = 64;

pub(crate) struct MemoryGuard {
    limit: usize,
    handle: OnceLock<v8::IsolateHandle>,
    hit: AtomicBool,
    headroom: AtomicUsize,
    /// Bytes held by ArrayBuffer backing stores from this isolate's allocator.
    array_buffers: AtomicUsize,
    /// Heap in use after the last full GC.
    heap_used: AtomicUsize,
    /// Bytes of ExternalCopies made from this isolate and not yet released.
    held_copies: AtomicUsize,
}

impl MemoryGuard {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryGuard {
            limit,
            handle: OnceLock::new(),
            hit: AtomicBool::new(false),
            headroom: AtomicUsize::new(0),
            array_buffers: AtomicUsize::new(0),
            heap_used: AtomicUsize::new(0),
            held_copies: AtomicUsize::new(0),
        })
    }

    /// The allocator for `CreateParams`; it holds a reference to this guard.
    pub(crate) fn allocator(self: &Arc<Self>) -> v8::UniqueRef<v8::Allocator> {
        // SAFETY: the pointer comes from `Arc::into_raw` and is released by `drop_guard`
        // exactly once, when V8 drops the allocator.
        unsafe { v8::new_rust_allocator(Arc::into_raw(self.clone()), &ALLOCATOR) }
    }

    /// Installs the heap guards on a newly created isolate.
    pub(crate) fn install(self: &Arc<Self>, isolate: &mut v8::Isolate) {
        let _ = self.handle.set(isolate.thread_safe_handle());
        // Code that copies data in finds the guard through the isolate (see `of`).
        isolate.set_slot(self.clone());
        let data = Arc::as_ptr(self) as *mut c_void;
        // The isolate keeps `data` for its lifetime: `IsolateInner` owns an `Arc` of this guard
        // and drops it only after the V8 isolate is gone.
        isolate.add_near_heap_limit_callback(near_heap_limit, data);
        isolate.add_gc_epilogue_callback(after_full_gc, data, v8::GCType::kGCTypeMarkSweepCompact);
    }

    /// The guard of a locked isolate.
    pub(crate) fn of(isolate: &v8::Isolate) -> Arc<MemoryGuard> {
        isolate.get_slot::<Arc<MemoryGuard>>().expect("every isolate has a memory guard").clone()
    }

    /// A backing store holding `bytes`, charged to this isolate's limit until V8 frees it.
    /// `None` if the bytes would take the isolate over its limit. Host data copied in goes
    /// through here rather than through `v8::ArrayBuffer::new`, which aborts the process when
    /// the allocator refuses.
    pub(crate) fn adopt(self: &Arc<Self>, bytes: Vec<u8>) -> Option<v8::UniqueRef<v8::BackingStore>> {
        let len = bytes.len();
        if !self.reserve(len) {
            return None;
        }
        let data = Box::into_raw(bytes.into_boxed_slice()) as *mut u8;
        let owner = Arc::into_raw(self.clone()) as *mut c_void;
        // SAFETY: `data` is `len` bytes owned by nobody else; `release_adopted` frees it and
        // the guard reference exactly once, when V8 drops the backing store.
        Some(unsafe { v8::ArrayBuffer::new_backing_store_from_ptr(data as *mut c_void, len, release_adopted, owner) })
    }

    /// Bytes of ExternalCopies this isolate made that are still held; they count against its
    /// limit, as isolated-vm reports them to the creating isolate.
    pub(crate) fn charge_copy(&self, bytes: usize) {
        self.held_copies.fetch_add(bytes, Ordering::SeqCst);
    }

    pub(crate) fn refund_copy(&self, bytes: usize) {
        self.held_copies.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// The memory limit, in bytes: also the budget of what the host makes from the
    /// isolate's data (copies out, error descriptions).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `bytes` more would still fit under the limit (at the last measured heap size).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        self.used() + bytes <= self.limit
    }

    fn used(&self) -> usize {
        self.heap_used.load(Ordering::Relaxed)
            + self.array_buffers.load(Ordering::Relaxed)
            + self.held_copies.load(Ordering::Relaxed)
    }

    /// Whether the isolate went over its limit. Once set, the isolate is disposed.
    pub(crate) fn hit(&self) -> bool {
        self.hit.load(Ordering::SeqCst)
    }

    /// Bytes held by ArrayBuffers of this isolate.
    pub(crate) fn array_buffer_bytes(&self) -> usize {
        self.array_buffers.load(Ordering::Relaxed)
    }

    fn over_limit(&self) {
        self.hit.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.get() {
            handle.terminate_execution();
        }
    }
}

/// Memory the isolate holds outside its heap: ArrayBuffers and WebAssembly memories.
///
/// WebAssembly memories bypass the ArrayBuffer allocator; V8 only announces them in its
/// external-memory counter (which also drives its GC scheduling, so growing a memory brings on
/// the full GC whose epilogue checks the limit). The counter is read by adjusting it by zero.
pub(crate) fn external_bytes(isolate: &mut v8::Isolate, guard: &MemoryGuard) -> usize {
    let announced = usize::try_from(isolate.adjust_amount_of_external_allocated_memory(0)).unwrap_or(0);
    announced.max(guard.array_buffer_bytes()) + guard.held_copies.load(Ordering::Relaxed)
}

extern "C" fn near_heap_limit(data: *mut c_void, current: usize, _initial: usize) -> usize {
    // SAFETY: `data` is the guard registered in `install`, alive as long as the isolate.
    let guard = unsafe { &*(data as *const MemoryGuard) };
    guard.over_limit();
    let granted = guard.headroom.load(Ordering::SeqCst);
    if granted >= HEADROOM_MAX {
        return current;
    }
    guard.headroom.store(granted + HEADROOM_STEP, Ordering::SeqCst);
    current + HEADROOM_STEP
}

unsafe extern "C" fn after_full_gc(
    mut isolate: v8::UnsafeRawIsolatePtr,
    _: v8::GCType,
    _: v8::GCCallbackFlags,
    data: *mut c_void,
) {
    // SAFETY: as in `near_heap_limit`; V8 calls this on the isolate's thread with the isolate
    // entered, where reading heap statistics is allowed.
    let guard = unsafe { &*(data as *const MemoryGuard) };
    let isolate = unsafe { v8::Isolate::ref_from_raw_isolate_ptr_mut(&mut isolate) };
    let stats = isolate.get_heap_statistics();
    let used = stats.used_heap_size();
    guard.heap_used.store(used, Ordering::Relaxed);
    if used + external_bytes(isolate, guard) > guard.limit {
        guard.over_limit();
    }
}

static ALLOCATOR: v8::RustAllocatorVtable<MemoryGuard> = v8::RustAllocatorVtable {
    allocate: allocate_zeroed,
    allocate_uninitialized,
    free,
    drop: drop_guard,
};

impl MemoryGuard {
    fn reserve(&self, len: usize) -> bool {
        let before = self.array_buffers.fetch_add(len, Ordering::SeqCst);
        let others = self.heap_used.load(Ordering::Relaxed) + self.held_copies.load(Ordering::Relaxed);
        if before + len + others <= self.limit {
            return true;
        }
        if len <= ALWAYS_GRANTED {
            self.over_limit();
            return true;
        }
        self.array_buffers.fetch_sub(len, Ordering::SeqCst);
        false
    }
}

unsafe extern "C" fn allocate_zeroed(guard: &MemoryGuard, len: usize) -> *mut c_void {
    if !guard.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: plain C allocation; freed by `free` with the same length.
    let ptr = unsafe { libc::calloc(len.max(1), 1) };
    if ptr.is_null() {
        guard.array_buffers.fetch_sub(len, Ordering::SeqCst);
    }
    ptr
}

unsafe extern "C" fn allocate_uninitialized(guard: &MemoryGuard, len: usize) -> *mut c_void {
    if !guard.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: as above.
    let ptr = unsafe { libc::malloc(len.max(1)) };
    if ptr.is_null() {
        guard.array_buffers.fetch_sub(len, Ordering::SeqCst);
    }
    ptr
}

unsafe extern "C" fn free(guard: &MemoryGuard, data: *mut c_void, len: usize) {
    guard.array_buffers.fetch_sub(len, Ordering::SeqCst);
    // SAFETY: `data` came from `allocate_*` above.
    unsafe { libc::free(data) }
}

unsafe extern "C" fn release_adopted(data: *mut c_void, len: usize, owner: *mut c_void) {
    // SAFETY: the pointers made in `adopt`, handed back once by V8.
    let guard = unsafe { Arc::from_raw(owner as *const MemoryGuard) };
    guard.array_buffers.fetch_sub(len, Ordering::SeqCst);
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data as *mut u8, len)) });
}

unsafe extern "C" fn drop_guard(guard: *const MemoryGuard) {
    // SAFETY: balances the `Arc::into_raw` in `allocator`.
    drop(unsafe { Arc::from_raw(guard) });
}
