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

mod deadlines;
mod host_calls;
mod state;

pub(crate) use deadlines::{Deadlines, Run};
pub(crate) use host_calls::{BlockingWaits, Completions, DROPPED, PendingCall};
pub(crate) use state::{RunContext, RunState, Wake, current, fired_on_this_thread, on_this_thread};

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::data::EvalOptions;
use crate::error::{Error, Result};
use crate::exception::{caught, exception};
use crate::isolate::{IsolateInner, Session, Slot, rejections};
use crate::js::{is_threw, threw};
use state::{OnStack, fired_here, outer_fired};

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
    /// The run's CPU-time limit; `None`: only the isolate's CPU budget, if any.
    pub(crate) cpu_limit: Option<Duration>,
    /// Wait for a promise result to settle and use its value (or its rejection).
    pub(crate) await_promise: bool,
}

impl Limits {
    /// The limits `options` ask for.
    pub(crate) fn of(options: &EvalOptions) -> Limits {
        Limits { timeout: options.timeout, cpu_limit: options.cpu_limit, await_promise: options.promise }
    }
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
            Some(frame) => crate::isolate::nesting::step_out_to_wait(frame, || self.run.state().wait_here()),
            None => self.run.state().wait_here(),
        }
    }

    /// The run's state (to be told when it is woken).
    pub(crate) fn state(&self) -> Arc<RunState> {
        self.run.state().clone()
    }
}

/// The body of a run: the JavaScript it starts (in the isolate given), giving its result.
pub(crate) trait Body: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, &Arc<IsolateInner>) -> Result<v8::Local<'s, v8::Value>> {}
impl<T: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, &Arc<IsolateInner>) -> Result<v8::Local<'s, v8::Value>>> Body for T {}

/// The end of a run: reads its result (or its promise's value) into `R`.
pub(crate) trait Finish<R>: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, &Arc<IsolateInner>, v8::Local<'s, v8::Value>) -> Result<R> {}
impl<R, T: for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, &Arc<IsolateInner>, v8::Local<'s, v8::Value>) -> Result<R>> Finish<R> for T {}

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
    body: impl for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>) -> Result<v8::Local<'s, v8::Value>>,
    finish: impl for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, v8::Local<'s, v8::Value>) -> Result<R>,
) -> Result<R> {
    debug_assert!(!limits.await_promise, "promise runs go through IsolateInner::run_js_*");
    let js = JsRun::new(
        context_id,
        limits,
        move |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>| body(scope),
        move |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, value| finish(scope, value),
    );
    match start(session, js)? {
        Progress::Done(result) => Ok(result),
        Progress::Waiting(_) => Err(Error::Abandoned),
    }
}

