//! Host calls in flight: the threads blocked in blocking host functions of an isolate, and
//! the results of async host functions on their way back in, settling their promises as jobs
//! of the isolate under the deadline of the run that made the call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::RunState;
use crate::error::{Error, Result};
use crate::exception;
use crate::isolate::{IsolateInner, rejections};
use crate::js;
use crate::run;
use crate::sync::Mutex;
use crate::value::Value;

/// Wakes threads blocked in [`Callback::new_blocking`](crate::Callback::new_blocking) functions of an isolate when one of
/// its operations times out or it is disposed.
#[derive(Default)]
pub(crate) struct BlockingWaits {
    generation: AtomicUsize,
    waiters: Mutex<Vec<std::thread::Thread>>,
}

impl BlockingWaits {
    pub(crate) fn generation(&self) -> usize {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn park(&self, at_most: Duration) {
        self.waiters.lock().push(std::thread::current());
        std::thread::park_timeout(at_most);
        let me = std::thread::current().id();
        self.waiters.lock().retain(|t| t.id() != me);
    }

    /// Makes every current wait give up.
    pub(crate) fn abort(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for waiter in self.waiters.lock().iter() {
            waiter.unpark();
        }
    }
}

/// Results of async host functions, waiting to settle their promises in the isolate.
#[derive(Default)]
pub(crate) struct Completions {
    ready: Mutex<VecDeque<Completion>>,
    /// Async host calls whose futures have not completed yet.
    outstanding: AtomicUsize,
}

struct Completion {
    context: v8::Global<v8::Context>,
    resolver: v8::Global<v8::PromiseResolver>,
    result: Result<Value>,
    /// The run that called the host function: what the completion runs is its JavaScript.
    owner: Option<Weak<RunState>>,
}

impl Completions {
    /// Whether a promise of this isolate may still be settled by a host function.
    pub(crate) fn outstanding(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) > 0
    }

    /// Settles the promises of the completions that have arrived and runs the microtasks each
    /// queues, under the deadline of the run that made the call (or the isolate's default
    /// timeout once it has ended). Returns the context of the last one settled, if any.
    pub(crate) fn settle<'s>(&self, scope: &mut v8::PinScope<'s, '_, ()>, inner: &IsolateInner) -> Option<v8::Local<'s, v8::Context>> {
        let mut last_context = None;
        loop {
            let Some(c) = self.ready.lock().pop_front() else { break };
            let context = v8::Local::new(scope, &c.context);
            last_context = Some(context);
            let detached = run::Detached::begin(inner, c.owner.as_ref(), Some(&c.context));
            {
                let scope = &mut v8::ContextScope::new(scope, context);
                let resolver = v8::Local::new(scope, &c.resolver);
                match c.result.and_then(|v| js::copy_in(scope, &v)) {
                    Ok(value) => resolver.resolve(scope, value),
                    Err(e) => {
                        let reason = exception::to_js(scope, &e);
                        resolver.reject(scope, reason)
                    }
                };
                scope.perform_microtask_checkpoint();
            }
            detached.end(scope, inner);
        }
        last_context
    }
}

/// An async host call in flight. Completing it (or dropping it, if its future panicked or was
/// lost) queues the promise's settlement on the isolate.
pub(crate) struct PendingCall {
    isolate: Weak<IsolateInner>,
    settle: Option<(v8::Global<v8::Context>, v8::Global<v8::PromiseResolver>)>,
    owner: Option<Weak<RunState>>,
}

impl PendingCall {
    pub(crate) fn new(isolate: &Arc<IsolateInner>, context: v8::Global<v8::Context>, resolver: v8::Global<v8::PromiseResolver>) -> Self {
        isolate.completions.outstanding.fetch_add(1, Ordering::SeqCst);
        let owner = run::current(Arc::as_ptr(isolate)).map(|run| Arc::downgrade(&run));
        PendingCall { isolate: Arc::downgrade(isolate), settle: Some((context, resolver)), owner }
    }

    pub(crate) fn complete(mut self, result: Result<Value>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<Value>) {
        let Some((context, resolver)) = self.settle.take() else { return };
        let Some(isolate) = self.isolate.upgrade() else { return };
        let completions = &isolate.completions;
        let owner = self.owner.take();
        completions.ready.lock().push_back(Completion { context, resolver, result, owner });
        // A job of the isolate settles it (and wakes the run waiting for its promise).
        isolate.post(|session| {
            let inner = session.inner;
            v8::scope!(let scope, &mut *session.isolate);
            // What the settled promises left unhandled is reported now.
            if let Some(context) = inner.completions.settle(scope, inner) {
                rejections::report(&mut v8::ContextScope::new(scope, context));
            }
        });
        // Only now: until the job is queued, the call must count as outstanding, or a parked
        // run could be found abandoned in between.
        completions.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.finish(Err(Error::js("Error", DROPPED)));
    }
}

/// The error for a host function's future that was dropped before it completed.
pub(crate) const DROPPED: &str = "A host function panicked or was cancelled";
