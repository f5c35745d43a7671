//! [`RemoteIsolate`]: the host's side of an isolate that lives in a worker process — what
//! the public handles hold instead of an in-process isolate — and the host functions, console
//! sinks and hooks the worker calls back into.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use std::time::Duration;

use super::link::Link;
use super::pool::Lease;
use super::protocol::{Answer, FromWorker, Id, Op, Reply, Target, Wire};
use crate::callback::{Callback, CallerTag, Invoked, with_caller_tag};
use crate::context::ContextOptions;
use crate::data::ConsoleLevel;
use crate::engine::tasks;
use crate::error::{Error, Result};
use crate::isolate::{Backend, CatastrophicHandler, Isolate, rejections};
use crate::module::{ImportHook, MetaHook};
use crate::sync::Mutex;
use crate::value::{Value, wire};

type Sink = Arc<dyn Fn(ConsoleLevel, &str) + Send + Sync>;

/// An isolate in a worker process.
pub(crate) struct RemoteIsolate {
    pub(crate) link: Arc<Link>,
    /// The isolate's id in the worker.
    pub(crate) id: Id,
    disposed: AtomicBool,
    grace: Duration,
    /// The isolate's timeout for operations that give none.
    default_timeout: Option<Duration>,
    /// What may be made here of data its scripts made (see [`wire::Budget`]).
    pub(crate) copy_budget: wire::Budget,
    on_catastrophic_error: Option<CatastrophicHandler>,
    on_unhandled_rejection: Option<rejections::Handler>,
    /// Host state the worker's JavaScript points at, by id.
    exported: Mutex<Exported>,
    pub(crate) import: Mutex<Option<ImportHook>>,
    pub(crate) meta: Mutex<Option<MetaHook>>,
    /// The isolate's place in its worker; given back when the isolate goes.
    _lease: Lease,
}

#[derive(Default)]
struct Exported {
    next: u64,
    callbacks: HashMap<u64, Callback>,
    /// Ids of callbacks already exported, by the address of their shared state.
    callback_ids: HashMap<usize, u64>,
    sinks: HashMap<u64, Sink>,
}

/// The worker calls a thread is answering, outermost first: (link, call, isolate).
///
/// A host function answering call C of worker W that calls into W again makes its request
/// inside C, so it runs where C's JavaScript waits (as a nested call runs inline in process).
/// The chain crosses workers: a host function of isolate A calls isolate B (another worker),
/// whose JavaScript calls a host function that calls A: that request belongs inside A's call,
/// which is found further up the chain.
pub(crate) type Ancestry = Vec<Answering>;

/// What a request was sent with, which the calls its JavaScript makes back into the host
/// continue.
#[derive(Clone, Default)]
pub(crate) struct Origin {
    /// The worker calls its sender was answering.
    pub(crate) ancestry: Ancestry,
    /// Its sender's caller tag.
    pub(crate) tag: Option<CallerTag>,
}

/// A worker call being answered.
#[derive(Clone, Debug)]
pub(crate) struct Answering {
    link: usize,
    call: u64,
}

thread_local! {
    static WITHIN: RefCell<Ancestry> = const { RefCell::new(Vec::new()) };
}

fn link_key(link: &Arc<Link>) -> usize {
    Arc::as_ptr(link) as usize
}

/// The chain this thread is answering, for a request it sends.
pub(crate) fn ancestry() -> Ancestry {
    WITHIN.with_borrow(Clone::clone)
}

/// The innermost call of `link`'s worker this thread is answering.
fn answering(link: &Arc<Link>) -> Option<Answering> {
    WITHIN.with_borrow(|calls| calls.iter().rev().find(|a| a.link == link_key(link)).cloned())
}

/// A future polled answering `chain`, for an operation tagged `tag` (see [`within`]).
struct Within<F> {
    chain: Ancestry,
    tag: Option<CallerTag>,
    future: Pin<Box<F>>,
}

