//! Running JavaScript under an operation's limits, and turning what happened into a `Result`.
//!
//! A *run* is the JavaScript one operation starts: its script or call, the microtasks it
//! queues, and with [`Limits::await_promise`] everything until its promise settles — all of it
//! inside one deadline, so neither queued microtasks nor getters met while copying the result
//! out can escape it (isolated-vm only times the synchronous part).
//!
//! A run goes in *stretches*, each with the isolate held: [`start`] runs the body and its
//! microtasks; if the result is a promise still pending, the run is parked on the isolate
//! ([`Waiting`]) and lets go of the isolate and of its thread. Whatever settles the promise (an
//! async host function's completion, a V8 task, another operation) runs as a job of the
//! isolate; when the isolate is let go the parked runs whose promises settled are woken, and
//! [`resume`] finishes them in a stretch of their own. The blocking and async forms of every
//! operation share these two steps; they differ only in how they wait in between (see
//! `IsolateInner::run_js_sync` and `run_js_async`).
//!
//! Deadlines: a run's timer interrupts the isolate only when the run is on the stack of the
//! thread holding the isolate (see [`RunState::enter`]); a run that waits is woken instead, and a
//! run suspended in a host function while other threads use the isolate is terminated when its
//! thread comes back (`nesting::step_out`). JavaScript that runs for a parked run (an async
//! host function's completion) runs on that run's stack, under its deadline.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::engine::watchdog::Timer;
use crate::error::{Error, Result};
use crate::exception::{caught, exception};
use crate::isolate::{IsolateInner, Session, Slot, rejections};
use crate::value::js::{is_threw, threw};

/// isolated-vm's report for a script that did not stop within the grace period after its
/// timeout.
pub(crate) const FAILED_TO_TERMINATE: &str = "Script failed to terminate";

/// Frames captured for a timeout's stack, as in isolated-vm.
const TIMEOUT_FRAMES: usize = 10;

/// Limits for one run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// The run's wall-clock limit; `None`: the isolate's default timeout.
    pub(crate) timeout: Option<Duration>,
    /// Wait for a promise result to settle and use its value (or its rejection).
    pub(crate) await_promise: bool,
}

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

/// One run: its deadline, whether it passed, and who waits for it.
pub(crate) struct RunState {
    /// The isolate the run belongs to (for the timer's interrupt, and to tell runs apart on a
    /// thread's stack).
    isolate: *const IsolateInner,
    handle: v8::IsolateHandle,
    fired: AtomicBool,
    /// The stack when the timeout hit, if the run was on a thread then.
    stack: Mutex<String>,
    /// Stretches of this run on some thread's stack right now (0 while it waits).
    on_stack: AtomicUsize,
    /// The isolate's count of run stretches on stacks.
    isolate_on_stack: Arc<AtomicUsize>,
    /// The run has ended: JavaScript it left behind runs under the isolate's default timeout.
    ended: AtomicBool,
    /// The context its JavaScript runs in (the timeout reads the stack there).
    context: Mutex<Option<v8::Global<v8::Context>>>,
    wait: Mutex<WaitSlot>,
}

// SAFETY: `isolate` is only compared, never dereferenced.
unsafe impl Send for RunState {}
unsafe impl Sync for RunState {}

thread_local! {
    /// The runs this thread is inside, outermost first.
    static RUNS: RefCell<Vec<Arc<RunState>>> = const { RefCell::new(Vec::new()) };
}

impl RunState {
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    fn stack(&self) -> String {
        self.stack.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn timeout(&self) -> Error {
        Error::Timeout { stack: self.stack() }
    }

    /// Puts the run on this thread's stack (its JavaScript runs here now) until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> OnStack {
        self.on_stack.fetch_add(1, Ordering::SeqCst);
        self.isolate_on_stack.fetch_add(1, Ordering::SeqCst);
        RUNS.with_borrow_mut(|runs| runs.push(self.clone()));
        OnStack(self.clone())
    }

