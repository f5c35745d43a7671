//! [`RunState`]: one run's state, shared by the stretches that run it, the timer that keeps
//! its deadline, and whoever waits for it; and the runs each thread is inside.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Deadlines;
use crate::watchdog::Timer;
use crate::error::Error;
use crate::isolate::IsolateInner;
use crate::sync::Mutex;

/// Why a waiting run was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Its promise settled.
    Settled,
    /// Its deadline passed.
    Fired,
    /// Nothing is left that could settle its promise.
    Abandoned,
    /// The isolate is gone.
    Gone,
}

/// [`RunState::fired`]'s values.
const NOT_FIRED: u8 = 0;
const TIMED_OUT: u8 = 1;
const OUT_OF_CPU: u8 = 2;

/// Who waits for a parked run.
enum Waiter {
    /// A thread blocked in a synchronous call.
    Thread(std::thread::Thread),
    /// The job that resumes an async operation.
    Job(Box<dyn FnOnce() + Send>),
}

#[derive(Default)]
struct WaitSlot {
    woken: Option<Wake>,
    waiter: Option<Waiter>,
}

/// Where a run's JavaScript runs (for the stack a timeout captures).
pub(crate) enum RunContext {
    /// The context behind a handle id of the isolate.
    Handle(u64),
    Global(v8::Global<v8::Context>),
    /// Wherever V8 runs it (a task).
    None,
}

/// One run: whether its deadline passed, where it is, and who waits for it.
///
/// A sync eval is short enough for the bookkeeping of its run to show, so a run state that
/// nothing holds any more is kept for the next run of the same isolate on the same thread, and
/// the counters only the thread holding the isolate changes are changed without atomic
/// read-modify-writes.
pub(crate) struct RunState {
    /// The isolate the run belongs to (to tell runs apart on a thread's stack).
    isolate: *const IsolateInner,
    pub(super) handle: v8::IsolateHandle,
    pub(super) deadlines: Arc<Deadlines>,
    /// The isolate's count of run stretches on stacks (changed by the thread holding it).
    isolate_on_stack: Arc<AtomicUsize>,
    /// Whether a limit stopped it: [`NOT_FIRED`], [`TIMED_OUT`] or [`OUT_OF_CPU`] (the first
    /// to fire stays).
    fired: AtomicU8,
    /// Stretches of this run on some thread's stack right now (0 while it waits; changed by
    /// the thread holding the isolate).
    on_stack: AtomicUsize,
    /// The run has ended: JavaScript it left behind runs under the isolate's default timeout.
    ended: AtomicBool,
    /// The context its JavaScript runs in, by handle id (0: none, or `context_global`).
    context_id: AtomicU64,
    context_global: Mutex<Option<v8::Global<v8::Context>>>,
    /// The stack when the timeout hit, if the run was on a thread then.
    pub(super) stack: Mutex<String>,
    /// Armed once the deadline has passed: the run is reported if it is still going a grace
    /// period later.
    pub(super) escalation: Mutex<Option<Timer>>,
    wait: Mutex<WaitSlot>,
    /// `stack`, `escalation`, `wait` or `context_global` was used: a reuse must clear them.
    used: AtomicBool,
}

// SAFETY: `isolate` is only compared, never dereferenced; the `Global` in `context_global` may
// move between threads and is only used with the isolate held.
unsafe impl Send for RunState {}
unsafe impl Sync for RunState {}

thread_local! {
    /// The runs this thread is inside, outermost first. Each is kept alive by the stretch that
    /// entered it (its `Run`, or the owner reference of a `Detached`) for as long as it is
    /// here.
    static RUNS: RefCell<Vec<*const RunState>> = const { RefCell::new(Vec::new()) };
    /// A run state nothing holds any more, for the next run on this thread.
    static SPARE: RefCell<Option<Arc<RunState>>> = const { RefCell::new(None) };
}

