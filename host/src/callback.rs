//! [`Callback`]: Rust closures as JavaScript functions (host functions).
//!
//! Arguments are copied out of the isolate and handed to the closure through serde; its
//! result is copied back in. Four call styles, as in isolated-vm:
//!
//! - [`Callback::new`]: synchronous; JavaScript waits for the closure.
//! - [`Callback::new_async`]: the closure returns a future; JavaScript gets a promise at once,
//!   settled when the future completes. The future runs on ivm's worker pool.
//! - [`Callback::new_blocking`]: the closure returns a future and JavaScript *blocks* until it
//!   completes (isolated-vm's `applySyncPromise`). The isolate is released while it waits, so
//!   the future may itself use the isolate; the operation's timeout still holds.
//! - [`Callback::new_ignored`]: fire-and-forget; JavaScript gets `undefined` at once and the
//!   closure runs on the worker pool.
//!
//! A closure may call back into isolates (the same one, or others); see
//! `isolate::nesting` for how that works without deadlocks.

use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::tasks;
use crate::spawn::Spawner;
use crate::error::{Error, Result};
use crate::exception;
use crate::isolate::{IsolateInner, nesting};
use crate::run::{DROPPED, PendingCall};
use crate::process::RemoteIsolate;
use crate::process::protocol::{CallKind, Input};
use crate::js::{from_v8_args, to_v8};
use crate::js;
use crate::value::{self, Value};

type BoxFuture<T = Value> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;
type JsArgs<'s> = [v8::Local<'s, v8::Value>];
/// Reads the arguments; the returned call starts the closure's future.
type Starter = Box<dyn for<'s, 'i> Fn(&mut v8::PinScope<'s, 'i>, &JsArgs<'s>) -> Result<Box<dyn FnOnce() -> BoxFuture>> + Send + Sync>;
/// Reads the arguments, calls the closure and builds its result in the isolate.
type Caller = Box<dyn for<'s, 'i> Fn(&mut v8::PinScope<'s, 'i>, &JsArgs<'s>) -> Result<v8::Local<'s, v8::Value>> + Send + Sync>;
/// Reads the arguments and prepares the closure's call for later.
type Deferrer = Box<dyn for<'s, 'i> Fn(&mut v8::PinScope<'s, 'i>, &JsArgs<'s>) -> Result<Box<dyn FnOnce() + Send>> + Send + Sync>;
/// The closure, called with arguments sent by a worker.
type RemoteFn<R> = Arc<dyn Fn(Vec<Value>) -> Result<R> + Send + Sync>;

/// A host function with its types erased: each form reads the arguments in the isolate
/// (directly into the closure's argument type) and then does its part.
enum Call {
    /// Calls the closure and builds its result in the isolate.
    Sync(Caller),
    /// Prepares the closure's future.
    Async(Starter),
    /// Prepares the closure's future, which the caller blocks on (started once the thread has
    /// stepped out of the isolate, so the closure may use the isolate).
    Blocking(Starter),
    /// Prepares the closure's call, which runs later on the worker pool.
    Ignored(Deferrer),
}

/// The same closure for calls from an isolate in a worker process, which sends the arguments
/// as a list of values.
enum Remote {
    Sync(RemoteFn<Value>),
    Async(RemoteFn<BoxFuture>),
    Blocking(RemoteFn<BoxFuture>),
    Ignored(RemoteFn<Box<dyn FnOnce() + Send>>),
}

/// A call from a worker, ready to run on the task pool.
pub(crate) enum Invoked {
    /// Runs the closure (with the worker waiting).
    Sync(Box<dyn FnOnce() -> Result<Value> + Send>),
    /// The closure's future, which the worker's JavaScript blocks on.
    Blocking(BoxFuture),
    /// The closure's future, whose promise the worker's JavaScript holds.
    Async(BoxFuture),
    /// Runs the closure; nobody waits.
    Ignored(Box<dyn FnOnce() + Send>),
}

/// A Rust closure that becomes a JavaScript function when it is put into an isolate (e.g.
/// with [`Context::set_global`](crate::Context::set_global)).
///
/// The closure takes its arguments as one serde value: a tuple (`(u32, String)`), a
/// `Vec<T>`, or [`Value`] for the raw list. Read into a tuple, missing arguments are
/// `undefined` (so trailing `Option`s are optional) and extra ones are ignored. An `Err` returned by the closure is thrown in JavaScript, with
/// its class when it is an [`Error::Exception`] (see [`Error::js`]).
///
/// ```
/// use ivm::{Callback, Isolate};
/// let isolate = Isolate::new(Default::default())?;
/// let context = isolate.create_context()?;
/// context.set_global("add", Callback::new(|(a, b): (f64, f64)| Ok(a + b)))?;
/// assert_eq!(context.eval::<f64>("add(1, 2)")?, 3.0);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Callback {
    host: Arc<HostFn>,
}

struct HostFn {
    name: String,
    call: Call,
    remote: Remote,
    /// Where its futures (and ignored calls) run.
    spawner: Spawner,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback").field("name", &self.host.name).finish_non_exhaustive()
    }
}

// The caller tag: a value an operation lends the host functions its JavaScript calls (see
// `ivm_client::tls`). An operation carries the tag that was current on the thread that
// submitted it (queued in process, or sent to a worker process), and the synchronous part of
// its sync and blocking host functions sees it, on either kind of isolate.
pub(crate) use ivm_client::tls::{CallerTag, caller_tag, with_caller_tag};

/// Reads the arguments for a closure taking `A`; a mismatch is a TypeError in JavaScript.
fn args_of<'s, A: DeserializeOwned + 'static>(scope: &mut v8::PinScope<'s, '_>, args: &JsArgs<'s>) -> Result<A> {
    from_v8_args(scope, args).map_err(|e| match e {
        // JavaScript threw while the arguments were read (a getter): keep its exception.
        e if js::is_threw(&e) => e,
        other => Error::js("TypeError", other.message().to_owned()),
    })
}

/// Reads the arguments a worker sent for a closure taking `A`.
fn list_args<A: DeserializeOwned + 'static>(list: Vec<Value>) -> Result<A> {
    js::args_from_list(list).map_err(|e| Error::js("TypeError", e.message().to_owned()))
}

