//! Node functions called from isolates: the worker's `Call`s, served on Node's main thread.
//!
//! A call made while the main thread waits for a synchronous operation of the same chain
//! (`evalSync`, `applySync`, ... and the calls nested in them) runs inline, in that wait,
//! as isolated-vm's do: the waiting thread is the caller tag of its request ([`Waiter`]), so
//! the call finds it. Any other call is queued for Node's event loop through a threadsafe
//! function that does not keep Node alive by itself. Either way `index.js`'s dispatcher runs
//! the function and answers through [`answer`], at once or when its promise settles.

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
use napi::{Env, Status};
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

/// Calls for the event loop, and the threadsafe function that has it serve them.
struct Queued {
    calls: Mutex<VecDeque<Call>>,
    /// Isolates whose worker died (their key), and how.
    crashes: Mutex<VecDeque<(u64, String)>>,
    pump: ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>,
}

static QUEUED: OnceLock<Queued> = OnceLock::new();

/// Answers given out and not yet used: token → the call they answer (its link and number).
type Answers = Mutex<HashMap<u64, (Arc<Link>, u64)>>;
static ANSWERS: OnceLock<Answers> = OnceLock::new();
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// `index.js`'s dispatcher: `(token, callback, args) => void`.
type Dispatcher = FunctionRef<FnArgs<(f64, f64, Unknown<'static>)>, ()>;
/// `index.js`'s crash handler: `(isolate key, reason) => void`.
type CrashHandler = FunctionRef<FnArgs<(f64, String)>, ()>;

thread_local! {
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
    let _ = QUEUED.set(Queued { calls: Mutex::default(), crashes: Mutex::default(), pump });
    Ok(())
}

/// Routes a call the worker made: to the main thread's wait if its request is one, else to
/// the event loop.
pub fn route(link: Arc<Link>, call: u64, target: Target, origin: Origin, budget: Budget) {
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
    match QUEUED.get() {
        Some(queued) => {
            lock(&queued.calls).push_back(call);
            queued.pump.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
        None => call.link.reply(call.call, Err(ivm_client::Error::js("Error", "The host function is gone"))),
    }
}

/// Serves the calls and crashes queued for the event loop (what the pump runs).
#[napi]
pub fn serve_queued(env: Env) {
    let Some(queued) = QUEUED.get() else { return };
    while let Some(call) = lock(&queued.calls).pop_front() {
        serve(&env, call);
    }
    while let Some((key, reason)) = lock(&queued.crashes).pop_front() {
        ON_CRASH.with_borrow(|handler| {
            if let Some(handler) = handler {
                let _ = handler.borrow_back(&env).and_then(|f| f.call((key as f64, reason).into()));
            }
        });
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

/// How a Node function's call ended, for [`answer`]: `value` (V8's wire format, from Node's
/// `v8.Serializer`) or `error`.
#[napi(object)]
pub struct CallResult {
    pub value: Option<Buffer>,
    pub error: Option<ThrownError>,
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
    let answer = match (result.value, result.error) {
        (_, Some(error)) => Err(ivm_client::Error::Exception(Box::new(JsError { name: error.name, message: error.message, stack: error.stack, ..Default::default() }))),
        (Some(bytes), None) => Ok(Answer::Value(Wire { bytes: bytes.to_vec(), shared: Vec::new() })),
        (None, None) => Ok(Answer::Value(Wire { bytes: vec![0xff, 0x0f, b'_'], shared: Vec::new() })),
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

/// A worker died: `index.js`'s crash handler hears it for isolate `key`, from the event loop.
pub fn crashed(key: u64, reason: &str) {
    if let Some(queued) = QUEUED.get() {
        lock(&queued.crashes).push_back((key, reason.to_owned()));
        queued.pump.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }
}