impl RunState {
    pub(super) fn new(inner: &IsolateInner, context: RunContext) -> Arc<RunState> {
        // Same isolate by its deadlines, which the spare keeps alive: an isolate made where a
        // dropped one was has the same address, and must not get the old one's state.
        let spare = SPARE.with_borrow_mut(Option::take).filter(|spare| Arc::ptr_eq(&spare.deadlines, &inner.deadlines) && is_unique(spare));
        let run = match spare {
            Some(spare) => {
                spare.reset();
                spare
            }
            None => Arc::new(RunState {
                isolate: inner,
                handle: inner.thread_safe_handle(),
                deadlines: inner.deadlines.clone(),
                isolate_on_stack: inner.runs_on_stack.clone(),
                fired: AtomicU8::new(NOT_FIRED),
                on_stack: AtomicUsize::new(0),
                ended: AtomicBool::new(false),
                context_id: AtomicU64::new(0),
                context_global: Mutex::default(),
                stack: Mutex::default(),
                escalation: Mutex::default(),
                wait: Mutex::default(),
                used: AtomicBool::new(false),
            }),
        };
        match context {
            RunContext::Handle(id) => run.context_id.store(id, Ordering::Relaxed),
            RunContext::Global(global) => {
                run.used.store(true, Ordering::Relaxed);
                *run.context_global.lock() = Some(global);
            }
            RunContext::None => {}
        }
        run
    }

    /// Makes a run state nothing else holds new again.
    fn reset(&self) {
        self.fired.store(NOT_FIRED, Ordering::Relaxed);
        self.on_stack.store(0, Ordering::Relaxed);
        self.ended.store(false, Ordering::Relaxed);
        self.context_id.store(0, Ordering::Relaxed);
        if self.used.swap(false, Ordering::Relaxed) {
            self.context_global.lock().take();
            self.stack.lock().clear();
            self.escalation.lock().take();
            *self.wait.lock() = WaitSlot::default();
        }
    }

    /// Keeps `run` for the next run on this thread, if nothing else holds it.
    pub(super) fn recycle(run: Arc<RunState>) {
        if is_unique(&run) {
            SPARE.with_borrow_mut(|spare| *spare = Some(run));
        }
    }

    /// Marks the run's waiting and timeout state as used (a reuse clears it).
    pub(super) fn touch(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst) != NOT_FIRED
    }

    /// Marks the run stopped by its timeout (`out_of_cpu`: by its CPU limit); false if a
    /// limit already had.
    pub(super) fn fire(&self, out_of_cpu: bool) -> bool {
        let why = if out_of_cpu { OUT_OF_CPU } else { TIMED_OUT };
        self.fired.compare_exchange(NOT_FIRED, why, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Whether the CPU limit, not the timeout, stopped it.
    pub(super) fn out_of_cpu(&self) -> bool {
        self.fired.load(Ordering::SeqCst) == OUT_OF_CPU
    }

    /// The error of the limit that stopped it, with the stack captured when it hit.
    pub(super) fn timeout(&self) -> Error {
        let stack = self.stack.lock().clone();
        if self.out_of_cpu() { Error::CpuLimit { stack } } else { Error::Timeout { stack } }
    }

    /// Puts the run on this thread's stack (its JavaScript runs here now) until the guard
    /// drops. The caller holds the isolate, and keeps `self` alive until then.
    pub(crate) fn enter(self: &Arc<Self>) -> OnStack {
        add(&self.on_stack, 1);
        add(&self.isolate_on_stack, 1);
        let me = Arc::as_ptr(self);
        RUNS.with_borrow_mut(|runs| runs.push(me));
        OnStack(me)
    }

    /// Whether this thread is inside the run.
    pub(super) fn is_on_this_thread(self: &Arc<Self>) -> bool {
        let me = Arc::as_ptr(self);
        RUNS.with_borrow(|runs| runs.iter().any(|r| std::ptr::eq(*r, me)))
    }

    /// The context the run's JavaScript runs in, if any.
    pub(super) fn context(&self, scope: &v8::PinScope<'_, '_, ()>) -> Option<v8::Global<v8::Context>> {
        match self.context_id.load(Ordering::Relaxed) {
            0 => self.context_global.lock().clone(),
            id => IsolateInner::of(scope)?.context_global(id),
        }
    }

    /// Wakes whoever waits for the run (or the next one to wait, if nobody does yet).
    pub(crate) fn wake(&self, why: Wake) {
        self.touch();
        let waiter = {
            let mut slot = self.wait.lock();
            if slot.woken.is_some() {
                return;
            }
            slot.woken = Some(why);
            slot.waiter.take()
        };
        match waiter {
            Some(Waiter::Thread(thread)) => thread.unpark(),
            Some(Waiter::Job(resume)) => resume(),
            None => {}
        }
    }

    /// Arms the wait: the next [`wake`](Self::wake) counts.
    pub(super) fn rearm(&self) {
        *self.wait.lock() = WaitSlot::default();
    }

    /// Why the run was woken, once it was.
    pub(super) fn woken(&self) -> Option<Wake> {
        self.wait.lock().woken
    }

    /// Blocks this thread until the run is woken.
    pub(super) fn wait_here(&self) {
        self.touch();
        {
            let mut slot = self.wait.lock();
            if slot.woken.is_some() {
                return;
            }
            slot.waiter = Some(Waiter::Thread(std::thread::current()));
        }
        while self.woken().is_none() {
            std::thread::park();
        }
    }

    /// Runs `resume` once the run is woken (now, if it was already), on the thread that wakes
    /// it.
    pub(crate) fn on_wake(&self, resume: Box<dyn FnOnce() + Send>) {
        self.touch();
        {
            let mut slot = self.wait.lock();
            if slot.woken.is_none() {
                slot.waiter = Some(Waiter::Job(resume));
                return;
            }
        }
        resume()
    }

    /// Whether the run has JavaScript on some thread right now.
    pub(super) fn is_running(&self) -> bool {
        self.on_stack.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }
}

/// Adds `delta` to a counter only the thread holding the isolate changes (readers elsewhere
/// only look), without an atomic read-modify-write.
fn add(counter: &AtomicUsize, delta: isize) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add_signed(delta), Ordering::Relaxed);
}

