//! Deadlines: when a run's timeout passes, the run is interrupted if it is on a thread, and
//! woken if it waits.
//!
//! Arming a watchdog timer for every run would cost more than a small eval itself (most runs
//! end within microseconds, and every run has a deadline: the isolate's default timeout if
//! not its own). So each isolate keeps the deadlines of its runs in [`Deadlines`], with one
//! watchdog timer at the earliest: a run whose deadline is later than the armed one (the
//! default timeout, run after run) changes nothing; an earlier one re-arms it. When the timer
//! fires, every run whose deadline has passed fires, and the timer is armed for the next.
//!
//! A CPU limit is a deadline too: the earliest wall time at which the isolate's CPU time can
//! reach it (CPU time grows no faster than wall time on the one thread holding the isolate).
//! When that passes, the clock is read: a run that waited meanwhile has CPU time left, and
//! its deadline moves to when it could next run out, but no sooner than a sixteenth of its
//! limit (at least 1 ms) later: a run that waits with a few microseconds left would otherwise
//! have the watchdog read its clock over and over. The limit may so be overrun by that much.
//!
//! Lock order: the watchdog's table, then a `Deadlines` (timer actions run under the
//! watchdog's lock and take it); so nothing here touches a timer while holding `Deadlines`.

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::state::{RunContext, RunState, Wake};
use super::{FAILED_TO_TERMINATE, TIMEOUT_FRAMES};
use super::BlockingWaits;
use crate::watchdog::Timer;
use crate::isolate::{CatastrophicHandler, Clock, IsolateInner};
use crate::sync::Mutex;

/// The deadlines of an isolate's runs.
pub(crate) struct Deadlines {
    state: Mutex<State>,
    me: Weak<Deadlines>,
    /// Woken when a run's deadline passes (a blocking host function stops waiting).
    blocking_waits: Arc<BlockingWaits>,
    /// The isolate's clock, for CPU limits.
    clock: Arc<Clock>,
    /// How long a run may go on after its deadline before it is reported.
    grace: Duration,
    on_catastrophic_error: Option<CatastrophicHandler>,
}

#[derive(Default)]
struct State {
    /// Each run is kept alive by its `Run`, which takes it off this list before letting go.
    runs: Vec<Deadline>,
    /// When the timer is armed for, and which arming it is (a later one replaces it).
    armed: Option<(Instant, u64)>,
    timer: Option<Timer>,
    arming: u64,
    /// A debugger has the isolate paused: no deadline fires.
    paused: bool,
}

/// When a run is stopped, unless it ends first.
struct Deadline {
    at: Instant,
    run: *const RunState,
    /// For a CPU limit: the isolate's CPU time at which the run is out of it (`at` is the
    /// earliest that can be), and how long to wait at least before reading the clock again.
    cpu: Option<CpuWatch>,
}

#[derive(Clone, Copy)]
struct CpuWatch {
    out_at: Duration,
    recheck: Duration,
}

impl CpuWatch {
    /// The least time between two readings of the clock for a limit of `limit`.
    fn new(out_at: Duration, limit: Duration) -> CpuWatch {
        CpuWatch { out_at, recheck: (limit / 16).max(Duration::from_millis(1)) }
    }
}

// SAFETY: the run pointers are only used under the lock (see `State::runs`).
unsafe impl Send for State {}

impl Deadlines {
    pub(crate) fn new(
        blocking_waits: Arc<BlockingWaits>,
        clock: Arc<Clock>,
        grace: Duration,
        on_catastrophic_error: Option<CatastrophicHandler>,
    ) -> Arc<Deadlines> {
        Arc::new_cyclic(|me| Deadlines { state: Mutex::default(), me: me.clone(), blocking_waits, clock, grace, on_catastrophic_error })
    }

    fn state(&self) -> crate::sync::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Fires `run` at `deadline`, unless it is removed first.
    fn add(&self, deadline: Deadline) {
        let due = deadline.at;
        let rearm = {
            let mut state = self.state();
            state.runs.push(deadline);
            match state.armed {
                _ if state.paused => None,
                Some((at, _)) if at <= due => None,
                _ => {
                    state.arming += 1;
                    state.armed = Some((due, state.arming));
                    Some((due, state.arming, state.timer.take()))
                }
            }
        };
        if let Some((at, arming, replaced)) = rearm {
            // Outside the lock (see the module comment).
            drop(replaced);
            self.arm(at, arming);
        }
    }