impl<F: Future<Output = ()>> Future for Within<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let (chain, tag) = (self.chain.clone(), self.tag.clone());
        within(&chain, tag, || self.future.as_mut().poll(cx))
    }
}

/// Runs `f` answering `chain`, for an operation tagged `tag`.
fn within<R>(chain: &Ancestry, tag: Option<CallerTag>, f: impl FnOnce() -> R) -> R {
    let outer = WITHIN.replace(chain.clone());
    struct Restore(Option<Ancestry>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                WITHIN.set(outer);
            }
        }
    }
    let _restore = Restore(Some(outer));
    with_caller_tag(tag, f)
}

impl RemoteIsolate {
    pub(crate) fn new(link: Arc<Link>, id: Id, options: &crate::IsolateOptions, lease: Lease) -> Arc<RemoteIsolate> {
        let remote = Arc::new(RemoteIsolate {
            link,
            id,
            disposed: AtomicBool::new(false),
            grace: options.terminate_grace,
            default_timeout: options.default_timeout,
            copy_budget: wire::Budget::of_isolate(usize::try_from(options.memory_limit << 20).unwrap_or(usize::MAX)),
            on_catastrophic_error: options.on_catastrophic_error.clone(),
            on_unhandled_rejection: options.on_unhandled_rejection.clone(),
            exported: Mutex::default(),
            import: Mutex::default(),
            meta: Mutex::default(),
            _lease: lease,
        });
        remote.link.adopt(id, Arc::downgrade(&remote));
        remote
    }

    fn isolate(self: &Arc<Self>) -> Isolate {
        Isolate { backend: Backend::Remote(self.clone()) }
    }

    pub(crate) fn is_disposed(&self) -> bool {
        self.disposed.load(Ordering::SeqCst) || self.link.crash().is_some()
    }

    fn check_alive(&self) -> Result<()> {
        if let Some(reason) = self.link.crash() {
            return Err(Error::WorkerCrashed { reason: reason.to_owned() });
        }
        if self.disposed.load(Ordering::SeqCst) { Err(Error::isolate_disposed()) } else { Ok(()) }
    }

    /// Runs `op` in the worker and waits for its reply. Inside a host function the worker
    /// called, the request runs inside that call.
    pub(crate) fn request(&self, op: Op) -> Result<Reply> {
        self.check_alive()?;
        let within = answering(&self.link).map(|a| a.call);
        let escalate = self.escalation(&op);
        let reply = self.link.send(Some(self.id), within, op, escalate)?;
        let mut answer = None;
        super::spin::poll_for(|| match reply.try_recv() {
            Ok(result) => {
                answer = Some(result);
                true
            }
            Err(oneshot::TryRecvError::Empty) => false,
            Err(oneshot::TryRecvError::Disconnected) => true,
        });
        let answer = match answer {
            Some(result) => result,
            None => reply.recv().unwrap_or_else(|_| Err(self.link.crash_error())),
        };
        self.after(answer)
    }

