//! Who holds an isolate, and the async operations (jobs) queued on it.
//!
//! One thread at a time holds an isolate: a synchronous caller on its own thread, or a worker
//! of the pool running the isolate's jobs. Holding is decided here, before V8's `Locker` is
//! taken, so that a pool worker never blocks on an isolate: if another thread holds it, the
//! worker leaves it, and whoever lets go of it puts it back on the run queue when jobs are
//! waiting. Turns alternate: a synchronous caller waits while queued jobs that found the
//! isolate held have their turn, and a worker lets go between jobs when a caller waits (so a
//! loop of synchronous calls cannot starve queued jobs, nor jobs the calls). A thread that
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
    /// A pool worker found the isolate held: the queued jobs go next.
    jobs_turn: bool,
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

    /// Whether some thread holds the isolate.
    pub(crate) fn is_held(&self) -> bool {
        self.state().held
    }

    /// Holds the isolate, waiting while another thread does (or while queued jobs have their
    /// turn).
    pub(crate) fn hold(&self) {
        let mut state = self.state();
        while state.held || state.jobs_turn {
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
        if state.queue.is_empty() {
            // Nothing left to take a turn for: callers waiting it out go on.
            if std::mem::take(&mut state.jobs_turn) && !state.held && state.waiting > 0 {
                drop(state);
                self.freed.notify_one();
            }
            return false;
        }
        if state.held {
            state.jobs_turn = true;
            return false;
        }
        state.held = true;
        state.jobs_turn = false;
        true
    }

    /// Whether a synchronous caller waits for the isolate (a pool worker then lets go of it
    /// between jobs).
    pub(crate) fn caller_waits(&self) -> bool {
        self.state().waiting > 0
    }

    /// Lets go of the isolate: queued jobs whose turn it is go on the run queue, else a waiting
    /// caller takes it, else queued jobs go on the run queue.
    pub(crate) fn let_go(&self) -> Schedule {
        let mut state = self.state();
        state.held = false;
        if state.waiting > 0 && !state.jobs_turn {
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