/// The async and blocking forms for calls from a worker: read the arguments, start the future.
fn remote_starter<A, R, F, Fut>(f: Arc<F>) -> Arc<dyn Fn(Vec<Value>) -> Result<BoxFuture> + Send + Sync>
where
    A: DeserializeOwned + 'static,
    R: Serialize,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    Arc::new(move |list| {
        let future = f(list_args(list)?);
        Ok(Box::pin(async move { value::to_value(&future.await?) }) as BoxFuture)
    })
}

/// The async and blocking forms: read the arguments, then (when called) start the future.
fn starter<A, R, F, Fut>(f: Arc<F>) -> Starter
where
    A: DeserializeOwned + 'static,
    R: Serialize,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    Box::new(move |scope, args| {
        let (f, args) = (f.clone(), args_of::<A>(scope, args)?);
        Ok(Box::new(move || {
            let future = f(args);
            Box::pin(async move { value::to_value(&future.await?) }) as BoxFuture
        }) as Box<dyn FnOnce() -> BoxFuture>)
    })
}

impl Callback {
    /// A synchronous host function.
    pub fn new<A, R, F>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        R: Serialize,
        F: Fn(A) -> Result<R> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let for_worker = f.clone();
        // In process the result is built in the isolate straight from `R` (JSON-shaped data
        // goes through V8's JSON parser); for a worker it travels as a value.
        Callback::from_call(
            Call::Sync(Box::new(move |scope, args| {
                let result = f(args_of(scope, args)?)?;
                to_v8(scope, &result)
            })),
            Remote::Sync(Arc::new(move |list| value::to_value(&for_worker(list_args(list)?)?))),
        )
    }

    /// An async host function: JavaScript gets a promise that settles with the future's output.
    ///
    /// ```
    /// use ivm::{Callback, EvalOptions, Isolate};
    /// let isolate = Isolate::new(Default::default())?;
    /// let context = isolate.create_context()?;
    /// context.set_global("double", Callback::new_async(|(n,): (u32,)| async move { Ok(n * 2) }))?;
    /// let n: u32 = context.eval_with("double(21)", &EvalOptions::default().promise())?;
    /// assert_eq!(n, 42);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn new_async<A, R, F, Fut>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        R: Serialize,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let f = Arc::new(f);
        Callback::from_call(Call::Async(starter(f.clone())), Remote::Async(remote_starter(f)))
    }

    /// An async host function that JavaScript calls synchronously: the call blocks until the
    /// future completes (isolated-vm's `applySyncPromise`), within the operation's timeout.
    pub fn new_blocking<A, R, F, Fut>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        R: Serialize,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let f = Arc::new(f);
        Callback::from_call(Call::Blocking(starter(f.clone())), Remote::Blocking(remote_starter(f)))
    }

    /// A fire-and-forget host function: JavaScript gets `undefined` at once; the closure runs
    /// later on the worker pool and whatever it returns is dropped.
    pub fn new_ignored<A, F>(f: F) -> Callback
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let for_worker = f.clone();
        Callback::from_call(
            Call::Ignored(Box::new(move |scope, args| {
                let (f, args) = (f.clone(), args_of::<A>(scope, args)?);
                Ok(Box::new(move || f(args)) as Box<dyn FnOnce() + Send>)
            })),
            Remote::Ignored(Arc::new(move |list| {
                let (f, args) = (for_worker.clone(), list_args::<A>(list)?);
                Ok(Box::new(move || f(args)) as Box<dyn FnOnce() + Send>)
            })),
        )
    }

    /// Sets the function's `name` as JavaScript sees it.
    pub fn name(self, name: impl Into<String>) -> Callback {
        let name = name.into();
        self.with(|host| HostFn { name, ..host })
    }

    /// Runs the function's futures (and ignored calls) with `spawner` instead of the one it was
    /// made with ([`Spawner::current`]: the tokio runtime it was made in, else ivm's pool).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ivm::{Callback, EvalOptions, Isolate, Spawner};
    /// let runtime = tokio::runtime::Runtime::new().unwrap();
    /// let pause = Callback::new_async(|(ms,): (u64,)| async move {
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     Ok(ms)
    /// })
    /// .spawner(Spawner::tokio(runtime.handle().clone()));
    /// let context = Isolate::new(Default::default())?.create_context()?;
    /// context.set_global("pause", pause)?;
    /// assert_eq!(context.eval_with::<u64>("pause(5)", &EvalOptions::default().promise())?, 5);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn spawner(self, spawner: Spawner) -> Callback {
        self.with(|host| HostFn { spawner, ..host })
    }

    /// Changes a callback that has not been shared yet.
    fn with(self, change: impl FnOnce(HostFn) -> HostFn) -> Callback {
        let host = Arc::try_unwrap(self.host).unwrap_or_else(|_| panic!("a Callback is configured before it is cloned or used"));
        Callback { host: Arc::new(change(host)) }
    }

    fn from_call(call: Call, remote: Remote) -> Callback {
        Callback { host: Arc::new(HostFn { name: String::new(), call, remote, spawner: Spawner::current() }) }
    }

    /// Where the function's futures run.
    pub(crate) fn spawner_of(&self) -> &Spawner {
        &self.host.spawner
    }

    /// Identifies the closure (clones share it).
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.host) as *const () as usize
    }

    /// The function as it goes to an isolate in a worker process: exported by id.
    pub(crate) fn to_remote(&self, remote: &RemoteIsolate) -> Input {
        let kind = match self.host.remote {
            Remote::Sync(_) => CallKind::Sync,
            Remote::Async(_) => CallKind::Async,
            Remote::Blocking(_) => CallKind::Blocking,
            Remote::Ignored(_) => CallKind::Ignored,
        };
        Input::Callback { callback: remote.export(self), kind, name: self.host.name.clone() }
    }

    /// Prepares a call from a worker with these arguments. Nothing of the closure runs until
    /// the result is run or polled.
    pub(crate) fn invoke(&self, list: Vec<Value>) -> Invoked {
        match &self.host.remote {
            Remote::Sync(f) => {
                let f = f.clone();
                Invoked::Sync(Box::new(move || guarded(|| f(list))))
            }
            Remote::Async(f) => {
                let f = f.clone();
                Invoked::Async(Box::pin(async move { guarded(|| f(list))?.await }))
            }
            Remote::Blocking(f) => {
                let f = f.clone();
                Invoked::Blocking(Box::pin(async move { guarded(|| f(list))?.await }))
            }
            Remote::Ignored(f) => {
                let f = f.clone();
                Invoked::Ignored(Box::new(move || {
                    if let Ok(work) = guarded(|| f(list)) {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                    }
                }))
            }
        }
    }

    /// Makes the JavaScript function in the current context of a locked isolate.
    pub(crate) fn to_js<'s>(
        &self,
        scope: &mut v8::PinScope<'s, '_>,
        inner: &Arc<IsolateInner>,
    ) -> Result<v8::Local<'s, v8::Value>> {
        let installed = Arc::new(Installed { host: self.host.clone(), isolate: Arc::downgrade(inner) });
        let data = v8::External::new(scope, Arc::as_ptr(&installed) as *mut c_void);
        // The function's data points at `installed`; the isolate keeps it alive.
        inner.keep_alive(installed);
        let function = v8::Function::builder(trampoline)
            .data(data.into())
            .constructor_behavior(v8::ConstructorBehavior::Throw)
            .build(scope)
            .ok_or_else(js::threw)?;
        if let Some(name) = v8::String::new(scope, &self.host.name) {
            function.set_name(name);
        }
        Ok(function.into())
    }
}