    /// Arms the timer for `at` as arming `arming` (taken under the lock), outside the lock;
    /// unless it was armed again meanwhile.
    fn arm(&self, at: Instant, arming: u64) {
        let timer = Timer::arm(at, self.fire(arming));
        let mut state = self.state();
        if state.arming == arming {
            state.timer = Some(timer);
        } else {
            // Re-armed meanwhile: this one is not needed.
            drop(state);
            drop(timer);
        }
    }

    /// A debugger paused the isolate: no deadline fires until [`resume`](Self::resume).
    pub(crate) fn pause(&self) {
        let timer = {
            let mut state = self.state();
            state.paused = true;
            state.arming += 1;
            state.armed = None;
            state.timer.take()
        };
        // Outside the lock (see the module comment).
        drop(timer);
    }

    /// The debugger let the isolate go after `paused`: every deadline moves that much later
    /// (time at a breakpoint is no part of a timeout), and the earliest is armed again.
    pub(crate) fn resume(&self, paused: Duration) {
        let (at, arming) = {
            let mut state = self.state();
            state.paused = false;
            for deadline in &mut state.runs {
                deadline.at = deadline.at.checked_add(paused).unwrap_or(deadline.at);
            }
            let Some(at) = state.runs.iter().map(|deadline| deadline.at).min() else { return };
            state.arming += 1;
            state.armed = Some((at, state.arming));
            (at, state.arming)
        };
        self.arm(at, arming);
    }

    /// Takes `run`'s deadlines off the list.
    fn remove(&self, run: &Arc<RunState>) {
        let run = Arc::as_ptr(run);
        self.state().runs.retain(|deadline| !std::ptr::eq(deadline.run, run));
    }

    /// The timer's action (on the watchdog thread, which may arm timers there).
    fn fire(&self, arming: u64) -> impl FnOnce() + Send + 'static + use<> {
        let me = self.me.clone();
        move || {
            let Some(me) = me.upgrade() else { return };
            let now = Instant::now();
            let mut due: Vec<(Instant, Arc<RunState>, bool)> = {
                let mut state = me.state();
                if state.arming != arming {
                    return;
                }
                let mut due = Vec::new();
                let mut cpu_time = None;
                state.runs.retain_mut(|deadline| {
                    if deadline.at > now {
                        return true;
                    }
                    if let Some(cpu) = deadline.cpu {
                        let used = *cpu_time.get_or_insert_with(|| me.clock.cpu_time());
                        if let Some(left) = cpu.out_at.checked_sub(used).filter(|left| !left.is_zero()) {
                            // It waited part of the time: check again when it could run out.
                            deadline.at = now.checked_add(left.max(cpu.recheck)).unwrap_or(deadline.at);
                            return true;
                        }
                    }
                    // SAFETY: on the list, the run is alive (see `State::runs`); the count
                    // taken here keeps it so.
                    let run = unsafe {
                        Arc::increment_strong_count(deadline.run);
                        Arc::from_raw(deadline.run)
                    };
                    due.push((deadline.at, run, deadline.cpu.is_some()));
                    false
                });
                let next = state.runs.iter().map(|deadline| deadline.at).min();
                state.arming += 1;
                state.armed = next.map(|at| (at, state.arming));
                let arming = state.arming;
                state.timer = next.map(|at| Timer::arm(at, me.fire(arming)));
                due
            };
            // The earliest first: a run whose CPU limit and timeout both passed before the
            // timer could fire (a watchdog thread starved of CPU) is stopped by what came first.
            due.sort_by_key(|(at, ..)| *at);
            for (_, run, out_of_cpu) in due {
                me.fired(run, out_of_cpu);
            }
        }
    }

    /// `run`'s deadline has passed (`out_of_cpu`: its CPU limit's).
    fn fired(&self, run: Arc<RunState>, out_of_cpu: bool) {
        if !run.fire(out_of_cpu) {
            // Its other limit stopped it already.
            return;
        }
        // A blocking host function stops waiting; a waiting run is woken; a running one is
        // interrupted (the interrupt checks it is the run on the stack).
        self.blocking_waits.abort();
        let data = Arc::into_raw(run.clone()) as *mut c_void;
        if !run.handle.request_interrupt(on_timeout, data) {
            // SAFETY: the interrupt was not queued, so `data` is still ours.
            drop(unsafe { Arc::from_raw(data as *const RunState) });
        }
        run.wake(Wake::Fired);
        run.touch();
        if let Some(at) = Instant::now().checked_add(self.grace) {
            let escalation = Timer::arm(at, escalate(run.clone(), self.on_catastrophic_error.clone()));
            *run.escalation.lock() = Some(escalation);
        }
    }
}

