//! Node functions called from isolates: the worker's `Call`s, served on the JavaScript thread
//! that made the isolate (Node's main thread, or a `worker_threads` worker).
//!
//! A call the isolate waits for (a sync or blocking host function) made while that thread
//! waits for a synchronous operation of the same chain (`evalSync`, `applySync`, ... and the
//! calls nested in them) runs inline, in that wait, as isolated-vm's do: the waiting thread is
//! the caller tag of its request ([`Waiter`]), so the call finds it. Any other call goes to
//! the thread's [`Queue`], which its event loop serves through a threadsafe function; the
//! settlements of async operations go through the same queue, after the calls they made.
//! Either way `index.js`'s dispatcher runs the function and answers through [`answer`], at
//! once or when its promise settles.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use ivm_client::protocol::{Answer, CallKind, Id, Reply, Target, Wire};
use ivm_client::tls::{self, Ancestry, Answering, Origin};
use ivm_client::sync::Mutex;
use ivm_client::value::wire::Budget;
use ivm_client::{JsError, Link, Value};
use napi::bindgen_prelude::{Buffer, FnArgs, Function, FunctionRef, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, sys};
use napi_derive::napi;

use crate::ops::{Primitive, js_object};
use crate::values::{self, Outcome};

/// How an isolate calls Node function `callback`: the low two bits of its id, which
/// `index.js` allocates so (`KIND_BITS` there), and which say whether the isolate waits for it.
pub fn kind_of(callback: u64) -> CallKind {
    match callback & 3 {
        0 => CallKind::Sync,
        1 => CallKind::Async,
        2 => CallKind::Ignored,
        _ => CallKind::Blocking,
    }
}

/// Whether JavaScript waits for a call of this kind: then requests made while serving it run
/// inside it (the worker serves them where that JavaScript waits), and it may be served
/// inline. A call nobody waits for runs on the event loop, as isolated-vm's do.
fn waited_for(kind: CallKind) -> bool {
    matches!(kind, CallKind::Sync | CallKind::Blocking)
}

/// A call of a Node function by an isolate's JavaScript, waiting to be served.
pub struct Call {
    link: Arc<Link>,
    call: u64,
    /// The isolate's id in its worker, and the key `index.js` knows it by.
    isolate: Id,
    key: u64,
    callback: u64,
    args: Wire,
    /// What reads `args` may make.
    budget: Budget,
    /// For a call the isolate waits for, the worker calls being answered, this one innermost:
    /// requests made while serving it run inside it.
    chain: Ancestry,
}

impl Call {
    fn fail(&self, message: &str) {
        if kind_of(self.callback) != CallKind::Ignored {
            self.link.reply(self.call, Err(ivm_client::Error::js("Error", message)));
        }
    }
}

/// The caller tag of a synchronous request sent from a JavaScript thread: the calls its
/// JavaScript waits for come here while the thread waits for the request. Once the wait is
/// over (`calls` is `None`), a call that still finds it goes to the thread's queue.
pub struct Waiter {
    thread: Thread,
    calls: Mutex<Option<VecDeque<Call>>>,
    queue: Option<Arc<Queue>>,
}

impl Wake for Waiter {
    fn wake(self: Arc<Self>) {
        self.thread.unpark();
    }
}

/// What a JavaScript thread's event loop has to do, in the order it came: an async
/// operation's call of a Node function comes before the operation's own settlement.
enum Queued {
    Call(Call),
    /// An async operation is done: its promise settles.
    Settle(Deferred, Outcome),
    /// The worker of isolate `key` died (`reason`).
    Crash(u64, String),
}

/// A promise made by `napi_create_promise`, settled on its thread.
struct Deferred(sys::napi_deferred);

// SAFETY: the handle is only used (settled) on the JavaScript thread that made it, which
// serves its queue; other threads only move it into the queue.
unsafe impl Send for Deferred {}

/// Calls of Node functions a thread's queue holds at most, and the bytes of their arguments:
/// an isolate that calls without waiting (async or ignored host functions in a loop) must not
/// make Node hold without bound what it cannot serve as fast. Past either, such a call fails
/// (an ignored one is dropped).
const MAX_QUEUED_CALLS: usize = 65_536;
const MAX_QUEUED_BYTES: usize = 256 << 20;

/// How many queued items the event loop serves per turn before it lets other work run.
const SERVED_PER_TURN: usize = 256;

