//! Who holds an isolate, and the async operations (jobs) queued on it.
//!
//! One thread at a time holds an isolate: a synchronous caller on its own thread, or a worker
//! of the pool running the isolate's jobs. Holding is decided here, before V8's `Locker` is
//! taken, so that a pool worker never blocks on an isolate: if another thread holds it, the
//! worker leaves it, and whoever lets go of it puts it back on the run queue when jobs are
//! waiting. Synchronous callers wait their turn, and go before queued jobs. A thread that
//! steps out of the isolate (a host function calling elsewhere, a run waiting for its promise)
//! lets go of it too, so queued jobs run meanwhile.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::Session;
use crate::error::Result;

pub(crate) type Job = Box<dyn FnOnce(Result<&mut Session<'_>>) + Send>;

#[derive(Default)]
pub(crate) struct Jobs {
    state: Mutex<State>,
    /// Synchronous callers wait here for the isolate.
    freed: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// On the pool's run queue (cleared when a worker takes it up).
    scheduled: bool,
    /// Some thread holds the isolate.
    held: bool,
    /// Synchronous callers waiting to hold it.
    waiting: usize,
}

/// What to do after a change: put the isolate on the pool's run queue.
#[must_use]
pub(crate) struct Schedule(pub(crate) bool);

impl Jobs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`.
    pub(crate) fn push(&self, job: Job) -> Schedule {
        let mut state = self.state();
        state.queue.push_back(job);
        Schedule(state.schedule())
    }

    /// The next queued job.
    pub(crate) fn pop(&self) -> Option<Job> {
        self.state().queue.pop_front()
    }

    /// Takes every queued job (the isolate is being disposed).
    pub(crate) fn take_all(&self) -> VecDeque<Job> {
        std::mem::take(&mut self.state().queue)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state().queue.is_empty()
    }

    /// Holds the isolate, waiting while another thread does.
    pub(crate) fn hold(&self) {
        let mut state = self.state();
        while state.held {
            state.waiting += 1;
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
        state.held = true;
    }

    /// A pool worker took the isolate off the run queue: holds it if nobody does and there is
    /// work (`false`: leave it; the holder queues it again when it lets go).
    pub(crate) fn try_hold_for_pool(&self) -> bool {
        let mut state = self.state();
        state.scheduled = false;
        if state.held || state.queue.is_empty() {
            return false;
        }
        state.held = true;
        true
    }

    /// Whether a synchronous caller waits for the isolate (a pool worker then lets go of it
    /// between jobs).
    pub(crate) fn caller_waits(&self) -> bool {
        self.state().waiting > 0
    }

    /// Lets go of the isolate: a waiting caller takes it, else queued jobs go on the run queue.
    pub(crate) fn let_go(&self) -> Schedule {
        let mut state = self.state();
        state.held = false;
        if state.waiting > 0 {
            drop(state);
            self.freed.notify_one();
            return Schedule(false);
        }
        Schedule(state.schedule())
    }
}

impl State {
    /// Marks the isolate scheduled if it has jobs, is not held (its holder will do it when it
    /// lets go) and is not on the run queue already.
    fn schedule(&mut self) -> bool {
        if self.queue.is_empty() || self.held || self.scheduled {
            return false;
        }
        self.scheduled = true;
        true
    }
}