    /// Wakes whoever waits for the run (or the next one to wait, if nobody does yet).
    pub(crate) fn wake(&self, why: Wake) {
        let waiter = {
            let mut slot = self.wait.lock().unwrap_or_else(|e| e.into_inner());
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
    pub(crate) fn rearm(&self) {
        *self.wait.lock().unwrap_or_else(|e| e.into_inner()) = WaitSlot::default();
    }

    /// Why the run was woken, once it was.
    fn woken(&self) -> Option<Wake> {
        self.wait.lock().unwrap_or_else(|e| e.into_inner()).woken
    }

    /// Blocks this thread until the run is woken.
    fn wait_here(&self) {
        {
            let mut slot = self.wait.lock().unwrap_or_else(|e| e.into_inner());
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
        {
            let mut slot = self.wait.lock().unwrap_or_else(|e| e.into_inner());
            if slot.woken.is_none() {
                slot.waiter = Some(Waiter::Job(resume));
                return;
            }
        }
        resume()
    }

    /// Whether this run of `isolate` has JavaScript on some thread right now.
    pub(crate) fn is_running(&self) -> bool {
        self.on_stack.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Sets the context the run's JavaScript runs in.
    fn in_context(&self, context: v8::Global<v8::Context>) {
        *self.context.lock().unwrap_or_else(|e| e.into_inner()) = Some(context);
    }
}

/// A run on this thread's stack; popped when dropped.
pub(crate) struct OnStack(Arc<RunState>);

impl Drop for OnStack {
    fn drop(&mut self) {
        RUNS.with_borrow_mut(|runs| {
            if let Some(at) = runs.iter().rposition(|r| Arc::ptr_eq(r, &self.0)) {
                runs.remove(at);
            }
        });
        self.0.on_stack.fetch_sub(1, Ordering::SeqCst);
        self.0.isolate_on_stack.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many stretches of runs of `isolate` this thread is inside.
pub(crate) fn on_this_thread(isolate: *const IsolateInner) -> usize {
    RUNS.with_borrow(|runs| runs.iter().filter(|r| std::ptr::eq(r.isolate, isolate)).count())
}

/// The innermost run of `isolate` on this thread (the run a host function called now works
/// for).
pub(crate) fn current(isolate: *const IsolateInner) -> Option<Arc<RunState>> {
    RUNS.with_borrow(|runs| runs.iter().rev().find(|r| std::ptr::eq(r.isolate, isolate)).cloned())
}

/// Whether a run of `isolate` on this thread has passed its deadline (its JavaScript must not
/// go on).
pub(crate) fn fired_on_this_thread(isolate: *const IsolateInner) -> bool {
    RUNS.with_borrow(|runs| runs.iter().any(|r| std::ptr::eq(r.isolate, isolate) && r.fired()))
}

/// Whether a run of the same isolate *outside* `run` on this thread has passed its deadline:
/// the termination is then that run's, and `run` must leave it in place.
fn outer_fired(run: &Arc<RunState>) -> bool {
    RUNS.with_borrow(|runs| {
        let at = runs.iter().rposition(|r| Arc::ptr_eq(r, run)).unwrap_or(runs.len());
        runs[..at].iter().any(|r| std::ptr::eq(r.isolate, run.isolate) && r.fired())
    })
}

/// A run's deadline, armed: when it passes, the run is interrupted if it is on a thread, and
/// woken if it waits. Dropping it disarms the timers and ends the run.
pub(crate) struct Run {
    pub(crate) state: Arc<RunState>,
    _timer: Option<Timer>,
    /// Fires if the script is still running a grace period after the timeout.
    _escalation: Option<Timer>,
}

impl Run {
    /// Arms a run of `inner` with `timeout` (`None`: the isolate's default timeout). A
    /// timeout too far away to be represented never fires.
    pub(crate) fn arm(inner: &IsolateInner, timeout: Option<Duration>) -> Run {
        let deadline = timeout.or(inner.default_timeout).and_then(|after| Instant::now().checked_add(after));
        Run::until(inner, deadline)
    }

    /// Arms a run of `inner` ending at `deadline`.
    pub(crate) fn until(inner: &IsolateInner, deadline: Option<Instant>) -> Run {
        let state = Arc::new(RunState {
            isolate: inner,
            handle: inner.thread_safe_handle(),
            fired: AtomicBool::new(false),
            stack: Mutex::default(),
            on_stack: AtomicUsize::new(0),
            isolate_on_stack: inner.runs_on_stack.clone(),
            ended: AtomicBool::new(false),
            context: Mutex::default(),
            wait: Mutex::default(),
        });
        let Some(fires_at) = deadline else { return Run { state, _timer: None, _escalation: None } };
        let waits = inner.blocking_waits.clone();
        let for_timer = state.clone();
        let timer = Timer::arm(fires_at, move || {
            for_timer.fired.store(true, Ordering::SeqCst);
            // A blocking host function stops waiting; a waiting run is woken; a running one is
            // interrupted (the interrupt checks it is the run on the stack).
            waits.abort();
            let data = Arc::into_raw(for_timer.clone()) as *mut c_void;
            if !for_timer.handle.request_interrupt(on_timeout, data) {
                // SAFETY: the interrupt was not queued, so `data` is still ours.
                drop(unsafe { Arc::from_raw(data as *const RunState) });
            }
            for_timer.wake(Wake::Fired);
        });
        // An uninterruptible builtin (a huge BigInt, isolated-vm #202) can ignore the
        // termination. In process nothing can stop it; say so, and keep asking.
        let for_escalation = (state.clone(), inner.on_catastrophic_error.clone());
        let escalation = fires_at.checked_add(inner.terminate_grace).map(|at| {
            Timer::arm(at, move || {
                let (state, handler) = for_escalation;
                if !state.is_running() {
                    return;
                }
                state.handle.terminate_execution();
                if let Some(handler) = handler {
                    // Not on the watchdog thread: the handler may take its time.
                    let _ = std::thread::Builder::new().name("ivm-catastrophic".into()).spawn(move || {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(FAILED_TO_TERMINATE)));
                    });
                }
            })
        });
        Run { state, _timer: Some(timer), _escalation: escalation }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.state.ended.store(true, Ordering::SeqCst);
    }
}

unsafe extern "C" fn on_timeout(mut isolate: v8::UnsafeRawIsolatePtr, data: *mut c_void) {
    // SAFETY: `data` is the `Arc` leaked in `Run::until`; this is its only consumer.
    let state = unsafe { Arc::from_raw(data as *const RunState) };
    // Only the run this thread is inside: the interrupt may reach whichever thread holds the
    // isolate next, running another operation's JavaScript.
    if !RUNS.with_borrow(|runs| runs.iter().any(|r| Arc::ptr_eq(r, &state))) {
        return;
    }
    // SAFETY: V8 runs interrupts on the isolate's thread, inside JavaScript, with the isolate
    // entered and a context current.
    let isolate = unsafe { v8::Isolate::ref_from_raw_isolate_ptr_mut(&mut isolate) };
    let context = state.context.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(context) = context {
        v8::scope!(let scope, &mut *isolate);
        let context = v8::Local::new(scope, &context);
        let scope = &mut v8::ContextScope::new(scope, context);
        if let Some(trace) = v8::StackTrace::current_stack_trace(scope, TIMEOUT_FRAMES) {
            let mut text = String::from("Error: Script execution timed out.");
            for i in 0..trace.get_frame_count() {
                let Some(frame) = trace.get_frame(scope, i) else { continue };
                let function = frame.get_function_name(scope).map(|f| f.to_rust_string_lossy(scope));
                let file = frame.get_script_name(scope).map(|f| f.to_rust_string_lossy(scope)).unwrap_or_default();
                let at = format!("{file}:{}:{}", frame.get_line_number(), frame.get_column());
                match function.filter(|f| !f.is_empty()) {
                    Some(f) => text.push_str(&format!("\n    at {f} ({at})")),
                    None => text.push_str(&format!("\n    at {at}")),
                }
            }
            *state.stack.lock().unwrap_or_else(|e| e.into_inner()) = text;
        }
    }
    isolate.terminate_execution();
}

/// What a run has come to after a stretch.
pub(crate) enum Progress<R, F> {
    Done(R),
    /// Its promise is pending: the run is parked on the isolate.
    Waiting(Waiting<F>),
}

/// A run parked on its isolate until its promise settles, with what finishes it.
pub(crate) struct Waiting<F> {
    run: Run,
    context: v8::Global<v8::Context>,
    promise: v8::Global<v8::Promise>,
    finish: F,
}

// SAFETY: `Global`s may move between threads; they are only used with the isolate held.
unsafe impl<F: Send> Send for Waiting<F> {}

impl<F> Waiting<F> {
    /// Blocks this thread until the run is woken. A thread inside an isolate steps out of it
    /// first, so whatever settles the promise can run there.
    pub(crate) fn wait_here(&self) {
        match crate::isolate::nesting::current() {
            Some(frame) => crate::isolate::nesting::step_out_to_wait(frame, || self.run.state.wait_here()),
            None => self.run.state.wait_here(),
        }
    }

    /// The run's state (to be told when it is woken).
    pub(crate) fn state(&self) -> Arc<RunState> {
        self.run.state.clone()
    }
}

/// The body of a run: the JavaScript it starts, giving its result.
pub(crate) trait Body: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>) -> Result<v8::Local<'s, v8::Value>> {}
impl<T: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>) -> Result<v8::Local<'s, v8::Value>>> Body for T {}

/// The end of a run: reads its result (or its promise's value) into `R`.
pub(crate) trait Finish<R>: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, v8::Local<'s, v8::Value>) -> Result<R> {}
impl<R, T: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, v8::Local<'s, v8::Value>) -> Result<R>> Finish<R> for T {}

/// An operation that runs JavaScript, written once and driven either way:
/// `IsolateInner::run_js_sync` blocks the caller, `run_js_async` queues it.
pub(crate) struct JsRun<B, F> {
    pub(crate) context: u64,
    pub(crate) limits: Limits,
    pub(crate) body: B,
    pub(crate) finish: F,
    /// What to say when the handle `context` names is gone.
    pub(crate) released: &'static str,
}

impl<B: Body, F> JsRun<B, F> {
    /// Describes a run of `body` in context `context`, finished by `finish`.
    pub(crate) fn new<R>(context: u64, limits: Limits, body: B, finish: F) -> JsRun<B, F>
    where
        F: Finish<R>,
    {
        JsRun { context, limits, body, finish, released: "Context is released" }
    }

    /// Says `message` when the handle that names the context is gone (a released reference,
    /// say).
    pub(crate) fn released(mut self, message: &'static str) -> Self {
        self.released = message;
        self
    }
}

/// Runs `body` in the context `context_id`, then `finish` on its result, under `limits`, in one
/// stretch: for operations that do not wait for a promise.
pub(crate) fn run_in_context<R>(
    session: &mut Session<'_>,
    context_id: u64,
    limits: Limits,
    body: impl Body,
    finish: impl Finish<R>,
) -> Result<R> {
    debug_assert!(!limits.await_promise, "promise runs go through IsolateInner::run_js_*");
    match start(session, JsRun { context: context_id, limits, body, finish, released: "Context is released" })? {
        Progress::Done(result) => Ok(result),
        Progress::Waiting(_) => Err(Error::Abandoned),
    }
}

/// The first stretch of a run: `body`, its microtasks, and `finish` unless the result is a
/// promise to wait for.
pub(crate) fn start<R, F: Finish<R>>(session: &mut Session<'_>, js: JsRun<impl Body, F>) -> Result<Progress<R, F>> {
    let JsRun { context: context_id, limits, body, finish, released } = js;
    let inner = session.inner;
    let run = Run::arm(inner, limits.timeout);
    v8::scope!(let scope, &mut *session.isolate);
    let context = inner
        .local(scope, context_id, |slot| match slot {
            Slot::Context(g) | Slot::Reference { context: g, .. } | Slot::Module { context: Some(g), .. } => Some(g),
            _ => None,
        })
        .ok_or_else(|| missing_context(inner, context_id, released))?;
    let scope = &mut v8::ContextScope::new(scope, context);
    run.state.in_context(v8::Global::new(scope, context));
    v8::tc_scope!(let tc, scope);
    let on_stack = run.state.enter();
    let mut finish = Some(finish);
    let outcome = (|| {
        let value = body(tc)?;
        tc.perform_microtask_checkpoint();
        if tc.has_terminated() {
            return Err(threw());
        }
        let value = match v8::Local::<v8::Promise>::try_from(value) {
            Ok(promise) if limits.await_promise && promise.state() == v8::PromiseState::Pending => return Ok(Step::Pending(promise)),
            Ok(promise) if limits.await_promise => settled(tc, promise)?,
            _ => value,
        };
        finish.take().expect("finish is used once")(tc, value).map(Step::Done)
    })();
    let outcome = conclude(tc, inner, &run.state, outcome);
    drop(on_stack);
    match outcome? {
        Step::Done(result) => Ok(Progress::Done(result)),
        Step::Pending(promise) => Ok(park(tc, inner, run, context, promise, finish.expect("a waiting run keeps its finish"))),
    }
}

/// A later stretch of a run that waited: finishes it if its promise settled.
pub(crate) fn resume<R, F: Finish<R>>(session: &mut Session<'_>, waiting: Waiting<F>) -> Result<Progress<R, F>> {
    let inner = session.inner;
    let Waiting { run, context, promise, finish } = waiting;
    inner.unpark(&run.state);
    if inner.memory.hit() {
        return Err(Error::MemoryLimit);
    }
    v8::scope!(let scope, &mut *session.isolate);
    let context = v8::Local::new(scope, &context);
    let scope = &mut v8::ContextScope::new(scope, context);
    v8::tc_scope!(let tc, scope);
    let on_stack = run.state.enter();
    let promise = v8::Local::new(tc, &promise);
    let mut finish = Some(finish);
    let outcome = (|| {
        if run.state.fired() {
            return Err(run.state.timeout());
        }
        if promise.state() == v8::PromiseState::Pending {
            return match run.state.woken() {
                Some(Wake::Abandoned) => Err(Error::Abandoned),
                Some(Wake::Gone) => Err(Error::disposed("Isolate was disposed during execution")),
                _ => Ok(Step::Pending(promise)),
            };
        }
        let value = settled(tc, promise)?;
        finish.take().expect("finish is used once")(tc, value).map(Step::Done)
    })();
    let outcome = conclude(tc, inner, &run.state, outcome);
    drop(on_stack);
    match outcome? {
        Step::Done(result) => Ok(Progress::Done(result)),
        Step::Pending(promise) => {
            run.state.rearm();
            Ok(park(tc, inner, run, context, promise, finish.expect("a waiting run keeps its finish")))
        }
    }
}

/// What the JavaScript of a stretch came to.
enum Step<'s, R> {
    Done(R),
    Pending(v8::Local<'s, v8::Promise>),
}

/// Parks a run whose promise is pending on its isolate.
fn park<R, F>(
    scope: &mut v8::PinScope<'_, '_>,
    inner: &IsolateInner,
    run: Run,
    context: v8::Local<'_, v8::Context>,
    promise: v8::Local<'_, v8::Promise>,
    finish: F,
) -> Progress<R, F> {
    let promise = v8::Global::new(scope, promise);
    inner.park(promise.clone(), run.state.clone());
    Progress::Waiting(Waiting { run, context: v8::Global::new(scope, context), promise, finish })
}

/// A settled promise's value, or its rejection as the error.
fn settled<'s>(scope: &mut v8::PinScope<'s, '_>, promise: v8::Local<'s, v8::Promise>) -> Result<v8::Local<'s, v8::Value>> {
    if promise.state() == v8::PromiseState::Rejected {
        promise.mark_as_handled();
        // The caller gets the rejection; it is not unhandled.
        rejections::forget(scope, promise);
        let reason = promise.result(scope);
        return Err(Error::Exception(exception(scope, reason, None)));
    }
    Ok(promise.result(scope))
}

