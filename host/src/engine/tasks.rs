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
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use super::executor::{self, Runnable};
use crate::sync::Mutex;

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
        let mut slot = self.future.lock();
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

/// Wakes a thread parked in [`block_on`] (or a loop like it).
pub(crate) struct ThreadWaker(pub(crate) std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion on this thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

type Work = Box<dyn FnOnce() + Send>;

/// Idle threads for [`spawn_waiting`], each waiting on its own channel.
static IDLE: crate::sync::Mutex<Vec<(u64, std::sync::mpsc::Sender<Work>)>> = crate::sync::Mutex::new(Vec::new());
static THREAD_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a thread of [`spawn_waiting`] stays for more work.
const IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `work`, which may wait for a long time (a host function that a worker process's
/// JavaScript waits for, and which may itself wait for that worker), on a thread of its own:
/// an idle one if there is one, else a new one. Unlike the worker pool, any number of these
/// can wait at once, so chains of calls between isolates cannot starve each other.
pub(crate) fn spawn_waiting(work: impl FnOnce() + Send + 'static) {
    let mut work: Work = Box::new(work);
    loop {
        let idle = IDLE.lock().pop();
        match idle {
            Some((_, thread)) => match thread.send(work) {
                Ok(()) => return,
                // It has just left.
                Err(std::sync::mpsc::SendError(back)) => work = back,
            },
            None => break,
        }
    }
    let spawned = std::thread::Builder::new().name("ivm-host-call".into()).spawn(move || {
        let (me, inbox) = std::sync::mpsc::channel::<Work>();
        let id = THREAD_IDS.fetch_add(1, Ordering::Relaxed);
        let mut next = Some(work);
        while let Some(work) = next.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            IDLE.lock().push((id, me.clone()));
            next = match inbox.recv_timeout(IDLE_FOR) {
                Ok(work) => Some(work),
                Err(_) => {
                    let mut idle = IDLE.lock();
                    let position = idle.iter().position(|(other, _)| *other == id);
                    match position {
                        Some(at) => {
                            idle.swap_remove(at);
                            None
                        }
                        // Someone took this thread just now: its work is on the way.
                        None => {
                            drop(idle);
                            inbox.recv().ok()
                        }
                    }
                }
            };
        }
    });
    if let Err(e) = spawned {
        eprintln!("ivm: cannot start a thread for a host function: {e}");
    }
}
