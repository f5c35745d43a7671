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
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

use crate::sync::{Condvar, Mutex, MutexGuard};

/// Some thread holds the isolate.
const HELD: u8 = 1;
/// Jobs are queued or scheduled, callers wait, or it is the jobs' turn: holding and letting
/// go take the lock.
const BUSY: u8 = 2;

/// The isolate's holder and queue. A synchronous caller alone with the isolate (the common
/// case: a loop of calls) holds and lets go of it with one atomic operation each; everything
/// else goes through the lock, and keeps [`BUSY`] set while there is anything to see to.
/// `J`: a job (the engine's is a closure over its session).
pub(crate) struct Jobs<J> {
    /// [`HELD`] and [`BUSY`]. Without the lock it only changes from nothing to `HELD` and back;
    /// under the lock, `BUSY` is made to say whether [`State`] has anything to see to.
    word: AtomicU8,
    state: Mutex<State<J>>,
    /// Synchronous callers wait here for the isolate.
    freed: Condvar,
}

impl<J> Default for Jobs<J> {
    fn default() -> Self {
        let state = State { queue: VecDeque::new(), scheduled: false, waiting: 0, jobs_turn: false };
        Jobs { word: AtomicU8::new(0), state: Mutex::new(state), freed: Condvar::default() }
    }
}

struct State<J> {
    queue: VecDeque<J>,
    /// On the pool's run queue (cleared when a worker takes it up).
    scheduled: bool,
    /// Synchronous callers waiting to hold it.
    waiting: usize,
    /// A pool worker found the isolate held: the queued jobs go next.
    jobs_turn: bool,
}

/// What to do after a change: put the isolate on the pool's run queue.
#[must_use]
pub(crate) struct Schedule(pub(crate) bool);

impl<J> Jobs<J> {
    fn state(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock()
    }

    /// Sets [`BUSY`] to what `state` says (called with the lock held, after a change).
    fn mark(&self, state: &State<J>) {
        if !state.queue.is_empty() || state.scheduled || state.waiting > 0 || state.jobs_turn {
            self.word.fetch_or(BUSY, SeqCst);
        } else {
            self.word.fetch_and(!BUSY, SeqCst);
        }
    }

    /// Takes [`HELD`] with the lock held and [`BUSY`] set (so nothing changes it without the
    /// lock meanwhile). Returns whether it was free.
    fn take_held(&self) -> bool {
        self.word.fetch_or(HELD, SeqCst) & HELD == 0
    }

    /// Queues `job`.
    pub(crate) fn push(&self, job: J) -> Schedule {
        let mut state = self.state();
        state.queue.push_back(job);
        // Marked busy first: a holder letting go from now on takes the lock, and sees the job.
        self.mark(&state);
        let schedule = state.schedule(self.is_held());
        self.mark(&state);
        Schedule(schedule)
    }

    /// The next queued job.
    pub(crate) fn pop(&self) -> Option<J> {
        let mut state = self.state();
        let job = state.queue.pop_front();
        self.mark(&state);
        job
    }

    /// Takes every queued job (the isolate is being disposed).
    pub(crate) fn take_all(&self) -> VecDeque<J> {
        let mut state = self.state();
        let jobs = std::mem::take(&mut state.queue);
        self.mark(&state);
        jobs
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state().queue.is_empty()
    }

    /// Whether some thread holds the isolate.
    pub(crate) fn is_held(&self) -> bool {
        self.word.load(SeqCst) & HELD != 0
    }

    /// Holds the isolate, waiting while another thread does (or while queued jobs have their
    /// turn).
    pub(crate) fn hold(&self) {
        if self.word.compare_exchange(0, HELD, SeqCst, SeqCst).is_ok() {
            return;
        }
        let mut state = self.state();
        // Counted (and so marked busy) before looking: a holder letting go after this takes
        // the lock and wakes this thread.
        state.waiting += 1;
        self.mark(&state);
        while state.jobs_turn || !self.take_held() {
            state = self.freed.wait(state);
        }
        state.waiting -= 1;
        self.mark(&state);
    }

    /// A pool worker took the isolate off the run queue: holds it if nobody does and there is
    /// work (`false`: leave it; the holder queues it again when it lets go).
    pub(crate) fn try_hold_for_pool(&self) -> bool {
        let mut state = self.state();
        state.scheduled = false;
        let held = if state.queue.is_empty() {
            // Nothing left to take a turn for: callers waiting it out go on.
            if std::mem::take(&mut state.jobs_turn) && !self.is_held() && state.waiting > 0 {
                self.freed.notify_one();
            }
            false
        } else if self.take_held() {
            state.jobs_turn = false;
            true
        } else {
            state.jobs_turn = true;
            false
        };
        self.mark(&state);
        held
    }

    /// Whether a synchronous caller waits for the isolate (a pool worker then lets go of it
    /// between jobs).
    pub(crate) fn caller_waits(&self) -> bool {
        self.word.load(SeqCst) & BUSY != 0 && self.state().waiting > 0
    }

    /// Lets go of the isolate: queued jobs whose turn it is go on the run queue, else a waiting
    /// caller takes it, else queued jobs go on the run queue.
    pub(crate) fn let_go(&self) -> Schedule {
        if self.word.compare_exchange(HELD, 0, SeqCst, SeqCst).is_ok() {
            return Schedule(false);
        }
        let mut state = self.state();
        self.word.fetch_and(!HELD, SeqCst);
        if state.waiting > 0 && !state.jobs_turn {
            self.freed.notify_one();
            return Schedule(false);
        }
        let schedule = state.schedule(false);
        self.mark(&state);
        Schedule(schedule)
    }
}

impl<J> State<J> {
    /// Marks the isolate scheduled if it has jobs, is not `held` (its holder will do it when it
    /// lets go) and is not on the run queue already.
    fn schedule(&mut self, held: bool) -> bool {
        if self.queue.is_empty() || held || self.scheduled {
            return false;
        }
        self.scheduled = true;
        true
    }
}
