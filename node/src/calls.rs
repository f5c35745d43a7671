//! Node functions called from isolates: the worker's `Call`s, served on the JavaScript thread
//! that made the isolate (Node's main thread, or a `worker_threads` worker).
//!
//! A call made while that thread waits for a synchronous operation of the same chain
//! (`evalSync`, `applySync`, ... and the calls nested in them) runs inline, in that wait,
//! as isolated-vm's do: the waiting thread is the caller tag of its request ([`Waiter`]), so
//! the call finds it. Any other call goes to the thread's [`Queue`], which its event loop
//! serves through a threadsafe function; the settlements of async operations go through the
//! same queue, after the calls they made. Either way `index.js`'s dispatcher runs the
//! function and answers through [`answer`], at once or when its promise settles.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use ivm_client::protocol::{Answer, Reply, Target, Wire};
use ivm_client::tls::{self, Ancestry, Answering, Origin};
use ivm_client::value::wire::Budget;
use ivm_client::{JsError, Link, Value};
use napi::bindgen_prelude::{Buffer, FnArgs, Function, FunctionRef, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, sys};

use crate::ops::{Primitive, js_object};
use crate::values::Outcome;
use napi_derive::napi;

/// A call of a Node function by an isolate's JavaScript, waiting to be served.
pub struct Call {
    link: Arc<Link>,
    call: u64,
    callback: u64,
    args: Wire,
    /// What reads `args` may make.
    budget: Budget,
    /// The worker calls being answered, this one innermost: requests made while serving it
    /// run inside it.
    chain: Ancestry,
}

/// The caller tag of a synchronous request sent from the main thread: the calls its
/// JavaScript makes wait here for the main thread, which waits for the request.
pub struct Waiter {
    thread: Thread,
    calls: Mutex<VecDeque<Call>>,
}

impl Wake for Waiter {
    fn wake(self: Arc<Self>) {
        self.thread.unpark();
    }
}

/// What a JavaScript thread's event loop (Node's main thread, or a `worker_threads` worker:
/// each loads the addon and serves the isolates it made) has to do, in the order it came: an
/// async operation's call of a Node function comes before the operation's own settlement.
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

/// A JavaScript thread's queue, and the threadsafe function that has its event loop serve it.
/// The function does not keep Node alive by itself: only while async operations are pending.
pub struct Queue {
    items: Mutex<VecDeque<Queued>>,
    pump: ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>,
    /// Async operations not yet settled (touched on the queue's thread only).
    pending: AtomicU64,
}