/// What happens when a run still goes on a grace period after its timeout: an
/// uninterruptible builtin (a huge BigInt, isolated-vm #202) ignored the termination. In
/// process nothing can stop it; say so, and keep asking.
fn escalate(run: Arc<RunState>, handler: Option<CatastrophicHandler>) -> impl FnOnce() + Send + 'static {
    move || {
        if !run.is_running() || run.has_ended() {
            return;
        }
        run.handle.terminate_execution();
        if let Some(handler) = handler {
            // Not on the watchdog thread: the handler may take its time.
            let _ = std::thread::Builder::new().name("ivm-catastrophic".into()).spawn(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(FAILED_TO_TERMINATE)));
            });
        }
    }
}

/// A run with its deadline armed. Dropping it ends the run.
pub(crate) struct Run {
    /// Taken out only when the run is dropped (to be recycled).
    state: ManuallyDrop<Arc<RunState>>,
    /// Whether its deadline is on the isolate's list.
    armed: bool,
}

impl Run {
    pub(crate) fn state(&self) -> &Arc<RunState> {
        &self.state
    }

    /// Ends the run, keeping its state for the next one if nothing else holds it.
    fn finish(&mut self) {
        self.state.end();
        if std::mem::take(&mut self.armed) {
            self.state.deadlines.remove(&self.state);
        }
        if self.state.fired() {
            let escalation = self.state.escalation.lock().take();
            drop(escalation);
        }
    }
}

impl Run {
    /// Arms a run of `inner` in `context` with `timeout` (`None`: the isolate's default
    /// timeout) from `now`, and `cpu` of CPU time from the isolate's CPU time now. A limit
    /// too far away to be represented never fires.
    pub(crate) fn arm(inner: &IsolateInner, context: RunContext, timeout: Option<Duration>, cpu: Option<Duration>, now: Instant) -> Run {
        let state = RunState::new(inner, context);
        let mut armed = false;
        if let Some(at) = timeout.or(inner.default_timeout).and_then(|after| now.checked_add(after)) {
            inner.deadlines.add(Deadline { at, run: Arc::as_ptr(&state), cpu: None });
            armed = true;
        }
        if let Some(cpu) = cpu {
            let clock = &inner.deadlines.clock;
            clock.measure_cpu();
            let out_at = clock.cpu_time().checked_add(cpu);
            if let Some((at, out_at)) = now.checked_add(cpu).zip(out_at) {
                inner.deadlines.add(Deadline { at, run: Arc::as_ptr(&state), cpu: Some(CpuWatch::new(out_at, cpu)) });
                armed = true;
            }
        }
        Run { state: ManuallyDrop::new(state), armed }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.finish();
        // SAFETY: the field is not used again.
        RunState::recycle(unsafe { ManuallyDrop::take(&mut self.state) });
    }
}

unsafe extern "C" fn on_timeout(mut isolate: v8::UnsafeRawIsolatePtr, data: *mut c_void) {
    // SAFETY: `data` is the `Arc` leaked in `Deadlines::fired`; this is its only consumer.
    let run = unsafe { Arc::from_raw(data as *const RunState) };
    // Only the run this thread is inside: the interrupt may reach whichever thread holds the
    // isolate next, running another operation's JavaScript.
    if !run.is_on_this_thread() {
        return;
    }
    // SAFETY: V8 runs interrupts on the isolate's thread, inside JavaScript, with the isolate
    // entered.
    let isolate = unsafe { v8::Isolate::ref_from_raw_isolate_ptr_mut(&mut isolate) };
    {
        v8::scope!(let scope, &mut *isolate);
        if let Some(context) = run.context(scope) {
            let context = v8::Local::new(scope, &context);
            let scope = &mut v8::ContextScope::new(scope, context);
            let message = if run.out_of_cpu() { crate::error::CPU_LIMIT_MESSAGE } else { crate::error::TIMEOUT_MESSAGE };
            if let Some(stack) = timeout_stack(scope, message) {
                run.touch();
                *run.stack.lock() = stack;
            }
        }
    }
    isolate.terminate_execution();
}

/// The stack of the JavaScript running now, as isolated-vm writes a timeout's, under `message`.
fn timeout_stack(scope: &mut v8::PinScope<'_, '_>, message: &str) -> Option<String> {
    let trace = v8::StackTrace::current_stack_trace(scope, TIMEOUT_FRAMES)?;
    let mut text = format!("Error: {message}");
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
    Some(text)
}