/// The first stretch of a run: `body`, its microtasks, and `finish` unless the result is a
/// promise to wait for.
pub(crate) fn start<R, F: Finish<R>>(session: &mut Session<'_>, js: JsRun<impl Body, F>) -> Result<Progress<R, F>> {
    let JsRun { context: context_id, limits, body, finish, released } = js;
    let inner = session.inner;
    let cpu = inner.cpu_allowance(limits.cpu_limit);
    if cpu.is_some_and(|cpu| cpu.is_zero()) {
        // The isolate's budget is spent (or the run allowed none): nothing runs.
        return Err(Error::CpuLimit { stack: String::new() });
    }
    let run = Run::arm(inner, RunContext::Handle(context_id), limits.timeout, cpu, session.now());
    v8::scope!(let scope, &mut *session.isolate);
    let context = inner
        .local(scope, context_id, |slot| match slot {
            Slot::Context(g) | Slot::Reference { context: g, .. } | Slot::Module { context: Some(g), .. } => Some(g),
            _ => None,
        })
        .ok_or_else(|| missing_context(inner, context_id, released))?;
    let scope = &mut v8::ContextScope::new(scope, context);
    v8::tc_scope!(let tc, scope);
    let on_stack = run.state().enter();
    let mut finish = Some(finish);
    if let Some(step) = inner.take_before_next_run() {
        step();
    }
    let outcome = (|| {
        let value = body(tc, inner)?;
        tc.perform_microtask_checkpoint();
        if tc.has_terminated() {
            return Err(threw());
        }
        let value = match v8::Local::<v8::Promise>::try_from(value) {
            Ok(promise) if limits.await_promise && promise.state() == v8::PromiseState::Pending => return Ok(Step::Pending(promise)),
            Ok(promise) if limits.await_promise => settled(tc, promise)?,
            _ => value,
        };
        finish.take().expect("finish is used once")(tc, inner, value).map(Step::Done)
    })();
    let outcome = conclude(tc, inner, run.state(), outcome);
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
    inner.unpark(run.state());
    if inner.memory.hit() {
        return Err(Error::MemoryLimit);
    }
    v8::scope!(let scope, &mut *session.isolate);
    let context = v8::Local::new(scope, &context);
    let scope = &mut v8::ContextScope::new(scope, context);
    v8::tc_scope!(let tc, scope);
    let on_stack = run.state().enter();
    let promise = v8::Local::new(tc, &promise);
    let mut finish = Some(finish);
    let outcome = (|| {
        if run.state().fired() {
            return Err(run.state().timeout());
        }
        if promise.state() == v8::PromiseState::Pending {
            return match run.state().woken() {
                Some(Wake::Abandoned) => Err(Error::Abandoned),
                Some(Wake::Gone) => Err(Error::disposed("Isolate was disposed during execution")),
                _ => Ok(Step::Pending(promise)),
            };
        }
        let value = settled(tc, promise)?;
        finish.take().expect("finish is used once")(tc, inner, value).map(Step::Done)
    })();
    let outcome = conclude(tc, inner, run.state(), outcome);
    drop(on_stack);
    match outcome? {
        Step::Done(result) => Ok(Progress::Done(result)),
        Step::Pending(promise) => {
            run.state().rearm();
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
    inner.park(promise.clone(), run.state().clone());
    Progress::Waiting(Waiting { run, context: v8::Global::new(scope, context), promise, finish })
}

/// A settled promise's value, or its rejection as the error.
fn settled<'s>(scope: &mut v8::PinScope<'s, '_>, promise: v8::Local<'s, v8::Promise>) -> Result<v8::Local<'s, v8::Value>> {
    if promise.state() == v8::PromiseState::Rejected {
        promise.mark_as_handled();
        // The caller gets the rejection; it is not unhandled.
        rejections::forget(scope, promise);
        let reason = promise.result(scope);
        return Err(Error::Exception(Box::new(exception(scope, reason, None))));
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
        _ if run.fired() => Err(terminated(inner, run)),
        // JavaScript threw: the exception it threw. Errors ivm made itself (e.g. a value that
        // cannot be copied) stand as they are.
        Err(e) if is_threw(&e) && tc.has_caught() => Err(Error::Exception(Box::new(caught(tc)))),
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
    } else if let Some(outer) = fired_here(run) {
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
    /// The run it stands for: kept alive while on the stack.
    _state: Arc<RunState>,
    _own: Option<Run>,
    on_stack: Option<OnStack>,
}

impl Detached {
    pub(crate) fn begin(inner: &IsolateInner, owner: Option<&Weak<RunState>>, context: Option<&v8::Global<v8::Context>>) -> Detached {
        let owner = owner.and_then(Weak::upgrade).filter(|run| !run.has_ended());
        let (own, state) = match owner {
            Some(state) => (None, state),
            None => {
                let context = context.map_or(RunContext::None, |c| RunContext::Global(c.clone()));
                let cpu = inner.cpu_allowance(None);
                let run = Run::arm(inner, context, None, cpu, Instant::now());
                let state = run.state().clone();
                if cpu.is_some_and(|cpu| cpu.is_zero()) && state.fire(true) {
                    // The isolate's CPU budget is spent: its JavaScript stops before it starts
                    // (`end` lifts the termination, as after any limit of its own).
                    state.handle.terminate_execution();
                }
                (Some(run), state)
            }
        };
        let on_stack = Some(state.enter());
        Detached { _state: state, _own: own, on_stack }
    }

    /// Ends the stretch; `inner` is the isolate it ran in.
    pub(crate) fn end(mut self, isolate: &v8::Isolate, inner: &IsolateInner) {
        drop(self.on_stack.take());
        // Cut short by its own deadline (not an enclosing run's): the isolate stays usable.
        if isolate.is_execution_terminating() && !fired_on_this_thread(inner) && !inner.is_disposed() && !inner.memory.hit() {
            isolate.cancel_terminate_execution();
        }
    }
}
