//! Which isolate the current thread is inside, and how calls between isolates nest.
//!
//! A thread enters an isolate by locking it (`v8::Locker`). While JavaScript runs there it may
//! call a host function, which may call into an isolate again:
//!
//! - **the same isolate** (JS → host → same isolate): the call runs inline, on the isolate the
//!   thread already holds, in a nested handle scope;
//! - **another isolate** (A → host → B, also A → B → A): the thread steps out of A
//!   (`Locker::unlock`, which archives A's state) and locks B. Stepping out before locking
//!   means a thread never waits for one isolate while holding another, so two isolates calling
//!   each other from two threads cannot deadlock. While A is stepped out of, other threads
//!   may use it, as they may between any two calls.
//!
//! The stack of frames is per thread. A frame's pointers come from the `Locker` and the
//! `IsolateInner` of an enclosing call on this same thread, which outlives the frame.

use std::cell::{Cell, RefCell};

use super::IsolateInner;

#[derive(Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) inner: *const IsolateInner,
    pub(crate) isolate: *mut v8::Isolate,
    /// The locker that holds `isolate` (shared by inline frames on top of it).
    pub(crate) locker: *mut v8::Locker<'static>,
    /// Whether this is an async operation from the isolate's queue.
    pub(crate) in_job: bool,
}

thread_local! {
    /// `None` marks a step-out: nothing is entered above it.
    static FRAMES: RefCell<Vec<Option<Frame>>> = const { RefCell::new(Vec::new()) };
    /// The isolate whose async operation this thread is blocked in (a blocking host function),
    /// if any. Async operations submitted to it from here would wait behind the blocked one.
    static WAITING_IN_JOB: Cell<*const IsolateInner> = const { Cell::new(std::ptr::null()) };
}

/// Marks this thread as blocked in `frame`'s operation until the guard drops.
pub(crate) fn waiting_in(frame: Frame) -> impl Drop {
    let previous = WAITING_IN_JOB.replace(if frame.in_job { frame.inner } else { std::ptr::null() });
    Restore(previous)
}

/// Whether this thread is blocked inside an async operation of `inner`.
pub(crate) fn is_waiting_in_job_of(inner: *const IsolateInner) -> bool {
    std::ptr::eq(WAITING_IN_JOB.get(), inner)
}

struct Restore(*const IsolateInner);

impl Drop for Restore {
    fn drop(&mut self) {
        WAITING_IN_JOB.set(self.0);
    }
}

/// The isolate this thread is inside right now, if any.
pub(crate) fn current() -> Option<Frame> {
    FRAMES.with_borrow(|frames| frames.last().copied().flatten())
}

/// Runs `f` with `frame` on top of this thread's stack.
pub(crate) fn within<R>(frame: Frame, f: impl FnOnce() -> R) -> R {
    FRAMES.with_borrow_mut(|frames| frames.push(Some(frame)));
    let _pop = Pop;
    f()
}

/// Steps out of the isolate `frame` is inside for the duration of `f`: releases its lock and
/// pauses its clock (time spent in other isolates is not its CPU time).
pub(crate) fn step_out<R>(frame: Frame, f: impl FnOnce() -> R) -> R {
    // SAFETY: see the module comment; the frame belongs to an enclosing call on this thread.
    let (inner, locker) = unsafe { (&*frame.inner, &mut *frame.locker) };
    inner.clock.stop();
    FRAMES.with_borrow_mut(|frames| frames.push(None));
    let result = {
        let _pop = Pop;
        locker.unlock(f)
    };
    inner.clock.start();
    result
}

struct Pop;

impl Drop for Pop {
    fn drop(&mut self) {
        FRAMES.with_borrow_mut(|frames| frames.pop());
    }
}