/// Maps what a stretch did to its result: a termination to the timeout, memory limit or
/// disposal that caused it, a caught exception to [`Error::Exception`]; reports unhandled
/// rejections; and leaves the isolate usable after a timeout.
fn conclude<R>(
    tc: &mut v8::PinnedRef<'_, v8::TryCatch<v8::HandleScope>>,
    inner: &IsolateInner,
    run: &Arc<RunState>,
    result: Result<R>,
) -> Result<R> {
    let result = match result {
        Err(_) if tc.has_terminated() || tc.is_execution_terminating() => Err(terminated(inner, run)),
        // The timeout fired while the script was in a host function, which threw, or in a
        // builtin that ignored the termination and finished: either way it ran out of time.
        _ if run.fired() || fired_on_this_thread(run.isolate) => Err(terminated(inner, run)),
        // JavaScript threw: the exception it threw. Errors ivm made itself (e.g. a value that
        // cannot be copied) stand as they are.
        Err(e) if is_threw(&e) && tc.has_caught() => Err(Error::Exception(caught(tc))),
        other => other,
    };
    if !tc.is_execution_terminating() {
        rejections::report(tc);
    }
    if run.fired() && !outer_fired(run) && !inner.is_disposed() && !inner.memory.hit() {
        // The timeout's termination may still be pending; the isolate stays usable.
        tc.cancel_terminate_execution();
    }
    result
}