/// A host function installed in one isolate.
struct Installed {
    host: Arc<HostFn>,
    /// Weak: the isolate owns this, not the other way round.
    isolate: Weak<IsolateInner>,
}

fn trampoline<'s>(scope: &mut v8::PinScope<'s, '_>, args: v8::FunctionCallbackArguments<'s>, rv: v8::ReturnValue<'s, v8::Value>) {
    // Host code: free of the allocation limit of a copy it may have been called from (a getter
    // met while serializing).
    crate::alloc::unlimited(|| run_host_function(scope, args, rv))
}

fn run_host_function<'s>(scope: &mut v8::PinScope<'s, '_>, args: v8::FunctionCallbackArguments<'s>, mut rv: v8::ReturnValue<'s, v8::Value>) {
    let Ok(data) = v8::Local::<v8::External>::try_from(args.data()) else { return };
    // SAFETY: `data` points at the `Installed` the isolate keeps alive (see `to_js`).
    let installed = unsafe { &*(data.value() as *const Installed) };
    let Some(isolate) = installed.isolate.upgrade() else { return };
    let list: Vec<_> = (0..args.length()).map(|i| args.get(i)).collect();
    let result = match &installed.host.call {
        Call::Sync(f) => guarded(|| f(scope, &list)),
        // When the operation's timeout fires, the wait ends with a Timeout error, thrown here;
        // the termination the timeout requested follows, so the script cannot go on.
        Call::Blocking(f) => guarded(|| f(scope, &list))
            .and_then(|start| block_on_released(&isolate, &installed.host.spawner, start))
            .and_then(|value| js::copy_in(scope, &value)),
        Call::Async(f) => {
            let Some(resolver) = v8::PromiseResolver::new(scope) else { return };
            rv.set(resolver.get_promise(scope).into());
            let context = scope.get_current_context();
            let pending = PendingCall::new(&isolate, v8::Global::new(scope, context), v8::Global::new(scope, resolver));
            match guarded(|| f(scope, &list)).and_then(|start| guarded(|| Ok(start()))) {
                Ok(future) => installed.host.spawner.spawn(async move { pending.complete(future.await) }),
                Err(e) => pending.complete(Err(e)),
            }
            return;
        }
        Call::Ignored(f) => match guarded(|| f(scope, &list)) {
            Ok(work) => {
                installed.host.spawner.spawn_blocking(move || {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                });
                return;
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(v) => rv.set(v),
        Err(e) => throw_unless_pending(scope, &e),
    }
}

/// Throws `error`, unless JavaScript already threw (a getter while copying arguments).
fn throw_unless_pending(scope: &mut v8::PinScope<'_, '_>, error: &Error) {
    if !js::is_threw(error) {
        exception::throw(scope, error);
    }
}

/// Runs host code; a panic becomes an error instead of unwinding into V8.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::js("Error", "A host function panicked")))
}