/// A JavaScript thread's queue, and the threadsafe function that has its event loop serve it.
/// The function does not keep Node alive by itself: only while async operations are pending.
pub struct Queue {
    items: Mutex<VecDeque<Queued>>,
    /// Calls among `items`, and the bytes of their arguments.
    calls: AtomicUsize,
    bytes: AtomicUsize,
    pump: ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>,
    /// Async operations not yet settled (touched on the queue's thread only).
    pending: AtomicU64,
}

/// Answers given out and not yet used: token → the call they answer (its link and number).
type Answers = Mutex<HashMap<u64, (Arc<Link>, u64)>>;
static ANSWERS: OnceLock<Answers> = OnceLock::new();
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// `index.js`'s dispatcher: `(token, isolate key, callback, args) => void`.
type Dispatcher = FunctionRef<FnArgs<(f64, f64, f64, Unknown<'static>)>, ()>;
/// `index.js`'s crash handler: `(isolate key, reason) => void`.
type CrashHandler = FunctionRef<FnArgs<(f64, String)>, ()>;

thread_local! {
    static QUEUE: RefCell<Option<Arc<Queue>>> = const { RefCell::new(None) };
    static DISPATCHER: RefCell<Option<Dispatcher>> = const { RefCell::new(None) };
    static ON_CRASH: RefCell<Option<CrashHandler>> = const { RefCell::new(None) };
}

/// Sets the dispatcher that runs Node functions for isolates, the crash handler, and the pump
/// the event loop calls to serve what is queued for it (`serveQueued`). Once per JavaScript
/// thread: `index.js` keeps what it shares with it per thread, even if it is loaded again.
#[napi]
pub fn set_dispatcher(
    dispatch: Function<FnArgs<(f64, f64, f64, Unknown<'static>)>, ()>,
    on_crash: Function<FnArgs<(f64, String)>, ()>,
    pump: Function<(), Unknown<'static>>,
) -> napi::Result<()> {
    if queue_of_this_thread().is_some() {
        return Err(napi::Error::from_reason("isolated-vm's dispatcher is set already on this thread"));
    }
    let dispatch = dispatch.create_ref()?;
    let on_crash = on_crash.create_ref()?;
    DISPATCHER.with_borrow_mut(|slot| *slot = Some(dispatch));
    ON_CRASH.with_borrow_mut(|slot| *slot = Some(on_crash));
    let pump = pump.build_threadsafe_function::<()>().callee_handled::<false>().weak::<true>().build_callback(|_| Ok(()))?;
    let queue = Queue { items: Mutex::default(), calls: AtomicUsize::new(0), bytes: AtomicUsize::new(0), pump, pending: AtomicU64::new(0) };
    QUEUE.with_borrow_mut(|slot| *slot = Some(Arc::new(queue)));
    Ok(())
}

/// This JavaScript thread's queue: the isolates it makes are served by it.
pub fn queue_of_this_thread() -> Option<Arc<Queue>> {
    QUEUE.with_borrow(Clone::clone)
}

impl Queue {
    fn push(&self, item: Queued) {
        self.items.lock().push_back(item);
        self.pump.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }

    /// Queues a call, within the queue's bounds.
    fn push_call(&self, call: Call) {
        let bytes = call.args.bytes.len();
        if self.calls.load(Ordering::Relaxed) >= MAX_QUEUED_CALLS || self.bytes.load(Ordering::Relaxed).saturating_add(bytes) > MAX_QUEUED_BYTES {
            return call.fail("Too many calls of Node functions are waiting to be served");
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.push(Queued::Call(call));
    }

    fn pop(&self) -> Option<Queued> {
        let item = self.items.lock().pop_front()?;
        if let Queued::Call(call) = &item {
            self.calls.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(call.args.bytes.len(), Ordering::Relaxed);
        }
        Some(item)
    }

    /// A worker died: `index.js`'s crash handler hears it for isolate `key`, from the event
    /// loop.
    pub fn crashed(&self, key: u64, reason: &str) {
        self.push(Queued::Crash(key, reason.to_owned()));
    }

    /// A promise of `outcome`, settled through this queue (after the calls its operation made
    /// of Node functions). Called on the queue's thread.
    pub fn settle_later(self: &Arc<Self>, env: &Env, outcome: impl Future<Output = Outcome> + Send + 'static) -> napi::Result<sys::napi_value> {
        let (mut deferred, mut promise) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: plain N-API calls on this thread's env.
        if unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) } != sys::Status::napi_ok {
            return Err(napi::Error::from_reason("napi_create_promise failed"));
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) == 0 {
            // SAFETY: as above; the pump is alive as long as the queue.
            unsafe { sys::napi_ref_threadsafe_function(env.raw(), self.pump.raw()) };
        }
        let (queue, deferred) = (self.clone(), Deferred(deferred));
        napi::bindgen_prelude::spawn(async move { queue.push(Queued::Settle(deferred, outcome.await)) });
        Ok(promise)
    }
}

/// What the worker said about the call being routed: the isolate (its id in the worker, and
/// its key in `index.js`) and what reads its arguments may make.
pub struct Caller {
    pub isolate: Id,
    pub key: u64,
    pub budget: Budget,
}

/// Routes a call the worker made: one its JavaScript waits for to the wait of the thread
/// that sent its request, if that thread waits; any other to the event loop of the thread that
/// made the isolate (`queue`).
pub fn route(link: Arc<Link>, call: u64, target: Target, origin: Origin, caller: Caller, queue: Option<&Queue>) {
    let Target::Callback { callback, args } = target else {
        // Module hooks are not offered by this package.
        return link.reply(call, Err(ivm_client::Error::js("TypeError", "Not supported")));
    };
    let kind = kind_of(callback);
    let chain = if waited_for(kind) {
        let mut chain = origin.ancestry;
        chain.push(Answering { link: link.key(), call });
        chain
    } else {
        Ancestry::new()
    };
    let call = Call { link, call, isolate: caller.isolate, key: caller.key, callback, args, budget: caller.budget, chain };
    let waiter = origin.tag.filter(|_| waited_for(kind)).and_then(|tag| tag.downcast::<Waiter>().ok());
    if let Some(waiter) = waiter {
        let mut calls = waiter.calls.lock();
        if let Some(calls) = calls.as_mut() {
            calls.push_back(call);
            waiter.thread.unpark();
            return;
        }
    }
    match queue {
        Some(queue) => queue.push_call(call),
        None => call.fail("The host function is gone"),
    }
}

/// Serves what is queued for this thread's event loop (what the pump runs): a bounded batch,
/// then the pump is called again for the rest, so timers and I/O run between batches.
#[napi]
pub fn serve_queued(env: Env) {
    let Some(queue) = queue_of_this_thread() else { return };
    for _ in 0..SERVED_PER_TURN {
        let Some(next) = queue.pop() else { return };
        with_handle_scope(&env, || match next {
            Queued::Call(call) => serve(&env, call, false),
            Queued::Settle(Deferred(deferred), outcome) => {
                let value = values::outcome_value(env.raw(), outcome);
                // SAFETY: `deferred` was made on this thread, and is settled once.
                unsafe { sys::napi_resolve_deferred(env.raw(), deferred, value) };
                if queue.pending.fetch_sub(1, Ordering::Relaxed) == 1 {
                    // SAFETY: as in `settle_later`.
                    unsafe { sys::napi_unref_threadsafe_function(env.raw(), queue.pump.raw()) };
                }
            }
            Queued::Crash(key, reason) => ON_CRASH.with_borrow(|handler| {
                if let Some(handler) = handler {
                    let _ = handler.borrow_back(&env).and_then(|f| f.call((key as f64, reason).into()));
                }
            }),
        });
    }
    if !queue.items.lock().is_empty() {
        queue.pump.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// Runs `f` in a handle scope of its own: what serving one call makes is freed when it is
/// done, not when the operation that waits (or the whole batch) is.
fn with_handle_scope(env: &Env, f: impl FnOnce()) {
    let mut scope = std::ptr::null_mut();
    // SAFETY: a scope opened and closed on this thread, around `f`.
    let opened = unsafe { sys::napi_open_handle_scope(env.raw(), &mut scope) } == sys::Status::napi_ok;
    f();
    if opened {
        // SAFETY: as above.
        unsafe { sys::napi_close_handle_scope(env.raw(), scope) };
    }
}

/// Runs the Node function of `call` through the dispatcher, answering the worker when it is
/// done (the dispatcher may answer later, for a function whose promise it waits for).
/// `inline`: served in a wait for a synchronous operation, where no promise can settle.
fn serve(env: &Env, call: Call, inline: bool) {
    let kind = kind_of(call.callback);
    if inline && kind == CallKind::Blocking {
        // isolated-vm's answer: `applySyncPromise` needs Node's event loop, which waits.
        let error = ivm_client::Error::js("TypeError", "This function may not be called from the default thread");
        return call.link.reply(call.call, Err(error));
    }
    let args = ivm_client::value::wire::read_value(&call.args.bytes, &call.args, call.budget)
        .map(|args| match args {
            Value::Array(list) => Value::Array(list),
            _ => Value::Array(Vec::new()),
        })
        .and_then(|args| values::node_value(env, &args).map_err(|e| ivm_client::Error::Conversion(e.to_string())));
    let args = match args {
        Ok(args) => args,
        Err(e) => return call.fail(&e.to_string()),
    };
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    ANSWERS.get_or_init(Mutex::default).lock().insert(token, (call.link.clone(), call.call));
    // A run that waits for Node is not a runaway: its worker is not killed meanwhile.
    let waits = waited_for(kind);
    if waits {
        call.link.hold_escalations(call.isolate, true);
    }
    let dispatched = tls::within(&call.chain, None, || {
        DISPATCHER.with_borrow(|dispatcher| match dispatcher {
            Some(dispatcher) => dispatcher.borrow_back(env).and_then(|f| f.call((token as f64, call.key as f64, call.callback as f64, args).into())),
            None => Err(napi::Error::from_reason("no dispatcher")),
        })
    });
    if waits {
        call.link.hold_escalations(call.isolate, false);
    }
    if let Err(e) = dispatched {
        values::clear_exception(env.raw());
        answer_with(token, Err(ivm_client::Error::js("Error", e.reason.clone())));
    }
}

js_object! {
    /// How a Node function's call ended, for [`answer`]: `primitive` (the value itself),
    /// `value` (V8's wire format, from Node's `v8.Serializer`) or `error`; none: `undefined`.
    pub struct CallResult {
        primitive: Primitive = "primitive",
        value: Option<Buffer> = "value",
        error: Option<ThrownError> = "error",
    }
}

#[napi(object)]
pub struct ThrownError {
    pub name: String,
    pub message: String,
    pub stack: Option<String>,
}

/// Answers the call `token` was given for (once; later answers are ignored).
#[napi]
pub fn answer(token: f64, result: CallResult) {
    let answer = match (result.primitive.wire(), result.value, result.error) {
        (_, _, Some(error)) => Err(ivm_client::Error::Exception(Box::new(JsError { name: error.name, message: error.message, stack: error.stack, ..Default::default() }))),
        (Some(wire), _, None) => wire.map(Answer::Value),
        (None, Some(bytes), None) => Ok(Answer::Value(Wire { bytes: bytes.to_vec(), shared: Vec::new() })),
        (None, None, None) => Ok(Answer::Value(crate::ops::undefined())),
    };
    answer_with(token as u64, answer);
}

fn answer_with(token: u64, answer: ivm_client::Result<Answer>) {
    let found = ANSWERS.get_or_init(Mutex::default).lock().remove(&token);
    if let Some((link, call)) = found {
        link.reply(call, answer);
    }
}

impl Waiter {
    /// A waiter for this thread, which sends calls it no longer waits for to `queue`.
    pub fn new(queue: Option<Arc<Queue>>) -> Arc<Waiter> {
        Arc::new(Waiter { thread: std::thread::current(), calls: Mutex::new(Some(VecDeque::new())), queue })
    }

    /// Runs `send`, which sends a synchronous request, with this waiter as the thread's caller
    /// tag: the calls the request's JavaScript waits for come here.
    pub fn tagging<R>(self: &Arc<Self>, send: impl FnOnce() -> R) -> R {
        tls::with_caller_tag(Some(self.clone()), send)
    }

    /// Waits on this thread for the reply of a request sent [`tagging`](Self::tagging),
    /// serving the calls its JavaScript makes meanwhile. Calls still here when the reply has
    /// come (or that come after) go to the thread's queue.
    pub fn wait_serving(self: &Arc<Self>, env: &Env, mut reply: ivm_client::oneshot::Receiver<ivm_client::Result<Reply>>, link: &Link) -> ivm_client::Result<Reply> {
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let has_calls = || self.calls.lock().as_ref().is_some_and(|calls| !calls.is_empty());
        let result = loop {
            if let Poll::Ready(result) = Pin::new(&mut reply).poll(&mut cx) {
                break result.unwrap_or_else(|_| Err(link.crash_error()));
            }
            let next = self.calls.lock().as_mut().and_then(VecDeque::pop_front);
            match next {
                Some(call) => with_handle_scope(env, || serve(env, call, true)),
                None => {
                    // A reply or call comes within microseconds for most requests: look for a
                    // while before sleeping.
                    if !ivm_client::spin::poll_for(|| has_calls() || reply.has_message() || reply.is_closed()) {
                        std::thread::park();
                    }
                }
            }
        };
        let left = self.calls.lock().take().unwrap_or_default();
        for call in left {
            match &self.queue {
                Some(queue) => queue.push_call(call),
                None => call.fail("The host function is gone"),
            }
        }
        result
    }
}