/// Answers given out and not yet used: token → the call they answer (its link and number).
type Answers = Mutex<HashMap<u64, (Arc<Link>, u64)>>;
static ANSWERS: OnceLock<Answers> = OnceLock::new();
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// `index.js`'s dispatcher: `(token, callback, args) => void`.
type Dispatcher = FunctionRef<FnArgs<(f64, f64, Unknown<'static>)>, ()>;
/// `index.js`'s crash handler: `(isolate key, reason) => void`.
type CrashHandler = FunctionRef<FnArgs<(f64, String)>, ()>;

thread_local! {
    static QUEUE: RefCell<Option<Arc<Queue>>> = const { RefCell::new(None) };
    static DISPATCHER: RefCell<Option<Dispatcher>> = const { RefCell::new(None) };
    static ON_CRASH: RefCell<Option<CrashHandler>> = const { RefCell::new(None) };
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets the dispatcher that runs Node functions for isolates, the crash handler, and the pump
/// the event loop calls to serve what is queued for it (`serveQueued`). Called once, when
/// `index.js` loads.
#[napi]
pub fn set_dispatcher(
    dispatch: Function<FnArgs<(f64, f64, Unknown<'static>)>, ()>,
    on_crash: Function<FnArgs<(f64, String)>, ()>,
    pump: Function<(), Unknown<'static>>,
) -> napi::Result<()> {
    let dispatch = dispatch.create_ref()?;
    let on_crash = on_crash.create_ref()?;
    DISPATCHER.with_borrow_mut(|slot| *slot = Some(dispatch));
    ON_CRASH.with_borrow_mut(|slot| *slot = Some(on_crash));
    let pump = pump.build_threadsafe_function::<()>().callee_handled::<false>().weak::<true>().build_callback(|_| Ok(()))?;
    let queue = Arc::new(Queue { items: Mutex::default(), pump, pending: AtomicU64::new(0) });
    QUEUE.with_borrow_mut(|slot| *slot = Some(queue));
    Ok(())
}

/// This JavaScript thread's queue: the isolates it makes are served by it.
pub fn queue_of_this_thread() -> Option<Arc<Queue>> {
    QUEUE.with_borrow(Clone::clone)
}

impl Queue {
    fn push(&self, item: Queued) {
        lock(&self.items).push_back(item);
        self.pump.call((), ThreadsafeFunctionCallMode::NonBlocking);
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

/// Routes a call the worker made: to the wait of the thread that sent its request, if it waits,
/// else to the event loop of the thread that made the isolate (`queued`).
pub fn route(link: Arc<Link>, call: u64, target: Target, origin: Origin, budget: Budget, queue: Option<&Queue>) {
    let Target::Callback { callback, args } = target else {
        // Module hooks are not offered by this package.
        return link.reply(call, Err(ivm_client::Error::js("TypeError", "Not supported")));
    };
    let mut chain = origin.ancestry;
    chain.push(Answering { link: link.key(), call });
    let call = Call { link, call, callback, args, budget, chain };
    if let Some(waiter) = origin.tag.and_then(|tag| tag.downcast::<Waiter>().ok()) {
        lock(&waiter.calls).push_back(call);
        waiter.thread.unpark();
        return;
    }
    match queue {
        Some(queue) => queue.push(Queued::Call(call)),
        None => call.link.reply(call.call, Err(ivm_client::Error::js("Error", "The host function is gone"))),
    }
}

/// Serves what is queued for this thread's event loop (what the pump runs).
#[napi]
pub fn serve_queued(env: Env) {
    let Some(queue) = queue_of_this_thread() else { return };
    loop {
        let next = lock(&queue.items).pop_front();
        match next {
            None => return,
            Some(Queued::Call(call)) => serve(&env, call),
            Some(Queued::Settle(Deferred(deferred), outcome)) => {
                // SAFETY: `deferred` was made on this thread, and is settled once.
                unsafe {
                    match <Outcome as napi::bindgen_prelude::ToNapiValue>::to_napi_value(env.raw(), outcome) {
                        Ok(value) => sys::napi_resolve_deferred(env.raw(), deferred, value),
                        Err(e) => sys::napi_reject_deferred(env.raw(), deferred, napi::JsError::from(e).into_value(env.raw())),
                    };
                }
                if queue.pending.fetch_sub(1, Ordering::Relaxed) == 1 {
                    // SAFETY: as in `settle_later`.
                    unsafe { sys::napi_unref_threadsafe_function(env.raw(), queue.pump.raw()) };
                }
            }
            Some(Queued::Crash(key, reason)) => ON_CRASH.with_borrow(|handler| {
                if let Some(handler) = handler {
                    let _ = handler.borrow_back(&env).and_then(|f| f.call((key as f64, reason).into()));
                }
            }),
        }
    }
}

/// Runs the Node function of `call` through the dispatcher, answering the worker when it is
/// done (the dispatcher may answer later, for a function whose promise it waits for).
fn serve(env: &Env, call: Call) {
    let args = ivm_client::value::wire::read_value(&call.args.bytes, &call.args, call.budget)
        .map(|args| match args {
            Value::Array(list) => Value::Array(list),
            _ => Value::Array(Vec::new()),
        })
        .and_then(|args| crate::values::node_value(env, &args).map_err(|e| ivm_client::Error::Conversion(e.to_string())));
    let args = match args {
        Ok(args) => args,
        Err(e) => return call.link.reply(call.call, Err(e)),
    };
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    lock(ANSWERS.get_or_init(Mutex::default)).insert(token, (call.link.clone(), call.call));
    let dispatched = tls::within(&call.chain, None, || {
        DISPATCHER.with_borrow(|dispatcher| match dispatcher {
            Some(dispatcher) => dispatcher.borrow_back(env).and_then(|f| f.call((token as f64, call.callback as f64, args).into())),
            None => Err(napi::Error::from_reason("no dispatcher")),
        })
    });
    if let Err(e) = dispatched {
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
        (None, None, None) => Ok(Answer::Value(Wire { bytes: vec![0xff, 0x0f, b'_'], shared: Vec::new() })),
    };
    answer_with(token as u64, answer);
}

fn answer_with(token: u64, answer: ivm_client::Result<Answer>) {
    let found = lock(ANSWERS.get_or_init(Mutex::default)).remove(&token);
    if let Some((link, call)) = found {
        link.reply(call, answer);
    }
}

impl Waiter {
    pub fn new() -> Arc<Waiter> {
        Arc::new(Waiter { thread: std::thread::current(), calls: Mutex::default() })
    }

    /// Runs `send`, which sends a synchronous request, with this waiter as the thread's caller
    /// tag: the calls the request's JavaScript makes come here.
    pub fn tagging<R>(self: &Arc<Self>, send: impl FnOnce() -> R) -> R {
        tls::with_caller_tag(Some(self.clone()), send)
    }

    /// Waits on the main thread for the reply of a request sent [`tagging`](Self::tagging),
    /// serving the calls its JavaScript makes meanwhile.
    pub fn wait_serving(self: &Arc<Self>, env: &Env, mut reply: ivm_client::oneshot::Receiver<ivm_client::Result<Reply>>, link: &Link) -> ivm_client::Result<Reply> {
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(result) = Pin::new(&mut reply).poll(&mut cx) {
                return result.unwrap_or_else(|_| Err(link.crash_error()));
            }
            let next = lock(&self.calls).pop_front();
            match next {
                Some(call) => serve(env, call),
                None => {
                    // A reply or call comes within microseconds for most requests: look for a
                    // while before sleeping.
                    let ready = ivm_client::spin::poll_for(|| !lock(&self.calls).is_empty() || reply.has_message() || reply.is_closed());
                    if !ready {
                        std::thread::park();
                    }
                }
            }
        }
    }
}
