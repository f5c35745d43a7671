//! Calls of the host (host functions, module hooks) and the requests the host makes inside
//! them, which run on the thread that waits for the call.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use super::execute::value_wire;
use super::{CURRENT_REQUEST, Hosted, ISOLATE_THREAD, Worker};
use crate::callback::Callback;
use crate::error::{Error, Result};
use crate::module::Module;
use crate::process::protocol::{CallKind, FromWorker, Id, Op, Target, Wire};
use crate::sync::Mutex;
use crate::value::{Value, wire};

impl Worker {
    /// A JavaScript function that calls host function `callback` over the pipe.
    pub(super) fn host_function(self: &Arc<Self>, isolate: Id, callback: u64, kind: CallKind) -> Callback {
        let worker = Arc::downgrade(self);
        let call = move |args: Value| -> Result<HostCall> {
            let worker = worker.upgrade().ok_or_else(Error::isolate_disposed)?;
            let args = value_wire(&args)?;
            Ok(worker.call_host(isolate, Target::Callback { callback, args }, kind))
        };
        match kind {
            CallKind::Sync => Callback::new(move |args: Value| call(args).and_then(block_on).and_then(answer_value)),
            CallKind::Blocking => Callback::new_blocking(move |args: Value| {
                let pending = call(args);
                async move { answer_value(pending?.await?) }
            }),
            CallKind::Async => Callback::new_async(move |args: Value| {
                let pending = call(args);
                async move { answer_value(pending?.await?) }
            }),
            CallKind::Ignored => Callback::new_ignored(move |args: Value| {
                let _ = call(args);
            }),
        }
    }

    /// Forwards `import()` and `import.meta` to the host's hooks. JavaScript waits for them as
    /// for a blocking host function: with the isolate released (the host's hook may use it)
    /// and within the run's limits, as in the host's own process.
    pub(super) fn install_hooks(self: &Arc<Self>, hosted: &Arc<Hosted>, import: bool, meta: bool) {
        let (worker, id) = (Arc::downgrade(self), hosted.id);
        // Weak: the hooks are kept in the isolate they would otherwise keep alive.
        let local = hosted.isolate.as_local().map(Arc::downgrade);
        let ask = move |target: Target| {
            let worker = worker.upgrade().ok_or_else(Error::isolate_disposed)?;
            let local = local.as_ref().and_then(Weak::upgrade);
            crate::callback::wait_released(local.as_ref(), worker.call_host(id, target, CallKind::Blocking))
        };
        if import {
            let ask = ask.clone();
            hosted.isolate.set_dynamic_import(move |_, request, referrer| {
                match ask(Target::Import { request: request.clone(), referrer: referrer.to_owned() })? {
                    Answered::Module(module) => Ok(module),
                    Answered::Value(_) => Err(Error::Conversion("the import hook gave no module".into())),
                }
            });
        }
        if meta {
            hosted.isolate.set_import_meta(move |filename| answer_value(ask(Target::Meta { filename: filename.to_owned() })?));
        }
    }

    /// Calls the host; the future is its answer. `kind` says how JavaScript waits (a hook's
    /// call is waited for like a synchronous host function).
    fn call_host(self: &Arc<Self>, isolate: Id, target: Target, kind: CallKind) -> HostCall {
        let answered = kind != CallKind::Ignored;
        let call = self.next_id();
        let mailbox = Arc::new(Mailbox { isolate, state: Mutex::default() });
        if answered {
            self.calls.lock().insert(call, mailbox.clone());
        }
        let nested = matches!(kind, CallKind::Sync | CallKind::Blocking);
        // JavaScript waiting on the isolate's own thread serves the isolate's queue. (An async
        // host function's promise is settled from the task pool, which must not.)
        let serves = if nested && ISOLATE_THREAD.get() == Some(isolate) { self.hosted(isolate).ok() } else { None };
        if let Err(e) = self.try_send(&FromWorker::Call { call, isolate, request: CURRENT_REQUEST.get(), target }) {
            // Too large to send: the call fails here instead of waiting for an answer.
            mailbox.deliver(Mail::Answer(Err(e)));
        }
        HostCall { worker: self.clone(), call, mailbox, serves, nested, registered: false }
    }
}

