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
//!   may use it (its queued jobs run), as they may between any two calls.
//!
//! The stack of frames is per thread. A frame's pointers come from the `Locker` and the
//! `IsolateInner` of an enclosing call on this same thread, which outlives the frame.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use super::IsolateInner;

#[derive(Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) inner: *const IsolateInner,
    pub(crate) isolate: *mut v8::Isolate,
    /// The locker that holds `isolate` (shared by inline frames on top of it).
    pub(crate) locker: *mut v8::Locker<'static>,
}

thread_local! {
    /// `None` marks a step-out: nothing is entered above it.
    static FRAMES: RefCell<Vec<Option<Frame>>> = const { RefCell::new(Vec::new()) };
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

/// Steps out of the isolate `frame` is inside for the duration of `f`: releases its lock
/// (other threads may hold it meanwhile, and its queued jobs run) and pauses its clock (time
/// spent in other isolates is not its CPU time). A run of this thread that ran out of time
/// meanwhile is terminated when the thread is back.
pub(crate) fn step_out<R>(frame: Frame, f: impl FnOnce() -> R) -> R {
    step_out_as(frame, false, f)
}

/// [`step_out`] to wait for something only other threads can bring about (a run's promise):
/// the runs of this thread do not count as able to settle anything meanwhile.
pub(crate) fn step_out_to_wait<R>(frame: Frame, f: impl FnOnce() -> R) -> R {
    step_out_as(frame, true, f)
}

fn step_out_as<R>(frame: Frame, waiting: bool, f: impl FnOnce() -> R) -> R {
    // SAFETY: see the module comment; the frame belongs to an enclosing call on this thread.
    let (inner, locker, isolate) = unsafe { (&*frame.inner, &mut *frame.locker, &mut *frame.isolate) };
    inner.clock.stop();
    let blocked = if waiting { crate::run::on_this_thread(frame.inner) } else { 0 };
    inner.runs_on_stack.fetch_sub(blocked, Ordering::SeqCst);
    inner.check_parked(isolate);
    FRAMES.with_borrow_mut(|frames| frames.push(None));
    let result = {
        let _pop = Pop;
        locker.unlock(|| {
            inner.let_go();
            let _hold = HoldAgain(inner);
            f()
        })
    };
    inner.runs_on_stack.fetch_add(blocked, Ordering::SeqCst);
    inner.clock.start();
    if crate::run::fired_on_this_thread(frame.inner) {
        // SAFETY: the isolate is held again by this thread.
        unsafe { &*frame.isolate }.terminate_execution();
    }
    result
}

/// Holds the isolate again (before V8's lock is taken back) when dropped.
struct HoldAgain<'a>(&'a IsolateInner);

impl Drop for HoldAgain<'_> {
    fn drop(&mut self) {
        self.0.hold();
    }
}

struct Pop;

impl Drop for Pop {
    fn drop(&mut self) {
        FRAMES.with_borrow_mut(|frames| frames.pop());
    }
}
