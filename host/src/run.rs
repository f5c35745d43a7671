//! Running JavaScript under an operation's limits, and turning what happened into a `Result`.
//!
//! Every operation that runs code goes through [`run_in_context`]: it enters the context,
//! catches exceptions, arms the timeout, drains the microtask queue, optionally waits for a
//! promise result to settle, and copies the result out — all inside the timeout, so neither
//! queued microtasks nor getters met while copying can escape it (isolated-vm only times the
//! synchronous part).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{self, watchdog::Timer};
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
    pub(crate) timeout: Option<Duration>,
    /// Wait for a promise result to settle and use its value (or its rejection).
    pub(crate) await_promise: bool,
}

/// Runs `body` in the context `context_id`, then `finish` on its result, under `limits`.
pub(crate) fn run_in_context<R>(
    session: &mut Session<'_>,
    context_id: u64,
    limits: Limits,
    body: impl for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>) -> Result<v8::Local<'s, v8::Value>>,
    finish: impl for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, v8::Local<'s, v8::Value>) -> Result<R>,
) -> Result<R> {
    let inner = session.inner;
    v8::scope!(let scope, &mut *session.isolate);
    let context = inner
        .local(scope, context_id, |slot| match slot {
            Slot::Context(g) | Slot::Reference { context: g, .. } | Slot::Module { context: Some(g), .. } => Some(g),
            _ => None,
        })
        .ok_or_else(|| missing_context(inner, context_id))?;
    let scope = &mut v8::ContextScope::new(scope, context);
    v8::tc_scope!(let tc, scope);
    let timeout = limits.timeout.and_then(|d| TimeoutGuard::arm(inner, v8::Global::new(tc, context), d));
    let result = (|| {
        let value = body(tc)?;
        tc.perform_microtask_checkpoint();
        if tc.has_terminated() {
            return Err(threw());
        }
        let value = if limits.await_promise { settle(tc, inner, value, timeout.as_ref())? } else { value };
        finish(tc, value)
    })();
    let result = match result {
        Err(_) if tc.has_terminated() || tc.is_execution_terminating() => Err(terminated(inner, timeout.as_ref())),
        // The timeout fired while the script was in a host function, which threw, or in a
        // builtin that ignored the termination and finished: either way it ran out of time.
        _ if timeout.as_ref().is_some_and(|t| t.fired()) => Err(terminated(inner, timeout.as_ref())),
        // JavaScript threw: the exception it threw. Errors ivm made itself (e.g. a value that
        // cannot be copied) stand as they are.
        Err(e) if is_threw(&e) && tc.has_caught() => Err(Error::Exception(caught(tc))),
        other => other,
    };
    if !tc.is_execution_terminating() {
        rejections::report(tc);
    }
    if let Some(timeout) = timeout {
        if timeout.fired() && !inner.is_disposed() && !inner.memory.hit() {
            // The timeout's termination may still be pending; the isolate stays usable.
            tc.cancel_terminate_execution();
        }
    }
    result
}

/// Why there is no context to run in.
fn missing_context(inner: &IsolateInner, id: u64) -> Error {
    if inner.holds(id) {
        // A module that is not instantiated yet.
        Error::InvalidArgument("Module is uninstantiated".into())
    } else {
        Error::disposed("Context is released")
    }
}

/// Why a script was terminated.
fn terminated(inner: &IsolateInner, timeout: Option<&TimeoutGuard>) -> Error {
    if inner.memory.hit() {
        Error::MemoryLimit
    } else if let Some(t) = timeout.filter(|t| t.fired()) {
        Error::Timeout { stack: t.stack() }
    } else {
        Error::disposed("Isolate was disposed during execution")
    }
}

