//! The thread pool that runs async operations, V8's foreground tasks and ivm's own host
//! futures.
//!
//! Each isolate keeps its own FIFO of queued operations (so they run in submission order) and
//! is put on the pool's run queue when work arrives. A worker takes the isolate, if no other
//! thread holds it, and drains a batch of its operations, so many isolates run in parallel on
//! different threads while one isolate never runs on two threads at once. A worker never
//! waits for an isolate: one that is held elsewhere is left to its holder, which queues it
//! again when it lets go. Nothing that *waits* (for a promise, a host function, a timer)
//! holds a worker; only running JavaScript does.
//!
//! The pool keeps the number of CPUs plus one workers. Running JavaScript can still occupy
//! all of them (scripts spinning until their timeouts), so a supervisor watches the run
//! queue: when work has waited [`STALL`] without any worker taking something from the queue,
//! it starts another worker, up to [`max_threads`] (isolated-vm does the same when its pool is
//! saturated). Workers beyond the base count leave after [`SPARE_IDLE`] without work.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::sync::{Condvar, Mutex};

/// How long queued work may wait with every worker busy and none making progress before
/// the pool grows.
const STALL: Duration = Duration::from_millis(10);
/// How long a worker beyond the base count stays without work.
const SPARE_IDLE: Duration = Duration::from_secs(5);
/// The default of [`max_threads`].
const DEFAULT_MAX_THREADS: usize = 128;

/// Something with queued work: an isolate's operation queue, or a host future.
pub(crate) trait Runnable: Send + Sync {
    /// Runs some of the queued work. Returns `true` if work remains (the pool re-queues it).
    fn run_queued(self: Arc<Self>) -> bool;
}

struct Pool {
    ready: Mutex<Ready>,
    /// Idle workers wait here.
    wake: Condvar,
    /// The supervisor waits here while there is nothing to watch.
    watch: Condvar,
    /// Workers kept even when idle: CPUs + 1.
    base: usize,
}

#[derive(Default)]
struct Ready {
    queue: VecDeque<Arc<dyn Runnable>>,
    workers: usize,
    idle: usize,
    /// Items taken from the queue so far: the supervisor's measure of progress.
    taken: u64,
    supervised: bool,
}

static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The most threads the pool grows to while JavaScript occupies its workers: the value set by
/// [`set_max_threads`], else the `IVM_MAX_THREADS` environment variable, else 128.
pub fn max_threads() -> usize {
    match MAX_THREADS.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var("IVM_MAX_THREADS").ok().and_then(|v| v.parse::<usize>().ok());
            let max = from_env.unwrap_or(DEFAULT_MAX_THREADS).max(1);
            MAX_THREADS.store(max, Ordering::Relaxed);
            max
        }
        max => max,
    }
}

/// Sets how many threads ivm's pool may grow to when running JavaScript keeps all of its
/// workers busy (see the README's "Threads" section). The pool always keeps the number of
/// CPUs plus one; a cap below that keeps the pool at the cap. Applies from the next time the
/// pool considers growing.
pub fn set_max_threads(max: usize) {
    MAX_THREADS.store(max.max(1), Ordering::Relaxed);
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        ready: Mutex::default(),
        wake: Condvar::new(),
        watch: Condvar::new(),
        base: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
    })
}

/// Puts `work` on the run queue. The caller guarantees it is not queued already.
pub(crate) fn schedule(work: Arc<dyn Runnable>) {
    let shared = pool();
    let mut ready = shared.ready.lock();
    ready.queue.push_back(work);
    if ready.idle > 0 {
        drop(ready);
        shared.wake.notify_one();
    } else if ready.workers < shared.base.min(max_threads()) {
        shared.start_worker(ready);
    } else if !ready.supervised {
        ready.supervised = true;
        drop(ready);
        if std::thread::Builder::new().name("ivm-pool-supervisor".into()).spawn(|| pool().supervise()).is_err() {
            // Without a supervisor the pool keeps its base size.
            eprintln!("ivm: cannot start the thread pool's supervisor");
        }
    } else {
        drop(ready);
        shared.watch.notify_one();
    }
}

impl Pool {
    /// Starts a worker (counted under the lock the caller hands over).
    fn start_worker(&self, mut ready: crate::sync::MutexGuard<'_, Ready>) {
        ready.workers += 1;
        drop(ready);
        let spawned = std::thread::Builder::new().name("ivm-worker".into()).stack_size(8 << 20).spawn(|| pool().work());
        if spawned.is_err() {
            // Other workers will pick the work up, or the supervisor retries; a machine out of
            // threads degrades, it does not panic.
            self.ready.lock().workers -= 1;
        }
    }

    fn work(&self) {
        let mut ready = self.ready.lock();
        loop {
            if let Some(work) = ready.queue.pop_front() {
                ready.taken += 1;
                drop(ready);
                if work.clone().run_queued() {
                    schedule(work);
                } else {
                    // Before the lock: the last handle of a task drops its future, whose
                    // drop may schedule work (a host call abandoned mid-flight settles its
                    // promise as a job), which takes this lock.
                    drop(work);
                }
                ready = self.ready.lock();
            } else if ready.workers > self.base {
                ready.idle += 1;
                let (guard, timed_out) = self.wake.wait_timeout(ready, SPARE_IDLE);
                ready = guard;
                ready.idle -= 1;
                if timed_out && ready.queue.is_empty() && ready.workers > self.base {
                    ready.workers -= 1;
                    return;
                }
            } else {
                ready.idle += 1;
                ready = self.wake.wait(ready);
                ready.idle -= 1;
            }
        }
    }

    /// Grows the pool when queued work makes no progress because every worker is busy.
    fn supervise(&self) {
        let mut ready = self.ready.lock();
        loop {
            if ready.queue.is_empty() || ready.idle > 0 {
                ready = self.watch.wait(ready);
                continue;
            }
            let taken = ready.taken;
            ready = self.watch.wait_timeout(ready, STALL).0;
            let stalled = !ready.queue.is_empty() && ready.idle == 0 && ready.taken == taken;
            if stalled && ready.workers < max_threads() {
                self.start_worker(ready);
                ready = self.ready.lock();
            }
        }
    }
}

/// The pool's current number of workers.
#[allow(dead_code)]
pub(crate) fn threads() -> usize {
    pool().ready.lock().workers
}