/// Whether nothing but `run` holds the run state (so nothing can reach it any more).
fn is_unique(run: &Arc<RunState>) -> bool {
    Arc::strong_count(run) == 1 && Arc::weak_count(run) == 0
}

/// A run of this thread's stack, borrowed while it is there.
fn on_stack(run: &*const RunState) -> &RunState {
    // SAFETY: a run is on `RUNS` only while its stretch keeps it alive (see `RUNS`).
    unsafe { &**run }
}

/// A run of this thread's stack, as a handle of its own.
fn share(run: *const RunState) -> Arc<RunState> {
    // SAFETY: as in `on_stack`: the pointer came from a live `Arc`.
    unsafe {
        Arc::increment_strong_count(run);
        Arc::from_raw(run)
    }
}

/// A run on this thread's stack; popped when dropped.
pub(crate) struct OnStack(*const RunState);

impl Drop for OnStack {
    fn drop(&mut self) {
        RUNS.with_borrow_mut(|runs| {
            if let Some(at) = runs.iter().rposition(|r| std::ptr::eq(*r, self.0)) {
                runs.remove(at);
            }
        });
        let run = on_stack(&self.0);
        add(&run.on_stack, -1);
        add(&run.isolate_on_stack, -1);
    }
}

/// How many stretches of runs of `isolate` this thread is inside.
pub(crate) fn on_this_thread(isolate: *const IsolateInner) -> usize {
    RUNS.with_borrow(|runs| runs.iter().filter(|r| std::ptr::eq(on_stack(r).isolate, isolate)).count())
}

/// The innermost run of `isolate` on this thread (the run a host function called now works
/// for).
pub(crate) fn current(isolate: *const IsolateInner) -> Option<Arc<RunState>> {
    RUNS.with_borrow(|runs| runs.iter().rev().find(|r| std::ptr::eq(on_stack(r).isolate, isolate)).map(|r| share(*r)))
}

/// Whether a run of `isolate` on this thread has passed its deadline (its JavaScript must not
/// go on).
pub(crate) fn fired_on_this_thread(isolate: *const IsolateInner) -> bool {
    RUNS.with_borrow(|runs| runs.iter().map(on_stack).any(|r| std::ptr::eq(r.isolate, isolate) && r.fired()))
}

/// Whether a run of the same isolate *outside* `run` on this thread has passed its deadline:
/// the termination is then that run's, and `run` must leave it in place.
pub(super) fn outer_fired(run: &Arc<RunState>) -> bool {
    let me = Arc::as_ptr(run);
    RUNS.with_borrow(|runs| {
        let at = runs.iter().rposition(|r| std::ptr::eq(*r, me)).unwrap_or(runs.len());
        runs[..at].iter().map(on_stack).any(|r| std::ptr::eq(r.isolate, run.isolate) && r.fired())
    })
}

/// The innermost run of the same isolate as `run` on this thread that has passed its deadline.
pub(super) fn fired_here(run: &RunState) -> Option<Arc<RunState>> {
    RUNS.with_borrow(|runs| runs.iter().rev().find(|r| std::ptr::eq(on_stack(r).isolate, run.isolate) && on_stack(r).fired()).map(|r| share(*r)))
}