    /// Queues `op` in the worker now and returns a future of its reply.
    pub(crate) fn request_async(self: &Arc<Self>, op: Op) -> impl Future<Output = Result<Reply>> + Send + 'static + use<> {
        let sent = self.check_alive().and_then(|()| {
            let escalate = self.escalation(&op);
            self.link.send(Some(self.id), None, op, escalate)
        });
        let this = self.clone();
        async move {
            let reply = sent?.await.unwrap_or_else(|_| Err(this.link.crash_error()));
            this.after(reply)
        }
    }

    /// [`request_async`](Self::request_async) with the op's inputs prepared first.
    pub(crate) fn request_async_with(self: &Arc<Self>, op: Result<Op>) -> impl Future<Output = Result<Reply>> + Send + 'static + use<> {
        let sent = op.map(|op| self.request_async(op));
        async move { sent?.await }
    }

    /// When to give up on a run that overstays its timeout: kill the worker.
    fn escalation(&self, op: &Op) -> Option<Duration> {
        op.timeout(self.default_timeout).and_then(|timeout| timeout.checked_add(self.grace))
    }

    fn after(&self, reply: Result<Reply>) -> Result<Reply> {
        if let Err(Error::MemoryLimit) = reply {
            // The worker disposed the isolate.
            self.disposed.store(true, Ordering::SeqCst);
        }
        reply
    }

    /// Releases a handle in the worker, after the operations queued before.
    pub(crate) fn release(&self, handle: Id) -> bool {
        if self.is_disposed() {
            return false;
        }
        self.link.post(Some(self.id), Op::Release { handle });
        true
    }

    pub(crate) fn dispose(&self) -> bool {
        if self.disposed.swap(true, Ordering::SeqCst) || self.link.crash().is_some() {
            return false;
        }
        self.link.post(Some(self.id), Op::Dispose);
        true
    }

    /// CPU and wall time, answered by the worker at once (even while the isolate is busy).
    pub(crate) fn times(&self) -> Result<(Duration, Duration)> {
        match self.request(Op::Times)? {
            Reply::Times { cpu, wall } => Ok((cpu, wall)),
            _ => Err(Error::Conversion("the worker's reply does not match the request".into())),
        }
    }

    /// The op that creates a context, with its console sink exported.
    pub(crate) fn create_context(&self, options: &ContextOptions) -> Op {
        let console = options.console.clone().map(|sink| {
            let mut exported = self.exported.lock();
            exported.next += 1;
            let id = exported.next;
            exported.sinks.insert(id, sink);
            id
        });
        Op::CreateContext { console }
    }

    /// Exports a host function to the worker; the same callback is exported once.
    pub(crate) fn export(&self, callback: &Callback) -> u64 {
        let mut exported = self.exported.lock();
        if let Some(id) = exported.callback_ids.get(&callback.key()) {
            return *id;
        }
        exported.next += 1;
        let id = exported.next;
        exported.callback_ids.insert(callback.key(), id);
        exported.callbacks.insert(id, callback.clone());
        id
    }

    /// The worker reported something for this isolate; a call comes with the origin of the
    /// request whose JavaScript made it.
    pub(crate) fn on_event(self: &Arc<Self>, event: FromWorker, origin: Origin) {
        match event {
            FromWorker::Call { call, target, .. } => {
                let mut chain = origin.ancestry;
                chain.push(Answering { link: link_key(&self.link), call });
                self.on_call(call, target, chain, origin.tag)
            }
            FromWorker::Console { sink, level, text, .. } => {
                let sink = self.exported.lock().sinks.get(&sink).cloned();
                if let Some(sink) = sink {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(level, &text)));
                }
            }
            FromWorker::Rejection { error, .. } => {
                if let Some(handler) = &self.on_unhandled_rejection {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(error)));
                }
            }
            FromWorker::Hello { .. } | FromWorker::Response { .. } | FromWorker::Started { .. } => {}
        }
    }

    /// The worker died: the isolate is gone; tell the embedder.
    pub(crate) fn on_crash(&self, reason: &str) {
        self.disposed.store(true, Ordering::SeqCst);
        if let Some(handler) = &self.on_catastrophic_error {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(reason)));
        }
    }

    /// JavaScript in the worker called a host function or hook: run it on the task pool and
    /// send the answer back.
    fn on_call(self: &Arc<Self>, call: u64, target: Target, chain: Ancestry, tag: Option<CallerTag>) {
        let this = self.clone();
        let answer = Responder { link: self.link.clone(), call, sent: false };
        match target {
            Target::Callback { callback, args } => {
                let found = self.exported.lock().callbacks.get(&callback).cloned();
                let Some(callback) = found else {
                    return answer.send(Err(Error::js("Error", "The host function is gone")));
                };
                let args = match wire::read_value(&args.bytes, &args, self.copy_budget) {
                    Ok(Value::Array(list)) => list,
                    Ok(_) => Vec::new(),
                    Err(e) => return answer.send(Err(e)),
                };
                let spawner = callback.spawner_of().clone();
                match callback.invoke(args) {
                    // The worker's JavaScript waits for these, and they may call back into it:
                    // each gets a thread (see `tasks::spawn_waiting`), or runs on its spawner
                    // answering the call.
                    Invoked::Sync(run) => tasks::spawn_waiting(move || answer.send(within(&chain, tag, run).and_then(value_answer))),
                    Invoked::Blocking(future) if spawner.polls_in_place() => {
                        tasks::spawn_waiting(move || answer.send(within(&chain, tag, || tasks::block_on(future)).and_then(value_answer)))
                    }
                    Invoked::Blocking(future) => {
                        spawner.spawn(Within { chain, tag, future: Box::pin(async move { answer.send(future.await.and_then(value_answer)) }) })
                    }
                    Invoked::Async(future) => spawner.spawn(async move { answer.send(future.await.and_then(value_answer)) }),
                    Invoked::Ignored(work) => {
                        answer.nobody_waits();
                        spawner.spawn_blocking(work)
                    }
                }
            }
            Target::Import { request, referrer } => tasks::spawn_waiting(move || {
                let hook = this.import.lock().clone();
                let result = within(&chain, tag, || match hook {
                    Some(hook) => guarded(|| hook(&this.isolate(), &request, &referrer)).and_then(|module| Ok((module.remote_id(&this)?, module))),
                    None => Err(Error::js(
                        "TypeError",
                        format!("Cannot import '{}': dynamic import() is not enabled for this isolate", request.specifier),
                    )),
                });
                // The module's handle lives until the answer is sent, so that its release
                // reaches the worker after the answer that names it.
                match result {
                    Ok((id, module)) => {
                        answer.send(Ok(Answer::Module(id)));
                        drop(module);
                    }
                    Err(e) => answer.send(Err(e)),
                }
            }),
            Target::Meta { filename } => tasks::spawn_waiting(move || {
                let hook = this.meta.lock().clone();
                let result = within(&chain, tag, || match hook {
                    Some(hook) => guarded(|| hook(&filename)),
                    None => Ok(Value::Object([("url".to_owned(), Value::String(filename))].into_iter().collect())),
                });
                answer.send(result.and_then(value_answer))
            }),
        }
    }

    /// Whether `other` is this isolate.
    pub(crate) fn is(self: &Arc<Self>, other: &Isolate) -> bool {
        matches!(&other.backend, Backend::Remote(r) if Arc::ptr_eq(r, self))
    }
}

