//! V8's foreground tasks of an isolate (see `engine::platform`): finishing an async
//! WebAssembly compile, `FinalizationRegistry` callbacks, GC steps.
//!
//! They run on whichever thread holds the isolate when they arrive, at the end of its stretch
//! (a loop of synchronous calls runs V8's GC steps itself instead of handing the isolate back
//! and forth with a pool worker); an isolate nobody holds gets a job that runs them. What they
//! run is JavaScript of no operation: it runs under the isolate's default timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::IsolateInner;
use crate::engine::platform::TaskTarget;
use crate::run;
use crate::sync::Mutex;

#[derive(Default)]
pub(crate) struct Tasks {
    queue: Mutex<VecDeque<v8::Task>>,
    /// Tasks queued and not yet run (read without the lock).
    pending: AtomicUsize,
    /// A job that runs them is queued.
    job_queued: AtomicBool,
}

impl Tasks {
    /// Whether tasks wait to run.
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }
}

impl TaskTarget for IsolateInner {
    fn post_task(self: Arc<Self>, task: v8::Task) {
        self.tasks.queue.lock().push_back(task);
        self.tasks.pending.fetch_add(1, Ordering::SeqCst);
        // A thread holding the isolate runs it before it lets go (and if it already went past
        // that point, letting go queues the job).
        if !self.jobs.is_held() {
            self.queue_task_job();
        }
    }
}

impl IsolateInner {
    /// Queues a job that runs the pending tasks, unless one is queued already.
    pub(crate) fn queue_task_job(self: &Arc<Self>) {
        if self.tasks.job_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        self.post(|session| {
            session.inner.tasks.job_queued.store(false, Ordering::SeqCst);
            session.inner.run_tasks(session.isolate);
        });
    }

    /// Runs the tasks queued now. The caller holds the isolate, in no context.
    pub(crate) fn run_tasks(&self, isolate: &mut v8::Isolate) {
        if !self.tasks.pending() {
            return;
        }
        let queued = std::mem::take(&mut *self.tasks.queue.lock());
        for task in queued {
            // Counted down first: the check of parked runs after this sees the task done.
            self.tasks.pending.fetch_sub(1, Ordering::SeqCst);
            if self.is_disposed() {
                continue;
            }
            let detached = run::Detached::begin(self, None, None);
            task.run();
            isolate.perform_microtask_checkpoint();
            detached.end(isolate, self);
        }
    }

    /// Drops the tasks of a disposed isolate.
    pub(crate) fn drop_tasks(&self) {
        let queued = std::mem::take(&mut *self.tasks.queue.lock());
        self.tasks.pending.fetch_sub(queued.len(), Ordering::SeqCst);
        drop(queued);
    }
}