/// Why there is no context to run in.
fn missing_context(inner: &IsolateInner, id: u64, released: &str) -> Error {
    if inner.holds(id) {
        // A module that is not instantiated yet.
        Error::InvalidArgument("Module is uninstantiated".into())
    } else {
        Error::disposed(released)
    }
}

/// Why a run was terminated.
fn terminated(inner: &IsolateInner, run: &Arc<RunState>) -> Error {
    if inner.memory.hit() {
        Error::MemoryLimit
    } else if run.fired() {
        run.timeout()
    } else if let Some(outer) = RUNS.with_borrow(|runs| runs.iter().rev().find(|r| std::ptr::eq(r.isolate, run.isolate) && r.fired()).cloned()) {
        // An enclosing run of this thread ran out of time: so did this one.
        outer.timeout()
    } else {
        Error::disposed("Isolate was disposed during execution")
    }
}

/// A stretch of JavaScript that no operation waits for (an async host function's completion,
/// a V8 task), run for `owner` under its deadline or, if it has ended, under the isolate's
/// default timeout. A timeout cuts it short and leaves the isolate usable.
pub(crate) struct Detached {
    _own: Option<Run>,
    on_stack: Option<OnStack>,
    isolate: *const IsolateInner,
}

impl Detached {
    pub(crate) fn begin(inner: &IsolateInner, owner: Option<&Weak<RunState>>, context: Option<&v8::Global<v8::Context>>) -> Detached {
        let owner = owner.and_then(Weak::upgrade).filter(|run| !run.has_ended());
        let (own, state) = match owner {
            Some(state) => (None, state),
            None => {
                let run = Run::arm(inner, None);
                if let Some(context) = context {
                    run.state.in_context(context.clone());
                }
                let state = run.state.clone();
                (Some(run), state)
            }
        };
        Detached { _own: own, on_stack: Some(state.enter()), isolate: inner }
    }

    /// Ends the stretch; `inner` is the isolate it ran in.
    pub(crate) fn end(mut self, isolate: &v8::Isolate, inner: &IsolateInner) {
        drop(self.on_stack.take());
        // Cut short by its own deadline (not an enclosing run's): the isolate stays usable.
        if isolate.is_execution_terminating() && !fired_on_this_thread(self.isolate) && !inner.is_disposed() && !inner.memory.hit() {
            isolate.cancel_terminate_execution();
        }
    }
}