/// Answers a worker's call once; if the host code never does (it panicked in a future), the
/// answer is an error, so the worker's JavaScript does not wait forever.
struct Responder {
    link: Arc<Link>,
    call: u64,
    sent: bool,
}

impl Responder {
    fn nobody_waits(mut self) {
        self.sent = true;
    }

    fn send(mut self, result: Result<Answer>) {
        self.sent = true;
        self.link.reply(self.call, result);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.sent {
            self.link.reply(self.call, Err(Error::js("Error", "A host function panicked")));
        }
    }
}

fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::js("Error", "A host function panicked")))
}

fn value_answer(value: Value) -> Result<Answer> {
    Ok(Answer::Value(Wire { bytes: wire::to_wire(&value)?, shared: Vec::new() }))
}

impl Drop for RemoteIsolate {
    /// The last handle is gone: the worker disposes the isolate.
    fn drop(&mut self) {
        if !self.disposed.swap(true, Ordering::SeqCst) && self.link.crash().is_none() {
            self.link.post(Some(self.id), Op::Dispose);
        }
        self.link.forget(self.id);
    }
}

/// Weak handle for the link's routing table.
pub(crate) type RemoteRef = Weak<RemoteIsolate>;

impl RemoteIsolate {
    /// Runs `op`, which gives nothing back.
    pub(crate) fn run(&self, op: Result<Op>) -> Result<()> {
        self.request(op?)?.done()
    }
}