/// Waits for a promise to settle: runs microtasks and V8's foreground tasks until it does,
/// the timeout fires, or nothing is left that could settle it.
fn settle<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    inner: &IsolateInner,
    value: v8::Local<'s, v8::Value>,
    timeout: Option<&TimeoutGuard>,
) -> Result<v8::Local<'s, v8::Value>> {
    let Ok(promise) = v8::Local::<v8::Promise>::try_from(value) else { return Ok(value) };
    let platform = engine::platform();
    loop {
        inner.completions.settle(scope);
        match promise.state() {
            v8::PromiseState::Fulfilled => return Ok(promise.result(scope)),
            v8::PromiseState::Rejected => {
                promise.mark_as_handled();
                // The caller gets the rejection; it is not unhandled.
                rejections::forget(scope, promise);
                let reason = promise.result(scope);
                return Err(Error::Exception(exception(scope, reason, None)));
            }
            v8::PromiseState::Pending => {}
        }
        if let Some(t) = timeout.filter(|t| t.fired()) {
            return Err(Error::Timeout { stack: t.stack() });
        }
        if v8::Platform::pump_message_loop(platform, scope, false) {
            scope.perform_microtask_checkpoint();
        } else if scope.has_pending_background_tasks() {
            std::thread::sleep(Duration::from_micros(100));
        } else if inner.completions.outstanding() {
            // An async host function may still settle it.
            inner.completions.wait(Duration::from_millis(5));
        } else {
            scope.perform_microtask_checkpoint();
            if promise.state() == v8::PromiseState::Pending {
                return Err(Error::Abandoned);
            }
        }
        if scope.is_execution_terminating() {
            return Err(threw());
        }
    }
}

/// An armed timeout. When it fires, an interrupt captures the running stack and terminates
/// the script. Dropping the guard disarms it; an interrupt still in flight then does nothing.
pub(crate) struct TimeoutGuard {
    timer: Timer,
    /// Fires if the script is still running a grace period after the timeout.
    _escalation: Option<Timer>,
    state: Arc<TimeoutState>,
}

struct TimeoutState {
    active: AtomicBool,
    stack: Mutex<String>,
    /// The context the script runs in (the interrupt needs one to read the stack).
    context: v8::Global<v8::Context>,
}

impl TimeoutGuard {
    /// `None` for a timeout too far away to be represented: it never fires.
    pub(crate) fn arm(inner: &IsolateInner, context: v8::Global<v8::Context>, after: Duration) -> Option<TimeoutGuard> {
        let fires_at = Instant::now().checked_add(after)?;
        let state = Arc::new(TimeoutState { active: AtomicBool::new(true), stack: Mutex::default(), context });
        let handle = inner.thread_safe_handle();
        let waits = inner.blocking_waits.clone();
        let for_interrupt = state.clone();
        let for_escalation = (inner.thread_safe_handle(), state.clone(), inner.on_catastrophic_error.clone());
        let timer = Timer::arm(fires_at, move || {
            waits.abort();
            let data = Arc::into_raw(for_interrupt) as *mut c_void;
            if !handle.request_interrupt(on_timeout, data) {
                // SAFETY: the interrupt was not queued, so `data` is still ours.
                drop(unsafe { Arc::from_raw(data as *const TimeoutState) });
            }
        });
        // An uninterruptible builtin (a huge BigInt, isolated-vm #202) can ignore the
        // termination. In process nothing can stop it; say so, and keep asking.
        let escalation = fires_at.checked_add(inner.terminate_grace).map(|at| Timer::arm(at, move || {
            let (handle, state, handler) = for_escalation;
            if !state.active.load(Ordering::SeqCst) {
                return;
            }
            handle.terminate_execution();
            if let Some(handler) = handler {
                // Not on the watchdog thread: the handler may take its time.
                let _ = std::thread::Builder::new().name("ivm-catastrophic".into()).spawn(move || {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(FAILED_TO_TERMINATE)));
                });
            }
        }));
        Some(TimeoutGuard { timer, _escalation: escalation, state })
    }

    pub(crate) fn fired(&self) -> bool {
        self.timer.fired()
    }

    fn stack(&self) -> String {
        self.state.stack.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TimeoutGuard {
    fn drop(&mut self) {
        self.state.active.store(false, Ordering::SeqCst);
    }
}

unsafe extern "C" fn on_timeout(mut isolate: v8::UnsafeRawIsolatePtr, data: *mut c_void) {
    // SAFETY: `data` is the `Arc` leaked in `TimeoutGuard::arm`; this is its only consumer.
    let state = unsafe { Arc::from_raw(data as *const TimeoutState) };
    if !state.active.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: V8 runs interrupts on the isolate's thread, inside JavaScript, with the isolate
    // entered and a context current.
    let isolate = unsafe { v8::Isolate::ref_from_raw_isolate_ptr_mut(&mut isolate) };
    {
        v8::scope!(let scope, &mut *isolate);
        let context = v8::Local::new(scope, &state.context);
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
