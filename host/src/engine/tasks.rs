//! Host futures and host work started from JavaScript (async and fire-and-forget host
//! functions), run on the worker pool.
//!
//! This is a minimal executor, not a hidden async runtime: a future is polled on a pool thread
//! whenever its waker fires. Futures that need a particular runtime's reactor (tokio I/O,
//! timers) should be spawned on that runtime and awaited through its join handle, which needs
//! no reactor to be polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use super::executor::{self, Runnable};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Task {
    future: Mutex<Option<BoxFuture>>,
    /// On the pool's run queue (set by a wake, cleared before each poll).
    queued: AtomicBool,
}

/// Runs `future` to completion on the worker pool.
pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    let task = Arc::new(Task { future: Mutex::new(Some(Box::pin(future))), queued: AtomicBool::new(true) });
    executor::schedule(task);
}

/// Runs `work` on the worker pool.
pub(crate) fn spawn_blocking(work: impl FnOnce() + Send + 'static) {
    spawn(async move { work() });
}

impl Runnable for Task {
    fn run_queued(self: Arc<Self>) -> bool {
        self.queued.store(false, Ordering::SeqCst);
        let waker = Waker::from(self.clone());
        let mut slot = self.future.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(future) = slot.as_mut() {
            // A panicking future is dropped; the host function's promise is then abandoned.
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                future.as_mut().poll(&mut Context::from_waker(&waker)).is_ready()
            }));
            if polled.unwrap_or(true) {
                *slot = None;
            }
        }
        false
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            executor::schedule(self);
        }
    }
}