/// The host's answer to a call, with a module it names already taken from the handles.
pub(super) enum Answered {
    Value(Wire),
    Module(Module),
}

fn answer_value(answer: Answered) -> Result<Value> {
    match answer {
        Answered::Value(value) => wire::read_value(&value.bytes, &value, wire::Budget::HOST),
        Answered::Module(_) => Err(Error::Conversion("the host answered with a module".into())),
    }
}

/// What arrives for a call the worker is waiting on.
pub(super) enum Mail {
    /// A request the host made from inside the call.
    Request { id: u64, isolate: Id, op: Op },
    Answer(Result<Answered>),
}

pub(super) struct Mailbox {
    /// The isolate whose JavaScript made the call.
    pub(super) isolate: Id,
    state: Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    requests: VecDeque<(u64, Id, Op)>,
    answer: Option<Result<Answered>>,
    waker: Option<Waker>,
}

impl Mailbox {
    fn lock(&self) -> crate::sync::MutexGuard<'_, MailboxState> {
        self.state.lock()
    }

    pub(super) fn deliver(&self, mail: Mail) {
        let mut state = self.lock();
        match mail {
            Mail::Request { id, isolate, op } => state.requests.push_back((id, isolate, op)),
            Mail::Answer(answer) => state.answer = Some(answer),
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

thread_local! {
    /// The calls this thread waits in, outermost first. A wait runs the requests made inside
    /// any of them: the host may answer an outer call with a request while an inner call is
    /// still pending (a host function of A calls B, whose host function calls A).
    static WAITING: std::cell::RefCell<Vec<Arc<Mailbox>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A call of the host in flight. Polling a call JavaScript waits for (`nested`) runs the
/// requests the host makes inside it, on the polling thread, until the answer is there; on
/// an isolate's thread it also serves that isolate's queue.
struct HostCall {
    worker: Arc<Worker>,
    call: u64,
    mailbox: Arc<Mailbox>,
    /// The isolate whose queue this wait serves.
    serves: Option<Arc<Hosted>>,
    /// JavaScript waits for it on this thread (not an async host function's promise).
    nested: bool,
    registered: bool,
}

impl HostCall {
    /// The next request made inside a call this thread waits in, after telling each of them
    /// to wake `waker` for the next one.
    fn next_request(&self, waker: &Waker) -> Option<(u64, Id, Op)> {
        let own = [self.mailbox.clone()];
        let take = |mailboxes: &[Arc<Mailbox>]| {
            mailboxes.iter().rev().find_map(|mailbox| {
                let mut state = mailbox.lock();
                state.waker = Some(waker.clone());
                state.requests.pop_front()
            })
        };
        if self.registered { WAITING.with_borrow(|waiting| take(waiting)) } else { take(&own) }
    }
}

impl Future for HostCall {
    type Output = Result<Answered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Answered>> {
        if self.nested && !self.registered {
            WAITING.with_borrow_mut(|waiting| waiting.push(self.mailbox.clone()));
            self.registered = true;
        }
        loop {
            if let Some((id, isolate, op)) = self.next_request(cx.waker()) {
                self.worker.run_nested(id, isolate, op);
                continue;
            }
            if let Some(answer) = self.mailbox.lock().answer.take() {
                return Poll::Ready(answer);
            }
            if let Some(hosted) = &self.serves
                && let Some((id, op)) = hosted.queue.poll_next(cx.waker())
            {
                self.worker.run_request(hosted, id, op);
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Drop for HostCall {
    fn drop(&mut self) {
        if self.registered {
            WAITING.with_borrow_mut(|waiting| waiting.retain(|m| !Arc::ptr_eq(m, &self.mailbox)));
        }
        self.worker.calls.lock().remove(&self.call);
    }
}

/// Waits for a host call on this thread (a synchronous host function: JavaScript waits).
fn block_on(call: HostCall) -> Result<Answered> {
    crate::engine::tasks::block_on(call)
}