/// Waits for `future` in host code that JavaScript waits on (a module hook): with the isolate
/// released if it is in this process (`local`) and this thread holds it, so that the future
/// may use the isolate, and within the limits of the run that waits, as for a blocking host
/// function.
pub(crate) fn wait_released<T: Send + 'static>(local: Option<&Arc<IsolateInner>>, future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    match local {
        Some(inner) if nesting::current().is_some_and(|frame| std::ptr::eq(frame.inner, Arc::as_ptr(inner))) => {
            block_on_released(inner, &Spawner::ivm(), Box::new(move || Box::pin(future)))
        }
        _ => tasks::block_on(future),
    }
}

/// Starts the future and waits for it on this thread, with the isolate released (so other
/// threads, its queued jobs, and the future itself can use it). On ivm's own pool the future
/// is polled right here; another spawner runs it and this thread waits for its output.
fn block_on_released<T: Send + 'static>(isolate: &Arc<IsolateInner>, spawner: &Spawner, start: Box<dyn FnOnce() -> BoxFuture<T>>) -> Result<T> {
    let Some(frame) = nesting::current() else { return Err(Error::js("Error", "not inside an isolate")) };
    let waits = isolate.blocking_waits.clone();
    let mut generation = waits.generation();
    nesting::step_out(frame, || {
        let started = guarded(|| Ok(start()))?;
        let mut future: BoxFuture<T> = if spawner.polls_in_place() {
            started
        } else {
            let (tx, rx) = oneshot::channel();
            spawner.spawn(async move { drop(tx.send(started.await)) });
            Box::pin(async move { rx.await.unwrap_or_else(|_| Err(Error::js("Error", DROPPED))) })
        };
        let waker = Waker::from(Arc::new(tasks::ThreadWaker(std::thread::current())));
        let mut cx = TaskContext::from_waker(&waker);
        loop {
            if let Poll::Ready(result) = guarded(|| Ok(future.as_mut().poll(&mut cx)))? {
                return result;
            }
            if waits.generation() != generation {
                // A run's limit fired, or the isolate is being disposed. If it was this
                // thread's run (or the isolate), stop waiting: the termination takes over once
                // JavaScript resumes. Another run's limit is none of this wait's business.
                if isolate.is_disposed() {
                    return Err(Error::disposed("Isolate was disposed during execution"));
                }
                if crate::run::fired_on_this_thread(Arc::as_ptr(isolate)) {
                    return Err(Error::Timeout { stack: String::new() });
                }
                generation = waits.generation();
            }
            waits.park(Duration::from_millis(50));
        }
    })
}
