//! The worker pool that runs async operations.
//!
//! Each isolate keeps its own FIFO of queued operations (so they run in submission order) and
//! is put on the pool's run queue when work arrives. A worker locks the isolate once and drains
//! a batch of its operations, so many isolates run in parallel on different threads while one
//! isolate never runs on two threads at once. Workers are started lazily, after V8 is
//! initialised, and never exceed the number of CPUs plus one.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Something with queued work: an isolate's operation queue.
pub(crate) trait Runnable: Send + Sync {
    /// Runs some of the queued work. Returns `true` if work remains (the pool re-queues it).
    fn run_queued(self: Arc<Self>) -> bool;
}

struct Pool {
    ready: Mutex<Ready>,
    wake: Condvar,
    max_workers: usize,
}

#[derive(Default)]
struct Ready {
    queue: VecDeque<Arc<dyn Runnable>>,
    workers: usize,
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        ready: Mutex::default(),
        wake: Condvar::new(),
        max_workers: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
    })
}

/// Puts `work` on the run queue. The caller guarantees it is not queued already.
pub(crate) fn schedule(work: Arc<dyn Runnable>) {
    let shared = pool();
    let mut ready = shared.ready.lock().unwrap_or_else(|e| e.into_inner());
    ready.queue.push_back(work);
    if ready.idle > 0 {
        drop(ready);
        shared.wake.notify_one();
    } else if ready.workers < shared.max_workers {
        ready.workers += 1;
        drop(ready);
        let spawned = std::thread::Builder::new()
            .name("ivm-worker".into())
            .stack_size(8 << 20)
            .spawn(|| pool().work());
        if spawned.is_err() {
            // Other workers (there is at least this one's queue entry) will pick it up, or the
            // next schedule() retries; a machine out of threads degrades, it does not panic.
            shared.ready.lock().unwrap_or_else(|e| e.into_inner()).workers -= 1;
        }
    }
}

impl Pool {
    fn work(&self) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(work) = ready.queue.pop_front() {
                drop(ready);
                if work.clone().run_queued() {
                    schedule(work);
                }
                ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            } else {
                ready.idle += 1;
                ready = self.wake.wait(ready).unwrap_or_else(|e| e.into_inner());
                ready.idle -= 1;
            }
        }
    }
}
