//! Runs parked on an isolate while they wait for their promises (see [`crate::run`]), and
//! when to wake them: their promise settled, or nothing is left that could settle it.
//!
//! Whatever settles a promise runs with the isolate held (an async host function's
//! completion, a V8 task, another operation), so the check is made each time a thread lets go
//! of the isolate. A promise is *abandoned* when, at that moment, no job is queued, no async
//! host function is outstanding, V8 has no foreground task queued and no background task
//! running, and no other run of the isolate is on a thread (suspended in a host function,
//! say). V8's delayed tasks do not count: a promise that only a delayed task settles
//! (`Atomics.waitAsync` with a timeout) is abandoned, as isolated-vm reports it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::IsolateInner;
use crate::run::{RunState, Wake};
use crate::sync::Mutex;

/// How soon the check is made again while V8 background tasks are running.
const RECHECK: Duration = Duration::from_millis(1);

#[derive(Default)]
pub(crate) struct Parked {
    runs: Mutex<Vec<(v8::Global<v8::Promise>, Arc<RunState>)>>,
    /// How many runs are parked (read without the lock on every let-go).
    count: AtomicUsize,
    /// A check is due soon (for background tasks).
    recheck: AtomicBool,
}

impl IsolateInner {
    /// Parks `run` until `promise` settles.
    pub(crate) fn park(&self, promise: v8::Global<v8::Promise>, run: Arc<RunState>) {
        let mut runs = self.parked.runs.lock();
        runs.push((promise, run));
        self.parked.count.store(runs.len(), Ordering::SeqCst);
    }

    /// Takes `run` off the parked list (it is being resumed).
    pub(crate) fn unpark(&self, run: &Arc<RunState>) {
        let mut runs = self.parked.runs.lock();
        runs.retain(|(_, r)| !Arc::ptr_eq(r, run));
        self.parked.count.store(runs.len(), Ordering::SeqCst);
    }

    /// Wakes every parked run: the isolate is gone.
    pub(crate) fn wake_all_parked(&self) {
        let runs = std::mem::take(&mut *self.parked.runs.lock());
        self.parked.count.store(0, Ordering::SeqCst);
        for (_, run) in runs {
            run.wake(Wake::Gone);
        }
    }

    /// Wakes the parked runs whose promises settled, or that nothing can settle any more. The
    /// caller holds the isolate and is about to let go of it.
    pub(crate) fn check_parked(&self, isolate: &mut v8::Isolate) {
        if self.parked.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut woken = Vec::new();
        let mut recheck = false;
        {
            let mut runs = self.parked.runs.lock();
            v8::scope!(let scope, isolate);
            runs.retain(|(promise, run)| {
                let settled = v8::Local::new(scope, promise).state() != v8::PromiseState::Pending;
                if settled {
                    woken.push((run.clone(), Wake::Settled));
                }
                !settled
            });
            if !runs.is_empty() {
                // Read in the order work moves on (a host call's future queues its job before it
                // stops counting as outstanding; background work queues a task before it ends;
                // only the holder, this thread, takes jobs and tasks): work that moves on while
                // this looks is seen at its next step.
                let outstanding = self.completions.outstanding();
                let background = scope.has_pending_background_tasks();
                // (The runs of a thread that waits for a parked run do not count as on a
                // stack: see `nesting::step_out_to_wait`.)
                let queued = self.tasks.pending() || !self.jobs.is_empty() || self.runs_on_stack.load(Ordering::SeqCst) > 0;
                match (outstanding || queued, background) {
                    (true, _) => {}
                    // Background work posts a task when it is done, but not all of it does
                    // (GC): look again shortly.
                    (false, true) => recheck = true,
                    (false, false) => woken.extend(runs.drain(..).map(|(_, run)| (run, Wake::Abandoned))),
                }
            }
            self.parked.count.store(runs.len(), Ordering::SeqCst);
        }
        if recheck {
            self.recheck_soon();
        }
        for (run, why) in woken {
            run.wake(why);
        }
    }

    fn recheck_soon(&self) {
        if self.parked.recheck.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.me.clone();
        let at = Instant::now() + RECHECK;
        crate::watchdog::after(at, move || {
            if let Some(inner) = me.upgrade() {
                inner.parked.recheck.store(false, Ordering::SeqCst);
                // An empty job: letting go of the isolate after it makes the check.
                inner.post(|_| {});
            }
        });
    }
}
